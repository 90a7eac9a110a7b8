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
from tinygrad_rnn.ops.movement import Scattered
from tinygrad_rnn.ops.reduce import Products

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

    def written(op, function, args, like, fallback: str) -> tuple[list[str], object, bool]:
        """(lines, value, known): the lines computing ``function(*args)`` (an op's forward or vjp),
        the last one ``result = ...`` with the result as code; the result on the recorded call; and
        whether it is known when compiling (it depends on no data: the loss's seed, spread back
        through a sum). Inlined from the op's definition where it can be and the result is like the
        recorded one; else ``fallback``, a call of the method, whose result is not known (None)."""
        if id(op) not in rebound:  # (an op holding an integer argument gets this call's: it is called)
            emitter.lines = []
            try:
                result = emitter.call(function, *args)
            except Exception:  # inline.Unsupported, or an example the evaluation refused: call the method
                result = None
            if type(result) is Traced and _alike(result.value, like):
                return _tidy(emitter.lines + [f"result = {result.code}"]), result.value, False
            if result is not None and type(result) is not Traced and not isinstance(result, LazySum) and _alike(
                    result, like):  # (a lazy sum grows as terms are added: each call makes its own)
                return [f"result = {emitter.code(result)}"], result, True
        return [f"result = {fallback}"], None, False

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
    stacked, stacks = _stacks(tape, examples)  # slot -> (buffer, row) for the stacks' rows; stack -> buffer
    transposed = _reused_transposes(tape, examples)  # W^T's slot -> W's slot, for a weight used at every step
    for op, ins, out in tape.forward:
        args = ", ".join(v(i) for i in ins)
        if op.name == "detach":
            body.append(f"    {v(out)} = {args}  # detach: the same data, no gradient through it")
            continue
        if out in stacks:
            body.append(f"    {v(out)} = {bind(stacks[out], 'stacked')}  # stack: each row written as it was made")
            continue
        traced = [Traced(v(i), examples[i][0]) for i in ins]
        lines, _, _ = written(op, op, traced, examples[out][0], f"{bind(op, op.name)}.forward({args})")
        lines[-1] = lines[-1].replace("result = ", f"{v(out)} = ", 1) + comment(out)
        if out in transposed:  # made contiguous once: a matmul with a transposed view is slower
            lines[-1] = f"{v(out)} = np.ascontiguousarray({lines[-1].partition(' = ')[2]})"
        if out in stacked:
            lines[-1:] = _written_into(lines[-1], f"{bind(stacked[out][0], 'stacked')}[{stacked[out][1]}]", v(out))
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
    hoisted_at = len(body)  # (where the expressions the backward pass hoists are computed)
    root = tape.root
    # The seed, dL/dL, is known when compiling (ones like the loss, as eager backward makes it), and so
    # is what a sum spreads of it, unless a hook may change it.
    loss = examples[root][0]
    seed = 1.0 if type(loss) is float else np.ones(np.shape(loss), np.result_type(loss))
    known, constants = {}, []  # slot -> its gradient, when known; the arrays that are such gradients
    if all(node is None for s, _, _, _, node, _ in tape.backward if s == root):
        known[root] = seed
    body.append(f"{g(root)} = {emitter.code(seed)}  # dL/dL")
    # First the terms: each edge's vjp, written out, and what arrives at each slot in order.
    terms, arriving, reached = {}, {}, {root}
    for row, (s, op, ins, flows, node, _) in enumerate(tape.backward):
        if s not in reached or op is None:
            continue  # no gradient reaches it (the loop skips it too), or a leaf
        if s != root and len(arriving[s]) == 1 and terms[arriving[s][0]][2] and node is None:
            known[s] = terms[arriving[s][0]][1]
        inputs = [Traced(v(i), examples[i][0]) for i in ins]
        grad, out = known.get(s, Traced(g(s), examples[s][1])), Traced(v(s), examples[s][0])
        for k, parent in flows:
            fallback = f"{bind(op, op.name)}.vjp_term({k}, {g(s)}, {v(s)}, [{', '.join(v(i) for i in ins)}])"
            terms[row, k] = written(op, op.vjp_term, (k, grad, out, inputs), examples[parent][0], fallback)
            if terms[row, k][2] and isinstance(terms[row, k][1], np.ndarray):
                constants.append(terms[row, k][1])
            arriving.setdefault(parent, []).append((row, k))
            reached.add(parent)
    arriving = {s: [terms[key][1] for key in keys] for s, keys in arriving.items()}
    plans = {s: _plan(values, examples[s][0]) for s, values in arriving.items()}
    # A buffer is never a leaf's gradient, nor one a hook is shown (it marks it read-only).
    exposed = {s for s, op, _, _, node, _ in tape.backward if op is None or node is not None}
    plans = {s: plan for s, plan in plans.items() if plan is not None and not (plan[0] == "rows" and s in exposed)}
    # A known array is the compiled function's own: a leaf that gets it takes a copy.
    body.append(f"handed_out = {{{', '.join(f'id({emitter.code(c)})' for c in constants)}}}" if constants
                else "handed_out = set()")
    seen = {}  # slot -> how many terms have arrived
    for row, (s, op, _, flows, node, _) in enumerate(tape.backward):
        if s not in reached:
            continue
        if s in plans:
            body.extend(_complete(g(s), plans[s], bind))
        elif arriving.get(s) and any(t is None or isinstance(t, LazySum) for t in arriving[s]):
            body.append(f"if isinstance({g(s)}, LazySum):")  # a sum kept as its terms (Products, Scattered)
            body.append(f"    {g(s)} = {g(s)}.total()")
        if op is None:  # a leaf: its hooks, then its .grad, an array of its own
            name = f"{tape.labels.get(s, ('', ''))[1]}_leaf" if tape.labels.get(s, ("", ""))[1] else "leaf"
            body.append(f"_accumulate({bind(node, name)}, {g(s)}, handed_out)")
            continue
        if node is not None:
            n = bind(node, "node")
            body.append(f"if {n}.hooks:")
            body.append(f"    {n}._data = {v(s)}  # the hook's node shows this call's value")
            body.append(f"    {g(s)} = _run_hooks({n}, {g(s)}, handed_out)")
        for k, parent in flows:
            lines, value, _ = terms[row, k]
            term = lines[-1].removeprefix("result = ")
            i = seen[parent] = seen.get(parent, -1) + 1
            if parent in plans:
                lines[-1:] = _into_rows(g(parent), term, plans[parent], i, bind)
            elif i:
                lines[-1] = f"{g(parent)} = {g(parent)} + {term}"
            else:
                lines[-1] = f"{g(parent)} = {term}{comment(parent)}"
            body.extend(lines)
        body.append(f"del {g(s)}")
    body.append(f"return {v(root)}")
    rows = {v(slot): (bind(buffer, "stacked"), row) for slot, (buffer, row) in stacked.items()}
    body[hoisted_at:] = _hoist(body[hoisted_at:], rows)
    body[hoisted_at:] = _untranspose(body[hoisted_at:], {v(t): v(w) for t, w in transposed.items()})
    source = "def replayed(arrays):\n" + "\n".join("    " + line for line in body) + "\n"
    exec(compile(source, f"<replay of {len(tape.forward)} ops>", "exec"), namespace)  # noqa: S102
    return source, namespace["replayed"]


