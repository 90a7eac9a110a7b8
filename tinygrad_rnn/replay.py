"""replay: record the ops of one call, then replay forward and backward along that list.

A training step does the same ops on arrays of the same shapes at every iteration. Eager mode builds
the graph anew each time: a Value per op, the graph put in order, a dictionary of pending gradients.
``replay(fn)`` builds it once. The first call runs ``fn`` eagerly and keeps the primitive ops it ran,
in order, each with the numbered slots of its inputs and output: the *tape*, or Wengert list, of
reverse-mode autodiff (Wengert 1964; Griewank and Walther, *Evaluating Derivatives*, ch. 3). Later
calls run that list compiled into one Python function (tinygrad_rnn/compile.py), down it calling each
op's ``forward``, then back up it calling each op's ``vjp``: the same two methods eager mode uses, so
there is no second copy of any derivative; ``step.source`` is that function, BPTT written out.
docs/replay.md says what is recorded, what is replayed, and the limits.
"""

from __future__ import annotations

import collections
import threading
import warnings
from collections.abc import Callable

import numpy as np

from tinygrad_rnn import autograd
from tinygrad_rnn.autograd import STATE
from tinygrad_rnn.compile import FAILED, compile_tape, explain_failure
from tinygrad_rnn.guards import (
    OBSERVED,
    FromArgument,
    Outside,
    Recorder,
    bindings,
    handed_back,
    markers,
    refuse_derived,
    returned,
    values_read,
)
from tinygrad_rnn.levels import compile_levels
from tinygrad_rnn.ops import Elementwise
from tinygrad_rnn.value import Value, _as_data, as_value

__all__ = ["replay", "Replay", "Tape", "COMPILE_LIMIT"]

COMPILE_LIMIT = 20_000  # ops: a longer tape compiles by level when it is scalar, else runs eagerly (Tape.__init__)


def replay(fn: Callable) -> Replay:
    """``step = replay(fn)``: ``step(*arrays)`` computes ``fn(*arrays)``, a loss, and backpropagates
    it, the first time eagerly while recording the ops, later by replaying the recording.

    ``fn(*arrays)`` must return a Value holding a single number. ``step(*arrays)`` accumulates into
    every leaf's ``.grad`` what ``fn(*arrays).backward()`` would (the same floats, but where the
    memory plan makes a transposed weight contiguous or a long scalar graph runs by level: there to
    rounding) and returns the loss as a Python float. Hooks on the recorded nodes and on the
    leaves run as in eager mode.

    - **More than the loss.** ``fn`` may return ``loss, states`` or ``{"loss": loss, "h": h}``: a
      tuple or list whose first entry, or a dict whose ``"loss"`` entry, is the loss, the others
      Values (or tuples, lists and dicts of them). ``step`` returns the same structure, the loss a
      float and each other Value's data as a numpy array (a float for one number), a copy the caller
      keeps. An entry that is not a Value (a number, a string) is refused: a replay does not run
      ``fn``, and would return the first call's. ``step.eager(*arrays)`` runs ``fn`` eagerly instead
      and returns what it returned, the graph kept (for a picture of that step).

    - **Arguments.** Float arrays reach ``fn`` as constant Values (no gradient), so that everything
      computed from them is recorded; integer and boolean arrays (indices, targets, masks) reach it
      unchanged, and an op holding one as its parameter (``cross_entropy``'s pick of the targets,
      ``Embedding``'s rows) gets the new array on replay.
    - **Leaves** (parameters, and Values made before the call) are read afresh at every call: an
      optimiser's update is seen.
    - **Shapes.** The recordings are kept per shapes and dtypes of the arguments: arrays of other
      shapes or dtypes make a new recording (``step.tapes`` holds them); so does a leaf whose shape,
      dtype or ``requires_grad`` changed.
    - **Guards.** Python reading a Value's data (``bool``, ``item``, ``numpy``, ``.data``, comparisons
      such as ``x > 0``) and what ``fn`` reads from outside its arguments (its closure, the globals it
      names, its defaults, and the Modules, the user's objects and functions found there) are
      checked at every call: where they differ from the recording's, the call records anew, giving
      eager mode's answer (``step.recordings`` counts the recordings; recording at every call warns).
      ``backward`` inside ``fn`` is refused. Threads take turns; at most MAX_TAPES recordings are kept.
    - **What cannot be replayed.** What the guards do not see is frozen on the recording call: an
      array derived from an argument outside the ops (``one_hot(ids)`` inside ``fn``: derive it
      outside and pass it in), what ``fn`` reaches through the library's or installed packages'
      functions and objects, checks on the arguments (``cross_entropy``'s range check of targets),
      and side effects (prints, random draws such as dropout masks).
      Keep such things out of ``fn``, or call ``fn`` eagerly. An argument that reaches no recorded op
      is an error. docs/replay.md lists the guards and their limits.
    """
    return Replay(fn)


