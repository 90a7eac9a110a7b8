"""Modules (parameters, state dicts, modes), layers, initialisers and losses."""

import numpy as np
import pytest

import tinygrad_rnn as tg
from tinygrad_rnn import nn


def _random(*shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape)


class TwoLayer(nn.Module):
    def __init__(self, rng=0, dtype=np.float64):
        rng = np.random.default_rng(rng)
        self.rnn = nn.RNN(nn.LSTMCell(3, 4, rng=rng, dtype=dtype))
        self.norm = nn.BatchNorm1d(4, dtype=dtype)
        self.head = nn.Linear(4, 2, rng=rng, dtype=dtype)

    def forward(self, x):
        hiddens, _ = self.rnn(x)
        return self.head(self.norm(hiddens[-1]))


# ---- Module -----------------------------------------------------------------------------------

def test_named_parameters_are_dotted_attribute_paths_in_definition_order():
    names = [name for name, _ in TwoLayer().named_parameters()]
    assert names == [
        "rnn.cell.weight_ih", "rnn.cell.weight_hh", "rnn.cell.bias_ih", "rnn.cell.bias_hh",
        "norm.weight", "norm.bias", "head.weight", "head.bias",
    ]


def test_parameters_are_labelled_with_their_attribute_names():
    model = TwoLayer()
    assert [p.name for p in model.parameters()] == [name.split(".")[-1] for name, _ in model.named_parameters()]


def test_a_shared_parameter_is_listed_once():
    class Tied(nn.Module):
        def __init__(self):
            self.encoder = nn.Embedding(5, 3, rng=0)
            self.decoder = nn.Linear(3, 5, bias=False, rng=0)
            self.decoder.weight = self.encoder.weight

    assert [name for name, _ in Tied().named_parameters()] == ["encoder.weight"]


def test_zero_grad_clears_every_parameter_gradient():
    model = TwoLayer()
    model(_random(3, 5, 3)).sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    model.zero_grad()
    assert all(p.grad is None for p in model.parameters())


def test_train_and_eval_reach_every_submodule():
    model = TwoLayer().eval()
    assert [m.training for _, m in model.named_modules()] == [False] * 5
    model.train()
    assert all(m.training for _, m in model.named_modules())


def test_state_dict_holds_copies_of_parameters_and_buffers():
    model = TwoLayer()
    state = model.state_dict()
    assert list(state)[-4:] == ["head.weight", "head.bias", "norm.running_mean", "norm.running_var"]
    state["head.weight"][...] = 0.0
    assert np.any(model.head.weight.data)


def test_state_dict_round_trip_reproduces_the_outputs():
    source, target = TwoLayer(rng=1), TwoLayer(rng=2)
    source(_random(3, 6, 3))  # a training step moves the running statistics
    source.eval(), target.eval()
    x = _random(3, 6, 3, seed=1)
    assert not np.allclose(source(x).data, target(x).data)
    target.load_state_dict(source.state_dict())
    np.testing.assert_array_equal(source(x).data, target(x).data)


def test_load_state_dict_mismatch_names_every_problem_and_loads_nothing():
    model = TwoLayer()
    before = model.state_dict()
    state = TwoLayer(rng=3).state_dict()
    state["head.weight"] = np.zeros((3, 4))
    del state["rnn.cell.bias_hh"]
    state["extra"] = np.zeros(1)
    with pytest.raises(ValueError) as error:
        model.load_state_dict(state)
    message = str(error.value)
    assert "missing 'rnn.cell.bias_hh'" in message and "unexpected 'extra'" in message
    assert "'head.weight' has shape (3, 4), expected (2, 4)" in message
    after = model.state_dict()
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_load_state_dict_with_a_bad_last_entry_loads_nothing():
    model = TwoLayer()
    before = model.state_dict()
    state = TwoLayer(rng=3).state_dict()
    last = list(state)[-1]
    state[last] = np.full(state[last].shape, "x")  # strings do not convert to float64
    state["head.bias"] = state["head.bias"] + 1j  # nor does complex
    with pytest.raises(ValueError) as error:
        model.load_state_dict(state)
    message = str(error.value)
    assert f"{last!r} has dtype <U1, which does not convert to float64" in message
    assert "'head.bias' has dtype complex128" in message and "nothing loaded" in message
    after = model.state_dict()
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_load_state_dict_keeps_each_parameters_dtype():
    model = TwoLayer(dtype=np.float32)
    model.load_state_dict(TwoLayer(rng=5).state_dict())  # float64 arrays
    assert all(p.dtype == np.float32 for p in model.parameters())
    np.testing.assert_allclose(model.head.bias.data, TwoLayer(rng=5).head.bias.data, rtol=1e-6)