# ---- the memory plan: a slot's gradient summed from terms written into rows of buffers ------------
#
# A weight used at every time step gets one product a_t^T g_t per step (MatMul's vjp keeps them as
# ``Products``), and an array read row by row (X[t]) gets one scattered row per step (``Scattered``).
# Eager mode collects those terms at run time; the compiled code knows them all when compiling, so
# each term is written into the rows of buffers made once for the recording (they live across calls:
# no page faults, no lists of terms), and the sum is one matmul over the rows (in the blocks that
# ``Products.total`` uses, so the floats are the same) or the filled buffer itself.


def _stacks(tape, examples: dict) -> tuple[dict, dict]:
    """({slot: (buffer, row)}, {stack's slot: buffer}) for each stack along axis 0 of distinct op
    results of one shape and dtype (an RNN's hidden states): each is written into its row of one
    buffer as soon as it is made, and the stack is the buffer, with no copy at the end."""
    made = {out for _, _, out in tape.forward}
    stacked, stacks = {}, {}
    for op, ins, out in tape.forward:
        if op.name != "stack" or op.axis != 0 or len(set(ins)) != len(ins) or not set(ins) <= made:
            continue
        rows = [examples[i][0] for i in ins]
        like = examples[out][0]
        if any(type(r) is not np.ndarray or r.shape != like.shape[1:] or r.dtype != like.dtype for r in rows):
            continue
        if any(i in stacked for i in ins):
            continue  # (a state in two stacks keeps its first)
        stacks[out] = buffer = np.empty(like.shape, like.dtype)
        stacked.update((i, (buffer, row)) for row, i in enumerate(ins))
    return stacked, stacks