class Tape:
    """One recording: slots 0..size-1 hold the data of every Value the loss depends on.

    ``arguments``: (slot, position) of the float arguments; ``leaves``: (slot, Value, version,
    signature), read afresh per call; ``ops``: the op instances in the order they ran (``DETACH``
    for a ``detach``). ``forward``, one row per op the loss depends on: (op, input slots, output
    slot). ``backward``, one row per node that needs a gradient, in eager backward's order: (slot,
    op or None for a leaf, input slots, the (input position, input slot) pairs that get a gradient,
    the Value whose hooks run or None, whether a LazySum may arrive). The compilers (compile.py)
    turn the rows into code: straight-line, or by level for a long scalar tape.
    """

    def __init__(self, records: list, loss: Value, arguments: list, extras: list = ()):
        self.size, slot_of, made = 0, {}, {}
        observed = [(inputs, how) for op, inputs, how in records if op is OBSERVED]
        self.registered = getattr(records, "registered", [])  # the hooks fn registered (see Recorder)
        records = [record for record in records if record[0] is not OBSERVED]

        def slot(value) -> int:
            if id(value) not in slot_of:
                slot_of[id(value)], self.size = self.size, self.size + 1
            return slot_of[id(value)]

        self.ops, recorded = [], []
        for op, inputs, output in records:
            ins = tuple(slot(v) for v in inputs)
            made[slot(output)] = len(self.ops)
            self.ops.append(DETACH if op is None else op)
            recorded.append((ins, slot_of[id(output)]))
        self.root = slot(loss)
        self.extras = [slot(extra) for extra in extras]  # the other Values fn returned, computed again each call
        # What Python read of the Values' data while fn ran (a branch, a number taken out): the replay
        # reads it again and records anew where it differs, since fn might then have done otherwise.
        self.observations = [(tuple(slot(v) for v in inputs), *how) for inputs, how in observed]
        # Keep only what the loss and those reads depend on: walk the list backwards from them.
        needed = {self.root, *self.extras, *(s for slots, *_ in self.observations for s in slots)}
        for ins, out in reversed(recorded):
            if out in needed:
                needed.update(ins)
        kept = [entry for entry, (_, out) in enumerate(recorded) if out in needed]
        self.forward = [(self.ops[e],) + recorded[e] for e in kept]
        values = {slot_of[id(v)]: v for inputs in [r[1] for r in records] + [o[0] for o in observed] for v in inputs}
        values[self.root] = loss
        values.update(zip(self.extras, extras))
        # Each slot's Value: its name and the scope it was made in, for the compiled source's reader.
        made_by = {slot_of[id(out)]: out for _, _, out in records}
        self.labels = {s: (v.scope or "", v.name or "") for s, v in {**values, **made_by}.items()}
        self._values = {**values, **made_by}  # until compiled: the recorded data and gradients are its examples
        positions = {id(a): i for i, a in enumerate(arguments) if isinstance(a, Value)}
        self.arguments, self.leaves = [], []
        for s in sorted(needed - set(made)):
            if id(values[s]) in positions:
                self.arguments.append((s, positions[id(values[s])]))
            else:
                self.leaves.append((s, values[s], values[s]._version, _signature(values[s])))
        self.bindings = bindings(self.ops, [e for e in kept if self.ops[e] is not DETACH], arguments)
        refuse_derived(self.ops, kept, arguments)
        # An op reading an integer or boolean argument (a mask) may make another shape from other
        # contents, and fn then counted or shaped what follows by the recorded one (a mean over the
        # masked entries divides by their recorded count): its output's shape is checked at every call.
        bound = {entry for entry, _, _ in self.bindings}
        self.shape_checks = [(recorded[e][1], np.shape(records[e][2].data)) for e in kept if e in bound]
        # The checks fn made on its integer arguments (cross_entropy's target range) do not run again;
        # numpy refuses an index past the end, but a negative one would silently count from it.
        self.nonnegative = [i for i, a in enumerate(arguments)
                            if not isinstance(a, Value) and a.dtype.kind == "i" and not (a < 0).any()]
        self._check_reached(arguments)
        rows, lazy = [], set()
        for node in reversed(autograd.topological_order([loss])):
            s = slot_of[id(node)]
            op = None if node.op is None else self.ops[made[s]]
            flows = tuple((k, slot_of[id(p)]) for k, p in enumerate(node.parents) if p.requires_grad)
            if op is not None and type(op).vjp_term is not type(op).vjp:
                lazy.update(p for _, p in flows)
            # A leaf is always kept, for its .grad and its hooks (read at each call).
            rows.append((s, op, () if op is None else recorded[made[s]][0], flows,
                         node if node.hooks or op is None else None))
        self.backward = [row + (row[0] in lazy,) for row in rows]
        # What a hook may read beside its node's gradient: its node's inputs and the recorded Values it
        # holds (in a closure, on a hook object); each call shows them this call's data too (compile.py).
        computed = {out for _, _, out in self.forward} | {s for s, _ in self.arguments}
        self.shown = {}
        for s, op, _, _, node, _ in self.backward:
            if node is not None and op is not None:
                held = [x for hook in node.hooks for x in values_read(hook)]
                shown = {slot_of[id(x)]: x for x in (*node.parents, *held) if slot_of.get(id(x), s) in computed - {s}}
                self.shown[s] = list(shown.items())
        self._scalar_graph = self._scalar(records)
        self.source = self._compiled = None

    def compile(self) -> None:
        """Compile the tape, once eager backward has run on the recorded graph (its gradients show
        the compiler their types and shapes). Straight-line code compiles in about 25 us an op: past
        COMPILE_LIMIT ops (a scalar graph, a long LSTM) that is seconds. A scalar graph compiles by
        level instead (a few hundred numpy calls); anything else that long is not compiled, and each
        call runs fn eagerly."""
        examples = {s: (v._data, v.grad) for s, v in self._values.items()}
        del self._values
        if len(self.forward) <= COMPILE_LIMIT:
            self.source, self._compiled = compile_tape(self, examples)
        elif self._scalar_graph and not self.extras:  # (by level, only the loss comes back)
            self.source, self._compiled = compile_levels(self)

    def _scalar(self, records: list) -> bool:
        """Whether every slot holds a Python float, every op is elementwise, and hooks sit only on
        leaves: what running by level needs."""
        return (all(type(v._data) is float for _, inputs, out in records for v in (*inputs, out))
                and all(isinstance(op, Elementwise) or op is DETACH for op, _, _ in self.forward)
                and all(node is None or op is None for _, op, _, _, node, _ in self.backward))

    def _check_reached(self, arguments: list) -> None:
        """Every argument must reach a recorded op directly, or replaying with new data would
        silently ignore it."""
        reached = {position for _, position in self.arguments}
        reached.update(a.position for _, _, template in self.bindings for a in markers(template))
        for position, argument in enumerate(arguments):
            if position not in reached:
                array = argument.data if isinstance(argument, Value) else argument
                raise ValueError(
                    f"replay: argument {position} ({np.result_type(array)} array of shape {np.shape(array)}) "
                    "reaches no recorded op that the loss depends on, so a replay with new data would ignore "
                    "it. Pass it to ops as it is (a float array is a Value inside fn; an integer array may "
                    "index or be a target); derive other arrays from it (one_hot, reshape, astype) outside fn "
                    "and pass those instead"
                )

    def __len__(self) -> int:
        return len(self.forward)

    def __str__(self) -> str:
        """The Wengert list: one line per op, ``v14 = tanh(v13)``, after the arguments and the leaves
        (a leaf needs a gradient; a constant does not)."""
        lines = [f"v{s} = argument {p}" for s, p in self.arguments]
        for s, leaf, _, _ in self.leaves:
            kind = "leaf" if leaf.requires_grad else "constant"
            what = repr(leaf.data) if type(leaf.data) is float else f"{leaf.name or ''} {leaf.data.shape}".lstrip()
            lines.append(f"v{s} = {kind} {what}")
        for op, ins, out in self.forward:
            params = ", ".join(f"{k}={v}" for k, v in op.params().items())
            lines.append(f"v{out} = {op.name}({', '.join(f'v{s}' for s in ins)})" + (f"    {params}" if params else ""))
        lines.append(f"loss = v{self.root}")
        if self.extras:
            lines.append(f"extras = {', '.join(f'v{s}' for s in self.extras)}")
        return "\n".join(lines)

    def run(self, arrays: tuple) -> tuple | None:
        """Forward and backward along the tape: (the loss, the extras' data); None when a leaf changed
        its kind or a guard failed (record again)."""
        for position in self.nonnegative:
            if arrays[position].size and arrays[position].min() < 0:
                raise ValueError(
                    f"replay: argument {position} holds negative entries ({arrays[position].min()}) where the "
                    "recorded call had none; the checks fn made on it are not run again on replay, and a "
                    "negative index would silently count from the end. Call fn itself to have them checked."
                )
        for node, hook in self.registered:  # a hook fn registered, removed by the caller since: fn registers it
            if hook not in node.hooks:  # (identity first: a hook is found at C speed)
                return None
        for i, (s, leaf, version, signature) in enumerate(self.leaves):
            if leaf._version != version or leaf.requires_grad is not signature[0]:  # assigned since
                if _signature(leaf) != signature:
                    return None
                self.leaves[i] = (s, leaf, leaf._version, signature)
        result = self._compiled(arrays)
        if result is None:
            return None
        if result is FAILED:
            explain_failure(self, arrays)
        loss, extras = result if self.extras else (result, ())
        return (loss if type(loss) is float else loss.item()), extras

