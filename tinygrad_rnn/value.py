"""Value: a number or a numpy array that remembers how it was made.

Every op applied to a Value records a new Value whose ``op`` is the primitive and whose ``parents``
are its inputs, in order (``x * x`` has two edges to ``x``). ``backward()`` walks that record in reverse.
A Value holds no closure and no reference to its children, so a graph is freed by reference counting
the moment its last Value is dropped.
"""

from __future__ import annotations

import math
import operator
import sys
from collections.abc import Callable

import numpy as np

from tinygrad_rnn import autograd, ops
from tinygrad_rnn.autograd import CLOCK, STATE
from tinygrad_rnn.dtypes import as_data as _as_data
from tinygrad_rnn.dtypes import meeting_type, warn_if_promoted
from tinygrad_rnn.hooks import HookHandle
from tinygrad_rnn.ops import shape_of

__all__ = ["Value", "apply", "as_value", "HookHandle"]


def as_value(x) -> Value:
    """A Value as it is; raw data becomes a constant (no gradient)."""
    if isinstance(x, Value):
        return x
    return _node(x if type(x) is float else _as_data(x), None, (), False)


def _node(data, op, parents: tuple, requires_grad: bool) -> Value:
    """Make a Value without checking its data: for results of ops, whose data numpy made."""
    node = Value.__new__(Value)
    # One statement per attribute: a tuple assignment would build and unpack a tuple for every node.
    node._data = data
    node.grad = None
    node.op = op
    count = len(parents)  # the parents in two slots, not the tuple: see Value.parents
    if count == 2:
        node._first, node._second = parents
    elif count == 1:
        node._first, node._second = parents[0], None
    elif count == 0:
        node._first = node._second = None
    else:
        node._first, node._second = parents, _MANY
    node.requires_grad = requires_grad
    node.name = None
    node.scope = STATE.scope
    node.hooks = ()
    node.notes = None
    node._version = node._made = next(CLOCK) if requires_grad else 0  # constants are never checked
    return node


def apply(op: ops.Op, *inputs) -> Value:
    """Run ``op`` forward and, when gradients are on and an input needs one, record the node."""
    if STATE.hoist is not None:  # nn.RNN is unrolling a cell: work that is the same at every step, once
        node = STATE.hoist.apply(op, inputs)
        if node is not None:
            return node
    values = inputs
    for x in inputs:
        if not isinstance(x, Value):
            values = tuple([as_value(x) for x in inputs])
            break
    try:
        # One and two inputs spelled out (no list to build), and the thread's state read once: this runs per node.
        if len(values) == 2:
            first, second = values[0]._data, values[1]._data
            data = op.forward(first, second)
            # Inputs of one float type (two Python floats, arrays of one dtype), or with a Python number
            # given as such (x * 2.0: weak, in numpy as in PyTorch), need nothing; others meet in one type.
            if type(data) is not float and not (type(first) is type(second) is np.ndarray
                                                and first.dtype is second.dtype) and not (
                    (type(second) is float and values[1] is not inputs[1])
                    or (type(first) is float and values[0] is not inputs[0])):
                values, data = _promoted(op, data, values, inputs)
        elif len(values) == 1:
            data = op.forward(values[0]._data)
        else:
            data = op.forward(*[v._data for v in values])
            if type(data) is np.ndarray and any(type(v._data) is not np.ndarray or v._data.dtype is not data.dtype
                                                for v in values):
                values, data = _promoted(op, data, values, inputs)
    except (ValueError, IndexError, TypeError) as error:
        raise type(error)(_explain(op, values, error)) from None
    state = STATE
    node = None
    if state.grad_enabled:
        for v in values:
            if v.requires_grad:
                node = _node(data, op, values, True)
                break
    if node is None:
        node = _node(data, None, (), False)
    if state.tape is not None:  # tinygrad_rnn.replay is recording: every op, with or without a gradient
        state.tape.record(op, inputs, values, node)
    return node


def _promoted(op: ops.Op, data, values: tuple, inputs: tuple) -> tuple:
    """(values, data): the op's inputs met in one float type, PyTorch's (see dtypes.meeting_type), and
    the op run on them again. An input of another type is converted by a ``Cast`` node, whose gradient
    is cast back: a float32 leaf gets a float32 gradient, even from a product with a float64 one."""
    dtype, positions = meeting_type(values, inputs)
    if not positions:
        return values, data
    warn_if_promoted(op, STATE.scope, values, positions, dtype)
    cast = ops.Cast(dtype)
    values = tuple(apply(cast, v) if k in positions else v for k, v in enumerate(values))
    return values, op.forward(*[v._data for v in values])