def _written_into(line: str, row: str, variable: str) -> list[str]:
    """A forward line ``v16 = np.tanh(v15)  # t=1`` made to write its result into ``row`` of a buffer:
    ``np.tanh(v15, out=row)`` for a numpy ufunc (no copy), else the line and a copy into the row."""
    code, _, note = line.partition("  # ")
    value = ast.parse(code).body[0].value
    function = value.func if isinstance(value, ast.Call) else None
    if (isinstance(function, ast.Attribute) and isinstance(function.value, ast.Name) and function.value.id == "np"
            and isinstance(getattr(np, function.attr, None), np.ufunc) and not value.keywords
            and len(value.args) == getattr(np, function.attr).nin):
        value.keywords.append(ast.keyword("out", ast.parse(row, mode="eval").body))
        return [f"{variable} = {ast.unparse(value)}" + (f"  # {note}" if note else "")]
    return [line, f"{row} = {variable}"]


def _plan(values: list, like):
    """How the terms ``values`` arriving at a slot are summed: ("product",) for one matmul's a^T g,
    ("products", rows of a, rows of g, blocks) or ("rows", buffer), or None (as they come)."""
    if len(values) == 1 and type(values[0]) is Products:
        return ("product",)
    if len(values) < 2 or any(type(t) is not type(values[0]) for t in values):
        return None
    if type(values[0]) is Products:
        a, g = [t.terms[0][0] for t in values], [t.terms[0][1] for t in values]
        if any(x.shape != a[0].shape for x in a) or any(x.shape != g[0].shape for x in g) or a[0].ndim != 2:
            return None
        blocks, start, rows = [], 0, 0
        for end in range(1, len(a) + 1):  # Products.total's blocks
            rows += a[0].shape[0]
            if rows >= Products.BLOCK_ROWS or end == len(a):
                blocks.append((start, end))
                start, rows = end, 0
        return ("products", np.empty((len(a), *a[0].shape), np.result_type(*a)),
                np.empty((len(g), *g[0].shape), np.result_type(*g)), blocks)
    if type(values[0]) is Scattered:
        rows = [t.terms[0][0] for t in values]
        shape = values[0].terms[0][1]
        if not shape or sorted(r for r in rows if type(r) is int) != list(range(shape[0])) or len(rows) != shape[0]:
            return None
        return ("rows", np.empty(shape, np.result_type(*[t.terms[0][2] for t in values], np.float32)))
    return None


def _into_rows(name: str, term: str, plan: tuple, i: int, bind) -> list[str]:
    """The lines writing the i-th term (its code: ``Products(a, g)``, ``Scattered(index, shape, g)``)
    into the plan's buffers."""
    call = ast.parse(term, mode="eval").body
    args = [ast.unparse(a) for a in call.args]
    if plan[0] == "product":  # (Products.total of one term)
        return [f"{name} = {args[0]}.T @ {args[1]}"]
    if plan[0] == "products":
        return [f"{bind(plan[1], 'a_rows')}[{i}] = {args[0]}", f"{bind(plan[2], 'g_rows')}[{i}] = {args[1]}"]
    return [f"{bind(plan[1], 'rows')}[{args[0]}] = {args[2]}"]


def _complete(name: str, plan: tuple, bind) -> list[str]:
    """The line making the slot's gradient from the buffers, once every term is in."""
    if plan[0] == "product":
        return []
    if plan[0] == "rows":
        return [f"{name} = {bind(plan[1], 'rows')}  # every row written in place"]
    a, g = bind(plan[1], "a_rows"), bind(plan[2], "g_rows")
    k, m = plan[1].shape[-1], plan[2].shape[-1]
    blocks = [f"{a}[{s}:{e}].reshape(-1, {k}).T @ {g}[{s}:{e}].reshape(-1, {m})" if e - s > 1
              else f"{a}[{s}].T @ {g}[{s}]" for s, e in plan[3]]
    lines = [f"{name} = {blocks[0]}  # the sum of a_t^T g_t over the rows: one matmul"]
    lines += [f"np.add({name}, {b}, out={name})" for b in blocks[1:]]
    return lines


