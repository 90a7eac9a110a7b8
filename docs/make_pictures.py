"""Make the pictures in docs/ (SVG, and PNG beside each): ``python docs/make_pictures.py``.

1. op_view_scalar_rnn: a 4-step scalar tanh RNN, every edge labelled with its local derivative, one
   time step a row. op_view_scalar_rnn_compact: the same, each op at the head of its output's box.
2. path_view_scalar_rnn: the same graph, the paths from h_0 to the loss with d(node)/d(h_0) on each node.
3. op_view_lstm: a 3-step LSTM with hidden size 3, one step per row, its gates named.
4. steps_vanishing_rnn_vs_lstm: 30 time steps of a tanh RNN (PyTorch's default init) beside an LSTM's
   whole state (h, c), with the forget-gate bias at 0 (the default) and at 2.
   steps_rnn_vs_lstm: the tanh RNN and the LSTM with forget-gate bias 2 alone (the README's first picture).
5. steps_exploding_clipped: 30 time steps of a tanh RNN whose W_hh has all singular values 1.4, without
   and with clip_norm(1.0) on every h_t (the clipped steps are marked with the norms before and after).
6. lags_loss_every_step: the lag view of a 30-step tanh RNN with a squared error at every step: how
   far each step's loss reaches back, which the step view of their sum cannot say.

The step views' edges carry each step's gain, what it did to the gradient that crossed it; with the
one loss at the last step they multiply to ||delta_0|| / ||delta_T||, which ``main`` prints.

Every PNG is drawn at up to twice Graphviz's 96 dpi, for sharp text on high-density screens, and at
most 2,000 px wide (WIDEST); GitHub shows a README picture at most about 830 px wide (its column), so
a picture meant to be read there is laid out to about 1,000 px (tests/test_readable_pictures.py).

Runs in a few seconds; the numbers are deterministic (fixed seeds).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import tinygrad_rnn as tg  # noqa: E402
from tinygrad_rnn import Value, diagnostics, nn, recurrence  # noqa: E402
from tinygrad_rnn.clip import clip_norm  # noqa: E402
from tinygrad_rnn.nn import init  # noqa: E402
from visualize import compare_steps, draw_graph, draw_lags, draw_path, render  # noqa: E402

HERE = Path(__file__).resolve().parent
WIDEST = 2000  # px: the widest PNG written here


def save(picture, name: str) -> None:
    """``name``.svg, then ``name``.png at the highest resolution up to 2x that keeps it WIDEST px wide."""
    svg = render(picture, HERE / f"{name}.svg")
    written = [svg]
    if svg.suffix == ".svg":  # else Graphviz is missing: render wrote the .dot source and said so
        width_pt = float(re.search(r'<svg width="([\d.]+)pt"', svg.read_text(encoding="utf-8")).group(1))
        sharp = picture.copy()
        sharp.attr("graph", dpi=str(min(192, int(72 * (WIDEST - 2) / width_pt))))
        written.append(render(sharp, HERE / f"{name}.png"))
        shrink_png(written[-1])
    for path in written:
        print(f"wrote {path.relative_to(HERE.parent)} ({path.stat().st_size // 1024} KB)")


def shrink_png(path: Path) -> None:
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
        with tg.scope(recurrence.step_scope(t)):
            h = (w_hh * h + w_ih * x_t + b).tanh()
        h.name = f"h_{t}"
    loss = (h - 0.5) ** 2
    loss.name = "loss"
    loss.backward()
    return loss, h_0


def vanishing_rnn_vs_lstm(steps: int = 30, hidden: int = 16, inputs: int = 4) -> dict:
    """A tanh RNN and two LSTMs on the same inputs, each with a squared error read at the last step."""
    runs = {}
    rng = np.random.default_rng(0)
    xs = rng.normal(size=(steps, 1, inputs))
    target = rng.normal(size=(1, hidden))
    rnn = nn.RNNCell(inputs, hidden, rng=1)
    outputs, states = nn.RNN(rnn)(xs, return_states=True)
    loss = nn.mse_loss(outputs[-1], target)
    loss.backward()
    runs["tanh RNN, PyTorch's default init"] = (loss, states)
    for forget_bias in (0.0, 2.0):
        lstm = nn.LSTMCell(inputs, hidden, rng=1)
        init.zeros_(lstm.bias_hh)
        bias = lstm.bias_ih.data.copy()
        bias[hidden : 2 * hidden] = forget_bias  # gates i, f, g, o: rows H..2H are f
        lstm.bias_ih.data = bias
        outputs, states = nn.RNN(lstm)(xs, return_states=True)
        loss = nn.mse_loss(outputs[-1], target)
        loss.backward()
        runs[f"LSTM, forget-gate bias {forget_bias:g}"] = (loss, states)
    return runs


def lstm_op_view(steps: int = 3, hidden: int = 3):
    lstm = nn.LSTMCell(2, hidden, rng=0)
    outputs, _ = nn.RNN(lstm)(np.random.default_rng(0).normal(size=(steps, 1, 2)), return_states=True)
    for t, h in enumerate(outputs, 1):
        h.name = f"h_{t}"
    loss = (outputs[-1] ** 2).sum()
    loss.name = "loss"
    loss.backward()
    return loss


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
        outputs, states = nn.RNN(cell, hidden_hook=None if clip is None else clip_norm(clip))(xs, return_states=True)
        loss = nn.mse_loss(outputs[-1], rng.normal(size=(1, hidden)))
        loss.backward()
        label = "no clipping" if clip is None else f"clip_norm({clip:g}) hook on every h_t"
        runs[f"tanh RNN, W_hh orthogonal × 1.4, {label}"] = (loss, states)
    return runs


def loss_at_every_step(steps: int = 30, hidden: int = 16, inputs: int = 4) -> tuple:
    """A tanh RNN (PyTorch's default init) with a squared error read at every step: (losses, states)."""
    rng = np.random.default_rng(0)
    cell = nn.RNNCell(inputs, hidden, rng=1)
    outputs, states = nn.RNN(cell)(rng.normal(size=(steps, 1, inputs)), return_states=True)
    targets = rng.normal(size=(steps, 1, hidden))
    return [nn.mse_loss(h, y) for h, y in zip(outputs, targets)], states


def report(runs: dict) -> None:
    """For each run: the product of its edge labels (the gains) and the true ||delta_0|| / ||delta_T||."""
    for name, (loss, states, *_) in runs.items():
        rows = diagnostics.steps(loss, states)
        gains = float(np.prod([r.gain for r in rows[1:]]))
        factor, _, _ = diagnostics.gradient_factor(rows)
        print(f"  {name}: gains multiply to {gains:.3g} (with the clips: {factor:.3g}); "
              f"||delta_0|| / ||delta_T|| = {rows[0].grad_norm / rows[-1].grad_norm:.3g} ({diagnostics.verdict(rows)})")


def main() -> None:
    loss, _ = scalar_rnn()
    save(draw_graph(loss, compact=False, per_row=1,
                    title="A 4-step scalar tanh RNN: h_t = tanh(w_hh h_{t-1} + w_ih x_t + b), loss = (h_4 - 0.5)^2"),
         "op_view_scalar_rnn")
    save(draw_graph(loss, compact=True, per_row=1,
                    title="The same graph, compact: each op heads the box of its output"),
         "op_view_scalar_rnn_compact")
    loss, h0 = scalar_rnn(h0=0.3)
    save(draw_path(loss, h0, title="Every path from h_0 to the loss, and d(node)/d(h_0) along them"),
         "path_view_scalar_rnn")
    save(draw_graph(lstm_op_view(), title="A 3-step LSTM, hidden size 3: one step per row, the gates named; "
                                          "the forget gate f multiplies the cell state c"), "op_view_lstm")
    runs = vanishing_rnn_vs_lstm()
    save(compare_steps(runs, title="30 time steps back: the tanh RNN's gradient vanishes, the LSTM keeps it "
                                   "when its forget gate stays open"),
         "steps_vanishing_rnn_vs_lstm")
    report(runs)
    save(compare_steps({name: run for name, run in runs.items() if "bias 0" not in name},
                       title="30 time steps back: the tanh RNN's gradient vanishes, an LSTM with an open forget "
                             "gate keeps it"),
         "steps_rnn_vs_lstm")
    runs = exploding_with_and_without_clipping()
    save(compare_steps(runs, title="An exploding tanh RNN, and the same RNN with its gradient clipped at every "
                                   "time step"),
         "steps_exploding_clipped")
    report(runs)
    losses, states = loss_at_every_step()
    matrix = diagnostics.lags(losses, states)
    save(draw_lags(losses, states, matrix=matrix,
                   title="A tanh RNN with a loss at every step: how far each loss's gradient reaches back"),
         "lags_loss_every_step")
    reach = diagnostics.reach(matrix)
    print(f"  lag view: median share 1, 5, 10, 29 steps back: {reach[1]:.2g}, {reach[5]:.2g}, {reach[10]:.2g}, "
          f"{reach[29]:.2g}")


if __name__ == "__main__":
    main()
