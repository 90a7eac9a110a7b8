"""Lesson 5 (clipping): every figure it prints, recomputed independently in numpy from the same weights
and inputs (a hand-written forward pass and BPTT, the clips written out by hand), and the gradient at
h_0 against central finite differences of the numpy loss.

The model of the lesson, one loss at the last step:

    h_t = tanh(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh),  h_0 = 0,   L = mean((h_T - target)^2)
    dL/dh_T = 2 (h_T - target) / size,   dL/dh_{t-1} = (dL/dh_t * (1 - h_t^2)) W_hh
    dW_ih = sum_t a_t^T x_t,  dW_hh = sum_t a_t^T h_{t-1},  db_ih = db_hh = sum_t sum_b a_t,
    with a_t = dL/dh_t * (1 - h_t^2).
"""

import contextlib
import importlib
import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
LESSONS = ROOT / "examples" / "lessons"
sys.path.insert(0, str(LESSONS))

pytest.importorskip("matplotlib")


@pytest.fixture(scope="module")
def lesson(tmp_path_factory):
    module = importlib.import_module("05_clipping")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        result = module.main(quick=True, out=tmp_path_factory.mktemp("lesson05"))
    result["printed"] = " ".join(printed.getvalue().split())
    return module, result


def weights(cell) -> dict:
    return {name: np.array(p.data, dtype=np.float64) for name, p in cell.named_parameters()}


def forward(w, xs, h0=None):
    hs = [np.zeros((xs.shape[1], w["weight_hh"].shape[0])) if h0 is None else h0]
    for x in xs:
        hs.append(np.tanh(x @ w["weight_ih"].T + w["bias_ih"] + hs[-1] @ w["weight_hh"].T + w["bias_hh"]))
    return hs


def loss_of(w, xs, target, h0=None) -> float:
    return float(np.mean((forward(w, xs, h0)[-1] - target) ** 2))


def clip_norm(g, c):
    n = np.linalg.norm(g)
    return g * (c / n) if n > c else g


def clip_value(g, c):
    return np.clip(g, -c, c)


def backprop(w, xs, target, clip=None):
    """([dL/dh_t after the clip, t = 0..T], {name: gradient}), the clip applied to every h_t's gradient
    before it flows on, as a hook on h_t does."""
    hs = forward(w, xs)
    keep = clip or (lambda g: g)
    delta = keep(2.0 * (hs[-1] - target) / target.size)
    deltas = [None] * len(hs)
    grads = {name: np.zeros_like(v) for name, v in w.items()}
    for t in range(len(hs) - 1, 0, -1):
        deltas[t] = delta
        a = delta * (1.0 - hs[t] ** 2)
        grads["weight_ih"] += a.T @ xs[t - 1]
        grads["weight_hh"] += a.T @ hs[t - 1]
        grads["bias_ih"] += a.sum(axis=0)
        grads["bias_hh"] += a.sum(axis=0)
        delta = keep(a @ w["weight_hh"])
    deltas[0] = delta
    return deltas, grads


def flat(grads, names):
    return np.concatenate([np.ravel(grads[n]) for n in names])


def cosine(a, b):
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_lesson_5_writes_png_and_svg(lesson):
    _, result = lesson
    suffixes = {Path(p).suffix for p in result["paths"]}
    assert suffixes == {".png", ".svg"}
    assert all(Path(p).stat().st_size > 500 for p in result["paths"])


def test_the_gradient_explodes_through_time_while_every_state_stays_below_one(lesson):
    module, result = lesson
    cell, xs, target = result["problem"]
    w = weights(cell)
    hs = forward(w, xs)
    deltas, _ = backprop(w, xs, target)
    norms = [np.linalg.norm(d) for d in deltas]
    np.testing.assert_allclose(result["norms"], norms, rtol=1e-10)
    factor = norms[0] / norms[-1]
    run = result["run"]
    assert run["factor"] == pytest.approx(factor, rel=1e-10)
    assert factor > 1e3 and run["verdict"] == "exploding"
    largest = max(np.abs(h).max() for h in hs[1:])
    assert run["max_abs_h"] == pytest.approx(largest, rel=1e-14) and largest < 1.0
    # The states do not grow: once settled, the mean |h_t| stays within a narrow band to the last step.
    settled = [np.abs(h).mean() for h in hs[module.SETTLED:]]
    assert max(settled) < 1.25 * min(settled)
    assert f"to stay between {min(settled):.2f} and {max(settled):.2f} from t = {module.SETTLED}" in result["printed"]
    assert 0.3 < np.mean([(1 - h**2).mean() for h in hs[1:]]) < 0.6  # tanh' is far from 0: not saturated
    assert run["spectral_norm_w_hh"] == pytest.approx(np.linalg.svd(w["weight_hh"], compute_uv=False)[0])