def _reused_transposes(tape, examples: dict) -> dict:
    """{W^T's slot: W's slot} for each transpose of a matrix that two or more matmuls read: made
    contiguous once per call, and in the backward pass (W^T)^T is W itself, not a view of the copy.
    Contiguous operands take BLAS's other path, which may round the last bit otherwise: here the
    compiled code's floats agree with eager mode's to rounding, not bit for bit."""
    readers: dict = {}
    for op, ins, _ in tape.forward:
        if op.name == "matmul":
            for i in set(ins):
                readers[i] = readers.get(i, 0) + 1
    found = {}
    for op, ins, out in tape.forward:
        matrix = examples[ins[0]][0] if ins else None
        if (op.name == "transpose" and op.axes == (1, 0) and readers.get(out, 0) >= 2
                and type(matrix) is np.ndarray and matrix.flags.c_contiguous):
            found[out] = ins[0]
    return found


def _untranspose(lines: list[str], transposed: dict) -> list[str]:
    """The lines with ``v6.T`` read as ``v5`` where v6 is the contiguous copy of v5's transpose."""
    if not transposed:
        return lines
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, transposed)) + r")\.T\b")
    return [pattern.sub(lambda m: transposed[m.group(1)], line) for line in lines]


_ELEMENTWISE = (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.Pow, ast.USub)


def _hoist(lines: list[str], rows: dict) -> list[str]:
    """The backward lines, with each elementwise expression that reads only one row of a stack's
    buffer (``1.0 - v16 * v16``, tanh's derivative at h_1), and is read the same way for two rows or
    more, computed once over the whole buffer before the loop (``_slope_1 = 1.0 - _rows_17 *
    _rows_17``) and read as a row of it (``_slope_1[0]``): elementwise, so the same floats."""

    def row_of(node):
        """(buffer, row) when ``node`` is elementwise and reads one row only, else None."""
        names = set()
        for part in ast.walk(node):
            if isinstance(part, ast.Name):
                names.add(part.id)
            elif isinstance(part, (ast.BinOp, ast.UnaryOp)):
                if not isinstance(part.op, _ELEMENTWISE):
                    return None
            elif not (isinstance(part, ast.Constant) and type(part.value) in (int, float)) and not isinstance(
                    part, (ast.Load, ast.operator, ast.unaryop)):
                return None
        places = {rows.get(name) for name in names}
        return places.pop() if len(places) == 1 and None not in places and len(names) == 1 else None

    parsed, found = [], {}
    for line in lines:
        code, _, note = line.partition("  # ")
        try:
            statement = ast.parse(code).body
        except SyntaxError:
            statement = None
        if not statement or len(statement) != 1 or not isinstance(statement[0], ast.Assign) or line.startswith(" "):
            parsed.append((line, None, None))
            continue
        pending = [statement[0].value]
        while pending:  # outermost first: an expression hoisted whole is not hoisted in parts too
            node = pending.pop()
            if isinstance(node, (ast.BinOp, ast.UnaryOp)) and row_of(node):
                found.setdefault(_template(node, row_of(node)[0]), set()).add(row_of(node)[1])
            else:
                pending.extend(ast.iter_child_nodes(node))
        parsed.append((line, statement[0], note))
    names = {template: f"_hoisted_{i}" for i, template in enumerate(t for t, r in found.items() if len(r) > 1)}
    out = [f"{name} = {template}  # computed once for every row" for template, name in names.items()]
    for line, statement, note in parsed:
        if statement is None or not names:
            out.append(line)
            continue
        statement = _Hoisted(row_of, names).visit(statement)
        out.append(ast.unparse(statement) + (f"  # {note}" if note else ""))
    return out


def _template(node, buffer: str) -> str:
    """An expression reading one row, written over the whole buffer instead."""
    name = next(n.id for n in ast.walk(node) if isinstance(n, ast.Name))
    return ast.unparse(_Substitute(name, ast.Name(buffer)).visit(ast.parse(ast.unparse(node))))


class _Hoisted(ast.NodeTransformer):
    """Replaces each hoisted expression by its row of the hoisted array (outermost first)."""

    def __init__(self, row_of, names: dict):
        self.row_of, self.names = row_of, names

    def generic_visit(self, node):
        if isinstance(node, (ast.BinOp, ast.UnaryOp)) and self.row_of(node):
            buffer, row = self.row_of(node)
            template = _template(node, buffer)
            if template in self.names:
                return ast.parse(f"{self.names[template]}[{row}]", mode="eval").body
        return super().generic_visit(node)


def _accumulate(leaf, grad, handed_out: set) -> None:
    """A leaf's hooks run on its gradient, which is then added to its ``.grad`` as an array of its
    own (a copy when a hook or another leaf has the array, or it is a view, or a buffer's)."""
    if leaf.hooks:
        grad = _run_hooks(leaf, grad, handed_out)
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
