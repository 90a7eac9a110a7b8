"""Initialisers, with PyTorch's names and formulas (``torch.nn.init``).

Each takes a Value (its ``.data`` is rebound, its dtype kept) or a numpy array (filled in place), and an
optional ``rng``: a numpy Generator, an integer seed, or None for fresh entropy. Each returns what it
was given. For a weight of shape (out, in), fan_in = in and fan_out = out.

Why the scale matters in an RNN: the gradient through T steps is a product of T Jacobians
diag(f') W_hh, so the largest singular value (and the spectral radius) of W_hh decides whether it
shrinks or grows geometrically. ``orthogonal_``, ``eye_`` and ``scale_spectral_radius_`` set it directly.
"""

from __future__ import annotations

import math

import numpy as np

from tinygrad_rnn.value import Value

__all__ = [
    "generator", "size", "calculate_gain", "zeros_", "ones_", "constant_", "uniform_", "normal_",
    "xavier_uniform_", "xavier_normal_", "kaiming_uniform_", "kaiming_normal_", "orthogonal_",
    "eye_", "scale_spectral_radius_", "spectral_radius",
]


def generator(rng=None) -> np.random.Generator:
    """A numpy Generator from a Generator (returned as is), an integer seed, or None."""
    return np.random.default_rng(rng)


