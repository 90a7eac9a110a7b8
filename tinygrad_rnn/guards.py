"""What a recorded call depended on beyond its arguments' shapes, so that a replay never answers
stale (docs/replay.md, "Guards"):

- ``outside_state(fn)``: what ``fn`` reads from outside its arguments (its closure, the globals it
  names, its defaults, the Modules and the user's objects and functions found there: ``_reads``),
  compared at every call (``Outside``: first by identity, which is cheap);
- ``bindings``: the ops that hold an integer or boolean argument (an index, a target, a mask) as a
  parameter, which a replay hands this call's array (``Argument`` markers, ``fill_template``);
- ``refuse_derived``: an op holding an array numpy computed from such an argument inside ``fn``;
- ``same``: whether a read of data (a branch, a number) gives what the recording read;
- ``returned``: what ``fn`` returned beside its loss (states, outputs), as Values whose data a replay
  computes again at every call; anything else it would hand back stale, so it is refused;
- ``Recorder``: the list the engine appends every op to while a call is recorded.
"""

from __future__ import annotations

import functools
import operator
import sys
import sysconfig
import types

import numpy as np

from tinygrad_rnn.autograd import CLOCK
from tinygrad_rnn.value import Value

__all__ = ["outside_state", "Outside", "values_read", "bindings", "markers", "refuse_derived", "Argument",
           "fill_template", "same", "Recorder", "FromArgument", "OBSERVED", "returned", "handed_back", "LOSS", "Extra"]


class FromArgument(np.ndarray):
    """An integer or boolean argument of a replayed function, as the function sees it while its ops
    are recorded: numpy keeps this class on what is computed from it (``ids + 1``, ``mask.sum()``),
    so the recording can tell such an array, which it would freeze, from the argument itself."""


# In a recording, Python reading a Value's data (bool, item, a comparison): (OBSERVED, the Values
# read, (how to read them again, the other operand, what was read)), so a replay can read it again.
OBSERVED = object()


class Recorder(list):
    """While ``replay`` records a call, ``autograd.STATE.tape`` holds one: the engine tells it of
    every op applied (``record``), every cut (``detach``, as an op None) and every read of data
    (``observe``); it keeps them as (op, input Values, output Value) in the order they ran. It also
    keeps the hooks fn registers (``registered``): a replay runs them on the recorded nodes, so one
    the caller has removed since means fn must run again to register it."""

    def __init__(self):
        super().__init__()
        self.start, self.registered = next(CLOCK), []

    def hooked(self, value: Value, hook) -> None:
        if value.requires_grad and value._made < self.start:
            raise RuntimeError(
                f"replay: fn registers a hook on {value!r}, made before fn ran: eager mode adds one more at every "
                "call, which a replay would not. Register it once, outside fn")
        self.registered.append((value, hook))

    def record(self, op, inputs: tuple, values: tuple, node) -> None:
        for x in inputs:  # (``inputs`` as given, before numbers and arrays became constant Values)
            if isinstance(x, FromArgument):
                raise ValueError(
                    f"replay: {op.name} takes as data an integer or boolean argument of fn, or an array computed "
                    f"from one with numpy (shape {x.shape}); a replay would reuse this call's. Pass it as a float "
                    "array, or compute it outside fn and pass that in")
        self.append((op, values, node))

    def observe(self, read, value, other, result) -> None:
        inputs = (value,) if not isinstance(other, Value) else (value, other)
        constant = None if other is None or isinstance(other, Value) else getattr(other, "data", other)
        self.append((OBSERVED, inputs, (read, constant, result.copy() if isinstance(result, np.ndarray) else result)))

    def refuse_hooks(self, node) -> None:
        raise RuntimeError(
            f"replay: a hook on {node!r} runs in a backward pass fn records (create_graph=True); what it computes "
            "from the gradient's data would be frozen into the recording. Register it outside fn's backward pass, "
            "or call fn eagerly")

    def refuse_backward(self) -> None:
        raise RuntimeError(
            "replay: fn computes a gradient itself (backward or grad) while its ops are recorded; a replay "
            "would not compute it again. Return the loss and let the replay backpropagate (or pass "
            "create_graph=True, which records the backward pass as ops)")


def outside_state(fn) -> tuple:
    """What ``fn`` reads from outside its arguments that a recording bakes in, as comparable values:
    numbers and strings as themselves, arrays by their contents, anything else (a Value, a Module, a
    function, a list) by identity, found where ``_reads`` looks. A replay whose recording saw other
    values records again: an annealed weight in a closure, a parameter replaced by a new Value, an
    activation function or a hook swapped, a number changed in a config dict."""
    return tuple(tuple(map(_fingerprint, objects)) for objects in _snapshot(_reads(fn)))


