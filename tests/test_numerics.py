"""Numbers that stay fast and in their dtype (tinygrad_rnn.numerics): subnormal gradients counted,
flushed by a hook or by the CPU's mode where the platform allows it, and a float32 graph promoted to
float64 by a float64 constant found and warned of, once."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import tinygrad_rnn as tg
from tinygrad_rnn import Value, nn, numerics
from tinygrad_rnn.numerics import PromotionWarning, flush_subnormal, promotions, set_flush_denormal, subnormal_fraction

TINY32, TINY64 = np.finfo(np.float32).tiny, np.finfo(np.float64).tiny


# ---- counting -----------------------------------------------------------------------------------


def test_subnormal_fraction_counts_each_array_by_its_own_type():
    float32 = np.array([TINY32 / 2, 1.0, 0.0, -TINY32 / 8], dtype=np.float32)  # two subnormal, 0 is not
    float64 = Value(np.array([TINY64 / 2, 1e-39, TINY64]))  # 1e-39 is normal in float64; tiny itself too
    assert subnormal_fraction(float32) == 0.5
    assert subnormal_fraction(float64) == pytest.approx(1 / 3)
    assert subnormal_fraction([float32, float64]) == pytest.approx(3 / 7)
    assert subnormal_fraction([]) == 0.0


# ---- the hook -----------------------------------------------------------------------------------


def test_flush_subnormal_zeroes_only_subnormal_entries_and_keeps_the_dtype():
    grad = np.array([TINY32 / 4, -TINY32 / 4, TINY32, 0.5], dtype=np.float32)
    flushed = flush_subnormal(grad)
    assert flushed.dtype == np.float32 and list(flushed) == [0.0, 0.0, TINY32, 0.5]
    normal = np.array([1.0, 0.0])
    assert flush_subnormal(normal) is normal  # nothing to flush: the gradient itself
    assert flush_subnormal(TINY64 / 4) == 0.0 and flush_subnormal(0.25) == 0.25


def test_flush_subnormal_is_recorded_under_create_graph():
    x = Value(np.array([TINY64 / 4, 2.0]))
    y = x * 1.0
    y.register_hook(flush_subnormal)
    (g,) = tg.grad((y * y).sum(), [x], create_graph=True)
    assert isinstance(g, Value) and list(g.data) == [0.0, 4.0]


def vanishing_rnn(hidden_hook=None, steps=30):
    """A float32 tanh RNN whose gradient shrinks about 1e-3-fold a step, so that going back in time
    it passes through float32's subnormal range (1e-38 to 1e-45) on its way to 0."""
    cell = nn.RNNCell(2, 3, rng=0, dtype=np.float32)
    cell.weight_hh.data = np.eye(3, dtype=np.float32) * np.float32(1e-3)
    inputs = np.full((steps, 1, 2), 0.1, dtype=np.float32)
    _, states = nn.RNN(cell, hidden_hook=hidden_hook)(inputs, return_states=True)
    states[-1].sum().backward()
    return [s.grad for s in states[1:]]


def test_a_vanishing_float32_gradient_passes_through_subnormal_numbers_unless_flushed_by_the_hook():
    plain = vanishing_rnn()
    assert any(subnormal_fraction(g) > 0 for g in plain)
    flushed = vanishing_rnn(hidden_hook=flush_subnormal)
    assert all(subnormal_fraction(g) == 0 for g in flushed)
    # Where the gradient was normal, the hook changed nothing.
    for a, b in zip(plain, flushed):
        normal = np.abs(a) >= TINY32
        assert np.array_equal(a[normal], b[normal])


# ---- the CPU's mode -----------------------------------------------------------------------------


def test_set_flush_denormal_flushes_this_threads_arithmetic_where_the_platform_allows():
    try:
        if not set_flush_denormal(True):
            pytest.skip("this platform's floating-point mode cannot be set (not glibc on x86-64 or aarch64)")
        assert np.array([TINY64 / 4]) * 1.0 == 0.0
        assert np.float32(TINY32) / np.float32(4.0) == 0.0
    finally:
        assert set_flush_denormal(False) is True or not numerics._libm()
    assert np.array([TINY64 / 4]) * 1.0 != 0.0  # subnormal numbers back


