"""A recorded tape compiled into one Python function: the forward pass, then the backward pass, one
line per op: backpropagation through time written out, which ``print(step.source)`` shows.

Every line calls the op's own ``forward`` or ``vjp``, the one definition eager mode uses too, so the
compiled function computes exactly what the tape's rows say, in the same order (the same floats as
eager mode): ``v14 = _tanh_3.forward(v13)`` forward, ``g13 = _tanh_3.vjp_term(0, g14, v14, [v13])``
back. What the interpretive loop decided at every call is decided once here: which gradient is the
first to arrive at a slot (assigned) and which are added to it, which rows may hold a lazy sum, which
nodes carry hooks, which ops take this call's integer arguments. A gradient is dropped (``del``) as
soon as its row has used it, as the loop did.
"""

from __future__ import annotations

import ast
import copy
import re

import numpy as np

from tinygrad_rnn.autograd import _run_hooks
from tinygrad_rnn.guards import fill_template, same
from tinygrad_rnn.inline import Emitter, Traced
from tinygrad_rnn.ops import LazySum

__all__ = ["compile_tape", "compile_levels", "FAILED"]

FAILED = object()  # what the compiled function returns when an op's forward raised


def _identifier(text: str) -> str:
    """``text`` as a part of a Python name: ASCII letters, digits and underscores only."""
    return re.sub(r"[^A-Za-z0-9_]", "_", text)


def compile_tape(tape, examples: dict) -> tuple[str, object]:
    """(source, function) for ``tape``: ``function(arrays)`` runs its forward and backward passes on
    this call's arrays and returns the loss's data; None when a read of data (a branch) differs from
    the recording's, FAILED when an op's forward raised. ``examples`` maps each slot to its data and
    gradient on the recorded call: what the inliner (inline.py) decides the ops' branches by. The
    caller has checked the leaves (their versions and kinds)."""
    namespace = {"np": np, "ndarray": np.ndarray, "LazySum": LazySum, "_run_hooks": _run_hooks, "_same": same,
                 "FAILED": FAILED, "_accumulate": _accumulate}
    names: dict = {}

    def bind(obj, stem: str) -> str:
        """A local name for ``obj`` in the compiled function (one per object)."""
        if id(obj) not in names:
            name = f"_{_identifier(stem)}_{len(names)}"  # a leading underscore: never a slot's variable
            names[id(obj)] = name
            namespace[name] = obj
        return names[id(obj)]

    def v(slot: int) -> str:
        """A slot's variable: named after its Value where it has a name (``weight_hh_5``)."""
        name = tape.labels.get(slot, ("", ""))[1]
        return f"v{slot}_{_identifier(str(name))}" if name else f"v{slot}"

    def g(slot: int) -> str:
        return "g" + v(slot)[1:]

    def comment(slot: int) -> str:
        scope = tape.labels.get(slot, ("", ""))[0]
        return f"  # {scope}" if scope else ""

    emitter = Emitter(namespace, bind)
    rebound = {id(tape.ops[entry]) for entry, _, _ in tape.bindings}

    def written(op, function, args, like, fallback: str) -> list[str]:
        """The lines computing ``function(*args)`` (an op's forward or vjp), the last one
        ``result = ...`` with the result as code: inlined from the op's definition where it can be
        and the result is like the recorded one, else ``fallback``, a call of the method."""
        if id(op) not in rebound:  # (an op holding an integer argument gets this call's: it is called)
            emitter.lines = []
            try:
                result = emitter.call(function, *args)
            except Exception:  # inline.Unsupported, or an example the evaluation refused: call the method
                result = None
            if type(result) is Traced and _alike(result.value, like):
                return _tidy(emitter.lines + [f"result = {result.code}"])
        return [f"result = {fallback}"]

    body = []
    for s, position in tape.arguments:
        body.append(f"{v(s)} = arrays[{position}]")
    for s, leaf, _, _ in tape.leaves:
        body.append(f"{v(s)} = {bind(leaf, f'{leaf.name}_leaf' if leaf.name else 'leaf')}._data")
    # Ops whose parameters hold an integer argument get a copy holding this call's array.
    for entry, attribute, template in tape.bindings:
        op = tape.ops[entry]
        name = bind(op, op.name)
        namespace[f"_recorded{name}"] = op
        body.append(f"{name} = {bind(_filler(attribute, template), 'fill')}(_recorded{name}, arrays)")
    body.append("# ---- forward ----")
    body.append("try:")
    for op, ins, out in tape.forward:
        args = ", ".join(v(i) for i in ins)
        if op.name == "detach":
            body.append(f"    {v(out)} = {args}  # detach: the same data, no gradient through it")
            continue
        traced = [Traced(v(i), examples[i][0]) for i in ins]
        lines = written(op, op, traced, examples[out][0], f"{bind(op, op.name)}.forward({args})")
        lines[-1] = lines[-1].replace("result = ", f"{v(out)} = ", 1) + comment(out)
        body.extend("    " + line for line in lines)
    body.append("except (ValueError, IndexError, TypeError):")
    body.append("    return FAILED  # the caller finds the op and says which")
    for s, shape in tape.shape_checks:
        body.append(f"if np.shape({v(s)}) != {shape!r}:")
        body.append("    return None  # another shape from this call's integer arguments: record again")
    for slots, read, constant, seen in tape.observations:
        args = [v(s) for s in slots] + ([bind(constant, "constant")] if constant is not None else [])
        body.append(f"if not _same({bind(read, 'read')}({', '.join(args)}), {bind(seen, 'seen')}):")
        body.append("    return None  # fn read other data this time: record again")
    body.append("# ---- backward: each node once, children before parents (BPTT: the last step first) ----")
    root = tape.root
    body.append(f"{g(root)} = 1.0 if type({v(root)}) is float else np.ones({v(root)}.shape, {v(root)}.dtype)")
    body.append("handed_out = set()")
    arrived = {root}
    for s, op, ins, flows, node, lazy in tape.backward:
        if s not in arrived:
            continue  # no gradient reaches it (the loop skips it too)
        if lazy:
            body.append(f"if isinstance({g(s)}, LazySum):")
            body.append(f"    {g(s)} = {g(s)}.total()")
        if node is not None:
            n = bind(node, "node")
            body.append(f"if {n}.hooks:")
            if op is not None:
                body.append(f"    {n}._data = {v(s)}  # the hook's node shows this call's value")
            body.append(f"    {g(s)} = _run_hooks({n}, {g(s)}, handed_out)")
        if op is None:  # a leaf: its .grad is an array of its own
            body.append(f"_accumulate({n}, {g(s)}, handed_out)")
            continue
        name = bind(op, op.name)
        inputs = [Traced(v(i), examples[i][0]) for i in ins]
        grad, out = Traced(g(s), examples[s][1]), Traced(v(s), examples[s][0])
        for k, parent in flows:
            fallback = f"{name}.vjp_term({k}, {g(s)}, {v(s)}, [{', '.join(v(i) for i in ins)}])"
            lines = written(op, op.vjp_term, (k, grad, out, inputs), examples[parent][0], fallback)
            term = lines[-1].removeprefix("result = ")
            if parent in arrived:
                lines[-1] = f"{g(parent)} = {g(parent)} + {term}"
            else:
                lines[-1] = f"{g(parent)} = {term}{comment(parent)}"
                arrived.add(parent)
            body.extend(lines)
        body.append(f"del {g(s)}")
    body.append(f"return {v(root)}")
    source = "def replayed(arrays):\n" + "\n".join("    " + line for line in body) + "\n"
    exec(compile(source, f"<replay of {len(tape.forward)} ops>", "exec"), namespace)  # noqa: S102
    return source, namespace["replayed"]


