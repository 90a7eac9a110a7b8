"""The compiled replay's lines rewritten, once written, to use the memory plan's buffers (plan.py):
each rewrite reads the lines and the buffers they name, nothing of the tape.

- ``hoist``: an elementwise expression of one stacked row that the backward pass reads at every step
  (tanh's ``1 - h^2``) is computed once over the whole buffer, and each step reads its row.
- ``untranspose``: (W^T)^T read as W itself where W^T was made contiguous.
- ``computed_into_rows``: a gradient written whole into a row of a buffer is computed there (``out=``).
- ``rows_of`` and ``copied_in_bulk``: a weight's products whose factors are rows another buffer holds
  (the stacked states, the rows of the input projection's gradient) read them there, block by
  block, or copy each run of them at once.
- ``dropped_once_read``: a forward array nothing reads again (h_t W^T, the sum before tanh) is
  dropped (``del``) at the end of its step, so the next step's arrays reuse its memory.

Each keeps the numpy calls and their floats (untranspose hands BLAS W for a view of W^T's copy: the
same numbers, read in another order, which may round the last bit; see plan.reused_transposes).
"""

from __future__ import annotations

import ast
import re

import numpy as np

__all__ = ["hoist", "untranspose", "Substitute", "computed_into_rows", "rows_of", "copied_in_bulk",
           "dropped_once_read"]


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


# ---- rows a gradient is computed into, read in place or copied at once ---------------------------


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


# ---- forward arrays dropped once read ------------------------------------------------------------


def dropped_once_read(lines: list[str], start: int, end: int, inside: set) -> list[str]:
    """The lines with each variable assigned in ``lines[start:end]`` (the forward pass) and read on
    no later line dropped (``del v14, v15``) after the line that last reads it, or where that line is
    ``inside`` a step (each line of a step's ops but its last: a scope, ``# t=3``), at the step's end:
    one ``del`` a step. Eager mode keeps every array of the graph; a replay keeps only what its
    backward pass reads (the stacked states, not each step's ``h_{t-1} W^T`` or sum before tanh), so
    each step's new arrays reuse the memory, still in cache, of the step before (its figure: docs/perf.md).
    A name counts as read wherever it appears, even in a comment: never dropped too soon."""
    last, assigned = {}, {}
    for i, line in enumerate(lines):
        for name in re.findall(r"[A-Za-z_]\w*", line):
            last[name] = i
    for i, statement in enumerate(_assignments([line.strip() for line in lines[start:end]]), start):
        name = _named(statement)
        if name is not None and not name.startswith("_"):  # (a leading underscore: the namespace's)
            assigned[name] = i
    dropped = {}
    for name in assigned:
        at = last[name]
        if at < end:
            while at in inside:
                at += 1
            dropped.setdefault(at, []).append(name)
    out = []
    for i, line in enumerate(lines):
        out.append(line)
        if i in dropped:
            indent = line[:len(line) - len(line.lstrip())]
            out.append(f"{indent}del {', '.join(sorted(dropped[i], key=lambda n: assigned[n]))}")
    return out
