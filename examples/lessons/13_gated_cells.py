"""Lesson 13, inside gated cells: the LSTM's cell-state path against its hidden path, what saturating a
gate does to the gate's own gradient, and a frozen GRU, whose gains are all 1 while its weights learn
nothing.

An LSTM step (PyTorch's equations, ``nn.LSTMCell``; gates computed in scopes named after them) is

    i, f, o = sigmoid(...),  g = tanh(...),   each of W x_t + W h_{t-1} + b,
    c_t = f * c_{t-1} + i * g,                h_t = o * tanh(c_t).

A gradient can go back from s_t = (h_t, c_t) to s_{t-1} two ways. The cell path c_t -> c_{t-1} multiplies
it by f_t, elementwise: no matrix, no squashing. The hidden path h_t -> h_{t-1} goes through the gates,
sigmoid' <= 1/4 or tanh' times W_hh, as in a plain RNN. Cutting one path in the forward pass (reading
h_{t-1} or c_{t-1} through ``detach()``, which leaves every value the same) shows what the other carries
alone; with the cell path alone, dL/dc_0 = (dL/dc_T) * f_1 * ... * f_T exactly.

A gate's own gradient goes through its slope: df/da = f (1 - f). Open a gate with a large bias and it
sits near 1, where the slope is near 0: the gate passes the gradient through, and receives almost
none itself. The GRU (``nn.GRUCell``) has one gate for both jobs,

    h_t = (1 - z) * n + z * h_{t-1},

so with its update gate z saturated at 1, h_t = h_{t-1}: every step passes the gradient on unchanged
(gain 1, "stable" by the gains alone), and nothing reaches any weight, because n and r are read only
through (1 - z) = 0 and z through its slope. Giving each step its own copy of the weights (same
numbers, separate leaves) splits the weights' gradient into one part per step, C_t, which add up to the
shared weights' gradient: C_t ~ 0 at every step is a frozen cell.

Nets: hidden size 16, batch 4, 100 steps of unit inputs, L = <u, h_T> with ||u|| = 1. Biases of the
forget gate (LSTM) or update gate (GRU) are set by hand (b_ih on that gate's rows, b_hh 0).

Run: python examples/lessons/13_gated_cells.py [--quick] [--out DIR]
"""

from __future__ import annotations

import lessons_common as lc
import numpy as np

from tinygrad_rnn import Value, diagnostics, graph, nn, recurrence
from visualize import draw_graph

INPUTS, HIDDEN, BATCH = 4, 16, 4
# Gates in PyTorch's order along the first axis of the weights; the swept gate is the second block.
GATES = {"LSTM": ("input gate i", "forget gate f", "candidate g", "output gate o"),
         "GRU": ("reset gate r", "update gate z", "candidate n")}
SWEPT = {"LSTM": ("f", "forget gate"), "GRU": ("z", "update gate")}  # (node name, scope) of the swept gate
ROUTES = {"all paths (the LSTM as it is)": "all", "cell path only (gates read a detached h)": "cell",
          "hidden path only (f · c reads a detached c)": "hidden"}
FROZEN_BIAS = 20.0


def gated_cell(kind: str, bias: float, hidden: int = HIDDEN, inputs: int = INPUTS, seed: int = 1):
    """An LSTMCell or GRUCell (PyTorch's init) whose forget (LSTM) or update (GRU) gate has bias ``bias``."""
    cell = (nn.LSTMCell if kind == "LSTM" else nn.GRUCell)(inputs, hidden, rng=np.random.default_rng(seed))
    rows = slice(hidden, 2 * hidden)
    for parameter, value in ((cell.bias_ih, bias), (cell.bias_hh, 0.0)):
        data = np.array(parameter.data)
        data[rows] = value
        parameter.data = data
    return cell


def problem(steps: int, seed: int = 0):
    """(xs, u): unit inputs (T, B, I) and the read-out u (B, H) with ||u|| = 1, so ||dL/dh_T|| = 1."""
    rng = np.random.default_rng(seed)
    u = rng.normal(size=(BATCH, HIDDEN))
    return rng.normal(size=(steps, BATCH, INPUTS)), u / np.linalg.norm(u)


def unit_loss(outputs, u):
    """L = <u, h_T>, backpropagated."""
    loss = (outputs[-1] * u).sum()
    loss.backward()
    return loss


