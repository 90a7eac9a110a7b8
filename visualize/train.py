"""``tinygrad-rnn train``: teach a character-level RNN to write, then show how far its gradients reach.

    tinygrad-rnn train                     # about a minute on two cores (scripts/dev.sh demo runs this)
    tinygrad-rnn train --resume --steps 500
    tinygrad-rnn train --cell lstm --forget-bias 2 --hidden 64 --seconds 20 --checkpoint out/lstm.npz

What it shows:
- The loss per character starts at about ln V: an untrained model spreads its bets evenly over the V
  characters. Everything it learns shows as the loss falling below that.
- Backpropagation through time is ``loss.backward()`` on the unrolled graph; nothing else. The text is
  read as B parallel streams, T characters at a time; the state is carried from one window to the next
  and detached there (truncated BPTT over the whole text).
- At the end, the step view of one training window (all T steps, a prediction at each) with the weights
  this run started from and with the trained weights, one above the other, and the lag view of the
  trained weights: how far each prediction's error reaches back.

The model and its training are the library's (tinygrad_rnn.charrnn, tinygrad_rnn.training); this
module is the command around them: checks, messages, the report and the pictures, and what to try next
(``suggestions``: commands that run as this one was launched; tests/test_advice.py tries each one).

A checkpoint is never overwritten silently: a new run refuses an existing one unless given ``--resume``
(continue it, with the configuration saved in it) or ``--force`` (start afresh and replace it).
"""

from __future__ import annotations

import dataclasses
import json
import shlex
import sys
import textwrap
import time
from pathlib import Path

import numpy as np

from tinygrad_rnn import checkpoint, diagnostics, no_grad, training
from tinygrad_rnn.charrnn import CELLS, CharRNN, sample, window_loss, window_predictions
from tinygrad_rnn.data import random_windows, sequential_windows
from tinygrad_rnn.optim import Adam
from tinygrad_rnn.training import TrainConfig
from visualize import preflight, style
from visualize.lag_view import draw_lags, headline_lag
from visualize.preflight import UsageError
from visualize.render import render
from visualize.step_view import compare_steps

__all__ = ["TrainConfig", "run", "estimate_memory", "what_to_look_at", "DEFAULT_CHECKPOINT"]

