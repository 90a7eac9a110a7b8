"""The ``tinygrad-rnn`` command: ``train`` end to end, checkpoints never overwritten silently, and every
bad value refused with one line on stderr, exit status 2, before any work and without a traceback."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tempfile
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from tinygrad_rnn import checkpoint, diagnostics, training
from visualize import cli, preflight, style, train
from visualize.cli import main

ROOT = Path(__file__).resolve().parents[1]
TEXT = "the quick brown fox jumps over the lazy dog; pack my box with five dozen liquor jugs.\n" * 60
# The machine's free memory varies; the refusals are checked against a fixed 8 GB.
EIGHT_GB = 8_000_000_000


@pytest.fixture(autouse=True)
def eight_gigabytes(monkeypatch):
    monkeypatch.setattr(preflight, "available_memory", lambda: EIGHT_GB)


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "fox.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


def run_main(argv, capsys):
    """(exit status, stdout, stderr) of ``main(argv)`` in this process."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as stop:  # --help and the like
        code = stop.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_refused(code, err, *fragments):
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err and lines[0].startswith("tinygrad-rnn")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def small_run(tmp_path, text_file, *extra):
    """Flags for a tiny, fast training run writing into tmp_path."""
    return ["train", "--hidden", 8, "--seq", 6, "--batch", 2, "--text", text_file,
            "--checkpoint", tmp_path / "run.npz", "--out", tmp_path / "pictures", *extra]


# ---- train, end to end --------------------------------------------------------------------------

def test_train_writes_checkpoint_pictures_and_says_what_to_look_at(tmp_path, text_file, capsys):
    code, out, err = run_main(small_run(tmp_path, text_file, "--steps", 4), capsys)
    assert code == 0, err
    saved = checkpoint.load(tmp_path / "run.npz")
    assert int(saved["meta.step"]) == 4
    assert json.loads(str(saved["meta.config"]))["hidden"] == 8
    for suffix in (".svg", ".png"):
        picture = tmp_path / "pictures" / f"run_steps{suffix}"  # named after the checkpoint, run.npz
        assert picture.is_file() and picture.stat().st_size > 1000
    assert "<svg" in (tmp_path / "pictures" / "run_steps.svg").read_text(encoding="utf-8")
    for expected in ("sample:", "checkpoint: " + str(tmp_path / "run.npz"), "pictures:", "what to look at:",
                     "in run_lags", "before iteration 1 (untrained)", "after iteration 4"):
        assert expected in " ".join(out.split())  # (the headline is wrapped)
    assert "<svg" in (tmp_path / "pictures" / "run_lags.svg").read_text(encoding="utf-8")
    assert "iterations/s" in err and "loss" in err  # the progress bar, on stderr


def test_the_picture_compares_the_whole_window_before_and_after(tmp_path, text_file, capsys, monkeypatch):
    drawn = {}

    def compare_steps(runs, **kwargs):
        drawn.update(runs)
        return train_compare_steps(runs, **kwargs)

    train_compare_steps = train.compare_steps
    monkeypatch.setattr(train, "compare_steps", compare_steps)
    code, _, err = run_main(small_run(tmp_path, text_file, "--steps", 2, "--seq", 9), capsys)
    assert code == 0, err
    assert list(drawn) == ["before iteration 1 (untrained)", "after iteration 2"]
    for loss, states in drawn.values():  # all T = 9 steps of the window, h_0 to h_9, a prediction at every step
        assert len(states) == 10 and loss.size == 1 and states[-1].grad is not None
        assert diagnostics.reads(diagnostics.steps(loss, states)) == list(range(1, 10))
    (_, untrained), (_, trained) = drawn.values()
    assert not np.allclose(untrained[-1].data, trained[-1].data)  # two sets of weights, not one drawn twice


def test_a_second_run_refuses_to_overwrite_the_checkpoint(tmp_path, text_file, capsys):
    assert run_main(small_run(tmp_path, text_file, "--steps", 2), capsys)[0] == 0
    before = (tmp_path / "run.npz").read_bytes()
    code, out, err = run_main(small_run(tmp_path, text_file, "--steps", 2), capsys)
    assert_refused(code, err, "already holds a checkpoint", "--resume", "--force")
    assert (tmp_path / "run.npz").read_bytes() == before and out == ""


