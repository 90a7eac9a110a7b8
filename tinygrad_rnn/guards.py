"""What a recorded call depended on beyond its arguments' shapes, so that a replay never answers
stale (docs/replay.md, "Guards"):

- ``outside_state(fn)``: what ``fn`` reads from its closure and globals (numbers, arrays, the Values
  and numbers of Modules), compared at every call (``Outside``: first by identity, which is cheap);
- ``bindings``: the ops that hold an integer or boolean argument (an index, a target, a mask) as a
  parameter, which a replay hands this call's array (``Argument`` markers, ``fill_template``);
- ``refuse_derived``: an op holding an array numpy computed from such an argument inside ``fn``;
- ``same``: whether a read of data (a branch, a number) gives what the recording read;
- ``returned``: what ``fn`` returned beside its loss (states, outputs), as Values whose data a replay
  computes again at every call; anything else it would hand back stale, so it is refused;
- ``Recorder``: the list the engine appends every op to while a call is recorded.
"""

from __future__ import annotations

import operator

import numpy as np

from tinygrad_rnn.value import Value

__all__ = ["outside_state", "Outside", "bindings", "markers", "refuse_derived", "Argument", "fill_template", "same",
           "Recorder", "FromArgument", "OBSERVED", "returned", "handed_back", "LOSS", "Extra"]


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
    (``observe``); it keeps them as (op, input Values, output Value) in the order they ran."""

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

    def refuse_backward(self) -> None:
        raise RuntimeError(
            "replay: fn computes a gradient itself (backward or grad) while its ops are recorded; a replay "
            "would not compute it again. Return the loss and let the replay backpropagate (or pass "
            "create_graph=True, which records the backward pass as ops)")


def outside_state(fn) -> tuple:
    """What ``fn`` reads from outside its arguments that a recording bakes in, as comparable values:
    the numbers, strings and arrays in its closure cells and in the globals its code names (and, for
    a bound method, its object), and for a Module or Value there which Values it holds, by identity,
    and its numbers. A replay whose recording saw other values records again: an annealed weight in
    a closure, a parameter replaced by a new Value. (What fn reaches through other functions, or
    through attributes of other objects, is not seen: docs/replay.md lists it.)"""
    bound = getattr(fn, "__self__", None)
    fn = getattr(fn, "__func__", fn)
    code = getattr(fn, "__code__", None)
    if code is None:
        return (_fingerprint(fn),)
    cells = []
    for name, cell in zip(code.co_freevars, fn.__closure__ or ()):
        try:
            cells.append((name, _fingerprint(cell.cell_contents)))
        except ValueError:  # a cell not filled yet
            cells.append((name, None))
    names = [(n, _fingerprint(fn.__globals__[n])) for n in code.co_names if n in fn.__globals__]
    return (_fingerprint(bound), tuple(cells), tuple(names))


class Outside:
    """``outside_state(fn)`` as a recording saw it, and ``unchanged()``: whether ``fn`` would read the
    same now. Fingerprinting every Module at every call costs more than the rest of a small replayed
    step's overhead, so the objects the fingerprint read are kept too (each Module's attribute values,
    each closure cell's and global's object): when every one is the very same object, so are their
    fingerprints (numbers and strings cannot change in place, Values are compared by identity anyway).
    Only when one differs is the fingerprint taken again and compared; an array, or a list or tuple
    in a closure, which can change in place, makes every call fingerprint."""

    def __init__(self, fn):
        self.fn, self.state = fn, outside_state(fn)
        self._objects = _read_objects(fn)

    def unchanged(self) -> bool:
        objects = self._objects
        if objects is not None:
            for read, holder, before in objects:  # (written out: it runs at every call)
                now = read(holder)
                if now is None or len(now) != len(before) or not all(map(operator.is_, now, before)):
                    break
            else:
                return True
        if outside_state(self.fn) != self.state:
            return False
        self._objects = _read_objects(self.fn)  # equal numbers in new objects: compare those from now on
        return True


_IMMUTABLE = (type(None), bool, int, float, complex, str, bytes, np.generic, Value)  # (a Value: by identity)


def _cell_contents(cells: tuple):
    try:
        return [cell.cell_contents for cell in cells]
    except ValueError:  # a cell not filled yet
        return None


def _globals_named(named: tuple):
    namespace, names = named
    return [namespace.get(n, Outside) for n in names]  # (Outside: a name not there, never a global's value)


def _attribute_values(module):
    return vars(module).values()


def _read_objects(fn) -> list | None:
    """(read, holder, the objects ``read(holder)`` gave) for everything ``outside_state(fn)`` reads:
    the closure cells' and named globals' objects, and each Module's attribute values (each list's of
    Modules too); None when something read can change in place without a new object (an array, a
    list in a closure): then every call fingerprints."""
    bound = getattr(fn, "__self__", None)
    function = getattr(fn, "__func__", fn)
    code = getattr(function, "__code__", None)
    cells = _cell_contents(tuple(function.__closure__ or ())) if code is not None else None
    if cells is None:
        return None
    named = (function.__globals__, tuple(n for n in code.co_names if n in function.__globals__))
    entries = [(_cell_contents, tuple(function.__closure__ or ()), tuple(cells)),
               (_globals_named, named, tuple(_globals_named(named)))]
    seen = set()  # (a Module two closures share, an RNN's cell and the model's, is read once)
    for value in (bound, *entries[0][2], *entries[1][2]):
        if hasattr(value, "named_parameters") and hasattr(value, "named_modules"):
            entries.extend(_module_objects(value, seen))
        elif not isinstance(value, _IMMUTABLE) and _fingerprint(value) is not None:
            return None  # an array, a list or tuple: compared by fingerprint at every call
    return entries


def _module_objects(module, seen: set) -> list:
    """(read, holder, objects) for each Module and list of Modules that ``_module_fingerprint`` walks
    (but those in ``seen``, which it adds to)."""
    entries, stack = [], [module]
    while stack:
        held = stack.pop()
        if id(held) in seen:
            continue
        seen.add(id(held))
        entries.append((_attribute_values, held, tuple(_attribute_values(held))))
        for v in vars(held).values():
            if hasattr(v, "named_modules"):
                stack.append(v)
            elif isinstance(v, (list, tuple, dict)):
                items = v.values() if isinstance(v, dict) else v
                if not isinstance(v, tuple):  # (a list or a dict can change in place)
                    entries.append((dict.values if isinstance(v, dict) else list.copy, v, tuple(items)))
                stack.extend(m for m in items if hasattr(m, "named_modules"))
    return entries


def _fingerprint(value, depth: int = 0):
    """A comparable stand-in for ``value``: itself for a number or a string, the bytes of a small
    array (a large one by its identity, shape and dtype), the identity of a Value, a Module's
    parameters by identity and its numbers; None for anything else (functions, modules of code)."""
    if value is None or isinstance(value, (bool, int, float, complex, str, bytes, np.generic)):
        return value
    if isinstance(value, Value):
        return ("Value", id(value))
    if isinstance(value, np.ndarray):
        small = value.size <= 100_000
        return ("array", value.shape, value.dtype.str, value.tobytes() if small else id(value))
    if isinstance(value, (tuple, list)) and depth < 2:
        return (type(value).__name__, tuple(_fingerprint(v, depth + 1) for v in value))
    if hasattr(value, "named_parameters") and hasattr(value, "named_modules"):  # a Module
        return ("Module", _module_fingerprint(value))
    return None


def _module_fingerprint(module) -> tuple:
    """A Module's Values by identity and its numbers and strings, its submodules' too (and those in
    lists, tuples and dicts), in attribute order: what a recording read of it, compared cheaply at every call."""
    found, stack = [], [module]
    while stack:
        for v in vars(stack.pop()).values():
            if isinstance(v, Value):
                found.append(id(v))
            elif v is None or isinstance(v, (bool, int, float, str)):
                found.append(v)
            elif hasattr(v, "named_modules"):
                stack.append(v)
            elif isinstance(v, (list, tuple, dict)):  # (PyTorch's ModuleList, ParameterList, ModuleDict)
                items = v.values() if isinstance(v, dict) else v
                stack.extend(m for m in items if hasattr(m, "named_modules"))
                found.extend(id(x) for x in items if isinstance(x, Value))
    return tuple(found)


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