class Outside:
    """``outside_state(fn)`` as a recording saw it, and ``unchanged()``: whether ``fn`` would read the
    same now. Comparing every fingerprint at every call costs more than the rest of a small replayed
    step's overhead, so the objects themselves are kept: when every place read holds the very same
    objects, only the arrays among them can differ (in place), and only they are compared by content.
    Where an object differs, everything is fingerprinted again and compared: an equal number in a new
    object replays, and is compared by identity from then on."""

    def __init__(self, fn):
        self.fn, self._reads = fn, _reads(fn)
        self._objects = _snapshot(self._reads)
        self.state = tuple(tuple(map(_fingerprint, objects)) for objects in self._objects)
        self._arrays = [(o, _fingerprint(o)) for objects in self._objects for o in objects if type(o) is np.ndarray]

    def unchanged(self) -> bool:
        for (read, holder), before in zip(self._reads, self._objects):  # (written out: it runs at every call)
            now = read(holder)
            if len(now) != len(before) or not all(map(operator.is_, now, before)):
                break
        else:
            return all(_fingerprint(array) == seen for array, seen in self._arrays)
        if outside_state(self.fn) != self.state:
            return False
        self.__init__(self.fn)  # equal numbers in new objects: compare those from now on
        return True


def values_read(fn) -> list:
    """The Values among what ``fn`` reads from outside its arguments (``_reads``): those a hook holds."""
    return [x for objects in _snapshot(_reads(fn)) for x in objects if isinstance(x, Value)]


def _reads(fn) -> list:
    """(read, holder) for each place where ``fn`` reads from outside its arguments: ``read(holder)``
    gives the objects there now. From ``fn`` (a function, a bound method, a ``functools.partial``, a
    wrapper with ``__wrapped__``) it follows what it finds:

    - a function's closure cells, the globals its code names (its nested lambdas' and comprehensions'
      too) and its default arguments; a function of the user's code found there is followed in turn,
      up to ``_DEPTH`` steps away (what it reads, fn reads);
    - a Module's attributes, its submodules' at any depth, and the methods of a Module class of the
      user's code; an object of a class of the user's code (a config, a trainer) likewise;
    - the items of lists, tuples and dicts.

    Not followed: this library's functions and those of installed packages, numpy arrays' contents
    beyond their bytes, objects of other classes (docs/replay.md, "Limits")."""
    reads, seen, pending = [], set(), [(fn, 0)]
    while pending:
        obj, depth = pending.pop()
        if id(obj) in seen or depth > _DEPTH:
            continue
        seen.add(id(obj))
        for read, holder in _readers(obj, depth):
            reads.append((read, holder))
            for found in read(holder):
                if not isinstance(found, _NOTHING_INSIDE):
                    pending.append((found, depth if _is_module(found) else depth + 1))
    return reads


_DEPTH = 2
_NOTHING_INSIDE = (type(None), bool, int, float, complex, str, bytes, np.generic, np.ndarray, Value, type,
                   types.ModuleType)