def test_force_replaces_the_checkpoint_and_says_so(tmp_path, text_file, capsys):
    assert run_main(small_run(tmp_path, text_file, "--steps", 3), capsys)[0] == 0
    code, out, err = run_main(small_run(tmp_path, text_file, "--steps", 1, "--force"), capsys)
    assert code == 0, err
    assert "will be replaced" in out and int(checkpoint.load(tmp_path / "run.npz")["meta.step"]) == 1


def test_resume_restores_the_saved_configuration_and_counts_on(tmp_path, text_file, capsys):
    assert run_main(small_run(tmp_path, text_file, "--steps", 3, "--lr", 0.01, "--clip-value", 0.5), capsys)[0] == 0
    # Only the paths: hidden size, window, batch, rate and clipping come from the checkpoint.
    code, out, err = run_main(["train", "--resume", "--steps", 2, "--checkpoint", tmp_path / "run.npz",
                               "--out", tmp_path / "pictures"], capsys)
    assert code == 0, err
    assert "resumed from" in out and "at iteration 3" in out and "hidden 8, T=6, B=2" in out
    out = " ".join(out.split())  # (the headline is wrapped)
    assert "before iteration 4 (as resumed)" in out and "after iteration 5" in out
    saved = checkpoint.load(tmp_path / "run.npz")
    config = json.loads(str(saved["meta.config"]))
    assert int(saved["meta.step"]) == 5 and config["lr"] == 0.01 and config["clip_value"] == 0.5


@pytest.mark.parametrize("flag, value, saved", [
    ("--hidden", "16", "--hidden 8"),
    ("--cell", "lstm", "--cell rnn"),
    ("--seq", "7", "--seq 6"),
    ("--lr", "0.1", "--lr 0.003"),
    ("--clip-value", "1", "--clip-value (none)"),
    ("--forget-bias", "2", "--forget-bias (none)"),
])
def test_resume_refuses_a_flag_that_contradicts_the_checkpoint(tmp_path, text_file, capsys, flag, value, saved):
    assert run_main(small_run(tmp_path, text_file, "--steps", 1), capsys)[0] == 0
    before = (tmp_path / "run.npz").read_bytes()
    code, _, err = run_main(small_run(tmp_path, text_file, "--resume", flag, value), capsys)
    assert_refused(code, err, f"{flag} {value} contradicts", saved)
    assert (tmp_path / "run.npz").read_bytes() == before


def test_resume_accepts_flags_that_agree_with_the_checkpoint(tmp_path, text_file, capsys):
    assert run_main(small_run(tmp_path, text_file, "--steps", 1), capsys)[0] == 0
    code, _, err = run_main(small_run(tmp_path, text_file, "--resume", "--steps", 1, "--cell", "rnn"), capsys)
    assert code == 0, err


def test_resume_refuses_a_missing_checkpoint(tmp_path, capsys):
    code, _, err = run_main(["train", "--resume", "--checkpoint", tmp_path / "none.npz"], capsys)
    assert_refused(code, err, "no checkpoint at", "drop --resume")


