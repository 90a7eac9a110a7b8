"""``tinygrad-rnn train``: teach a character-level RNN to write, then show how far its gradients reach.

    tinygrad-rnn train                     # about a minute on two cores (scripts/dev.sh demo runs this)
    tinygrad-rnn train --resume --steps 500
    tinygrad-rnn train --cell lstm --hidden 64 --seconds 20 --checkpoint out/lstm.npz

What it shows:
- The loss per character starts at about ln V: an untrained model spreads its bets evenly over the V
  characters. Everything it learns shows as the loss falling below that.
- Backpropagation through time is ``loss.backward()`` on the unrolled graph; nothing else. The text is
  read as B parallel streams, T characters at a time; the state is carried from one window to the next
  and detached there (truncated BPTT over the whole text).
- At the end, the step view of one training window (all T steps) with the weights this run started
  from and with the trained weights, one above the other: how much of the gradient of the window's last
  prediction reaches each earlier step.

A checkpoint is never overwritten silently: a new run refuses an existing one unless given ``--resume``
(continue it, with the configuration saved in it) or ``--force`` (start afresh and replace it).
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import textwrap
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from tinygrad_rnn import checkpoint, diagnostics, nn, no_grad
from tinygrad_rnn.clip import clip_grad_norm_, clip_grad_value_
from tinygrad_rnn.data import CharCorpus, CharVocab, load_text, random_windows, sequential_windows
from tinygrad_rnn.optim import Adam
from visualize import preflight, style
from visualize.char_rnn import CharRNN, sample, window_loss, window_predictions
from visualize.lag_view import draw_lags, headline_lag
from visualize.preflight import CELLS, UsageError
from visualize.render import render
from visualize.step_view import compare_steps

__all__ = ["TrainConfig", "run", "estimate_memory", "DEFAULT_CHECKPOINT"]

DEFAULT_CHECKPOINT = Path("out/char_rnn.npz")
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


def flag(field: str) -> str:
    return "--" + field.replace("_", "-")


def estimate_memory(config: TrainConfig, vocab_size: int, text_length: int) -> float:
    """Bytes a run needs, from its sizes (an estimate that errs high):
    - a fixed base, and the text: its characters, their ids (int64) and the training and held-out copies;
    - the parameters, float32, five times over: the weights, their gradients, Adam's two moments and
      the copy of the starting weights the picture needs (the checkpoint briefly makes one more);
    - T recorded steps of B x (gates x H) activations and their gradients, plus each node's overhead;
    - the head's (T, B, V) arrays: one-hot inputs, logits and the cross-entropy's parts, with gradients;
    - one step's Jacobian (B, S, S) in float64 for the picture, S the state's width."""
    gates, H, B, T, V = CELLS[config.cell].gates, config.hidden, config.batch, config.seq, vocab_size
    parameters = gates * H * (V + H + 2) + V * (H + 1)
    graph = T * preflight.nodes_per_step(config.cell) * (preflight.NODE_OVERHEAD + 2 * B * gates * H * 4)
    head = 16 * T * B * V * 4
    state = 2 * H if config.cell == "lstm" else H
    text = 1 + 8 * 3
    return preflight.BASE_MEMORY + text * text_length + 6 * parameters * 4 + graph + head + 2 * B * state * state * 8


# ---- the command --------------------------------------------------------------------------------

def run(args, given: TrainConfig, defaults: TrainConfig) -> int:
    """Run ``tinygrad-rnn train`` with the parsed ``args``. ``given`` holds the configuration flags
    the user typed (None where not given); ``defaults`` fills the rest. Raises UsageError for any
    value that cannot work, before training starts."""
    path = preflight.check_output_file(args.checkpoint, "--checkpoint", (".npz",))
    out_dir = preflight.check_directory(args.out, "--out")
    saved = _saved_run(path) if args.resume else None
    if saved is None:
        _refuse_to_overwrite(path, args.force)
        if path.exists():
            print(f"--force: the checkpoint {path} will be replaced by this run's")
        config = dataclasses.replace(defaults, **{k: v for k, v in dataclasses.asdict(given).items() if v is not None})
        if config.text is not None:
            config = dataclasses.replace(config, text=str(Path(config.text).resolve()))
    else:
        config = _restored_config(saved[0], given, path)
    corpus = _corpus(config, saved[1] if saved else None)
    V, T = len(corpus.vocab), config.seq
    train_ids, valid_ids = corpus.split(0.05, block=2_000)  # every 20th block of 2,000 characters held out
    stream = (len(train_ids) - 1) // config.batch
    if stream < T:
        raise UsageError(f"--seq {T} with --batch {config.batch}: the text's {len(train_ids):,} training characters "
                         f"give each of the {config.batch} streams {stream}, fewer than one window of {T}; "
                         "use a smaller --batch or --seq, or a longer --text")
    preflight.check_memory(estimate_memory(config, V, len(corpus)), f"--hidden {config.hidden} --batch {config.batch} "
                           f"--seq {T} ({config.cell})", "use a smaller --hidden, --batch or --seq")

    model = CharRNN(V, config.hidden, config.cell, config.seed)
    optimizer = Adam(model.parameters(), lr=config.lr)
    step, state = 0, None
    if saved is not None:
        step, state = _load_weights(path, model, optimizer, config.batch)
    windows = list(sequential_windows(train_ids, T, config.batch))
    print(f"{corpus!r}; {config.cell} with hidden {config.hidden}, T={T}, B={config.batch}, "
          f"{len(windows)} windows a pass" + (f"; resumed from {path} at step {step}" if saved else ""))
    print(f"a model that guesses uniformly scores ln V = ln {V} = {np.log(V):.3f} per character")

    starting_weights = model.state_dict()
    first_step, started = step, time.perf_counter()
    step, state, losses = _train(model, optimizer, windows, config, step, state, args.steps, args.seconds)
    elapsed = time.perf_counter() - started

    parts = () if state is None else state if isinstance(state, tuple) else (state,)
    checkpoint.save_training(path, model, optimizer, step=step, config=json.dumps(dataclasses.asdict(config)),
                             vocab="".join(corpus.vocab.chars), state_parts=len(parts),
                             **{f"state{i}": part.numpy() for i, part in enumerate(parts)})
    _report(model, corpus, valid_ids, config, first_step, step, elapsed, losses)
    print(f"checkpoint: {path} (step {step}); continue with: tinygrad-rnn train --resume"
          + ("" if path == DEFAULT_CHECKPOINT else f" --checkpoint {path}"))
    _pictures(model, starting_weights, windows[0], config, first_step, step, out_dir)
    return 0


def _refuse_to_overwrite(path: Path, force: bool) -> None:
    if path.exists() and not force:
        raise UsageError(f"{path} already holds a checkpoint; continue it with --resume, replace it with --force, "
                         "or choose another --checkpoint")


def _saved_run(path: Path) -> tuple[dict, str]:
    """(configuration, vocabulary) saved in the checkpoint at ``path``; UsageError if there is none."""
    if not path.is_file():
        raise UsageError(f"--resume: no checkpoint at {path}; drop --resume to start a new run there")
    try:
        arrays = checkpoint.load(path)
        return json.loads(str(arrays["meta.config"])), str(arrays["meta.vocab"])
    except KeyError as error:
        raise UsageError(f"--resume: {path} has no {error.args[0]!r}: it was not written by tinygrad-rnn train") \
            from None
    except UNREADABLE as error:
        raise UsageError(f"--resume: {path} is damaged or not a checkpoint ({_one_line(error)})") from None


def _restored_config(saved: dict, given: TrainConfig, path: Path) -> TrainConfig:
    """The saved configuration; a flag the user gave that says otherwise is an error naming both."""
    try:
        config = TrainConfig(**saved)
    except TypeError as error:
        raise UsageError(f"--resume: the configuration saved in {path} does not fit this version "
                         f"({_one_line(error)})") from None
    wrong = _invalid_fields(config)
    if wrong:
        raise UsageError(f"--resume: the configuration saved in {path} is damaged ({', '.join(wrong)})")
    for field, value in dataclasses.asdict(given).items():
        if value is None:
            continue
        if field == "text":
            value = str(Path(value).resolve())
        kept = getattr(config, field)
        if value != kept:
            raise UsageError(f"{flag(field)} {_shown(value)} contradicts the checkpoint {path}, saved with "
                             f"{flag(field)} {_shown(kept)}; drop the flag to resume that run, or start a new "
                             "one with --force or another --checkpoint")
    return config


def _invalid_fields(config: TrainConfig) -> list[str]:
    """The fields of a restored configuration the command line would have refused."""
    def whole(value, least):
        return isinstance(value, int) and not isinstance(value, bool) and value >= least

    def positive(value):
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0

    checks = {
        "cell": config.cell in CELLS, "hidden": whole(config.hidden, 1), "seq": whole(config.seq, 1),
        "batch": whole(config.batch, 1), "lr": positive(config.lr), "clip_norm": positive(config.clip_norm),
        "clip_value": config.clip_value is None or positive(config.clip_value), "seed": whole(config.seed, 0),
        "text": config.text is None or isinstance(config.text, str),
    }
    return [f"{flag(field)} {getattr(config, field)!r}" for field, valid in checks.items() if not valid]


def _shown(value) -> str:
    """A flag's value as the user would type it: 1 rather than 1.0, exact where %g would round."""
    if value is None:
        return "(none)"
    if isinstance(value, float) and float(f"{value:g}") == value:
        return f"{value:g}"
    return str(value)


