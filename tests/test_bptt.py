"""Backpropagation through time falls out of the unrolled graph: it equals a hand-derived BPTT, it is
cut where truncation detaches the state, and every step of it is visible (scopes, hooks)."""

import numpy as np
import pytest
from numpy_rnn_reference import numpy_rnn_loss_and_grads

import tinygrad_rnn as tg
from tinygrad_rnn import nn
from tinygrad_rnn.graph import walk
from tinygrad_rnn.recurrence import is_cut, time_step


class CharRNN(nn.Module):
    """The reference's model: an RNNCell unrolled over the sequence, then a Linear to logits."""

    def __init__(self, vocab: int, hidden: int, rng: int, dtype=np.float64):
        rng = np.random.default_rng(rng)
        self.rnn = nn.RNN(nn.RNNCell(vocab, hidden, rng=rng, dtype=dtype))
        self.output = nn.Linear(hidden, vocab, rng=rng, dtype=dtype)

    def loss(self, inputs, targets, h0):
        hiddens, _ = self.rnn(inputs, h0)
        logits = self.output(tg.stack(hiddens))  # one matmul for all T steps: (T, B, H) -> (T, B, V)
        return nn.cross_entropy(logits, targets, reduction="sum")


def _char_data(vocab, seq, batch, seed):
    rng = np.random.default_rng(seed)
    indices = rng.integers(0, vocab, (seq + 1, batch))
    return indices[:-1], indices[1:]


def _framework_loss_and_grads(model, inputs, targets, h0):
    model.zero_grad()
    loss = model.loss(inputs, targets, h0)
    loss.backward()
    return loss.item(), {name: p.grad for name, p in model.named_parameters()}


@pytest.mark.parametrize("batch", [1, 3])
def test_backward_equals_hand_derived_bptt_at_vocab_65_hidden_100_seq_25(batch):
    vocab, hidden, seq = 65, 100, 25
    model = CharRNN(vocab, hidden, rng=batch)
    indices, targets = _char_data(vocab, seq, batch, seed=batch)
    one_hot = np.eye(vocab)[indices]
    h0 = np.random.default_rng(7).normal(0, 0.5, (batch, hidden))

    loss, grads = _framework_loss_and_grads(model, one_hot, targets, h0)
    expected_loss, expected = numpy_rnn_loss_and_grads(model.state_dict(), one_hot, targets, h0)

    assert abs(loss - expected_loss) <= 1e-10 * max(1.0, abs(expected_loss))
    assert grads.keys() == expected.keys()
    for name in grads:
        assert np.max(np.abs(grads[name] - expected[name])) <= 1e-10, name
    # At initialisation the predictions are near uniform: the summed loss is about T B ln V.
    assert abs(loss / (seq * batch * np.log(vocab)) - 1) < 0.1


def test_reference_agrees_with_central_differences():
    """The reference is itself checked, so that two agreeing implementations cannot share a bug."""
    vocab, hidden, seq, batch = 5, 4, 3, 2
    model = CharRNN(vocab, hidden, rng=0)
    indices, targets = _char_data(vocab, seq, batch, seed=1)
    h0 = np.random.default_rng(2).normal(0, 0.5, (batch, hidden))
    params = model.state_dict()
    _, grads = numpy_rnn_loss_and_grads(params, indices, targets, h0)
    eps = 1e-6
    for name, array in params.items():
        numeric = np.zeros_like(array)
        for j in range(array.size):
            shifted = {k: v.copy() for k, v in params.items()}
            shifted[name].flat[j] += eps
            up = numpy_rnn_loss_and_grads(shifted, indices, targets, h0)[0]
            shifted[name].flat[j] -= 2 * eps
            down = numpy_rnn_loss_and_grads(shifted, indices, targets, h0)[0]
            numeric.flat[j] = (up - down) / (2 * eps)
        np.testing.assert_allclose(grads[name], numeric, atol=1e-7, err_msg=name)


def test_reference_index_inputs_match_one_hot_inputs():
    vocab, hidden, seq, batch = 7, 6, 4, 3
    params = CharRNN(vocab, hidden, rng=3).state_dict()
    indices, targets = _char_data(vocab, seq, batch, seed=4)
    h0 = np.zeros((batch, hidden))
    loss_i, grads_i = numpy_rnn_loss_and_grads(params, indices, targets, h0)
    loss_o, grads_o = numpy_rnn_loss_and_grads(params, np.eye(vocab)[indices], targets, h0)
    assert abs(loss_i - loss_o) < 1e-12
    for name in grads_i:
        np.testing.assert_allclose(grads_i[name], grads_o[name], atol=1e-12)


def test_float32_gradients_match_reference_in_float32():
    vocab, hidden, seq, batch = 11, 8, 6, 2
    model = CharRNN(vocab, hidden, rng=5, dtype=np.float32)
    indices, targets = _char_data(vocab, seq, batch, seed=5)
    one_hot = np.eye(vocab, dtype=np.float32)[indices]
    h0 = np.zeros((batch, hidden), np.float32)
    loss, grads = _framework_loss_and_grads(model, one_hot, targets, h0)
    expected_loss, expected = numpy_rnn_loss_and_grads(model.state_dict(), one_hot, targets, h0)
    assert abs(loss - expected_loss) < 1e-4 * abs(expected_loss)
    for name in grads:
        assert grads[name].dtype == np.float32, name
        assert expected[name].dtype == np.float32, name
        np.testing.assert_allclose(grads[name], expected[name], atol=1e-5, err_msg=name)


