"""A hand-derived forward pass and BPTT for a vanilla tanh RNN with an output layer, in plain numpy.

The framework never sees this file: it is the independent answer that ``loss.backward()`` on the
unrolled graph must reproduce (tests/test_bptt.py); benchmarks/rnn.py times its own, tighter numpy
BPTT. Written the way one writes it by hand (Karpathy's min-char-rnn, batched), with
the same structure as the framework's model: the recurrence is a loop forward over the steps and a
loop backward, gradients accumulated in place; the output layer and the loss, which do not recur,
are computed for all steps at once (one matmul, as ``Linear`` applied to the stacked h_t).

The model, with PyTorch's names (an ``nn.RNNCell`` followed by an ``nn.Linear``):

    a_t = x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh        (B, H)
    h_t = tanh(a_t)
    z_t = h_t W^T + b                                       (B, V) logits
    L   = sum_t sum_b -log softmax(z_t)[b, y_t[b]]          summed cross-entropy

and its derivatives, from the last step back:

    dL/dz_t  = softmax(z_t) - onehot(y_t)
    dL/dh_t  = dL/dz_t W + dL/da_{t+1} W_hh                 (the second term is the "through time" part)
    dL/da_t  = dL/dh_t * (1 - h_t^2)
    dW = sum_t dz_t^T h_t,  dW_ih += da_t^T x_t,  dW_hh += da_t^T h_{t-1},  db_ih = db_hh += sum_b da_t
"""

from __future__ import annotations

import numpy as np

__all__ = ["numpy_rnn_loss_and_grads", "parameter_keys"]

CELL_SUFFIXES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


def parameter_keys(params: dict) -> dict:
    """Map the roles (weight_ih, weight_hh, bias_ih, bias_hh, weight, bias) to the keys of a state
    dict, whatever the model calls its modules: "rnn.cell.weight_ih" and "output.weight" both work.
    Each role must match exactly one key."""
    roles = {}
    for role in CELL_SUFFIXES:
        matches = [k for k in params if k.split(".")[-1] == role]
        if len(matches) != 1:
            raise KeyError(f"numpy_rnn_reference: need exactly one key ending in {role!r}, found {matches}")
        roles[role] = matches[0]
    for role in ("weight", "bias"):
        matches = [k for k in params if k.split(".")[-1] == role]
        if len(matches) != 1:
            raise KeyError(f"numpy_rnn_reference: need one output-layer key ending in {role!r}, found {matches}")
        roles[role] = matches[0]
    return roles


def numpy_rnn_loss_and_grads(params: dict, inputs: np.ndarray, targets: np.ndarray, h0: np.ndarray):
    """Summed cross-entropy of the model above and its gradient with respect to every parameter.

    ``params``: name -> array, keyed by the framework's state_dict names (see ``parameter_keys``).
    ``inputs``: (T, B) integer indices, or (T, B, V) one-hot (any float) rows. ``targets``: (T, B)
    integers. ``h0``: (B, H). Everything is computed in the parameters' dtype.
    Returns ``(loss, grads)``: loss a Python float, grads a dict with the same keys as ``params``.
    """
    keys = parameter_keys(params)
    W_ih, W_hh, b_ih, b_hh = (params[keys[r]] for r in CELL_SUFFIXES)
    W, b = params[keys["weight"]], params[keys["bias"]]
    dtype = W_hh.dtype
    indices = inputs.dtype.kind in "iu"
    T, B = targets.shape
    H = W_hh.shape[0]
    if not indices:
        inputs = inputs.astype(dtype, copy=False)

    # Forward through time, keeping every h_t (h_0 included) for the backward loop.
    hs = np.empty((T + 1, B, H), dtype)
    hs[0] = h0
    W_ih_T, W_hh_T, bias = W_ih.T, W_hh.T, b_ih + b_hh
    for t in range(T):
        from_input = W_ih_T[inputs[t]] if indices else inputs[t] @ W_ih_T
        hs[t + 1] = np.tanh(from_input + hs[t] @ W_hh_T + bias)

    # The output layer and the loss do not recur: all T B positions at once.
    hidden = hs[1:].reshape(T * B, H)
    logits = hidden @ W.T + b
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    total = exp.sum(axis=1, keepdims=True)
    rows, flat_targets = np.arange(T * B), targets.reshape(-1)
    loss = -float(np.sum(shifted[rows, flat_targets] - np.log(total[:, 0])))

    dz = exp / total
    dz[rows, flat_targets] -= 1
    dW, db = dz.T @ hidden, dz.sum(axis=0)
    dhs_out = (dz @ W).reshape(T, B, H)

    # Backward through time: dL/dh_t collects the output's gradient and the next step's.
    dW_ih, dW_hh, db_hh = np.zeros_like(W_ih), np.zeros_like(W_hh), np.zeros_like(b_hh)
    dh_next = np.zeros((B, H), dtype)
    for t in reversed(range(T)):
        da = (dhs_out[t] + dh_next) * (1 - hs[t + 1] * hs[t + 1])
        if indices:
            np.add.at(dW_ih.T, inputs[t], da)  # the rows of W_ih^T that the indices picked
        else:
            dW_ih += da.T @ inputs[t]
        dW_hh += da.T @ hs[t]
        db_hh += da.sum(axis=0)
        dh_next = da @ W_hh
    # b_ih and b_hh enter a_t as a sum, so they get the same gradient.
    grads = {"weight_ih": dW_ih, "weight_hh": dW_hh, "bias_ih": db_hh.copy(), "bias_hh": db_hh, "weight": dW,
             "bias": db}
    return loss, {keys[role]: grad for role, grad in grads.items()}
