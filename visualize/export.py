"""JSON export of a recorded graph, for other tools (a web viewer, a notebook, a diff of two runs).

The numbers are the ones the pictures show, from the same graph walk: per edge the exact scalar
derivative (scalar edges), the spectral norm of the local Jacobian and, after backward, the observed
gain. Numbers JSON cannot hold (inf, nan) are written as null.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np

from tinygrad_rnn import diagnostics
from tinygrad_rnn.graph import walk
from tinygrad_rnn.recurrence import clip_record, is_cut, time_step
from tinygrad_rnn.value import Value
from visualize.labels import measure

__all__ = ["to_json", "graph_dict", "FORMAT", "steps_list", "lags_dict", "monitor_dict"]

FORMAT = "tinygrad_rnn.graph/2"  # 2: "notes" became the typed "cut" and "clip"


def _number(x) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _float_array(x) -> np.ndarray:
    return np.asarray(x.data if isinstance(x, Value) else x, dtype=np.float64)


def _array(x, limit: int):
    """A small array as nested lists (non-finite entries null); a large one as None."""
    array = _float_array(x)
    if array.size > limit:
        return None
    return _clean(array.tolist()) if array.ndim else _number(array)


def _summary(x) -> dict | None:
    if x is None:
        return None
    array = _float_array(x)
    if array.size == 0:
        return {"norm": 0.0}
    return {"min": _number(array.min()), "max": _number(array.max()), "mean": _number(array.mean()),
            "norm": _number(np.linalg.norm(array.ravel()))}


def _clean(value):
    """Notes and other free-form values made JSON-safe (non-finite -> None, unknown -> str)."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, (bool, str)) or value is None:
        return value
    if isinstance(value, (int, float, np.integer, np.floating)):
        return _number(value) if isinstance(value, (float, np.floating)) else int(value)
    return str(value)


def graph_dict(root, data_limit: int = 64) -> dict:
    """The graph behind ``root`` as plain dicts and lists (what ``to_json`` serialises)."""
    graph = walk(root)
    ids = {node: i for i, node in enumerate(graph.nodes)}
    nodes = []
    for node in graph.nodes:
        step = time_step(node)
        nodes.append({
            "id": ids[node], "name": node.name, "op": node.op.name if node.op is not None else None,
            "op_repr": repr(node.op) if node.op is not None else None, "scope": node.scope,
            "time_step": step.t if step else None, "shape": list(node.shape),
            "requires_grad": node.requires_grad, "data": _array(node.data, data_limit),
            "data_summary": _summary(node.data),
            "grad": _array(node.grad, data_limit) if node.grad is not None else None,
            "grad_summary": _summary(node.grad), "cut": is_cut(node),
            "clip": None if clip_record(node) is None else _clean(dataclasses.asdict(clip_record(node))),
        })
    edges = []
    for edge in graph.edges:
        scalar = edge.child.size == 1 and edge.parent.size == 1
        edges.append({
            "parent": ids[edge.parent], "child": ids[edge.child], "position": edge.position,
            "derivative": _number(measure(edge.derivative)) if scalar else None,
            "jacobian_norm": _number(measure(edge.jacobian_norm)),
            "observed_gain": _number(measure(edge.observed_gain)) if edge.child.grad is not None else None,
        })
    return {"format": FORMAT, "nodes": nodes, "edges": edges}


def to_json(root, path=None, indent: int | None = None, data_limit: int = 64) -> str:
    """The graph behind ``root`` as a JSON string (also written to ``path`` if given).

    Nodes: id, name, op, scope, time_step, shape, data (when at most ``data_limit`` numbers) and
    its summary, grad likewise, cut (a state detached on purpose), clip (a clipping hook's record:
    norm_before, norm_after, fired). Edges: parent, child, position, derivative (scalar edges),
    jacobian_norm, observed_gain (after backward). Node ids are positions in topological order.
    """
    text = json.dumps(graph_dict(root, data_limit), indent=indent, allow_nan=False)
    if path is not None:
        Path(path).write_text(text, encoding="utf-8")
    return text


def steps_list(rows) -> list[dict]:
    """The step view's numbers (``diagnostics.steps`` rows) as dicts: t, grad_norm (||delta_t||), gain,
    bound (||J_t||_2), bound_method, clip, cut, direct, last_read, contribution (||C_t||)."""
    return [_clean(dataclasses.asdict(row)) for row in rows]


def lags_dict(matrix) -> dict:
    """The lag view's numbers: the ``diagnostics.lags`` matrix ([loss i, state k] = ||delta_k^(i)||),
    the reach curve over the lag and how many losses each lag rests on (``diagnostics.reach``,
    ``reach_counts``)."""
    matrix = np.asarray(matrix, dtype=np.float64)
    return {"matrix": _clean(matrix.tolist()), "reach": _clean(diagnostics.reach(matrix).tolist()),
            "reach_counts": _clean(diagnostics.reach_counts(matrix).tolist())}


def monitor_dict(monitor) -> dict:
    """A Monitor's history: per iteration the loss, each parameter's gradient norm and update ratio,
    and ||delta_t|| per state (``step_grad_norms``, None for an iteration recorded without states)."""
    return {"losses": _clean(monitor.losses), "grad_norms": _clean(monitor.grad_norms),
            "update_ratios": _clean(monitor.update_ratios), "step_grad_norms": _clean(monitor.step_grad_norms)}
