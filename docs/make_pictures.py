"""Make the pictures in docs/ (SVG, and PNG beside each): ``python docs/make_pictures.py``.

1. op_view_scalar_rnn: a 4-step scalar tanh RNN, every edge labelled with its local derivative.
   op_view_scalar_rnn_compact: the same, each op written at the head of its output's box.
2. path_view_scalar_rnn: the same graph, the paths from h_0 to the loss with d(node)/d(h_0) on each node.
3. steps_vanishing_rnn_vs_lstm: 30 steps of a tanh RNN (PyTorch's default init) beside an LSTM's
   cell state, with the forget-gate bias at 0 (the default) and at 2.
4. steps_exploding_clipped: 30 steps of a tanh RNN whose W_hh has all singular values 1.4, without
   and with clip_norm(1.0) on every h_t (the clipped steps are marked with the norms before and after).

Runs in a few seconds; the numbers are deterministic (fixed seeds).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import tinygrad_rnn as tg  # noqa: E402
from tinygrad_rnn import Value, nn  # noqa: E402
from tinygrad_rnn.clip import clip_norm  # noqa: E402
from tinygrad_rnn.nn import init  # noqa: E402
from visualize import compare_steps, draw_graph, draw_path, render  # noqa: E402

HERE = Path(__file__).resolve().parent


def save(picture, name: str) -> None:
    for suffix in (".svg", ".png"):
        written = render(picture, HERE / f"{name}{suffix}")
        if written.suffix == ".png":
            _shrink_png(written)
        print(f"wrote {written.relative_to(HERE.parent)} ({written.stat().st_size // 1024} KB)")


def _shrink_png(path: Path) -> None:
    """A 256-colour palette keeps the PNG sharp at a fraction of the size (needs Pillow)."""
    try:
        from PIL import Image
    except ImportError:
        return
    with Image.open(path) as image:
        small = image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    small.save(path, optimize=True)


def scalar_rnn(h0: float = 0.0):
    """h_t = tanh(w_hh h_{t-1} + w_ih x_t + b) for 4 steps, loss = (h_4 - 0.5)^2."""
    w_hh, w_ih, b = Value(0.9, name="w_hh"), Value(0.5, name="w_ih"), Value(0.1, name="b")
    h = h_0 = Value(h0, requires_grad=False, name="h_0")
    for t, x in enumerate([1.0, -0.5, 0.3, 0.8], 1):
        x_t = Value(x, requires_grad=False, name=f"x_{t}")
        with tg.scope(f"t={t}"):
            h = (w_hh * h + w_ih * x_t + b).tanh()
        h.name = f"h_{t}"
    loss = (h - 0.5) ** 2
    loss.name = "loss"
    loss.backward()
    return loss, h_0


def unroll(cell, inputs, state):
    """Step the cell by hand in scope t=<k> and keep every state (the RNN module returns only h)."""
    states = [state]
    for t, x in enumerate(inputs, 1):
        with tg.scope(f"t={t}"):
            state = cell(x, state)
        states.append(state)
    return states


def vanishing_rnn_vs_lstm(steps: int = 30, hidden: int = 16, inputs: int = 4) -> dict:
    runs = {}
    rng = np.random.default_rng(0)
    xs = rng.normal(size=(steps, 1, inputs))
    target = rng.normal(size=(1, hidden))
    rnn = nn.RNNCell(inputs, hidden, rng=1)
    states = unroll(rnn, xs, rnn.initial_state(1))
    loss = nn.mse_loss(states[-1], target)
    loss.backward()
    runs["tanh RNN, PyTorch's default init"] = (loss, states)
    for forget_bias in (0.0, 2.0):
        lstm = nn.LSTMCell(inputs, hidden, rng=1)
        init.zeros_(lstm.bias_hh)
        lstm.bias_ih.data[hidden : 2 * hidden] = forget_bias  # gates i, f, g, o: rows H..2H are f
        states = unroll(lstm, xs, lstm.initial_state(1))
        loss = nn.mse_loss(states[-1][0], target)
        loss.backward()
        runs[f"LSTM cell state, forget-gate bias {forget_bias:g}"] = (loss, [c for _, c in states], "c")
    return runs


def exploding_with_and_without_clipping(steps: int = 30, hidden: int = 16, inputs: int = 4) -> dict:
    runs = {}
    for clip in (None, 1.0):
        rng = np.random.default_rng(0)
        cell = nn.RNNCell(inputs, hidden, rng=rng)
        init.orthogonal_(cell.weight_hh, gain=1.4, rng=rng)  # every singular value 1.4
        init.zeros_(cell.bias_ih)
        init.zeros_(cell.bias_hh)
        # Tiny inputs keep tanh in its linear range, so each step back multiplies the gradient by ~1.4.
        xs = rng.normal(size=(steps, 1, inputs)) * 1e-5
        h0 = cell.initial_state(1)
        outputs, _ = nn.RNN(cell)(xs, h0=h0)
        if clip is not None:
            for h in outputs:
                h.register_hook(clip_norm(clip))
        loss = nn.mse_loss(outputs[-1], rng.normal(size=(1, hidden)))
        loss.backward()
        label = "no clipping" if clip is None else f"clip_norm({clip:g}) hook on every h_t"
        runs[f"tanh RNN, W_hh orthogonal × 1.4, {label}"] = (loss, [h0, *outputs])
    return runs


def main() -> None:
    loss, _ = scalar_rnn()
    save(draw_graph(loss, title="A 4-step scalar tanh RNN: h_t = tanh(w_hh h_{t-1} + w_ih x_t + b), "
                                "loss = (h_4 - 0.5)^2"), "op_view_scalar_rnn")
    save(draw_graph(loss, compact=True, title="The same graph, compact: each op heads the box of its output"),
         "op_view_scalar_rnn_compact")
    loss, h0 = scalar_rnn(h0=0.3)
    save(draw_path(loss, h0, title="Every path from h_0 to the loss, and d(node)/d(h_0) along them"),
         "path_view_scalar_rnn")
    save(compare_steps(vanishing_rnn_vs_lstm(), per_row=30,
                       title="30 steps back in time: the tanh RNN's gradient vanishes, the LSTM's cell state "
                             "keeps it when its forget gate stays open"),
         "steps_vanishing_rnn_vs_lstm")
    save(compare_steps(exploding_with_and_without_clipping(), per_row=30,
                       title="An exploding tanh RNN, and the same RNN with its gradient clipped at every step"),
         "steps_exploding_clipped")


if __name__ == "__main__":
    main()
