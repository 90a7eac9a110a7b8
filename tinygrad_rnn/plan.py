"""The compiled replay's memory plan: where the terms of each sum go, derived from the tape's
structure alone (nothing here knows what an RNN is).

A weight used at every time step gets one product a_t^T g_t per step (MatMul's vjp keeps them as
``Products``), and an array read row by row (X[t]) gets one scattered row per step (``Scattered``).
Eager mode collects those terms at run time; the compiled code knows them all when compiling, so each
term is written into the rows of buffers made once for the recording (they live across calls: no
page faults, no lists of terms), and the sum is one matmul over the rows (in the blocks that
``Products.total`` uses, so the floats are the same) or the filled buffer itself. A stack of results
is written row by row as each is made; an elementwise expression of one stacked row is computed once
over the buffer; a transposed weight read by several matmuls is made contiguous once.
"""

from __future__ import annotations

import ast
import re

import numpy as np

from tinygrad_rnn.guards import Argument
from tinygrad_rnn.ops import Products, Scattered  # (re-exported there, wherever their module lives)

__all__ = ["stacks", "written_into", "of_sum", "into_rows", "complete", "reused_transposes", "untranspose", "hoist",
           "Substitute", "computed_into_rows", "rows_of", "copied_in_bulk"]


def stacks(tape, examples: dict) -> tuple[dict, dict]:
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


def written_into(line: str, row: str, variable: str) -> list[str]:
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


def of_sum(values: list, like):
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
        for end in range(1, len(a) + 1):  # Products.total's blocks, first step first
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


def into_rows(name: str, term: str, plan: tuple, i: int, bind) -> list[str]:
    """The lines writing the i-th term (its code: ``Products(a, g)``, ``Scattered(index, shape, g)``)
    into the plan's buffers."""
    call = ast.parse(term, mode="eval").body
    args = [ast.unparse(a) for a in call.args]
    if plan[0] == "product":  # (Products.total of one term)
        return [f"{name} = {args[0]}.T @ {args[1]}"]
    if plan[0] == "products":  # (the terms come last step first; the rows are first step first)
        row = len(plan[1]) - 1 - i
        return [f"{bind(plan[1], 'a_rows')}[{row}] = {args[0]}", f"{bind(plan[2], 'g_rows')}[{row}] = {args[1]}"]
    return [f"{bind(plan[1], 'rows')}[{args[0]}] = {args[2]}"]


def complete(name: str, plan: tuple, bind) -> list[str]:
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


def added_in_place(index, template, before: list, example: tuple, grad) -> bool:
    """Whether the gradient ``grad`` of ``x[index]`` (GetItem's term, a ``Scattered``: zeros with
    ``grad`` added at ``index``) may be added where it was picked, into a copy of the sum of the terms
    ``before`` it, with eager mode's floats: when those are whole arrays of x's gradient's shape and
    dtype (``example``: x's data and gradient, recorded) and so is ``grad``, and the index picks each
    entry once whatever this call's integer arguments hold. The index must be a tuple of integer
    arrays, the parts not from an argument (``template``'s others than ``Argument`` markers; all of
    them when ``template`` is None) naming each picked position once: cross_entropy's pick, the
    leading positions from ``np.indices`` and the targets. Then each entry gets other + g, as eager
    mode's other + (0 + g) (but for the sign of a zero)."""
    data, gradient = example
    if not (type(index) is tuple and index and type(gradient) is np.ndarray and type(grad) is np.ndarray):
        return False
    if any(type(t) is not np.ndarray or (t.shape, t.dtype) != (gradient.shape, gradient.dtype) for t in before):
        return False
    if grad.dtype != gradient.dtype or len(index) > np.ndim(data):
        return False
    marks = template if type(template) is tuple and len(template) == len(index) else (None,) * len(index)
    if any(not isinstance(part, np.ndarray) or part.dtype.kind not in "iu" for part in index):
        return False
    shape = np.broadcast_shapes(*(part.shape for part in index))
    fixed = [np.broadcast_to(np.asarray(part) % np.shape(data)[axis], shape).ravel()
             for axis, (part, mark) in enumerate(zip(index, marks)) if not isinstance(mark, Argument)]
    if not fixed:
        return False
    named = np.stack(fixed, axis=1)
    return len(np.unique(named, axis=0)) == len(named)


