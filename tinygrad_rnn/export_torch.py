"""to_torch: carry a cell to PyTorch, from the ops it records.

``to_torch(cell)`` calls the cell once on example inputs while a ``Recorder`` (guards.py) keeps every
primitive op it runs, in order: the cell's tape. Each recorded op becomes the PyTorch function of the
same meaning (``Tanh`` -> ``torch.tanh``, ``MatMul`` -> ``torch.matmul``, ``GetItem`` -> indexing),
and the returned ``torch.nn.Module`` runs that list on tensors. Its parameters are copies of the
cell's, under the same dotted names; PyTorch's autograd differentiates the list, so nothing of this
engine's backward pass is carried over: the two agree because each op means the same thing.

What a recording cannot carry is refused, naming the op or the read:

- an op with no PyTorch counterpart here (a primitive of your own: add it to ``_translations``);
- Python reading a Value's data (a branch on ``h.sum() > 0``, ``.item()``): the torch forward
  would not branch again;
- anything that changes with the batch other than the batch size itself. The cell is recorded twice,
  with batches of 2 and 3 rows: a shape entry that differs between them (a reshape to (B, 4)) follows
  the batch size linearly, and a constant of the batch's shape must hold one number throughout (the
  zeros of a state); a constant that differs otherwise (a mask computed from the data) is refused.

torch is imported inside ``to_torch`` only: it is never a dependency of this package.
"""

from __future__ import annotations

import operator

import numpy as np

from tinygrad_rnn.autograd import CLOCK, STATE, enable_grad
from tinygrad_rnn.guards import OBSERVED, Recorder
from tinygrad_rnn.ops import raw
from tinygrad_rnn.value import Value

__all__ = ["to_torch", "ExportError"]

RECORDED_BATCHES = (2, 3)


class ExportError(ValueError):
    """A cell whose recording cannot be carried to PyTorch as it stands."""


# ---- recording ------------------------------------------------------------------------------------

def _parts(state) -> list:
    return list(state) if isinstance(state, (tuple, list)) else [state]


def _record(cell, batch: int, dtype) -> tuple:
    """(records, inputs, output): the ops of one call ``cell(x, state)`` on random data of ``batch``
    rows, the input Values [x, *state parts], and what the cell returned."""
    rng = np.random.default_rng(batch)
    start = cell.initial_state(batch)
    x = Value(rng.normal(size=(batch, cell.input_size)).astype(dtype), name="x")
    parts = [Value(rng.normal(size=np.shape(raw(p))).astype(np.result_type(raw(p))) * 0.5) for p in _parts(start)]
    state = tuple(parts) if isinstance(start, (tuple, list)) else parts[0]
    previous, STATE.tape = STATE.tape, Recorder()
    try:
        with enable_grad():
            output = cell(x, state)
        records = STATE.tape
    finally:
        STATE.tape = previous
    return records, [x, *parts], output


def _check_cell(cell) -> None:
    # (Read as nn.Module's methods, not imported: nn is built on this layer, not the other way.)
    missing = [name for name in ("named_parameters", "input_size", "initial_state") if not hasattr(cell, name)]
    if missing:
        raise TypeError(f"to_torch: {type(cell).__name__} has no {' or '.join(missing)}; a cell (a Module) needs "
                        "input_size and initial_state(batch_size) so that it can be called on example inputs")


# ---- the translation of each op -------------------------------------------------------------------

def _follow(first: tuple, second: tuple, where: str) -> list:
    """A shape recorded at batch sizes 2 and 3 as (slope, intercept) per entry: entry = slope B + intercept."""
    if len(first) != len(second):
        raise ExportError(f"to_torch: {where} has {len(first)} axes at batch 2 and {len(second)} at batch 3")
    (b1, b2), entries = RECORDED_BATCHES, []
    for a, b in zip(first, second):
        slope = (b - a) // (b2 - b1)
        entries.append((slope, a - slope * b1))
    return entries


def _shape(entries: list, batch: int) -> tuple:
    return tuple(slope * batch + intercept for slope, intercept in entries)


