"""Every lesson in examples/lessons runs with small sizes, writes its pictures, and shows what it says it
shows; the command line refuses bad values in one line with exit status 2."""

import importlib
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
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


def test_every_lesson_file_is_tested_here():
    assert lesson_files() == ["01_bptt_sum", "02_saturation", "03_cells_and_inits", "04_cliff", "05_clipping",
                              "06_spectral_radius", "07_batch_norm", "08_depth", "09_monitor"]


def test_lesson_1_per_step_contributions_add_up_to_the_shared_gradient(tmp_path):
    result = run("01_bptt_sum", tmp_path)
    untrained, near = result["runs"].values()
    for r in (untrained, near):
        np.testing.assert_allclose(sum(r["contributions"]), r["grad"], rtol=1e-10, atol=1e-15)
    first, last = (np.linalg.norm(untrained["contributions"][k]) for k in (0, -1))
    assert first < 1e-2 * last  # untrained: the early steps barely count
    assert near["loss"] < 1e-3 * untrained["loss"]
    assert max(np.linalg.norm(c) for c in near["contributions"]) < 0.1 * last


def test_lesson_2_saturation_gradient_is_the_product_of_local_derivatives(tmp_path):
    result = run("02_saturation", tmp_path)
    for r in result["runs"].values():
        assert r["dL/dh_0"] == pytest.approx(r["product"], rel=1e-12)
    runs = result["runs"]
    assert runs[("tanh", "small inputs")]["dL/dh_0"] > 0.5
    assert runs[("tanh", "large inputs")]["dL/dh_0"] < 1e-6
    assert runs[("sigmoid", "small inputs")]["dL/dh_0"] <= 0.25**3


def test_lesson_3_irnn_keeps_the_gradient_that_the_default_tanh_rnn_loses(tmp_path):
    result = run("03_cells_and_inits", tmp_path)
    factors = result["factors"]
    assert factors["tanh RNN"] < 1e-3 * factors["IRNN (ReLU, W_hh = I)"]
    assert factors["LSTM, state (h, c)"] < factors["LSTM, forget-gate bias 2, state (h, c)"]


def test_lesson_4_cliff_throws_plain_sgd_and_not_the_clipped_run(tmp_path, capsys):
    result = run("04_cliff", tmp_path)
    assert result["catapult_norm"] > 100 and result["catapult_distance"] > 10
    assert result["clipped_max_move"] <= 0.05 * 10.0 + 1e-9  # lr * max_norm
    assert "thrown" not in capsys.readouterr().err


def test_lesson_5_global_norm_clipping_keeps_the_direction_and_value_clipping_bends_it(tmp_path):
    result = run("05_clipping", tmp_path)
    assert all(c == pytest.approx(1.0, abs=1e-12) for c in result["sweep"]["clip_grad_norm_"])
    assert min(result["sweep"]["clip_grad_value_"]) < 0.99
    assert all(c == pytest.approx(1.0, abs=1e-9) for c in result["per_step"]["clip_norm hook"])
    assert min(result["per_step"]["clip_value hook"]) < 0.99


def test_lesson_6_gradient_grows_with_the_spectral_radius_and_crosses_one(tmp_path):
    result = run("06_spectral_radius", tmp_path)
    for runs in result["curves"].values():
        medians = np.median(runs, axis=1)
        assert medians[0] < 1e-3 and medians[0] < medians[-1]
    tiny = next(iter(result["crossings"].values()))
    assert tiny is not None and 0.8 < tiny < 1.3


def test_lesson_6_crossing_interpolates_in_log_space():
    lesson = importlib.import_module("06_spectral_radius")
    assert lesson.crossing(np.array([1.0, 2.0]), np.array([0.1, 10.0])) == pytest.approx(1.5)
    assert lesson.crossing(np.array([1.0, 2.0]), np.array([2.0, 10.0])) is None


def test_lesson_7_batch_norm_gains_do_not_depend_on_the_scale_of_w_hh(tmp_path):
    numbers = run("07_batch_norm", tmp_path)["numbers"]
    bn = [n["gain"] for (kind, _), n in numbers.items() if kind == "batch norm"]
    plain = [n["gain"] for (kind, _), n in numbers.items() if kind == "plain"]
    assert max(bn) - min(bn) < 0.02 and max(plain) / min(plain) > 3
    assert all(n["methods"] == (["full"] if kind == "batch norm" else ["rows"]) for (kind, _), n in numbers.items())


def test_lesson_8_deeper_sigmoid_nets_lose_more_of_the_gradient(tmp_path):
    result = run("08_depth", tmp_path)
    ratios = {depth: r["weight"][0] / r["weight"][-1] for depth, r in result["runs"].items()}
    depths = sorted(ratios)
    assert all(ratios[a] > ratios[b] for a, b in zip(depths, depths[1:]))
    he = result["relu_he"]["weight"]
    assert he[0] / he[-1] > 0.1  # He's initialisation keeps a ReLU net's gradient near whole


def test_lesson_9_monitor_sees_vanishing_and_exploding(tmp_path):
    result = run("09_monitor", tmp_path)
    vanishing, exploding = result["vanishing"], result["exploding"]
    first = np.median([r for r in vanishing.update_ratios["layer1.weight"] if r])
    last = np.median([r for r in vanishing.update_ratios["layer8.weight"] if r])
    assert first < 1e-3 * last
    assert vanishing.first_nonfinite is None
    assert exploding.first_nonfinite is not None and exploding.nonfinite_op is not None
    assert all(math.isfinite(x) for x in exploding.losses[: exploding.first_nonfinite])
    assert result["clipped"].first_nonfinite is None


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
