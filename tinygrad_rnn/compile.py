"""A recorded tape compiled into one Python function: the forward pass, then the backward pass, one
line per op: backpropagation through time written out as numpy, which ``print(step.source)`` shows.

Every line is the op's own ``forward`` or ``vjp``, the one definition eager mode uses too, written
out by inline.py (``v14 = np.tanh(v13)`` forward, ``g13 = g14 * (1.0 - v14 * v14)`` back) or, where
it cannot be, called. What eager mode's backward loop decides at every call is decided once here:
which gradient is the first to arrive at a slot (assigned) and which are added to it, which slots
may hold a lazy sum, which nodes carry hooks, which ops take this call's integer arguments, and
where the terms go (plan.py, the memory plan; rewrites.py then rewrites the written lines to use its
buffers). A gradient is dropped (``del``) as soon as its row has used it, as the loop does. Where an
op's forward raises on a call, the function returns FAILED and ``explain_failure`` runs the tape's
rows one by one to say which op, and why. A long scalar tape is compiled by level instead
(levels.py).
"""

from __future__ import annotations

import ast
import copy
import re

import numpy as np

from tinygrad_rnn import plan, rewrites
from tinygrad_rnn.autograd import _run_hooks, accumulate
from tinygrad_rnn.guards import Argument, fill_template, same
from tinygrad_rnn.inline import Emitter, Traced
from tinygrad_rnn.ops import LazySum

__all__ = ["compile_tape", "FAILED", "explain_failure"]

FAILED = object()  # what the compiled function returns when an op's forward raised


def _identifier(text: str) -> str:
    """``text`` as a part of a Python name: ASCII letters, digits and underscores only."""
    return re.sub(r"[^A-Za-z0-9_]", "_", text)