def _explain(op: ops.Op, values: tuple, error: Exception) -> str:
    """numpy's message, prefixed with the op and the shapes it was given."""
    message = str(error)
    if message.startswith(f"{op.name}:"):
        return message
    shapes = " and ".join(str(v.shape) for v in values)
    if "broadcast" in message:
        return f"{op.name}: shapes {shapes} cannot be broadcast together"
    return f"{op.name}: {message} (input shapes {shapes})"


def _item(data) -> float:
    return float(np.asarray(data).reshape(()))


def _truth(data) -> bool:
    return bool(np.asarray(data).reshape(()))


def _observed(read: Callable, value: Value, other=None):
    """``read(value.data[, other])``: Python looking at a Value's data. While a replay records, the
    read goes on the tape, so that a replay can check it would read the same (a branch taken on a
    Value, a number taken out of one) instead of silently following the recorded outcome."""
    result = read(value._data) if other is None else read(value._data, ops.raw(other))
    if STATE.tape is not None:
        STATE.tape.observe(read, value, other, result)
    return result


def _data_itself(data):
    return data


_data_itself.__name__ = ".data"  # (how messages name this read)


def _read_while_recording(value: Value):
    """``value.data`` read (or copied, ``Value(value)``) while a replay records. Read by the user's code
    inside fn (a branch on it, a number or a new Value made from it), it is observed as ``item()`` is:
    a replay reads it again and records anew where it differs, instead of answering with what was
    computed from this call's data. The library's own reads are its ops', whose results are on the tape."""
    if sys._getframe(2).f_globals.get("__name__", "").partition(".")[0] == "tinygrad_rnn":
        return value._data
    return _observed(_data_itself, value)


_MANY = object()  # in Value._second: _first holds all the parents, more than two, as a tuple
ops.Op.record = apply  # an op called on Values records a node; the ops themselves never import Value

_ADD, _SUB, _MUL, _DIV, _NEG = ops.Add(), ops.Sub(), ops.Mul(), ops.Div(), ops.Neg()
_EXP, _LOG, _TANH, _SIGMOID, _RELU = ops.Exp(), ops.Log(), ops.Tanh(), ops.Sigmoid(), ops.Relu()
_ABS, _MATMUL, _POW = ops.Abs(), ops.MatMul(), ops.Pow()


def _function(op: ops.Op):
    """``value.tanh()`` as a method recording ``op``."""
    return lambda self: apply(op, self)


def _comparison(compare):
    """``value < other`` as a method: plain boolean data, read (and, while a replay records, observed).
    Against something that is not a number, an array or a Value, Python's default: ``==`` is identity."""

    def comparison(self, other):
        if not isinstance(other, (Value, *ops.RAW_TYPES)):
            return NotImplemented
        return _observed(compare, self, other)

    return comparison


def _operator(op: ops.Op, reflected: bool = False):
    """``value + other`` (or, reflected, ``other + value``) as a method recording ``op``."""
    if reflected:
        return lambda self, other: apply(op, other, self)
    return lambda self, other: apply(op, self, other)


