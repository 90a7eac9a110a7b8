"""tinygrad_rnn: an autograd engine small enough to read, for seeing backpropagation through time."""

from tinygrad_rnn.autograd import enable_grad, no_grad, scope
from tinygrad_rnn.export_torch import ExportError, to_torch
from tinygrad_rnn.functional import (
    concat,
    grad,
    log_softmax,
    logsumexp,
    maximum,
    minimum,
    softmax,
    softplus,
    split,
    stack,
    where,
    zero_grad,
)
from tinygrad_rnn.gradcheck import GradcheckError, gradcheck
from tinygrad_rnn.replay import replay
from tinygrad_rnn.value import HookHandle, Value

# Submodules, imported after the engine they are built on.
from tinygrad_rnn import checkpoint, clip, data, diagnostics, nn, numerics, optim  # noqa: E402  isort: skip
from tinygrad_rnn.numerics import set_flush_denormal  # noqa: E402  isort: skip

__all__ = [
    "Value", "HookHandle", "grad", "no_grad", "enable_grad", "scope", "gradcheck", "GradcheckError",
    "concat", "stack", "split", "where", "maximum", "minimum", "softplus", "logsumexp", "softmax", "log_softmax",
    "zero_grad", "replay", "to_torch", "ExportError",
    "set_flush_denormal", "nn", "optim", "clip", "diagnostics", "data", "checkpoint", "numerics",
]
