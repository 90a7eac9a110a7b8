"""Every lesson in examples/lessons runs with small sizes, writes its pictures, and shows what it says it
shows; the command line refuses bad values in one line with exit status 2."""

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LESSONS = ROOT / "examples" / "lessons"
sys.path.insert(0, str(LESSONS))

pytest.importorskip("matplotlib")


def run(name, tmp_path):
    module = importlib.import_module(name)
    result = module.main(quick=True, out=tmp_path)
    for path in result["paths"]:
        assert Path(path).exists() and Path(path).stat().st_size > 500, path
    suffixes = {Path(p).suffix for p in result["paths"]}
    assert {".png", ".svg"} <= suffixes
    return result


def lesson_files():
    return sorted(p.stem for p in LESSONS.glob("[0-9][0-9]_*.py"))


def test_every_lesson_file_is_tested_here_or_in_its_own_file():
    tests = Path(__file__).resolve().parent
    here = Path(__file__).read_text(encoding="utf-8")
    for name in lesson_files():
        number = int(name[:2])
        assert (tests / f"test_lessons_{number:02d}.py").exists() or f"def test_lesson_{number}_" in here, name










def test_lesson_5_global_norm_clipping_keeps_the_direction_and_value_clipping_bends_it(tmp_path):
    result = run("05_clipping", tmp_path)
    assert all(c == pytest.approx(1.0, abs=1e-12) for c in result["sweep"]["clip_grad_norm_"])
    assert min(result["sweep"]["clip_grad_value_"]) < 0.99
    assert all(c == pytest.approx(1.0, abs=1e-9) for c in result["per_step"]["clip_norm hook"])
    assert min(result["per_step"]["clip_value hook"]) < 0.99








def test_lesson_8_deeper_sigmoid_nets_lose_more_of_the_gradient(tmp_path):
    result = run("08_depth", tmp_path)
    ratios = {depth: r["weight"][0] / r["weight"][-1] for depth, r in result["runs"].items()}
    depths = sorted(ratios)
    assert all(ratios[a] > ratios[b] for a, b in zip(depths, depths[1:]))
    he = result["relu_he"]["weight"]
    assert he[0] / he[-1] > 0.1  # He's initialisation keeps a ReLU net's gradient near whole




@pytest.mark.parametrize("args", [["--quick", "--bogus"], ["--out"]])
def test_a_bad_command_line_is_one_line_on_stderr_and_exit_status_2(args):
    result = subprocess.run([sys.executable, str(LESSONS / "08_depth.py"), *args], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_a_lesson_runs_from_a_checkout_as_a_script(tmp_path):
    result = subprocess.run([sys.executable, str(LESSONS / "02_saturation.py"), "--quick", "--out", str(tmp_path)],
                            capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "dL/dh_0" in result.stdout and (tmp_path / "02_saturation_op_view.png").exists()
