"""Optimisers: SGD (momentum, Nesterov), Adagrad, RMSprop, Adam, with PyTorch's update rules and defaults.

Each follows the algorithm box in PyTorch's documentation line by line, with its symbols: theta a
parameter, g its gradient, lambda the weight decay, t the step count. The state (momentum buffers,
running averages) lives in ``optimizer.state[param]`` as numpy arrays of the parameter's dtype.

Two rules hold everywhere:

- a parameter whose ``.grad`` is None is skipped (it took no part in the last backward pass);
- a ``.grad`` array is never written to: it may be the very array another node holds as its gradient
  (the backward pass passes arrays along without copying). Every formula below builds new arrays from
  it. The parameter's own ``data`` array is updated in place, which keeps views and aliases of the
  weights (a detached copy) seeing the new values, as in PyTorch; and always by assignment
  (``p.data = ...``), so the Value's version counter sees the step.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable

import numpy as np

from tinygrad_rnn.ops import raw
from tinygrad_rnn.value import Value

__all__ = ["Optimizer", "SGD", "Adagrad", "RMSprop", "Adam"]

# The hyperparameters that must be numbers >= 0 wherever an optimiser has them (PyTorch's checks).
NONNEGATIVE = ("lr", "eps", "weight_decay", "momentum", "lr_decay", "alpha", "initial_accumulator_value")


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
            problems = self._check(group)
            if problems:
                raise ValueError(f"{type(self).__name__}: " + "; ".join(problems))
            self.param_groups.append(group)
        self.state: dict[Value, dict] = {}

    def _check(self, group: dict) -> list[str]:
        """The hyperparameters PyTorch rejects, each with its value (an empty list when all are fine).

        PyTorch tests ``not 0.0 <= value``, which refuses NaN as well as negatives (SGD alone tests
        ``value < 0.0`` and lets NaN through; here every optimiser refuses it). Infinities pass, as
        in PyTorch. ``dampening`` PyTorch never checks; only NaN is refused for it."""
        problems = []
        for key in (*NONNEGATIVE, "dampening"):
            if key not in group:
                continue
            value = group[key]
            if not isinstance(value, numbers.Real):
                problems.append(f"{key} must be a number, got {value!r}")
            elif key in NONNEGATIVE and not value >= 0:  # written so that NaN fails it too
                problems.append(f"{key} must be >= 0, got {value}")
            elif math.isnan(value):
                problems.append(f"{key} must be a number, got nan")
        return problems

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

    def _state_keys(self, group: dict) -> set[str]:
        """The names ``state[p]`` holds once ``p`` has been stepped: ``step``, a count, and arrays
        shaped like ``p``."""
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
        """Restore buffers and hyperparameters saved by ``state_dict``. Everything is checked first
        (names, shapes, dtypes, hyperparameter types and ranges): on any problem nothing is loaded
        and the error lists them all."""
        problems, load = self._prepare_load(state)
        if problems:
            raise ValueError(f"{type(self).__name__}.load_state_dict: nothing loaded: " + "; ".join(problems))
        load()

    def _prepare_load(self, state: dict) -> tuple[list[str], Callable[[], None]]:
        """Every problem in loading ``state``, and a function that loads it (call it only when there
        are none). Buffers are cast to their parameter's dtype: a float32 model stays float32."""
        params = self._all_params()
        group_of = [j for j, group in enumerate(self.param_groups) for _ in group["params"]]
        groups = [dict(group) for group in self.param_groups]  # the hyperparameters once loaded
        problems, found, buffers = [], set(), {}
        for name, value in state.items():
            kind, _, rest = name.partition(".")
            index, _, key = rest.partition(".")
            i = int(index) if index.isdecimal() else -1
            value = np.asarray(value)
            if kind == "state" and 0 <= i < len(params) and key:
                buffers.setdefault(i, {})[key] = value
            elif kind == "group" and 0 <= i < len(groups) and key in groups[i] and key != "params":
                found.add((i, key))
                restored = _as_type_of(value, groups[i][key])
                if restored is None:
                    problems.append(f"{name} holds a {value.dtype} array of shape {value.shape}, "
                                    f"expected a {type(groups[i][key]).__name__}")
                else:
                    groups[i][key] = restored
            else:
                problems.append(f"unexpected entry {name!r} ({len(params)} parameters in {len(groups)} groups)")
        for j, group in enumerate(groups):
            problems += [f"missing group.{j}.{key}" for key in group if key != "params" and (j, key) not in found]
            problems += [f"group.{j}: {problem}" for problem in self._check(group)]
        new_state = {}
        for i, saved in sorted(buffers.items()):
            p, expected = params[i], self._state_keys(groups[group_of[i]])
            problems += [f"missing state.{i}.{key}" for key in sorted(expected - saved.keys())]
            problems += [f"unexpected entry 'state.{i}.{key}'" for key in saved.keys() - expected]
            new_state[p] = {}
            for key, value in saved.items():
                if key == "step":
                    if value.ndim or value.dtype.kind not in "iu" or value < 0:
                        problems.append(f"state.{i}.step is {value!r}, expected a count (an integer >= 0)")
                    else:
                        new_state[p][key] = int(value)
                elif value.shape != np.shape(p.data):
                    problems.append(f"state.{i}.{key} has shape {value.shape}, the parameter {np.shape(p.data)}")
                elif not np.can_cast(value.dtype, np.result_type(p.data), casting="same_kind"):
                    problems.append(f"state.{i}.{key} has dtype {value.dtype}, the parameter {np.result_type(p.data)}")
                else:
                    new_state[p][key] = value.astype(np.result_type(p.data))

        def load() -> None:
            for group, loaded in zip(self.param_groups, groups):
                group.update(loaded)
            self.state = new_state

        return problems, load

    def _all_params(self) -> list:
        return [p for group in self.param_groups for p in group["params"]]


