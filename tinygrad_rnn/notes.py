"""What a node of an unrolled recurrence carries besides its value: where it sits, and what was noted on it.

- ``time_step(node)``, ``inner_scope(node)``: where a node sits in an unrolled recurrence, read from
  the scope it was made in (``scope("t=3")``). Nothing else parses scope strings.
- ``is_cut(node)``, ``mark_cut(node)``, ``clip_record(node)``: what was noted on a node (a detached
  state, a clipping hook's record). Nothing else knows the keys of ``notes``.

``tinygrad_rnn.recurrence`` hands these names on, beside one step's map and backpropagation through
the steps.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from tinygrad_rnn.value import Value

__all__ = [
    "TimeStep", "step_scope", "time_step", "inner_scope", "is_cut", "mark_cut", "ClipRecord", "record_clip",
    "clip_record",
]


# ---- scopes: where a node sits in an unrolled recurrence -----------------------------------------

_STEP = re.compile(r"^t\s*=\s*(-?\d+)$")


@dataclass(frozen=True, order=True)
class TimeStep:
    """A time step of an unrolled recurrence: scope path ``prefix/t=<t>`` (prefix may be empty,
    as for ``RNN``; ``"encoder"`` for ``scope("encoder")`` around the unroll)."""

    prefix: str
    t: int

    @property
    def scope(self) -> str:
        return f"{self.prefix}/t={self.t}" if self.prefix else f"t={self.t}"


@functools.lru_cache(maxsize=8192)
def _parse_scope(scope: str) -> tuple[TimeStep | None, str]:
    parts = scope.split("/")
    for i in range(len(parts) - 1, -1, -1):
        match = _STEP.match(parts[i].strip())
        if match:
            return TimeStep("/".join(parts[:i]), int(match.group(1))), "/".join(parts[i + 1 :])
    return None, ""


def step_scope(t: int) -> str:
    """The scope name of time step t, as an unroll writes it: ``with scope(step_scope(3))``."""
    return f"t={t}"


def time_step(node: Value) -> TimeStep | None:
    """The time step ``node`` was made in: the innermost ``t=<k>`` part of its scope, or None."""
    return _parse_scope(node.scope)[0] if node.scope else None


def inner_scope(node: Value) -> str:
    """The part of ``node``'s scope inside its time step: ``"forget gate"`` for a node made in
    ``scope("t=3")`` then ``scope("forget gate")``; "" when there is none."""
    return _parse_scope(node.scope)[1] if node.scope else ""


# ---- notes: what hooks and the unroll wrote on a node ------------------------------------------

_CUT, _CLIP = "truncated", "clip"


def is_cut(node: Value) -> bool:
    """Whether ``node`` is a state cut from the graph on purpose (``mark_cut``; truncated BPTT)."""
    return isinstance(node.notes, dict) and bool(node.notes.get(_CUT))


def mark_cut(node: Value) -> Value:
    """Note on ``node`` (a detached state) that the graph was cut there, so pictures show it."""
    node.notes = {**(node.notes or {}), _CUT: True}
    return node


@dataclass(frozen=True)
class ClipRecord:
    """What a clipping hook did to a node's gradient in the last backward pass: its norm before and
    after, and whether it fired (changed the gradient)."""

    norm_before: float
    norm_after: float
    fired: bool


def record_clip(node: Value, norm_before: float, norm_after: float, fired: bool) -> None:
    """Note on ``node`` what a clipping hook did to its gradient (tinygrad_rnn.clip writes through
    this; ``clip_record`` reads it back)."""
    node.notes = {**(node.notes or {}), _CLIP: {"norm_before": norm_before, "norm_after": norm_after,
                                                "fired": bool(fired)}}


def clip_record(node: Value) -> ClipRecord | None:
    """The record a clipping hook (tinygrad_rnn.clip) left on ``node``, or None."""
    record = node.notes.get(_CLIP) if isinstance(node.notes, dict) else None
    if not isinstance(record, dict):
        return None
    return ClipRecord(float(record["norm_before"]), float(record["norm_after"]), bool(record["fired"]))
