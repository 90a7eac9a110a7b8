"""A differential fuzzer: random small programs run by this engine and by PyTorch, compared.

    python scripts/fuzz_torch.py                    # for 60 seconds
    python scripts/fuzz_torch.py --seconds 300 --seed 1
    python scripts/fuzz_torch.py --programs 2000    # a fixed number (the same programs for a seed)
    python scripts/fuzz_torch.py --skip pow,pow_const  # without some ops

Each program has one to three leaves (float32 or float64 arrays, or a Python-float scalar, as the mode
draws: all float32, all float64, or mixed) holding ordinary numbers mixed with zeros, -0, huge and
subnormal numbers, infinities and nans, and applies one to five ops drawn from the table below (the
primitives and the composites softmax, log_softmax, logsumexp). Compared, entry by entry: every
node's value and dtype, each leaf's gradient of ``last.sum()`` and its dtype, and second derivatives
(the gradient of sum_i <grad_i, r_i> for random r_i). Nan must meet nan and an infinity the same
infinity; finite numbers must agree to a tolerance of the dtype's size, relative to the array's largest
entry or 1 if that is smaller (the ops' last bits differ between numpy and PyTorch, and a program can
magnify that).

PyTorch is never a dependency of the engine: without it, this script says so in one line and stops.
Where PyTorch has no single op with the engine's meaning, the reference is written from PyTorch ops:
``max`` over an axis is PyTorch's ``max()`` on each slice (ties and nans share the gradient;
``torch.max(dim)`` would give it to one index).
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import tinygrad_rnn as tg  # noqa: E402
from tinygrad_rnn import Value  # noqa: E402

SHAPES = [(), (3,), (1, 3), (2, 3), (2, 1), (1,), (1, 1)]  # any two broadcast; axis -1 reductions stay inside
SPECIALS = {np.float64: [0.0, -0.0, 1e300, -1e300, 5e-324, 1e-310, np.inf, -np.inf, np.nan, 1.0, -1.0, 710.0, -745.0],
            np.float32: [0.0, -0.0, 3e38, -3e38, 1e-45, 1e-40, np.inf, -np.inf, np.nan, 1.0, -1.0, 89.0, -104.0]}
TOLERANCE = {np.dtype(np.float32): 2e-3, np.dtype(np.float64): 1e-7}


# ---- the ops: (arity, params to draw from, engine on Values, PyTorch on tensors, can it take this shape) ----


def _max_slices(t, torch):
    """PyTorch's max() over the last axis, one slice at a time, kept as an axis of length 1."""
    rows = t.reshape(-1, t.shape[-1])
    return torch.stack([torch.max(row) for row in rows.unbind(0)]).reshape(t.shape[:-1] + (1,))