DEFAULT_CHECKPOINT = Path("out/char_rnn.npz")
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
    preflight.check_name(out_dir, f"{path.stem}_steps.svg", "--checkpoint",  # the longest picture name
                         "the pictures are named after the checkpoint, and one of them")
    saved = training.saved_run(path) if args.resume else None
    if saved is None:
        training.refuse_to_overwrite(path, args.force)
        if path.exists():
            print(f"--force: the checkpoint {path} will be replaced by this run's")
        config = dataclasses.replace(defaults, **{k: v for k, v in dataclasses.asdict(given).items() if v is not None})
        if config.text is not None:
            config = dataclasses.replace(config, text=str(Path(config.text).resolve()))
        if config.forget_bias is not None and config.cell != "lstm":
            raise UsageError(f"--forget-bias {training.shown(config.forget_bias)}: only an LSTM has a forget gate, "
                             f"and this run's cell is {config.cell}; add --cell lstm")
    else:
        config = training.restored_config(saved[0], given, path)
    corpus = training.corpus_of(config, saved[1] if saved else None)
    V, T = len(corpus.vocab), config.seq
    train_ids, valid_ids = corpus.split(0.05, block=2_000)  # every 20th block of 2,000 characters held out
    stream = (len(train_ids) - 1) // config.batch
    if stream < T:
        raise UsageError(f"--seq {T} with --batch {config.batch}: the text's {len(train_ids):,} training characters "
                         f"give each of the {config.batch} streams {stream}, fewer than one window of {T}; "
                         "use a smaller --batch or --seq, or a longer --text")
    preflight.check_memory(estimate_memory(config, V, len(corpus)), f"--hidden {config.hidden} --batch {config.batch} "
                           f"--seq {T} ({config.cell})", "use a smaller --hidden, --batch or --seq")

    model = CharRNN(V, config.hidden, config.cell, config.seed, forget_bias=config.forget_bias)
    optimizer = Adam(model.parameters(), lr=config.lr)
    step, state = 0, None
    if saved is not None:
        step, state = training.load_weights(path, model, optimizer, config.batch)
    windows = list(sequential_windows(train_ids, T, config.batch))
    forget = "" if config.forget_bias is None else f" and forget-gate bias {training.shown(config.forget_bias)}"
    print(f"{corpus!r}; {config.cell} with hidden {config.hidden}{forget}, T={T}, B={config.batch}, "
          f"{len(windows)} windows a pass" + (f"; resumed from {path} at iteration {step}" if saved else ""))
    print(f"a model that guesses uniformly scores ln V = ln {V} = {np.log(V):.3f} per character")

    starting_weights = model.state_dict()
    first_step, started = step, time.perf_counter()
    step, state, losses = training.train_steps(model, optimizer, windows, config, step, state, args.steps, args.seconds)
    elapsed = time.perf_counter() - started

    parts = () if state is None else state if isinstance(state, tuple) else (state,)
    checkpoint.save_training(path, model, optimizer, step=step, config=json.dumps(dataclasses.asdict(config)),
                             vocab="".join(corpus.vocab.chars), state_parts=len(parts),
                             **{f"state{i}": part.numpy() for i, part in enumerate(parts)})
    _report(model, corpus, valid_ids, config, first_step, step, elapsed, losses)
    launched = getattr(args, "launched", "tinygrad-rnn train")
    print(f"checkpoint: {path} (iteration {step}); continue with: {launched} --resume"
          + ("" if path == DEFAULT_CHECKPOINT else f" --checkpoint {shlex.quote(str(path))}"))
    _pictures(model, starting_weights, windows[0], config, first_step, step, out_dir, path)
    for advice in suggestions(args, config, path):
        print(advice)
    return 0


# The forget-gate bias the demo suggests: sigmoid(2) = 0.88 of c_{t-1} kept at each time step, 0.88^25 = 0.04
# over the demo's window, where PyTorch's init (f near 0.5) keeps 0.5^25 = 3e-8.
SUGGESTED_FORGET_BIAS = 2.0


def suggestions(args, config: TrainConfig, path: Path) -> list[str]:
    """What to try next, each a command that runs as this one was launched (tests/test_advice.py tries each
    and checks what it claims)."""
    if config.cell == "lstm" and config.forget_bias is not None and config.forget_bias >= SUGGESTED_FORGET_BIAS:
        return []
    bias = training.shown(SUGGESTED_FORGET_BIAS)
    command = suggested_command(args, config, path, cell="lstm", forget_bias=SUGGESTED_FORGET_BIAS)
    return [textwrap.fill(f"to try next: an LSTM whose forget gates start open (--forget-bias {bias}: each keeps "
                          f"sigmoid({bias}) = 0.88 of c_(t-1) at every time step) passes the gradient back over the "
                          f"whole window of {config.seq} time steps; its step view's verdict, before training and "
                          f"after, is not vanishing (below {style.number(diagnostics.VANISHING)}):", width=110,
                          subsequent_indent="  "),
            f"  {command}"]


