"""The cell zoo (examples/cells): each cell's one step against its paper's equations written again,
independently, in numpy; gradients through unrolled steps against central differences; chrono
initialisation against its formula."""

import importlib.util
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import tinygrad_rnn as tg
from tinygrad_rnn import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

from cells import (  # noqa: E402
    ZOO,
    CIFGLSTMCell,
    GatedAntisymmetricCell,
    IndRNNCell,
    JANETCell,
    MGUCell,
    PeepholeLSTMCell,
    chrono_init,
)


def sigmoid(a):
    return 1 / (1 + np.exp(-a))


# ---- one step of each paper's equations, in numpy, from the parameters as arrays ---------------

def numpy_indrnn(p, x, h):
    return np.maximum(x @ p["weight_ih"].T + p["weight_hh"] * h + p["bias_ih"], 0)


def numpy_mgu(p, x, h):
    f = sigmoid(x @ p["weight_fx"].T + h @ p["weight_fh"].T + p["bias_f"])
    candidate = np.tanh(x @ p["weight_nx"].T + (f * h) @ p["weight_nh"].T + p["bias_n"])
    return (1 - f) * h + f * candidate


def numpy_janet(p, x, h, beta=1.0):
    s = x @ p["weight_fx"].T + h @ p["weight_fh"].T + p["bias_f"]
    candidate = np.tanh(x @ p["weight_cx"].T + h @ p["weight_ch"].T + p["bias_c"])
    return sigmoid(s) * h + (1 - sigmoid(s - beta)) * candidate


def numpy_antisymmetric(p, x, h, epsilon=0.1, gamma=0.01):
    W = p["weight_hh"]
    A = W - W.T - gamma * np.eye(len(W))
    z = sigmoid(h @ A.T + x @ p["weight_zx"].T + p["bias_z"])
    return h + epsilon * z * np.tanh(h @ A.T + x @ p["weight_hx"].T + p["bias_h"])


def numpy_peephole(p, x, h, c):
    W_i, W_f, W_g, W_o = np.split(p["weight_ih"], 4)
    R_i, R_f, R_g, R_o = np.split(p["weight_hh"], 4)
    b_i, b_f, b_g, b_o = np.split(p["bias_ih"] + p["bias_hh"], 4)
    i = sigmoid(x @ W_i.T + h @ R_i.T + p["weight_ci"] * c + b_i)
    f = sigmoid(x @ W_f.T + h @ R_f.T + p["weight_cf"] * c + b_f)
    c_next = f * c + i * np.tanh(x @ W_g.T + h @ R_g.T + b_g)
    o = sigmoid(x @ W_o.T + h @ R_o.T + p["weight_co"] * c_next + b_o)
    return o * np.tanh(c_next), c_next


def numpy_cifg(p, x, h, c):
    W_i, W_g, W_o = np.split(p["weight_ih"], 3)
    R_i, R_g, R_o = np.split(p["weight_hh"], 3)
    b_i, b_g, b_o = np.split(p["bias_ih"] + p["bias_hh"], 3)
    i = sigmoid(x @ W_i.T + h @ R_i.T + b_i)
    c_next = (1 - i) * c + i * np.tanh(x @ W_g.T + h @ R_g.T + b_g)
    return sigmoid(x @ W_o.T + h @ R_o.T + b_o) * np.tanh(c_next), c_next


REFERENCES = [(IndRNNCell, numpy_indrnn), (MGUCell, numpy_mgu), (JANETCell, numpy_janet),
              (GatedAntisymmetricCell, numpy_antisymmetric), (PeepholeLSTMCell, numpy_peephole),
              (CIFGLSTMCell, numpy_cifg)]
IDS = [cell.__name__ for cell, _ in REFERENCES]


def random_state(cell, batch, seed):
    rng = np.random.default_rng(seed)
    parts = [rng.normal(size=(batch, cell.hidden_size)) * 0.5 for _ in range(cell.state_parts)]
    return parts[0] if cell.state_parts == 1 else tuple(parts)


def as_values(state):
    return tuple(tg.Value(s) for s in state) if isinstance(state, tuple) else tg.Value(state)


def test_the_zoo_lists_every_cell():
    assert sorted(ZOO.values(), key=lambda c: c.__name__) == sorted((c for c, _ in REFERENCES), key=lambda c: c.__name__)