def _shape_text(entries: list) -> str:
    """A shape that follows the batch as the source prints it: ``B, 3, 1``, ``2*B, 4``."""
    def entry(slope, intercept):
        if slope == 0:
            return str(intercept)
        text = "B" if slope == 1 else f"{slope}*B"
        return text if intercept == 0 else f"{text} {'+' if intercept > 0 else '-'} {abs(intercept)}"
    return ", ".join(entry(*e) for e in entries)


def _same_index(a, b) -> bool:
    a, b = (a if isinstance(a, tuple) else (a,)), (b if isinstance(b, tuple) else (b,))
    if len(a) != len(b):
        return False
    for p, q in zip(a, b):
        if isinstance(p, np.ndarray) or isinstance(q, np.ndarray):
            if not (isinstance(p, np.ndarray) and isinstance(q, np.ndarray) and np.array_equal(p, q)
                    and p.dtype == q.dtype):
                return False
        elif repr(p) != repr(q):
            return False
    return True


def _translations(torch) -> dict:
    """op name -> make(op, same op at the other batch size) -> (function(batch, *inputs), name to print).

    Each entry is the PyTorch function of the same meaning as the op class of that name in
    tinygrad_rnn/ops/ (its docstring states the forward; its derivative is PyTorch's business)."""
    F = torch.nn.functional

    def tensor(x):
        return x if isinstance(x, torch.Tensor) else torch.tensor(x, dtype=torch.float64)

    def plain(function, name):
        return lambda op, other: ((lambda batch, *xs: function(*xs)), name)

    def unary(function, name):
        return lambda op, other: ((lambda batch, x: function(tensor(x))), name)

    def pow_(op, other):
        if op.exponent is None:
            return (lambda batch, a, b: torch.pow(a, b)), "torch.pow"
        return (lambda batch, a: torch.pow(tensor(a), op.exponent)), f"torch.pow(·, {op.exponent:g})"

    def clip(op, other):
        lo, hi = (b if b is None or isinstance(b, float) else torch.as_tensor(np.asarray(b)) for b in (op.lo, op.hi))
        return (lambda batch, x: torch.clamp(tensor(x), lo, hi)), f"torch.clamp(·, {op.lo}, {op.hi})"

    def where(op, other):
        if op.cond.shape == other.cond.shape:
            if not np.array_equal(op.cond, other.cond):
                raise ExportError("to_torch: where's condition differs between two calls (computed from the data?)")
            cond = torch.as_tensor(op.cond)
            return (lambda batch, a, b: torch.where(cond, tensor(a), tensor(b))), f"torch.where(mask{op.cond.shape}, ·)"
        uniform = [c.size and (c.all() or not c.any()) for c in (op.cond, other.cond)]
        if all(uniform) and op.cond.flat[0] == other.cond.flat[0]:
            entries, fill = _follow(op.cond.shape, other.cond.shape, "where's condition"), bool(op.cond.flat[0])
            def run(batch, a, b):
                a, b = tensor(a), tensor(b)
                return torch.where(torch.full(_shape(entries, batch), fill, device=a.device), a, b)
            return run, f"torch.where({fill}, ·)"
        raise ExportError("to_torch: where's condition has the batch's shape and differs from row to row "
                          "(computed from the data?); a recording cannot carry it")

    def cast(op, other):
        dtype = getattr(torch, str(op.dtype))
        return (lambda batch, x: tensor(x).to(dtype)), f".to({dtype})"

    def reduction(function, name):
        def make(op, other):
            def run(batch, x):
                axis = tuple(range(x.dim())) if op.axis is None else op.axis
                return function(x, dim=axis, keepdim=op.keepdims)
            return run, f"{name}(·, dim={op.axis}, keepdim={op.keepdims})"
        return make

    def shaped(method, name):
        def make(op, other):
            entries = _follow(op.shape, other.shape, name)
            return (lambda batch, x: getattr(x, method)(_shape(entries, batch))), f".{method}({_shape_text(entries)})"
        return make

    def transpose(op, other):
        return (lambda batch, x: x.permute(op.axes)), f".permute{op.axes}"

    def getitem(op, other):
        if not _same_index(op.index, other.index):
            raise ExportError("to_torch: an index (getitem) differs between batches of 2 and 3 rows; a recording "
                              "cannot carry an index that changes with the data or the batch")
        parts = op.index if isinstance(op.index, tuple) else (op.index,)
        index = tuple(torch.as_tensor(p) if isinstance(p, np.ndarray) else p for p in parts)
        index = index if isinstance(op.index, tuple) else index[0]
        return (lambda batch, x: x[index]), op.params()['index']

    def concat(op, other):
        return (lambda batch, *xs: torch.cat([tensor(x) for x in xs], dim=op.axis)), f"torch.cat([·], dim={op.axis})"

    def stack(op, other):
        return (lambda batch, *xs: torch.stack([tensor(x) for x in xs], dim=op.axis)), \
            f"torch.stack([·], dim={op.axis})"

    def leaky_relu(op, other):
        return (lambda batch, x: F.leaky_relu(tensor(x), op.slope)), f"F.leaky_relu(·, {op.slope:g})"

    return {
        "add": plain(operator.add, "+"), "sub": plain(operator.sub, "-"), "mul": plain(operator.mul, "*"),
        "div": plain(operator.truediv, "/"), "neg": plain(operator.neg, "-"), "matmul": plain(torch.matmul, "@"),
        "maximum": plain(lambda a, b: torch.maximum(tensor(a), tensor(b)), "torch.maximum"),
        "minimum": plain(lambda a, b: torch.minimum(tensor(a), tensor(b)), "torch.minimum"),
        "exp": unary(torch.exp, "torch.exp"), "log": unary(torch.log, "torch.log"),
        "tanh": unary(torch.tanh, "torch.tanh"), "sigmoid": unary(torch.sigmoid, "torch.sigmoid"),
        "relu": unary(torch.relu, "torch.relu"), "abs": unary(torch.abs, "torch.abs"),
        "sqrt": unary(torch.sqrt, "torch.sqrt"), "log1p": unary(torch.log1p, "torch.log1p"),
        "softplus": unary(F.softplus, "F.softplus"),
        "pow": pow_, "clip": clip, "where": where, "cast": cast, "leaky_relu": leaky_relu,
        "sum": reduction(torch.sum, "torch.sum"), "max": reduction(torch.amax, "torch.amax"),
        "reshape": shaped("reshape", "reshape"), "broadcast_to": shaped("expand", "broadcast_to"),
        "transpose": transpose, "getitem": getitem, "concat": concat, "stack": stack,
    }