def gate_values(loss, kind: str) -> np.ndarray:
    """Every value of the swept gate (f or z) in the recorded graph, found by its name and scope."""
    name, scope = SWEPT[kind]
    return np.concatenate([np.ravel(node.data) for node in graph.walk(loss).nodes
                           if node.name == name and recurrence.inner_scope(node) == scope])


# ---- the LSTM's two paths ----------------------------------------------------------------------

def lstm_route(cell, xs, u, route: str) -> list:
    """delta_k = dL/ds_k, s_k = (h_k, c_k) as it enters step k+1, for k = 0..T, with only ``route``
    ("all", "cell", "hidden") open. A zero added to the state where it enters each step (a probe)
    changes nothing forward; its gradient is delta_k. Returns [(dL/dh_k, dL/dc_k), ...]."""
    probes = []

    def step(x, state):
        h, c = state
        probe = (Value(np.zeros_like(h.data)), Value(np.zeros_like(c.data)))
        probes.append(probe)
        h, c = h + probe[0], c + probe[1]
        shared = cell.shared_terms()  # a plain step function: the unroll does not prepare these for it
        return cell.recur(shared, cell.project(shared, x), (h.detach() if route == "cell" else h,
                                                              c.detach() if route == "hidden" else c))

    outputs, _ = nn.RNN(step)(xs, h0=cell.initial_state(BATCH))
    unit_loss(outputs, u)
    deltas = [tuple(np.zeros_like(p.data) if p.grad is None else np.array(p.grad) for p in probe) for probe in probes]
    return deltas + [(np.array(u), np.zeros_like(u))]  # delta_T: the loss reads h_T only


def norms(deltas) -> np.ndarray:
    return np.array([np.sqrt(sum(np.sum(part ** 2) for part in delta)) for delta in deltas])


# ---- the gates' own gradients, and one copy of the weights per step ------------------------------

def gate_gradients(cell, kind: str) -> dict:
    """||dL/d(the gate's rows of W_ih, W_hh, b_ih, b_hh)|| per gate."""
    hidden, result = cell.hidden_size, {}
    for k, gate in enumerate(GATES[kind]):
        rows = slice(k * hidden, (k + 1) * hidden)
        result[gate] = float(np.sqrt(sum(np.sum(np.asarray(p.grad)[rows] ** 2) for p in cell.parameters())))
    return result


def sweep(kind: str, biases, xs, u) -> dict:
    """Per bias of the swept gate: the gate's mean value and slope, ||delta_0|| / ||delta_T||, and the
    gradient each gate's weights receive."""
    rows = []
    for bias in biases:
        cell = gated_cell(kind, bias)
        outputs, states = nn.RNN(cell)(xs, return_states=True)
        loss = unit_loss(outputs, u)
        steps = diagnostics.steps(loss, states)
        gate = gate_values(loss, kind)
        rows.append({"bias": bias, "gate": float(gate.mean()), "slope": float(np.mean(gate * (1 - gate))),
                     "kept": steps[0].grad_norm / steps[-1].grad_norm, "gates": gate_gradients(cell, kind)})
    return {"biases": list(biases), "rows": rows}


def untied_run(kind: str, bias: float, xs, u) -> dict:
    """One forward and backward pass in which step t uses its own copy of the weights (same numbers):
    C_t = that copy's gradient. Also the tied cell's gradient, which the C_t must add up to."""
    cell = gated_cell(kind, bias)
    copies = []

    def step(x, state):
        copy = gated_cell(kind, bias)
        copy.load_state_dict(cell.state_dict())
        copies.append(copy)
        return copy(x, state)

    outputs, states = nn.RNN(step)(xs, h0=cell.initial_state(BATCH), return_states=True)
    loss = unit_loss(outputs, u)
    rows = diagnostics.steps(loss, states)
    tied_outputs, _ = nn.RNN(cell)(xs)
    unit_loss(tied_outputs, u)
    per_step = [{name: np.array(p.grad) for name, p in copy.named_parameters()} for copy in copies]
    hidden = np.array([nn.hidden_of(s).data for s in states])
    return {
        "gains": np.array([r.gain for r in rows[1:]]),
        "delta_norms": np.array([r.grad_norm for r in rows]),
        "contributions": per_step,
        "contribution_norms": np.array([np.sqrt(sum(np.sum(g ** 2) for g in c.values())) for c in per_step]),
        "tied": {name: np.array(p.grad) for name, p in cell.named_parameters()},
        "state_moved": float(np.abs(hidden - hidden[0]).max()),
    }