def test_set_flush_denormal_says_false_where_it_cannot(monkeypatch):
    monkeypatch.setattr(numerics, "_libm", lambda: None)
    assert set_flush_denormal(True) is False
    assert np.array([TINY64 / 4]) * 1.0 != 0.0


def test_set_flush_denormal_is_exported_under_pytorchs_name():
    assert tg.set_flush_denormal is set_flush_denormal


# ---- float64 promotion --------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::tinygrad_rnn.dtypes.PromotionWarning")
def test_promotions_names_the_op_the_time_step_and_the_constant():
    x = Value(np.ones((2, 3), dtype=np.float32))
    with tg.scope("t=4"):
        y = x @ np.eye(3)
    (found,) = promotions(y.sum())
    assert y.dtype == np.float64 and found.op == "matmul" and found.time_step == 4
    assert found.shapes == ((3, 3),) and found.constant
    assert str(found).startswith("matmul at time step 4: a float64 constant of shape (3, 3) met float32")
    assert promotions((x @ np.eye(3, dtype=np.float32)).sum()) == []


class EyeCell(nn.Module):
    """A float32 cell with one float64 constant: h' = tanh(x W + h I)."""

    def __init__(self, dtype=np.float32):
        self.w = Value(np.full((3, 3), 0.1, dtype=dtype))
        self.identity = np.eye(3, dtype=dtype) if dtype == np.float64 else np.eye(3)  # the slip: float64

    def forward(self, x, h):
        return (x @ self.w + h @ self.identity).tanh()

    def initial_state(self, batch_size):
        return Value(np.zeros((batch_size, 3), self.w.dtype), requires_grad=False)


def test_the_unroll_warns_once_when_a_float64_constant_promotes_a_float32_cell():
    rnn = nn.RNN(EyeCell())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")  # Python's own rule: once per place in the code
        for _ in range(3):
            _, state = rnn(np.ones((4, 2, 3), dtype=np.float32))
    assert state.dtype == np.float64
    promoted = [w for w in caught if issubclass(w.category, PromotionWarning)]
    assert len(promoted) == 1
    message = str(promoted[0].message)
    # At t=1, h0 @ np.eye(3) is itself a float64 constant (nothing in it needs a gradient): the add is where
    # float32 data that needs one first meets float64.
    assert message.startswith("add in t=1: a float64 constant of shape (2, 3) met float32")
    assert "dtype=np.float32" in message and promoted[0].filename == __file__  # the cell's own line


def test_any_float32_graph_meeting_a_float64_constant_warns_once_at_the_line_that_did_it():
    w = Value(np.ones((3, 3), dtype=np.float32))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        for _ in range(3):
            y = (np.ones((2, 3), dtype=np.float32) @ w + np.zeros(3)).sum()  # np.zeros: float64
    promoted = [w for w in caught if issubclass(w.category, PromotionWarning)]
    assert y.dtype == np.float64 and len(promoted) == 1
    assert str(promoted[0].message).startswith("add: a float64 constant of shape (3,) met float32")
    assert promoted[0].filename == __file__


def test_a_float64_model_fed_float32_inputs_or_float32_constants_is_not_warned_of():
    with warnings.catch_warnings():
        warnings.simplefilter("error", PromotionWarning)
        w64 = Value(np.ones((3, 3)))
        (np.ones((2, 3), dtype=np.float32) @ w64).sum()  # the model's own choice: float64
        w32 = Value(np.ones((3, 3), dtype=np.float32))
        (w32 @ np.eye(3, dtype=np.float32) * 2.0).sum()  # nothing promoted


def test_a_float64_h0_given_to_a_float32_cell_is_named():
    cell = nn.LSTMCell(3, 4, rng=0, dtype=np.float32)
    zeros = np.zeros((2, 4))
    with pytest.warns(PromotionWarning, match=r"matmul in t=1: a float64 constant of shape \(2, 4\)"):
        nn.RNN(cell)(np.ones((3, 2, 3), dtype=np.float32), h0=(zeros, zeros))


def test_no_warning_where_nothing_was_promoted_or_the_cell_is_float64():
    with warnings.catch_warnings():
        warnings.simplefilter("error", PromotionWarning)
        nn.RNN(EyeCell(np.float64))(np.ones((3, 2, 3), dtype=np.float32))  # a float64 cell: its choice
        nn.RNN(nn.GRUCell(3, 4, rng=0, dtype=np.float32))(np.ones((3, 2, 3), dtype=np.float32))
