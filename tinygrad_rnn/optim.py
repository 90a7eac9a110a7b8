"""Optimisers: SGD (momentum, Nesterov), Adagrad, RMSprop, Adam, with PyTorch's update rules and defaults.

Each follows the algorithm box in PyTorch's documentation line by line, with its symbols: theta a
parameter, g its gradient, lambda the weight decay, t the step count. The state (momentum buffers,
running averages) lives in ``optimizer.state[param]`` as numpy arrays of the parameter's dtype.

Two rules hold everywhere:

- a parameter whose ``.grad`` is None is skipped (it took no part in the last backward pass);
- a ``.grad`` array is never written to: it may be the very array another node holds as its gradient
  (the backward pass passes arrays along without copying). Every formula below builds new arrays from
  it. The parameter's own ``data`` array is updated in place, which keeps views and aliases of the
  weights (a state_dict, a detached copy) seeing the new values, as in PyTorch.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from tinygrad_rnn.ops import raw
from tinygrad_rnn.value import Value

__all__ = ["Optimizer", "SGD", "Adagrad", "RMSprop", "Adam"]


class Optimizer:
    """Base class: parameter groups, ``zero_grad``, ``step``, and a numpy-only ``state_dict``.

    ``params`` is an iterable of Values, or of dicts ``{"params": [...], "lr": ...}`` whose entries
    override the defaults for that group (PyTorch's parameter groups).
    """

    def __init__(self, params, defaults: dict):
        self.defaults = dict(defaults)
        params = list(params)
        if not params:
            raise ValueError(f"{type(self).__name__}: got an empty parameter list")
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        self.param_groups: list[dict] = []
        seen: set[int] = set()
        for group in groups:
            group = {**self.defaults, **group, "params": list(group["params"])}
            for p in group["params"]:
                if not isinstance(p, Value):
                    raise TypeError(f"{type(self).__name__}: parameters must be Values, got {type(p).__name__}")
                if id(p) in seen:
                    raise ValueError(f"{type(self).__name__}: a parameter appears twice ({p!r})")
                seen.add(id(p))
            self._check(group)
            self.param_groups.append(group)
        self.state: dict[Value, dict] = {}

    def _check(self, group: dict) -> None:
        """Reject hyperparameters PyTorch rejects, naming the optimiser and the value."""
        for key in ("lr", "eps", "weight_decay", "momentum", "lr_decay", "alpha"):
            if key in group and group[key] < 0:
                raise ValueError(f"{type(self).__name__}: {key} must be >= 0, got {group[key]}")

    def zero_grad(self) -> None:
        """Forget every parameter's gradient (``set_to_none``, PyTorch's default since 2.0)."""
        for group in self.param_groups:
            for p in group["params"]:
                p.grad = None

    def step(self) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                data = np.asarray(p.data)
                # Computed in the parameter's dtype: a float32 model stays float32.
                g = np.asarray(raw(p.grad), dtype=data.dtype)
                if g.shape != data.shape:
                    raise ValueError(
                        f"{type(self).__name__}.step: gradient of shape {g.shape} for a parameter of shape {data.shape}"
                    )
                if group["weight_decay"]:
                    g = g + group["weight_decay"] * data  # L2 penalty lambda/2 ||theta||^2 folded into g
                state = self.state.setdefault(p, {})
                _subtract(p, self._update(g, data, state, group))

    def _update(self, g: np.ndarray, theta: np.ndarray, state: dict, group: dict) -> np.ndarray:
        """The amount to subtract from theta, given the (weight-decayed) gradient g."""
        raise NotImplementedError

    # ---- checkpoints: plain arrays only, so they save to .npz without pickle ----------------------

    def state_dict(self) -> dict[str, np.ndarray]:
        """``state.<i>.<name>`` for each parameter's buffers (i counts parameters across groups) and
        ``group.<j>.<hyperparameter>`` for each group's numbers."""
        out = {}
        for i, p in enumerate(self._all_params()):
            for key, value in self.state.get(p, {}).items():
                out[f"state.{i}.{key}"] = np.array(value)
        for j, group in enumerate(self.param_groups):
            for key, value in group.items():
                if key != "params":
                    out[f"group.{j}.{key}"] = np.array(value)
        return out

    def load_state_dict(self, state: dict) -> None:
        """Restore buffers and hyperparameters saved by ``state_dict``; shapes must match."""
        params = self._all_params()
        new_state: dict[Value, dict] = {}
        for name, value in state.items():
            kind, index, key = name.split(".", 2)
            index = int(index)
            if kind == "state":
                if index >= len(params):
                    raise ValueError(f"{type(self).__name__}.load_state_dict: {name} but only {len(params)} parameters")
                p = params[index]
                value = np.array(value)
                if value.ndim and value.shape != p.shape:
                    raise ValueError(
                        f"{type(self).__name__}.load_state_dict: {name} has shape {value.shape}, "
                        f"the parameter has shape {p.shape}"
                    )
                new_state.setdefault(p, {})[key] = value if value.ndim else value.item()
            elif kind != "group" or index >= len(self.param_groups):
                raise ValueError(f"{type(self).__name__}.load_state_dict: unexpected entry {name}")
        for name, value in state.items():
            kind, index, key = name.split(".", 2)
            if kind == "group":
                value = np.asarray(value)
                self.param_groups[int(index)][key] = tuple(value.tolist()) if value.ndim else value.item()
        self.state = new_state

    def _all_params(self) -> list:
        return [p for group in self.param_groups for p in group["params"]]


