"""Layers built from the engine's primitives: Linear, Embedding, LayerNorm, BatchNorm1d, activations.

None of them has a backward method: their gradients are the primitives' vector-Jacobian products,
chained by the backward pass like any other graph.
"""

from __future__ import annotations

import math

import numpy as np

from tinygrad_rnn.nn.init import generator, size
from tinygrad_rnn.nn.module import Module
from tinygrad_rnn.ops import shape_of
from tinygrad_rnn.value import Value, as_value

__all__ = ["Linear", "Embedding", "LayerNorm", "BatchNorm1d", "Tanh", "ReLU", "Sigmoid", "linear"]


def linear(x, weight: Value, bias: Value | None = None) -> Value:
    """y = x @ W^T + b, for x of shape (..., in) and W of shape (out, in).

    Inputs with more than two axes are flattened to one matrix first, so one matmul (and in backward
    one matmul per operand) serves every leading position."""
    x = as_value(x)
    if x.ndim > 2:
        lead = x.shape[:-1]  # sizes written out: with an empty axis, numpy cannot tell what -1 stands for
        return linear(x.reshape(math.prod(lead), x.shape[-1]), weight, bias).reshape(*lead, shape_of(weight.data)[0])
    y = x @ weight.T
    return y if bias is None else y + bias