@pytest.mark.parametrize("make, reference", REFERENCES, ids=IDS)
def test_one_step_equals_the_papers_equations_in_numpy(make, reference):
    cell = make(3, 4, rng=0)
    x = np.random.default_rng(1).normal(size=(5, 3))
    state = random_state(cell, 5, seed=2)
    params = {name: p.data for name, p in cell.named_parameters()}
    got = cell(tg.Value(x), as_values(state))
    expected = reference(params, x, *(state if isinstance(state, tuple) else (state,)))
    for g, e in zip(got if isinstance(got, tuple) else (got,), expected if isinstance(expected, tuple) else (expected,)):
        np.testing.assert_allclose(g.data, e, rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize("make", [c for c, _ in REFERENCES], ids=IDS)
def test_gradcheck_through_four_unrolled_steps(make):
    cell = make(2, 3, rng=0)
    steps, batch = 4, 2
    x = tg.Value(np.random.default_rng(1).normal(size=(steps, batch, 2)))
    h0 = as_values(random_state(cell, batch, seed=2))
    readout = np.random.default_rng(9).normal(size=(steps, batch, 3))

    def loss(*_):
        outputs, _ = nn.RNN(cell)(x, h0)
        return sum((nn.hidden_of(h) * readout[t]).sum() for t, h in enumerate(outputs))

    assert tg.gradcheck(loss, [x, *(h0 if isinstance(h0, tuple) else (h0,)), *cell.parameters()])


@pytest.mark.parametrize("make", [c for c, _ in REFERENCES], ids=IDS)
def test_the_unroll_starts_from_the_cells_zeros_and_keeps_float32(make):
    cell = make(2, 3, rng=0, dtype=np.float32)
    outputs, state = nn.RNN(cell)(np.ones((6, 4, 2), np.float32))
    assert len(outputs) == 6 and outputs[-1].shape == (4, 3) and outputs[-1].dtype == np.float32


def test_indrnn_unit_recurs_on_itself_only():
    # dh'_j/dh_k = u_j [pre_j > 0] when j == k, else 0: the step's Jacobian is diagonal.
    cell = IndRNNCell(2, 4, rng=0)
    x = np.random.default_rng(1).normal(size=(1, 2))
    h = tg.Value(np.abs(np.random.default_rng(2).normal(size=(1, 4))))
    jacobian = tg.diagnostics.step_jacobian(cell(x, h), h)[0]
    pre = x @ cell.weight_ih.data.T + cell.weight_hh.data * h.data + cell.bias_ih.data
    np.testing.assert_allclose(jacobian, np.diag(cell.weight_hh.data * (pre[0] > 0)), atol=1e-15)


def test_antisymmetric_step_jacobian_is_near_the_identity():
    # J = I + epsilon (...): with epsilon small every singular value of a step is near 1.
    cell = GatedAntisymmetricCell(2, 6, epsilon=0.01, rng=0)
    h = tg.Value(np.random.default_rng(2).normal(size=(1, 6)))
    singular = np.linalg.svd(tg.diagnostics.step_jacobian(cell(np.zeros((1, 2)), h), h)[0], compute_uv=False)
    assert np.all(np.abs(singular - 1) < 0.02)


# ---- chrono initialisation ------------------------------------------------------------------------

@pytest.mark.parametrize("make", [lambda: nn.LSTMCell(2, 50, rng=0), lambda: PeepholeLSTMCell(2, 50, rng=0),
                                  lambda: CIFGLSTMCell(2, 50, rng=0), lambda: JANETCell(2, 50, rng=0)],
                         ids=["LSTMCell", "PeepholeLSTMCell", "CIFGLSTMCell", "JANETCell"])
def test_chrono_gives_forget_time_scales_between_2_and_t_max(make):
    # At zero input and state, f = sigmoid(b_f) = u / (1 + u), so the time scale 1 / (1 - f) = 1 + u,
    # u ~ U(1, T_max - 1): between 2 and T_max.
    cell = chrono_init(make(), t_max=100, rng=3)
    if isinstance(cell, JANETCell):
        forget = sigmoid(cell.bias_f.data)
    else:
        H, bias = 50, cell.bias_ih.data + cell.bias_hh.data
        i = sigmoid(bias[:H])
        forget = 1 - i if isinstance(cell, CIFGLSTMCell) else sigmoid(bias[H:2 * H])
        np.testing.assert_allclose(i, 1 - forget, atol=1e-15)  # b_i = -b_f: what is kept is not written
    scales = 1 / (1 - forget)
    assert scales.min() >= 2 - 1e-9 and scales.max() <= 100 + 1e-9
    assert scales.max() - scales.min() > 50  # spread over the range, not one value
    u = np.random.default_rng(3).uniform(1, 99, 50)  # the draw chrono_init made
    np.testing.assert_allclose(scales, 1 + u, rtol=1e-10)


def test_chrono_refuses_a_cell_without_a_forget_gate():
    with pytest.raises(TypeError, match="IndRNNCell"):
        chrono_init(IndRNNCell(2, 3), t_max=10)
    with pytest.raises(ValueError, match="t_max"):
        chrono_init(JANETCell(2, 3), t_max=2)


@pytest.mark.parametrize("make", [c for c, _ in REFERENCES], ids=IDS)
def test_a_cell_moved_to_float32_starts_from_float32_zeros(make):
    # A float64 state would promote every op of the step to float64 (and warn).
    cell = make(2, 3, rng=0).to(np.float32)
    state = cell.initial_state(4)
    assert all(part.dtype == np.float32 for part in (state if isinstance(state, tuple) else (state,)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        outputs, _ = nn.RNN(cell)(np.ones((3, 4, 2), np.float32))
    assert outputs[-1].dtype == np.float32


def test_the_benchmark_prints_one_row_per_cell(capsys):
    spec = importlib.util.spec_from_file_location("benchmark_cells", Path(__file__).resolve().parents[1] / "benchmarks" / "cells.py")
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    benchmark.main(["--seconds", "0.05", "--seq-len", "12", "--only", "RNN (tanh)", "JANET, chrono"])
    lines = capsys.readouterr().out.splitlines()
    rows = [line for line in lines if line.startswith(("RNN (tanh)", "JANET, chrono"))]
    assert len(rows) == 2 and "trivial baseline loss 0.1667" in lines[0]
    assert all(0 <= int(reach) <= 12 for row in rows for reach in row.split()[-2:])  # steps back, of T = 12


def test_the_zoo_example_runs_as_a_script_and_shows_every_cell():
    import subprocess

    root = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, str(root / "examples" / "cell_zoo.py")], capture_output=True, text=True,
                            timeout=120, cwd=root)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1 + len(ZOO) + 1 and "AntisymmetricRNN" in result.stdout
