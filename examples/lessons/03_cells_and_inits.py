"""Lesson 3, vanishing across cells and initialisations: a tanh RNN, a ReLU RNN, an IRNN (ReLU with
W_hh = I), a tanh RNN with orthogonal W_hh, and an LSTM (PyTorch's init, and with its forget gates
opened by a bias of 2), each over 100 steps, in one step view; and what an orthogonal W_hh does and
does not do.

Every net reads the same 100 steps of input (4 features, batch 4, hidden size 16) and is scored on
its last hidden state only (L = mean squared error to a random target), so whatever reaches the early
steps came all the way back through the recurrence. The step view and the plot read the numbers of
``diagnostics.steps``: per state the norm of the gradient that reached it (||delta_t||; for the LSTM
over its whole state (h, c)), per step what it did to that gradient (its gain).

For a tanh RNN one step back is

    delta_{t-1} = (delta_t * tanh'(a_t)) W_hh,    tanh'(a_t) = 1 - h_t^2,

and an orthogonal W_hh keeps the length of every row it multiplies, so with it a step's gain is
exactly ||tanh'(a_t) * delta_t|| / ||delta_t||: what tanh' does, below 1. The same W_hh in a linear
RNN (no tanh) keeps the gradient whole; the plot shows both.

Run: python examples/lessons/03_cells_and_inits.py [--quick] [--out DIR]
"""

from __future__ import annotations

import lessons_common as lc
import numpy as np

from tinygrad_rnn import diagnostics, nn
from visualize import compare_steps

INPUTS, HIDDEN, BATCH = 4, 16, 4
TANH, RELU, IRNN = "tanh RNN", "ReLU RNN", "IRNN (ReLU, W_hh = I)"
ORTHOGONAL, LSTM = "tanh RNN, orthogonal W_hh", "LSTM, state (h, c)"
OPEN_LSTM = "LSTM, forget-gate bias 2, state (h, c)"
LINEAR_ORTHOGONAL = "linear RNN (no tanh), the same orthogonal W_hh"


def cells(rng) -> dict:
    """The six contenders, PyTorch's default init unless the name says otherwise."""
    tanh = nn.RNNCell(INPUTS, HIDDEN, rng=rng)
    relu = nn.RNNCell(INPUTS, HIDDEN, nonlinearity="relu", rng=rng)
    # IRNN (Le, Jaitly & Hinton 2015): ReLU, W_hh = I, zero biases, small input weights.
    irnn = nn.RNNCell(INPUTS, HIDDEN, nonlinearity="relu", rng=rng)
    nn.init.eye_(irnn.weight_hh)
    nn.init.normal_(irnn.weight_ih, 0.0, 0.001 ** 0.5, rng=rng)
    nn.init.zeros_(irnn.bias_ih)
    nn.init.zeros_(irnn.bias_hh)
    orthogonal = nn.RNNCell(INPUTS, HIDDEN, rng=rng)
    nn.init.orthogonal_(orthogonal.weight_hh, rng=rng)
    lstm = nn.LSTMCell(INPUTS, HIDDEN, rng=rng)
    open_lstm = nn.LSTMCell(INPUTS, HIDDEN, rng=rng)
    forget = slice(HIDDEN, 2 * HIDDEN)  # gates i, f, g, o are stacked in that order
    for bias, value in ((open_lstm.bias_ih, 2.0), (open_lstm.bias_hh, 0.0)):
        data = np.array(bias.data)
        data[forget] = value
        bias.data = data
    return {TANH: tanh, RELU: relu, IRNN: irnn, ORTHOGONAL: orthogonal, LSTM: lstm, OPEN_LSTM: open_lstm}


def without_tanh(cell):
    """A linear RNN cell (``nonlinearity="identity"``) with ``cell``'s weights: W_hh alone."""
    linear = nn.RNNCell(INPUTS, HIDDEN, nonlinearity="identity")
    linear.load_state_dict(cell.state_dict())
    return linear


def tanh_share(states) -> dict:
    """Per step t = 1..T of a tanh RNN scored on its last state (so h_t.grad = delta_t):

    - shrink: ||tanh'(a_t) * delta_t|| / ||delta_t||, what tanh' alone does to the gradient, which is
      the step's whole gain when W_hh is orthogonal;
    - mean_derivative: the mean of tanh'(a_t) = 1 - h_t^2 over units and examples.
    """
    hidden = [(np.asarray(h.data), np.asarray(h.grad)) for h in states[1:]]
    return {"shrink": np.array([np.linalg.norm((1 - h**2) * delta) / np.linalg.norm(delta) for h, delta in hidden]),
            "mean_derivative": np.array([np.mean(1 - h**2) for h, _ in hidden])}


