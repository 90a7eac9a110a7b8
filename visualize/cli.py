"""The ``tinygrad-rnn`` command (also ``python -m visualize.cli``).

    tinygrad-rnn render --cell rnn|lstm|gru --steps T --hidden H --init orthogonal --radius R \\
                        --view ops|path|steps -o out.svg

builds a small recurrent model on random data, reads a loss at the last step, runs backward, and
renders the chosen view: ``ops`` (every op, edges labelled by local gradients), ``path`` (the paths
from h_0 or weight_hh to the loss, with running products), ``steps`` (one node per time step).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from tinygrad_rnn import nn
from tinygrad_rnn.clip import clip_norm
from tinygrad_rnn.nn import init
from visualize.op_view import MAX_NODES, GraphTooLarge, draw_graph
from visualize.path_view import draw_path
from visualize.render import render
from visualize.step_view import draw_steps

__all__ = ["main", "build_model", "INITS"]

CELLS = {"rnn": nn.RNNCell, "lstm": nn.LSTMCell, "gru": nn.GRUCell}
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
        if current > 0.0:
            data[start : start + hidden] = block * (radius / current)
    weight_hh.data = data.astype(np.result_type(weight_hh.data))


def build_model(cell: str = "rnn", steps: int = 4, hidden: int = 4, input_size: int = 2, batch: int = 1,
                init_name: str = "default", radius: float | None = None, clip: float | None = None,
                truncate: int | None = None, seed: int = 0):
    """A cell unrolled over random inputs, with a squared-error loss read at the last step, after
    backward. Returns (loss, states [s_0, ..., s_T] (tuples (h, c) for an LSTM), cell)."""
    rng = np.random.default_rng(seed)
    model = CELLS[cell](input_size, hidden, rng=rng)
    if INITS[init_name] is not None:
        INITS[init_name](model.weight_hh, rng=rng)
    if radius is not None:
        _scale_blocks(model.weight_hh, hidden, radius)
    inputs = rng.normal(size=(steps, batch, input_size))
    outputs, states = nn.RNN(model, truncate=truncate)(inputs, return_states=True)
    for t, h in enumerate(outputs, 1):
        h.name = f"h_{t}"
        if clip is not None:
            h.register_hook(clip_norm(clip))
    target = rng.normal(size=outputs[-1].shape)
    loss = ((outputs[-1] - target) ** 2).mean()
    loss.name = "loss"
    loss.backward()
    return loss, states, model


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tinygrad-rnn", description="Pictures of backpropagation through time.")
    commands = parser.add_subparsers(dest="command", required=True)
    render_cmd = commands.add_parser("render", help="build a small RNN on random data, backpropagate, draw it")
    render_cmd.add_argument("--cell", choices=sorted(CELLS), default="rnn")
    render_cmd.add_argument("--steps", type=int, default=4, metavar="T", help="time steps (default 4)")
    render_cmd.add_argument("--hidden", type=int, default=4, metavar="H", help="hidden units (default 4)")
    render_cmd.add_argument("--input", type=int, default=2, metavar="I", help="input features (default 2)")
    render_cmd.add_argument("--batch", type=int, default=1, metavar="B", help="sequences in the batch (default 1)")
    render_cmd.add_argument("--init", choices=sorted(INITS), default="default", help="initialiser for weight_hh")
    render_cmd.add_argument("--radius", type=float, default=None, metavar="R",
                            help="rescale each gate block of weight_hh to spectral radius R (<1 vanishes, >1 explodes)")
    render_cmd.add_argument("--clip", type=float, default=None, metavar="NORM",
                            help="clip dL/dh_t to this norm at every step (marked in the picture)")
    render_cmd.add_argument("--truncate", type=int, default=None, metavar="K", help="truncated BPTT every K steps")
    render_cmd.add_argument("--view", choices=("ops", "path", "steps"), default="ops")
    render_cmd.add_argument("--compact", action="store_true", help="op view: ops at the head of their output's box")
    render_cmd.add_argument("--source", choices=("h0", "weight_hh"), default="h0", help="path view: paths from")
    render_cmd.add_argument("--max-nodes", type=int, default=MAX_NODES, help="op/path view refuses larger graphs")
    render_cmd.add_argument("--seed", type=int, default=0)
    render_cmd.add_argument("-o", "--output", default="out.svg", help="out.svg, .png, .pdf or .dot")
    return parser


def _render(args) -> int:
    if args.steps < 1 or args.hidden < 1:
        print(f"tinygrad-rnn render: --steps and --hidden must be at least 1, got {args.steps} and {args.hidden}",
              file=sys.stderr)
        return 2
    loss, states, model = build_model(args.cell, args.steps, args.hidden, args.input, args.batch, args.init,
                                      args.radius, args.clip, args.truncate, args.seed)
    title = (f"{args.cell.upper()} · {args.steps} steps · hidden {args.hidden} · init {args.init}"
             + (f" · radius {args.radius:g}" if args.radius is not None else ""))
    try:
        if args.view == "ops":
            picture = draw_graph(loss, max_nodes=args.max_nodes, title=title, compact=args.compact or None)
        elif args.view == "path":
            source = nn.hidden_of(states[0]) if args.source == "h0" else model.weight_hh
            picture = draw_path(loss, source, max_nodes=args.max_nodes, title=f"{title} · paths from {args.source}")
        else:
            picture = draw_steps(loss, states, title=title)
    except GraphTooLarge as error:
        print(f"tinygrad-rnn render: {error} (here: --view steps)", file=sys.stderr)
        return 2
    written = render(picture, args.output)
    print(f"wrote {written} ({args.view} view)")
    return 0


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "render":
        return _render(args)
    return 2  # pragma: no cover - argparse rejects unknown commands first


if __name__ == "__main__":
    sys.exit(main())
