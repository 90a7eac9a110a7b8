"""What every lesson shares: its command line (--quick, --out), writing its pictures as PNG and SVG, and
the unroll-and-backpropagate run that lessons 3 and 7 compare nets with.

A lesson is run from a checkout as ``python examples/lessons/NN_name.py``; the repository root goes on
sys.path here, so the library needs no installing.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DEFAULT_OUT = Path("out") / "lessons"

# Pictures in matplotlib share one look: readable at the size docs/lessons.md shows them.
STYLE = {"font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "legend.fontsize": 8,
         "axes.grid": True, "grid.alpha": 0.3}


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad value is one line on stderr and exit status 2 (no usage block)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: {message}\n")


def command_line(doc: str) -> dict:
    """Parse --quick and --out for a lesson whose module docstring is ``doc``; returns main()'s keywords."""
    parser = _Parser(description=doc.strip().splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: finishes in a few seconds")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"where pictures go (default {DEFAULT_OUT})")
    args = parser.parse_args()
    taken = next((p for p in (args.out, *args.out.parents) if p.exists()), None)
    if taken is not None and not taken.is_dir():
        parser.error(f"--out {args.out}: {taken} is a file, not a folder")
    return {"quick": args.quick, "out": args.out}


def unroll_to_last_state(cell, xs, target, h0=None) -> tuple:
    """(loss, states, rows of diagnostics.steps) for one net: ``cell`` unrolled over ``xs`` from
    ``h0`` (None: the cell's zeros), a mean squared error on the last hidden state, backpropagated."""
    from tinygrad_rnn import diagnostics, nn

    outputs, states = nn.RNN(cell)(xs, h0=h0, return_states=True)
    loss = nn.mse_loss(outputs[-1], target)
    loss.backward()
    return loss, states, diagnostics.steps(loss, states)


def figure(*args, **kwargs):
    """A matplotlib Figure (no pyplot, no global state); draw on it inside ``with plot_style():``."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        sys.exit("this lesson draws with matplotlib, the 'plot' extra: pip install 'tinygrad-rnn[plot]'")
    return Figure(*args, layout="constrained", **kwargs)


def plot_style():
    """The lessons' matplotlib look, for the figures made and drawn inside this context only."""
    import matplotlib

    return matplotlib.rc_context(STYLE)


def save_figure(fig, out: Path, name: str) -> list[Path]:
    """Write a matplotlib figure as ``out/name.png`` and ``out/name.svg``."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{name}.png", out / f"{name}.svg"]
    fig.savefig(paths[0], dpi=110)
    fig.savefig(paths[1])
    return paths


def save_graph(picture, out: Path, name: str) -> list[Path]:
    """Render a Graphviz picture (from visualize) as ``out/name.png`` and ``out/name.svg``."""
    from visualize import render

    out.mkdir(parents=True, exist_ok=True)  # run from a fresh folder, out/lessons does not exist yet
    return [render(picture, out / f"{name}{suffix}") for suffix in (".png", ".svg")]


class Timer:
    """Seconds since the lesson started, for its last line."""

    def __init__(self):
        self.start = time.perf_counter()

    def __str__(self) -> str:
        return f"{time.perf_counter() - self.start:.1f} s"


def say(*paragraphs: str) -> None:
    """Print plain sentences, one paragraph each, wrapped for a terminal."""
    import textwrap

    for paragraph in paragraphs:
        print(textwrap.fill(" ".join(paragraph.split()), width=100))
        print()


def wrote(paths) -> None:
    print("pictures: " + ", ".join(str(p) for p in paths))