class _Detach:
    """The stand-in a tape keeps for ``detach``: the same data, through which no gradient flows."""

    name = "detach"

    def forward(self, x):
        return x

    def params(self) -> dict:
        return {}


DETACH = _Detach()


class Replay:
    """The step function ``replay(fn)`` returns; ``tapes`` maps (shape, dtype) of the arguments to
    their recording (at most MAX_TAPES, the least recently used dropped with a warning);
    ``recordings`` counts the calls that ran ``fn`` eagerly and recorded it. ``eager(*arrays)`` runs
    one step eagerly, its graph kept, for a picture of it."""

    MAX_TAPES = 16
    WARN_AFTER = 5  # recordings in a row for one shape, none replayed, before a warning says why

    def __init__(self, fn: Callable):
        if not callable(fn):
            raise TypeError(f"replay: needs a function returning a loss, got {fn!r}")
        self.fn, self.tapes, self.recordings, self.anew = fn, collections.OrderedDict(), 0, 0
        # One call at a time: a replay's hooks see its nodes holding this call's data, which a second
        # thread's call would overwrite.
        self._lock = threading.Lock()

    def __call__(self, *arrays):
        if STATE.tape is not None:
            raise RuntimeError("replay: a replayed step called inside another replay's fn; its answer would be "
                               "frozen into the outer recording. Call the inner fn itself there (it is recorded "
                               "with the rest), or call the two steps one after the other")
        if not STATE.grad_enabled:
            raise RuntimeError("replay: called under no_grad; a replayed step backpropagates, where eager mode's "
                               "loss would have no graph to backpropagate. Call fn itself for the loss alone")
        arrays = tuple(_argument(a, i) for i, a in enumerate(arrays))
        key = tuple(((), "float") if type(a) is float else (a.shape, a.dtype.str) for a in arrays)
        with self._lock:
            tape = self.tapes.get(key)
            if tape is not None and tape.source is None:  # too long to compile: eager mode, as recorded
                self.tapes.move_to_end(key)
                output, loss, template, extras = self._run_eagerly(arrays)
                return handed_back(template, loss.item(), [extra.data for extra in extras], arrays)
            why = None  # (why a recording is not replayed: said if it keeps happening)
            if tape is not None and tape.outside.unchanged():
                self.tapes.move_to_end(key)
                result = tape.run(arrays)
                if result is not None:
                    self.anew = 0
                    return result[0] if tape.template is None else handed_back(tape.template, *result, arrays)
                why = "a read of a Value's data in fn (a branch, item(), .data), or a leaf's shape or dtype, changes"
            elif tape is not None:
                why = "what fn reads from outside its arguments (a closure, a global, a Module's attribute) changes"
            return self._record(key, arrays, why)

    def eager(self, *arrays):
        """``fn(*arrays)`` run eagerly and its loss backpropagated, as ``step(*arrays)`` would (the
        same gradients in every leaf's ``.grad``, to rounding), but returning what ``fn`` returned,
        its graph kept: the loss and states as Values with their gradients, for a picture of this
        step (``diagnostics.steps(loss, states)``, the step view). Nothing is recorded or replayed."""
        arrays = tuple(_argument(a, i) for i, a in enumerate(arrays))
        with self._lock:
            return self._run_eagerly(arrays)[0]

    def _run_eagerly(self, arrays: tuple) -> tuple:
        """fn called and backpropagated as eager mode does, without recording: (what fn returned,
        the loss, the template of the structure, the other Values in it)."""
        arguments = [as_value(a) if type(a) is float or a.dtype.kind == "f" else a for a in arrays]
        output = self.fn(*arguments)
        loss, template, extras = returned(output, arguments)
        _check_loss(loss)
        loss.backward()
        return output, loss, template, extras

    def _record(self, key: tuple, arrays: tuple, why: str | None = None):
        """Run fn eagerly, keep its tape, and backpropagate eagerly (the first call is eager mode). ``why``:
        why the recording kept for these shapes was not replayed (None: there was none)."""
        self.anew = self.anew + 1 if why else 0
        if self.anew == self.WARN_AFTER:
            warnings.warn(f"replay: fn was recorded anew at each of the last {self.WARN_AFTER} calls, each as slow as "
                          f"eager mode, because {why} from call to call. Pass what changes as an argument, or call "
                          "fn eagerly", RuntimeWarning, stacklevel=3)
        outside = Outside(self.fn)  # (what fn reads beside its arguments, before it runs)
        arguments = []
        for k, a in enumerate(arrays):
            if type(a) is float or a.dtype.kind == "f":
                arguments.append(as_value(a))  # a Value of its own, even for an array passed twice
            else:  # numpy marks what fn computes from it (FromArgument); an array passed twice gets a copy
                # for its second place, so the tape knows which place an op read (by its memory)
                twice = any(a is b for b in arrays[:k])
                arguments.append((a.copy() if twice else a).view(FromArgument))
        given = [np.array(a) for a in arrays]  # (fn must not write into them: checked below)
        previous, STATE.tape = STATE.tape, Recorder()
        try:
            output = self.fn(*arguments)
            records = STATE.tape
        finally:
            STATE.tape = previous
        for k, (a, before) in enumerate(zip(arguments, given)):
            if not np.array_equal(a._data if isinstance(a, Value) else a, before, equal_nan=before.dtype.kind == "f"):
                raise ValueError(f"replay: fn writes into its argument {k} ({before.dtype} array of shape "
                                 f"{before.shape}) in place, which a replay would not do again. Compute a new "
                                 "array from it instead (x * 2, not x.data *= 2; ids + 1, not ids += 1)")
        loss, template, extras = returned(output, arguments)
        _check_loss(loss)
        tape = Tape(records, loss, arguments, extras)
        tape.outside, tape.template = outside, template
        loss.backward()
        tape.compile()
        self.recordings += 1
        self.tapes[key] = tape
        self.tapes.move_to_end(key)
        if len(self.tapes) > self.MAX_TAPES:
            dropped, _ = self.tapes.popitem(last=False)
            warnings.warn(f"replay: {len(self.tapes) + 1} recordings, one per shape of the arguments; dropped the "
                          f"least recently used ({_shapes(dropped)}), which will be recorded again if it comes back",
                          RuntimeWarning, stacklevel=3)
        return handed_back(template, loss.item(), [extra.data for extra in extras], arrays)

    @property
    def source(self) -> str | None:
        """The Python the last recording was compiled into (``print(step.source)``): the forward pass,
        then backpropagation through time written out, one line per op. None before the first call."""
        return next(reversed(self.tapes.values())).source if self.tapes else None

    def __repr__(self) -> str:
        return f"replay({getattr(self.fn, '__name__', self.fn)!r}, {len(self.tapes)} tape(s))"


