"""BNRNNCell: Cooijmans et al.'s recurrent batch norm in its Elman form. Its outputs are the formula
written out in numpy with per-step batch statistics, its gradients agree with finite differences, its
running statistics are kept per time step, and it mixes the rows of a batch (which the step numbers
then account for)."""

import numpy as np
import pytest

import tinygrad_rnn as tg
from tinygrad_rnn import diagnostics, nn
from tinygrad_rnn.nn.batchnorm_rnn import BNRNNCell

EPS = 1e-5


def numpy_bn_rnn(p, xs, h0, training=True, running=None):
    """The cell by hand: h' = tanh(BN(x W_ih^T) + BN(h W_hh^T) + b_ih + b_hh), per-step statistics."""
    h, outputs = h0, []
    for t, x in enumerate(xs):
        terms = []
        for z, gamma, term in ((x @ p["weight_ih"].T, p["gamma_ih"], "ih"), (h @ p["weight_hh"].T, p["gamma_hh"], "hh")):
            if training:
                mean, var = z.mean(axis=0), z.var(axis=0)
            else:
                row = min(t, running[f"running_mean_{term}"].shape[0] - 1)
                mean, var = running[f"running_mean_{term}"][row], running[f"running_var_{term}"][row]
            terms.append(gamma * (z - mean) / np.sqrt(var + EPS))
        h = np.tanh(terms[0] + terms[1] + p["bias_ih"] + p["bias_hh"])
        outputs.append(h)
    return outputs


def _data(steps=4, batch=5, inputs=3, hidden=4, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(steps, batch, inputs)), 0.5 * rng.normal(size=(batch, hidden))


def test_training_outputs_are_the_formula_with_each_steps_batch_statistics():
    cell = BNRNNCell(3, 4, gamma=0.7, rng=0)
    xs, h0 = _data()
    outputs, _ = nn.RNN(cell)(xs, h0=tg.Value(h0, requires_grad=False))
    expected = numpy_bn_rnn(cell.state_dict(), xs, h0)
    for out, exp in zip(outputs, expected):
        np.testing.assert_allclose(out.data, exp, rtol=1e-10, atol=1e-12)


def test_running_statistics_are_kept_per_time_step():
    cell = BNRNNCell(3, 4, max_steps=6, momentum=0.25, rng=0)
    xs, h0 = _data(steps=4)
    nn.RNN(cell)(xs, h0=tg.Value(h0, requires_grad=False))
    p = cell.state_dict()
    h = h0
    for t, x in enumerate(xs):
        for z, term in ((x @ p["weight_ih"].T, "ih"), (h @ p["weight_hh"].T, "hh")):
            np.testing.assert_allclose(cell.state_dict()[f"running_mean_{term}"][t], 0.25 * z.mean(axis=0), rtol=1e-10)
            np.testing.assert_allclose(cell.state_dict()[f"running_var_{term}"][t],
                                       0.75 + 0.25 * z.var(axis=0, ddof=1), rtol=1e-10)
        h = numpy_bn_rnn(p, xs[: t + 1], h0)[-1]
    # Steps that never ran keep the initial statistics.
    assert np.all(cell.running_mean_ih[4:] == 0) and np.all(cell.running_var_ih[4:] == 1)


def test_eval_uses_each_steps_running_statistics_and_the_last_row_beyond_max_steps():
    cell = BNRNNCell(3, 4, max_steps=2, rng=0)
    rng = np.random.default_rng(5)
    cell.load_state_dict({**cell.state_dict(),
                          "running_mean_ih": rng.normal(size=(2, 4)), "running_var_ih": rng.uniform(0.5, 2, (2, 4)),
                          "running_mean_hh": rng.normal(size=(2, 4)), "running_var_hh": rng.uniform(0.5, 2, (2, 4))})
    cell.eval()
    xs, h0 = _data(steps=4, batch=1)  # evaluation works on a single example
    outputs, _ = nn.RNN(cell)(xs, h0=tg.Value(h0, requires_grad=False))
    expected = numpy_bn_rnn(cell.state_dict(), xs, h0, training=False, running=cell.state_dict())
    for out, exp in zip(outputs, expected):
        np.testing.assert_allclose(out.data, exp, rtol=1e-10, atol=1e-12)


def test_each_sequence_counts_its_steps_from_one():
    cell = BNRNNCell(3, 4, max_steps=3, rng=0)
    cell.eval()
    xs, h0 = _data(steps=2, batch=2)
    first, _ = nn.RNN(cell)(xs, h0=tg.Value(h0, requires_grad=False))
    second, _ = nn.RNN(cell)(xs, h0=tg.Value(h0, requires_grad=False))
    np.testing.assert_array_equal(first[-1].data, second[-1].data)


def test_gradcheck_through_three_steps_in_training():
    cell = BNRNNCell(2, 3, gamma=0.8, rng=0)
    xs, h0 = _data(steps=3, batch=4, inputs=2, hidden=3)
    readout = np.random.default_rng(9).normal(size=(4, 3))
    params = [cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.gamma_ih, cell.gamma_hh]

    def loss(*_):
        outputs, _ = nn.RNN(cell)(xs, h0=tg.Value(h0, requires_grad=False))
        return (outputs[-1] * readout).sum()

    assert tg.gradcheck(loss, params)


def test_batch_statistics_make_every_row_depend_on_every_other():
    cell = BNRNNCell(3, 4, rng=0)
    xs, h0 = _data(steps=2)
    base = nn.RNN(cell)(xs, h0=tg.Value(h0, requires_grad=False))[0][-1].data
    xs[:, 0] += 1.0  # change example 0 only
    moved = nn.RNN(cell)(xs, h0=tg.Value(h0, requires_grad=False))[0][-1].data
    assert np.all(np.abs(moved[1:] - base[1:]).max(axis=1) > 1e-6)
    plain = nn.RNNCell(3, 4, rng=0)
    a = nn.RNN(plain)(xs, h0=tg.Value(h0, requires_grad=False))[0][-1].data
    xs[:, 0] -= 1.0
    b = nn.RNN(plain)(xs, h0=tg.Value(h0, requires_grad=False))[0][-1].data
    np.testing.assert_array_equal(a[1:], b[1:])


def test_step_numbers_of_a_batch_norm_cell_use_the_whole_batch_jacobian():
    cell = BNRNNCell(3, 4, rng=0)
    xs, h0 = _data(steps=3)
    outputs, states = nn.RNN(cell)(xs, h0=tg.Value(h0), return_states=True)
    loss = (outputs[-1] ** 2).sum()
    loss.backward()
    rows = diagnostics.steps(loss, states)
    assert [r.bound_method for r in rows[1:]] == ["full"] * 3


def test_float32_stays_float32():
    cell = BNRNNCell(3, 4, rng=0, dtype=np.float32)
    xs, h0 = _data()
    outputs, _ = nn.RNN(cell)(xs.astype(np.float32), h0=tg.Value(h0.astype(np.float32), requires_grad=False))
    assert outputs[-1].dtype == np.float32 and cell.running_var_hh.dtype == np.float32


def test_unbatched_input_and_a_batch_of_one_in_training_are_refused():
    cell = BNRNNCell(3, 4, rng=0)
    with pytest.raises(ValueError, match="batched"):
        cell(np.ones(3), tg.Value(np.zeros(4)))
    with pytest.raises(ValueError, match="at least 2"):
        cell(np.ones((1, 3)), tg.Value(np.zeros((1, 4))))
    with pytest.raises(ValueError, match="max_steps"):
        BNRNNCell(3, 4, max_steps=0)
