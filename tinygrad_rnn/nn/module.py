"""Module: a bag of parameters (Values) and sub-modules, found by walking the attributes.

Assigning a Value to a module's attribute makes it a parameter; assigning a Module makes it a
sub-module; ``register_buffer`` keeps a numpy array that is state but not learned (BatchNorm's running
statistics). Parameters are named by their dotted attribute path (``rnn.cell.weight_hh``), the names
``state_dict`` uses, so weights move between frameworks as plain numpy arrays.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from tinygrad_rnn.value import Value

__all__ = ["Module", "Sequential"]


class Module:
    """Base class of layers, cells and models: subclasses set attributes in ``__init__`` and define
    ``forward``; calling the module calls ``forward``."""

    training: bool = True

    def __setattr__(self, name: str, value) -> None:
        # A parameter is labelled by its attribute name so pictures can say "weight_hh", not "leaf".
        if isinstance(value, Value) and value.name is None:
            value.name = name
        object.__setattr__(self, name, value)

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__}: a Module subclass must define forward()")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # ---- walking the tree ---------------------------------------------------------------------

    def named_children(self) -> Iterator[tuple[str, Module]]:
        for name, value in vars(self).items():
            if isinstance(value, Module):
                yield name, value

    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, Module]]:
        yield prefix, self
        for name, child in self.named_children():
            yield from child.named_modules(f"{prefix}.{name}" if prefix else name)

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Value]]:
        """(dotted name, Value) for every parameter, in attribute order; a Value shared by two
        modules (tied weights) is listed once, under its first name."""
        seen = set()
        for module_name, module in self.named_modules(prefix):
            for name, value in vars(module).items():
                if isinstance(value, Value) and value not in seen:
                    seen.add(value)
                    yield (f"{module_name}.{name}" if module_name else name), value

    def parameters(self) -> list[Value]:
        return [value for _, value in self.named_parameters()]

    def register_buffer(self, name: str, array) -> None:
        """Keep ``array`` as state that is saved and loaded but not learned (no gradient)."""
        buffers = vars(self).setdefault("_buffer_names", [])
        if name not in buffers:
            buffers.append(name)
        object.__setattr__(self, name, np.asarray(array))

    def named_buffers(self) -> Iterator[tuple[str, np.ndarray]]:
        for module_name, module in self.named_modules():
            for name in vars(module).get("_buffer_names", ()):
                yield (f"{module_name}.{name}" if module_name else name), getattr(module, name)

    # ---- training state -----------------------------------------------------------------------

    def zero_grad(self) -> None:
        """Forget every parameter's gradient (they accumulate across backward calls)."""
        for p in self.parameters():
            p.grad = None

    def train(self, mode: bool = True) -> Module:
        for _, module in self.named_modules():
            module.training = mode
        return self

    def eval(self) -> Module:
        return self.train(False)

    def to(self, dtype) -> Module:
        """Convert every parameter and buffer to ``dtype`` (np.float32 or np.float64), in place.
        The parameter Values stay the same objects, so an optimiser holding them keeps working."""
        for p in self.parameters():
            p.data = np.asarray(p.data, dtype=dtype)
            p.grad = None
        for _, module in self.named_modules():
            for name in vars(module).get("_buffer_names", ()):
                object.__setattr__(module, name, np.asarray(getattr(module, name), dtype=dtype))
        return self

    # ---- saving and loading -------------------------------------------------------------------

    def state_dict(self) -> dict[str, np.ndarray]:
        """Dotted name -> a copy of the array, for every parameter and buffer."""
        state = {name: np.array(p.data) for name, p in self.named_parameters()}
        state.update({name: np.array(b) for name, b in self.named_buffers()})
        return state

    def load_state_dict(self, state: dict) -> None:
        """Copy arrays into the parameters and buffers, keeping each one's dtype. Every name, shape
        and dtype is checked first: on any problem nothing is loaded and the error lists them all."""
        problems, load = self._prepare_load(state)
        if problems:
            raise ValueError(f"load_state_dict into {type(self).__name__}: nothing loaded: " + "; ".join(problems))
        load()

    def _prepare_load(self, state: dict) -> tuple[list[str], Callable[[], None]]:
        """Every problem in loading ``state``, and a function that loads it (call it only when there
        are none). Checking apart from changing lets ``checkpoint.load_training`` check a model and its
        optimiser both before changing either."""
        parameters = dict(self.named_parameters())
        owners = {  # buffer name -> (module, attribute)
            f"{prefix}.{name}" if prefix else name: (module, name)
            for prefix, module in self.named_modules()
            for name in vars(module).get("_buffer_names", ())
        }
        current = {name: np.asarray(p.data) for name, p in parameters.items()}
        current.update({name: np.asarray(getattr(*owner)) for name, owner in owners.items()})
        problems = [f"missing {name!r}" for name in current if name not in state]
        problems += [f"unexpected {name!r}" for name in state if name not in current]
        loaded = {}
        for name, target in current.items():
            if name not in state:
                continue
            try:
                value = np.asarray(state[name])
            except (ValueError, TypeError) as error:  # a ragged list, say
                problems.append(f"{name!r} is not an array ({error})")
                continue
            if value.shape != target.shape:
                problems.append(f"{name!r} has shape {value.shape}, expected {target.shape}")
            elif not np.can_cast(value.dtype, target.dtype, casting="same_kind"):
                problems.append(f"{name!r} has dtype {value.dtype}, which does not convert to {target.dtype}")
            else:
                loaded[name] = value.astype(target.dtype)  # a copy, in the model's own dtype

        def load() -> None:
            for name, p in parameters.items():
                p.data = float(loaded[name]) if isinstance(p.data, float) else loaded[name]
            for name, (module, attribute) in owners.items():
                object.__setattr__(module, attribute, loaded[name])

        return problems, load

    # ---- description --------------------------------------------------------------------------

    def extra_repr(self) -> str:
        """The constructor arguments worth showing, e.g. ``in_features=3, out_features=2``."""
        return ""

    def __repr__(self) -> str:
        lines = [
            f"  {name}: {np.shape(value.data)} {np.result_type(value.data)}"
            for name, value in vars(self).items()
            if isinstance(value, Value)
        ]
        for name, child in self.named_children():
            child_lines = repr(child).split("\n")
            lines.append(f"  ({name}): " + child_lines[0])
            lines += ["  " + line for line in child_lines[1:]]
        head = f"{type(self).__name__}({self.extra_repr()})"
        return "\n".join([head + (" {" if lines else "")] + lines + (["}"] if lines else []))


class Sequential(Module):
    """Modules applied one after another: ``Sequential(Linear(2, 8), Tanh(), Linear(8, 1))``;
    sub-module names are their positions ("0", "1", ...)."""

    def __init__(self, *modules):
        for i, module in enumerate(modules):
            setattr(self, str(i), module)

    def __len__(self) -> int:
        return sum(1 for _ in self.named_children())

    def __getitem__(self, i: int):
        return getattr(self, str(range(len(self))[i]))

    def forward(self, x):
        for _, module in self.named_children():
            x = module(x)
        return x