# Ops whose parameters the translation above reads itself; any other op must record the same
# parameters at both batch sizes (and, to be translated at all, have none that the table ignores).
_PARAMETERS_READ = {"pow", "clip", "where", "cast", "leaky_relu", "sum", "max", "reshape", "broadcast_to",
                    "transpose", "getitem", "concat", "stack"}


def _call_text(text: str, symbols: list) -> str:
    """How the source prints one call: ``a @ b``, ``-a``, ``h.permute(1, 0)``, ``g[..., 0:4]``,
    ``torch.clamp(x, 0.0, None)`` (· stands for the input) or ``torch.tanh(x)``."""
    if text in ("+", "-", "*", "/", "@") and len(symbols) == 2:
        return f"{symbols[0]} {text} {symbols[1]}"
    if text == "-":
        return f"-{symbols[0]}"
    if text.startswith((".", "[")):
        return symbols[0] + text
    if "·" in text:
        return text.replace("·", ", ".join(symbols))
    return f"{text}({', '.join(symbols)})"


# ---- the program ----------------------------------------------------------------------------------

class _Program:
    """The cell's tape as PyTorch calls: ``steps`` of (function, input symbols, output symbol, text),
    leaves by symbol (``inputs``, ``params``, ``constants``), and the output's symbols."""

    def __init__(self, cell, torch):
        dtype = np.result_type(*[raw(p.data) for p in cell.parameters()]) if cell.parameters() else np.float64
        self.started = next(CLOCK)  # a Value made before the recordings outlives a call (a closure's, a global's)
        first, second = (_record(cell, batch, dtype) for batch in RECORDED_BATCHES)
        self.table = _translations(torch)
        self.symbols: dict = {}
        self.params = {id(p): name for name, p in cell.named_parameters()}
        self.param_symbols: list = []  # the parameters the ops read, by name
        self.constants: dict = {}  # symbol -> ("tensor", array) | ("number", float) | ("full", entries, value, dtype)
        self.steps: list = []
        self.state_is_tuple = isinstance(cell.initial_state(1), (tuple, list))
        self.state_shapes = [(_follow(np.shape(raw(a.data)), np.shape(raw(b.data)), "the state"),
                              np.result_type(raw(a.data))) for a, b in zip(first[1][1:], second[1][1:])]
        for k, value in enumerate(first[1]):
            self.symbols[id(value)] = "x" if k == 0 else f"state[{k - 1}]"
        self._translate(first[0], second[0])
        out_a, out_b = first[2], second[2]
        self.output_is_tuple = isinstance(out_a, (tuple, list))
        self.outputs = [self._leaf(a, b) for a, b in zip(_parts(out_a), _parts(out_b))]
        self.name = type(cell).__name__

    def _translate(self, records_a: list, records_b: list) -> None:
        if len(records_a) != len(records_b):
            raise ExportError(f"to_torch: the cell runs {len(records_a)} ops on a batch of 2 rows and "
                              f"{len(records_b)} on 3: what it does depends on the data or the batch")
        for (op, inputs, node), (other, inputs_b, _) in zip(records_a, records_b):
            if op is OBSERVED or other is OBSERVED:
                read = node[0].__name__ if op is OBSERVED else "its data"
                raise ExportError(f"to_torch: the cell reads a Value's data in Python ({read}: a branch or a number "
                                  "taken out); a recorded forward would not read it again. Write it with ops "
                                  "(where, maximum, clip) instead")
            name = "detach" if op is None else op.name
            if (None if other is None else other.name) != (None if op is None else op.name):
                raise ExportError(f"to_torch: the cell runs {name} on a batch of 2 rows where it runs "
                                  f"{getattr(other, 'name', 'detach')} on 3: what it does depends on the data")
            symbols = [self._leaf(a, b) for a, b in zip(inputs, inputs_b)]
            if op is None:
                function, text = (lambda batch, x: x.detach()), ".detach()"
            else:
                make = self.table.get(name)
                if make is None or (name not in _PARAMETERS_READ and op.params()):
                    raise ExportError(f"to_torch: op {name!r} ({type(op).__module__}.{type(op).__name__}) has no "
                                      "PyTorch translation; add one to tinygrad_rnn/export_torch.py's _translations")
                if name not in _PARAMETERS_READ and repr(op.params()) != repr(other.params()):
                    raise ExportError(f"to_torch: op {name!r} is recorded with parameters {op.params()} and "
                                      f"{other.params()} at two batch sizes")
                function, text = make(op, other)
            out = f"v{len(self.steps)}"
            self.symbols[id(node)] = out
            self.steps.append((function, symbols, out, f"{out} = {_call_text(text, symbols)}"))

    def _leaf(self, a: Value, b: Value) -> str:
        """The symbol of a Value read by an op: an input, a parameter, an op's result, or a constant
        (made here, from the two recordings' data)."""
        if id(a) in self.symbols:
            return self.symbols[id(a)]
        if id(a) in self.params:
            symbol = self.params[id(a)]
            self.param_symbols.append(symbol)
        elif a.requires_grad and a._made < self.started:  # a closure's or a global's: torch would never train it
            name = f" {a.name!r}" if a.name else ""
            made = "made by " + a.op.name if a.op is not None else "a leaf"
            raise ExportError(f"to_torch: the cell reads a Value{name} of shape {a.shape} ({made}) that needs a "
                              "gradient but is not one of its parameters; make it an attribute of the Module (or "
                              "of a list or dict there) so that it is a parameter, or give it requires_grad=False "
                              "to export it as a constant")
        else:
            constant = self._constant(raw(a.data), raw(b.data))
            symbol = repr(constant[1]) if constant[0] == "number" else f"constant{len(self.constants)}"
            self.constants[symbol] = constant
        self.symbols[id(a)] = symbol
        return symbol

    def _constant(self, a, b) -> tuple:
        if type(a) is float:
            if a != b and not (a != a and b != b):
                raise ExportError(f"to_torch: a constant number differs between two calls ({a} and {b})")
            return ("number", a)
        a, b = np.asarray(a), np.asarray(b)
        if a.shape == b.shape:
            if not np.array_equal(a, b, equal_nan=a.dtype.kind == "f"):
                raise ExportError(f"to_torch: a constant of shape {a.shape} differs between two calls (computed from "
                                  "the data, or drawn at random?); a recording cannot carry it")
            return ("tensor", a.copy())
        if a.size and np.all(a == a.flat[0]) and b.size and np.all(b == a.flat[0]):
            return ("full", _follow(a.shape, b.shape, "a constant"), a.flat[0].item(), a.dtype)
        raise ExportError(f"to_torch: a constant has the batch's shape ({a.shape}) and differs from entry to entry "
                          "(computed from the data?); a recording cannot carry it")

    def source(self) -> str:
        """The program as text: one line per recorded op."""
        head = f"# {self.name} as PyTorch calls; inputs x, state; parameters by name"
        out = ", ".join(self.outputs)
        return "\n".join([head, *(text for *_, text in self.steps), f"return {out}"])