def test_to_converts_parameters_and_buffers_in_place():
    model = TwoLayer()
    weight = model.head.weight
    model.to(np.float32)
    assert model.head.weight is weight and weight.dtype == np.float32
    assert model.norm.running_var.dtype == np.float32
    assert model(_random(2, 3, 3).astype(np.float32)).dtype == np.float32


def test_repr_lists_submodules_and_parameter_shapes():
    text = repr(TwoLayer())
    for line in ["(rnn): RNN(", "(cell): LSTMCell(input_size=3, hidden_size=4)", "weight_ih: (16, 3) float64",
                 "(head): Linear(in_features=4, out_features=2, bias=True)", "bias: (2,) float64"]:
        assert line in text, line


class Containers(nn.Module):
    """Values and Modules in a list, a tuple and a dict, and a Value that requires no gradient."""

    def __init__(self):
        self.ws = [tg.Value(np.ones(2)), tg.Value(np.zeros(3))]
        self.layers = (nn.Linear(2, 3, rng=0), nn.Linear(3, 1, rng=1))
        self.gates = {"forget": tg.Value(np.full(2, 0.5)), "inner": {"scale": tg.Value(2.0)}}
        self.mask = tg.Value(np.array([1.0, 0.0]), requires_grad=False)
        self.sizes = [2, 3]  # numbers in a list are not state


def test_values_and_modules_in_lists_tuples_and_dicts_are_registered_by_position_and_key():
    model = Containers()
    assert [name for name, _ in model.named_parameters()] == [
        "ws.0", "ws.1", "gates.forget", "gates.inner.scale",
        "layers.0.weight", "layers.0.bias", "layers.1.weight", "layers.1.bias",
    ]
    assert [name for name, _ in model.named_children()] == ["layers.0", "layers.1"]
    assert model.ws[1].name == "ws.1" and model.gates["forget"].name == "gates.forget"  # labels for pictures


def test_a_value_without_gradient_is_a_buffer_not_a_parameter():
    model = Containers()
    assert all(p is not model.mask for p in model.parameters())
    assert [(name, b) for name, b in model.named_buffers()] == [("mask", model.mask)]
    state = model.state_dict()
    assert np.array_equal(state["mask"], [1.0, 0.0]) and state["mask"] is not model.mask.data
    state["mask"] = np.array([0.0, 1.0])
    model.load_state_dict(state)
    assert list(model.mask.data) == [0.0, 1.0]
    assert "mask: (2,) float64 (buffer)" in repr(model)
    model.to(np.float32)
    assert model.mask.dtype == np.float32 and model.ws[0].dtype == np.float32


def test_an_optimiser_and_zero_grad_reach_values_in_containers():
    model = Containers()
    loss = (model.layers[1](model.layers[0](model.ws[0] * model.gates["forget"] * model.mask)) * 1.0).sum()
    loss = loss + model.ws[1].sum() * model.gates["inner"]["scale"]
    loss.backward()
    before = np.array(model.ws[1].data)
    tg.optim.SGD(model.parameters(), lr=0.1).step()
    assert np.array_equal(model.ws[1].data, before - 0.1 * 2.0)
    model.zero_grad()
    assert all(p.grad is None for p in model.parameters())