class Linear(Module):
    """y = x W^T + b with ``weight`` (out_features, in_features) and ``bias`` (out_features,);
    PyTorch's default init: both U(-1/sqrt(in), 1/sqrt(in)) (zeros for in_features = 0, as PyTorch)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, rng=None, dtype=np.float64):
        in_features, out_features = size(in_features, "in_features", "Linear"), size(out_features, "out_features",
                                                                                         "Linear")
        self.in_features, self.out_features = in_features, out_features
        rng, bound = generator(rng), 1.0 / math.sqrt(in_features) if in_features else 0.0
        self.weight = Value(rng.uniform(-bound, bound, (out_features, in_features)).astype(dtype))
        self.bias = Value(rng.uniform(-bound, bound, (out_features,)).astype(dtype)) if bias else None

    def forward(self, x) -> Value:
        if shape_of(x)[-1:] != (self.in_features,):
            raise ValueError(
                f"Linear({self.in_features} -> {self.out_features}): input has shape {shape_of(x)}, "
                f"its last axis must be {self.in_features}"
            )
        return linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Embedding(Module):
    """A lookup table: ``embedding(indices)`` is ``weight[indices]``, shape indices.shape + (dim,).
    Equivalent to a one-hot row times ``weight``, without building the one-hot; the gradient of
    each used row is the sum of the gradients at the positions that picked it. Init N(0, 1)."""

    def __init__(self, num_embeddings: int, embedding_dim: int, rng=None, dtype=np.float64):
        num_embeddings = size(num_embeddings, "num_embeddings", "Embedding")
        embedding_dim = size(embedding_dim, "embedding_dim", "Embedding")
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.weight = Value(generator(rng).normal(0.0, 1.0, (num_embeddings, embedding_dim)).astype(dtype))

    def forward(self, indices) -> Value:
        indices = np.asanyarray(indices.data if isinstance(indices, Value) else indices)
        if indices.dtype.kind not in "iu":
            raise TypeError(f"Embedding: indices must be integers, got dtype {indices.dtype}")
        if indices.size and (indices.min() < 0 or indices.max() >= self.num_embeddings):
            bad = indices[(indices < 0) | (indices >= self.num_embeddings)].flat[0]
            raise IndexError(f"Embedding: index {bad} is out of range for {self.num_embeddings} embeddings")
        return self.weight[indices]

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}"


class LayerNorm(Module):
    """y = (x - mean) / sqrt(var + eps) * weight + bias over the last axis (Ba, Kiros & Hinton
    2016); var is the biased variance. Per example, so it behaves the same in train and eval."""

    def __init__(self, normalized_shape: int, eps: float = 1e-5, elementwise_affine: bool = True, dtype=np.float64):
        self.normalized_shape, self.eps = size(normalized_shape, "normalized_shape", "LayerNorm"), eps
        if math.isnan(eps):  # PyTorch takes it, and every output is NaN
            raise ValueError("LayerNorm: eps must be a number, got nan")
        self.weight = Value(np.ones(normalized_shape, dtype)) if elementwise_affine else None
        self.bias = Value(np.zeros(normalized_shape, dtype)) if elementwise_affine else None

    def forward(self, x) -> Value:
        x = as_value(x)
        if x.shape[-1:] != (self.normalized_shape,):
            raise ValueError(f"LayerNorm({self.normalized_shape}): input has shape {x.shape}, its last axis must match")
        centered = x - x.mean(axis=-1, keepdims=True)
        variance = (centered * centered).mean(axis=-1, keepdims=True)
        y = centered * (variance + self.eps) ** -0.5
        return y if self.weight is None else y * self.weight + self.bias

    def extra_repr(self) -> str:
        return f"{self.normalized_shape}, eps={self.eps}"


class BatchNorm1d(Module):
    """y = (x - mean) / sqrt(var + eps) * weight + bias per feature (Ioffe & Szegedy 2015), over the
    batch axis of (N, C) inputs (and the length axis of (N, C, L)).

    In training it uses the batch's statistics (biased variance) and updates the running ones,
    running = (1 - momentum) running + momentum batch (the unbiased variance, as PyTorch); in eval it
    uses the running statistics, which are constants, so eval is a fixed affine map."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1, affine: bool = True,
                 dtype=np.float64):
        num_features = size(num_features, "num_features", "BatchNorm1d")
        if math.isnan(eps) or math.isnan(momentum):  # PyTorch takes them: NaN outputs, or NaN running statistics
            raise ValueError(f"BatchNorm1d: eps and momentum must be numbers, got eps={eps}, momentum={momentum}")
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.weight = Value(np.ones(num_features, dtype)) if affine else None
        self.bias = Value(np.zeros(num_features, dtype)) if affine else None
        self.register_buffer("running_mean", np.zeros(num_features, dtype))
        self.register_buffer("running_var", np.ones(num_features, dtype))

    def forward(self, x) -> Value:
        x = as_value(x)
        if x.ndim not in (2, 3) or x.shape[1] != self.num_features:
            raise ValueError(f"BatchNorm1d({self.num_features}): input has shape {x.shape}, expected (N, "
                             f"{self.num_features}) or (N, {self.num_features}, L)")
        axes = (0,) if x.ndim == 2 else (0, 2)
        shape = (1, self.num_features) + (1,) * (x.ndim - 2)  # broadcasts per feature
        if self.training:
            count = x.size // self.num_features
            if count < 2:
                raise ValueError(f"BatchNorm1d: training needs more than one value per feature, got shape {x.shape}")
            mean = x.mean(axis=axes, keepdims=True)
            centered = x - mean
            variance = (centered * centered).mean(axis=axes, keepdims=True)
            m = self.momentum
            self.register_buffer("running_mean", (1 - m) * self.running_mean + m * mean.numpy().reshape(-1))
            unbiased = variance.numpy().reshape(-1) * (count / (count - 1))
            self.register_buffer("running_var", (1 - m) * self.running_var + m * unbiased)
            y = centered * (variance + self.eps) ** -0.5
        else:
            scale = 1.0 / np.sqrt(self.running_var + self.eps)
            y = (x - self.running_mean.reshape(shape)) * scale.reshape(shape)
        if self.weight is None:
            return y
        return y * self.weight.reshape(shape) + self.bias.reshape(shape)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}"


class Tanh(Module):
    def forward(self, x) -> Value:
        return as_value(x).tanh()


class ReLU(Module):
    def forward(self, x) -> Value:
        return as_value(x).relu()


class Sigmoid(Module):
    def forward(self, x) -> Value:
        return as_value(x).sigmoid()