def test_truncated_bptt_reaches_only_the_last_k_steps():
    seq, k, batch, size = 9, 3, 2, 4
    rnn = nn.RNN(nn.RNNCell(size, size, rng=0), truncate=k)
    xs = [tg.Value(np.random.default_rng(t).normal(size=(batch, size))) for t in range(seq)]
    hiddens, _ = rnn(xs)
    hiddens[-1].sum().backward()
    reached = [x.grad is not None and np.any(x.grad != 0) for x in xs]
    assert reached == [False] * (seq - k) + [True] * k


def test_truncated_bptt_keeps_each_loss_inside_its_window():
    seq, k, size = 6, 2, 3
    rnn = nn.RNN(nn.RNNCell(size, size, rng=1), truncate=k)
    xs = [tg.Value(np.random.default_rng(t).normal(size=(1, size))) for t in range(seq)]
    hiddens, _ = rnn(xs)
    # A loss at step 3 (the first step of the second window) reaches x_3 only, not x_1 or x_2.
    hiddens[2].sum().backward()
    assert [x.grad is not None for x in xs] == [False, False, True, False, False, False]


def test_truncation_marks_the_detached_state():
    rnn = nn.RNN(nn.LSTMCell(2, 3, rng=0), truncate=2)
    hiddens, (h, c) = rnn(np.ones((5, 1, 2)))
    # The states after steps 2 and 4 were cut: steps 3 and 5 start from constants marked "truncated".
    marked = [v for v in walk(hiddens).nodes if is_cut(v)]
    assert sorted(v.scope for v in marked) == ["t=2", "t=2", "t=4", "t=4"]  # h and c, twice
    assert all(not v.requires_grad for v in marked)
    assert not any(is_cut(v) for v in walk([h, c]).nodes if v.scope == "t=5")


def test_untruncated_gradient_reaches_the_first_step():
    rnn = nn.RNN(nn.RNNCell(3, 3, rng=0))
    xs = [tg.Value(np.ones((1, 3))) for _ in range(8)]
    hiddens, _ = rnn(xs)
    hiddens[-1].sum().backward()
    assert all(x.grad is not None and np.any(x.grad != 0) for x in xs)


def test_hidden_hook_fires_once_per_step_in_backward_order():
    seq = 5
    seen = []
    rnn = nn.RNN(nn.GRUCell(2, 3, rng=0), hidden_hook=lambda g: seen.append(g.copy()))
    hiddens, _ = rnn(np.random.default_rng(0).normal(size=(seq, 2, 2)))
    # A second hook on each h_t, registered after the RNN's, records which step just fired.
    order = []
    for t, h in enumerate(hiddens, start=1):
        h.register_hook(lambda g, t=t: order.append(t))
    sum(h.sum() for h in hiddens).backward()
    assert order == list(range(seq, 0, -1))
    assert len(seen) == seq
    # The hook saw each h_t's fully accumulated gradient, the same one left in .grad.
    for g, h in zip(seen, reversed(hiddens), strict=True):
        np.testing.assert_array_equal(g, h.grad)


def test_hidden_hook_replacement_changes_the_gradient_upstream():
    size = 3
    clipped = nn.RNN(nn.RNNCell(size, size, rng=0), hidden_hook=lambda g: np.clip(g, -0.01, 0.01))
    free = nn.RNN(nn.RNNCell(size, size, rng=0))
    grads = []
    for rnn in (clipped, free):
        x = tg.Value(np.ones((4, 1, size)))
        hiddens, _ = rnn(x)
        (hiddens[-1] * 100.0).sum().backward()
        grads.append(x.grad)
    assert np.max(np.abs(grads[0])) < np.max(np.abs(grads[1]))


def _minimal_gated_cell(x, h):
    gate = (x * 2.0).sigmoid()
    return gate * h + (1.0 - gate) * x.tanh()


@pytest.mark.parametrize(
    "cell", [nn.RNNCell(3, 3, rng=0), nn.LSTMCell(3, 3, rng=0), nn.GRUCell(3, 3, rng=0), _minimal_gated_cell],
    ids=["rnn", "lstm", "gru", "plain-callable"],
)
def test_every_value_made_in_step_t_has_scope_t(cell):
    seq = 4
    x = tg.Value(np.random.default_rng(0).normal(size=(seq, 2, 3)))
    h0 = None if isinstance(cell, nn.Module) else tg.Value(np.zeros((2, 3)), requires_grad=False)
    hiddens, state = nn.RNN(cell)(x, h0)
    made = [v for v in walk(list(state) if isinstance(state, tuple) else state).nodes if v.op is not None]
    parameters = set(cell.parameters()) if isinstance(cell, nn.Module) else set()
    per_step = {f"t={t}": 0 for t in range(1, seq + 1)}
    for v in made:
        if v.scope == "":
            # Made once before step 1 (a transposed weight, or the projection of all the inputs,
            # x W_ih^T + b): it depends on parameters and the input sequence only.
            leaves = [u for u in walk(v).nodes if u.op is None and u.requires_grad]
            assert leaves and set(leaves) <= parameters | {x}, v
            continue
        step = time_step(v)  # "t=3", or a gate's scope inside it ("t=3/forget gate")
        assert step is not None and step.prefix == "" and f"t={step.t}" in per_step, v
        per_step[f"t={step.t}"] += 1
        # Only the state crosses from one step to the next: a node's recorded parents are of its own
        # step or the step before (or the shared weights).
        for parent in v.parents:
            if parent.op is not None:
                assert parent.scope == "" or time_step(parent).t in (step.t, step.t - 1), (v, parent)
    assert len(set(per_step.values())) == 1 and per_step["t=1"] > 0  # every step made the same ops
    assert [h.scope for h in hiddens] == list(per_step)


def test_rnn_needs_h0_for_a_plain_callable_cell():
    with pytest.raises(TypeError, match="h0"):
        nn.RNN(_minimal_gated_cell)(np.ones((3, 2, 3)))