def test_container_names_are_pytorchs():
    torch = pytest.importorskip("torch")

    class Theirs(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.ws = torch.nn.ParameterList([torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.zeros(3))])
            self.layers = torch.nn.ModuleList([torch.nn.Linear(2, 3), torch.nn.Linear(3, 1)])
            self.blocks = torch.nn.ModuleDict({"a": torch.nn.Linear(1, 1)})
            self.register_buffer("mask", torch.tensor([1.0, 0.0]))

    class Ours(nn.Module):
        def __init__(self):
            self.ws = [tg.Value(np.ones(2)), tg.Value(np.zeros(3))]
            self.layers = [nn.Linear(2, 3), nn.Linear(3, 1)]
            self.blocks = {"a": nn.Linear(1, 1)}
            self.mask = tg.Value(np.array([1.0, 0.0]), requires_grad=False)

    assert sorted(Ours().state_dict()) == sorted(Theirs().state_dict())
    assert [n for n, _ in Ours().named_parameters()] == [n for n, _ in Theirs().named_parameters()]


def test_a_checkpoint_without_the_newly_registered_entries_is_refused_with_the_reason():
    model = Containers()
    old = {name: array for name, array in model.state_dict().items() if not name.startswith(("ws.", "layers."))}
    with pytest.raises(ValueError, match=r"missing 'ws.0' \(a Value in a list, tuple or dict: registered, as in "
                                         r"PyTorch, by this version; a checkpoint saved by an older one did not hold it\)"):
        model.load_state_dict(old)
    with pytest.raises(ValueError, match=r"missing 'layers.1.bias' \(a Value in a list"):
        model.load_state_dict(old)


def test_sequential_applies_modules_in_order_and_names_them_by_position():
    model = nn.Sequential(nn.Linear(2, 3, rng=0), nn.Tanh(), nn.Linear(3, 1, rng=1))
    x = _random(4, 2)
    expected = np.tanh(x @ model[0].weight.data.T + model[0].bias.data) @ model[2].weight.data.T + model[2].bias.data
    np.testing.assert_allclose(model(x).data, expected)
    assert [name for name, _ in model.named_parameters()] == ["0.weight", "0.bias", "2.weight", "2.bias"]


# ---- layers -----------------------------------------------------------------------------------

def test_linear_is_x_times_weight_transposed_plus_bias_for_any_leading_shape():
    layer = nn.Linear(3, 2, rng=0)
    assert layer.weight.shape == (2, 3) and layer.bias.shape == (2,)
    x = _random(5, 4, 3)
    np.testing.assert_allclose(layer(x).data, x @ layer.weight.data.T + layer.bias.data, atol=1e-12)
    assert np.all(np.abs(layer.weight.data) <= 1 / np.sqrt(3))


def test_linear_gradients_agree_with_central_differences():
    layer = nn.Linear(3, 2, rng=0)
    x = tg.Value(_random(2, 4, 3))
    assert tg.gradcheck(lambda *_: (layer(x) ** 2).sum(), [x, layer.weight, layer.bias])


def test_linear_shape_error_names_the_layer():
    with pytest.raises(ValueError, match=r"Linear\(3 -> 2\): input has shape \(4, 5\)"):
        nn.Linear(3, 2)(np.ones((4, 5)))


def test_embedding_gradient_sums_over_repeated_indices():
    embedding = nn.Embedding(5, 3, rng=0)
    indices = np.array([[1, 4], [1, 1]])
    out = embedding(indices)
    np.testing.assert_array_equal(out.data, embedding.weight.data[indices])
    out.sum().backward()
    counts = np.bincount(indices.ravel(), minlength=5)[:, None] * np.ones(3)
    np.testing.assert_array_equal(embedding.weight.grad, counts)


def test_embedding_rejects_bad_indices():
    with pytest.raises(IndexError, match="index 5 is out of range for 5"):
        nn.Embedding(5, 3)(np.array([0, 5]))
    with pytest.raises(TypeError, match="integers"):
        nn.Embedding(5, 3)(np.array([0.0, 1.0]))