class Value:
    """A scalar (Python float) or numpy array in a recorded computation.

    Attributes: ``data``; ``grad`` (same shape, after backward; None before); ``op`` (the primitive
    that made it, None for leaves and constants); ``parents`` (ordered inputs); ``requires_grad``;
    ``name``; ``scope`` (the path of ``scope(...)`` contexts it was made in); ``hooks`` (run on its
    gradient in backward); ``notes`` (a dict that hooks and diagnostics may annotate, else None).

    ``Value(array)`` keeps a copy of the array: an optimiser step on the Value leaves the caller's
    array alone. Assigning ``.data`` (``w.data = ...``, ``w.data -= lr * w.grad``) is seen by the
    engine: a backward pass through an op that used the old data raises instead of computing a
    gradient for data that is gone. (Writing into the array behind the Value's back, ``w.data[0] = 1``,
    is not seen, as PyTorch's ``.data`` is not.)
    """

    __slots__ = ("_data", "grad", "op", "_first", "_second", "requires_grad", "name", "scope", "hooks", "notes",
                 "_version", "_made", "__weakref__")
    __array_ufunc__ = None  # numpy defers to Value's reflected operators: array * Value records

    def __init__(self, data, requires_grad: bool = True, name: str | None = None):
        if isinstance(data, Value):  # (Value(h) copies h's data: read as h.data is)
            data = data._data if STATE.tape is None else _read_while_recording(data)
        self._data = _as_data(data, copy=True)
        self.grad = None
        self.op, self._first, self._second = None, None, None
        self.requires_grad = bool(requires_grad)
        self.name, self.scope, self.hooks, self.notes = name, STATE.scope, (), None
        self._version = self._made = next(CLOCK)

    @property
    def parents(self) -> tuple:
        """The inputs of the op that made this Value, in order (``x * x`` has ``x`` twice); ``()`` for
        a leaf or a constant.

        Held as two slots, ``_first`` and ``_second``, not as a tuple: a tuple per node doubled the
        objects Python's garbage collector scans while a graph grows (the collector frees nothing
        here, the graphs have no cycles). An op with more than two inputs keeps them all as a tuple
        in ``_first``.
        """
        second = self._second
        if second is None:
            first = self._first
            return () if first is None else (first,)
        return self._first if second is _MANY else (self._first, second)

    @property
    def data(self):
        if STATE.tape is not None:  # tinygrad_rnn.replay is recording: see _read_while_recording
            return _read_while_recording(self)
        return self._data

    @data.setter
    def data(self, data):
        fast = type(data) is float or (type(data) is np.ndarray and data.dtype.kind == "f")
        self._data = data if fast else _as_data(data, "Value.data")
        self._version = next(CLOCK)

    # ---- description ---------------------------------------------------------------------------

    @property
    def shape(self) -> tuple:
        return shape_of(self._data)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def dtype(self):
        return np.result_type(self.data)

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of a scalar Value")
        return self.shape[0]

    def __repr__(self) -> str:
        if self.shape:
            text = f"Value(shape={self.shape}, dtype={self.dtype}"
        else:
            text = f"Value({float(self.data):.6g}"
            if self.grad is not None and not shape_of(self.grad):
                text += f", grad={float(ops.raw(self.grad)):.6g}"
        for key in ("op", "name", "scope"):
            if getattr(self, key):
                text += f", {key}={getattr(self, key)!r}" if key != "op" else f", op={self.op.name}"
        return text + ")"

    def item(self) -> float:
        if self.size != 1:
            raise ValueError(f"item: only a one-element Value converts to a float, this one has shape {self.shape}")
        return _observed(_item, self)

    def numpy(self) -> np.ndarray:
        return _observed(np.asarray, self)

    # ---- arithmetic (numbers and arrays on either side become constants) ----------------------

    __add__, __radd__ = _operator(_ADD), _operator(_ADD, reflected=True)
    __sub__, __rsub__ = _operator(_SUB), _operator(_SUB, reflected=True)
    __mul__, __rmul__ = _operator(_MUL), _operator(_MUL, reflected=True)
    __truediv__, __rtruediv__ = _operator(_DIV), _operator(_DIV, reflected=True)
    __matmul__, __rmatmul__ = _operator(_MATMUL), _operator(_MATMUL, reflected=True)

    def __neg__(self):
        return apply(_NEG, self)

    def __pow__(self, exponent):
        if isinstance(exponent, (int, float)) and not isinstance(exponent, bool):
            return apply(ops.Pow(exponent), self)  # a constant exponent is the op's parameter: x^2
        return apply(_POW, self, exponent)

    def __rpow__(self, base):
        return apply(_POW, base, self)

    def __getitem__(self, index):
        if isinstance(index, list):
            index = np.asarray(index)
        return apply(ops.GetItem(index), self)

    # Comparisons are not differentiable: they give plain boolean data (for masks and `where`), elementwise
    # as in PyTorch, == and != too. The hash stays identity, so Values are dict keys and set members
    # (a dict looks for the very object first); but ``value in a_list`` compares with ==, as for tensors.
    __lt__, __le__ = _comparison(operator.lt), _comparison(operator.le)
    __gt__, __ge__ = _comparison(operator.gt), _comparison(operator.ge)
    __eq__, __ne__ = _comparison(operator.eq), _comparison(operator.ne)
    __hash__ = object.__hash__

    def __bool__(self) -> bool:
        if self.size != 1:
            raise ValueError(
                f"the truth value of a Value of shape {self.shape} is ambiguous; use (v > 0).any() or .all()"
            )
        return _observed(_truth, self)

    # ---- elementwise functions ----------------------------------------------------------------

    exp, log, tanh = _function(_EXP), _function(_LOG), _function(_TANH)
    sigmoid, relu, abs = _function(_SIGMOID), _function(_RELU), _function(_ABS)
    sqrt, log1p = _function(ops.Pow(0.5)), _function(ops.Log1p())  # sqrt: x^0.5 (numpy computes it by sqrt)

    def leaky_relu(self, slope: float = 0.01):
        return apply(ops.LeakyRelu(slope), self)

    def clip(self, lo=None, hi=None):
        return apply(ops.Clip(lo, hi), self)

    # ---- reductions and shapes ----------------------------------------------------------------

    def sum(self, axis=None, keepdims: bool = False):
        return apply(ops.Sum(_axis(axis), keepdims), self)

    def mean(self, axis=None, keepdims: bool = False):
        """sum / count; the mean of nothing is nan (0/0), as in numpy and PyTorch."""
        total = self.sum(axis, keepdims)  # first: it names an axis out of range
        axes = range(self.ndim) if axis is None else _axis(axis) if isinstance(axis, (tuple, list)) else (axis,)
        count = math.prod(self.shape[a] for a in axes)
        with np.errstate(invalid="ignore"):
            return total / float(count)

    def max(self, axis=None, keepdims: bool = False):
        return apply(ops.Max(_axis(axis), keepdims), self)

    def reshape(self, *shape):
        shape = tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
        return apply(ops.Reshape(shape), self)

    def transpose(self, *axes):
        axes = tuple(axes[0]) if len(axes) == 1 and isinstance(axes[0], (tuple, list)) else axes
        return apply(ops.Transpose(axes or tuple(reversed(range(self.ndim)))), self)

    @property
    def T(self):
        return self.transpose()

    # ---- gradients ----------------------------------------------------------------------------

    def detach(self) -> Value:
        """The same data (shared, as in PyTorch), cut from the graph: no gradient flows through it."""
        cut = _node(self.data, None, (), False)
        cut.name = self.name
        if STATE.tape is not None:  # tinygrad_rnn.replay is recording: the cut's data follows self's
            STATE.tape.record(None, (self,), (self,), cut)
        return cut

    def backward(self, grad=None, create_graph: bool = False) -> None:
        """Accumulate d(self)/d(node) into ``.grad`` of every node that needs one.

        ``grad`` is dL/d(self); it may be left out only when self holds a single number (it is 1).
        With ``create_graph=True`` the backward pass is recorded, so gradients can be differentiated.
        """
        if not self.requires_grad:
            raise RuntimeError(
                f"backward: {self!r} does not require a gradient (it is a constant, was detached, or was "
                "made under no_grad), so no graph leads back from it"
            )
        autograd.backpropagate([self], [_seed(self, grad, "backward", create_graph)], create_graph)

    def zero_grad(self) -> None:
        self.grad = None

    def register_hook(self, hook: Callable) -> HookHandle:
        """Run ``hook(grad)`` when the backward pass reaches this node with its fully accumulated
        gradient, before it flows to the parents (on a leaf: before it is added to ``.grad``).
        The gradient it gets is read-only (it may be shared with other nodes); a hook may return a
        replacement of the same shape and dtype instead. Several run in registration order."""
        if STATE.hoist is not None and id(self) in STATE.hoist.hoisted:
            raise RuntimeError(f"register_hook: {self!r} is computed once for every time step (hoisted: "
                               "see tinygrad_rnn.hoist); register the hook outside the cell, or use RNN(hoist=False)")
        if STATE.tape is not None:  # tinygrad_rnn.replay is recording: a replay runs the hook again
            STATE.tape.hooked(self, hook)
        if not isinstance(self.hooks, list):
            self.hooks = []  # most nodes never get a hook: they share one empty tuple
        self.hooks.append(hook)
        return HookHandle(self.hooks, hook)