def suggested_command(args, config: TrainConfig, path: Path, **changes) -> str:
    """This run's command as it was launched, with ``changes`` to its configuration, its own length
    (--steps or --seconds) and --out, and a new checkpoint beside this one (one that does not exist yet,
    so the command is not refused)."""
    changed, defaults = dataclasses.replace(config, **changes), TrainConfig()
    words = []
    for field in dataclasses.fields(TrainConfig):
        value = getattr(changed, field.name)
        if value is not None and value != getattr(defaults, field.name):
            words += [training.flag(field.name), training.shown(value)]
    if getattr(args, "steps", None) is not None:
        words += ["--steps", str(args.steps)]
    elif getattr(args, "seconds", None) not in (None, 60.0):
        words += ["--seconds", training.shown(args.seconds)]
    name = "_".join([path.stem, *(str(v) for v in changes.values() if isinstance(v, str))]) or "run"
    checkpoint_path, count = path.with_name(f"{name}.npz"), 2
    while checkpoint_path.exists() or checkpoint_path == path:
        checkpoint_path, count = path.with_name(f"{name}_{count}.npz"), count + 1
    words += ["--checkpoint", str(checkpoint_path)]
    if getattr(args, "out", Path("out")) != Path("out"):
        words += ["--out", str(args.out)]
    launched = getattr(args, "launched", "tinygrad-rnn train")
    return " ".join([launched, *(shlex.quote(word) for word in words)])


def _report(model, corpus, valid_ids, config: TrainConfig, first_step, step, elapsed, losses) -> None:
    V, T = len(corpus.vocab), config.seq
    first, last = losses
    if first is None:
        print("trained no iterations (no time or iterations left)")
    else:
        print(f"trained iterations {first_step + 1}-{step} in {elapsed:.0f} s ({(step - first_step) / elapsed:.1f}/s);"
              f" loss per character {first:.3f} -> {last:.3f} (uniform guessing: {np.log(V):.3f})")
    if len(valid_ids) > T:
        with no_grad():  # 64 held-out windows at random places, each from a zero state
            windows = random_windows(valid_ids, T, 64, rng=config.seed)
            held_out = window_loss(model, *windows, None)[0].item()
        print(f"held-out loss: {held_out / T:.3f} per character (5% of the text, never trained on)")
    prompt = corpus.vocab.decode(valid_ids[:4] if len(valid_ids) >= 4 else corpus.ids[:4])
    text = sample(model, corpus.vocab, prompt, 240, np.random.default_rng(config.seed))
    print("sample:\n  " + "\n  ".join(text.splitlines() or [""]))


def _pictures(model, starting_weights, window, config: TrainConfig, first_step, step, out_dir: Path,
              path: Path) -> None:
    """The pictures of one stream of a training window, with the loss the model trains on (a prediction
    at every step): the step view with the weights this run started from and with the trained ones,
    and the lag view (how far each prediction's error reaches back) with the trained ones; as SVG and
    PNG, and what to look at in them."""
    # One stream: the step view differentiates step by step (H backward passes per step), and the
    # numbers of one stream are the easiest to read.
    inputs, targets = window[0][:, :1], window[1][:, :1]
    start_model = CharRNN(model.vocab_size, config.hidden, config.cell)
    start_model.load_state_dict(starting_weights)
    before = f"before iteration {first_step + 1} ({'untrained' if first_step == 0 else 'as resumed'})"
    runs = {before: window_predictions(start_model, inputs, targets),
            f"after iteration {step}": window_predictions(model, inputs, targets)}
    T, cell = config.seq, f"{config.cell.upper()}, hidden {config.hidden}"
    title = (f"{cell}: the loss of one window of {T} characters (a prediction at every time step), back through its "
             "time steps")
    started = time.perf_counter()
    # The step view, the verdict, the lag view and the page each ask for these numbers: inside the block
    # they are computed once, here, a stage at a time (a step view's numbers cost one backward pass per
    # state unit and time step), and handed back to every view that asks again.
    with diagnostics.reuse_numbers():
        for stage, (label, (loss, states)) in enumerate(runs.items(), 1):
            _progress(f"{stage}/4: the numbers of the window {label}: {T} time steps, the gain of each and "
                      f"its bound ‖J_t‖₂ by an SVD of the step's Jacobian, and how far each prediction reaches")
            diagnostics.steps(loss, states)
            diagnostics.lags(loss, states)
        matrices = [diagnostics.lags(loss, states) for loss, states in runs.values()]
        _progress("3/4: drawing the step view and the lag view (SVG and PNG)")
        # Named after the checkpoint: a run never replaces another run's pictures.
        stem = path.stem
        pictures = {
            f"{stem}_steps": compare_steps(runs, title=title),  # wrapped into rows: a window reads left to right
            f"{stem}_lags": draw_lags(*runs[f"after iteration {step}"], matrix=matrices[1],
                                      title=f"{cell}, after iteration {step}: how far each prediction's error "
                                            "reaches back"),
        }
        written = []
        for name, picture in pictures.items():
            for suffix in (".svg", ".png"):
                try:
                    written.append(str(render(picture, out_dir / f"{name}{suffix}")))
                except OSError as error:
                    print(f"pictures: could not write in {out_dir} ({training.one_line(error)})")
                    return
        print(f"pictures: {', '.join(dict.fromkeys(written))}")
        verdict = diagnostics.verdict(diagnostics.steps(*runs[f"after iteration {step}"]))
        print(textwrap.fill(what_to_look_at(matrices, verdict, step, before, f"{stem}_lags"), width=110,
                            subsequent_indent="  "))
        from visualize.page import explore  # every view of the trained window, to explore in a browser

        _progress("4/4: the page, every view of the trained window")
        page = out_dir / f"{stem}.html"
        try:
            print(f"page: {render(explore(*runs[f'after iteration {step}'], view='steps', title=title), page)}")
        except OSError as error:
            print(f"page: could not write {page} ({training.one_line(error)})")
    _progress(f"done in {time.perf_counter() - started:.1f} s")


