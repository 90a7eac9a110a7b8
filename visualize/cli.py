"""The ``tinygrad-rnn`` command (also ``python -m visualize``).

    tinygrad-rnn train [--cell rnn|lstm|gru] [--forget-bias B] [--hidden H] [--steps N | --seconds S]
                       [--resume | --force]
    tinygrad-rnn render --cell rnn|lstm|gru --steps T --hidden H --init orthogonal --radius R \\
                        --view ops|path|steps -o out.svg

``train`` teaches a character-level RNN to write and draws how far its gradients reach back in time
(``visualize/train.py``). ``render`` builds a small recurrent model on random data, reads a loss at
the last time step, runs backward, and renders the chosen view: ``ops`` (every op of the textbook's
step, W_ih x_t + W_hh h_{t-1} + b (visualize/textbook.py), edges labelled by local gradients), ``path``
(the paths from h_0 or W_hh to the loss, with running products), ``steps`` (one node per time step).

Every mistake on the command line (an unknown flag, NaN, zero or a negative where a size or a rate is
wanted, an output path that cannot be written or whose name is too long, sizes that would not fit in
memory, a missing or damaged checkpoint) is one line on stderr and exit status 2, found before any work
starts (visualize/preflight.py); so are what only the run can find (a --radius whose numbers overflow,
a --lr that makes training diverge).
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from tinygrad_rnn import nn
from tinygrad_rnn.clip import clip_norm
from tinygrad_rnn.nn import init
from tinygrad_rnn.training import RunError
from visualize import preflight, train
from visualize.op_view import MAX_NODES, GraphTooLarge, draw_graph
from visualize.path_view import draw_path
from visualize.preflight import (
    CELLS,
    UsageError,
    finite_float,
    nonnegative_int,
    positive_float,
    positive_int,
    thread_count,
)
from visualize.render import FORMATS, SOURCE_SUFFIXES, render
from visualize.step_view import draw_steps
from visualize.textbook import EQUATIONS, TextbookCell

__all__ = ["main", "build_model", "INITS", "estimate_render_memory", "MAX_STEP_VIEW", "MAX_JACOBIAN_WIDTH"]

# Past this a step view is a wall nobody reads, and laying it out takes minutes: refused up front.
MAX_STEP_VIEW = 10_000
# The ops and path views label each matmul edge with ‖J‖, the largest singular value of the weight it
# multiplies by: an SVD whose time grows as (rows x columns x the smaller of the two), about 2 s for a
# 2,000 x 2,000 weight_hh on one core. Its smaller side is --hidden for weight_hh, and for weight_ih
# the smaller of --input and the gates' rows.
MAX_JACOBIAN_WIDTH = 2_000
INITS = {
    "default": None,  # PyTorch's U(-1/sqrt(H), 1/sqrt(H))
    "orthogonal": init.orthogonal_,
    "xavier": init.xavier_uniform_,
    "kaiming": init.kaiming_uniform_,
    "normal": lambda w, rng=None: init.normal_(w, 0.0, 1.0 / np.sqrt(w.shape[1]), rng=rng),
    "eye": lambda w, rng=None: init.eye_(w),
}


def _scale_blocks(weight_hh, hidden: int, radius: float) -> None:
    """Give every gate's H x H block of W_hh spectral radius ``radius`` (one block for a plain RNN)."""
    data = np.array(weight_hh.data, dtype=np.float64)
    for start in range(0, data.shape[0], hidden):
        block = data[start : start + hidden]
        current = init.spectral_radius(block)
        if current == 0.0:
            raise UsageError(f"--radius {radius:g}: a {hidden}x{hidden} block of weight_hh has spectral radius 0 "
                             "(the eye init fills only the first gate's), so it cannot be scaled to it; "
                             "use another --init")
        with np.errstate(over="ignore"):  # overflow is the question asked next
            data[start : start + hidden] = block * (radius / current)
    if not np.isfinite(data).all():
        raise UsageError(f"--radius {radius:g}: scaled to that spectral radius, entries of weight_hh pass the "
                         f"largest float64 number ({np.finfo(np.float64).max:.3g}); use a smaller --radius")
    weight_hh.data = data.astype(np.result_type(weight_hh.data))


