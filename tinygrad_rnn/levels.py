"""A long scalar tape (micrograd's MLP: every slot a Python float) compiled by level."""

from __future__ import annotations

import re

import numpy as np

from tinygrad_rnn.autograd import _run_hooks, accumulate
from tinygrad_rnn.guards import same

__all__ = ["compile_levels"]


def compile_levels(tape) -> tuple[str, object]:
    """(source, function) for a tape of Python floats (a scalar graph such as micrograd's MLP), run
    level by level: an op's level is one more than its inputs' highest, so the ops of one level
    depend only on earlier levels, and all those of one kind (tanh, or x^2) become one numpy call on
    a vector of slots, through the op's own ``forward`` and ``vjp``. A 65,000-op graph becomes a few
    hundred calls, where straight-line code would be 250,000 lines that Python takes seconds to
    compile. Gradients add up in another order than eager mode's, so they agree to rounding, not bit
    for bit. The caller has checked that every slot is a float, every op elementwise, and no inner
    node carries a hook."""
    namespace = {"np": np, "_run_hooks": _run_hooks, "_same": same, "accumulate": accumulate}
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
        op_name = bind(op, re.sub(r"[^A-Za-z0-9_]", "_", op.name))
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
    body.append("        accumulate(leaf, grad)")
    body.append(f"return float(v[{tape.root}])")
    source = "def replayed(arrays):\n" + "\n".join("    " + line for line in body) + "\n"
    exec(compile(source, f"<replay of {len(tape.forward)} ops by level>", "exec"), namespace)  # noqa: S102
    return source, namespace["replayed"]
