"""What the op view writes on its nodes: data summaries, gradients, op symbols, names, notes.

Everything returned here is plain text; the caller escapes it for the label it lands in.

Also ``measure``, which asks an edge for a number without letting one singular edge (log at 0)
stop the whole picture.
"""

from __future__ import annotations

import numpy as np

from tinygrad_rnn import recurrence
from tinygrad_rnn.ops import shape_label
from tinygrad_rnn.value import Value
from visualize import style

__all__ = ["summary", "grad_line", "shape_text", "measure", "formula", "display_name", "state_names", "clip_note",
           "is_truncated", "op_symbol", "op_legend"]

def summary(data, digits: int) -> str:
    """A short line about a value's data: the number itself, or its shape and range."""
    array = np.asarray(data)
    if array.size == 1:
        return style.number(array.reshape(()).item(), digits)
    if array.size <= 2:  # wider vectors: their range (the full data is in the tooltip)
        return "[" + ", ".join(style.number(v, 2) for v in array.ravel()) + "]"
    if array.size == 0:
        return "empty"
    return f"{style.number(array.min(), 2)} … {style.number(array.max(), 2)}"


def grad_line(grad, digits: int) -> str:
    g = np.asarray(grad.data if isinstance(grad, Value) else grad)
    if g.size == 1:
        return "grad " + style.number(g.reshape(()).item(), digits)
    return "‖grad‖ " + style.number(float(np.linalg.norm(g.ravel())), digits)


shape_text = shape_label  # a shape as every label writes it (the ops' own way)


def measure(method) -> float | None:
    """Call an Edge method (derivative, jacobian_norm, observed_gain) with numpy's warnings off;
    an undefined number (log at 0 divides a Python float by zero) comes back as nan, not an error,
    so one singular edge cannot stop the whole picture."""
    with np.errstate(all="ignore"):
        try:
            return method()
        except (ZeroDivisionError, OverflowError, FloatingPointError):
            return float("nan")


def _param_text(value) -> str:
    """An op parameter for a tooltip: arrays summarised by shape, never printed whole."""
    if isinstance(value, np.ndarray):
        return f"⟨{shape_text(value.shape) or 'scalar'} array⟩"
    if isinstance(value, float):
        return style.number(value, 4)
    return value if isinstance(value, str) else repr(value)


def op_symbol(op) -> str:
    """How an op is written on its node (plain text): the op's own label."""
    return op.label()


def formula(op) -> str:
    """The op and its parameters, then its forward and derivative from the first line of its
    docstring (``tanh: y = ...``): the tooltip of an op node."""
    params = op.params()
    head = op.name + (f"({', '.join(f'{k}={_param_text(v)}' for k, v in params.items())})" if params else "")
    lines = (type(op).__doc__ or "").strip().splitlines()
    return f"{head} · {lines[0]}" if lines else head


def display_name(node) -> str | None:
    """A node's name, or for an unnamed transpose or sum of named nodes a name made from theirs
    (``weight_hhᵀ``, ``bias_ih + bias_hh``), so the terms an RNN precomputes read as what they are."""
    if node.name:
        return str(node.name)
    if node.op is None:
        return None
    names = [p.name for p in node.parents]
    if node.op.name == "transpose" and names[0]:
        return f"{names[0]}ᵀ"
    if node.op.name in ("add", "sub") and all(names):
        return f" {node.op.label()} ".join(str(n) for n in names)
    return None


def state_names(edges, step_of: dict) -> dict:
    """Names for the states each time step hands on, as the textbook writes them (``step_of``: a
    node's TimeStep): a value a cell named "h" or "c" in step t is h_t or c_t; an unnamed value that is
    the only thing step t passes out of itself (an RNNCell's tanh) is h_t."""
    names, exits = {}, {}
    for node, step in step_of.items():
        if step is not None and node.name in ("h", "c"):
            names[node] = f"{node.name}_{step.t}"
    for edge in edges:
        step = step_of.get(edge.parent)
        if step is not None and step_of.get(edge.child) != step:
            exits.setdefault(step, {})[edge.parent] = None
    for step, nodes in exits.items():
        (node, *others) = nodes
        if not others and not node.name and node.op is not None:
            names[node] = f"h_{step.t}"
    return names