def build_model(cell: str = "rnn", steps: int = 4, hidden: int = 4, input_size: int = 2, batch: int = 1,
                init_name: str = "default", radius: float | None = None, clip: float | None = None,
                truncate: int | None = None, seed: int = 0, textbook: bool = False):
    """A cell unrolled over random inputs, with a squared-error loss read at the last time step, after
    backward. Returns (loss, states [s_0, ..., s_T] (tuples (h, c) for an LSTM), cell).

    ``textbook=True`` unrolls the same numbers written as the textbook's step (visualize/textbook.py:
    W_ih x_t + W_hh h_{t-1} + b on column states h_t, c_t), for the ops and path views; else the
    fast cell (one projection of every input, transposes made once)."""
    rng = np.random.default_rng(seed)
    model = CELLS[cell](input_size, hidden, rng=rng)
    if INITS[init_name] is not None:
        INITS[init_name](model.weight_hh, rng=rng)
    if radius is not None:
        _scale_blocks(model.weight_hh, hidden, radius)
    if textbook:
        model = TextbookCell(model)
    inputs = rng.normal(size=(steps, batch, input_size))
    outputs, states = nn.RNN(model, truncate=truncate)(inputs, return_states=True)
    for t, h in enumerate(outputs, 1):
        h.name = f"h_{t}"
        if clip is not None:
            h.register_hook(clip_norm(clip))
    target = rng.normal(size=(batch, hidden))
    loss = ((outputs[-1] - (target.T if textbook else target)) ** 2).mean()
    loss.name = "loss"
    loss.backward()
    return loss, states, model




