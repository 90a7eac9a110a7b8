"""RNN: unroll any cell over a sequence. Backpropagation through time is not written anywhere: the
unrolled steps are one graph, and ``loss.backward()`` walks it from the last step to the first.

Each step runs inside ``scope(step_scope(t))`` ("t=3", t = 1..T), so every Value a step makes, whatever
the cell, carries its time step: pictures cluster by it (``tinygrad_rnn.recurrence.time_step``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from tinygrad_rnn.autograd import STATE, scope
from tinygrad_rnn.hoist import Hoist
from tinygrad_rnn.nn.cells import RNNCellBase, hidden_of
from tinygrad_rnn.nn.module import Module
from tinygrad_rnn.ops import shape_of
from tinygrad_rnn.recurrence import mark_cut, step_scope
from tinygrad_rnn.value import Value

__all__ = ["RNN", "detach_state"]


def detach_state(state):
    """The same state cut from the graph (a Value or a tuple of them), each piece marked as a cut
    (``tinygrad_rnn.recurrence.mark_cut``) so pictures and diagnostics show where no gradient crosses."""
    if isinstance(state, (tuple, list)):
        return type(state)(detach_state(s) for s in state)
    return mark_cut(state.detach() if isinstance(state, Value) else Value(state, requires_grad=False))


def _cell_name(cell) -> str:
    return type(cell).__name__ if isinstance(cell, Module) else getattr(cell, "__name__", type(cell).__name__)


def _located(error: Exception, where: str) -> Exception:
    """``error`` of the same type, its message prefixed with where it happened ("LSTMCell at time step
    3: matmul: shapes ..."), keeping the traceback down to the line that failed; the error itself where
    its type takes no message alone."""
    try:
        located = type(error)(f"{where}: {error}")
    except Exception:
        return error
    return located.with_traceback(error.__traceback__)


class RNN(Module):
    """``outputs, state = rnn(inputs, h0=None)``: apply ``cell`` at t = 1..T,
    state_t = cell(x_t, state_{t-1}), and return the hidden outputs [h_1, ..., h_T] and state_T.

    ``outputs, states = rnn(inputs, return_states=True)`` returns every state instead of the last,
    ``[s_0, s_1, ..., s_T]``: s_0 the initial state (``h0``, or the zeros the cell made), s_t the state
    step t made (a tuple ``(h, c)`` for an LSTM), as ``tinygrad_rnn.diagnostics.steps`` and the step
    view read them. With ``truncate``, s_t is the state before it was detached.

    ``inputs``: a (T, B, I) array or Value (or (T, I) unbatched), or a list of T per-step inputs.
    ``h0``: the initial state; None asks ``cell.initial_state(B)`` for zeros.
    ``truncate=k``: truncated BPTT; after every k-th step the state is detached (``detach_state``,
    marked as a cut), so a loss at step t reaches back only to the start of its window.
    ``hidden_hook=fn``: ``h_t.register_hook(fn)`` on every hidden output, e.g. a per-step clip.
    ``cell``: any Module or plain callable ``(x_t, state) -> state`` made of Values.

    For the built-in cells the terms that are the same at every step (transposed weights, summed
    biases) are made once before step 1, outside the step scopes, and so is the input's projection
    x_t W_ih^T + b for all steps at once; step t reads its row (see ``RNNCellBase.shared_terms``).
    Any other cell gets the same by three rules (``tinygrad_rnn.hoist``): an op on parameters alone
    runs once, a row-wise op on x_t and parameters runs once for all steps, and a parameter added to
    a step's sum of x- and h-parts joins the x-part; ``hoist=False`` turns them off, so every step
    computes its whole equation.
    """

    def __init__(self, cell: Callable, truncate: int | None = None, hidden_hook: Callable | None = None,
                 hoist: bool = True):
        if not callable(cell):
            raise TypeError(f"RNN: cell must be a Module or a callable (x_t, state) -> state, not {cell!r}")
        if truncate is not None and (not isinstance(truncate, (int, np.integer)) or truncate < 1):
            raise ValueError(f"RNN: truncate must be a positive number of steps or None, got {truncate!r}")
        if not isinstance(hoist, bool):
            raise TypeError(f"RNN: hoist must be True or False, got {hoist!r}")
        self.cell, self.truncate, self.hidden_hook, self.hoist = cell, truncate, hidden_hook, hoist

    def forward(self, inputs, h0=None, return_states: bool = False) -> tuple[list, object]:
        if isinstance(inputs, (list, tuple)):
            steps, length = list(inputs), len(inputs)
        else:
            if not isinstance(inputs, Value):
                inputs = np.asarray(inputs)
            if len(shape_of(inputs)) < 1:
                raise ValueError(f"RNN: inputs must be (T, B, I), (T, I) or a list of steps, not {shape_of(inputs)}")
            steps, length = inputs, shape_of(inputs)[0]
        if length == 0:
            raise ValueError("RNN: the sequence is empty (T = 0)")
        # Only the first step's shape is needed: read it from the data, recording nothing.
        first = steps[0] if isinstance(steps, list) else steps.data[0] if isinstance(steps, Value) else steps[0]
        state = self._initial_state(first) if h0 is None else h0
        step, steps = self._step_function(steps, first, state)
        hoist = Hoist(None if isinstance(steps, list) else steps) if step is self.cell and self.hoist else None
        outputs, states = [], [state]
        for t in range(1, length + 1):
            with scope(step_scope(t)):
                x = steps[t - 1]
                try:
                    if hoist is None:
                        state = step(x, state)
                    else:
                        hoist.step(t - 1, x)
                        previous, STATE.hoist = STATE.hoist, hoist
                        try:
                            state = step(x, state)
                        finally:
                            STATE.hoist = previous
                except (ValueError, IndexError, TypeError) as error:
                    raise _located(error, f"{_cell_name(self.cell)} at time step {t}") from None
                hidden = hidden_of(state)
                if self.hidden_hook is not None:
                    hidden.register_hook(self.hidden_hook)
                outputs.append(hidden)
                states.append(state)
                if self.truncate and t % self.truncate == 0 and t < length:
                    state = detach_state(state)
        return (outputs, states) if return_states else (outputs, state)

    def _step_function(self, steps, first, state) -> tuple[Callable, object]:
        """(step, what it reads at each step). A built-in cell that has not replaced ``forward``
        gets its per-sequence terms (transposed weights) made once, before step 1; given the whole
        sequence as one array (and keeping the base class's ``step``), it also projects every
        step's input at once, x W_ih^T + b as one (T B, I) matmul, and step t reads row t of that.
        Any other cell is called as it is."""
        cell = self.cell
        if not (isinstance(cell, RNNCellBase) and type(cell).forward is RNNCellBase.forward):
            return cell, steps
        shared = cell.shared_terms()
        if isinstance(steps, list) or type(cell).step is not RNNCellBase.step:  # a cell with its own step
            return (lambda x, state: cell.step(shared, x, state)), steps
        cell._check(first, hidden_of(state))
        return (lambda projected, state: cell.recur(shared, projected, state)), cell.project(shared, steps)

    def _initial_state(self, first_step):
        initial_state = getattr(self.cell, "initial_state", None)
        if initial_state is None:
            raise TypeError(
                f"RNN: the cell {getattr(self.cell, '__name__', type(self.cell).__name__)} has no "
                "initial_state(batch_size); pass the initial state yourself: rnn(inputs, h0=...)"
            )
        shape = shape_of(first_step)
        # (B, I) is a batch; (I,) is one unbatched sequence; integer indices (B,) are a batch too.
        is_indices = np.asarray(first_step.data if isinstance(first_step, Value) else first_step).dtype.kind in "iu"
        batched = len(shape) > 1 or (is_indices and len(shape) == 1)
        return initial_state(shape[0] if batched else None)

    def extra_repr(self) -> str:
        parts = [] if isinstance(self.cell, Module) else [f"cell={getattr(self.cell, '__name__', self.cell)!r}"]
        if self.truncate:
            parts.append(f"truncate={self.truncate}")
        if self.hidden_hook is not None:
            parts.append(f"hidden_hook={getattr(self.hidden_hook, '__name__', self.hidden_hook)!r}")
        if not self.hoist:
            parts.append("hoist=False")
        return ", ".join(parts)