def _corpus(config: TrainConfig, vocab: str | None) -> CharCorpus:
    try:
        text = load_text(config.text)
    except (OSError, ValueError) as error:
        raise UsageError(f"--text {config.text}: {_one_line(error)}") from None
    try:
        return CharCorpus(text) if vocab is None else CharCorpus(text, CharVocab(vocab))
    except KeyError as error:
        raise UsageError(f"--text: the checkpoint's alphabet cannot read this text ({_one_line(error)})") from None
    except ValueError as error:
        raise UsageError(f"--text {config.text}: {_one_line(error)}") from None


def _load_weights(path: Path, model: CharRNN, optimizer, batch: int) -> tuple[int, object]:
    """Weights, optimiser state, step count and the carried state from the checkpoint."""
    try:
        meta = checkpoint.load_training(path, model, optimizer)
        step, count = int(meta["step"]), int(meta["state_parts"])
        parts = [meta[f"state{i}"] for i in range(count)]
    except UNREADABLE as error:
        raise UsageError(f"--resume: {path} is damaged or does not fit its configuration ({_one_line(error)})") \
            from None
    expected = model.rnn.cell.initial_state(batch)
    expected = expected if isinstance(expected, tuple) else (expected,)
    if parts and (len(parts) != len(expected) or any(np.shape(p) != e.shape for p, e in zip(parts, expected))):
        raise UsageError(f"--resume: the carried state saved in {path} has shapes {[np.shape(p) for p in parts]}, "
                         f"not {[e.shape for e in expected]} as its configuration needs: the file is damaged")
    state = nn.detach_state(parts[0] if len(parts) == 1 else tuple(parts)) if parts else None
    return step, state