class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (raised as UsageError, printed by ``main``), not the
    usage text followed by the error."""

    def error(self, message):
        error = UsageError(message)
        error.prog = self.prog
        raise error


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="tinygrad-rnn", description="Pictures of backpropagation through time.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{train,render}")
    _train_parser(commands.add_parser(
        "train", help="train a char-RNN, sample from it, draw how far its gradients reach back in time",
        description="Teach a character-level RNN to write, then draw how far its gradients reach back in time.",
        epilog="A checkpoint is never overwritten silently: a new run refuses an existing one unless given --resume "
               "(carry on with the configuration saved in it) or --force (start afresh)."))
    _render_parser(commands.add_parser(
        "render", help="build a small RNN on random data, backpropagate, draw it",
        description="Build a small RNN on random data, backpropagate through it, and draw one view of its graph: "
                    "ops (every op of the textbook's time step, W_ih x_t + W_hh h_(t-1) + b with states h_t and c_t, "
                    "each edge labelled with its local gradient), path (every path from --source to the loss) or "
                    "steps (one node per state, each edge the gain of one time step). A flag for one view only is "
                    "refused with the others.",
        epilog="The ops and path views draw the cell as its equation; the numbers are those of the fast cell the "
               "library trains with (one projection of all inputs, transposes made once)."))
    return parser


def _train_parser(command: argparse.ArgumentParser) -> None:
    d = train.TrainConfig()
    # Configuration flags default to None, so that --resume can tell a flag the user typed (which
    # must agree with the checkpoint) from one left alone (which the checkpoint fills in).
    command.add_argument("--cell", choices=sorted(CELLS), default=None, help=f"recurrent cell (default {d.cell})")
    command.add_argument("--hidden", type=positive_int, metavar="H", help=f"hidden units (default {d.hidden})")
    command.add_argument("--seq", type=positive_int, metavar="T",
                         help=f"characters per window, how far back BPTT reaches (default {d.seq})")
    command.add_argument("--batch", type=positive_int, metavar="B",
                         help=f"parallel streams through the text (default {d.batch})")
    command.add_argument("--lr", type=positive_float, help=f"Adam's learning rate (default {d.lr:g})")
    command.add_argument("--clip-norm", type=positive_float, metavar="NORM",
                         help=f"clip the global gradient norm to NORM (clip_grad_norm_; default {d.clip_norm:g})")
    command.add_argument("--clip-value", type=positive_float, metavar="C",
                         help="clamp every gradient entry to [-C, C] (clip_grad_value_; default off)")
    command.add_argument("--seed", type=nonnegative_int, help=f"seed of the initial weights (default {d.seed})")
    command.add_argument("--text", metavar="FILE", help="a text file to learn (default: Python's own library source)")
    command.add_argument("--forget-bias", type=finite_float, metavar="BIAS",
                         help="LSTM only: start the forget gates' bias at BIAS (1 to 2 opens them, so gradients "
                              "reach further back; default: PyTorch's uniform init, gates near 0.5)")
    length = command.add_mutually_exclusive_group()
    length.add_argument("--steps", type=positive_int, metavar="N",
                        help="train N iterations (optimiser steps) in this run (default: --seconds 60)")
    length.add_argument("--seconds", type=positive_float, metavar="S", help="train for S seconds (default 60)")
    start = command.add_mutually_exclusive_group()
    start.add_argument("--resume", action="store_true",
                       help="continue the run saved in --checkpoint, with its configuration (default off)")
    start.add_argument("--force", action="store_true",
                       help="start afresh, replacing the --checkpoint file (default off: refuse to)")
    command.add_argument("--checkpoint", type=Path, default=train.DEFAULT_CHECKPOINT, metavar="PATH",
                         help=f"where the run is saved, .npz (default {train.DEFAULT_CHECKPOINT})")
    command.add_argument("--out", type=Path, default=Path("out"), metavar="DIR",
                         help="where the pictures go (default out)")
    _threads_flag(command)


def _threads_flag(command: argparse.ArgumentParser) -> None:
    command.add_argument("--threads", type=thread_count, default=None, metavar="N",
                         help="threads numpy's BLAS may use (default 1, fastest for these sizes and kind to a busy "
                              f"machine, unless you set {' or '.join(BLAS_ENVIRONMENT)})")


def _render_parser(command: argparse.ArgumentParser) -> None:
    _threads_flag(command)
    command.add_argument("--cell", choices=sorted(CELLS), default="rnn", help="recurrent cell (default rnn)")
    command.add_argument("--steps", type=positive_int, default=4, metavar="T", help="time steps T (default 4)")
    command.add_argument("--hidden", type=positive_int, default=4, metavar="H", help="hidden units (default 4)")
    command.add_argument("--input", type=positive_int, default=2, metavar="I", help="input features (default 2)")
    command.add_argument("--batch", type=positive_int, default=1, metavar="B",
                         help="sequences in the batch (default 1)")
    command.add_argument("--init", choices=sorted(INITS), default="default",
                         help="initialiser for weight_hh (default: PyTorch's uniform)")
    command.add_argument("--radius", type=positive_float, default=None, metavar="R",
                         help="rescale each gate block of weight_hh to spectral radius R (<1 vanishes, >1 explodes; "
                              "default: as --init leaves it)")
    command.add_argument("--clip", type=positive_float, default=None, metavar="NORM",
                         help="clip dL/dh_t to this norm at every time step, marked in the picture (default off)")
    command.add_argument("--truncate", type=positive_int, default=None, metavar="K",
                         help="truncated BPTT: cut the graph after every K time steps (default off: back to h_0)")
    command.add_argument("--view", choices=("ops", "path", "steps"), default="ops", help="what to draw (default ops)")
    # View-specific flags default to None, so that one given with another view is an error, not ignored.
    command.add_argument("--compact", action="store_true", default=None,
                         help="ops view only: each op at the head of its output's box (default: only when the "
                              "unroll wraps into rows)")
    command.add_argument("--source", choices=("h0", "weight_hh"), default=None,
                         help="path view only: draw the paths from this value (default h0)")
    command.add_argument("--max-nodes", type=positive_int, default=None, metavar="N",
                         help=f"ops and path views only: refuse larger graphs (default {MAX_NODES})")
    command.add_argument("--seed", type=nonnegative_int, default=0, metavar="S",
                         help="seed of the weights and data (default 0)")
    command.add_argument("-o", "--output", default="out.svg", metavar="FILE",
                         help="the picture: .svg, .png, .pdf, .dot for the source, or .html for a page to explore "
                              "every view in a browser (default out.svg)")


def estimate_render_memory(cell: str, steps: int, hidden: int, input_size: int, batch: int, view: str) -> float:
    """Bytes ``render`` needs, from its sizes (float64; an estimate that errs high): a fixed base, the weights and
    their gradients, T recorded steps of B x (gates x H) activations with gradients and each node's
    overhead, the inputs; for the step view one step's Jacobian (B, S, S), S the state's width; for the
    ops and path views the SVD's copies of the largest weight each matmul edge's ‖J‖ comes from."""
    gates = CELLS[cell].gates
    parameters = gates * hidden * (input_size + hidden + 2)
    nodes = steps * preflight.nodes_per_step(cell, textbook=view != "steps")  # the ops and path views' cell
    graph = nodes * (preflight.NODE_OVERHEAD + 2 * batch * gates * hidden * 8)
    state = 2 * hidden if cell == "lstm" else hidden
    jacobian = 2 * batch * state * state * 8 if view == "steps" else 0
    gram = 3 * gates * hidden * max(input_size, hidden) * 8 if view != "steps" else 0
    return (preflight.BASE_MEMORY + 2 * parameters * 8 + graph + 2 * steps * batch * input_size * 8 + jacobian
            + gram)


def _check_render(args) -> Path:
    """Everything that can be known wrong before building anything; returns the output path."""
    applies = {"compact": ("ops",), "source": ("path",), "max_nodes": ("ops", "path")}
    for flag, views in applies.items():
        if getattr(args, flag) is not None and args.view not in views:
            name = "--" + flag.replace("_", "-")
            raise UsageError(f"{name} applies to the {' and '.join(views)} view{'s' if len(views) > 1 else ''} only, "
                             f"not to --view {args.view}")
    args.source = args.source or "h0"
    args.max_nodes = args.max_nodes or MAX_NODES
    output = preflight.check_output_file(args.output, "-o", (*FORMATS, *SOURCE_SUFFIXES))
    sizes = f"--steps {args.steps} --hidden {args.hidden} --batch {args.batch} --input {args.input}"
    preflight.check_memory(estimate_render_memory(args.cell, args.steps, args.hidden, args.input, args.batch,
                                                  args.view),
                           f"{sizes} ({args.cell}, {args.view} view)", "use smaller sizes")
    if args.view == "steps" and args.steps > MAX_STEP_VIEW:
        raise UsageError(f"--steps {args.steps}: a step view of more than {MAX_STEP_VIEW:,} steps is too large "
                         "to lay out or read; draw fewer time steps")
    rows = CELLS[args.cell].gates * args.hidden
    flag, width = max(("--hidden", args.hidden), ("--input", min(args.input, rows)), key=lambda pair: pair[1])
    if args.view != "steps" and width > MAX_JACOBIAN_WIDTH:
        raise UsageError(f"{flag} {getattr(args, flag[2:])}: the {args.view} view labels each matmul edge with ‖J‖, "
                         f"an SVD of a weight with {width:,} rows and columns or more, minutes at that size (the "
                         f"time grows as its cube); use {flag} {MAX_JACOBIAN_WIDTH} or less, or --view steps")
    if args.view != "steps" and output.suffix.lower() != ".html":  # the page draws one time step at a time
        nodes = args.steps * preflight.nodes_per_step(args.cell, textbook=True)
        if nodes > args.max_nodes:
            raise UsageError(f"--steps {args.steps}: the {args.view} view would draw at least {nodes:,} nodes, more "
                             f"than --max-nodes {args.max_nodes}; use fewer --steps, or --view steps")
    return output


def _render(args) -> int:
    output = _check_render(args)
    try:
        return _build_and_draw(args, output)
    except MemoryError:  # the estimate errs high, but the machine's free memory can change under us
        raise UsageError(f"--steps {args.steps} --hidden {args.hidden} --batch {args.batch} --input {args.input}: "
                         f"ran out of memory building or drawing the {args.view} view; use smaller sizes") from None


def _build_and_draw(args, output: Path) -> int:
    # The ops and path views draw the textbook's step; the step view reads only states, and keeps the fast cell.
    textbook = args.view != "steps"
    loss, states, model = build_model(args.cell, args.steps, args.hidden, args.input, args.batch, args.init,
                                      args.radius, args.clip, args.truncate, args.seed, textbook=textbook)
    title = (f"{args.cell.upper()} · {args.steps} time steps · hidden {args.hidden} · init {args.init}"
             + (f" · radius {args.radius:g}" if args.radius is not None else "")
             + (f" · {EQUATIONS[args.cell]}" if textbook else ""))
    try:
        if output.suffix.lower() == ".html":  # one page holds every view; it opens on this one
            from visualize.page import explore

            source = model.weight_hh if args.source == "weight_hh" else nn.hidden_of(states[0])
            picture = explore(loss, states, view="steps" if args.view == "steps" else "ops", title=title,
                              source=source if args.view == "path" else None)
        elif args.view == "ops":
            picture = draw_graph(loss, max_nodes=args.max_nodes, title=title, compact=args.compact or None)
        elif args.view == "path":
            source = nn.hidden_of(states[0]) if args.source == "h0" else model.weight_hh
            picture = draw_path(loss, source, max_nodes=args.max_nodes, title=f"{title} · paths from {args.source}")
        else:
            picture = draw_steps(loss, states, title=title)
    except GraphTooLarge as error:
        raise UsageError(f"{error} (use fewer --steps, or --view steps)") from None
    except ValueError as error:  # e.g. no path from --source to the loss (the graph was cut by --truncate)
        raise UsageError(f"render --view {args.view}: {error}") from None
    try:
        written = render(picture, output)
    except OSError as error:
        raise UsageError(f"-o {output}: {error.strerror or error}") from None
    print(f"wrote {written} ({args.view} view)")
    return 0


BLAS_ENVIRONMENT = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
LAUNCHER = "TINYGRAD_RNN_LAUNCHER"  # set by scripts/dev.sh and examples/char_rnn.py: how they start the command


def launched_as(command: str) -> str:
    """How the user started this command, up to the subcommand, so that a command it prints runs the
    same way: what a wrapper script set in TINYGRAD_RNN_LAUNCHER, ``python -m visualize``, the
    ``tinygrad-rnn`` found on PATH, or the program's path as given."""
    if os.environ.get(LAUNCHER):
        return os.environ[LAUNCHER].replace("{command}", command)
    program = sys.argv[0] if sys.argv else ""
    if os.path.basename(program) == "__main__.py":
        return f"{shlex.quote(sys.executable)} -m visualize {command}"
    if os.path.basename(program) == "tinygrad-rnn":
        found = shutil.which("tinygrad-rnn")
        on_path = found is not None and os.path.realpath(found) == os.path.realpath(program)
        return f"{'tinygrad-rnn' if on_path else shlex.quote(program)} {command}"
    return f"tinygrad-rnn {command}"