def _axis(axis):
    return tuple(axis) if isinstance(axis, list) else axis


def _seed(output: Value, grad, where: str, create_graph: bool):
    """The gradient that starts a backward pass at ``output``, checked and of its dtype."""
    if grad is None:
        if output.size != 1:
            raise ValueError(
                f"{where}: output has shape {output.shape}; only a single number can start backward "
                f"without grad=. Reduce it (.sum(), .mean()) or pass grad= of shape {output.shape}"
            )
        grad = 1.0 if type(output.data) is float else np.ones_like(output.data)  # keeps float32
    elif isinstance(grad, Value):
        grad = grad if create_graph else grad.data
    else:
        grad = _as_data(grad, where, copy=True)  # the backward pass may mark it read-only: not the caller's
        like = output.data  # as PyTorch: an output's gradient has the output's type
        if not (type(grad) is type(like) and (type(grad) is float or grad.dtype == like.dtype)):
            dtype = np.result_type(like)
            if np.result_type(grad) != dtype:
                grad = float(grad) if type(like) is float else np.asarray(grad, dtype)
    if shape_of(grad) != output.shape:
        raise ValueError(f"{where}: grad has shape {shape_of(grad)} but the output has shape {output.shape}")
    if create_graph and not isinstance(grad, Value):
        grad = Value(grad, requires_grad=False)
    return grad
