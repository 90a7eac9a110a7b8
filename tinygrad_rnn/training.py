"""Training the character-level RNN of ``tinygrad-rnn train``: its configuration, the loop (truncated
BPTT over B parallel streams of the text, Adam, clipping, a progress bar), and saving and resuming a run.

A checkpoint is never overwritten or half-loaded silently: ``refuse_to_overwrite``, ``saved_run``,
``restored_config`` and ``load_weights`` raise ``RunError`` with one line naming what is wrong, which
the command prints (exit status 2).
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from tinygrad_rnn import checkpoint, nn
from tinygrad_rnn.charrnn import CELLS, CharRNN, window_loss
from tinygrad_rnn.clip import clip_grad_norm_, clip_grad_value_
from tinygrad_rnn.data import CharCorpus, CharVocab, load_text

__all__ = ["TrainConfig", "RunError", "train_steps", "refuse_to_overwrite", "saved_run", "restored_config",
           "corpus_of", "load_weights", "flag", "one_line", "refuse_diverged"]


class RunError(ValueError):
    """A run that cannot go on as asked (a checkpoint in the way, damaged or contradicted, a text
    that cannot be read); the message is one line saying what to do."""


# What reading a damaged or foreign file can raise: checkpoint.load checks its manifest (CheckpointError);
# the rest come from a file that is not a zip archive at all, or holds entries of the wrong kind.
UNREADABLE = (checkpoint.CheckpointError, OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile)


@dataclass(frozen=True)
class TrainConfig:
    """What a run is, and what its checkpoint restores on ``--resume``."""

    cell: str = "rnn"
    hidden: int = 128
    seq: int = 25  # T: characters per window, the span BPTT reaches back
    batch: int = 32  # B: parallel streams through the text
    lr: float = 3e-3
    clip_norm: float = 5.0  # the global norm of all gradients (PyTorch's clip_grad_norm_)
    clip_value: float | None = None  # each gradient entry clamped to [-c, c] (clip_grad_value_)
    seed: int = 0
    text: str | None = None  # a text file's absolute path; None: Python's standard library source
    forget_bias: float | None = None  # LSTM only: the forget gates' bias at the start (charrnn.set_forget_bias)


def flag(field: str) -> str:
    return "--" + field.replace("_", "-")


def refuse_to_overwrite(path: Path, force: bool) -> None:
    if path.exists() and not force:
        raise RunError(f"{path} already holds a checkpoint; continue it with --resume, replace it with --force, "
                         "or choose another --checkpoint")


def saved_run(path: Path) -> tuple[dict, str]:
    """(configuration, vocabulary) saved in the checkpoint at ``path``; RunError if there is none."""
    if not path.is_file():
        raise RunError(f"--resume: no checkpoint at {path}; drop --resume to start a new run there")
    try:
        arrays = checkpoint.load(path)
        return json.loads(str(arrays["meta.config"])), str(arrays["meta.vocab"])
    except KeyError as error:
        raise RunError(f"--resume: {path} has no {error.args[0]!r}: it was not written by tinygrad-rnn train") \
            from None
    except UNREADABLE as error:
        raise RunError(f"--resume: {path} is damaged or not a checkpoint ({one_line(error)})") from None


def restored_config(saved: dict, given: TrainConfig, path: Path) -> TrainConfig:
    """The saved configuration; a flag the user gave that says otherwise is an error naming both."""
    try:
        config = TrainConfig(**saved)
    except TypeError as error:
        raise RunError(f"--resume: the configuration saved in {path} does not fit this version "
                         f"({one_line(error)})") from None
    wrong = invalid_fields(config)
    if wrong:
        raise RunError(f"--resume: the configuration saved in {path} is damaged ({', '.join(wrong)})")
    for field, value in dataclasses.asdict(given).items():
        if value is None:
            continue
        if field == "text":
            value = str(Path(value).resolve())
        kept = getattr(config, field)
        if value != kept:
            raise RunError(f"{flag(field)} {shown(value)} contradicts the checkpoint {path}, saved with "
                             f"{flag(field)} {shown(kept)}; drop the flag to resume that run, or start a new "
                             "one with --force or another --checkpoint")
    return config


def invalid_fields(config: TrainConfig) -> list[str]:
    """The fields of a restored configuration the command line would have refused."""
    def whole(value, least):
        return isinstance(value, int) and not isinstance(value, bool) and value >= least

    def finite(value):
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

    def positive(value):
        return finite(value) and value > 0

    checks = {
        "cell": config.cell in CELLS, "hidden": whole(config.hidden, 1), "seq": whole(config.seq, 1),
        "batch": whole(config.batch, 1), "lr": positive(config.lr), "clip_norm": positive(config.clip_norm),
        "clip_value": config.clip_value is None or positive(config.clip_value), "seed": whole(config.seed, 0),
        "text": config.text is None or isinstance(config.text, str),
        "forget_bias": config.forget_bias is None or (finite(config.forget_bias) and config.cell == "lstm"),
    }
    return [f"{flag(field)} {getattr(config, field)!r}" for field, valid in checks.items() if not valid]


def shown(value) -> str:
    """A flag's value as the user would type it: 1 rather than 1.0, exact where %g would round."""
    if value is None:
        return "(none)"
    if isinstance(value, float) and float(f"{value:g}") == value:
        return f"{value:g}"
    return str(value)


