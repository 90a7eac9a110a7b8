"""What ``tinygrad-rnn train`` tells the user to do next works: every command it prints runs the way
the command was launched (scripts/dev.sh run, python -m visualize, tinygrad-rnn on the PATH or off it,
examples/char_rnn.py), and every suggestion, when tried, does what it says."""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tinygrad_rnn import diagnostics
from tinygrad_rnn.optim import Adam
from visualize import cli, preflight, train
from visualize.cli import main

ROOT = Path(__file__).resolve().parents[1]
TEXT = "the quick brown fox jumps over the lazy dog; pack my box with five dozen liquor jugs.\n" * 60


@pytest.fixture(autouse=True)
def eight_gigabytes(monkeypatch):
    monkeypatch.setattr(preflight, "available_memory", lambda: 8_000_000_000)


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "fox.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


def last_line(out: str) -> str:
    """The suggested command: the last line the command printed."""
    return out.strip().splitlines()[-1].strip()


def from_train(command: str) -> list[str]:
    words = shlex.split(command)
    return words[words.index("train") :]


@pytest.fixture
def verdicts(monkeypatch):
    """The step view's verdict on each run the demo draws ("before iteration 1 (untrained)", "after
    iteration N"), from the very (loss, states) it draws, with the factor the verdict judges."""
    seen = []
    drawn = train.compare_steps

    def compare_steps(runs, **kwargs):
        for name, (loss, states) in runs.items():
            rows = diagnostics.steps(loss, states)
            seen.append((name, diagnostics.verdict(rows), diagnostics.gradient_factor(rows)[0]))
        return drawn(runs, **kwargs)

    monkeypatch.setattr(train, "compare_steps", compare_steps)
    return seen


def test_the_lstm_suggestion_runs_and_its_gradient_does_not_vanish(tmp_path, text_file, capsys, verdicts):
    # The demo's window (25 time steps) with a small tanh RNN: its gradient vanishes over the window.
    first = ["train", "--hidden", "16", "--seq", "25", "--batch", "2", "--text", str(text_file), "--steps", "2",
             "--checkpoint", str(tmp_path / "run.npz"), "--out", str(tmp_path / "pictures")]
    assert main(first) == 0
    out = capsys.readouterr().out
    assert [verdict for _, verdict, _ in verdicts] == ["vanishing", "vanishing"]
    assert "to try next: an LSTM whose forget gates start open" in out
    suggested = last_line(out)
    assert "--cell lstm" in suggested and "--forget-bias 2" in suggested
    verdicts.clear()
    assert main(from_train(suggested)) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    # What it says: before training and after, the verdict is not vanishing; the factor is above 1e-3.
    assert [name for name, _, _ in verdicts] == ["before iteration 1 (untrained)", "after iteration 2"]
    for name, verdict, factor in verdicts:
        assert verdict != "vanishing" and factor >= diagnostics.VANISHING, (name, verdict, factor)
    assert "lstm with hidden 16 and forget-gate bias 2" in out
    assert "between 0.001 and 1000, the lines the verdict calls vanishing and exploding" in " ".join(out.split())
    assert (tmp_path / "run_lstm.npz").is_file() and (tmp_path / "run.npz").is_file()  # the first run is kept
    assert "to try next" not in out  # nothing more to suggest
    # The forget-gate bias is what does it: the same LSTM at PyTorch's init (gates near 0.5) vanishes.
    verdicts.clear()
    plain = from_train(suggested)
    del plain[plain.index("--forget-bias") : plain.index("--forget-bias") + 2]
    plain[plain.index("--checkpoint") + 1] = str(tmp_path / "plain_lstm.npz")
    assert main(plain) == 0
    assert verdicts[0][1] == "vanishing", verdicts


def test_the_suggestion_never_points_at_a_checkpoint_that_would_refuse_it(tmp_path, text_file, capsys):
    (tmp_path / "run_lstm.npz").write_bytes(b"an earlier try")
    argv = ["train", "--hidden", "8", "--seq", "6", "--batch", "2", "--text", str(text_file), "--steps", "1",
            "--checkpoint", str(tmp_path / "run.npz"), "--out", str(tmp_path)]
    assert main(argv) == 0
    assert f"--checkpoint {tmp_path / 'run_lstm_2.npz'}" in last_line(capsys.readouterr().out)


def test_the_exploding_headline_names_clip_norm_and_clipping_holds_every_update(tmp_path, text_file, capsys,
                                                                                 monkeypatch):
    matrix = np.array([[0.0, 0.0, 0.0], [5.0, 1.0, 0.0], [5000.0, 50.0, 1.0]])
    text = " ".join(train.what_to_look_at([matrix, matrix], "exploding", 3).split())
    assert "× 5e+03" in text and "above 1000, the line the verdict calls exploding" in text
    assert "training clips the global gradient norm to --clip-norm" in text
    norms = []

    class Watched(Adam):
        def step(self):
            grads = [p.grad for group in self.param_groups for p in group["params"] if p.grad is not None]
            norms.append(float(np.sqrt(sum(float((np.asarray(g, np.float64) ** 2).sum()) for g in grads))))
            return super().step()

    monkeypatch.setattr(train, "Adam", Watched)
    argv = ["train", "--hidden", "8", "--seq", "6", "--batch", "2", "--text", str(text_file), "--steps", "5",
            "--lr", "1", "--clip-norm", "0.01", "--checkpoint", str(tmp_path / "run.npz"), "--out", str(tmp_path)]
    assert main(argv) == 0
    assert len(norms) == 5 and max(norms) <= 0.01 * (1 + 1e-6)


