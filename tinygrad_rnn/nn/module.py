"""Module: a bag of parameters (Values) and sub-modules, found by walking the attributes, as PyTorch's.

Assigning a Value to a module's attribute makes it a parameter, or, with ``requires_grad=False``, a
buffer: state that is saved and loaded but not learned. Assigning a Module makes it a sub-module.
A list, tuple or dict of Values or Modules is registered too, each entry by its position or key
(``ws.0``, ``layers.1.weight``, ``gates.forget``), the names PyTorch's ParameterList, ModuleList and
ModuleDict give. ``register_buffer`` keeps a numpy array as a buffer (BatchNorm's running statistics).
Everything is named by its dotted path (``rnn.cell.weight_hh``), the names ``state_dict`` uses, so
weights move between frameworks as plain numpy arrays.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from tinygrad_rnn.value import Value

__all__ = ["Module", "Sequential"]


def _entries(name: str, value):
    """(dotted name, Value or Module, whether it sits in a container) for one attribute: the attribute
    itself, or the Values and Modules in a list, tuple or dict of them (at any depth), named by
    position or key as PyTorch's ParameterList, ModuleList and ModuleDict name theirs."""
    if isinstance(value, (Value, Module)):
        yield name, value, False
        return
    if isinstance(value, (list, tuple)):
        items = enumerate(value)
    elif isinstance(value, dict):
        items = value.items()
    else:
        return
    for key, item in items:
        for entry, found, _ in _entries(f"{name}.{key}", item):
            yield entry, found, True


def _own(module) -> list:
    """(dotted name, Value or Module, in a container) for everything a module holds itself."""
    return [entry for name, value in vars(module).items() for entry in _entries(name, value)]


class Module:
    """Base class of layers, cells and models: subclasses set attributes in ``__init__`` and define
    ``forward``; calling the module calls ``forward``."""

    training: bool = True

    def __setattr__(self, name: str, value) -> None:
        # A parameter is labelled by its attribute name so pictures can say "weight_hh", not "leaf".
        for entry, found, _ in _entries(name, value):
            if isinstance(found, Value) and found.name is None:
                found.name = entry
        object.__setattr__(self, name, value)

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__}: a Module subclass must define forward()")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # ---- walking the tree ---------------------------------------------------------------------

    def named_children(self) -> Iterator[tuple[str, Module]]:
        """(name, Module) for each sub-module held directly or in a list, tuple or dict (``layers.0``)."""
        for name, value, _ in _own(self):
            if isinstance(value, Module):
                yield name, value

    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, Module]]:
        for name, module, _ in self._tree(prefix):
            yield name, module

    def _tree(self, prefix: str = "", inside: bool = False) -> Iterator[tuple[str, Module, bool]]:
        """(dotted name, module, whether it sits in a list, tuple or dict, or below one that does)."""
        yield prefix, self, inside
        for name, child, contained in _own(self):
            if isinstance(child, Module):
                yield from child._tree(f"{prefix}.{name}" if prefix else name, inside or contained)

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Value]]:
        """(dotted name, Value) for every parameter (a Value that requires a gradient), in attribute
        order; a Value shared by two modules (tied weights) is listed once, under its first name."""
        return self._named_values(prefix, learned=True)

    def _named_values(self, prefix: str, learned: bool, contained: bool = False) -> Iterator[tuple[str, Value]]:
        """Parameters (``learned``) or Value buffers, each once; ``contained``: only those that sit in a
        list, tuple or dict (or in a module that does)."""
        seen = set()
        for module_name, module, module_inside in self._tree(prefix):
            for name, value, inside in _own(module):
                if (isinstance(value, Value) and value.requires_grad == learned and value not in seen
                        and (module_inside or inside or not contained)):
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

    def named_buffers(self) -> Iterator[tuple[str, np.ndarray | Value]]:
        """(dotted name, buffer): the Values that require no gradient, then the arrays given to
        ``register_buffer``."""
        yield from self._named_values("", learned=False)
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
        for p in (*self.parameters(), *(b for _, b in self._named_values("", learned=False))):
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
        state.update({name: np.array(b.data if isinstance(b, Value) else b) for name, b in self.named_buffers()})
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
        parameters = {**dict(self.named_parameters()), **dict(self._named_values("", learned=False))}
        owners = {  # buffer name -> (module, attribute)
            f"{prefix}.{name}" if prefix else name: (module, name)
            for prefix, module in self.named_modules()
            for name in vars(module).get("_buffer_names", ())
        }
        current = {name: np.asarray(p.data) for name, p in parameters.items()}
        current.update({name: np.asarray(getattr(*owner)) for name, owner in owners.items()})
        contained = {name for learned in (True, False) for name, _ in self._named_values("", learned, contained=True)}
        problems = [f"missing {name!r}{_CONTAINED if name in contained else ''}"
                    for name in current if name not in state]
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
            f"  {name}: {np.shape(value.data)} {np.result_type(value.data)}{'' if value.requires_grad else ' (buffer)'}"
            for name, value, _ in _own(self)
            if isinstance(value, Value)
        ]
        for name, child in self.named_children():
            child_lines = repr(child).split("\n")
            lines.append(f"  ({name}): " + child_lines[0])
            lines += ["  " + line for line in child_lines[1:]]
        head = f"{type(self).__name__}({self.extra_repr()})"
        return "\n".join([head + (" {" if lines else "")] + lines + (["}"] if lines else []))


_CONTAINED = (" (a Value in a list, tuple or dict: registered, as in PyTorch, by this version; "
              "a checkpoint saved by an older one did not hold it)")


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
