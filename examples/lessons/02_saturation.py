"""Lesson 2, saturation: the local derivatives of sigmoid and tanh on an op view of a few scalar steps,
with inputs inside and outside the regions where the functions saturate.

Four three-step recurrences h_t = f(h_{t-1} + x_t), f = tanh or sigmoid, with small inputs (the
pre-activations stay near 0) and with large ones (|pre-activation| > 3). The recurrent weight is 1, so
the only factors a gradient meets on its way from h_3 back to h_0 are the local derivatives f'(a_t),
which the op view writes on the edges out of each tanh and sigmoid node.

Run: python examples/lessons/02_saturation.py [--quick] [--out DIR]
"""

from __future__ import annotations

import lessons_common as lc
import numpy as np

import tinygrad_rnn as tg
from tinygrad_rnn import Value
from visualize import draw_graph

INPUTS = {"small inputs": [0.2, -0.3, 0.1], "large inputs": [4.0, -5.0, 4.5]}
H0 = 0.1


def chain(nonlinearity: str, inputs: list[float], label: str):
    """h_t = f(h_{t-1} + x_t) for t = 1..3 in scope ``label``/t=<t>; returns (h_3, h_0, pre-activations)."""
    h = h_0 = Value(H0, name="h_0")
    pre_activations = []
    with tg.scope(label):
        for t, x in enumerate(inputs, 1):
            with tg.scope(f"t={t}"):
                a = h + Value(x, requires_grad=False, name=f"x_{t}")
                h = getattr(a, nonlinearity)()
            h.name = f"h_{t}"
            pre_activations.append(a.item())
    return h, h_0, pre_activations


def derivative(nonlinearity: str, a):
    """The textbook f'(a), written out here to check the graph's numbers against."""
    if nonlinearity == "tanh":
        return 1.0 - np.tanh(a) ** 2
    s = 1.0 / (1.0 + np.exp(-np.asarray(a)))
    return s * (1.0 - s)


def main(quick: bool = False, out=lc.DEFAULT_OUT) -> dict:
    # Four chains of three scalar steps are small already: --quick draws the same pictures.
    timer = lc.Timer()
    runs, roots = {}, []
    for nonlinearity in ("tanh", "sigmoid"):
        for regime, inputs in INPUTS.items():
            h_3, h_0, pre = chain(nonlinearity, inputs, f"{nonlinearity}, {regime}")
            h_3.backward()  # L = h_3, so dL/dh_0 is the product of the three local derivatives
            expected = float(np.prod(derivative(nonlinearity, np.array(pre))))
            runs[(nonlinearity, regime)] = {"pre": pre, "dL/dh_0": h_0.grad, "product": expected}
            roots.append(h_3)

    picture = draw_graph(roots, compact=True, per_row=3, title="h_t = f(h_t−1 + x_t), L = h_3: the edge into "
                         "each tanh or σ box is its local derivative f′(a_t)")
    paths = lc.save_graph(picture, out, "02_saturation_op_view") + _plot_functions(runs, out)

    lines = []
    for (nonlinearity, regime), run in runs.items():
        factors = ", ".join(f"{d:.3g}" for d in derivative(nonlinearity, np.array(run["pre"])))
        lines.append(f"{nonlinearity} with {regime}: f' = {factors}; dL/dh_0 = {run['dL/dh_0']:.3g} "
                     f"(their product: {run['product']:.3g}).")
    print("\n".join(lines) + "\n")
    saturated = runs[("sigmoid", "large inputs")]["dL/dh_0"]
    lc.say(
        "Backpropagation multiplies the gradient by each local derivative on its way back. tanh' is near "
        f"1 for small pre-activations, {derivative('tanh', 3.5):.3g} at |a| = 3.5 and less beyond; sigmoid' "
        "is at most 1/4 even at its best, at a = 0, so three sigmoid steps shrink a gradient at least "
        f"64-fold before any weight does anything, and the three saturated ones here leave {saturated:.1g} "
        "of it.",
    )
    lc.wrote(paths)
    print(f"({timer})")
    return {"runs": runs, "paths": paths}


def _plot_functions(runs: dict, out) -> list:
    a = np.linspace(-6, 6, 601)
    with lc.plot_style():
        fig = lc.figure(figsize=(9, 3.4))
        for axes, nonlinearity, f in zip(fig.subplots(1, 2), ("tanh", "sigmoid"),
                                         (np.tanh, lambda x: 1 / (1 + np.exp(-x)))):
            axes.plot(a, f(a), color="black", lw=1.2, label=nonlinearity)
            axes.plot(a, derivative(nonlinearity, a), color="tab:blue", lw=1.2, label=f"{nonlinearity}'")
            for (name, regime), run in runs.items():
                if name == nonlinearity:
                    pre = np.array(run["pre"])
                    marker = "o" if regime == "small inputs" else "s"
                    axes.plot(pre, derivative(name, pre), marker, ms=6, mfc="none",
                              color="tab:green" if marker == "o" else "crimson",
                              label=f"f'(a_t), {regime}")
            axes.set_xlabel("pre-activation a")
            axes.set_title(f"{nonlinearity} and its derivative (max {derivative(nonlinearity, 0.0):g})")
            axes.legend(loc="upper left")
        return lc.save_figure(fig, out, "02_saturation_derivatives")


if __name__ == "__main__":
    main(**lc.command_line(__doc__))
