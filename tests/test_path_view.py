"""The path view: on a scalar graph the exact derivative along every path, on a tensor graph a true
bound (the sum over paths of products of Jacobian norms) and the exact norm on the output, checked
against central differences; an exact zero is zero, never "vanishing"."""

from __future__ import annotations

import re

import numpy as np
import pytest
from picture_helpers import scalar_rnn

import tinygrad_rnn as tg
from tinygrad_rnn import Value
from tinygrad_rnn.graph import walk
from visualize import draw_path


def _annotation(source: str, node_index: int) -> str:
    return re.search(rf"^\s*v{node_index} \[label=<(.*?)>\s+\w+=", source, flags=re.M).group(1)


def test_path_view_running_product_is_the_exact_derivative_on_a_scalar_graph():
    loss, _, (w, _, _) = scalar_rnn(steps=4)
    loss.backward()
    graph = walk(loss)
    source = draw_path(loss, w, digits=17).source
    shown = float(re.search(r"∂/∂w_hh = ([-\d.e]+)", _annotation(source, graph.index(loss))).group(1))
    assert abs(shown - w.grad) < 1e-12

    def loss_at(h0):
        return scalar_rnn(steps=4, h0=h0)[0].data

    eps = 1e-6
    numeric = (loss_at(0.3 + eps) - loss_at(0.3 - eps)) / (2 * eps)
    loss, states, _ = scalar_rnn(steps=4, h0=0.3)
    source = draw_path(loss, states[0], digits=17).source  # h_0 is a constant: paths exist all the same
    graph = walk(loss)
    shown = float(re.search(r"∂/∂h_0 = ([-\d.e]+)", _annotation(source, graph.index(loss))).group(1))
    assert abs(shown - numeric) < 1e-8


@pytest.mark.parametrize("factor, flag", [(0.1, "▼ vanishing"), (10.0, "▲ exploding")])
def test_path_view_flags_products_beyond_the_thresholds(factor, flag):
    x = Value(1.0, name="x")
    y = x
    for _ in range(5):
        y = y * factor  # products 10^{±1} ... 10^{±5}: the last two are past 10^{±3}
    source = draw_path(y, x).source
    assert source.count(f"<B>{flag}</B>") == 2


def test_path_view_shows_the_exact_norm_on_the_output_and_a_true_bound_on_every_tensor_node():
    rng = np.random.default_rng(3)
    W = Value(rng.normal(size=(5, 5)) * 0.5, name="W")
    h0 = Value(rng.normal(size=(1, 5)), name="h0")
    hs = [h0]
    for t in range(1, 4):
        with tg.scope(f"t={t}"):
            hs.append((hs[-1] @ W).tanh())
    loss = hs[-1].sum()
    loss.backward()
    graph = walk(loss)
    source = draw_path(loss, h0, digits=17).source
    exact = float(re.search(r"‖∂/∂h0‖ = ([-\d.e]+)", _annotation(source, graph.index(loss))).group(1))
    assert exact == pytest.approx(np.linalg.norm(h0.grad), rel=1e-12)

    def forward(h):  # numpy, for the true Jacobian of each h_t with respect to h_0
        out = [h]
        for _ in range(3):
            out.append(np.tanh(out[-1] @ W.data))
        return out

    eps = 1e-6
    for t in range(1, 4):
        columns = []
        for k in range(5):
            up, down = h0.data.copy(), h0.data.copy()
            up[0, k] += eps
            down[0, k] -= eps
            columns.append((forward(up)[t] - forward(down)[t]).ravel() / (2 * eps))
        true_norm = np.linalg.norm(np.stack(columns, axis=1), 2)
        bound = float(re.search(r"‖∂/∂h0‖ ≤ ([-\d.e]+)", _annotation(source, graph.index(hs[t]))).group(1))
        assert bound >= true_norm * (1 - 1e-2)  # 3 significant digits shown


def test_path_view_adds_parallel_paths_so_its_figure_is_a_true_bound():
    x = Value(np.array([1.0, -2.0]), name="x")
    total = x * 2.0 + x * 3.0
    y = total.sum()
    y.backward()
    graph = walk(y)
    source = draw_path(y, x).source
    assert "‖∂/∂x‖ = 7.071" in _annotation(source, graph.index(y))  # ||dy/dx|| = ||(5, 5)||
    assert np.linalg.norm(x.grad) == pytest.approx(7.0710678)
    assert "‖∂/∂x‖ ≤ 5<" in _annotation(source, graph.index(total))  # 2 + 3 over the two paths


def test_path_view_shows_an_exact_zero_as_zero_never_as_vanishing():
    x = Value(np.array([1.0, 2.0]), name="x")
    y = (x * 0.0).sum()
    y.backward()
    source = draw_path(y, x).source
    assert "‖∂/∂x‖ = 0<" in source and "∂/∂x = 0<" in source and "vanishing</B>" not in source
    a = Value(1.5, name="a")
    z = a * 0.0 + 1.0
    source = draw_path(z, a).source
    assert "∂/∂a = 0<" in source and "vanishing</B>" not in source


def test_path_view_rejects_a_source_the_output_does_not_depend_on():
    loss, _, _ = scalar_rnn(steps=2)
    with pytest.raises(ValueError, match="draw_path: source"):
        draw_path(loss, Value(1.0, name="elsewhere"))
