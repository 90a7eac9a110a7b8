"""Lesson 10, many losses: the lag view. With a loss at every step, the step view's numbers describe the
gradient that crosses each step, a mix of every loss after it; the lag view says how far each loss reaches.

A loss L = L_1 + ... + L_T whose term L_i reads state s_i sends s_k the gradient

    delta_k = d_k + J_{k+1}^T delta_{k+1} = sum over i >= k of delta_k^(i),
    delta_k^(i) = J_{k+1}^T J_{k+2}^T ... J_i^T d_i,

where d_i is what L_i sends to s_i directly and J_t = ds_t/ds_{t-1}. Two views answer two questions:

- the step view (``draw_steps(L, states)``): what did step t do to the gradient that crossed it? Its gain
  is ||J_t^T delta_t|| / ||delta_t||. With one loss at the end the gains multiply to ||delta_0|| /
  ||delta_T||. With a loss at every step they do not: ||delta_{t-1}|| = ||J_t^T delta_t + d_{t-1}||, and
  each loss adds its d on the way, so the nodes can stay level while every gain is small.
- the lag view (``draw_lags([L_1, ..., L_T], states)``, from ``diagnostics.lags``): how far does each
  loss reach? Row i holds ||delta_k^(i)|| / ||delta_i^(i)||, loss i's own share at s_k; the reach curve
  is the median of that share ``lag`` steps back.

Two nets, T = 30 steps, batch 1:

1. A linear RNN that keeps one direction exactly, h_t = W h_{t-1}, W = diag(1, 0.1, 0.1), so J_t = W
   and delta_k^(i) = (W^T)^(i-k) r_i for a loss L_i = <r_i, h_i>. Losses 1..T-1 read only the shrinking
   directions, r_i = (0, 1000, 1000); the last reads only the kept one, r_T = e_1. Then the summed
   gradient is about e_1 + 1111 (0, 1, 1) at every state: each step shrinks it by 10 (gain 0.1) and the
   loss reading the state before refills it. The last loss's own gradient (W^T)^k e_1 = e_1 reaches h_0 whole.
2. A tanh RNN (hidden size 16, PyTorch's init) with a mean squared error of h_t against a random
   target at every step: the summed gradient is level, and each loss's own gradient falls by about
   half a step.

Run: python examples/lessons/10_many_losses.py [--quick] [--out DIR]
"""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path

import lessons_common as lc
import numpy as np

from tinygrad_rnn import Value, diagnostics, nn
from visualize import draw_lags, draw_steps

STEPS, QUICK_STEPS = 30, 12
KEPT, SHRUNK = 1.0, 0.1  # the linear net's W = diag(KEPT, SHRUNK, SHRUNK)
LOUD = 1e3  # how heavily losses 1..T-1 read the shrinking directions: their gradient drowns the kept one
INPUTS, HIDDEN = 4, 16  # the tanh net
LAGS = (1, 5, 10)  # the lags whose reach the lesson prints
LINEAR, TANH = "linear RNN keeping e₁", "tanh RNN, MSE at every step"


def preserved_direction(steps: int) -> dict:
    """The linear net: W = diag(1, 0.1, 0.1), zero inputs, h_0 = (1, 1, 1). Loss i < T reads
    <(0, LOUD, LOUD), h_i>, the last loss <e_1, h_T>. Returns the net's pieces and its losses."""
    weight = np.diag([KEPT, SHRUNK, SHRUNK])
    cell = nn.RNNCell(1, 3, bias=False, nonlinearity="identity")
    cell.weight_hh.data, cell.weight_ih.data = weight, np.zeros((3, 1))
    h0 = Value(np.ones((1, 3)), name="h0")
    _, states = nn.RNN(cell)(np.zeros((steps, 1, 1)), h0=h0, return_states=True)
    readouts = [np.array([0.0, LOUD, LOUD])] * (steps - 1) + [np.array([1.0, 0.0, 0.0])]
    losses = [(h * r).sum() for h, r in zip(states[1:], readouts)]
    return {"losses": losses, "states": states, "weight": weight, "readouts": np.array(readouts)}