def size(value, name: str, where: str, least: int = 0) -> int:
    """``value`` as a size (a whole number >= ``least``), or an error naming the module and the argument."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{where}: {name} must be a whole number, got {value!r}")
    if value < least:
        raise ValueError(f"{where}: {name} must be at least {least}, got {value}")
    return int(value)


def _shape_and_dtype(tensor) -> tuple[tuple, np.dtype]:
    data = tensor.data if isinstance(tensor, Value) else tensor
    return np.shape(data), np.result_type(data)


def _set(tensor, values: np.ndarray):
    """Write float64 ``values`` into ``tensor`` in its own dtype and return ``tensor``."""
    shape, dtype = _shape_and_dtype(tensor)
    values = np.asarray(values, dtype=dtype).reshape(shape)
    if isinstance(tensor, Value):
        tensor.data = float(values) if isinstance(tensor.data, float) else values
    else:
        tensor[...] = values
    return tensor


def _fans(tensor, where: str) -> tuple[int, int]:
    shape, _ = _shape_and_dtype(tensor)
    if len(shape) < 2:
        raise ValueError(f"{where}: fan_in and fan_out need at least 2 dimensions, got shape {shape}")
    receptive_field = math.prod(shape[2:])
    return shape[1] * receptive_field, shape[0] * receptive_field


def calculate_gain(nonlinearity: str, param: float | None = None) -> float:
    """The factor that keeps activations' variance steady through ``nonlinearity`` (PyTorch's table)."""
    if nonlinearity in ("linear", "identity", "sigmoid") or nonlinearity.startswith("conv"):
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else param
        return math.sqrt(2.0 / (1 + slope**2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(f"calculate_gain: unknown nonlinearity {nonlinearity!r}")


def zeros_(tensor):
    return constant_(tensor, 0.0)


def ones_(tensor):
    return constant_(tensor, 1.0)


def constant_(tensor, value: float):
    shape, _ = _shape_and_dtype(tensor)
    return _set(tensor, np.full(shape, value))


def uniform_(tensor, a: float = 0.0, b: float = 1.0, rng=None):
    """Fill with U(a, b)."""
    if not (math.isfinite(a) and math.isfinite(b)):  # numpy's own word for it: "range exceeds valid bounds"
        raise ValueError(f"uniform_: the bounds must be finite numbers, got a={a}, b={b}")
    shape, _ = _shape_and_dtype(tensor)
    return _set(tensor, generator(rng).uniform(a, b, shape))


def normal_(tensor, mean: float = 0.0, std: float = 1.0, rng=None):
    """Fill with N(mean, std^2)."""
    if not (math.isfinite(mean) and math.isfinite(std) and std >= 0):  # a NaN would fill the weight with NaN
        raise ValueError(f"normal_: mean must be a finite number and std a finite number >= 0, got mean={mean}, "
                         f"std={std}")
    shape, _ = _shape_and_dtype(tensor)
    return _set(tensor, generator(rng).normal(mean, std, shape))


def xavier_uniform_(tensor, gain: float = 1.0, rng=None):
    """Glorot & Bengio (2010): U(-a, a), a = gain sqrt(6 / (fan_in + fan_out))."""
    fan_in, fan_out = _fans(tensor, "xavier_uniform_")
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return uniform_(tensor, -bound, bound, rng)


def xavier_normal_(tensor, gain: float = 1.0, rng=None):
    """Glorot & Bengio (2010): N(0, std^2), std = gain sqrt(2 / (fan_in + fan_out))."""
    fan_in, fan_out = _fans(tensor, "xavier_normal_")
    return normal_(tensor, 0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)), rng)


def _kaiming_std(tensor, a, mode, nonlinearity, where) -> float:
    fan_in, fan_out = _fans(tensor, where)
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"{where}: mode must be 'fan_in' or 'fan_out', got {mode!r}")
    fan = fan_in if mode == "fan_in" else fan_out
    return calculate_gain(nonlinearity, a) / math.sqrt(fan)


def kaiming_uniform_(tensor, a: float = 0.0, mode: str = "fan_in", nonlinearity: str = "leaky_relu", rng=None):
    """He et al. (2015): U(-b, b), b = gain sqrt(3 / fan); with PyTorch's defaults (a=0, leaky_relu)
    gain = sqrt(2)."""
    bound = math.sqrt(3.0) * _kaiming_std(tensor, a, mode, nonlinearity, "kaiming_uniform_")
    return uniform_(tensor, -bound, bound, rng)


def kaiming_normal_(tensor, a: float = 0.0, mode: str = "fan_in", nonlinearity: str = "leaky_relu", rng=None):
    """He et al. (2015): N(0, std^2), std = gain / sqrt(fan)."""
    return normal_(tensor, 0.0, _kaiming_std(tensor, a, mode, nonlinearity, "kaiming_normal_"), rng)


def orthogonal_(tensor, gain: float = 1.0, rng=None):
    """Saxe et al. (2014): a (semi-)orthogonal matrix times ``gain``: all singular values equal gain,
    so repeated multiplication neither shrinks nor grows a vector.

    The Q of a Gaussian matrix's QR, with columns' signs fixed by R's diagonal so that Q is uniformly
    distributed (Mezzadri 2007)."""
    shape, _ = _shape_and_dtype(tensor)
    if len(shape) < 2:
        raise ValueError(f"orthogonal_: needs at least 2 dimensions, got shape {shape}")
    if not math.isfinite(gain):
        raise ValueError(f"orthogonal_: gain must be a finite number, got {gain}")
    rows, cols = shape[0], math.prod(shape[1:])
    flat = generator(rng).normal(0.0, 1.0, (rows, cols))
    if rows < cols:
        flat = flat.T
    q, r = np.linalg.qr(flat)
    q = q * np.sign(np.diag(r))
    if rows < cols:
        q = q.T
    return _set(tensor, gain * q)


def eye_(tensor):
    """The identity matrix (Le, Jaitly & Hinton 2015, IRNN: a ReLU RNN with W_hh = I starts out
    copying its state, so gradients neither vanish nor explode at first)."""
    shape, _ = _shape_and_dtype(tensor)
    if len(shape) != 2:
        raise ValueError(f"eye_: needs a 2-D matrix, got shape {shape}")
    return _set(tensor, np.eye(*shape))


def spectral_radius(matrix) -> float:
    """max |eigenvalue| of a square matrix."""
    data = np.asarray(matrix.data if isinstance(matrix, Value) else matrix, dtype=np.float64)
    return float(np.max(np.abs(np.linalg.eigvals(data))))


def scale_spectral_radius_(tensor, radius: float):
    """Rescale a square matrix so that max |eigenvalue| = ``radius`` (as in echo-state networks:
    below 1 the linearised recurrence forgets, above 1 it can blow up)."""
    shape, _ = _shape_and_dtype(tensor)
    if len(shape) != 2 or shape[0] != shape[1]:
        raise ValueError(f"scale_spectral_radius_: needs a square matrix, got shape {shape}")
    if not radius >= 0:  # written so that NaN fails it too; a spectral radius is never negative
        raise ValueError(f"scale_spectral_radius_: radius must be a number >= 0, got {radius}")
    current = spectral_radius(tensor)
    if current == 0.0:
        raise ValueError("scale_spectral_radius_: the matrix has spectral radius 0 (nilpotent); it cannot be rescaled")
    data = np.asarray(tensor.data if isinstance(tensor, Value) else tensor, dtype=np.float64)
    return _set(tensor, data * (radius / current))