def _progress(stage: str) -> None:
    """One line per stage of the closing pictures, on stderr beside the progress bar: the numbers of a
    step view take seconds, and a silent wait reads as a hang."""
    print(f"pictures {stage}", file=sys.stderr, flush=True)


def what_to_look_at(matrices, verdict: str, step: int, before: str = "before training",
                    picture: str = "char_rnn_lags") -> str:
    """The demo's headline, from the lag view's numbers (``matrices``: before and after this run's
    training, ``before`` naming the first) in the words the picture uses, and the step view's verdict
    after training."""
    (first, after) = (diagnostics.reach(m) for m in matrices)
    T = len(after) - 1
    near, far = min(5, T - 1), headline_lag(after, diagnostics.reach_counts(matrices[1]))
    start = matrices[1][-1, 0] / matrices[1][-1, -1]
    vanishing, exploding = style.number(diagnostics.VANISHING), f"{diagnostics.EXPLODING:g}"
    # The verdict also calls a gradient vanishing where a state on the way got none at all (a dead unit):
    # the words follow the number the sentence quotes.
    side = "below" if start < diagnostics.VANISHING else "above"
    conclusion = {
        "vanishing": f"{side} {vanishing}, the line the verdict calls vanishing"
                     + ("" if side == "below" else ", but a time step on the way passed no gradient at all")
                     + f": the model can hardly learn from what it saw {T} characters earlier",
        "exploding": f"above {exploding}, the line the verdict calls exploding: the gradient grew on the way back; "
                     "training clips the global gradient norm to --clip-norm, so no one iteration's update is "
                     "thrown by it",
        "frozen": f"above {vanishing}, yet no time step gave its weights more than "
                  f"{style.number(diagnostics.FROZEN)} of the gradient it carried, the line the verdict calls "
                  "frozen: the cell passes the gradient on without learning from it",
    }.get(verdict, f"between {vanishing} and {exploding}, the lines the verdict calls vanishing and exploding: "
                   f"the gradient still reaches the characters {T} time steps back")
    return (f"what to look at: in {picture}, each row is one prediction of the window and each cell the share "
            f"of its error's gradient that reached an earlier time step (1 where the prediction was made). The "
            f"reach row gives the median share that arrives lag time steps back: {style.number(after[near], 2)} at lag "
            f"{near} and {style.number(after[far], 2)} at lag {far} after iteration {step} ({before}: "
            f"{style.number(first[near], 2)} and {style.number(first[far], 2)}). The last prediction alone "
            f"reaches the window's start × {style.number(start, 2)} (the step view's caption), {conclusion}.")