@pytest.mark.parametrize("damage", ["garbage", "truncated", "foreign"])
def test_resume_refuses_a_damaged_or_foreign_checkpoint(tmp_path, text_file, capsys, damage):
    path = tmp_path / "run.npz"
    if damage == "foreign":
        checkpoint.save(path, {"weights": np.zeros(3)})
    else:
        assert run_main(small_run(tmp_path, text_file, "--steps", 1), capsys)[0] == 0
        data = path.read_bytes()
        path.write_bytes(b"not a checkpoint at all" if damage == "garbage" else data[: len(data) // 2])
    code, _, err = run_main(small_run(tmp_path, text_file, "--resume"), capsys)
    assert_refused(code, err, "--resume:", str(path))


@pytest.mark.parametrize("change", [{"hidden": -5}, {"lr": float("nan")}, {"cell": "rnn2"}, {"batch": 3}])
def test_resume_refuses_a_saved_configuration_that_cannot_work(tmp_path, text_file, capsys, change):
    """A checkpoint whose settings were edited (or disagree with its own arrays) is refused, not half-run."""
    assert run_main(small_run(tmp_path, text_file, "--steps", 1), capsys)[0] == 0
    arrays = checkpoint.load(tmp_path / "run.npz")
    config = {**json.loads(str(arrays["meta.config"])), **change}
    arrays["meta.config"] = np.array(json.dumps(config))
    checkpoint.save(tmp_path / "run.npz", arrays)
    code, _, err = run_main(["train", "--resume", "--steps", 1, "--checkpoint", tmp_path / "run.npz",
                             "--out", tmp_path], capsys)
    assert_refused(code, err, "--resume:", "damaged")


def test_ctrl_c_stops_training_and_still_saves_the_run(tmp_path, text_file, capsys, monkeypatch):
    calls = []
    original = training.window_loss

    def interrupted_at_the_third_step(*args):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(*args)

    monkeypatch.setattr(training, "window_loss", interrupted_at_the_third_step)
    code, out, err = run_main(small_run(tmp_path, text_file, "--steps", 50), capsys)
    assert code == 0, err
    assert "stopped at iteration 2 (Ctrl-C)" in err and int(checkpoint.load(tmp_path / "run.npz")["meta.step"]) == 2


def test_train_on_the_clock_in_a_fresh_process(tmp_path):
    """The real command, as a newcomer types it (``python -m visualize``), for about a second."""
    result = run_process(["train", "--seconds", "1", "--hidden", "16", "--checkpoint", str(tmp_path / "c.npz"),
                          "--out", str(tmp_path)], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "iterations/s" in result.stderr and "checkpoint:" in result.stdout
    assert (tmp_path / "c.npz").is_file() and (tmp_path / "c_steps.png").is_file()
    again = run_process(["train", "--seconds", "1", "--checkpoint", str(tmp_path / "c.npz")], cwd=tmp_path)
    assert again.returncode == 2 and len(again.stderr.strip().splitlines()) == 1


# ---- every bad value: one line, status 2, nothing built -----------------------------------------

BAD_RENDER = [
    (["--radius", "nan"], "--radius"),
    (["--radius", "-2"], "--radius"),
    (["--radius", "inf"], "--radius"),
    (["--clip", "0"], "--clip"),
    (["--batch", "0"], "--batch"),
    (["--steps", "-3"], "--steps"),
    (["--hidden", "2.5"], "--hidden"),
    (["--truncate", "0"], "--truncate"),
    (["--max-nodes", "0"], "--max-nodes"),
    (["--seed", "-1"], "--seed"),
    (["--cell", "transformer"], "--cell"),
    (["--view", "3d"], "--view"),
    (["--bogus"], "--bogus"),
    (["-o", "out.txt"], "out.txt"),
    (["-o", "out"], "no suffix"),
    (["--hidden", "100000"], "memory"),
    (["--steps", "1000000000", "--view", "steps"], "memory"),
    (["--steps", "1000000000", "--view", "ops"], "memory"),
    (["--batch", "100000000", "--hidden", "64"], "memory"),
    (["--steps", "20000", "--view", "steps"], "too large"),
    (["--steps", "5000", "--view", "ops"], "--max-nodes"),
]


@pytest.mark.parametrize("argv, fragment", BAD_RENDER, ids=[" ".join(a) for a, _ in BAD_RENDER])
def test_render_refuses_a_bad_value_before_building_anything(tmp_path, capsys, monkeypatch, argv, fragment):
    def never(*args, **kwargs):
        raise AssertionError("the model was built before the value was refused")

    monkeypatch.setattr(cli, "build_model", never)
    output = [] if "-o" in argv else ["-o", str(tmp_path / "x.svg")]
    code, out, err = run_main(["render", *argv, *output], capsys)
    assert_refused(code, err, fragment)
    assert out == "" and not (tmp_path / "x.svg").exists()


BAD_TRAIN = [
    (["--hidden", "0"], "--hidden"),
    (["--hidden", "100000"], "memory"),
    (["--batch", "0"], "--batch"),
    (["--batch", "1000000"], "--batch"),
    (["--seq", "-1"], "--seq"),
    (["--seq", "1000000"], "--seq"),
    (["--lr", "nan"], "--lr"),
    (["--lr", "-0.1"], "--lr"),
    (["--clip-norm", "0"], "--clip-norm"),
    (["--clip-value", "inf"], "--clip-value"),
    (["--steps", "0"], "--steps"),
    (["--seconds", "nan"], "--seconds"),
    (["--steps", "3", "--seconds", "3"], "not allowed"),
    (["--resume", "--force"], "not allowed"),
    (["--cell", "rnn2"], "--cell"),
    (["--checkpoint", "run.pt"], ".pt"),
    (["--text", "no-such-file.txt"], "--text"),
    (["--forget-bias", "nan"], "--forget-bias"),
    (["--forget-bias", "2"], "only an LSTM has a forget gate"),
    (["--forget-bias", "2", "--cell", "gru"], "add --cell lstm"),
]


@pytest.mark.parametrize("argv, fragment", BAD_TRAIN, ids=[" ".join(a) for a, _ in BAD_TRAIN])
def test_train_refuses_a_bad_value_before_training(tmp_path, text_file, capsys, monkeypatch, argv, fragment):
    monkeypatch.chdir(tmp_path)

    def never(*args, **kwargs):
        raise AssertionError("a model was built before the value was refused")

    monkeypatch.setattr(train, "CharRNN", never)
    text = [] if "--text" in argv else ["--text", str(text_file)]
    paths = [] if "--checkpoint" in argv else ["--checkpoint", str(tmp_path / "c.npz")]
    code, out, err = run_main(["train", *argv, *text, *paths, "--out", str(tmp_path / "out")], capsys)
    assert_refused(code, err, fragment)
    assert not (tmp_path / "c.npz").exists()


def test_output_paths_under_a_file_are_refused(tmp_path, text_file, capsys):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("hello", encoding="utf-8")
    code, _, err = run_main(["render", "-o", a_file / "x.svg"], capsys)
    assert_refused(code, err, "is a file")
    code, _, err = run_main(small_run(tmp_path, text_file, "--checkpoint", a_file / "deeper" / "c.npz"), capsys)
    assert_refused(code, err, "is a file")
    code, _, err = run_main(small_run(tmp_path, text_file, "--out", a_file), capsys)
    assert_refused(code, err, "--out", "is a file")
    code, _, err = run_main(["render", "-o", tmp_path], capsys)
    assert_refused(code, err, "-o")


def unwritable_directory(tmp_path) -> Path:
    """A directory no file can be created in: a read-only one where permissions count (not for root),
    else a system directory that refuses files to everyone (/sys, /proc)."""
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    for candidate in (locked, Path("/sys"), Path("/proc")):
        try:
            with tempfile.TemporaryFile(dir=candidate):
                pass
        except OSError:
            return candidate
    pytest.skip("found no directory that refuses new files here")


def test_unwritable_output_paths_are_refused(tmp_path, text_file, capsys):
    place = unwritable_directory(tmp_path)
    try:
        code, _, err = run_main(["render", "-o", place / "x.svg"], capsys)
        assert_refused(code, err, "cannot write in")
        code, _, err = run_main(small_run(tmp_path, text_file, "--checkpoint", place / "c.npz"), capsys)
        assert_refused(code, err, "--checkpoint", "cannot write in")
    finally:
        (tmp_path / "locked").chmod(0o700)


def test_help_is_not_an_error(capsys):
    code, out, _ = run_main(["train", "--help"], capsys)
    assert code == 0 and "--resume" in out and "--clip-value" in out


# ---- memory estimates err high ------------------------------------------------------------------

@pytest.mark.parametrize("cell, hidden, batch, seq", [("rnn", 48, 8, 12), ("lstm", 24, 4, 10)])
def test_train_memory_estimate_is_above_what_a_run_uses(tmp_path, text_file, capsys, cell, hidden, batch, seq):
    tracemalloc.start()
    try:
        code = main(["train", "--cell", cell, "--hidden", str(hidden), "--batch", str(batch), "--seq", str(seq),
                     "--steps", "2", "--text", str(text_file), "--checkpoint", str(tmp_path / "c.npz"),
                     "--out", str(tmp_path)])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert code == 0, capsys.readouterr().err
    config = train.TrainConfig(cell=cell, hidden=hidden, batch=batch, seq=seq)
    assert train.estimate_memory(config, len(set(TEXT)), len(TEXT)) > peak


@pytest.mark.parametrize("cell, view", [("rnn", "steps"), ("lstm", "steps"), ("gru", "ops")])
def test_render_memory_estimate_is_above_what_a_render_uses(tmp_path, capsys, cell, view):
    steps, hidden, batch = (40, 16, 4) if view == "steps" else (10, 4, 2)
    tracemalloc.start()
    try:
        code = main(["render", "--cell", cell, "--steps", str(steps), "--hidden", str(hidden), "--batch", str(batch),
                     "--view", view, "-o", str(tmp_path / "x.dot")])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert code == 0, capsys.readouterr().err
    assert cli.estimate_render_memory(cell, steps, hidden, 2, batch, view) > peak


def test_the_default_demo_fits_a_small_machine():
    corpus_length, vocabulary = 500_000, 100
    assert train.estimate_memory(train.TrainConfig(), vocabulary, corpus_length) < 1_000_000_000


def test_nodes_per_step_follows_the_recorded_graph():
    from tinygrad_rnn import graph, nn

    for name, cell in preflight.CELLS.items():
        outputs, _ = nn.RNN(cell(3, 4, rng=0))(np.zeros((5, 2, 3)))
        assert len(graph.walk(outputs[-1]).nodes) - len(graph.walk(outputs[0]).nodes) == 4 * preflight.nodes_per_step(
            name)


# ---- in a fresh process: python -m visualize ---------------------------------------------------

def run_process(argv, cwd):
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop(cli.LAUNCHER, None)  # launched as a newcomer would, not through a wrapper script
    return subprocess.run([sys.executable, "-m", "visualize", *argv], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.parametrize("argv", [
    ["render", "--radius", "nan"],
    ["render", "--steps", "1000000000", "--view", "steps"],
    ["render", "-o", "out.txt"],
    ["train", "--hidden", "100000"],
    ["train", "--resume", "--checkpoint", "missing.npz"],
], ids=" ".join)
def test_python_m_visualize_refuses_in_one_line_without_a_traceback(tmp_path, argv):
    result = run_process(argv, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert result.stdout == "" and list(tmp_path.iterdir()) == []


def test_path_view_with_a_cut_unroll_is_a_one_line_error(tmp_path, capsys):
    code, _, err = run_main(["render", "--steps", 3, "--truncate", 1, "--view", "path", "-o", tmp_path / "p.svg"],
                            capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_radius_for_a_gate_block_left_at_zero_is_refused(tmp_path, capsys):
    code, _, err = run_main(["render", "--cell", "lstm", "--init", "eye", "--radius", 2, "-o", tmp_path / "s.svg"],
                            capsys)
    assert code == 2 and "spectral radius 0" in err and len(err.strip().splitlines()) == 1


def test_the_demos_headline_quotes_the_lag_views_numbers_and_its_verdict_holds_for_the_last_prediction():
    from tinygrad_rnn.charrnn import CharRNN, window_predictions
    from visualize.lag_view import draw_lags

    rng = np.random.default_rng(0)
    ids = rng.integers(0, 12, size=(26, 1))
    runs = []
    for seed in (0, 1):
        model = CharRNN(12, 16, seed=seed, dtype=np.float64)
        runs.append(window_predictions(model, ids[:-1], ids[1:]))
    matrices = [diagnostics.lags(loss, states) for loss, states in runs]
    rows = diagnostics.steps(*runs[1])
    text = " ".join(train.what_to_look_at(matrices, diagnostics.verdict(rows), 7, "before training").split())
    T = 25

    def median_share(matrix, lag):  # by hand: prediction t reads h_t, rows 1..T of the split loss
        return np.median([matrix[t, t - lag] / matrix[t, t] for t in range(max(lag, 1), T + 1)])

    # Prediction t reaches t steps back at most: 13 of the 25 reach lag 13, the longest at least half reach.
    far = max(lag for lag in range(T + 1) if sum(t >= lag for t in range(1, T + 1)) >= T / 2)
    assert far == 13
    after, before = (median_share(matrices[1], lag) for lag in (5, far)), (median_share(matrices[0], lag) for lag in (5, far))
    (a5, a_far), (b5, b_far) = after, before
    assert (f"{style.number(a5, 2)} at lag 5 and {style.number(a_far, 2)} at lag 13 after iteration 7 "
            f"(before training: {style.number(b5, 2)} and {style.number(b_far, 2)})") in text
    source = draw_lags(*runs[1], matrix=matrices[1]).source
    for number in (a5, a_far):
        assert f'<FONT POINT-SIZE="7">{style.number(number, 2)}</FONT>' in source  # the reach row shows them
    factor = diagnostics.gradient_factor(rows)[0]
    assert f"reaches the window's start × {style.number(factor, 2)}" in text
    assert factor == pytest.approx(matrices[1][-1, 0] / matrices[1][-1, -1], rel=1e-10)
    line = "below 0.001" if factor < 1e-3 else "above 0.001"
    assert line in text


def test_the_command_runs_numpy_on_one_blas_thread_unless_told(tmp_path, text_file, capsys, monkeypatch):
    from threadpoolctl import threadpool_info

    seen = []

    def counting_run(args, given, defaults):
        seen.append({pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"})
        return 0

    monkeypatch.setattr(train, "run", counting_run)
    for extra, expected in (([], {1}), (["--threads", "2"], {2})):
        code, _, err = run_main(small_run(tmp_path, text_file, "--steps", 1, *extra), capsys)
        assert code == 0, err
        has_blas = any(pool["user_api"] == "blas" for pool in threadpool_info())
        assert seen[-1] == (expected if has_blas else set())  # a machine without a BLAS pool has nothing to limit
    code, _, err = run_main(small_run(tmp_path, text_file, "--threads", "0"), capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--threads" in err


def test_two_runs_never_replace_each_others_pictures(tmp_path, text_file, capsys):
    for name in ("a", "b"):
        args = ["train", "--hidden", 8, "--seq", 6, "--batch", 2, "--text", text_file, "--steps", 1,
                "--checkpoint", tmp_path / f"{name}.npz", "--out", tmp_path / "pictures"]
        code, _, err = run_main(args, capsys)
        assert code == 0, err
    written = sorted(p.name for p in (tmp_path / "pictures").iterdir())
    pictures = [f"{n}_{view}.{kind}" for n in "ab" for view in ("lags", "steps") for kind in ("png", "svg")]
    assert written == sorted([*pictures, "a.html", "b.html"])  # and each run's page


def test_the_printed_command_to_go_on_runs_as_the_command_was_launched(tmp_path, text_file):
    first = run_process(["train", "--steps", "1", "--hidden", "8", "--seq", "6", "--batch", "2", "--text",
                         str(text_file), "--checkpoint", str(tmp_path / "c.npz"), "--out", str(tmp_path)], cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    printed = first.stdout.split("continue with: ")[1].splitlines()[0]
    assert printed.startswith(f"{sys.executable} -m visualize train --resume")  # as `python -m visualize` ran
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop(cli.LAUNCHER, None)
    again = subprocess.run([*shlex.split(printed), "--steps", "1", "--out", str(tmp_path)], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "resumed from" in again.stdout and "(iteration 2)" in again.stdout


def test_a_wrapper_script_and_a_program_off_the_path_are_printed_as_launched(monkeypatch):
    monkeypatch.setenv(cli.LAUNCHER, "scripts/dev.sh run {command}")
    assert cli.launched_as("train") == "scripts/dev.sh run train"
    monkeypatch.delenv(cli.LAUNCHER)
    monkeypatch.setattr(sys, "argv", ["/nowhere/on/the/path/tinygrad-rnn", "train"])
    assert cli.launched_as("train") == "/nowhere/on/the/path/tinygrad-rnn train"


@pytest.mark.parametrize("argv, words", [
    (["render", "--view", "steps", "--compact"], "--compact applies to the ops view only, not to --view steps"),
    (["render", "--view", "ops", "--source", "weight_hh"], "--source applies to the path view only"),
    (["render", "--view", "steps", "--max-nodes", "10"], "--max-nodes applies to the ops and path views only"),
    (["render", "--view", "path", "--compact"], "--compact applies to the ops view only, not to --view path"),
    (["render", "--compact", "--source", "h0"], "--source applies to the path view only, not to --view ops"),
    (["render", "--view", "steps", "--source", "h0"], "--source applies to the path view only, not to --view steps"),
])
def test_a_render_flag_that_does_not_apply_to_the_view_is_one_line_not_ignored(tmp_path, capsys, argv, words):
    code, _, err = run_main([*argv, "-o", tmp_path / "x.svg"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and words in err
    assert not (tmp_path / "x.svg").exists()


def test_render_help_describes_the_views_and_gives_the_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["render", "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    for words in ("draw one view of its graph", "(default rnn)", "(default ops)", "(default out.svg)",
                  "(default h0)", "PyTorch's uniform"):
        assert words in shown


def test_the_headline_says_above_or_below_the_line_by_the_number_it_quotes():
    # Matrices whose last prediction keeps 0.01 at the window's start, under a verdict of "vanishing"
    # (as a dead unit on the way gives): the sentence must not say "below 0.001".
    matrix = np.array([[0.0, 0.0, 0.0], [0.5, 1.0, 0.0], [0.01, 0.1, 1.0]])
    text = " ".join(train.what_to_look_at([matrix, matrix], "vanishing", 3).split())
    assert "× 0.01" in text and "above 0.001" in text and "passed no gradient at all" in text
    faded = np.array([[0.0, 0.0, 0.0], [0.5, 1.0, 0.0], [1e-4, 0.1, 1.0]])
    text = " ".join(train.what_to_look_at([faded, faded], "vanishing", 3).split())
    assert "× 0.0001" in text and "below 0.001" in text and "passed no gradient" not in text


# ---- --forget-bias ------------------------------------------------------------------------------

def test_forget_bias_sets_the_bias_the_forget_gate_sees_and_nothing_else():
    from tinygrad_rnn.charrnn import CharRNN

    plain, opened = CharRNN(10, 6, "lstm", seed=3), CharRNN(10, 6, "lstm", seed=3, forget_bias=2.0)
    cell, before = opened.rnn.cell, plain.rnn.cell
    H = 6
    effective = cell.bias_ih.data + cell.bias_hh.data  # b_if + b_hf, what sigmoid's input holds
    np.testing.assert_array_equal(effective[H : 2 * H], np.full(H, 2.0, np.float32))
    for name in ("bias_ih", "bias_hh"):  # the input, candidate and output gates keep PyTorch's init
        for block in (slice(0, H), slice(2 * H, 4 * H)):
            np.testing.assert_array_equal(getattr(cell, name).data[block], getattr(before, name).data[block])
    np.testing.assert_array_equal(cell.weight_hh.data, before.weight_hh.data)
    with pytest.raises(ValueError, match="only an LSTM has a forget gate"):
        CharRNN(10, 6, "gru", forget_bias=1.0)


def test_forget_bias_is_saved_with_the_run_and_resumed(tmp_path, text_file, capsys):
    code, out, err = run_main(small_run(tmp_path, text_file, "--cell", "lstm", "--forget-bias", 1.5, "--steps", 1),
                              capsys)
    assert code == 0, err
    assert "lstm with hidden 8 and forget-gate bias 1.5" in out
    assert json.loads(str(checkpoint.load(tmp_path / "run.npz")["meta.config"]))["forget_bias"] == 1.5
    code, out, err = run_main(small_run(tmp_path, text_file, "--resume", "--steps", 1), capsys)
    assert code == 0, err
    assert "forget-gate bias 1.5" in out and "resumed from" in out


@pytest.mark.parametrize("command", ["render", "train"])
def test_every_flag_in_help_gives_its_default(command):
    subcommands = next(a for a in cli._parser()._actions if a.dest == "command")
    parser = subcommands.choices[command]
    for action in parser._actions:
        if action.dest != "help":
            assert "default" in (action.help or ""), f"{command} {'/'.join(action.option_strings)}"
    assert parser.description


def test_what_train_prints_says_iteration_for_training_and_time_step_for_t(tmp_path, text_file, capsys):
    import re

    code, out, err = run_main(small_run(tmp_path, text_file, "--steps", 2), capsys)
    assert code == 0, err
    sample = out.index("sample:")
    printed = out[:sample] + out[out.index("checkpoint:") :]  # the sampled text is the model's, not ours
    printed = " ".join(printed.split())
    # "step" alone would be ambiguous: only "time step", "--steps N" (the flag) and "the step view" may say it.
    assert re.findall(r"(?<!time )(?<!-)\bsteps?\b(?! view)", printed) == [], printed
    assert "iteration 2" in printed and "time step" in printed