_ARITHMETIC = (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.MatMult, ast.Pow)


def made_by_arithmetic(line: str) -> bool:
    """Whether the line's value (``g123 = g125 * v125``, ``np.exp(v)``) is a new array, no one
    else's: not a name, a view (a reshape, a row) or a constant passed on."""
    try:
        (statement,) = ast.parse(line.strip()).body
    except (SyntaxError, ValueError):
        return False
    node = getattr(statement, "value", None)
    if isinstance(node, ast.BinOp):
        return isinstance(node.op, _ARITHMETIC)
    if isinstance(node, ast.UnaryOp):
        return isinstance(node.op, ast.USub)
    function = node.func if isinstance(node, ast.Call) else None
    return (isinstance(function, ast.Attribute) and isinstance(function.value, ast.Name) and function.value.id == "np"
            and isinstance(getattr(np, function.attr, None), np.ufunc) and not node.keywords)


def reused_transposes(tape, examples: dict) -> dict:
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


def untranspose(lines: list[str], transposed: dict) -> list[str]:
    """The lines with ``v6.T`` read as ``v5`` where v6 is the contiguous copy of v5's transpose."""
    if not transposed:
        return lines
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, transposed)) + r")\.T\b")
    return [pattern.sub(lambda m: transposed[m.group(1)], line) for line in lines]


_ELEMENTWISE = (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.Pow, ast.USub)


def hoist(lines: list[str], rows: dict) -> list[str]:
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
    return ast.unparse(Substitute(name, ast.Name(buffer)).visit(ast.parse(ast.unparse(node))))


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


class Substitute(ast.NodeTransformer):
    """Replaces each read of the name ``name`` by the expression ``value``."""

    def __init__(self, name: str, value):
        self.name, self.value = name, value

    def visit_Name(self, node):
        return self.value if node.id == self.name else node


# ---- after the lines are written: rows copied at once --------------------------------------------


def _assignments(lines: list[str], indented: bool = False) -> list:
    """Each line's statement: None for a comment or the head of a block, and for a line inside a
    block (run or not, depending on the call) unless ``indented``."""
    parsed = []
    for line in lines:
        try:
            body = ast.parse(line.partition("  # ")[0].lstrip() if indented else line.partition("  # ")[0]).body
        except (SyntaxError, IndentationError):
            body = []
        parsed.append(body[0] if len(body) == 1 else None)
    return parsed


def _named(statement) -> str | None:
    """The name a statement assigns, when it assigns one name."""
    if isinstance(statement, ast.Assign) and len(statement.targets) == 1 and isinstance(statement.targets[0], ast.Name):
        return statement.targets[0].id
    return None


def _row_write(statement, buffers) -> tuple | None:
    """(buffer, row, name) for ``buffer[row] = name``, a whole row of one of ``buffers`` written."""
    target = statement.targets[0] if isinstance(statement, ast.Assign) and len(statement.targets) == 1 else None
    if (isinstance(target, ast.Subscript) and isinstance(target.value, ast.Name) and target.value.id in buffers
            and isinstance(target.slice, ast.Constant) and type(target.slice.value) is int
            and isinstance(statement.value, ast.Name)):
        return target.value.id, target.slice.value, statement.value.id
    return None


def _aliases(lines: list[str]):
    """(statements, made): each line's statement, and ``made(name)``, the name the variable's array
    was made under (``g109`` for g110 when ``g110 = g109``), when every name on the way is assigned
    once and no ``out=`` writes into it; else None."""
    parsed = _assignments(lines)
    written, passed_on, changed = {}, {}, set()
    for statement, anywhere in zip(parsed, _assignments(lines, indented=True)):
        name = _named(anywhere)  # (a hook's replacement, assigned inside an if, counts too)
        if name is not None:
            written[name] = written.get(name, 0) + 1
            if isinstance(anywhere.value, ast.Name) and statement is not None:  # (not inside a block)
                passed_on[name] = anywhere.value.id
        for node in ast.walk(anywhere) if anywhere is not None else ():
            if isinstance(node, ast.keyword) and node.arg == "out" and isinstance(node.value, ast.Name):
                changed.add(node.value.id)

    def made(name: str) -> str | None:
        while True:
            if written.get(name) != 1 or name in changed:
                return None
            if name not in passed_on:
                return name
            name = passed_on[name]

    return parsed, made, written