def test_layer_norm_matches_its_formula_and_gradcheck():
    norm = nn.LayerNorm(4)
    norm.weight.data, norm.bias.data = _random(4, seed=1), _random(4, seed=2)
    x = tg.Value(_random(3, 4) * 3 + 1)
    mean, var = x.data.mean(-1, keepdims=True), x.data.var(-1, keepdims=True)
    expected = (x.data - mean) / np.sqrt(var + 1e-5) * norm.weight.data + norm.bias.data
    np.testing.assert_allclose(norm(x).data, expected, atol=1e-12)
    readout = _random(3, 4, seed=3)
    assert tg.gradcheck(lambda *_: (norm(x) * readout).sum(), [x, norm.weight, norm.bias])


def test_batch_norm_training_normalises_each_feature_over_the_batch():
    norm = nn.BatchNorm1d(3)
    x = _random(8, 3) * np.array([1.0, 5.0, 0.1]) + np.array([0.0, -2.0, 7.0])
    y = norm(x).data
    np.testing.assert_allclose(y.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(y.var(axis=0), 1 - 1e-5 / (x.var(axis=0) + 1e-5), atol=1e-10)
    np.testing.assert_allclose(norm.running_mean, 0.1 * x.mean(axis=0))
    np.testing.assert_allclose(norm.running_var, 0.9 + 0.1 * x.var(axis=0, ddof=1))


def test_batch_norm_eval_uses_running_statistics_so_each_example_is_independent():
    norm = nn.BatchNorm1d(3)
    for seed in range(20):
        norm(_random(16, 3, seed=seed) * 2 + 1)
    norm.eval()
    x = _random(4, 3, seed=99)
    expected = (x - norm.running_mean) / np.sqrt(norm.running_var + 1e-5)
    np.testing.assert_allclose(norm(x).data, expected, atol=1e-12)
    np.testing.assert_allclose(norm(x[:1]).data, expected[:1], atol=1e-12)
    running = norm.running_mean.copy()
    norm(x)
    np.testing.assert_array_equal(norm.running_mean, running)  # eval does not update the statistics


def test_batch_norm_gradients_agree_with_central_differences_for_2d_and_3d_inputs():
    for shape in [(5, 3), (4, 3, 2)]:
        norm = nn.BatchNorm1d(3)
        norm.weight.data, norm.bias.data = _random(3, seed=1), _random(3, seed=2)
        x = tg.Value(_random(*shape, seed=3))
        readout = _random(*shape, seed=4)
        assert tg.gradcheck(lambda *_, norm=norm, x=x, r=readout: (norm(x) * r).sum(), [x, norm.weight, norm.bias])


# ---- initialisers -----------------------------------------------------------------------------

def test_initialisers_rebind_a_values_data_in_its_dtype_and_return_it():
    value = tg.Value(np.zeros((300, 200), np.float32))
    assert nn.init.xavier_uniform_(value, rng=0) is value
    assert value.dtype == np.float32 and np.any(value.data)
    array = np.zeros((3, 3))
    assert nn.init.eye_(array) is array and np.array_equal(array, np.eye(3))


def test_same_seed_same_draw():
    a, b = np.zeros((4, 5)), np.zeros((4, 5))
    nn.init.orthogonal_(a, rng=3), nn.init.orthogonal_(b, rng=3)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(("initialise", "expected_std"), [
    (lambda w: nn.init.uniform_(w, -0.3, 0.3, rng=0), 0.3 / np.sqrt(3)),
    (lambda w: nn.init.normal_(w, 0.0, 0.02, rng=0), 0.02),
    (lambda w: nn.init.xavier_uniform_(w, rng=0), np.sqrt(2 / (400 + 300))),
    (lambda w: nn.init.xavier_normal_(w, gain=2.0, rng=0), 2 * np.sqrt(2 / (400 + 300))),
    (lambda w: nn.init.kaiming_uniform_(w, rng=0), np.sqrt(2 / 300)),
    (lambda w: nn.init.kaiming_normal_(w, mode="fan_out", nonlinearity="relu", rng=0), np.sqrt(2 / 400)),
], ids=["uniform", "normal", "xavier_uniform", "xavier_normal", "kaiming_uniform", "kaiming_normal"])
def test_initialisers_have_the_documented_scale(initialise, expected_std):
    weight = initialise(np.zeros((400, 300)))  # fan_out 400, fan_in 300
    assert abs(weight.mean()) < 3 * expected_std / np.sqrt(weight.size) + 1e-12
    assert abs(weight.std() / expected_std - 1) < 0.02


def test_uniform_bounds_are_exact_for_xavier():
    bound = np.sqrt(6 / (30 + 20))
    weight = nn.init.xavier_uniform_(np.zeros((30, 20)), rng=0)
    assert np.abs(weight).max() <= bound and np.abs(weight).max() > 0.95 * bound


@pytest.mark.parametrize("shape", [(6, 6), (4, 9), (9, 4)])
def test_orthogonal_has_all_singular_values_equal_to_gain(shape):
    weight = nn.init.orthogonal_(np.zeros(shape), gain=1.5, rng=0)
    np.testing.assert_allclose(np.linalg.svd(weight, compute_uv=False), 1.5, atol=1e-12)


def test_scale_spectral_radius_sets_the_largest_eigenvalue_magnitude():
    weight = nn.init.normal_(np.zeros((20, 20)), rng=0)
    nn.init.scale_spectral_radius_(weight, 0.9)
    assert abs(np.max(np.abs(np.linalg.eigvals(weight))) - 0.9) < 1e-10
    with pytest.raises(ValueError, match="square"):
        nn.init.scale_spectral_radius_(np.ones((2, 3)), 1.0)


def test_identity_recurrence_copies_the_state_of_a_relu_rnn():
    """IRNN (Le et al. 2015): with W_hh = I, zero biases and zero input, h_t = relu(h_{t-1}) = h_{t-1}."""
    cell = nn.RNNCell(2, 4, nonlinearity="relu", rng=0)
    nn.init.eye_(cell.weight_hh)
    nn.init.zeros_(cell.bias_ih), nn.init.zeros_(cell.bias_hh)
    h0 = tg.Value(np.abs(_random(1, 4)) + 0.1)
    outputs, _ = nn.RNN(cell)(np.zeros((10, 1, 2)), h0)
    np.testing.assert_allclose(outputs[-1].data, h0.data)


# ---- losses -----------------------------------------------------------------------------------

def _log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


@pytest.mark.parametrize("shape", [(6, 5), (3, 2, 5), (5,)])
def test_cross_entropy_is_mean_negative_log_likelihood_with_gradient_softmax_minus_onehot(shape):
    logits = tg.Value(_random(*shape) * 3)
    targets = np.random.default_rng(1).integers(0, 5, shape[:-1])
    log_p = _log_softmax(logits.data)
    picked = np.take_along_axis(log_p, targets[..., None], -1)[..., 0]
    loss = nn.cross_entropy(logits, targets)
    np.testing.assert_allclose(loss.item(), -picked.mean(), atol=1e-12)
    loss.backward()
    onehot = np.eye(5)[targets]
    np.testing.assert_allclose(logits.grad, (np.exp(log_p) - onehot) / max(targets.size, 1), atol=1e-12)
    np.testing.assert_allclose(nn.cross_entropy(logits, targets, reduction="sum").item(), -picked.sum(), atol=1e-12)


def test_cross_entropy_is_stable_for_huge_logits():
    loss = nn.cross_entropy(tg.Value(np.array([[1000.0, 0.0, -1000.0]])), np.array([1]))
    np.testing.assert_allclose(loss.item(), 1000.0)


def test_cross_entropy_errors_name_the_problem():
    logits = tg.Value(np.zeros((2, 3, 4)))
    with pytest.raises(IndexError, match=r"target 4 at position \(1, 2\) is out of range for 4 classes"):
        nn.cross_entropy(logits, np.array([[0, 1, 2], [3, 0, 4]]))
    with pytest.raises(ValueError, match=r"need targets of shape \(2, 3\)"):
        nn.cross_entropy(logits, np.zeros(2, int))
    with pytest.raises(TypeError, match="integer"):
        nn.cross_entropy(logits, np.zeros((2, 3)))
    with pytest.raises(ValueError, match="reduction"):
        nn.cross_entropy(logits, np.zeros((2, 3), int), reduction="average")


def test_mse_loss_value_and_gradient():
    prediction, target = tg.Value(_random(4, 2)), _random(4, 2, seed=1)
    loss = nn.mse_loss(prediction, target)
    np.testing.assert_allclose(loss.item(), np.mean((prediction.data - target) ** 2))
    loss.backward()
    np.testing.assert_allclose(prediction.grad, 2 * (prediction.data - target) / 8)
    np.testing.assert_allclose(nn.mse_loss(prediction, target, reduction="sum").item(),
                               np.sum((prediction.data - target) ** 2))
    with pytest.raises(ValueError, match=r"shape \(4, 2\) but target has shape \(4,\)"):
        nn.mse_loss(prediction, np.zeros(4))


# ---- RNN as a module --------------------------------------------------------------------------

def test_rnn_accepts_an_array_a_value_or_a_list_of_steps_alike():
    rnn = nn.RNN(nn.RNNCell(3, 4, rng=0))
    x = _random(5, 2, 3)
    from_array = [h.data for h in rnn(x)[0]]
    from_value = [h.data for h in rnn(tg.Value(x))[0]]
    from_list = [h.data for h in rnn(list(x))[0]]
    np.testing.assert_array_equal(from_array, from_value)
    np.testing.assert_array_equal(from_array, from_list)
    assert len(from_array) == 5 and from_array[0].shape == (2, 4)


def test_rnn_unbatched_sequence_gives_unbatched_states():
    outputs, (h, c) = nn.RNN(nn.LSTMCell(3, 4, rng=0))(_random(6, 3))
    assert outputs[0].shape == h.shape == c.shape == (4,)


def test_rnn_argument_errors():
    with pytest.raises(ValueError, match="truncate"):
        nn.RNN(nn.RNNCell(2, 2), truncate=0)
    with pytest.raises(ValueError, match="empty"):
        nn.RNN(nn.RNNCell(2, 2))(np.zeros((0, 1, 2)))
    with pytest.raises(TypeError, match="callable"):
        nn.RNN(3)


def test_rnn_state_dict_names_its_cell():
    assert list(nn.RNN(nn.GRUCell(2, 3)).state_dict()) == [
        "cell.weight_ih", "cell.weight_hh", "cell.bias_ih", "cell.bias_hh"
    ]


class WideCell(nn.Module):
    """h' = tanh(x W)[:, :3] + h: a custom cell whose matmul needs inputs of width 4."""

    def __init__(self):
        self.w = tg.Value(np.ones((4, 12)))

    def forward(self, x, h):
        return (x @ self.w)[:, :3].tanh() + h

    def initial_state(self, batch_size):
        return tg.Value(np.zeros((batch_size, 3)), requires_grad=False)


def test_a_shape_error_inside_the_unroll_names_the_cell_and_the_time_step():
    steps = [np.ones((1, 4)), np.ones((1, 4)), np.ones((1, 5))]
    with pytest.raises(ValueError, match=r"^WideCell at time step 3: matmul: shapes \(1, 5\) and \(4, 12\)") as caught:
        nn.RNN(WideCell())(steps)
    # The traceback still reaches the line of the cell that failed.
    frames = [frame.name for frame in caught.traceback]
    assert "forward" in frames and caught.value.__cause__ is None


def test_an_unroll_error_keeps_its_type_and_names_a_plain_function_cell():
    def tiny_cell(x, h):
        return h[x.shape[0] + 5]  # an index out of range at every step

    with pytest.raises(IndexError, match=r"^tiny_cell at time step 1: "):
        nn.RNN(tiny_cell)([np.ones(2)], h0=tg.Value(np.zeros(3)))


def test_a_built_in_cell_given_a_wrong_step_names_the_step():
    cell = nn.LSTMCell(4, 3, rng=0)
    with pytest.raises(ValueError, match=r"^LSTMCell at time step 2: LSTMCell\(input_size=4, hidden_size=3\): "
                                         r"x_t has shape \(2, 5\)"):
        nn.RNN(cell)([np.ones((2, 4)), np.ones((2, 5))])
