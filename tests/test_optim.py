"""Optimisers against closed forms and against PyTorch's documented algorithms, written out in numpy.

The closed forms come from feeding a constant gradient c (or a quadratic loss), where each algorithm's
recurrences sum to a formula. The numpy loops follow PyTorch's documentation boxes in their own
notation (Adam's bias-corrected m_hat and v_hat, for instance), not the code in optim.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinygrad_rnn import Value
from tinygrad_rnn.optim import SGD, Adagrad, Adam, RMSprop

THETA0 = np.array([0.5, -1.5, 2.0, 0.25])
C = np.array([0.3, -2.0, 1e-3, 4.0])


def run_constant_gradient(optimizer_class, steps: int, **options) -> np.ndarray:
    """theta after ``steps`` steps with gradient C every step (a linear loss C . theta)."""
    p = Value(THETA0.copy())
    optimizer = optimizer_class([p], **options)
    for _ in range(steps):
        p.grad = C.copy()
        optimizer.step()
    return p.data


def test_sgd_moves_lr_times_gradient_per_step():
    assert np.allclose(run_constant_gradient(SGD, 7, lr=0.1), THETA0 - 7 * 0.1 * C, rtol=1e-14, atol=1e-14)


def test_sgd_on_quadratic_contracts_geometrically():
    # L = a/2 theta^2, so theta <- (1 - lr a) theta: theta_n = (1 - lr a)^n theta_0.
    a, lr, steps = 3.0, 0.05, 20
    p = Value(THETA0.copy())
    optimizer = SGD([p], lr=lr)
    for _ in range(steps):
        optimizer.zero_grad()
        (0.5 * a * p * p).sum().backward()
        optimizer.step()
    assert np.allclose(p.data, (1 - lr * a) ** steps * THETA0, rtol=1e-12)


@pytest.mark.parametrize("dampening", [0.0, 0.3])
def test_sgd_momentum_buffer_is_a_geometric_sum(dampening):
    # b_1 = c, b_k = mu b_(k-1) + (1 - d) c  =>  b_k = mu^(k-1) c + (1 - d) c (1 - mu^(k-1)) / (1 - mu)
    mu, lr, steps = 0.9, 0.01, 6
    buffers = [mu ** (k - 1) * C + (1 - dampening) * C * (1 - mu ** (k - 1)) / (1 - mu) for k in range(1, steps + 1)]
    expected = THETA0 - lr * sum(buffers)
    got = run_constant_gradient(SGD, steps, lr=lr, momentum=mu, dampening=dampening)
    assert np.allclose(got, expected, rtol=1e-13, atol=1e-15)


def test_sgd_nesterov_steps_along_gradient_plus_momentum_buffer():
    mu, lr, steps = 0.8, 0.02, 5
    buffers = [C * (1 - mu**k) / (1 - mu) for k in range(1, steps + 1)]  # dampening 0
    expected = THETA0 - lr * sum(C + mu * b for b in buffers)
    assert np.allclose(run_constant_gradient(SGD, steps, lr=lr, momentum=mu, nesterov=True), expected, rtol=1e-13)


def test_weight_decay_alone_shrinks_parameters_geometrically():
    # A zero loss gradient leaves only lambda theta: theta_n = (1 - lr lambda)^n theta_0.
    p = Value(THETA0.copy())
    optimizer = SGD([p], lr=0.1, weight_decay=0.5)
    for _ in range(4):
        p.grad = np.zeros_like(THETA0)
        optimizer.step()
    assert np.allclose(p.data, 0.95**4 * THETA0, rtol=1e-14)


def test_adam_with_constant_gradient_steps_lr_times_sign():
    # m_t = c (1 - b1^t) and v_t = c^2 (1 - b2^t): bias correction leaves m_hat = c, v_hat = c^2,
    # so every step is lr c / (|c| + eps), about lr sign(c) whatever the gradient's size.
    lr, eps, steps = 0.01, 1e-8, 9
    expected = THETA0 - steps * lr * C / (np.abs(C) + eps)
    assert np.allclose(run_constant_gradient(Adam, steps, lr=lr, eps=eps), expected, rtol=1e-12, atol=1e-14)


def test_adagrad_with_constant_gradient_steps_shrink_as_one_over_sqrt_t():
    # s_t = t c^2, lr_t = lr / (1 + (t-1) decay): step t is lr_t c / (sqrt(t) |c| + eps).
    lr, decay, eps, steps = 0.1, 0.05, 1e-10, 8
    expected = THETA0 - sum(
        lr / (1 + (t - 1) * decay) * C / (np.sqrt(t) * np.abs(C) + eps) for t in range(1, steps + 1)
    )
    got = run_constant_gradient(Adagrad, steps, lr=lr, lr_decay=decay, eps=eps)
    assert np.allclose(got, expected, rtol=1e-13)


def test_adagrad_initial_accumulator_enters_the_denominator():
    got = run_constant_gradient(Adagrad, 1, lr=0.1, initial_accumulator_value=2.0)
    assert np.allclose(got, THETA0 - 0.1 * C / (np.sqrt(2.0 + C * C) + 1e-10), rtol=1e-14)


def test_rmsprop_with_constant_gradient_divides_by_partial_rms():
    # v_t = c^2 (1 - alpha^t): step t is lr c / (|c| sqrt(1 - alpha^t) + eps).
    lr, alpha, eps, steps = 0.01, 0.9, 1e-8, 5
    expected = THETA0 - sum(lr * C / (np.abs(C) * np.sqrt(1 - alpha**t) + eps) for t in range(1, steps + 1))
    assert np.allclose(run_constant_gradient(RMSprop, steps, lr=lr, alpha=alpha, eps=eps), expected, rtol=1e-12)


def test_centered_rmsprop_subtracts_squared_mean_gradient():
    # m_t = c (1 - a^t), so v_t - m_t^2 = c^2 (1 - a^t) a^t.
    lr, alpha, eps, steps = 0.01, 0.9, 1e-8, 4
    expected = THETA0 - sum(
        lr * C / (np.abs(C) * np.sqrt((1 - alpha**t) * alpha**t) + eps) for t in range(1, steps + 1)
    )
    got = run_constant_gradient(RMSprop, steps, lr=lr, alpha=alpha, eps=eps, centered=True)
    assert np.allclose(got, expected, rtol=1e-10)


# ---- varying gradients: PyTorch's documented algorithms in numpy ----------------------------------

def gradient_sequence(steps: int, seed: int = 0) -> list:
    rng = np.random.default_rng(seed)
    return [rng.normal(size=THETA0.shape) * 10.0 ** rng.uniform(-3, 1) for _ in range(steps)]


def run_sequence(optimizer, p, grads):
    for g in grads:
        p.grad = g
        optimizer.step()
    return p.data


def documented_adam(grads, lr, beta1, beta2, eps, weight_decay, amsgrad):
    theta, m, v, v_max = THETA0.copy(), 0.0, 0.0, 0.0
    for t, g in enumerate(grads, start=1):
        g = g + weight_decay * theta
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g**2
        m_hat = m / (1 - beta1**t)
        if amsgrad:
            v_max = np.maximum(v_max, v)
            v_hat = v_max / (1 - beta2**t)
        else:
            v_hat = v / (1 - beta2**t)
        theta = theta - lr * m_hat / (np.sqrt(v_hat) + eps)
    return theta


@pytest.mark.parametrize("amsgrad", [False, True])
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_adam_matches_documented_algorithm_on_varying_gradients(amsgrad, weight_decay):
    grads = gradient_sequence(12)
    p = Value(THETA0.copy())
    optimizer = Adam([p], lr=0.05, betas=(0.8, 0.95), eps=1e-6, weight_decay=weight_decay, amsgrad=amsgrad)
    expected = documented_adam(grads, 0.05, 0.8, 0.95, 1e-6, weight_decay, amsgrad)
    assert np.allclose(run_sequence(optimizer, p, grads), expected, rtol=1e-12, atol=1e-14)


def test_rmsprop_with_momentum_matches_documented_algorithm():
    grads = gradient_sequence(10, seed=1)
    lr, alpha, eps, mu, wd = 0.01, 0.95, 1e-8, 0.7, 0.01
    theta, v, mean, buffer = THETA0.copy(), 0.0, 0.0, 0.0
    for g in grads:
        g = g + wd * theta
        v = alpha * v + (1 - alpha) * g**2
        mean = alpha * mean + (1 - alpha) * g
        buffer = mu * buffer + g / (np.sqrt(v - mean**2) + eps)
        theta = theta - lr * buffer
    p = Value(THETA0.copy())
    optimizer = RMSprop([p], lr=lr, alpha=alpha, eps=eps, momentum=mu, centered=True, weight_decay=wd)
    assert np.allclose(run_sequence(optimizer, p, grads), theta, rtol=1e-12)


@settings(max_examples=30, deadline=None)
@given(lr=st.floats(1e-4, 1.0), beta1=st.floats(0.0, 0.99), beta2=st.floats(0.5, 0.9999), steps=st.integers(1, 6))
def test_adam_matches_documented_algorithm_for_any_hyperparameters(lr, beta1, beta2, steps):
    grads = gradient_sequence(steps, seed=steps)
    p = Value(THETA0.copy())
    got = run_sequence(Adam([p], lr=lr, betas=(beta1, beta2)), p, grads)
    assert np.allclose(got, documented_adam(grads, lr, beta1, beta2, 1e-8, 0.0, False), rtol=1e-11, atol=1e-13)


# ---- bookkeeping ------------------------------------------------------------------------------

ALL = [
    (SGD, dict(lr=0.1, momentum=0.9, weight_decay=0.01)),
    (Adagrad, dict(lr=0.1, weight_decay=0.01)),
    (RMSprop, dict(lr=0.01, momentum=0.5, centered=True)),
    (Adam, dict(lr=0.01, weight_decay=0.01, amsgrad=True)),
]


@pytest.mark.parametrize("optimizer_class, options", ALL)
def test_step_never_writes_into_gradient_arrays(optimizer_class, options):
    p = Value(THETA0.copy())
    gradient = C.copy()
    gradient.setflags(write=False)  # any in-place write would raise
    p.grad = gradient
    optimizer = optimizer_class([p], **options)
    optimizer.step()
    optimizer.step()
    assert p.grad is gradient and np.array_equal(gradient, C)


@pytest.mark.parametrize("optimizer_class, options", ALL)
def test_step_updates_parameter_array_in_place(optimizer_class, options):
    p = Value(THETA0.copy())
    data = p.data
    p.grad = C.copy()
    optimizer_class([p], **options).step()
    assert p.data is data and not np.array_equal(data, THETA0)


@pytest.mark.parametrize("optimizer_class, options", ALL)
def test_parameters_without_gradient_are_skipped(optimizer_class, options):
    used, unused = Value(THETA0.copy()), Value(THETA0.copy())
    optimizer = optimizer_class([used, unused], **options)
    used.grad = C.copy()
    optimizer.step()
    assert np.array_equal(unused.data, THETA0) and unused not in optimizer.state
    assert not np.array_equal(used.data, THETA0)


@pytest.mark.parametrize("optimizer_class, options", ALL)
def test_float32_parameters_stay_float32(optimizer_class, options):
    p = Value(THETA0.astype(np.float32))
    p.grad = C.astype(np.float64)  # a float64 gradient must not promote the weights
    optimizer = optimizer_class([p], **options)
    optimizer.step()
    assert p.data.dtype == np.float32
    assert all(v.dtype == np.float32 for v in optimizer.state[p].values() if isinstance(v, np.ndarray))


@pytest.mark.parametrize("optimizer_class, options", ALL)
def test_scalar_parameter_is_updated(optimizer_class, options):
    p = Value(1.5)
    optimizer = optimizer_class([p], **options)
    for _ in range(3):
        optimizer.zero_grad()
        (p * p).backward()
        optimizer.step()
    assert isinstance(p.data, float) and abs(p.data) < 1.5


@pytest.mark.parametrize("optimizer_class, options", ALL)
def test_state_dict_round_trip_continues_identically(optimizer_class, options):
    grads = gradient_sequence(6, seed=3)
    p, q = Value(THETA0.copy()), Value(THETA0.copy())
    first = optimizer_class([p], **options)
    run_sequence(first, p, grads[:3])
    second = optimizer_class([q], lr=123.0)  # wrong hyperparameters, restored from the state dict
    q.data = p.data.copy()
    second.load_state_dict({k: np.array(v) for k, v in first.state_dict().items()})
    assert np.array_equal(run_sequence(first, p, grads[3:]), run_sequence(second, q, grads[3:]))


def stepped_adam():
    p, q = Value(THETA0.copy()), Value(THETA0[:2].astype(np.float32))
    optimizer = Adam([{"params": [p]}, {"params": [q], "lr": 0.5}], lr=0.01)
    p.grad, q.grad = C.copy(), C[:2].copy()
    optimizer.step()
    return optimizer


def edit_group_lr(state):
    state["group.0.lr"] = np.array("fast")


def edit_group_betas(state):
    state["group.1.betas"] = np.array([0.9, 0.99, 0.5])


def edit_group_amsgrad(state):
    state["group.0.amsgrad"] = np.array(1.0)  # a flag saved as a number


def edit_negative_eps(state):
    state["group.1.eps"] = np.array(-1.0)


def edit_missing_hyperparameter(state):
    del state["group.0.weight_decay"]


def edit_buffer_shape(state):
    state["state.0.exp_avg"] = np.zeros(3)


def edit_buffer_dtype(state):
    state["state.1.exp_avg_sq"] = np.array(["a", "b"])


def edit_missing_buffer(state):
    del state["state.1.exp_avg"]


def edit_step(state):
    state["state.0.step"] = np.array(-2)


def edit_unknown_index(state):
    state["state.5.exp_avg"] = np.zeros(4)


def edit_malformed_name(state):
    state["lr"] = np.array(0.1)


@pytest.mark.parametrize("edit, message", [
    (edit_group_lr, "group.0.lr holds a <U4 array of shape (), expected a float"),
    (edit_group_betas, "group.1.betas holds a float64 array of shape (3,), expected a tuple"),
    (edit_group_amsgrad, "group.0.amsgrad holds a float64 array of shape (), expected a bool"),
    (edit_negative_eps, "group.1: eps must be >= 0, got -1.0"),
    (edit_missing_hyperparameter, "missing group.0.weight_decay"),
    (edit_buffer_shape, "state.0.exp_avg has shape (3,), the parameter (4,)"),
    (edit_buffer_dtype, "state.1.exp_avg_sq has dtype <U1, the parameter float32"),
    (edit_missing_buffer, "missing state.1.exp_avg"),
    (edit_step, "state.0.step is array(-2), expected a count"),
    (edit_unknown_index, "unexpected entry 'state.5.exp_avg' (2 parameters in 2 groups)"),
    (edit_malformed_name, "unexpected entry 'lr'"),
])
def test_load_state_dict_checks_everything_before_changing_anything(edit, message):
    source, target = stepped_adam(), stepped_adam()
    target.param_groups[0]["lr"] = 0.123  # so a half load would show
    target.state[target._all_params()[0]]["exp_avg"][:] = 7.0
    before = target.state_dict()
    state = source.state_dict()
    edit(state)
    state["group.1.lr"] = np.array(0.25)  # a good entry, listed before or after the bad one
    with pytest.raises(ValueError) as error:
        target.load_state_dict(state)
    assert "Adam.load_state_dict: nothing loaded: " in str(error.value) and message in str(error.value)
    after = target.state_dict()
    assert list(after) == list(before) and all(np.array_equal(after[k], before[k]) for k in before)


def test_load_state_dict_lists_every_problem_at_once():
    target, state = stepped_adam(), stepped_adam().state_dict()
    for edit in (edit_group_lr, edit_buffer_shape, edit_unknown_index):
        edit(state)
    with pytest.raises(ValueError) as error:
        target.load_state_dict(state)
    assert str(error.value).count(";") == 2


def test_an_sgd_state_loaded_into_adam_names_what_differs():
    p = Value(THETA0.copy())
    with pytest.raises(ValueError) as error:
        Adam([p]).load_state_dict(SGD([p], momentum=0.9).state_dict())
    assert "unexpected entry 'group.0.momentum'" in str(error.value) and "missing group.0.betas" in str(error.value)


def test_loaded_buffers_take_their_parameters_dtype():
    source, p = stepped_adam(), Value(THETA0[:2].astype(np.float32))
    state = {k: (v.astype(np.float64) if k.startswith("state.1.") and v.ndim else v)
             for k, v in source.state_dict().items()}
    target = Adam([{"params": [Value(THETA0.copy())]}, {"params": [p]}])
    target.load_state_dict(state)
    assert all(v.dtype == np.float32 for k, v in target.state[p].items() if k != "step")
    assert target.state[p]["step"] == 1 and type(target.state[p]["step"]) is int


class WatchedValue(Value):
    """A Value that counts assignments to ``data`` (what a version counter sees)."""

    __slots__ = ("assignments",)

    def __init__(self, data):
        super().__init__(data)
        self.assignments = 0

    @property
    def data(self):
        return Value.data.__get__(self)

    @data.setter
    def data(self, value):
        Value.data.__set__(self, value)
        self.assignments = getattr(self, "assignments", 0) + 1


@pytest.mark.parametrize("optimizer_class, options", ALL)
def test_a_step_assigns_each_parameters_data_in_place(optimizer_class, options):
    p, q = WatchedValue(THETA0.copy()), WatchedValue(THETA0.astype(np.float32))
    arrays = p.data, q.data
    optimizer = optimizer_class([p, q], **options)
    for step in range(1, 3):
        p.grad, q.grad = C.copy(), C.astype(np.float32)
        optimizer.step()
        assert p.assignments == q.assignments == step
    assert p.data is arrays[0] and q.data is arrays[1] and q.data.dtype == np.float32  # still in place
    assert not np.array_equal(p.data, THETA0)


def test_zero_grad_forgets_every_gradient():
    a, b = Value(THETA0.copy()), Value(THETA0.copy())
    (a * b).sum().backward()
    SGD([a, b], lr=0.1).zero_grad()
    assert a.grad is None and b.grad is None


def test_parameter_groups_take_their_own_learning_rate():
    a, b = Value(THETA0.copy()), Value(THETA0.copy())
    optimizer = SGD([{"params": [a]}, {"params": [b], "lr": 1.0}], lr=0.1)
    a.grad, b.grad = C.copy(), C.copy()
    optimizer.step()
    assert np.allclose(a.data, THETA0 - 0.1 * C) and np.allclose(b.data, THETA0 - C)


def test_every_optimiser_descends_a_quadratic_bowl():
    target = np.array([1.0, -2.0, 3.0])
    for optimizer_class, options in ALL:
        p = Value(np.zeros(3))
        optimizer = optimizer_class([p], **{**options, "lr": 0.05})
        for _ in range(200):
            optimizer.zero_grad()
            ((p - target) ** 2).sum().backward()
            optimizer.step()
        assert np.sum((p.data - target) ** 2) < 0.5 * np.sum(target**2), optimizer_class.__name__


def test_pytorch_defaults():
    p = [Value(THETA0.copy())]
    assert SGD(p).param_groups[0]["lr"] == 1e-3
    assert Adam(p).param_groups[0]["betas"] == (0.9, 0.999) and Adam(p).param_groups[0]["eps"] == 1e-8
    assert RMSprop(p).param_groups[0]["alpha"] == 0.99 and RMSprop(p).param_groups[0]["lr"] == 1e-2
    assert Adagrad(p).param_groups[0]["eps"] == 1e-10 and Adagrad(p).param_groups[0]["lr"] == 1e-2


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: SGD(p, lr=0.1, nesterov=True), "nesterov needs momentum"),
        (lambda p: Adam(p, lr=-1.0), "lr must be >= 0"),
        (lambda p: Adam(p, betas=(0.9, 1.0)), "betas"),
        (lambda p: SGD([], lr=0.1), "empty parameter list"),
        (lambda p: SGD(p + p, lr=0.1), "appears twice"),
    ],
)
def test_bad_settings_are_refused_by_name(make, message):
    with pytest.raises(ValueError, match=message):
        make([Value(THETA0.copy())])


def test_gradient_of_wrong_shape_names_the_optimiser_and_shapes():
    p = Value(THETA0.copy())
    p.grad = np.ones(3)
    with pytest.raises(ValueError, match=r"SGD.step: gradient of shape \(3,\) for a parameter of shape \(4,\)"):
        SGD([p], lr=0.1).step()