def tanh_every_step(steps: int) -> dict:
    """The tanh net: PyTorch's init, unit Gaussian inputs, L_t = mean((h_t - y_t)^2), y_t Gaussian."""
    rng = np.random.default_rng(0)
    cell = nn.RNNCell(INPUTS, HIDDEN, rng=1)
    xs = rng.normal(size=(steps, 1, INPUTS))
    targets = rng.normal(size=(steps, 1, HIDDEN))
    outputs, states = nn.RNN(cell)(xs, return_states=True)
    losses = [nn.mse_loss(h, y) for h, y in zip(outputs, targets)]
    weights = {name: np.array(p.data) for name, p in cell.named_parameters()}
    return {"losses": losses, "states": states, "weights": weights, "xs": xs, "targets": targets}


def analyse(net: dict) -> dict:
    """The step view's numbers for the summed loss (backward on it) and the lag view's for the losses."""
    losses, states = net["losses"], net["states"]
    total = losses[0]
    for loss in losses[1:]:
        total = total + loss
    total.backward()
    rows = diagnostics.steps(total, states)
    matrix = diagnostics.lags(losses, states)
    gains = np.array([r.gain for r in rows[1:]])
    factor, _, _ = diagnostics.gradient_factor(rows)
    return {
        **net, "total": total, "rows": rows, "matrix": matrix, "reach": diagnostics.reach(matrix),
        "gains": gains, "delta_norms": np.array([r.grad_norm for r in rows]),
        "median_gain": float(np.median(gains)), "gain_product": float(np.prod(gains)),
        "last_share": float(matrix[-1, 0] / matrix[-1, -1]), "last_read_factor": factor,
        "verdict": diagnostics.verdict(rows),
    }


def main(quick: bool = False, out=lc.DEFAULT_OUT) -> dict:
    timer = lc.Timer()
    steps = QUICK_STEPS if quick else STEPS
    runs = {LINEAR: analyse(preserved_direction(steps)), TANH: analyse(tanh_every_step(steps))}
    linear, tanh = runs.values()
    paths = (save_stacked(views(linear, steps, "linear"), out, "10_many_losses_linear")
             + save_stacked(views(tanh, steps, "tanh"), out, "10_many_losses_tanh")
             + _plot(runs, steps, out))

    inner = linear["delta_norms"][1:steps]  # the states a loss reads and a step crosses
    lc.say(*sentences(linear, tanh, steps))
    lc.wrote(paths)
    print(f"({timer})")
    numbers = {
        label: {"median_gain": r["median_gain"], "gain_product": r["gain_product"], "last_share": r["last_share"],
                "reach": {lag: float(r["reach"][lag]) for lag in LAGS}, "verdict": r["verdict"],
                "delta_norms": r["delta_norms"], "gains": r["gains"], "matrix": r["matrix"]}
        for label, r in runs.items()}
    numbers[LINEAR].update(level=(float(inner.min()), float(inner.max())), weight=linear["weight"],
                           readouts=linear["readouts"])
    numbers[TANH].update(level=(float(tanh["delta_norms"].min()), float(tanh["delta_norms"].max())),
                         weights=tanh["weights"], xs=tanh["xs"], targets=tanh["targets"])
    return {"runs": numbers, "steps": steps, "lags": LAGS, "paths": paths}