def compile_tape(tape, examples: dict) -> tuple[str, object]:
    """(source, function) for ``tape``: ``function(arrays)`` runs its forward and backward passes on
    this call's arrays and returns the loss's data (with a list of the extras' data when fn returned
    other Values too); None when a read of data (a branch) differs from
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
    # An op whose parameter holds an integer argument is called through a copy of its own, made once,
    # which is handed this call's array (a replay runs one call at a time).
    for entry, attribute, template in tape.bindings:
        op = tape.ops[entry]
        name = bind(op, op.name)
        namespace[name] = copy.copy(op)
        body.append(f"{name}.{attribute} = {_filled(template, emitter)}")
    body.append("# ---- forward ----")
    body.append("try:")
    forward_at, inside, scope = len(body), set(), ""  # (inside: the lines of a step but its last, t=3)
    stacked, stacks = plan.stacks(tape, examples)  # slot -> (buffer, row) for the stacks' rows; stack -> buffer
    transposed = plan.reused_transposes(tape, examples)  # W^T's slot -> W's slot, for a weight used at every step
    for op, ins, out in tape.forward:
        if scope and tape.labels.get(out, ("", ""))[0] == scope:
            inside.add(len(body) - 1)
        scope = tape.labels.get(out, ("", ""))[0]
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
            lines[-1:] = plan.written_into(lines[-1], f"{bind(stacked[out][0], 'stacked')}[{stacked[out][1]}]", v(out))
        inside.update(range(len(body), len(body) + len(lines) - 1))  # (an op written in several lines)
        body.extend("    " + line for line in lines)
    forward_lines = (forward_at, len(body))
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
    arrivals, arriving = arriving, {s: [terms[key][1] for key in keys] for s, keys in arriving.items()}
    plans = {s: plan.of_sum(values, examples[s][0]) for s, values in arriving.items()}
    # A buffer is never a leaf's gradient, nor one a hook is shown (it marks it read-only).
    exposed = {s for s, op, _, _, node, _ in tape.backward if op is None or node is not None}
    plans = {s: p for s, p in plans.items() if p is not None and not (p[0] == "rows" and s in exposed)}
    # A known array is the compiled function's own: a leaf that gets it takes a copy.
    body.append(f"handed_out = {{{', '.join(f'id({emitter.code(c)})' for c in constants)}}}" if constants
                else "handed_out = set()")
    seen = {}  # slot -> how many terms have arrived
    picks = {id(tape.ops[entry]): template for entry, attribute, template in tape.bindings if attribute == "index"}
    for row, (s, op, _, flows, node, _) in enumerate(tape.backward):
        if s not in reached:
            continue
        if s in plans:
            body.extend(plan.complete(g(s), plans[s], bind))
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
            for other, value in tape.shown.get(s, ()):  # (and what its hooks may read: its inputs, what they hold)
                body.append(f"    {bind(value, 'node')}._data = {v(other)}")
            body.append(f"    {g(s)} = _run_hooks({n}, {g(s)}, handed_out)")
        for k, parent in flows:
            lines, value, _ = terms[row, k]
            term = lines[-1].removeprefix("result = ")
            i = seen[parent] = seen.get(parent, -1) + 1
            if parent in plans:
                lines[-1:] = plan.into_rows(g(parent), term, plans[parent], i, bind)
            elif i and op.name == "getitem" and plan.added_in_place(
                    op.index, picks.get(id(op)), arriving[parent][:i], examples[parent], examples[s][1]):
                # (the pick of the targets: its gradient added where it was picked, not scattered into
                # zeros; into a copy unless the sum so far is an array made for it, such as a product)
                fresh = i > 1 or plan.made_by_arithmetic(terms[arrivals[parent][0]][0][-1])
                lines = [] if fresh else [f"{g(parent)} = {g(parent)}.copy()"]
                lines.append(f"{g(parent)}[{bind(op, op.name)}.index] += {g(s)}")
            elif i:
                lines[-1] = f"{g(parent)} = {g(parent)} + {term}"
            else:
                lines[-1] = f"{g(parent)} = {term}{comment(parent)}"
            body.extend(lines)
        body.append(f"del {g(s)}")
    if tape.extras:  # the other Values fn returned (the caller copies them: buffers are written again)
        body.append(f"return {v(root)}, [{', '.join(v(s) for s in tape.extras)}]")
    else:
        body.append(f"return {v(root)}")
    rows = {v(slot): (bind(buffer, "stacked"), row) for slot, (buffer, row) in stacked.items()}
    body[hoisted_at:] = rewrites.hoist(body[hoisted_at:], rows)
    body[hoisted_at:] = rewrites.untranspose(body[hoisted_at:], {v(t): v(w) for t, w in transposed.items()})
    # The rows the Products buffers take from other buffers (the stacked states, the rows of an array
    # read row by row), copied at once rather than one per step.
    buffers = {bind(p[1], "rows"): p[1] for p in plans.values() if p[0] == "rows"}
    gradients = {g(s): grad for s, (_, grad) in examples.items()}
    body[hoisted_at:] = rewrites.computed_into_rows(body[hoisted_at:], buffers, gradients)  # each step's into its row
    places = rewrites.rows_of(body[hoisted_at:], rows, buffers, gradients)
    products = {bind(p[k], name): p[3] for p in plans.values() if p[0] == "products"
                for k, name in ((1, "a_rows"), (2, "g_rows"))}
    body[hoisted_at:] = rewrites.copied_in_bulk(body[hoisted_at:], places, products)
    body = rewrites.dropped_once_read(body, *forward_lines, inside)  # (last: the rewrites above change what is read)
    source = "def replayed(arrays):\n" + "\n".join("    " + line for line in body) + "\n"
    exec(compile(source, f"<replay of {len(tape.forward)} ops>", "exec"), namespace)  # noqa: S102
    return source, namespace["replayed"]


def explain_failure(tape, arrays: tuple) -> None:
    """Raise the error of the op whose forward failed on this call (the compiled function returned
    FAILED: it only knows that one did), found by running the tape's forward rows one by one."""
    data = [None] * tape.size
    for s, leaf, _, _ in tape.leaves:
        data[s] = leaf._data
    for s, position in tape.arguments:
        data[s] = arrays[position]
    rebound = {}  # the ops holding an integer argument, given this call's (as the compiled code does)
    for entry, attribute, template in tape.bindings:
        rebound[id(tape.ops[entry])] = op = copy.copy(tape.ops[entry])
        setattr(op, attribute, fill_template(template, arrays))
    for op, ins, out in tape.forward:
        op = rebound.get(id(op), op)
        try:
            data[out] = op.forward(*[data[i] for i in ins])
        except (ValueError, IndexError, TypeError) as error:
            raise type(error)(f"replay: {op.name}, making v{out} of the tape: {error}") from None
    raise RuntimeError("replay: an op's forward failed on this call but not when run again, one by one")


def _accumulate(leaf, grad, handed_out: set) -> None:
    """A leaf's hooks run on its gradient, which is then added to its ``.grad`` as an array of its
    own (a copy when a hook or another leaf has the array, or it is a view, or a buffer's)."""
    if leaf.hooks:
        grad = _run_hooks(leaf, grad, handed_out)
    if type(grad) is np.ndarray:
        if id(grad) in handed_out or grad.base is not None:
            grad = grad.copy()
        handed_out.add(id(grad))
    accumulate(leaf, grad)


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
                    rewrites.Substitute(name, statement.value).visit(s)
                del statements[i]
                break
        else:
            return [ast.unparse(s) for s in statements]


def _filled(template, emitter) -> str:
    """The code of an op's parameter with each integer argument in it (an ``Argument`` marker) read
    from this call's ``arrays``: ``(_ndarray_9, _ndarray_10, arrays[1])``."""
    if isinstance(template, Argument):
        return f"arrays[{template.position}]"
    if type(template) in (tuple, list):
        parts = [_filled(part, emitter) for part in template]
        return f"[{', '.join(parts)}]" if type(template) is list else f"({', '.join(parts)}{',' * (len(parts) == 1)})"
    if isinstance(template, (tuple, list)):  # (a namedtuple, say: filled as guards fills it)
        emitter.namespace["_fill_template"] = fill_template
        return f"_fill_template({emitter.code(template)}, arrays)"
    return emitter.code(template)