def clip_note(node) -> recurrence.ClipRecord | None:
    """The record of a clipping hook on ``node``, when it fired."""
    record = recurrence.clip_record(node)
    return record if record is not None and record.fired else None


def is_truncated(node) -> bool:
    """Whether ``node`` is a state detached on purpose (truncated BPTT)."""
    return recurrence.is_cut(node)


def _time_steps(count: int) -> str:
    """"1 time step", "3 time steps"."""
    return f"{count} time step{'' if count == 1 else 's'}"


def _steps_in_words(steps) -> str:
    """"3 time steps" for one recurrence (at one, "1 time step"); "4 recurrences of 3 time steps each" (or
    "... of 2 to 5 time steps") when the steps carry several scope prefixes ("chain 1/t=1", "chain 2/t=1", ...)."""
    per_prefix: dict = {}
    for step in steps:
        per_prefix[step.prefix] = per_prefix.get(step.prefix, 0) + 1
    if len(per_prefix) <= 1:
        return f"{_time_steps(len(steps))}, left to right"
    counts = sorted(per_prefix.values())
    each = f"{_time_steps(counts[0])} each" if counts[0] == counts[-1] else f"{counts[0]} to {counts[-1]} time steps"
    return f"{len(per_prefix)} recurrences of {each}, left to right"


def op_legend(title: str | None, kinds: set, steps, extra_notes=()) -> str:
    """The op view's legend: a colour row and one line for each kind of mark the picture holds
    (``kinds``: "scalar", "tensor", "gain", "unmeasured", "no gradient", "nan", "parameter", "shared",
    "clip", "gates", "ghost"); ``steps``: the time steps drawn (``TimeStep``s).

    Only a factor sets an edge's colour and width: a scalar edge's derivative, a tensor edge's observed
    gain. A tensor edge with no gain (before backward: its ‖J‖ is only a bound) or no gradient, or a
    number that is nan, is drawn off the scale, in a colour of its own named here."""
    rows, notes = [], []
    if kinds & {"scalar", "gain"}:
        rows.append(style.legend_row("edge colour and width:<BR/>how much the edge scales a gradient", 2.0))
    if "scalar" in kinds:
        notes.append("edge label (numbers): ∂child/∂parent, the local derivative backward multiplies by (sets the "
                     "colour)")
    if "tensor" in kinds:
        notes.append("edge label (tensors): ‖J‖ = spectral norm of the local Jacobian, the most it can stretch "
                     "a gradient (a bound, never the colour);")
    if "gain" in kinds:
        notes.append("gain = ‖gradient to parent‖ / ‖gradient of child‖ after backward, what it did (sets the "
                     "colour)")
    if "unmeasured" in kinds:
        notes.append("thin black edge, ‖J‖ alone: no gain is known (no backward pass has given the child a "
                     "gradient), so the edge is off the colour scale")
    if "no gradient" in kinds:
        notes.append("thin light grey edge, gain – (no gradient): backward ran, but the child's gradient is "
                     "exactly 0, so nothing flowed along the edge")
    if "nan" in kinds:
        notes.append("thin dotted black edge: its number is nan (undefined), off the colour scale")
    keys = []
    if "parameter" in kinds:
        keys.append("yellow: a leaf that needs a gradient (a parameter, or an input differentiated)")
    if "shared" in kinds:
        keys.append("double border: one parameter shared by several time steps, drawn once; dashed yellow: its "
                    "use in one time step, with that time step's share of the gradient")
    keys.append("dashed: constant (no gradient)")
    if "clip" in kinds:
        keys.append("✂ red border: gradient clipped there")
    if "gates" in kinds:
        keys.append("green small caption: the gate (a scope the cell names) a value belongs to")
    if "ghost" in kinds:
        keys.append("dashed ↩: a value from an earlier row (or the shared box), repeated where it is used")
    if steps:
        keys.append(_steps_in_words(steps))
    line = ""
    for key in keys:  # short lines: the legend must not be what makes a picture wide
        if line and len(line) + len(key) > 120:
            notes.append(line)
            line = ""
        line = f"{line} · {key}" if line else key
    notes.append(line)
    notes.extend(style.text(note, 200) for note in extra_notes)
    return style.legend(title, rows, notes)