def sentences(linear: dict, tanh: dict, T: int) -> list[str]:
    n, m = linear["delta_norms"], tanh["delta_norms"]

    def reach(run):
        return ", ".join(f"{run['reach'][lag]:.2g} at lag {lag}" for lag in LAGS)

    return [
        f"Linear RNN, W = diag(1, 0.1, 0.1), {T} steps: losses 1 to {T - 1} read only the two shrinking "
        f"directions, loss {T} only the kept one, e_1. Step view of their sum: the median gain is "
        f"{linear['median_gain']:.3f} (step {T}'s is {linear['gains'][-1]:.3f}), and the gains multiply to "
        f"{linear['gain_product']:.2g}; yet ||delta_t|| stays between {n[1:T].min():.2g} and {n[1:T].max():.2g} "
        f"from h_1 to h_{T - 1} ({n[0]:.3g} at h_0, which no loss reads; {n[T]:.3g} at h_{T}), so "
        f"||delta_0|| / ||delta_{T}|| = {n[0] / n[T]:.3g}, not the product of the gains. Steps 1 to {T - 1} "
        f"each shrink the gradient that crosses them tenfold, and the loss at the state before adds its own: "
        f"the edges are blue (0.1 a step, compounded over {T} steps), the nodes level.",
        f"Lag view of the same losses: the last loss's share at h_0 is {linear['last_share']:.6f}; its "
        f"gradient (W^T)^k e_1 = e_1 reaches h_0 whole (the heatmap's bottom row). In the step view it is "
        f"drowned: its part of delta_1 has norm {linear['matrix'][-1, 1]:.3g}, beside ||delta_1|| = "
        f"{n[1]:.2g}. Each other loss keeps 0.1 a step; the reach curve, a median over losses, is "
        f"{reach(linear)}; its last two bars rest on two losses and on one: lag {T - 1} on losses {T - 1} and "
        f"{T} ({linear['reach'][T - 1]:.2g}, the median of two is their mean), lag {T} on the last loss alone "
        f"({linear['reach'][T]:.3g}). "
        f"The step view's caption follows the last read alone: x {linear['last_read_factor']:.3g}, "
        f"{linear['verdict']}.",
        f"tanh RNN (hidden {HIDDEN}, PyTorch's init), a mean squared error at every one of {T} steps. Step view "
        f"of the sum: ||delta_t|| stays between {m.min():.2g} and {m.max():.2g} at every state, while the "
        f"median gain is {tanh['median_gain']:.2f} and the gains multiply to {tanh['gain_product']:.2g}. Lag "
        f"view: the median share over losses is {reach(tanh)}, and the last loss's share at h_0 "
        f"is {tanh['last_share']:.2g}. The nodes are level because a new loss adds its gradient at every "
        f"state, not because any gradient survives; the caption, following the last read, says "
        f"{tanh['verdict']}.",
        "The step view answers: what did each step do to the gradient that crossed it (and what did it give "
        "the weights)? The lag view answers: how far does each loss reach? With one loss at the end they "
        "are the same question; with a loss at every step only the lag view answers the second.",
    ]


# ---- pictures ---------------------------------------------------------------------------------

def views(run: dict, steps: int, kind: str) -> list:
    """The step view of the summed loss and the lag view of the losses, titled with what each answers."""
    what = "e₁ of h" if kind == "linear" else "h"
    step_view = draw_steps(run["total"], run["states"], per_row=15, title=(
        "Step view of the summed loss: what each step did to the gradient that crossed it"))
    lag_view = draw_lags(run["losses"], run["states"], matrix=run["matrix"], title=(
        f"Lag view of the same {len(run['losses'])} losses: how far each reaches "
        f"(bottom row: the last loss, reading {what}{steps})"))
    return [step_view, lag_view]


def save_stacked(pictures: list, out: Path, name: str) -> list[Path]:
    """Render Graphviz pictures one above the other, as ``out/name.png`` and ``out/name.svg``. Without
    Graphviz's ``dot`` each picture's source is written instead (``name_1.dot``, ...)."""
    if shutil.which("dot") is None:
        return [path for k, p in enumerate(pictures, 1) for path in lc.save_graph(p, out, f"{name}_{k}")]
    with tempfile.TemporaryDirectory() as scratch:
        parts = [lc.save_graph(p, Path(scratch), f"part{k}") for k, p in enumerate(pictures)]
        out.mkdir(parents=True, exist_ok=True)
        png, svg = out / f"{name}.png", out / f"{name}.svg"
        _stack_png([png_path for png_path, _ in parts], png)
        svg.write_text(_stack_svg([svg_path.read_text(encoding="utf-8") for _, svg_path in parts]), encoding="utf-8")
    return [png, svg]


GAP = 28  # pixels (points in the SVG) between two stacked pictures, a grey rule in the middle