def _accumulate(leaf, grad, handed_out: set) -> None:
    """A leaf's gradient added to its ``.grad``, as an array of its own (a copy when a hook or another
    leaf has the array, or it is a view)."""
    if type(grad) is np.ndarray:
        if id(grad) in handed_out or grad.base is not None:
            grad = grad.copy()
        handed_out.add(id(grad))
    leaf.grad = grad if leaf.grad is None else leaf.grad + grad


def _alike(value, like) -> bool:
    """Whether an inlined result is of the recorded kind (a gradient may be a lazy sum)."""
    if isinstance(value, LazySum):
        return True
    return type(value) is type(like) and np.shape(value) == np.shape(like) and (
        type(value) is not np.ndarray or value.dtype == like.dtype)


def _tidy(lines: list[str]) -> list[str]:
    """The lines as Python writes them (no extra parentheses), with each temporary the inliner made
    that is read once put where it is read, and those read nowhere dropped."""
    statements = ast.parse("\n".join(lines)).body
    while True:
        for i, statement in enumerate(statements[:-1]):
            name = statement.targets[0].id
            later = [n for s in statements[i + 1:] for n in ast.walk(s)
                     if isinstance(n, ast.Name) and n.id == name]
            if len(later) <= 1:
                for s in statements[i + 1:]:
                    _Substitute(name, statement.value).visit(s)
                del statements[i]
                break
        else:
            return [ast.unparse(s) for s in statements]


class _Substitute(ast.NodeTransformer):
    def __init__(self, name: str, value):
        self.name, self.value = name, value

    def visit_Name(self, node):
        return self.value if node.id == self.name else node