def irnn_paths(states) -> dict:
    """With W_hh = I and zero biases a ReLU step's Jacobian is diag(a_t > 0), so
    delta_0 = (prod_t [a_t > 0]) * delta_T: the gradient reaches h_0 only through the (unit, example)
    pairs active at every step. Their count, and the share of ||delta_T|| they hold."""
    active = np.all([np.asarray(h.data) > 0 for h in states[1:]], axis=0)
    last = np.asarray(states[-1].grad)
    return {"always_active": int(active.sum()), "pairs": active.size,
            "share": float(np.linalg.norm(last * active) / np.linalg.norm(last))}


def main(quick: bool = False, out=lc.DEFAULT_OUT) -> dict:
    timer = lc.Timer()
    steps = 20 if quick else 100
    rng = np.random.default_rng(0)
    xs = rng.normal(size=(steps, BATCH, INPUTS))
    target = rng.normal(size=(BATCH, HIDDEN))
    nets = cells(np.random.default_rng(1))
    runs = {label: lc.unroll_to_last_state(cell, xs, target) for label, cell in nets.items()}
    linear = lc.unroll_to_last_state(without_tanh(nets[ORTHOGONAL]), xs, target)

    picture = compare_steps({label: (loss, states) for label, (loss, states, _) in runs.items()}, per_row=25,
                            title=f"{steps} steps back in time: the gradient that reaches each state, six nets")
    paths = lc.save_graph(picture, out, "03_cells_and_inits_steps")

    numbers = {label: {"factor": diagnostics.gradient_factor(rows)[0], "verdict": diagnostics.verdict(rows),
                       "gain": float(np.median([r.gain for r in rows[1:]]))} for label, (_, _, rows) in runs.items()}
    linear_factor = diagnostics.gradient_factor(linear[2])[0]
    share = tanh_share(runs[ORTHOGONAL][1])
    paths_irnn = irnn_paths(runs[IRNN][1])
    radius = {label: nn.init.spectral_radius(nets[label].weight_hh) for label in (TANH, RELU)}
    paths += _plot(runs, numbers, linear, share, steps, out)

    print("\n".join(f"{label}: ||delta_0|| / ||delta_{steps}|| = {n['factor']:.2g} ({n['verdict']}), "
                    f"median gain per step {n['gain']:.3g}" for label, n in numbers.items()))
    print(f"{LINEAR_ORTHOGONAL}: ||delta_0|| / ||delta_{steps}|| = {linear_factor:.6f}\n")
    n = numbers
    lc.say(
        f"The verdict calls a run vanishing when less than {diagnostics.VANISHING:g} of the gradient at the loss "
        "reaches the first state. Each step back multiplies the gradient by the step's Jacobian, and a median "
        f"gain g per step compounds to about g^{steps}.",
        f"PyTorch's default init draws W_hh uniform in +-1/sqrt(H): its spectral radius is "
        f"{radius[TANH]:.2f} in the tanh net and {radius[RELU]:.2f} in the ReLU net (about 1/sqrt(3) = 0.58 at "
        f"any size), so each step keeps about half (median gains {n[TANH]['gain']:.2f} and {n[RELU]['gain']:.2f}): "
        f"{n[TANH]['factor']:.1g} and {n[RELU]['factor']:.1g} over {steps} steps.",
        f"An orthogonal W_hh keeps every length, so each step's gain is exactly what tanh' does, "
        f"||tanh'(a_t) * delta_t|| / ||delta_t|| (right panel: the two coincide to "
        f"{np.max(np.abs(share['shrink'] - [r.gain for r in runs[ORTHOGONAL][2][1:]])):.0e}). tanh' averages "
        f"{np.mean(share['mean_derivative']):.2f} here, the median gain is {n[ORTHOGONAL]['gain']:.2f}, and "
        f"{steps} such steps leave {n[ORTHOGONAL]['factor']:.2g}: {n[ORTHOGONAL]['verdict']}. The same W_hh "
        f"without tanh (a linear RNN) keeps {linear_factor:.3f} of it. Orthogonal init removes W_hh's share of "
        "the shrinking, not tanh's.",
        f"The IRNN keeps {n[IRNN]['factor']:.2g} ({n[IRNN]['verdict']}): with W_hh = I a step's Jacobian is "
        "diag(ReLU'(a_t)), 1 on an active unit and 0 on a silent one, so the gradient passes unchanged "
        f"(median gain {n[IRNN]['gain']:.2f}) through units that stay active and is cut where one falls "
        f"silent. {paths_irnn['always_active']} of the {paths_irnn['pairs']} (unit, example) pairs are active at "
        f"all {steps} steps, and they hold {paths_irnn['share']:.2g} of delta_{steps}: that is what arrives.",
        "The LSTM's cell state is multiplied only by the forget gate, elementwise: with PyTorch's init the gates "
        f"sit near sigmoid(0) = 0.5 and the gradient fades almost as fast as a plain RNN's (median gain "
        f"{n[LSTM]['gain']:.2f}, {n[LSTM]['factor']:.2g}). A forget-gate bias of 2 (sigmoid(2) = 0.88) gives "
        f"{n[OPEN_LSTM]['gain']:.2f} a step and {n[OPEN_LSTM]['factor']:.2g} over {steps} steps: far more, and "
        f"{n[OPEN_LSTM]['verdict']} by the verdict's {diagnostics.VANISHING:g} line, yet still "
        f"{1 / n[OPEN_LSTM]['factor']:.0f} times smaller at the first state than at the last.",
    )
    lc.wrote(paths)
    print(f"({timer})")
    return {"factors": {label: num["factor"] for label, num in numbers.items()}, "numbers": numbers,
            "linear_factor": linear_factor, "tanh_share": share, "irnn_paths": paths_irnn, "radius": radius,
            "runs": runs, "xs": xs, "target": target, "paths": paths}