def _computed_into(statement, buffers) -> tuple | None:
    """(buffer, row, name) for ``name = np.multiply(a, b, out=buffer[row])``, a value computed into
    a whole row of one of ``buffers``."""
    name = _named(statement)
    call = statement.value if name is not None else None
    out = [k.value for k in call.keywords if k.arg == "out"] if isinstance(call, ast.Call) else []
    if (len(out) == 1 and isinstance(out[0], ast.Subscript) and isinstance(out[0].value, ast.Name)
            and out[0].value.id in buffers and isinstance(out[0].slice, ast.Constant)
            and type(out[0].slice.value) is int):
        return out[0].value.id, out[0].slice.value, name
    return None


_UFUNCS = {ast.Add: "add", ast.Sub: "subtract", ast.Mult: "multiply", ast.Div: "divide"}


def computed_into_rows(lines: list[str], buffers: dict, gradients: dict) -> list[str]:
    """The lines with each gradient that is later written whole into a row of one of ``buffers``
    (``_rows_37[3] = g25``, where ``g25 = g27``), and was made by one elementwise operation
    (``g27 = g28 * _hoisted_0[3]``), computed straight into that row instead
    (``g27 = np.multiply(g28, _hoisted_0[3], out=_rows_37[3])``): the same numpy call, so the same
    floats, and no copy. Only where every name it goes by is assigned once, the gradient
    (``gradients``: each variable's on the recorded call) has the row's shape and dtype, and nothing
    between reads the buffer."""
    parsed, made, _ = _aliases(lines)
    origins = {_named(statement): i for i, statement in enumerate(parsed) if _named(statement) is not None}
    rewritten, dropped = {}, set()
    for i, statement in enumerate(parsed):
        found = _row_write(statement, buffers)
        origin = made(found[2]) if found is not None else None
        if origin is None or origins.get(origin, i) >= i:
            continue
        buffer, row, _ = found
        j, like, rows = origins[origin], gradients.get(origin), buffers[buffer]
        if type(like) is not np.ndarray or (like.shape, like.dtype) != (rows.shape[1:], rows.dtype):
            continue
        value, note = parsed[j].value, lines[j].partition("  # ")[2]
        if isinstance(value, ast.BinOp) and type(value.op) in _UFUNCS:
            function, args = f"np.{_UFUNCS[type(value.op)]}", [value.left, value.right]
        elif (isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute)
              and isinstance(value.func.value, ast.Name) and value.func.value.id == "np"
              and isinstance(getattr(np, value.func.attr, None), np.ufunc) and not value.keywords
              and len(value.args) == getattr(np, value.func.attr).nin):
            function, args = ast.unparse(value.func), value.args
        else:
            continue
        if any(re.search(rf"\b{buffer}\b", lines[k]) and _row_write(parsed[k], buffers) is None
               for k in range(j + 1, i)):
            continue
        rewritten[j] = (f"{origin} = {function}({', '.join(ast.unparse(a) for a in args)}, out={buffer}[{row}])"
                        + (f"  # {note}" if note else ""))
        dropped.add(i)
    return [rewritten.get(i, line) for i, line in enumerate(lines) if i not in dropped]


def rows_of(lines: list[str], known: dict, buffers: dict, gradients: dict) -> dict:
    """{variable: (buffer, row, line)}: from ``line`` on, the variable's value is also in that row of
    a buffer. ``known``: the stacked states, (buffer, row) from the start. Besides them, a gradient
    written whole into a row of one of ``buffers`` (``_rows_57[24] = g109``, a row of an array read
    row by row) or computed into one (``out=_rows_57[24]``), under each name it is passed on as
    (g109, g110 and g111, when ``g109 = g111`` and ``g110 = g111``), provided each of those names is
    assigned once and nothing writes into it, and the gradient (``gradients``: each variable's on the
    recorded call) has the row's shape and dtype."""
    parsed, made, written = _aliases(lines)
    names = {}  # the name an array was made under -> every name it goes by
    for name in written:
        names.setdefault(made(name), []).append(name)
    places = {name: (*place, -1) for name, place in known.items()}
    for line, statement in enumerate(parsed):
        found = _row_write(statement, buffers) or _computed_into(statement, buffers)
        if found is None or made(found[2]) is None:
            continue
        buffer, row, name = found
        like, rows = gradients.get(made(name)), buffers[buffer]
        if type(like) is not np.ndarray or (like.shape, like.dtype) != (rows.shape[1:], rows.dtype):
            continue
        for other in names[made(name)]:
            places.setdefault(other, (buffer, row, line))
    return places


