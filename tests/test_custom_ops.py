"""docs/custom_ops.md's recipe for a custom primitive, run as written: its code blocks define Silu (an
Elementwise op) and Unit (an Op with forward, vjp and jacobian_norm) and check them; here the same ops
are checked further, against the numerical Jacobian, in a picture's edge label and in a replay."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

import tinygrad_rnn as tg
from tinygrad_rnn import Value
from tinygrad_rnn.gradcheck import numerical_jacobian
from tinygrad_rnn.graph import walk

DOC = Path(__file__).resolve().parents[1] / "docs" / "custom_ops.md"


@pytest.fixture(scope="module")
def recipe() -> dict:
    """The namespace the doc's code blocks make, run in order (their own asserts included)."""
    namespace: dict = {}
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)
    assert len(blocks) == 3, "the doc has three code blocks: Silu, Unit, the checks"
    for block in blocks:
        exec(compile(block, str(DOC), "exec"), namespace)
    return namespace


def test_the_recipe_runs_as_written(recipe):
    assert {"Silu", "Unit"} <= set(recipe)


@pytest.mark.parametrize("size", [2, 3, 5])
def test_unit_edge_norm_is_the_spectral_norm_of_the_numerical_jacobian(recipe, size):
    x = Value(np.random.default_rng(size).standard_normal(size))
    y = recipe["Unit"]()(x)
    (edge,) = walk(y).edges
    expected = np.linalg.norm(numerical_jacobian(lambda v: recipe["Unit"]()(v), [x], 0), 2)
    assert edge.jacobian_norm() == pytest.approx(expected, rel=1e-6)


def test_silu_edge_norm_is_the_largest_derivative(recipe):
    x = Value(np.array([-2.0, 0.5, 1.5]))
    (edge,) = walk(recipe["Silu"]()(x)).edges
    expected = np.linalg.norm(numerical_jacobian(lambda v: recipe["Silu"]()(v), [x], 0), 2)
    assert edge.jacobian_norm() == pytest.approx(expected, rel=1e-6)


def test_a_missing_method_is_refused_when_the_class_is_defined():
    with pytest.raises(TypeError, match="op Half must define jacobian_norm"):
        class Half(tg.ops.Op):
            def forward(self, x):
                return x / 2.0

            def vjp(self, k, grad, out, inputs):
                return grad / 2.0


def test_the_picture_writes_the_ops_edge_norm(recipe):
    visualize = pytest.importorskip("visualize")
    x = Value(np.array([0.3, -1.2, 2.0]), name="x")
    y = recipe["Unit"]()(x)
    (y * np.array([1.0, 2.0, 3.0])).sum().backward()
    source = visualize.draw_graph(y).source
    assert "‖J‖ 0.425" in source  # 1/||x||, as the doc says
    assert "x/‖x‖" in source  # the op's symbol on its node


def test_float32_stays_float32_through_the_custom_ops(recipe):
    x = Value(np.array([0.3, -1.2, 2.0], dtype=np.float32))
    (recipe["Unit"]()(x) * recipe["Silu"]()(x)).sum().backward()
    assert x.grad.dtype == np.float32


def test_a_custom_op_replays_as_it_runs_eagerly(recipe):
    w = Value(np.array([0.5, -1.0, 2.0]))

    def loss(x):
        return (recipe["Unit"]()(recipe["Silu"]()(x * w)) * np.array([1.0, 2.0, 3.0])).sum()

    step = tg.replay(loss)
    for seed in range(3):
        x = np.random.default_rng(seed).uniform(-2, 2, 3)
        w.grad = None
        expected = loss(Value(x, requires_grad=False))
        expected.backward()
        eager, w.grad = w.grad, None
        assert step(x) == expected.item()
        np.testing.assert_array_equal(w.grad, eager)