def test_the_gradient_at_h0_equals_central_finite_differences(lesson):
    _, result = lesson
    cell, xs, target = result["problem"]
    w = weights(cell)
    h0 = np.zeros((xs.shape[1], w["weight_hh"].shape[0]))
    eps = 1e-7
    numeric = np.zeros_like(h0)
    for index in np.ndindex(h0.shape):
        up, down = h0.copy(), h0.copy()
        up[index] += eps
        down[index] -= eps
        numeric[index] = (loss_of(w, xs, target, up) - loss_of(w, xs, target, down)) / (2 * eps)
    assert np.linalg.norm(numeric) == pytest.approx(result["norms"][0], rel=1e-5)


def test_pascanus_condition_holds_for_the_saturating_example_yet_it_stays_stable(lesson):
    module, result = lesson
    cell, xs, target = module.make_saturating_problem(len(result["norms"]) - 1, cell_hidden(result))
    w = weights(cell)
    deltas, _ = backprop(w, xs, target)
    factor = np.linalg.norm(deltas[0]) / np.linalg.norm(deltas[-1])
    assert np.linalg.svd(w["weight_hh"], compute_uv=False)[0] == pytest.approx(1.5)
    assert factor < 1e3 and result["saturating"]["factor"] == pytest.approx(factor, rel=1e-10)
    assert result["saturating"]["verdict"] == "stable"


def cell_hidden(result) -> int:
    return result["problem"][0].hidden_size


def test_the_norm_hook_keeps_every_steps_direction_and_the_value_hook_bends_it(lesson):
    _, result = lesson
    cell, xs, target = result["problem"]
    w = weights(cell)
    plain, _ = backprop(w, xs, target)
    by_norm, _ = backprop(w, xs, target, lambda g: clip_norm(g, result["step_norm"]))
    by_value, _ = backprop(w, xs, target, lambda g: clip_value(g, result["step_value"]))
    np.testing.assert_allclose(result["per_step"]["clip_norm hook"],
                               [cosine(c.ravel(), d.ravel()) for c, d in zip(by_norm, plain)], atol=1e-12)
    np.testing.assert_allclose(result["per_step"]["clip_value hook"],
                               [cosine(c.ravel(), d.ravel()) for c, d in zip(by_value, plain)], atol=1e-10)
    assert all(c == pytest.approx(1.0, abs=1e-12) for c in result["per_step"]["clip_norm hook"])
    assert min(result["per_step"]["clip_value hook"]) < 0.5


def test_only_the_global_norm_clip_keeps_the_direction_of_the_whole_gradient(lesson):
    _, result = lesson
    cell, xs, target = result["problem"]
    w, names = weights(cell), [name for name, _ in cell.named_parameters()]
    deltas, grads = backprop(w, xs, target)
    reference = flat(grads, names)
    largest_norm = max(np.linalg.norm(d) for d in deltas)
    largest_element = max(np.abs(d).max() for d in deltas)
    for k, f in enumerate(result["fractions"]):
        by_norm = reference * min(1.0, f * np.linalg.norm(reference) / (np.linalg.norm(reference) + 1e-6))
        by_value = np.clip(reference, -f * np.abs(reference).max(), f * np.abs(reference).max())
        hook_norm = flat(backprop(w, xs, target, lambda g, c=f * largest_norm: clip_norm(g, c))[1], names)
        hook_value = flat(backprop(w, xs, target, lambda g, c=f * largest_element: clip_value(g, c))[1], names)
        sweep = result["sweep"]
        assert sweep["clip_grad_norm_"][k] == pytest.approx(cosine(by_norm, reference), abs=1e-12)
        assert sweep["clip_grad_value_"][k] == pytest.approx(cosine(by_value, reference), abs=1e-10)
        assert sweep["clip_norm hook"][k] == pytest.approx(cosine(hook_norm, reference), abs=1e-10)
        assert sweep["clip_value hook"][k] == pytest.approx(cosine(hook_value, reference), abs=1e-10)
    at = result["at"]
    assert sweep["clip_grad_norm_"][at] == pytest.approx(1.0, abs=1e-12)
    assert max(sweep[name][at] for name in ("clip_grad_value_", "clip_norm hook", "clip_value hook")) < 0.95


def test_the_printed_sentences_carry_the_verdict_and_the_bound(lesson):
    _, result = lesson
    text = result["printed"]
    assert "diagnostics.verdict says 'exploding'" in text
    assert f"max |h_t| over every step and unit is {result['run']['max_abs_h']:.5f} < 1" in text
    assert float(f"{result['run']['max_abs_h']:.5f}") < 1.0  # the printed digits say it too
    assert "'stable'" in text


def test_lesson_5_runs_from_any_directory_without_out(tmp_path):
    done = subprocess.run([sys.executable, str(LESSONS / "05_clipping.py"), "--quick"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / "lessons" / "05_clipping.png").exists()
    assert (tmp_path / "out" / "lessons" / "05_clipping.svg").exists()