def op_table(torch):
    functional = torch.nn.functional
    any_shape, dims = (lambda shape: True), (lambda shape: len(shape) > 0)
    return {
        "add": (2, [None], lambda a, b, p: a + b, lambda a, b, p: a + b, any_shape),
        "sub": (2, [None], lambda a, b, p: a - b, lambda a, b, p: a - b, any_shape),
        "mul": (2, [None], lambda a, b, p: a * b, lambda a, b, p: a * b, any_shape),
        "div": (2, [None], lambda a, b, p: a / b, lambda a, b, p: a / b, any_shape),
        "pow": (2, [None], lambda a, b, p: a ** b, lambda a, b, p: a ** b, any_shape),
        "maximum": (2, [None], lambda a, b, p: tg.maximum(a, b), lambda a, b, p: torch.maximum(a, b), any_shape),
        "where": (2, [(True, False, True), (False,), (True,)],
                  lambda a, b, p: tg.where(np.array(p), a, b),
                  lambda a, b, p: torch.where(torch.tensor(p), a, b), lambda shape: len(shape) < 2 or shape[-1] == 3),
        "neg": (1, [None], lambda x, p: -x, lambda x, p: -x, any_shape),
        "exp": (1, [None], lambda x, p: x.exp(), lambda x, p: x.exp(), any_shape),
        "log": (1, [None], lambda x, p: x.log(), lambda x, p: x.log(), any_shape),
        "tanh": (1, [None], lambda x, p: x.tanh(), lambda x, p: x.tanh(), any_shape),
        "sigmoid": (1, [None], lambda x, p: x.sigmoid(), lambda x, p: x.sigmoid(), any_shape),
        "relu": (1, [None], lambda x, p: x.relu(), lambda x, p: x.relu(), any_shape),
        "abs": (1, [None], lambda x, p: x.abs(), lambda x, p: x.abs(), any_shape),
        "leaky_relu": (1, [0.0, 0.01, 0.3], lambda x, p: x.leaky_relu(p),
                       lambda x, p: functional.leaky_relu(x, p), any_shape),
        "clip": (1, [(-1.0, 1.0), (0.0, None), (None, 0.5), (1.0, -1.0)], lambda x, p: x.clip(*p),
                 lambda x, p: torch.clamp(x, *p), any_shape),
        "pow_const": (1, [0.0, 0.5, 2.0, 3.0, -1.0, -0.5], lambda x, p: x ** p, lambda x, p: x ** p, any_shape),
        "times_const": (1, [0.0, 2.5, -1e30], lambda x, p: x * p, lambda x, p: x * p, any_shape),
        # (PyTorch computes number / x as x.reciprocal() * number: nan for 0 / subnormal. A true division.)
        "const_over": (1, [1.0, 0.0], lambda x, p: p / x, lambda x, p: torch.full_like(x, p) / x, any_shape),
        "sum": (1, [None], lambda x, p: x.sum(), lambda x, p: x.sum(), any_shape),
        "sum_axis": (1, [None], lambda x, p: x.sum(axis=-1, keepdims=True),
                     lambda x, p: x.sum(-1, keepdim=True), dims),
        "max": (1, [None], lambda x, p: x.max(), lambda x, p: torch.max(x), any_shape),
        "max_axis": (1, [None], lambda x, p: x.max(axis=-1, keepdims=True), lambda x, p: _max_slices(x, torch), dims),
        "flip": (1, [None], lambda x, p: x[::-1], lambda x, p: torch.flip(x, [0]), dims),
        "logsumexp": (1, [None], lambda x, p: tg.logsumexp(x, axis=-1, keepdims=True),
                      lambda x, p: torch.logsumexp(x, -1, keepdim=True), dims),
        "softmax": (1, [None], lambda x, p: tg.softmax(x, axis=-1), lambda x, p: torch.softmax(x, -1), dims),
        "log_softmax": (1, [None], lambda x, p: tg.log_softmax(x, axis=-1),
                        lambda x, p: torch.log_softmax(x, -1), dims),
        # x @ W with W a new leaf of x's dtype (PyTorch's matmul takes one dtype), made when the step runs.
        "matmul": (1, ["weight"], lambda x, w: x @ w, lambda x, w: x @ w, dims),
    }


# ---- programs --------------------------------------------------------------------------------------


def draw_data(rng, kind: str, shape: tuple):
    """A leaf's data: ``"py"`` a Python float, else an array of that dtype, a quarter special numbers."""
    dtype = np.float32 if kind == "f32" else np.float64
    data = rng.standard_normal(shape) * rng.choice([1.0, 3.0, 30.0])
    special = rng.random(shape) < 0.25
    data = np.where(special, rng.choice(SPECIALS[dtype], size=shape), data).astype(dtype)
    return float(data) if kind == "py" else data


def draw_program(rng, mode: str, names: list, table: dict) -> tuple[list, list, list]:
    """(leaves, weights, steps): leaves and matmul weights as data (a weight becomes a leaf of its
    matmul input's dtype when the step runs); steps as (op name, input node numbers, param). Node
    i < len(leaves) is leaf i, and step j makes node len(leaves) + j."""
    leaves, weights = [], []
    for _ in range(rng.integers(1, 4)):
        kind = mode if mode != "mixed" else str(rng.choice(["f32", "f64", "py"]))
        shape = () if kind == "py" else SHAPES[rng.integers(len(SHAPES))]
        if kind == "f64" and shape == ():
            kind = "py"  # a 0-d float64 Value holds a Python float
        leaves.append(draw_data(rng, kind, shape))
    shapes = [np.shape(x) for x in leaves]
    steps = []
    for _ in range(rng.integers(1, 6)):
        for _attempt in range(20):
            name = names[rng.integers(len(names))]
            arity, params, _, _, fits = table[name]
            last = len(shapes) - 1
            ins = [last if rng.random() < 0.5 else int(rng.integers(len(shapes))) for _ in range(arity)]
            if not all(fits(shapes[i]) for i in ins):
                continue
            param = params[rng.integers(len(params))]
            if param == "weight":  # x @ W, W square
                weights.append(draw_data(rng, "f64", (shapes[ins[0]][-1],) * 2))
                param = len(weights) - 1
            shapes.append(_shape_after(name, np.broadcast_shapes(*[shapes[i] for i in ins])))
            steps.append((name, ins, param))
            break
    return leaves, weights, steps


