"""Where a NaN or an infinity was born: the first op, in the forward or the backward pass, that made one."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tinygrad_rnn.graph import Edge, walk
from tinygrad_rnn.ops import raw
from tinygrad_rnn.value import Value

# ---- where a NaN or an Inf was born ------------------------------------------------------------

def all_finite(x) -> bool:
    return bool(np.all(np.isfinite(raw(x))))


def _describe(x) -> str:
    data = np.asarray(raw(x), dtype=np.float64)
    if data.size == 0:
        return f"shape {data.shape}, empty"
    return f"shape {data.shape}, range [{np.min(data):.4g}, {np.max(data):.4g}]"


def _kind(x) -> str:
    data = np.asarray(raw(x))
    return "NaN" if np.any(np.isnan(data)) else "Inf"


@dataclass(frozen=True, eq=False)
class NonfiniteOrigin:
    """Where non-finite numbers first appeared: the op that made ``node`` (forward), or the op of
    ``node`` whose vector-Jacobian product sent a non-finite gradient to input ``position`` (backward)."""

    phase: str
    node: Value
    position: int | None = None

    def __str__(self) -> str:
        node = self.node
        op = node.op.name if node.op is not None else "leaf"
        where = f"{op}" + (f" {node.name!r}" if node.name else "") + f" in scope {node.scope!r}"
        lines = []
        if self.phase == "forward":
            if node.op is None:
                lines.append(f"forward: {where} holds {_kind(node.data)} data ({_describe(node.data)})")
            else:
                lines.append(f"forward: {where} made {_kind(node.data)} from finite inputs "
                             f"(output {_describe(node.data)})")
        else:
            with np.errstate(all="ignore"):
                contribution = Edge(node.parents[self.position], node, self.position).contribution()
            lines.append(f"backward: {where} turned a finite gradient ({_describe(node.grad)}) into "
                         f"{_kind(contribution)} for its input {self.position}")
        lines += [f"  input {k}: {_describe(p.data)}" for k, p in enumerate(node.parents)]
        return "\n".join(lines)


@dataclass(frozen=True, eq=False)
class NonfiniteReport:
    """``forward``/``backward``: the first origin in each pass, or None if that pass stayed finite.
    ``has_gradients`` says whether any backward pass had run (else ``backward`` says nothing)."""

    forward: NonfiniteOrigin | None
    backward: NonfiniteOrigin | None
    has_gradients: bool

    def __bool__(self) -> bool:
        return self.forward is not None or self.backward is not None

    def __str__(self) -> str:
        lines = [str(self.forward) if self.forward else "forward: all values finite"]
        if not self.has_gradients:
            lines.append("backward: no gradients yet (call backward first)")
        else:
            lines.append(str(self.backward) if self.backward else "backward: all gradients finite")
        return "\n".join(lines)


def trace_nonfinite(root: Value) -> NonfiniteReport:
    """Find the first op whose output is NaN/Inf although its inputs were finite.

    Forward: the first such node in topological order (parents before children), or a leaf holding
    non-finite data. Backward (after ``backward``): in backward order (children first), the first op
    whose gradient was finite but whose vector-Jacobian product to some input was not: log at 0 turns
    a finite gradient into inf, an overflowing exp into inf times something.
    """
    nodes = walk(root).nodes
    forward = None
    for node in nodes:
        if all_finite(node.data):
            continue
        if node.op is None or all(all_finite(p.data) for p in node.parents):
            forward = NonfiniteOrigin("forward", node)
            break
    backward, has_gradients = None, any(node.grad is not None for node in nodes)
    with np.errstate(all="ignore"):
        for node in reversed(nodes):
            if node.op is None or node.grad is None or not all_finite(node.grad):
                continue
            for k, parent in enumerate(node.parents):
                if parent.requires_grad and not all_finite(Edge(parent, node, k).contribution()):
                    backward = NonfiniteOrigin("backward", node, k)
                    break
            if backward is not None:
                break
    return NonfiniteReport(forward, backward, has_gradients)