def corpus_of(config: TrainConfig, vocab: str | None) -> CharCorpus:
    try:
        text = load_text(config.text)
    except (OSError, ValueError) as error:
        raise RunError(f"--text {config.text}: {one_line(error)}") from None
    try:
        return CharCorpus(text) if vocab is None else CharCorpus(text, CharVocab(vocab))
    except KeyError as error:
        raise RunError(f"--text: the checkpoint's alphabet cannot read this text ({one_line(error)})") from None
    except ValueError as error:
        raise RunError(f"--text {config.text}: {one_line(error)}") from None


def load_weights(path: Path, model: CharRNN, optimizer, batch: int) -> tuple[int, object]:
    """Weights, optimiser state, step count and the carried state from the checkpoint."""
    try:
        meta = checkpoint.load_training(path, model, optimizer)
        step, count = int(meta["step"]), int(meta["state_parts"])
        parts = [meta[f"state{i}"] for i in range(count)]
    except UNREADABLE as error:
        raise RunError(f"--resume: {path} is damaged or does not fit its configuration ({one_line(error)})") \
            from None
    expected = model.rnn.cell.initial_state(batch)
    expected = expected if isinstance(expected, tuple) else (expected,)
    if parts and (len(parts) != len(expected) or any(np.shape(p) != e.shape for p, e in zip(parts, expected))):
        raise RunError(f"--resume: the carried state saved in {path} has shapes {[np.shape(p) for p in parts]}, "
                         f"not {[e.shape for e in expected]} as its configuration needs: the file is damaged")
    state = nn.detach_state(parts[0] if len(parts) == 1 else tuple(parts)) if parts else None
    return step, state


def refuse_diverged(model, step: int, config: TrainConfig) -> None:
    """RunError when a step left a weight that is not a finite number (NaN or inf): nothing after it
    can mean anything (every loss and sample would be NaN), and saving it would spoil the checkpoint.
    Raised before the run is saved, so a checkpoint already there stays as it was."""
    broken = [name for name, p in model.named_parameters() if not np.isfinite(p.data).all()]
    if broken:
        raise RunError(f"iteration {step}: training diverged, {broken[0]}"
                       + (f" and {len(broken) - 1} more weights" if len(broken) > 1 else "")
                       + f" hold NaN or inf; nothing was saved. Use a smaller --lr (this run's: {shown(config.lr)}; "
                         f"the default: {shown(TrainConfig.lr)})")
    # Not "a smaller --clip-norm": Adam divides each gradient by its own running size, so its steps
    # are about --lr long however the gradient was clipped (tests/test_advice.py checks both).


def one_line(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    return " ".join(text.split())


def train_steps(model, optimizer, windows, config: TrainConfig, step: int, state, steps, seconds):
    """The training loop, with a progress bar on stderr; Ctrl-C stops it cleanly (the run is saved).
    Returns the step reached, the state to carry on from and the first and last smoothed losses."""
    T = config.seq
    total = steps if steps is not None else seconds
    bar = tqdm(total=total, file=sys.stderr, dynamic_ncols=True, mininterval=0.5, leave=True,
               bar_format="{desc}{percentage:3.0f}%|{bar}| {elapsed}<{remaining}{postfix}")
    started = last_shown = time.perf_counter()
    first_step = last_step = step
    smooth = first = rate = None
    try:
        while True:
            now = time.perf_counter()
            if (steps is not None and step - first_step >= steps) or (steps is None and now - started >= seconds):
                break
            if step % len(windows) == 0:
                state = None  # back at the start of the text: start from a zero state again
            inputs, targets = windows[step % len(windows)]
            optimizer.zero_grad()
            # numpy's overflow warnings would interleave with the progress bar; a step that leaves a weight
            # NaN or inf is reported in words by refuse_diverged, just below.
            with np.errstate(over="ignore", invalid="ignore"):
                loss, _, state = window_loss(model, inputs, targets, state)
                loss.backward()
                if config.clip_value is not None:
                    clip_grad_value_(model.parameters(), config.clip_value)
                clip_grad_norm_(model.parameters(), config.clip_norm)  # one long-range spike must not wreck them
                optimizer.step()
            state = nn.detach_state(state)  # the next window starts here, but its gradients stop here
            step += 1
            refuse_diverged(model, step, config)
            per_char = loss.item() / T
            smooth = per_char if smooth is None else 0.95 * smooth + 0.05 * per_char
            first = per_char if first is None else first
            now = time.perf_counter()
            bar.set_description_str(f"iteration {step}" + (f"/{first_step + steps}" if steps else "") + " ",
                                    refresh=False)
            if now - last_shown >= 2.0 or step == first_step + 1:
                # steps per second over the last interval, not since the start: it shows slowdowns
                rate = (step - last_step) / max(now - last_shown, 1e-9)
                bar.set_postfix_str(f"loss {smooth:.3f}/char, {rate:.1f} iterations/s", refresh=False)
                last_shown, last_step = now, step
            bar.update(1 if steps is not None else min(now - started, seconds) - bar.n)
    except KeyboardInterrupt:
        bar.write(f"stopped at iteration {step} (Ctrl-C); saving the run", file=sys.stderr)
    finally:
        if smooth is not None and rate is not None:  # the last line shows the loss where the run ended
            bar.set_postfix_str(f"loss {smooth:.3f}/char, {rate:.1f} iterations/s", refresh=False)
        bar.close()
    return step, state, (first, smooth)