def _shape_after(name: str, shape: tuple) -> tuple:
    if name in ("sum", "max"):
        return ()
    if name in ("sum_axis", "max_axis", "logsumexp"):
        return shape[:-1] + (1,)
    return shape


def describe(leaves: list, weights: list, steps: list) -> str:
    lines = []
    for label, data in [(f"v{i}", x) for i, x in enumerate(leaves)] + [(f"W{i}", w) for i, w in enumerate(weights)]:
        kind = "python float" if type(data) is float else f"{np.result_type(data)} {np.shape(data)}"
        lines.append(f"  {label} = leaf {kind}: {np.array2string(np.asarray(data), precision=4, separator=', ')}")
    for j, (name, ins, param) in enumerate(steps):
        shown = "" if param is None else f" [{f'W{param}' if name == 'matmul' else param}]"
        lines.append(f"  v{len(leaves) + j} = {name}({', '.join(f'v{i}' for i in ins)}){shown}")
    return "\n".join(lines)


# ---- running a program in both ---------------------------------------------------------------------


def run_engine(leaves, weights, steps, table, seeds):
    """(node values, leaf gradients, second derivatives) by this engine, as numpy data."""
    values = [Value(x) for x in leaves]
    nodes = list(values)
    for name, ins, param in steps:
        _, _, engine, _, _ = table[name]
        args = [nodes[i] for i in ins]
        if name == "matmul":
            values.append(Value(weights[param].astype(args[0].dtype)))
            param = values[-1]
        nodes.append(engine(*args, param))
    loss = nodes[-1].sum()
    first = tg.grad(loss, values)
    gradients = tg.grad(loss, values, create_graph=True)
    total = None
    for g, r in zip(gradients, seeds):
        if isinstance(g, Value):
            term = (g * r).sum()
            total = term if total is None else total + term
    if total is None or not total.requires_grad:
        second = [np.zeros(x.shape, x.dtype) for x in values]
    else:
        second = tg.grad(total, values)
    return [n.data for n in nodes], first, second


def run_torch(torch, leaves, weights, steps, table, seeds):
    """The same by PyTorch (a Python float leaf is a 0-d float64 tensor)."""
    values = [torch.tensor(x, dtype=torch.float64 if type(x) is float else None, requires_grad=True) for x in leaves]
    nodes = list(values)
    for name, ins, param in steps:
        _, _, _, reference, _ = table[name]
        args = [nodes[i] for i in ins]
        if name == "matmul":
            values.append(torch.tensor(weights[param], dtype=args[0].dtype, requires_grad=True))
            param = values[-1]
        nodes.append(reference(*args, param))
    loss = nodes[-1].sum()
    first = torch.autograd.grad(loss, values, retain_graph=True, allow_unused=True)
    gradients = torch.autograd.grad(loss, values, create_graph=True, allow_unused=True)
    terms = [(g * torch.as_tensor(r)).sum() for g, r in zip(gradients, seeds) if g is not None and g.requires_grad]
    second = (torch.autograd.grad(sum(terms), values, allow_unused=True) if terms else [None] * len(values))

    def data(t, like):
        # (force: PyTorch may answer a gradient that is known to be 0 with a "ZeroTensor")
        return np.zeros(np.shape(like), np.result_type(like)) if t is None else t.detach().numpy(force=True)

    everything = [v.detach().numpy() for v in values]
    return ([n.detach().numpy() for n in nodes], [data(g, x) for g, x in zip(first, everything)],
            [data(g, x) for g, x in zip(second, everything)])


def compare(mine, theirs, what: str, rtol: float) -> list[str]:
    """The kinds of difference between one engine array and PyTorch's (empty: none)."""
    a, b = np.asarray(mine), np.asarray(theirs)
    if a.shape != b.shape:
        return [f"{what} shape"]
    kinds = []
    if a.dtype != b.dtype:
        kinds.append(f"{what} dtype")
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    if not (np.array_equal(np.isnan(a64), np.isnan(b64)) and np.array_equal(np.isposinf(a64), np.isposinf(b64))
            and np.array_equal(np.isneginf(a64), np.isneginf(b64))):
        kinds.append(f"{what} nan/inf")
    finite = np.isfinite(a64) & np.isfinite(b64)
    if finite.any():
        scale = max(np.max(np.abs(b64[finite])), 1.0)  # (below 1, absolutely: sums of tiny terms cancel)
        if np.any(np.abs(a64[finite] - b64[finite]) > rtol * scale + 1e-300):
            kinds.append(f"{what} number")
    return kinds


