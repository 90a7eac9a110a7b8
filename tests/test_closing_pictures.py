"""The closing pictures of ``tinygrad-rnn train``: each stage says what it computes as it starts, on
stderr beside the progress bar, and the numbers the step view, the verdict, the lag view and the page
share are computed once per window (twice in all: before and after training), not once per view."""

import pytest

from tinygrad_rnn import recurrence
from tinygrad_rnn.diagnostics import split
from visualize import preflight
from visualize.cli import main

TEXT = "the quick brown fox jumps over the lazy dog; pack my box with five dozen liquor jugs.\n" * 60


@pytest.fixture(autouse=True)
def enough_memory(monkeypatch):
    monkeypatch.setattr(preflight, "available_memory", lambda: 8_000_000_000)


@pytest.mark.parametrize("cell", ["rnn", "lstm"])
def test_each_stage_is_announced_and_the_numbers_are_computed_once_per_window(tmp_path, capsys, monkeypatch, cell):
    text = tmp_path / "fox.txt"
    text.write_text(TEXT, encoding="utf-8")
    counts = {"steps": 0, "lags": 0}
    real_bptt, real_carry = recurrence.bptt, recurrence.carry_back

    def bptt(*args, **kwargs):
        counts["steps"] += 1
        return real_bptt(*args, **kwargs)

    def carry_back(*args, **kwargs):
        counts["lags"] += 1
        return real_carry(*args, **kwargs)

    monkeypatch.setattr(recurrence, "bptt", bptt)
    monkeypatch.setattr(split.recurrence, "carry_back", carry_back)
    argv = ["train", "--cell", cell, "--hidden", 8, "--seq", 6, "--batch", 2, "--text", text, "--steps", 3,
            "--checkpoint", tmp_path / "run.npz", "--out", tmp_path / "pictures"]
    assert main([str(a) for a in argv]) == 0
    err = capsys.readouterr().err
    stages = [line for line in err.splitlines() if line.startswith("pictures ")]
    assert [s.split(":")[0] for s in stages[:4]] == ["pictures 1/4", "pictures 2/4", "pictures 3/4", "pictures 4/4"]
    assert "before iteration 1" in stages[0] and "after iteration 3" in stages[1]
    assert "by an SVD" in stages[0]  # which bound the step view shows, said where it is computed
    assert stages[-1].startswith("pictures done in ") and stages[-1].endswith(" s")
    assert counts["steps"] == 2  # the step view's two windows; the verdict and the page reuse the second
    # One lag matrix per window: a loss split by read carries back each of the T + 1 reads once.
    assert counts["lags"] == 2 * (6 + 1) + 2  # (and the last read alone, inside each step view's rows)