def frozen_gru_picture(out):
    """The op view of a frozen GRU: two steps, hidden size 1, one sequence, L = h_2."""
    cell = gated_cell("GRU", FROZEN_BIAS, hidden=1, inputs=1, seed=3)
    h0 = Value(np.array([0.5]), name="h_0")
    outputs, _ = nn.RNN(cell)(np.array([[0.3], [-0.8]]), h0=h0)
    loss = outputs[-1].sum()
    loss.backward()
    z = gate_values(loss, "GRU")
    title = (f"A frozen GRU (update-gate bias {FROZEN_BIAS:g}, z ≥ 1 − {1 - z.min():.0e}): dL/dh_0 = "
             f"{h0.grad[0]:.8f} along z · h, σ′ into z ≤ {np.max(z * (1 - z)):.0e}, "
             f"‖dL/dW_hh‖ = {np.linalg.norm(cell.weight_hh.grad):.1e}")
    return lc.save_graph(draw_graph(loss, title=title), out, "13_gated_cells_frozen_gru_op_view"), h0, cell


# ---- the lesson ------------------------------------------------------------------------------------

def main(quick: bool = False, out=lc.DEFAULT_OUT) -> dict:
    timer = lc.Timer()
    steps = 20 if quick else 100
    biases = [0, 2, 4, 10, 20] if quick else [0, 1, 2, 3, 4, 6, 8, 10, 15, 20]
    xs, u = problem(steps)

    route_biases = (0.0, 2.0)
    routes = {bias: {label: lstm_route(gated_cell("LSTM", bias), xs, u, route) for label, route in ROUTES.items()}
              for bias in route_biases}
    sweeps = {kind: sweep(kind, biases, xs, u) for kind in GATES}
    forget_means = {row["bias"]: row["gate"] for row in sweeps["LSTM"]["rows"] if row["bias"] in route_biases}
    frozen = {"GRU, update-gate bias 0": untied_run("GRU", 0.0, xs, u),
              f"GRU, update-gate bias {FROZEN_BIAS:g} (z ≈ 1: frozen)": untied_run("GRU", FROZEN_BIAS, xs, u),
              f"LSTM, forget-gate bias {FROZEN_BIAS:g} (f ≈ 1)": untied_run("LSTM", FROZEN_BIAS, xs, u)}

    paths = _plot_routes(routes, forget_means, steps, out) + _plot_sweeps(sweeps, steps, out)
    paths += _plot_frozen(frozen, steps, out)
    op_view_paths, small_h0, small_cell = frozen_gru_picture(out)
    paths += op_view_paths

    _say_routes(routes, forget_means, steps)
    _say_sweeps(sweeps)
    _say_frozen(frozen, steps)
    lc.wrote(paths)
    print(f"({timer})")
    return {"steps": steps, "xs": xs, "u": u, "routes": routes, "forget_means": forget_means, "sweeps": sweeps,
            "frozen": frozen, "op_view": {"dL/dh_0": float(small_h0.grad[0]),
                                          "weight_hh_grad": float(np.linalg.norm(small_cell.weight_hh.grad))},
            "paths": paths}


def _say_routes(routes, forget_means, steps) -> None:
    lines = []
    for bias, by_route in routes.items():
        whole, cell, hidden = (norms(d) for d in by_route.values())
        lines.append(f"LSTM, forget-gate bias {bias:g} (mean f = {forget_means[bias]:.2f}): "
                     f"||delta_0|| / ||delta_{steps}|| is {whole[0]:.2g} with all paths, {cell[0]:.2g} on the cell "
                     f"path alone, {hidden[0]:.2g} on the hidden path alone ({hidden[-11]:.2g} ten steps back).")
    print("\n".join(lines) + "\n")
    (low, by_low), (high, by_high) = routes.items()
    whole_low, cell_low, _ = (norms(d)[0] for d in by_low.values())
    whole_high, cell_high, _ = (norms(d)[0] for d in by_high.values())
    lc.say(
        "The hidden path alone is a plain RNN inside the LSTM: every step multiplies by a gate's slope "
        "and by W_hh, and ten steps back almost nothing is left. The cell path alone multiplies by the "
        "forget gates only, dL/dc_0 = dL/dc_T * f_1 * ... * f_T, no matrix and no squashing: cut it and "
        f"nothing survives. With both paths open more arrives than on the cell path alone ({whole_low:.2g} "
        f"against {cell_low:.2g} at bias {low:g}, {whole_high:.2g} against {cell_high:.2g} at bias {high:g}): "
        "the gradient rides the cell path and steps off through h into the gates of a later step here and "
        "there, and what those detours add compounds over the steps.",
    )