def _as_type_of(value: np.ndarray, current):
    """``value``, read from a file, as a Python value of ``current``'s type; None when it is not one."""
    if isinstance(current, tuple):
        fits = value.ndim == 1 and len(value) == len(current) and value.dtype.kind in "iuf"
        return tuple(value.tolist()) if fits else None
    if isinstance(current, (bool, np.bool_)):
        kinds = "b"
    elif isinstance(current, numbers.Real):
        kinds = "iuf"
    elif isinstance(current, str):
        kinds = "U"
    else:
        return None
    return value.item() if value.ndim == 0 and value.dtype.kind in kinds else None


def _subtract(p: Value, update: np.ndarray) -> None:
    """theta <- theta - update: in place when theta is a writable array, and always by assignment,
    so the Value sees the change (its version counter catches a graph that used the old values)."""
    if isinstance(p.data, np.ndarray) and p.data.flags.writeable and p.data.ndim:
        p.data = np.subtract(p.data, update, out=p.data, casting="same_kind")
    else:  # a Python float (scalar Value) or a read-only view: a new object
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
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov))

    def _check(self, group):
        problems = super()._check(group)
        if problems:  # the comparisons below need numbers
            return problems
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            problems.append(f"nesterov needs momentum > 0 and dampening 0, got momentum={group['momentum']}, "
                            f"dampening={group['dampening']}")
        return problems

    def _state_keys(self, group):
        return {"momentum_buffer"} if group["momentum"] else set()

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
        super().__init__(params, dict(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                                      initial_accumulator_value=initial_accumulator_value, eps=eps))

    def _state_keys(self, group):
        return {"step", "sum"}

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

    def _state_keys(self, group):
        keys = {"step", "square_avg"}
        if group["momentum"] > 0:
            keys.add("momentum_buffer")
        if group["centered"]:
            keys.add("grad_avg")
        return keys

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
        betas = tuple(betas) if isinstance(betas, Iterable) else (betas,)  # (0.9,) is then refused by name
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad))

    def _check(self, group):
        problems = super()._check(group)
        betas = group["betas"]
        if len(betas) != 2 or not all(isinstance(beta, numbers.Real) and 0.0 <= beta < 1.0 for beta in betas):
            problems.append(f"betas must be two numbers in [0, 1), got {betas}")
        return problems

    def _state_keys(self, group):
        return {"step", "exp_avg", "exp_avg_sq"} | ({"max_exp_avg_sq"} if group["amsgrad"] else set())

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