def _one_line(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    return " ".join(text.split())


def _train(model, optimizer, windows, config: TrainConfig, step: int, state, steps, seconds):
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
            loss, _, state = window_loss(model, inputs, targets, state)
            loss.backward()
            if config.clip_value is not None:
                clip_grad_value_(model.parameters(), config.clip_value)
            clip_grad_norm_(model.parameters(), config.clip_norm)  # one long-range spike must not wreck the weights
            optimizer.step()
            state = nn.detach_state(state)  # the next window starts here, but its gradients stop here
            step += 1
            per_char = loss.item() / T
            smooth = per_char if smooth is None else 0.95 * smooth + 0.05 * per_char
            first = per_char if first is None else first
            now = time.perf_counter()
            bar.set_description_str(f"step {step}" + (f"/{first_step + steps}" if steps else "") + " ", refresh=False)
            if now - last_shown >= 2.0 or step == first_step + 1:
                # steps per second over the last interval, not since the start: it shows slowdowns
                rate = (step - last_step) / max(now - last_shown, 1e-9)
                bar.set_postfix_str(f"loss {smooth:.3f}/char, {rate:.1f} steps/s", refresh=False)
                last_shown, last_step = now, step
            bar.update(1 if steps is not None else min(now - started, seconds) - bar.n)
    except KeyboardInterrupt:
        bar.write(f"stopped at step {step} (Ctrl-C); saving the run", file=sys.stderr)
    finally:
        if smooth is not None and rate is not None:  # the last line shows the loss where the run ended
            bar.set_postfix_str(f"loss {smooth:.3f}/char, {rate:.1f} steps/s", refresh=False)
        bar.close()
    return step, state, (first, smooth)


def _report(model, corpus, valid_ids, config: TrainConfig, first_step, step, elapsed, losses) -> None:
    V, T = len(corpus.vocab), config.seq
    first, last = losses
    if first is None:
        print("trained no steps (no time or steps left)")
    else:
        print(f"trained steps {first_step + 1}-{step} in {elapsed:.0f} s ({(step - first_step) / elapsed:.1f} steps/s);"
              f" loss per character {first:.3f} -> {last:.3f} (uniform guessing: {np.log(V):.3f})")
    if len(valid_ids) > T:
        with no_grad():  # 64 held-out windows at random places, each from a zero state
            windows = random_windows(valid_ids, T, 64, rng=config.seed)
            held_out = window_loss(model, *windows, None)[0].item()
        print(f"held-out loss: {held_out / T:.3f} per character (5% of the text, never trained on)")
    prompt = corpus.vocab.decode(valid_ids[:4] if len(valid_ids) >= 4 else corpus.ids[:4])
    text = sample(model, corpus.vocab, prompt, 240, np.random.default_rng(config.seed))
    print("sample:\n  " + "\n  ".join(text.splitlines() or [""]))


def _pictures(model, starting_weights, window, config: TrainConfig, first_step, step, out_dir: Path) -> None:
    """The pictures of one stream of a training window, with the loss the model trains on (a prediction
    at every step): the step view with the weights this run started from and with the trained ones,
    and the lag view (how far each prediction's error reaches back) with the trained ones; as SVG and
    PNG, and what to look at in them."""
    # One stream: the step view differentiates step by step (H backward passes per step), and the
    # numbers of one stream are the easiest to read.
    inputs, targets = window[0][:, :1], window[1][:, :1]
    start_model = CharRNN(model.vocab_size, config.hidden, config.cell)
    start_model.load_state_dict(starting_weights)
    before = f"before step {first_step + 1} ({'untrained' if first_step == 0 else 'as resumed'})"
    runs = {before: window_predictions(start_model, inputs, targets),
            f"after step {step}": window_predictions(model, inputs, targets)}
    T, cell = config.seq, f"{config.cell.upper()}, hidden {config.hidden}"
    title = f"{cell}: the loss of one window of {T} characters (a prediction at every step), back through its steps"
    matrices = [diagnostics.lags(loss, states) for loss, states in runs.values()]
    pictures = {
        "char_rnn_steps": compare_steps(runs, title=title),  # up to 40 steps a row: a window reads left to right
        "char_rnn_lags": draw_lags(*runs[f"after step {step}"], matrix=matrices[1],
                                   title=f"{cell}, after step {step}: how far each prediction's error reaches back"),
    }
    written = []
    for name, picture in pictures.items():
        for suffix in (".svg", ".png"):
            try:
                written.append(str(render(picture, out_dir / f"{name}{suffix}")))
            except OSError as error:
                print(f"pictures: could not write in {out_dir} ({_one_line(error)})")
                return
    print(f"pictures: {', '.join(dict.fromkeys(written))}")
    verdict = diagnostics.verdict(diagnostics.steps(*runs[f"after step {step}"]))
    print(textwrap.fill(what_to_look_at(matrices, verdict, step, before), width=110, subsequent_indent="  "))


def what_to_look_at(matrices, verdict: str, step: int, before: str = "before training") -> str:
    """The demo's headline, from the lag view's numbers (``matrices``: before and after this run's
    training, ``before`` naming the first) in the words the picture uses, and the step view's verdict
    after training."""
    (first, after) = (diagnostics.reach(m) for m in matrices)
    T = len(after) - 1
    near, far = min(5, T - 1), headline_lag(after, diagnostics.reach_counts(matrices[1]))
    start = matrices[1][-1, 0] / matrices[1][-1, -1]
    vanishing = style.number(diagnostics.VANISHING)
    conclusion = {
        "vanishing": f"below {vanishing}, the line the verdict calls vanishing: the model can hardly learn from "
                     f"what it saw {T} characters earlier",
        "exploding": "it grew on the way back (exploding); --clip-norm keeps the updates in check",
        "frozen": "yet the steps gave their weights almost nothing (frozen): the cell passes the gradient on "
                  "without learning from it",
    }.get(verdict, f"above {vanishing}, the line the verdict calls vanishing: the gradient still reaches the "
                   f"characters {T} steps back")
    return (f"what to look at: in char_rnn_lags, each row is one prediction of the window and each cell the share "
            f"of its error's gradient that reached an earlier step (1 where the prediction was made). The reach "
            f"row gives the median share that arrives lag steps back: {style.number(after[near], 2)} at lag "
            f"{near} and {style.number(after[far], 2)} at lag {far} after step {step} ({before}: "
            f"{style.number(first[near], 2)} and {style.number(first[far], 2)}). The last prediction alone "
            f"reaches the window's start × {style.number(start, 2)} (the step view's caption), {conclusion}.")