def _train(args) -> int:
    given = train.TrainConfig(cell=args.cell, hidden=args.hidden, seq=args.seq, batch=args.batch, lr=args.lr,
                              clip_norm=args.clip_norm, clip_value=args.clip_value, seed=args.seed, text=args.text,
                              forget_bias=args.forget_bias)
    if args.steps is None and args.seconds is None:
        args.seconds = 60.0
    args.launched = launched_as("train")
    return train.run(args, given, train.TrainConfig())


def main(argv=None) -> int:
    """Run the command with ``argv`` (default: sys.argv[1:]); returns the exit status: 0, or 2 after
    one line on stderr for a usage error. ``--help`` exits through SystemExit(0), as argparse does."""
    argv = sys.argv[1:] if argv is None else list(argv)
    prog = "tinygrad-rnn" + (f" {argv[0]}" if argv and argv[0] in ("train", "render") else "")
    try:
        args = _parser().parse_args(argv)
        # The command's arrays are small: numpy's BLAS runs them fastest on one thread, and on a busy
        # machine more threads only wait for each other (docs/perf.md has the figures).
        given = any(os.environ.get(name) for name in BLAS_ENVIRONMENT)  # the user's own choice stands
        with threadpool_limits(limits=args.threads if args.threads is not None else None if given else 1):
            return _render(args) if args.command == "render" else _train(args)
    except RunError as error:  # a UsageError, or the library's word that a run cannot go on as asked
        message = " ".join(str(error).split())  # one line, whatever the message held
        print(f"{getattr(error, 'prog', prog)}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