def _say_sweeps(sweeps) -> None:
    lstm, gru = sweeps["LSTM"]["rows"], sweeps["GRU"]["rows"]
    first, last = lstm[0], lstm[-1]
    forget = last["gates"]["forget gate f"] / first["gates"]["forget gate f"]
    others = [last["gates"][g] / first["gates"][g] for g in GATES["LSTM"] if g != "forget gate f"]
    gru_ratios = [gru[-1]["gates"][g] / gru[0]["gates"][g] for g in GATES["GRU"]]
    lc.say(
        f"Raising the forget-gate bias from {first['bias']:g} to {last['bias']:g} moves the mean f from "
        f"{first['gate']:.2f} to {last['gate']:.6f} and its slope f(1 - f) from {first['slope']:.2g} to "
        f"{last['slope']:.2g}. The forget gate's own weights then get {forget:.2g} times the gradient they "
        f"got at bias {first['bias']:g}; the other three gates get {min(others):.2g} to {max(others):.2g} "
        f"times theirs. ||delta_0|| / ||delta_T|| goes from {first['kept']:.2g} to {last['kept']:.2g}.",
        f"In the GRU, raising the update-gate bias to {gru[-1]['bias']:g} (mean z = {gru[-1]['gate']:.6f}) leaves "
        f"every gate {min(gru_ratios):.2g} to {max(gru_ratios):.2g} times its gradient at bias {gru[0]['bias']:g}, "
        f"while ||delta_0|| / ||delta_T|| goes from {gru[0]['kept']:.2g} to {gru[-1]['kept']:.6f}: r and n "
        "reach the state only through (1 - z), z only through its slope z(1 - z). A saturated gate "
        "passes the gradient on and stops learning itself.",
    )


def _say_frozen(frozen, steps) -> None:
    (_, healthy), (_, stuck), (_, lstm) = frozen.items()
    error = max(max(np.max(np.abs(sum(c[name] for c in r["contributions"]) - r["tied"][name])) for name in r["tied"])
                for r in frozen.values())
    lc.say(
        f"GRU, update-gate bias {FROZEN_BIAS:g}: every gain is within {np.max(np.abs(stuck['gains'] - 1)):.1g} of "
        f"1 and ||delta_0|| / ||delta_{steps}|| = {stuck['delta_norms'][0] / stuck['delta_norms'][-1]:.6f}: judged "
        f"by its gains alone it is stable. Yet no step gives the weights more than "
        f"{stuck['contribution_norms'].max():.1g} (||C_t||, over all of them), and the state barely moves "
        f"(max |h_t - h_0| = {stuck['state_moved']:.1g}). With bias 0 the same GRU's steps give up to "
        f"{healthy['contribution_norms'].max():.2g}, but its gradient fades to "
        f"{healthy['delta_norms'][0] / healthy['delta_norms'][-1]:.2g} over the {steps} steps.",
        f"The LSTM with forget-gate bias {FROZEN_BIAS:g} keeps f near 1 too, and still its first step gives the "
        f"weights {lstm['contribution_norms'][0]:.2g}: its input gate writes into c whatever f does. The GRU's "
        "single gate z decides both how much to keep (z) and how much to write (1 - z); at z = 1 it writes "
        f"nothing. (The C_t add up to the shared weights' gradient to within {error:.0e}.)",
    )


# ---- pictures ----------------------------------------------------------------------------------------

ROUTE_COLOURS = ("black", "tab:blue", "tab:orange")
GATE_COLOURS = {"input gate i": "tab:green", "forget gate f": "tab:blue", "candidate g": "tab:purple",
                "output gate o": "tab:brown", "reset gate r": "tab:green", "update gate z": "tab:blue",
                "candidate n": "tab:purple"}
FLOOR = 1e-40  # log axes start here; a gradient of exactly 0 is drawn at the floor


