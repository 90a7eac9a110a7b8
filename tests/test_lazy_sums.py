"""A gradient kept as terms until it is complete (ops.LazySum) adds up to what the plain vjps add up
to: Products for a weight shared by many matmuls, Scattered for the rows of one array read one by
one. The backward pass adds them; nothing else (pictures, Edge) ever sees one."""

import numpy as np
import pytest

import tinygrad_rnn as tg
from tinygrad_rnn import ops
from tinygrad_rnn.graph import walk


def _products(rng, rows, n=4, m=3):
    """(a_i, g_i) pairs with a_i (rows_i, n) and g_i (rows_i, m): the inputs and gradients of
    matmuls a_i @ W with one shared W (n, m)."""
    return [(rng.normal(size=(r, n)), rng.normal(size=(r, m))) for r in rows]


@pytest.mark.parametrize("block_rows", [1, 3, 6, 512], ids=lambda n: f"blocks of {n} rows")
def test_products_add_up_to_the_sum_of_the_plain_matmul_vjps(block_rows, monkeypatch):
    # total() stacks blocks of about block_rows rows; every blocking gives the same sum.
    monkeypatch.setattr(ops.Products, "BLOCK_ROWS", block_rows)
    rng = np.random.default_rng(0)
    w = rng.normal(size=(4, 3))
    matmul = ops.MatMul()
    lazy, plain = None, 0.0
    for a, g in _products(rng, [2, 1, 5, 3]):
        term = matmul.vjp_term(1, g, a @ w, [a, w])
        assert isinstance(term, ops.Products)
        lazy = term if lazy is None else lazy + term
        plain = plain + matmul.vjp(1, g, a @ w, [a, w])
    assert len(lazy.terms) == 4
    np.testing.assert_allclose(lazy.total(), plain, rtol=1e-12, atol=1e-12)


def test_a_lazy_sum_meeting_an_array_becomes_an_array_on_either_side():
    rng = np.random.default_rng(1)
    (a, g), = _products(rng, [3])
    array = rng.normal(size=(4, 3))
    left = array + ops.Products(a, g)
    right = ops.Products(a, g) + array
    assert type(left) is np.ndarray and type(right) is np.ndarray
    np.testing.assert_allclose(left, array + a.T @ g)
    np.testing.assert_allclose(right, a.T @ g + array)


def test_a_matmul_on_values_or_vectors_gives_its_plain_vjp():
    # create_graph=True hands Values; a vector operand takes the general path: no lazy terms.
    matmul = ops.MatMul()
    a, w, g = tg.Value(np.ones((2, 3))), tg.Value(np.ones((3, 4))), tg.Value(np.ones((2, 4)))
    assert isinstance(matmul.vjp_term(1, g, None, [a, w]), tg.Value)
    vector = np.ones(3)
    assert type(matmul.vjp_term(1, np.ones(4), None, [vector, np.ones((3, 4))])) is np.ndarray


@pytest.mark.parametrize("index", [
    (0,), (slice(1, 3),), (Ellipsis, 1), (np.array([0, 2, 0]),), (np.array([1, 1]), slice(None)),
], ids=["row", "slice", "column", "int array with a repeat", "int array and slice"])
def test_scattered_adds_up_to_the_sum_of_the_plain_getitem_vjps(index):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(3, 4))
    getitem = ops.GetItem(index)
    lazy, plain = None, 0.0
    for _ in range(3):  # the same rows read three times, and a row read by every index
        for idx in (index, (1,)):
            op = ops.GetItem(idx)
            g = rng.normal(size=np.shape(x[idx]))
            term = op.vjp_term(0, g, x[idx], [x])
            lazy = term if lazy is None else lazy + term
            plain = plain + op.vjp(0, g, x[idx], [x])
    assert isinstance(lazy, ops.Scattered) and getitem.name == "getitem"
    np.testing.assert_allclose(lazy.total(), plain, rtol=1e-12, atol=1e-12)


def test_scattered_into_different_shapes_do_not_join():
    small = ops.Scattered((0,), (2, 3), np.ones(3))
    large = ops.Scattered((0,), (4, 3), np.ones(3))
    with pytest.raises(ValueError):  # added as arrays, (2, 3) + (4, 3) is numpy's broadcast error
        small + large


def test_a_weight_shared_by_every_step_gets_the_sum_of_its_edges():
    # Backward adds the lazy products; each edge (the pictures' door) reports its own plain vjp.
    rng = np.random.default_rng(3)
    w = tg.Value(rng.normal(size=(4, 4)) * 0.5)
    h = tg.Value(rng.normal(size=(2, 4)), requires_grad=False)
    shared = w.T
    for _ in range(6):
        h = (h @ shared).tanh()
    h.sum().backward()
    edges = [e for e in walk(h).edges if e.parent is shared]
    assert len(edges) == 6
    np.testing.assert_allclose(shared.grad, sum(e.contribution() for e in edges), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(w.grad, shared.grad.T)


def test_rows_read_one_by_one_get_exactly_their_gradients():
    x = tg.Value(np.random.default_rng(4).normal(size=(5, 2, 3)))
    weights = np.arange(5 * 2 * 3, dtype=float).reshape(5, 2, 3)
    loss = sum((x[t] * weights[t]).sum() for t in range(5))
    loss.backward()
    assert np.array_equal(x.grad, weights)


@pytest.mark.parametrize("rows", [[2, 0, 1, 3], [3, 2, 1, 0], [0, 1, 1, 2], [0, 1, 2], [0, 1, 2, -1]],
                         ids=["every row once, shuffled", "every row once, reversed", "a row twice",
                              "a row never", "a negative index"])
def test_scattered_rows_give_the_plain_sum_whether_or_not_they_fill_the_array(rows):
    # Rows that fill the array, each read once (an unrolled RNN's steps), are written without zeros
    # first; any other reading falls back to adding into zeros. Both give the plain vjps' sum.
    rng = np.random.default_rng(5)
    x = rng.normal(size=(4, 2, 3))
    lazy, plain = None, 0.0
    for row in rows:
        op, g = ops.GetItem(row), rng.normal(size=(2, 3))
        term = op.vjp_term(0, g, x[row], [x])
        lazy = term if lazy is None else lazy + term
        plain = plain + op.vjp(0, g, x[row], [x])
    np.testing.assert_array_equal(lazy.total(), plain)


def test_scattered_into_a_zero_dimensional_array_adds_its_pieces():
    pieces = ops.Scattered(Ellipsis, (), np.full((), 2.0)) + ops.Scattered((), (), np.full((), 3.0))
    assert pieces.total() == 5.0


def test_stacking_raw_arrays_of_different_shapes_is_refused():
    # Stack joins arrays of one shape end to end; arrays whose lengths happen to add up must not pass.
    with pytest.raises(ValueError, match="same shape"):
        ops.Stack()(np.ones((2, 3)), np.ones((1, 3)), np.ones((3, 3)))
    with pytest.raises(ValueError, match="at least one array"):
        ops.Stack()()
