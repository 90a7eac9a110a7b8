"""Primitive ops: each class holds its forward and its derivative side by side.

``base.py`` holds the contract (``Op``, ``Elementwise``) and ``unbroadcast``; ``elementwise.py``,
``reduce.py`` and ``movement.py`` the ops.

An op instance carries only its parameters (an axis, a slope, an index), never data, so a recorded
graph holds no closures and no cycles. The data lives on the Values; an op is handed it when asked:

- ``forward(*inputs)`` computes the output from the inputs' data.
- ``vjp(k, grad, out, inputs)`` turns the output's gradient into input k's share, grad^T J_k.
- ``jacobian_norm(k, out, inputs)`` is the spectral norm of J_k = d(out)/d(input k): how much this
  edge can stretch a gradient. The pictures ask it; it is exact and cheap for every primitive here.
- Elementwise ops state only ``derivative(k, out, *inputs)``, the diagonal of J_k; ``Elementwise``
  derives the other two from it.

Derivative formulas use only operators that numpy arrays and Values share (``*``, ``@``, ``.T``,
``1 - y*y``) or call other ops. The backward pass hands them raw arrays for speed, or Values when
``create_graph=True``, in which case the backward pass is itself recorded and can be differentiated
again. Masks (which input was the max, which side of a kink) are computed from raw data: they are
constants whose derivative is zero almost everywhere. An op whose derivative is such a mask (``Masked``:
relu, clip, where, maximum; and max) selects the gradient by it instead of multiplying, so that an
infinite gradient stops where the mask is 0, as in PyTorch (0 * inf would be nan).
"""

from tinygrad_rnn.lazy_sums import LazySum, Products, Scattered
from tinygrad_rnn.notation import index_label, shape_label
from tinygrad_rnn.ops.base import RAW_TYPES, Elementwise, Op, mask, raw, shape_of, unbroadcast
from tinygrad_rnn.ops.elementwise import (
    Abs,
    Add,
    Cast,
    Clip,
    Div,
    Exp,
    LeakyRelu,
    Log,
    Log1p,
    Masked,
    Maximum,
    Mul,
    Neg,
    Pow,
    Relu,
    Sigmoid,
    Sub,
    Tanh,
    Where,
    select,
)
from tinygrad_rnn.ops.movement import BroadcastTo, Concat, GetItem, Reshape, ScatterAdd, Stack, Transpose
from tinygrad_rnn.ops.reduce import MatMul, Max, Sum

__all__ = [
    "Op", "Elementwise", "Add", "Sub", "Mul", "Div", "Neg", "Pow", "Exp", "Log", "Log1p", "Tanh", "Sigmoid", "Relu",
    "LeakyRelu", "Abs", "Clip", "Maximum", "Where", "Cast", "Masked", "select", "Sum", "Max", "MatMul", "Reshape",
    "Transpose", "BroadcastTo", "GetItem", "ScatterAdd", "Concat", "Stack", "unbroadcast", "shape_of", "raw", "mask",
    "RAW_TYPES", "shape_label", "index_label", "LazySum", "Products", "Scattered",
]
