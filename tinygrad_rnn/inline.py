"""An op's own definition written out as numpy for the compiled replay: its ``forward`` or ``vjp``
method, partially evaluated with what the recording fixed.

A recording fixes more than the ops: the types, shapes and dtypes of every value, the ops'
parameters, which input a gradient goes to. Evaluating a method's source with those known leaves
the numpy it would run on this call's data, and nothing else: ``Tanh.forward`` (``math.tanh(x) if
type(x) is float else np.tanh(x)``) becomes ``np.tanh(v13)``; ``Elementwise.vjp`` with Tanh's
``derivative`` becomes ``g14 * (1.0 - v14 * v14)``. So the compiled code reads as BPTT written by
hand, yet comes from the one definition of each op: no second table of formulas that could drift.

What is known: constants, the ops, and facts about values (``type``, ``isinstance``, ``.shape``,
``.ndim``, ``.dtype``, ``len``); every ``if`` must be decided by them. What depends on this call's
data is kept as code (``Traced``), its value on the recorded call alongside, so that facts about it
stay known. A method that does more (assigns into an array, loops, opens a context, branches on
data) is not inlined: the compiled code calls it; so is a function from outside the ops (and the
helpers beside them, ``_OWN_MODULES``). Inlined code runs the same numpy calls on the same
operands in the same order, so it gives the same floats as eager mode.
"""

from __future__ import annotations

import ast
import builtins
import functools
import inspect
import math
import operator
import textwrap
import types

import numpy as np

from tinygrad_rnn.ops import Op, shape_of

__all__ = ["Traced", "Emitter", "Unsupported"]


class Traced:
    """A value that depends on this call's data: the code computing it, and its value when recorded."""

    __slots__ = ("code", "value")

    def __init__(self, code: str, value):
        self.code, self.value = code, value


class Unsupported(Exception):
    """The method does more than inlining handles: call it instead."""


# Facts: functions whose result depends only on what a recording fixes (type, shape, dtype).
_FACTS = {type, isinstance, len, shape_of, np.shape, np.ndim, np.result_type}
_FACT_ATTRIBUTES = {"shape", "ndim", "dtype", "size"}
_OPERATORS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.MatMult: "@", ast.Pow: "**",
              ast.Mod: "%", ast.FloorDiv: "//",
              ast.USub: "-", ast.UAdd: "+", ast.Not: "not ", ast.Invert: "~", ast.BitAnd: "&", ast.BitOr: "|",
              ast.Eq: "==", ast.NotEq: "!=", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=",
              ast.Is: "is", ast.IsNot: "is not", ast.In: "in", ast.NotIn: "not in"}
_APPLY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
          ast.Mod: operator.mod, ast.FloorDiv: operator.floordiv,
          ast.MatMult: operator.matmul, ast.Pow: operator.pow, ast.USub: operator.neg, ast.UAdd: operator.pos,
          ast.Not: operator.not_, ast.Invert: operator.invert, ast.BitAnd: operator.and_, ast.BitOr: operator.or_,
          ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
          ast.Gt: operator.gt, ast.GtE: operator.ge, ast.Is: operator.is_, ast.IsNot: operator.is_not,
          ast.In: lambda a, b: a in b, ast.NotIn: lambda a, b: a not in b}
_DEPTH = 6  # how deep calls are followed (a vjp calling an op calling a helper)
# Where the ops' definitions live: the ops, and the helpers they call that moved beside the engine
# (the index and shape notation, the lazy sums), inlined as the ops' own code.
_OWN_MODULES = ("tinygrad_rnn.ops", "tinygrad_rnn.notation", "tinygrad_rnn.lazy_sums")


@functools.cache
def _definition(function) -> ast.FunctionDef:
    tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    return tree.body[0]


def _traced(x) -> bool:
    """Whether ``x`` depends on this call's data (a Traced, or a list or tuple holding one)."""
    return type(x) is Traced or (type(x) in (list, tuple) and any(_traced(item) for item in x))


def _value(x):
    """``x`` on the recorded call."""
    if type(x) is Traced:
        return x.value
    return type(x)(_value(item) for item in x) if type(x) in (list, tuple) else x