def copied_in_bulk(lines: list[str], places: dict, blocks: dict) -> list[str]:
    """The lines with the per-step writes into a Products buffer (``_a_rows_55[1] = v104``,
    ``_a_rows_55[2] = v108``, ...) whose values are consecutive rows of one other buffer (``places``,
    from ``rows_of``: the stacked states, the rows of an input's gradient) dropped where they can be:
    a block of the sum (``blocks``: each Products buffer's name -> its (start, end) rows, as
    ``Products.total`` sums them) whose rows are, in order, rows of one other buffer reads that
    buffer in place (``_stacked_17[15:31]``), the same contiguous rows, so the same floats; the rest
    of each run is copied in one slice (``_a_rows_55[1:16] = _stacked_17[0:15]``) just before the
    buffer is first read: one numpy call instead of one per step."""
    parsed = _assignments(lines)
    writes, written = {}, set()  # buffer -> [(line, row, source buffer, source row, line it is there from)]
    for i, statement in enumerate(parsed):
        found = _row_write(statement, blocks)
        if found is not None:
            written.add(i)
            if found[2] in places:
                writes.setdefault(found[0], []).append((i, found[1], *places[found[2]]))
    inserted, dropped, renamed = {}, set(), {}
    for name, rows in writes.items():
        last = max(r[0] for r in rows)
        reads = [i for i, line in enumerate(lines) if i > last and i not in written and re.search(rf"\b{name}\b", line)]
        if not reads:
            continue
        for run in _runs(sorted(rows, key=lambda r: r[1])):
            if len(run) < 2 or any(r[4] >= reads[0] for r in run):
                continue
            start, source, first = run[0][1], run[0][2], run[0][3]
            step = 1 if run[-1][3] > first else -1
            inside = {row for s, e in blocks[name] if step == 1 and start <= s and e <= run[-1][1] + 1
                      for row in range(s, e)}
            for s, e in blocks[name]:
                if s in inside:  # read in place
                    at = first + s - start
                    renamed[rf"\b{name}\[{s}:{e}\]" if e - s > 1 else rf"\b{name}\[{s}\]"] = (
                        f"{source}[{at}:{at + e - s}]" if e - s > 1 else f"{source}[{at}]")
            for part in _runs([r for r in run if r[1] not in inside]):
                if len(part) < 2:
                    continue
                (_, start, _, first, _), (_, end, _, last_row, _) = part[0], part[-1]
                stop = "" if last_row + step < 0 else str(last_row + step)
                inserted.setdefault(reads[0], []).append(
                    f"{name}[{start}:{end + 1}] = {source}[{first}:{stop}{':-1' if step < 0 else ''}]"
                    "  # the rows written at each step, copied at once")
                dropped.update(r[0] for r in part)
            dropped.update(r[0] for r in run if r[1] in inside)
    out = []
    for i, line in enumerate(lines):
        out.extend(inserted.get(i, []))
        if i not in dropped:
            for pattern, replacement in renamed.items():
                line = re.sub(pattern, replacement, line)
            out.append(line)
    return out


def _runs(rows: list) -> list[list]:
    """Maximal runs of writes (line, row, source, source row, ...) into consecutive rows from
    consecutive rows of one source, in one direction."""
    runs = []
    for row in rows:
        run = runs[-1] if runs else None
        if run and row[1] == run[-1][1] + 1 and row[2] == run[-1][2] and (
                row[3] - run[-1][3] in (1, -1) if len(run) == 1 else row[3] - run[-1][3] == run[-1][3] - run[-2][3]):
            run.append(row)
        else:
            runs.append([row])
    return runs
