"""Primitive ops: each class holds its forward and its local derivative side by side.

base.py holds the Op class and shared helpers; elementwise.py, reduce.py and movement.py the ops.

An op instance carries only its parameters (an axis, a slope, an index), never data, so a recorded
graph holds no closures and no cycles. The data lives on the Values; an op is handed it when asked:

- ``forward(*inputs)`` computes the output from the inputs' data.
- ``local(out, *inputs)`` gives, per input, the local derivative in its natural compact form: for an
  elementwise op, the diagonal of the Jacobian d(out)/d(input) (an array of the output's shape, or a
  number that stands for a constant diagonal); for matmul, the other operand.
- ``vjp(k, grad, out, *inputs)`` turns the output's gradient into input k's contribution. The default,
  right for every elementwise op, is ``unbroadcast(grad * local_k, shape of input k)``; the others
  (matmul, reductions, shape ops) override it.
- ``jacobian_norm(k, out, *inputs)`` is the spectral norm of d(out)/d(input k): how much this edge can
  stretch a gradient. The renderer asks it; it is exact and cheap for every primitive here.

Derivative formulas use only operators that numpy arrays and Values share (``*``, ``@``, ``.T``,
``.sum``, ``1 - y*y``) or call other ops. The backward pass hands them raw arrays for speed, or Values
when ``create_graph=True``, in which case the backward pass is itself recorded and can be
differentiated again. Masks (which input was the max, which side of a kink) are computed from raw data:
they are constants whose derivative is zero almost everywhere.

Calling an op, ``Tanh()(x)``, records a node when any argument is a Value and otherwise just runs the
forward on raw data; that one rule lets derivative formulas call ops on either kind of argument.
"""

from tinygrad_rnn.ops.base import RAW_TYPES, Op, mask, raw, shape_of, unbroadcast
from tinygrad_rnn.ops.elementwise import (
    Abs,
    Add,
    Clip,
    Div,
    Exp,
    LeakyRelu,
    Log,
    Maximum,
    Mul,
    Neg,
    Pow,
    Relu,
    Sigmoid,
    Sub,
    Tanh,
    Where,
)
from tinygrad_rnn.ops.movement import BroadcastTo, Concat, GetItem, Reshape, ScatterAdd, Stack, Transpose
from tinygrad_rnn.ops.reduce import MatMul, Max, Sum

__all__ = [
    "Op", "Add", "Sub", "Mul", "Div", "Neg", "Pow", "Exp", "Log", "Tanh", "Sigmoid", "Relu",
    "LeakyRelu", "Abs", "Clip", "Maximum", "Where", "Sum", "Max", "MatMul", "Reshape", "Transpose",
    "BroadcastTo", "GetItem", "ScatterAdd", "Concat", "Stack", "unbroadcast", "shape_of", "raw", "mask", "RAW_TYPES",
]