def _check_loss(loss) -> None:
    if not isinstance(loss, Value) or loss.size != 1:
        raise ValueError(f"replay: fn must return a Value holding a single number (the loss), or a tuple or list "
                         f"whose first entry, or a dict whose 'loss' entry, is one; got {loss!r}")
    if not loss.requires_grad:
        raise RuntimeError(f"replay: the loss {loss!r} does not depend on anything that requires a gradient")


def _shapes(key: tuple) -> str:
    """The arguments' dtypes and shapes a recording was made for, as a reader writes them."""
    named = [(dtype if dtype == "float" else np.dtype(dtype).name, shape) for shape, dtype in key]
    return ", ".join(f"{dtype} {shape}" for dtype, shape in named) or "no arguments"


def _argument(array, position: int):
    """An argument as the tape holds it: float arrays as a Value would hold them, others as given."""
    if isinstance(array, Value):
        raise TypeError(f"replay: argument {position} is a Value; pass arrays (the parameters are found by "
                        "themselves, as leaves of the recorded ops)")
    if type(array) is np.ndarray and array.ndim and array.dtype.kind in "fiub":
        return array  # (what the checks below would give it back as, found sooner: this runs at every call)
    array = np.asarray(array)
    if array.dtype.kind == "f":
        return _as_data(array, "replay")
    if array.dtype.kind not in "iub":
        raise TypeError(f"replay: argument {position} has dtype {array.dtype}; pass float, integer or boolean arrays")
    return array


def _signature(value: Value) -> tuple:
    data = value.data
    return value.requires_grad, type(data), getattr(data, "shape", ()), getattr(data, "dtype", None)