def _filler(attribute: str, template):
    """A function making a copy of an op that holds this call's integer argument(s) as ``attribute``."""

    def fill(op, arrays):
        made = copy.copy(op)
        setattr(made, attribute, fill_template(template, arrays))
        return made

    return fill


def compile_levels(tape) -> tuple[str, object]:
    """(source, function) for a tape of Python floats (a scalar graph such as micrograd's MLP), run
    level by level: an op's level is one more than its inputs' highest, so the ops of one level
    depend only on earlier levels, and all those of one kind (tanh, or x^2) become one numpy call on
    a vector of slots, through the op's own ``forward`` and ``vjp``. A 65,000-op graph becomes a few
    hundred calls, where straight-line code would be 250,000 lines that Python takes seconds to
    compile. Gradients add up in another order than eager mode's, so they agree to rounding, not bit
    for bit. The caller has checked that every slot is a float, every op elementwise, and no inner
    node carries a hook."""
    namespace = {"np": np, "_run_hooks": _run_hooks, "_same": same}
    level = dict.fromkeys([s for s, _ in tape.arguments] + [s for s, *_ in tape.leaves], 0)
    groups: dict = {}  # (level, kind) -> (op, output slots, input slots per input position)
    for op, ins, out in tape.forward:
        level[out] = 1 + max(level[i] for i in ins)
        kind = (type(op), repr(sorted(vars(op).items())))  # (x^2 and x^3 are not one kind)
        group = groups.setdefault((level[out], kind), (op, [], [[] for _ in ins]))
        group[1].append(out)
        for column, i in zip(group[2], ins):
            column.append(i)

    def bind(obj, stem: str) -> str:
        name = f"_{stem}_{len(namespace)}"
        namespace[name] = obj
        return name

    body = [f"v = np.empty({tape.size})  # slot s holds v{{s}} of the Wengert list (print(tape))"]
    for s, position in tape.arguments:
        body.append(f"v[{s}] = arrays[{position}]")
    leaves = bind([leaf for _, leaf, _, _ in tape.leaves], "leaves")
    body.append(f"v[{bind(np.array([s for s, *_ in tape.leaves], dtype=np.intp), 'leaf_slots')}] = "
                f"[leaf._data for leaf in {leaves}]")
    runs = []
    for (depth, _), (op, outs, columns) in sorted(groups.items(), key=lambda item: item[0][0]):
        op_name = bind(op, _identifier(op.name))
        out = bind(np.array(outs, dtype=np.intp), f"out{depth}")
        ins = [bind(np.array(c, dtype=np.intp), f"in{depth}") for c in columns]
        args = ", ".join(f"v[{i}]" for i in ins)
        call = args if op.name == "detach" else f"{op_name}.forward({args})"
        body.append(f"v[{out}] = {call}  # level {depth}: {len(outs)} x {op.name}")
        runs.append((depth, op, op_name, out, ins, columns))
    for slots, read, constant, seen in tape.observations:
        args = [f"float(v[{s}])" for s in slots] + ([bind(constant, "constant")] if constant is not None else [])
        body.append(f"if not _same({bind(read, 'read')}({', '.join(args)}), {bind(seen, 'seen')}):")
        body.append("    return None  # fn read other data this time: record again")
    body.append("# ---- backward: level by level, the last first; np.add.at where a slot is read twice ----")
    body.append(f"g = np.zeros({tape.size})")
    body.append(f"g[{tape.root}] = 1.0")
    for depth, op, op_name, out, ins, columns in reversed(runs):
        if op.name == "detach":
            continue
        body.append(f"out = {out}")
        inputs = "[" + ", ".join(f"v[{i}]" for i in ins) + "]"
        for k, (i, column) in enumerate(zip(ins, columns)):
            term = f"{op_name}.vjp({k}, g[out], v[out], {inputs})"
            if len(set(column)) == len(column):
                body.append(f"g[{i}] += {term}  # level {depth}")
            else:
                body.append(f"np.add.at(g, {i}, {term})  # level {depth}: a slot read twice")
    body.append("handed_out = set()")
    body.append(f"for s, leaf in zip({bind([s for s, leaf, *_ in tape.leaves], 'slots')}, {leaves}):")
    body.append("    if leaf.requires_grad:")
    body.append("        grad = float(g[s])")
    body.append("        if leaf.hooks:")
    body.append("            grad = _run_hooks(leaf, grad, handed_out)")
    body.append("        leaf.grad = grad if leaf.grad is None else leaf.grad + grad")
    body.append(f"return float(v[{tape.root}])")
    source = "def replayed(arrays):\n" + "\n".join("    " + line for line in body) + "\n"
    exec(compile(source, f"<replay of {len(tape.forward)} ops by level>", "exec"), namespace)  # noqa: S102
    return source, namespace["replayed"]