def _stack_png(paths: list[Path], target: Path) -> None:
    from PIL import Image, ImageDraw

    images = [Image.open(p).convert("RGB") for p in paths]
    width = max(i.width for i in images)
    canvas = Image.new("RGB", (width, sum(i.height for i in images) + GAP * (len(images) - 1)), "white")
    y = 0
    for k, image in enumerate(images):
        if k:
            ImageDraw.Draw(canvas).line([(0, y - GAP // 2), (width, y - GAP // 2)], fill="#c8c8c8", width=2)
        canvas.paste(image, ((width - image.width) // 2, y))
        y += image.height + GAP
    canvas.save(target)


def _stack_svg(texts: list[str]) -> str:
    """Graphviz SVGs nested in one: each root becomes an inner <svg> at its offset, sized in user units
    (points), its ids prefixed so that no two pictures share one."""
    pieces, sizes = [], []
    for k, text in enumerate(texts):
        root = re.search(r"<svg\b[^>]*>", text)
        width, height = (float(re.search(rf'\b{a}="([\d.]+)pt"', root.group()).group(1)) for a in ("width", "height"))
        view = re.search(r'viewBox="([^"]+)"', root.group()).group(1)
        inner = text[root.end(): text.rindex("</svg>")].replace(' id="', f' id="p{k}_')
        pieces.append((width, height, view, inner))
        sizes.append((width, height))
    total_width = max(w for w, _ in sizes)
    total_height = sum(h for _, h in sizes) + GAP * (len(sizes) - 1)
    body, y = [], 0.0
    for k, (width, height, view, inner) in enumerate(pieces):
        if k:
            body.append(f'<line x1="0" y1="{y - GAP / 2:.1f}" x2="{total_width:.1f}" y2="{y - GAP / 2:.1f}" '
                        'stroke="#c8c8c8" stroke-width="1.5"/>')
        body.append(f'<svg x="{(total_width - width) / 2:.1f}" y="{y:.1f}" width="{width:.1f}" '
                    f'height="{height:.1f}" viewBox="{view}">{inner}</svg>')
        y += height + GAP
    return ('<?xml version="1.0" encoding="UTF-8" standalone="no"?>\n'
            '<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
            f'width="{total_width:.1f}pt" height="{total_height:.1f}pt" '
            f'viewBox="0 0 {total_width:.1f} {total_height:.1f}">\n'
            f'<rect width="100%" height="100%" fill="white"/>\n' + "\n".join(body) + "\n</svg>\n")


def panel_title(label: str, run: dict) -> str:
    return (f"{label}\nmedian gain {run['median_gain']:.3f} · gains multiply to {run['gain_product']:.2g} · "
            f"last loss's share at h_0 {run['last_share']:.2g}")


def _plot(runs: dict, steps: int, out: Path) -> list[Path]:
    """Per net: each loss's own ||delta_k^(i)|| (thin), their sum's ||delta_k|| (the step view's nodes,
    thick), and what multiplying the step view's gains back from ||delta_T|| would say (dashed)."""
    with lc.plot_style():
        fig = lc.figure(figsize=(12, 5.4))
        states = np.arange(steps + 1)
        for axes, (label, r) in zip(fig.subplots(1, 2), runs.items()):
            for i, row in enumerate(r["matrix"]):
                read = i + 1  # loss i reads h_{i+1}
                last = i == len(r["matrix"]) - 1
                colour = "tab:red" if last else "tab:blue"
                axes.semilogy(states[: read + 1], row[: read + 1], color=colour, lw=1.6 if last else 0.8,
                              alpha=1.0 if last else 0.45, zorder=3 if last else 2,
                              label=(f"the last loss alone (reads h_{steps}), ‖δ_k^(i)‖" if last else
                                     "each other loss alone, ‖δ_k^(i)‖, from the state it reads (dot) back"
                                     if i == 0 else None))
                axes.plot(read, row[read], ".", ms=4, color=colour, alpha=0.7)
            axes.semilogy(states, r["delta_norms"], color="black", lw=2.2, zorder=4,
                          label="‖δ_k‖ of the summed loss, the step view's node values (its δ_k is the "
                                "vector sum of the thin lines' δ_k^(i))")
            product = r["delta_norms"][-1] * np.append(np.cumprod(r["gains"][::-1])[::-1], 1.0)
            axes.semilogy(states, product, "--", color="tab:orange", lw=1.5, zorder=4,
                          label="‖δ_T‖ × the gains of steps k+1..T: what multiplying the step view's labels would "
                                "say (no gradient here)")
            axes.set_xlabel("state k")
            axes.set_title(panel_title(label, r))
            axes.set_xlim(0, steps)
        fig.axes[0].set_ylabel("gradient norm at s_k (log)")
        handles, labels = fig.axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside lower center", ncols=2, fontsize=8,
                   title="thin lines: the lag view's rows before each is divided by its value at the dot")
        fig.suptitle("With a loss at every step, the step view's level nodes are many losses' gradients added up; "
                     "each loss alone is a thin line")
        return lc.save_figure(fig, out, "10_many_losses_sum")


if __name__ == "__main__":
    main(**lc.command_line(__doc__))
