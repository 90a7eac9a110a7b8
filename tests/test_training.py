"""Training end to end: a char-RNN learns, its memory stays flat, checkpoints resume exactly, the demo runs."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import tracemalloc
import weakref
from pathlib import Path

import numpy as np
import pytest

from tinygrad_rnn import checkpoint, nn, stack
from tinygrad_rnn.data import CharCorpus, one_hot, random_windows, sequential_windows
from tinygrad_rnn.optim import SGD, Adam

ROOT = Path(__file__).resolve().parents[1]


class TinyCharRNN(nn.Module):
    """The demo's model: one-hot characters -> RNNCell or LSTMCell -> Linear."""

    def __init__(self, vocab_size, hidden_size, cell=nn.RNNCell, seed=0):
        rng = np.random.default_rng(seed)
        self.vocab_size = vocab_size
        self.rnn = nn.RNN(cell(vocab_size, hidden_size, rng=rng))
        self.head = nn.Linear(hidden_size, vocab_size, rng=rng)

    def forward(self, ids, state=None):
        hiddens, state = self.rnn(one_hot(ids, self.vocab_size), h0=state)
        return self.head(stack(hiddens)), state


def window_loss(model, inputs, targets, state=None):
    logits, state = model(inputs, state)
    return nn.cross_entropy(logits, targets, reduction="sum") / targets.shape[1], state


def test_untrained_loss_is_about_t_ln_v():
    corpus = CharCorpus.from_file(max_chars=20_000)
    V, T = len(corpus.vocab), 25
    model = TinyCharRNN(V, 128)
    inputs, targets = random_windows(corpus.ids, T, 16, rng=0)
    loss, _ = window_loss(model, inputs, targets)
    assert abs(loss.item() - T * np.log(V)) < 0.05 * T * np.log(V)


@pytest.mark.parametrize("cell", [nn.RNNCell, nn.LSTMCell])
def test_char_rnn_learns_a_repeating_text(cell):
    corpus = CharCorpus("the quick brown fox jumps over the lazy dog. " * 40)
    V, T = len(corpus.vocab), 10
    model = TinyCharRNN(V, 32, cell)
    optimizer = Adam(model.parameters(), lr=0.02)
    rng = np.random.default_rng(0)
    for _ in range(150):
        optimizer.zero_grad()
        loss, _ = window_loss(model, *random_windows(corpus.ids, T, 8, rng))
        loss.backward()
        optimizer.step()
    # Guessing scores ln V = 3.3 per character; a model that learnt the sentence scores far less.
    assert loss.item() / T < 0.3 * np.log(V)


def train_steps(model, optimizer, windows, steps, state=None, on_step=None):
    """The demo's loop: carry the state from window to window, detached at each boundary."""
    for k in range(steps):
        inputs, targets = windows[k % len(windows)]
        optimizer.zero_grad()
        loss, state = window_loss(model, inputs, targets, state)
        loss.backward()
        optimizer.step()
        state = nn.detach_state(state)
        if on_step is not None:
            on_step(k, loss)
    return state


def fill_tuple_pools():
    """CPython keeps up to 2,000 freed tuples of each length below 20 for reuse, and tracemalloc
    counts them as allocated; ``f(*map(...))`` frees one such tuple per call. Fill the pools first,
    so that any growth measured afterwards is memory the training loop really holds."""
    pools = [tuple(range(length)) for length in range(1, 20) for _ in range(2000)]
    del pools


def test_memory_stays_flat_over_1000_training_steps():
    corpus = CharCorpus("hello recurrent world, " * 30)
    windows = list(sequential_windows(corpus.ids, 6, 4))
    model = TinyCharRNN(len(corpus.vocab), 16)
    optimizer = SGD(model.parameters(), lr=0.05, momentum=0.9)
    previous, sizes = [None], {}

    def watch(k, loss):
        if k >= 1:
            # Freed by reference counting alone (the collector is off): no graph holds a cycle.
            assert previous[0]() is None, f"the graph of step {k - 1} is still alive at step {k}"
        previous[0] = weakref.ref(loss)
        if k in (100, 999):
            sizes[k] = tracemalloc.get_traced_memory()[0]

    gc.collect()
    gc.disable()
    tracemalloc.start()
    fill_tuple_pools()
    try:
        train_steps(model, optimizer, windows, 1000, on_step=watch)
    finally:
        tracemalloc.stop()
        gc.enable()
    # One graph here holds about 80 kB: keeping even every tenth one would add 7 MB.
    assert sizes[999] - sizes[100] < 20_000, sizes


def test_checkpoint_resume_continues_exactly(tmp_path):
    corpus = CharCorpus("abracadabra, said the magician. " * 20)
    windows = list(sequential_windows(corpus.ids, 5, 3))

    def fresh():
        model = TinyCharRNN(len(corpus.vocab), 12, nn.LSTMCell, seed=1)
        return model, Adam(model.parameters(), lr=0.01)

    straight, straight_optimizer = fresh()
    train_steps(straight, straight_optimizer, windows, 12)

    first, first_optimizer = fresh()
    state = train_steps(first, first_optimizer, windows[:7] + windows, 7)
    h, c = (part.numpy() for part in state)
    checkpoint.save_training(tmp_path / "ckpt.npz", first, first_optimizer, step=7, h=h, c=c)

    resumed, resumed_optimizer = fresh()  # different weights until loaded
    meta = checkpoint.load_training(tmp_path / "ckpt.npz", resumed, resumed_optimizer)
    assert meta["step"] == 7
    train_steps(resumed, resumed_optimizer, windows[7:] + windows, 5, state=nn.detach_state((meta["h"], meta["c"])))
    for (name, a), (_, b) in zip(straight.named_parameters(), resumed.named_parameters(), strict=True):
        assert np.array_equal(a.data, b.data), name


def run_demo(*args, cwd):
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("TINYGRAD_RNN_LAUNCHER", None)  # launched as a newcomer would
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "char_rnn.py"), *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout, result.stderr


def test_demo_trains_samples_saves_and_resumes(tmp_path):
    """examples/char_rnn.py is ``tinygrad-rnn train``: the default corpus, a small model, a few steps."""
    ckpt = tmp_path / "demo.npz"
    common = ["--hidden", "32", "--checkpoint", str(ckpt), "--out", str(tmp_path)]
    first, progress = run_demo(*common, "--steps", "12", cwd=tmp_path)
    assert "ln V" in first and "sample:" in first and "iterations/s" in progress
    assert ckpt.exists() and "(iteration 12)" in first
    vocabulary = int(first.split("ln V = ln ")[1].split()[0])
    start, end = (float(x) for x in first.split("loss per character ")[1].split()[0:3:2])
    assert abs(start - np.log(vocabulary)) < 0.1 * np.log(vocabulary)  # starts near ln V: guessing
    assert end < start
    second, _ = run_demo(*common, "--resume", "--steps", "3", cwd=tmp_path)
    assert "at iteration 12" in second and "(iteration 15)" in second
    assert (tmp_path / "demo_steps.svg").exists() and "pictures:" in second  # named after demo.npz
    printed = second.split("continue with: ")[1].splitlines()[0]
    assert printed.startswith(f"{sys.executable} {ROOT / 'examples' / 'char_rnn.py'} --resume")  # runs as launched