def to_torch(cell):
    """A ``torch.nn.Module`` that computes ``cell``'s step: ``forward(x, state=None) -> new state``.

    ``cell``: a Module with ``forward(x, state)``, ``input_size`` and ``initial_state(batch_size)``
    (every built-in cell, and any cell written as examples/cells/ writes them). ``x`` is (B, I), the
    state a tensor or a tuple of tensors as the cell's own; None means the cell's zeros.

    The parameters are ``torch.nn.Parameter`` copies of the cell's, under the same dotted names
    (``named_parameters()`` lists the same names in the same order) and dtypes; the module's forward
    runs the ops the cell recorded, each as the PyTorch function of the same meaning, so its outputs
    and PyTorch's gradients are this engine's to rounding. ``module.source`` prints that list.
    Refuses (``ExportError``, naming the op or the read) what a recording cannot carry: see the
    module's docstring. torch is imported here and nowhere else.
    """
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is optional
        raise ImportError("to_torch needs PyTorch: pip install torch") from None
    _check_cell(cell)
    program = _Program(cell, torch)
    parameters = dict(cell.named_parameters())

    class TorchCell(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.program_source = program.source()
            for name, value in parameters.items():
                owner, *path = name.split(".")[::-1]
                module = self
                for part in reversed(path):
                    if part not in module._modules:
                        module.add_module(part, torch.nn.Module())
                    module = module._modules[part]
                data = torch.tensor(np.array(raw(value.data)))
                module.register_parameter(owner, torch.nn.Parameter(data, requires_grad=value.requires_grad))
            for symbol, constant in program.constants.items():
                if constant[0] == "tensor":
                    self.register_buffer(symbol, torch.as_tensor(constant[1]), persistent=False)

        @property
        def source(self) -> str:
            return self.program_source

        def _zeros(self, batch: int, device):
            zeros = [torch.zeros(_shape(entries, batch), dtype=getattr(torch, str(dtype)), device=device)
                     for entries, dtype in program.state_shapes]
            return tuple(zeros) if program.state_is_tuple else zeros[0]

        def forward(self, x, state=None):
            batch = x.shape[0]
            state = self._zeros(batch, x.device) if state is None else state
            parts = list(state) if program.state_is_tuple else [state]
            if len(parts) != len(program.state_shapes):
                raise ValueError(f"{program.name}: the state has {len(program.state_shapes)} parts, got {len(parts)}")
            env = {"x": x, **{f"state[{k}]": p for k, p in enumerate(parts)}}
            for symbol in program.param_symbols:
                env[symbol] = self.get_parameter(symbol)
            for symbol, constant in program.constants.items():
                kind = constant[0]
                if kind == "tensor":
                    env[symbol] = getattr(self, symbol)
                elif kind == "number":
                    env[symbol] = constant[1]
                else:
                    _, entries, fill, dtype = constant
                    env[symbol] = torch.full(_shape(entries, batch), fill, dtype=getattr(torch, str(dtype)),
                                             device=x.device)
            for function, inputs, out, _ in program.steps:
                env[out] = function(batch, *[env[s] for s in inputs])
            outputs = [env[s] for s in program.outputs]
            return tuple(outputs) if program.output_is_tuple else outputs[0]

        def extra_repr(self) -> str:
            return f"from tinygrad_rnn {program.name}, {len(program.steps)} ops"

    TorchCell.__name__ = TorchCell.__qualname__ = f"Torch{program.name}"
    return TorchCell()