def test_every_headline_states_the_verdicts_line(capsys):
    matrix = np.array([[0.0, 0.0, 0.0], [0.5, 1.0, 0.0], [0.2, 0.4, 1.0]])
    words = {
        "stable": "between 0.001 and 1000, the lines the verdict calls vanishing and exploding",
        "frozen": "no time step gave its weights more than 1e-06 of the gradient it carried, the line the verdict "
                  "calls frozen",
        "vanishing": "above 0.001, the line the verdict calls vanishing",
    }
    for verdict, expected in words.items():
        assert expected in " ".join(train.what_to_look_at([matrix, matrix], verdict, 3).split())


# ---- every route a user launches the command by -------------------------------------------------

def clean_environment(**extra) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), **extra}
    env.pop(cli.LAUNCHER, None)  # as a newcomer's shell has it
    return env


def without_venv_on_path() -> str:
    venv = str(ROOT / ".venv" / "bin")
    return os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if p and p != venv)


def dev_sh_checkout(tmp_path) -> Path:
    """A checkout in which scripts/dev.sh finds everything set up, so it installs nothing: the script and
    pyproject.toml copied, .venv/bin this repository's, and the stamp saying it matches pyproject.toml."""
    checkout = tmp_path / "checkout"
    (checkout / "scripts").mkdir(parents=True)
    shutil.copy2(ROOT / "scripts" / "dev.sh", checkout / "scripts" / "dev.sh")
    shutil.copy2(ROOT / "pyproject.toml", checkout / "pyproject.toml")
    (checkout / ".venv").mkdir()
    (checkout / ".venv" / "bin").symlink_to(ROOT / ".venv" / "bin", target_is_directory=True)
    stamp = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + b"test,plot,dev").hexdigest()
    (checkout / ".venv" / ".installed").write_text(stamp + "\n")
    return checkout


ROUTES = {
    "scripts/dev.sh run": (["scripts/dev.sh", "run", "train"], "checkout", {}),
    "scripts/dev.sh demo": (["scripts/dev.sh", "demo"], "checkout", {}),
    "python -m visualize": ([sys.executable, "-m", "visualize", "train"], None, {}),
    "tinygrad-rnn on the PATH": (["tinygrad-rnn", "train"], None,
                                 {"PATH": str(ROOT / ".venv" / "bin") + os.pathsep + without_venv_on_path()}),
    "tinygrad-rnn off the PATH": ([str(ROOT / ".venv" / "bin" / "tinygrad-rnn"), "train"], None,
                                  {"PATH": without_venv_on_path()}),
    "examples/char_rnn.py": ([sys.executable, "examples/char_rnn.py"], ROOT, {}),
}


@pytest.mark.parametrize("route", list(ROUTES))
def test_every_printed_command_runs_as_the_command_was_launched(tmp_path, text_file, route):
    launch, cwd, extra = ROUTES[route]
    if not (ROOT / ".venv" / "bin" / "tinygrad-rnn").is_file():
        pytest.skip("no .venv/bin/tinygrad-rnn (the package is not installed in .venv)")
    if route.startswith("scripts/dev.sh"):
        if shutil.which("dot") is None:
            pytest.skip("scripts/dev.sh would install Graphviz first")
        cwd = dev_sh_checkout(tmp_path)
    cwd = cwd or tmp_path
    env = clean_environment(**extra)
    flags = ["--hidden", "8", "--seq", "6", "--batch", "2", "--text", str(text_file), "--steps", "1",
             "--checkpoint", str(tmp_path / "run.npz"), "--out", str(tmp_path / "pictures")]

    def run(argv):
        result = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, (argv, result.stderr[-2000:])
        return result.stdout

    out = run([*launch, *flags])
    resume = out.split("continue with: ")[1].splitlines()[0]
    suggested = last_line(out)
    # scripts/dev.sh demo is train through the script's run job
    prefix = "scripts/dev.sh run train" if route == "scripts/dev.sh demo" else " ".join(map(shlex.quote, launch))
    assert resume.startswith(f"{prefix} --resume") and suggested.startswith(f"{prefix} --cell lstm")
    again = run([*shlex.split(resume), "--steps", "1"])  # (as printed, it would train the default minute)
    assert "resumed from" in again and "(iteration 2)" in again
    tried = run(shlex.split(suggested))
    assert "lstm with hidden 8 and forget-gate bias 2" in tried


def test_dev_sh_tells_the_command_how_it_was_launched():
    # The part of the scripts/dev.sh route that runs without it: the launcher its run and demo jobs set.
    script = (ROOT / "scripts" / "dev.sh").read_text(encoding="utf-8")
    for job in ("demo)", "run)"):
        line = next(line for line in script.splitlines() if line.strip().startswith(job))
        assert f'{cli.LAUNCHER}="$0 run {{command}}"' in line


def test_the_diverged_run_names_a_learning_rate_that_then_trains(tmp_path, text_file, capsys):
    argv = ["train", "--hidden", "8", "--seq", "6", "--batch", "2", "--text", str(text_file), "--steps", "3",
            "--checkpoint", str(tmp_path / "run.npz"), "--out", str(tmp_path)]
    assert main([*argv, "--lr", "1e308"]) == 2
    err = capsys.readouterr().err
    assert "diverged" in err and "Use a smaller --lr (this run's: 1e+308; the default: 0.003)" in err
    assert "--clip-norm" not in err
    # A smaller --clip-norm would not have helped: Adam's steps are about --lr long whatever the clip.
    assert main([*argv, "--lr", "1e308", "--clip-norm", "1e-6"]) == 2
    assert "diverged" in capsys.readouterr().err
    assert main([*argv, "--lr", "0.003"]) == 0  # the learning rate the message names