def _plot(runs, numbers, linear, share, steps, out) -> list:
    with lc.plot_style():
        fig = lc.figure(figsize=(12, 5.8))
        left, right = fig.subplots(1, 2, width_ratios=(1.45, 1))
        # On 40 decades 2.5e-3 and the verdict's 1e-3 look the same: a zoom on the top decades shows which
        # side of the line each net ends on. It sits where no curve passes (late t, tiny shares).
        zoom = left.inset_axes([0.5, 0.04, 0.47, 0.33])
        curves = [(label, rows, {}) for label, (_, _, rows) in runs.items()]
        curves.append((LINEAR_ORTHOGONAL, linear[2], {"ls": "--", "color": "black", "lw": 1}))
        for label, rows, style in curves:
            held = [r for r in rows if r.grad_norm]
            t, reached = [r.t for r in held], [r.grad_norm / rows[-1].grad_norm for r in held]
            factor = diagnostics.gradient_factor(rows)[0]
            verdict = numbers[label]["verdict"] if label in numbers else diagnostics.verdict(rows)
            (line,) = left.semilogy(t, reached, label=f"{label}: {factor:.2g} ({verdict})", **style)
            zoom.semilogy(t, reached, color=line.get_color(), **{k: v for k, v in style.items() if k != "color"})
        for axes in (left, zoom):
            axes.axhline(diagnostics.VANISHING, color="#1f5f9e", ls=":", lw=1)
        zoom.set_ylim(1e-4, 2)
        zoom.set_title("zoom on the top decades", fontsize=7)
        zoom.tick_params(labelsize=7)
        zoom.text(2, diagnostics.VANISHING * 0.7, f"{diagnostics.VANISHING:g}", color="#1f5f9e", fontsize=7,
                  va="top")
        left.plot([], [], ":", color="#1f5f9e", lw=1,
                  label=f"{diagnostics.VANISHING:g}: a net that ends below this line at t = 0 is 'vanishing'")
        left.set_xlabel("time step t (the loss reads the last one)")
        left.set_ylabel(f"‖δ_t‖ / ‖δ_{steps}‖, the share of the gradient reaching s_t")
        left.set_title(f"The gradient on its way back; legend: ‖δ_0‖ / ‖δ_{steps}‖ (verdict)")
        left.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2)
        linear_rows = linear[2]

        orthogonal_rows = runs[ORTHOGONAL][2][1:]
        t = [r.t for r in orthogonal_rows]
        right.plot(t, [r.gain for r in orthogonal_rows], color="tab:red", lw=1.5,
                   label="gain_t of the tanh RNN, orthogonal W_hh (diagnostics.steps)")
        right.plot(t, share["shrink"], ".", color="black", ms=3,
                   label="‖tanh'(a_t) ⊙ δ_t‖ / ‖δ_t‖, tanh' alone (numpy)")
        right.plot(t, share["mean_derivative"], ":", color="grey", label="mean of tanh'(a_t) over units and examples")
        right.plot(t, [r.gain for r in linear_rows[1:]], "--", color="black", lw=1,
                   label="gain_t without tanh (linear RNN, same W_hh)")
        gain = numbers[ORTHOGONAL]
        right.text(0.97, 0.45, f"tanh RNN, orthogonal W_hh: median gain {gain['gain']:.3f},\n"
                   f"over {steps} steps {gain['factor']:.2g} ({gain['verdict']})\n"
                   f"without tanh: 1 at every step, {diagnostics.gradient_factor(linear_rows)[0]:.3f} over {steps}",
                   transform=right.transAxes, ha="right", fontsize=8)
        right.set_ylim(0, 1.15)
        right.set_xlabel("time step t")
        right.set_ylabel("what step t does to the gradient")
        right.set_title("Orthogonal W_hh keeps lengths: the gain left is tanh's")
        right.legend(fontsize=7, loc="lower left")
        return lc.save_figure(fig, out, "03_cells_and_inits")


if __name__ == "__main__":
    main(**lc.command_line(__doc__))