def _plot_routes(routes, forget_means, steps, out) -> list:
    with lc.plot_style():
        fig = lc.figure(figsize=(10, 4))
        for axes, (bias, by_route) in zip(fig.subplots(1, len(routes), sharey=True), routes.items()):
            for colour, (label, deltas) in zip(ROUTE_COLOURS, by_route.items()):
                axes.semilogy(np.arange(steps + 1), norms(deltas), color=colour, lw=1.6, label=label)
            axes.set_ylim(FLOOR, 10)  # the hidden path alone falls below the axis (its value at s_0 is printed)
            axes.set_title(f"LSTM, forget-gate bias {bias:g} (mean f = {forget_means[bias]:.2f})")
            axes.set_xlabel(f"state s_k (the loss reads h_{steps} only)")
        fig.axes[0].set_ylabel("‖δ_k‖ = ‖dL/d(h_k, c_k)‖ (log)")
        fig.axes[0].legend(loc="lower right", fontsize=7)
        fig.suptitle("What each path carries back: the cell path c → f · c alone, the hidden path through the "
                     f"gates alone, and both (axis cut at {FLOOR:g})")
        return lc.save_figure(fig, out, "13_gated_cells_paths")


def _plot_sweeps(sweeps, steps, out) -> list:
    with lc.plot_style():
        fig = lc.figure(figsize=(11, 4.4))
        for axes, (kind, result) in zip(fig.subplots(1, 2, sharey=True), sweeps.items()):
            biases, rows = result["biases"], result["rows"]
            for gate, marker in zip(GATES[kind], "o^sv"):
                axes.semilogy(biases, [r["gates"][gate] for r in rows], marker + "-", ms=4, color=GATE_COLOURS[gate],
                              label=f"‖dL/dθ‖ of the {gate}'s weights")
            name = SWEPT[kind][0]
            axes.semilogy(biases, [r["slope"] for r in rows], ":", color="grey", lw=1.5,
                          label=f"the {SWEPT[kind][1]}'s own slope, mean {name}(1 − {name})")
            axes.semilogy(biases, [r["kept"] for r in rows], "--", color="black", lw=1.5,
                          label=f"‖δ_0‖ / ‖δ_{steps}‖: what reaches s_0")
            ticks = [b for b in biases if b in (0, 4, 10, 20)]
            axes.set_xticks(ticks, [f"{b:g}\nmean {name} {r['gate']:.2f}" for b in ticks
                                    for r in rows if r["bias"] == b])
            axes.set_xlabel(f"bias of the {SWEPT[kind][1]} (below it: the gate's mean value)")
            axes.set_title(f"{kind}: raising the {SWEPT[kind][1]}'s bias")
            axes.legend(fontsize=7, loc="lower right")
        fig.axes[0].set_ylabel(f"per unit of gradient at h_{steps} (log)")
        fig.suptitle("Saturating a gate: the gradient it passes on, and the gradient each gate's own weights receive")
        return lc.save_figure(fig, out, "13_gated_cells_gates")


def _plot_frozen(frozen, steps, out) -> list:
    colours = ("tab:green", "tab:red", "tab:blue")
    with lc.plot_style():
        fig = lc.figure(figsize=(12, 3.9))
        gains_axes, delta_axes, share_axes = fig.subplots(1, 3)
        t = np.arange(1, steps + 1)
        for colour, (label, run) in zip(colours, frozen.items()):
            gains_axes.plot(t, run["gains"], color=colour, lw=1.3, label=label)
            delta_axes.semilogy(np.arange(steps + 1), run["delta_norms"], color=colour, lw=1.3, label=label)
            share_axes.semilogy(t, np.maximum(run["contribution_norms"], FLOOR), color=colour, lw=1.3, label=label)
        gains_axes.axhline(1.0, color="grey", lw=0.8)
        gains_axes.set_title("gain of step t, ‖J_tᵀδ_t‖ / ‖δ_t‖")
        gains_axes.set_xlabel("time step t")
        delta_axes.set_title(f"‖δ_t‖, the gradient reaching s_t (‖δ_{steps}‖ = 1)")
        delta_axes.set_xlabel("state s_t")
        share_axes.set_title("‖C_t‖: what step t gives the weights\n(its own copy's gradient, all parameters)")
        share_axes.set_xlabel("time step t")
        gains_axes.legend(fontsize=7, loc="lower right")
        stuck = list(frozen.values())[1]
        fig.suptitle(f"A frozen GRU (red): gains of 1 and a gradient that arrives whole, yet no step gives the "
                     f"weights more than {stuck['contribution_norms'].max():.0e}")
        return lc.save_figure(fig, out, "13_gated_cells_frozen")


if __name__ == "__main__":
    main(**lc.command_line(__doc__))