class Emitter:
    """Writes lines of a compiled function: ``call(function, *args)`` inlines ``function`` (an op's
    method, bound) on known values and Traced ones and returns the result, its code in ``.code``;
    lines it needs first (a value used twice) go to ``lines``. ``bind`` names an object for the
    generated code, in ``namespace``."""

    def __init__(self, namespace: dict, bind):
        self.namespace, self.bind, self.lines, self.temporaries = namespace, bind, [], 0

    # ---- code for known values ----------------------------------------------------------------

    def code(self, x) -> str:
        if type(x) is Traced:
            return x.code
        if type(x) in (list, tuple):
            inner = ", ".join(self.code(item) for item in x)
            return f"[{inner}]" if type(x) is list else f"({inner}{',' if len(x) == 1 else ''})"
        if x is None or type(x) in (bool, int, str) or (type(x) is float and math.isfinite(x)):
            return repr(x)
        if x is np:
            return "np"
        if isinstance(x, types.MethodType) and isinstance(x.__self__, Op):
            return f"{self.code(x.__self__)}.{x.__name__}"
        if isinstance(x, Op):
            return self.bind(x, x.name)
        name = getattr(x, "__name__", None)
        if name and getattr(np, name, None) is x and not isinstance(x, type):
            return f"np.{name}"  # np.tanh, np.divide
        if name and getattr(math, name, None) is x:
            self.namespace["math"] = math
            return f"math.{name}"
        if isinstance(x, (types.FunctionType, type)) and self.namespace.get(x.__name__, x) is x:
            self.namespace[x.__name__] = x  # unbroadcast, Products: by their own names
            return x.__name__
        return self.bind(x, type(x).__name__.lower())

    def index(self, index) -> str:
        """An index as written between brackets: ``0``, ``:, 1:3``, ``..., None``."""
        parts = index if type(index) is tuple and index else (index,)
        written = []
        for part in parts:
            if type(part) is slice and all(p is None or type(p) is int for p in (part.start, part.stop, part.step)):
                text = ":".join("" if p is None else str(p) for p in (part.start, part.stop, part.step))
                written.append(text[:-1] if text.endswith(":") and part.step is None else text)
            elif part is Ellipsis:
                written.append("...")
            else:
                written.append(self.code(part))
        return ", ".join(written) if type(index) is tuple and len(index) > 1 else written[0]

    # ---- calls ------------------------------------------------------------------------------------

    def call(self, function, *args, depth: int = 0, **kwargs):
        """``function(*args, **kwargs)``, inlined where its definition allows, else called."""
        if any(map(_traced, (*args, *kwargs.values()))):
            if function in _FACTS:
                return function(*map(_value, args), **{k: _value(v) for k, v in kwargs.items()})
            if depth < _DEPTH:
                target = function
                if isinstance(function, Op):
                    target = function.forward  # an op called on raw data runs its forward
                if isinstance(target, (types.FunctionType, types.MethodType)) and target.__module__.startswith(
                        _OWN_MODULES):
                    try:
                        return self._inline(target, args, kwargs, depth)
                    except Unsupported:
                        pass
            return self._emit_call(function, args, kwargs)
        return function(*args, **kwargs)  # nothing depends on the data: known now

    def _emit_call(self, function, args, kwargs):
        if isinstance(function, Op):
            code = f"{self.code(function)}.forward"
        elif type(function) is Traced:
            code, function = function.code, function.value
        else:
            code = self.code(function)
        parts = [self.code(a) for a in args] + [f"{k}={self.code(v)}" for k, v in kwargs.items()]
        value = (function.forward if isinstance(function, Op) else function)(
            *map(_value, args), **{k: _value(v) for k, v in kwargs.items()})
        return Traced(f"{code}({', '.join(parts)})", value)

    def _inline(self, function, args, kwargs, depth):
        definition = _definition(function.__func__ if isinstance(function, types.MethodType) else function)
        signature = inspect.signature(function)
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        env = dict(bound.arguments)
        if isinstance(function, types.MethodType):
            env[next(iter(inspect.signature(function.__func__).parameters))] = function.__self__
        scope = _Scope(self, env, function.__globals__, depth)
        mark = len(self.lines)
        try:
            result = scope.run(definition.body)
        except Unsupported:
            del self.lines[mark:]
            raise
        if result is _NO_RETURN:
            del self.lines[mark:]
            raise Unsupported(function)
        return result

    def temporary(self, name: str, value: Traced) -> Traced:
        """A line ``name_n = code``: a value a definition uses more than once is computed once."""
        self.temporaries += 1
        variable = f"{name}_{self.temporaries}"
        self.lines.append(f"{variable} = {value.code}")
        return Traced(variable, value.value)


_NO_RETURN = object()