def _subtract(p: Value, update: np.ndarray) -> None:
    """theta <- theta - update, in place when theta is a writable array."""
    if isinstance(p.data, np.ndarray) and p.data.flags.writeable and p.data.ndim:
        p.data = np.subtract(p.data, update, out=p.data, casting="same_kind")  # assigned: the Value sees it
    else:  # a Python float (scalar Value) or a read-only view: rebind instead
        p.data = type(p.data)(p.data - update) if isinstance(p.data, float) else p.data - update


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum (PyTorch's form, not Sutskever's).

        g <- g + lambda theta
        b <- g                              on the first step with momentum mu
        b <- mu b + (1 - dampening) g       after that
        g <- g + mu b  (nesterov)   or   g <- b
        theta <- theta - lr g
    """

    def __init__(self, params: Iterable, lr: float = 1e-3, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False):
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError(f"SGD: nesterov needs momentum > 0 and dampening 0, got momentum={momentum}, "
                             f"dampening={dampening}")
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov))

    def _update(self, g, theta, state, group):
        mu = group["momentum"]
        if mu:
            if "momentum_buffer" not in state:
                buffer = g.copy()  # the buffer starts as g itself, without dampening
            else:
                buffer = mu * state["momentum_buffer"] + (1 - group["dampening"]) * g
            state["momentum_buffer"] = buffer
            g = g + mu * buffer if group["nesterov"] else buffer
        return group["lr"] * g


class Adagrad(Optimizer):
    """Adagrad: each coordinate's step shrinks with the sum of its squared gradients.

        t <- t + 1;  g <- g + lambda theta
        lr_t = lr / (1 + (t - 1) lr_decay)
        s <- s + g^2                          (s starts at initial_accumulator_value)
        theta <- theta - lr_t g / (sqrt(s) + eps)
    """

    def __init__(self, params: Iterable, lr: float = 1e-2, lr_decay: float = 0.0, weight_decay: float = 0.0,
                 initial_accumulator_value: float = 0.0, eps: float = 1e-10):
        if initial_accumulator_value < 0:
            raise ValueError(f"Adagrad: initial_accumulator_value must be >= 0, got {initial_accumulator_value}")
        super().__init__(params, dict(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                                      initial_accumulator_value=initial_accumulator_value, eps=eps))

    def _update(self, g, theta, state, group):
        if "sum" not in state:
            state["step"] = 0
            state["sum"] = np.full_like(theta, group["initial_accumulator_value"])
        state["step"] += 1
        lr_t = group["lr"] / (1 + (state["step"] - 1) * group["lr_decay"])
        state["sum"] = state["sum"] + g * g
        return lr_t * g / (np.sqrt(state["sum"]) + group["eps"])


class RMSprop(Optimizer):
    """RMSprop: divide by a running root mean square of the gradient (Hinton's lecture 6e).

        g <- g + lambda theta
        v <- alpha v + (1 - alpha) g^2
        centered:  m <- alpha m + (1 - alpha) g;   denom = sqrt(v - m^2) + eps
        otherwise: denom = sqrt(v) + eps
        momentum mu > 0:  b <- mu b + g / denom;   theta <- theta - lr b
        otherwise:        theta <- theta - lr g / denom
    """

    def __init__(self, params: Iterable, lr: float = 1e-2, alpha: float = 0.99, eps: float = 1e-8,
                 weight_decay: float = 0.0, momentum: float = 0.0, centered: bool = False):
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                                      momentum=momentum, centered=centered))

    def _update(self, g, theta, state, group):
        alpha = group["alpha"]
        if "square_avg" not in state:
            state["step"] = 0
            state["square_avg"] = np.zeros_like(theta)
            if group["momentum"] > 0:
                state["momentum_buffer"] = np.zeros_like(theta)
            if group["centered"]:
                state["grad_avg"] = np.zeros_like(theta)
        state["step"] += 1
        state["square_avg"] = alpha * state["square_avg"] + (1 - alpha) * g * g
        if group["centered"]:
            state["grad_avg"] = alpha * state["grad_avg"] + (1 - alpha) * g
            denom = np.sqrt(state["square_avg"] - state["grad_avg"] ** 2) + group["eps"]
        else:
            denom = np.sqrt(state["square_avg"]) + group["eps"]
        if group["momentum"] > 0:
            state["momentum_buffer"] = group["momentum"] * state["momentum_buffer"] + g / denom
            return group["lr"] * state["momentum_buffer"]
        return group["lr"] * g / denom


class Adam(Optimizer):
    """Adam (Kingma & Ba 2015) with bias correction; ``amsgrad`` keeps the largest v seen.

        t <- t + 1;  g <- g + lambda theta   (L2 in the gradient, not AdamW's decoupled decay)
        m <- beta1 m + (1 - beta1) g
        v <- beta2 v + (1 - beta2) g^2
        v_max <- max(v_max, v)   (amsgrad; then v_max replaces v below)
        theta <- theta - (lr / (1 - beta1^t)) m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
    """

    def __init__(self, params: Iterable, lr: float = 1e-3, betas: tuple = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, amsgrad: bool = False):
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"Adam: betas must lie in [0, 1), got {betas}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                                      amsgrad=amsgrad))

    def _update(self, g, theta, state, group):
        beta1, beta2 = group["betas"]
        if "exp_avg" not in state:
            state["step"] = 0
            state["exp_avg"] = np.zeros_like(theta)
            state["exp_avg_sq"] = np.zeros_like(theta)
            if group["amsgrad"]:
                state["max_exp_avg_sq"] = np.zeros_like(theta)
        state["step"] += 1
        t = state["step"]
        state["exp_avg"] = beta1 * state["exp_avg"] + (1 - beta1) * g
        state["exp_avg_sq"] = beta2 * state["exp_avg_sq"] + (1 - beta2) * g * g
        second = state["exp_avg_sq"]
        if group["amsgrad"]:
            state["max_exp_avg_sq"] = second = np.maximum(state["max_exp_avg_sq"], second)
        step_size = group["lr"] / (1 - beta1**t)
        denom = np.sqrt(second) / math.sqrt(1 - beta2**t) + group["eps"]
        return step_size * state["exp_avg"] / denom