def fuzz_one(torch, rng, table, names) -> tuple[str, set, str]:
    """('ok' | 'mismatch' | 'invalid', kinds, program text)."""
    mode = str(rng.choice(["f32", "f64", "mixed"]))
    leaves, weights, steps = draw_program(rng, mode, names, table)
    seeds = [rng.standard_normal(np.shape(x)) for x in leaves + weights]  # (as a raw float64 array: strong)
    text = describe(leaves, weights, steps)
    engine_error = torch_error = None
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            mine = run_engine(leaves, weights, steps, table, seeds)
        except Exception as error:  # noqa: BLE001 (any exception is a finding to report)
            engine_error = f"{type(error).__name__}: {error}"
        try:
            theirs = run_torch(torch, leaves, weights, steps, table, seeds)
        except Exception as error:  # noqa: BLE001
            torch_error = f"{type(error).__name__}: {error}"
    if engine_error and torch_error:
        return "invalid", set(), text
    if engine_error or torch_error:
        which = "engine raised" if engine_error else "torch raised"
        return "mismatch", {which}, text + f"\n  ({which}: {(engine_error or torch_error)[:200]})"
    # The tolerance of the least precise type the program computes in (float32 anywhere: float32's).
    rtol = max(TOLERANCE[np.result_type(x)] for x in mine[0])
    kinds, notes = set(), []
    for label, ours, reference in zip(("value", "grad", "second"), mine, theirs):
        for i, (a, b) in enumerate(zip(ours, reference)):
            found = compare(a, b, label, rtol * (1, 10, 100)[("value", "grad", "second").index(label)])
            if found:
                kinds.update(found)
                node = f"v{i}" if label == "value" or i < len(leaves) else f"W{i - len(leaves)}"
                notes.append(f"  {label} of {node}: engine {_short(a)} vs torch {_short(b)} ({', '.join(found)})")
                break  # the first node that differs: the later ones inherit it
    return ("mismatch" if kinds else "ok"), kinds, text + ("\n" + "\n".join(notes) if notes else "")


def _short(x) -> str:
    array = np.asarray(x)
    return f"{array.dtype} " + np.array2string(array, precision=5, separator=", ").replace("\n", "")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--programs", type=int, default=None, help="stop after this many (instead of --seconds)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--examples", type=int, default=2, help="programs shown per kind of mismatch")
    parser.add_argument("--skip", default="", help="ops left out, comma separated (to look past known ones)")
    args = parser.parse_args(argv)
    try:
        import torch
    except ImportError:
        print("fuzz_torch: PyTorch is not installed, so there is nothing to compare against; skipped.")
        return 0
    torch.set_num_threads(1)
    table = op_table(torch)
    names = sorted(set(table) - set(args.skip.split(",")))
    rng = np.random.default_rng(args.seed)
    counts, kinds, examples = collections.Counter(), collections.Counter(), collections.defaultdict(list)
    ops_in = collections.defaultdict(collections.Counter)
    start = time.perf_counter()
    while (counts["tried"] < args.programs) if args.programs else (time.perf_counter() - start < args.seconds):
        status, found, text = fuzz_one(torch, rng, table, names)
        counts["tried"] += 1
        counts[status] += 1
        for kind in found:
            kinds[kind] += 1
            examples[kind].append(text)
            for line in text.splitlines():
                if "= " in line and "leaf" not in line and line.strip().startswith("v"):
                    ops_in[kind][line.split("= ")[1].split("(")[0]] += 1
    print(f"fuzz_torch: engine vs PyTorch {torch.__version__}, seed {args.seed}, "
          f"{time.perf_counter() - start:.0f} s")
    print(f"programs tried: {counts['tried']}; agreed: {counts['ok']}; differed: {counts['mismatch']}; "
          f"invalid in both (both raised): {counts['invalid']}")
    print("mismatching programs by kind:" if kinds else "mismatching programs by kind: none")
    for kind, n in kinds.most_common():
        common = ", ".join(f"{op} {k}" for op, k in ops_in[kind].most_common(4))
        print(f"  {kind:<18} {n:6d}   (ops most often in them: {common})")
    for kind, _ in kinds.most_common():
        for text in sorted(examples[kind], key=len)[: args.examples]:
            print(f"\n[{kind}] e.g.\n{text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