_INSTALLED = tuple({sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")})


def _readers(obj, depth: int) -> list:
    """The (read, holder) pairs that reach into ``obj`` (see ``_reads``)."""
    if isinstance(obj, types.FunctionType):
        if depth and not _users(obj):
            return []
        names = tuple(n for n in _global_names(obj.__code__) if n in obj.__globals__)
        found = [(_cell_contents, obj.__closure__)] if obj.__closure__ else []
        found += [(_globals_named, (obj.__globals__, names))] if names else []
        found += [(_defaults, obj)] if obj.__defaults__ or obj.__kwdefaults__ else []
        return found + ([(_wrapped, obj)] if hasattr(obj, "__wrapped__") else [])
    if isinstance(obj, types.MethodType):
        return [(_method_parts, obj)]
    if isinstance(obj, functools.partial):
        return [(_partial_parts, obj)]
    if isinstance(obj, (list, tuple)):
        return [(tuple, obj)]
    if isinstance(obj, dict):
        return [(_dict_contents, obj)]
    if _is_module(obj) or (hasattr(obj, "__dict__") and _users(type(obj))):
        found = [(_attribute_values, obj)]
        return found + ([(_methods, type(obj))] if _users(type(obj)) else [])
    return []


def _users(obj) -> bool:
    """Whether a function or class is of the user's code: not of this library, Python's standard
    library or an installed package (whose globals are not the user's settings)."""
    package = (getattr(obj, "__module__", None) or "").partition(".")[0]
    if package in ("tinygrad_rnn", "visualize", "builtins"):
        return False
    path = getattr(sys.modules.get(package), "__file__", None)
    return package == "__main__" if path is None else not path.startswith(_INSTALLED)


def _is_module(obj) -> bool:
    return hasattr(obj, "named_parameters") and hasattr(obj, "named_modules")


@functools.cache
def _global_names(code) -> tuple:
    """The names ``code`` and the code nested in it (lambdas, comprehensions, inner functions) look up."""
    names = list(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names += _global_names(const)
    return tuple(dict.fromkeys(names))


_EMPTY = object()  # a closure cell not filled yet


def _cell_contents(cells: tuple) -> list:
    found = []
    for cell in cells:
        try:
            found.append(cell.cell_contents)
        except ValueError:
            found.append(_EMPTY)
    return found


def _globals_named(named: tuple) -> list:
    namespace, names = named
    return [namespace.get(n, _EMPTY) for n in names]


def _defaults(function) -> tuple:
    return (*(function.__defaults__ or ()), *(function.__kwdefaults__ or {}).values())


def _wrapped(function) -> tuple:
    return (function.__wrapped__,)


def _method_parts(method) -> tuple:
    return method.__self__, method.__func__


def _partial_parts(partial) -> tuple:
    return (partial.func, *partial.args, *partial.keywords.values())


def _dict_contents(mapping) -> tuple:
    return (*mapping, *mapping.values())


def _attribute_values(obj) -> tuple:
    return tuple(vars(obj).values())


def _methods(cls) -> tuple:
    return tuple(f for c in _user_classes(cls) for f in vars(c).values() if isinstance(f, types.FunctionType))


@functools.cache
def _user_classes(cls) -> tuple:
    """The classes of ``cls.__mro__`` from the user's code (found once: ``_methods`` runs at every call)."""
    return tuple(c for c in cls.__mro__ if _users(c))


def _snapshot(reads: list) -> list:
    return [tuple(read(holder)) for read, holder in reads]


def _fingerprint(value):
    """A comparable stand-in for ``value``: itself for a number or a string, the bytes of a small array
    (a large one by its identity, shape and dtype), the identity of anything else."""
    if value is None or isinstance(value, (bool, int, float, complex, str, bytes, np.generic)):
        return value
    if isinstance(value, np.ndarray):
        small = value.size <= 100_000
        return ("array", value.shape, value.dtype.str, value.tobytes() if small else id(value))
    return ("object", id(value))


def bindings(ops: list, entries: list, arguments: list) -> list:
    """(entry, attribute, template) for each parameter of a recorded op that holds an integer or
    boolean argument itself (or a tuple holding it): on replay that parameter gets the new array."""
    raw = [a for a in arguments if not isinstance(a, Value)]
    if not raw:
        return []
    found = []
    for entry in entries:
        for name, value in vars(ops[entry]).items():
            template = _template(value, arguments)
            if template is not None:
                found.append((entry, name, template))
    return found


def refuse_derived(ops: list, entries: list, arguments: list) -> None:
    """An op holding, as its parameter, an array numpy computed from an integer argument inside fn
    (``ids + 1``) would keep this call's array on replay: an error naming the op."""
    def derived(value, depth=0):
        if isinstance(value, FromArgument):
            return not any(_is_argument(value, a) for a in arguments)
        return depth < 2 and isinstance(value, (tuple, list)) and any(derived(v, depth + 1) for v in value)

    for entry in entries:
        for name, value in vars(ops[entry]).items() if hasattr(ops[entry], "__dict__") else ():
            if derived(value):
                raise ValueError(
                    f"replay: {ops[entry].name} holds as {name} an array computed with numpy from an integer "
                    "argument inside fn; a replay would reuse this call's. Compute it outside fn and pass it in"
                )


def _is_argument(value, argument) -> bool:
    """Whether ``value`` is the argument itself, or ``np.asarray`` of it (a plain view of the very
    same entries, which library code makes of what it is given)."""
    if value is argument:
        return True
    if not (isinstance(value, np.ndarray) and isinstance(argument, np.ndarray)):
        return False
    return (value.shape == argument.shape and value.strides == argument.strides and value.dtype == argument.dtype
            and value.__array_interface__["data"] == argument.__array_interface__["data"])


def _template(value, arguments: list):
    """``value`` with each argument in it replaced by an Argument marker; None if none is in it."""
    for position, argument in enumerate(arguments):
        if not isinstance(argument, Value) and _is_argument(value, argument):
            return Argument(position)
    if isinstance(value, (tuple, list)):
        parts = [_template(v, arguments) for v in value]
        if any(p is not None for p in parts):
            return type(value)(v if p is None else p for v, p in zip(value, parts))
    return None


def markers(template) -> list:
    if isinstance(template, Argument):
        return [template]
    return [m for part in template for m in markers(part)] if isinstance(template, (tuple, list)) else []


class Argument:
    """Stands for argument ``position`` inside an op's parameter, e.g. an index tuple."""

    def __init__(self, position: int):
        self.position = position


def fill_template(template, arrays: tuple):
    """``template`` with each Argument marker replaced by this call's array."""
    if isinstance(template, Argument):
        return arrays[template.position]
    if isinstance(template, (tuple, list)):
        return type(template)(fill_template(part, arrays) for part in template)
    return template


def same(now, seen) -> bool:
    """Whether a read of data gives what the recording read (NaN reads as NaN)."""
    if isinstance(now, np.ndarray) or isinstance(seen, np.ndarray):
        floats = np.asarray(now).dtype.kind == "f"
        return np.shape(now) == np.shape(seen) and bool(np.array_equal(now, seen, equal_nan=floats))
    return now == seen or (now != now and seen != seen)


# What fn returned: a structure of Values, the loss among them. A replay hands back the same
# structure, made of this call's numbers; so every entry must be something it computes again.

LOSS = object()  # in a returned structure's template: where the loss goes


class Extra:
    """Stands for the ``index``-th Value that fn returned beside its loss."""

    def __init__(self, index: int):
        self.index = index


def returned(output, arguments: list) -> tuple:
    """(loss, template, extras) of what fn returned: a Value (the loss alone: template None), or a
    tuple or list whose first entry is the loss, or a dict whose ``"loss"`` entry is; its other
    entries Values or tuples, lists and dicts of them (``extras``, in order, each in the template as
    an ``Extra``), or an integer or boolean argument itself (an ``Argument``). Anything else (a
    number, a string, an array computed in fn) a replay would hand back as the recording made it, at
    every call: it is refused, with its place named."""
    if isinstance(output, dict):
        if "loss" not in output:
            raise ValueError(f"replay: fn returned a dict without a 'loss' entry (keys {list(output)}); "
                             "a replay backpropagates the entry named 'loss'")
        loss = output["loss"]
    elif isinstance(output, (tuple, list)) and output:
        loss = output[0]
    else:
        return output, None, []
    extras = []

    def template(x, where: str):
        if isinstance(x, Value):
            extras.append(x)
            return Extra(len(extras) - 1)
        if isinstance(x, (tuple, list)):
            parts = [template(item, f"{where}[{k}]") for k, item in enumerate(x)]
            return type(x)(*parts) if hasattr(x, "_fields") else type(x)(parts)  # (a namedtuple takes them apart)
        if isinstance(x, dict):
            return type(x)((key, template(item, f"{where}[{key!r}]")) for key, item in x.items())
        for position, argument in enumerate(arguments):
            if not isinstance(argument, Value) and _is_argument(x, argument):
                return Argument(position)
        what = f"a {type(x).__name__} array of shape {x.shape}" if isinstance(x, np.ndarray) else (
            f"{type(x).__name__} {x!r}" if isinstance(x, (bool, int, float, str, type(None))) else type(x).__name__)
        raise TypeError(
            f"replay: fn returned {what} as {where}, which is not a Value; a replay does not run fn, and would "
            "hand back the first call's at every call. Return Values only (a constant as tg.Value(...)), or "
            "compute it outside fn")

    if isinstance(output, dict):
        shape = type(output)((key, LOSS if key == "loss" else template(item, f"result[{key!r}]"))
                             for key, item in output.items())
    else:
        parts = [LOSS] + [template(item, f"result[{k}]") for k, item in enumerate(output) if k]
        shape = type(output)(*parts) if hasattr(output, "_fields") else type(output)(parts)
    return loss, shape, extras


def handed_back(template, loss: float, extras: list, arrays: tuple):
    """What a call returns: the loss alone (template None), or the structure fn returned holding this
    call's loss, copies of the extras' data (``extras``) and of the integer arguments returned."""
    if template is None:
        return loss
    return _filled(template, loss, [_owned(data) for data in extras], arrays)


def _filled(template, loss: float, extras: list, arrays: tuple):
    if template is LOSS:
        return loss
    if isinstance(template, Extra):
        return extras[template.index]
    if isinstance(template, Argument):
        return arrays[template.position].copy()
    if isinstance(template, (tuple, list)):
        parts = [_filled(part, loss, extras, arrays) for part in template]
        return type(template)(*parts) if hasattr(template, "_fields") else type(template)(parts)
    return type(template)((key, _filled(part, loss, extras, arrays)) for key, part in template.items())


def _owned(data):
    """A returned extra's data as the caller keeps it: a float for one number held as a float or a
    0-d array, else a copy (the compiled function's buffers are written again at the next call)."""
    if type(data) is float:
        return data
    return data.item() if np.ndim(data) == 0 else np.array(data, copy=True)