class _Scope:
    """One inlined call: its names, and the evaluation of its statements and expressions."""

    def __init__(self, emitter: Emitter, env: dict, globals_: dict, depth: int):
        self.emitter, self.env, self.globals, self.depth = emitter, env, globals_, depth

    def run(self, body: list):
        for statement in body:
            if isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant):
                continue  # a docstring
            if isinstance(statement, ast.Return):
                return self.expr(statement.value) if statement.value is not None else None
            if isinstance(statement, ast.If):
                result = self.run(statement.body if self.decide(statement.test) else statement.orelse)
                if result is not _NO_RETURN:
                    return result
                continue
            if isinstance(statement, ast.Try) and not statement.finalbody and not statement.orelse:
                # Only the body: in compiled code a failing op is explained by calling its method.
                result = self.run(statement.body)
                if result is not _NO_RETURN:
                    return result
                continue
            if isinstance(statement, ast.Assign) and len(statement.targets) == 1:
                self.assign(statement.targets[0], self.expr(statement.value))
                continue
            raise Unsupported(type(statement).__name__)
        return _NO_RETURN

    def assign(self, target, value) -> None:
        if isinstance(target, ast.Name):
            if type(value) is Traced and not value.code.isidentifier():
                value = self.emitter.temporary(target.id, value)
            self.env[target.id] = value
        elif isinstance(target, ast.Tuple) and type(value) in (list, tuple) and len(value) == len(target.elts):
            for part, item in zip(target.elts, value):
                self.assign(part, item)
        else:
            raise Unsupported("assignment")

    def decide(self, node) -> bool:
        """The outcome of a test, which must be known (a container's truth is its length)."""
        test = self.expr(node)
        if type(test) in (list, tuple):
            return len(test) > 0
        if _traced(test):
            raise Unsupported("a branch on data")
        return bool(test)

    def name(self, identifier: str):
        if identifier in self.env:
            return self.env[identifier]
        if identifier in self.globals:
            return self.globals[identifier]
        if hasattr(builtins, identifier):
            return getattr(builtins, identifier)
        raise Unsupported(identifier)

    def expr(self, node):
        method = getattr(self, f"_{type(node).__name__}", None)
        if method is None:
            raise Unsupported(type(node).__name__)
        return method(node)

    def _Constant(self, node):
        return node.value

    def _Name(self, node):
        return self.name(node.id)

    def _Tuple(self, node):
        return tuple(self.expr(e) for e in node.elts)

    def _List(self, node):
        return [self.expr(e) for e in node.elts]

    def _Attribute(self, node):
        base = self.expr(node.value)
        if type(base) is not Traced:
            return getattr(base, node.attr)
        value = getattr(base.value, node.attr)
        return value if node.attr in _FACT_ATTRIBUTES else Traced(f"{base.code}.{node.attr}", value)

    def _Subscript(self, node):
        base, index = self.expr(node.value), self.expr(node.slice)
        if type(base) is Traced or _traced(index):
            return Traced(f"{self.emitter.code(base)}[{self.emitter.index(index)}]", _value(base)[_value(index)])
        return base[index]  # a known sequence (inputs[k] may be a Traced)

    def _Slice(self, node):
        parts = [None if p is None else self.expr(p) for p in (node.lower, node.upper, node.step)]
        if any(map(_traced, parts)):
            raise Unsupported("a slice from data")
        return slice(*parts)

    def _Call(self, node):
        function = self.expr(node.func)
        if any(isinstance(a, ast.Starred) for a in node.args):
            raise Unsupported("*args")
        args = [self.expr(a) for a in node.args]
        kwargs = {k.arg: self.expr(k.value) for k in node.keywords if k.arg is not None}
        if len(kwargs) != len(node.keywords):
            raise Unsupported("**kwargs")
        if type(function) is Traced:
            return self.emitter._emit_call(function, args, kwargs)
        return self.emitter.call(function, *args, depth=self.depth + 1, **kwargs)

    def _IfExp(self, node):
        return self.expr(node.body if self.decide(node.test) else node.orelse)

    def _BoolOp(self, node):
        is_and = isinstance(node.op, ast.And)
        for operand in node.values:
            value = self.expr(operand)
            if _traced(value):
                raise Unsupported("and/or on data")
            if bool(value) is not is_and:
                return value
        return value

    def _UnaryOp(self, node):
        return self._apply(node.op, self.expr(node.operand))

    def _BinOp(self, node):
        return self._apply(node.op, self.expr(node.left), self.expr(node.right))

    def _Compare(self, node):
        if len(node.ops) != 1:
            raise Unsupported("a chained comparison")
        return self._apply(node.ops[0], self.expr(node.left), self.expr(node.comparators[0]))

    def _apply(self, op, *operands):
        if type(op) not in _APPLY:
            raise Unsupported(type(op).__name__)
        function = _APPLY[type(op)]
        if not any(map(_traced, operands)):
            return function(*operands)
        value = function(*map(_value, operands))
        codes = [self.emitter.code(x) for x in operands]
        symbol = _OPERATORS[type(op)]
        text = f"{symbol}{codes[0]}" if len(codes) == 1 else f"{codes[0]} {symbol} {codes[1]}"
        return Traced(f"({text})", value)
