"""Lesson 10 (many losses: the lag view): its printed numbers, its pictures' numbers and its sentences,
each checked against an independent computation: for the linear RNN the closed form (W^T)^(i-k) r_i of
each loss's gradient; for the tanh RNN backpropagation written out in numpy with the hand-derived
Jacobian diag(1 - h_t^2) W_hh, and a state cut into a fresh leaf followed by plain backward."""

import contextlib
import importlib
import io
import re
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import numpy as np
import pytest
from numpy_cells import numpy_rnn_cell

from tinygrad_rnn import Value, diagnostics, grad, nn
from visualize import style

ROOT = Path(__file__).resolve().parent.parent
LESSONS = ROOT / "examples" / "lessons"
sys.path.insert(0, str(LESSONS))

pytest.importorskip("matplotlib")
lesson = importlib.import_module("10_many_losses")
LINEAR, TANH = lesson.LINEAR, lesson.TANH


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """The quick run, once: (its result, what it printed, the folder of its pictures)."""
    out = tmp_path_factory.mktemp("lesson10")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        result = lesson.main(quick=True, out=out)
    return result, " ".join(printed.getvalue().split()), out


@pytest.fixture(scope="module")
def full():
    """The full-size nets, analysed as main does (no pictures): (linear, tanh, the sentences, T)."""
    T = lesson.STEPS
    linear, tanh = lesson.analyse(lesson.preserved_direction(T)), lesson.analyse(lesson.tanh_every_step(T))
    return linear, tanh, " ".join(" ".join(lesson.sentences(linear, tanh, T)).split()), T


# ---- independent computations -------------------------------------------------------------------

def closed_form(weight, readouts) -> np.ndarray:
    """delta_k^(i) = (W^T)^(i-k) r_i for the loss <r_i, h_i>, i = 1..T, k = 0..i (zero for k > i):
    shape (T, T+1, hidden)."""
    T = len(readouts)
    deltas = np.zeros((T, T + 1, weight.shape[0]))
    for i in range(1, T + 1):
        for k in range(i + 1):
            deltas[i - 1, k] = np.linalg.matrix_power(weight.T, i - k) @ readouts[i - 1]
    return deltas


def numpy_bptt(weights, xs, targets) -> np.ndarray:
    """delta_k^(i) of L_i = mean((h_i - y_i)^2) for a tanh RNN in plain numpy: d_i = 2 (h_i - y_i) / H at
    h_i, then delta_{k-1} = W_hh^T ((1 - h_k^2) * delta_k). Shape (T, T+1, H)."""
    T, H = len(xs), weights["weight_hh"].shape[0]
    h = [np.zeros(H)]
    for x in xs[:, 0]:
        h.append(numpy_rnn_cell(weights, x, h[-1]))
    deltas = np.zeros((T, T + 1, H))
    for i in range(1, T + 1):
        delta = 2 * (h[i] - targets[i - 1, 0]) / H
        deltas[i - 1, i] = delta
        for k in range(i, 0, -1):
            delta = weights["weight_hh"].T @ ((1 - h[k] ** 2) * delta)
            deltas[i - 1, k - 1] = delta
    return deltas


def step_numbers(deltas) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """From the per-loss deltas: ||delta_k^(i)||, the summed loss's ||delta_k|| (the vectors add), and
    its gains ||J_t^T delta_t|| / ||delta_t||, where J_t^T delta_t = delta_{t-1} minus what loss t-1
    reads at s_{t-1} = the sum over the losses after t-1 of delta_{t-1}^(i)."""
    T = deltas.shape[0]
    norms = np.linalg.norm(deltas, axis=2)
    summed = deltas.sum(axis=0)
    crossed = [deltas[t - 1:, t - 1].sum(axis=0) for t in range(1, T + 1)]  # losses reading s_t, ..., s_T
    gains = np.array([np.linalg.norm(crossed[t - 1]) / np.linalg.norm(summed[t]) for t in range(1, T + 1)])
    return norms, np.linalg.norm(summed, axis=1), gains


def reach(norms, lag) -> float:
    """The median over the losses reading s_i with i >= lag of ||delta_{i-lag}^(i)|| / ||delta_i^(i)||."""
    T = norms.shape[0]
    return float(np.median([norms[i - 1, i - lag] / norms[i - 1, i] for i in range(max(lag, 1), T + 1)]))


def independent(run_numbers, kind):
    if kind == LINEAR:
        return step_numbers(closed_form(run_numbers["weight"], run_numbers["readouts"]))
    return step_numbers(numpy_bptt(run_numbers["weights"], run_numbers["xs"], run_numbers["targets"]))


def nested_svgs(path) -> list:
    return [e for e in ElementTree.parse(path).getroot() if e.tag.endswith("svg")]


def svg_text(element) -> str:
    return " ".join("".join(element.itertext()).split())


# ---- the run and its pictures -------------------------------------------------------------------

def test_the_lesson_writes_a_png_and_an_svg_of_each_picture(quick):
    result, _, _ = quick
    names = {Path(p).name for p in result["paths"]}
    assert names == {f"10_many_losses_{kind}.{suffix}" for kind in ("linear", "tanh", "sum") for suffix in ("png", "svg")}
    assert all(Path(p).stat().st_size > 5000 for p in result["paths"])


@pytest.mark.parametrize("kind", ["linear", "tanh"])
def test_each_net_has_its_step_view_above_its_lag_view_in_one_picture(quick, kind):
    _, _, out = quick
    top, bottom = nested_svgs(out / f"10_many_losses_{kind}.svg")
    assert "Step view of the summed loss" in svg_text(top) and "Lag view of the same" in svg_text(bottom)
    assert float(top.get("y")) < float(bottom.get("y"))
    from PIL import Image

    with Image.open(out / f"10_many_losses_{kind}.png") as image:  # the PNG holds both, one above the other
        assert image.height > 2 * 150 and image.width > 1000


# ---- the linear RNN that keeps one direction ----------------------------------------------------

def test_the_linear_lag_matrix_is_w_transposed_to_the_lag_applied_to_each_readout(quick):
    run = quick[0]["runs"][LINEAR]
    norms, _, _ = independent(run, LINEAR)
    np.testing.assert_allclose(run["matrix"], norms, rtol=1e-12, atol=0)


def test_the_linear_step_view_shows_gains_of_a_tenth_over_level_nodes(quick):
    run, T = quick[0]["runs"][LINEAR], quick[0]["steps"]
    _, summed, gains = independent(run, LINEAR)
    np.testing.assert_allclose(run["delta_norms"], summed, rtol=1e-12)
    np.testing.assert_allclose(run["gains"], gains, rtol=1e-12)
    np.testing.assert_allclose(gains[:-1], 0.1, rtol=1e-4)  # every step but the last shrinks tenfold
    assert gains[-1] == pytest.approx(1.0, rel=1e-12)  # delta_T = e_1, kept by W
    assert summed[1:T].max() / summed[1:T].min() < 1.2  # level nodes, while the gains multiply to 1e-(T-1)
    assert np.prod(gains) == pytest.approx(0.1 ** (T - 1), rel=1e-3)
    assert summed[0] / summed[T] > 100  # so the gains do not multiply to ||delta_0|| / ||delta_T||


def test_the_last_losss_gradient_reaches_h0_whole_and_the_verdict_follows_it(quick):
    run = quick[0]["runs"][LINEAR]
    weight, readouts = run["weight"], run["readouts"]
    T = len(readouts)
    whole = np.linalg.matrix_power(weight.T, T) @ readouts[-1]  # (W^T)^T e_1 = e_1
    assert run["last_share"] == pytest.approx(np.linalg.norm(whole) / np.linalg.norm(readouts[-1]), rel=1e-12)
    assert run["last_share"] == pytest.approx(1.0, rel=1e-12)
    assert run["verdict"] == "stable"  # 1e-3 < 1 < 1e3


@pytest.mark.parametrize("kind", [LINEAR, TANH])
def test_the_reach_at_each_printed_lag_is_the_median_of_the_independent_shares(quick, kind):
    run = quick[0]["runs"][kind]
    norms, _, _ = independent(run, kind)
    for lag in quick[0]["lags"]:
        assert run["reach"][lag] == pytest.approx(reach(norms, lag), rel=1e-9)


# ---- the tanh RNN with a loss at every step -----------------------------------------------------

def test_the_tanh_lag_matrix_equals_numpy_backpropagation_of_each_loss_alone(quick):
    run = quick[0]["runs"][TANH]
    norms, _, _ = independent(run, TANH)
    np.testing.assert_allclose(run["matrix"], norms, rtol=1e-9, atol=1e-300)


def test_the_tanh_step_view_numbers_equal_numpy_backpropagation_of_the_summed_loss(quick):
    run = quick[0]["runs"][TANH]
    _, summed, gains = independent(run, TANH)
    np.testing.assert_allclose(run["delta_norms"], summed, rtol=1e-9)
    np.testing.assert_allclose(run["gains"], gains, rtol=1e-9)


def test_a_tanh_lag_entry_equals_plain_backward_to_a_state_cut_into_a_fresh_leaf(quick):
    """The last loss's gradient at h_2: unroll to h_2, replace it by a new leaf, go on to h_T, backward."""
    run = quick[0]["runs"][TANH]
    T, k = len(run["xs"]), 2
    cell = nn.RNNCell(lesson.INPUTS, lesson.HIDDEN)
    cell.load_state_dict(run["weights"])
    state = None
    for t in range(k):
        state = cell(run["xs"][t], state)
    leaf = Value(state.data.copy())
    state = leaf
    for t in range(k, T):
        state = cell(run["xs"][t], state)
    (found,) = grad(nn.mse_loss(state, run["targets"][-1]), [leaf])
    assert run["matrix"][-1, k] == pytest.approx(np.linalg.norm(found), rel=1e-9)


# ---- what the pictures say ----------------------------------------------------------------------

def node_numbers(source: str) -> list[float]:
    found = re.findall(r'^\s*sn(\d+) \[label=<<B>.*?</B><BR/><FONT POINT-SIZE="9">([-\d.e+]+)</FONT>', source, re.M)
    return [float(x) for _, x in sorted((int(t), x) for t, x in found)]


def heatmap_rows(source: str) -> list[list[float]]:
    rows = re.findall(r"<TR><TD ALIGN=\"RIGHT\"><FONT POINT-SIZE=\"8\">losses\[\d+\].*?</TR>", source)
    return [[float(x) for x in re.findall(r'<FONT POINT-SIZE="7" COLOR="[^"]+">([-\d.e+]+)</FONT>', r)] for r in rows]


@pytest.mark.parametrize("kind", [LINEAR, TANH])
def test_the_pictures_nodes_cells_and_captions_show_the_independent_numbers(kind):
    """At the quick size every heatmap cell carries its number (13 states); the step view's nodes are
    ||delta_t|| of the summed loss, its caption the last loss's own share at h_0 and the verdict's word."""
    T = lesson.QUICK_STEPS
    net = lesson.preserved_direction(T) if kind == LINEAR else lesson.tanh_every_step(T)
    run = lesson.analyse(net)
    numbers = {"weight": net.get("weight"), "readouts": net.get("readouts"), "weights": net.get("weights"),
               "xs": net.get("xs"), "targets": net.get("targets")}
    norms, summed, _ = independent(numbers, kind)
    step_view, lag_view = lesson.views(run, T, "linear" if kind == LINEAR else "tanh")
    assert node_numbers(step_view.source) == [float(style.number(x, 2)) for x in summed]
    last = norms[-1, 0] / norms[-1, -1]
    word = "vanishing" if last < diagnostics.VANISHING else "stable"
    assert f"alone reaches h₀ × {style.number(last, 2)} · {word}" in step_view.source
    shown = heatmap_rows(lag_view.source)
    expected = [[float(style.number(x, 2)) for x in norms[i, : i + 2] / norms[i, i + 1]] for i in range(T)]
    assert shown == expected
    # Loss i reads h_i and reaches i steps back: the header quotes the longest lag half the losses reach.
    half = max(lag for lag in range(T + 1) if sum(i >= lag for i in range(1, T + 1)) >= T / 2)
    assert (f"median reach {half} time steps back (the longest lag whose median share, over at least half "
            f"the losses, is above 0): "
            f"{style.number(reach(norms, half), 2)}") in lag_view.source


def test_the_step_views_legend_does_not_claim_the_gains_multiply_to_the_end_ratio(quick):
    """With a loss at every step ||delta_{t-1}|| = ||J_t^T delta_t + d_{t-1}||: the product of the gains is
    not ||delta_0|| / ||delta_T|| (here 1e-11 against 157), and the legend must not say it is."""
    _, _, out = quick
    for kind in ("linear", "tanh"):
        top, _ = nested_svgs(out / f"10_many_losses_{kind}.svg")
        text = svg_text(top)
        assert "the labels multiply to" not in text and "the labels do not multiply to" in text


def test_each_panel_title_quotes_the_independent_numbers(quick):
    result = quick[0]
    for kind in (LINEAR, TANH):
        run = result["runs"][kind]
        norms, _, gains = independent(run, kind)
        title = lesson.panel_title(kind, run)
        assert (f"median gain {np.median(gains):.3f} · gains multiply to {np.prod(gains):.2g} · last loss's share at "
                f"h_0 {norms[-1, 0] / norms[-1, -1]:.2g}") in title


# ---- what the lesson says -----------------------------------------------------------------------

def check_sentences(text: str, linear: dict, tanh: dict, T: int) -> None:
    """Every number of the printed paragraphs, recomputed independently, in the printed format."""
    norms, summed, gains = independent(linear, LINEAR)
    inner = summed[1:T]
    for phrase in (
        f"the median gain is {np.median(gains):.3f} (step {T}'s is {gains[-1]:.3f})",
        f"the gains multiply to {np.prod(gains):.2g}; yet ||delta_t|| stays between {inner.min():.2g} and "
        f"{inner.max():.2g} from h_1 to h_{T - 1} ({summed[0]:.3g} at h_0, which no loss reads; {summed[T]:.3g} at h_{T})",
        f"||delta_0|| / ||delta_{T}|| = {summed[0] / summed[T]:.3g}, not the product of the gains",
        f"the last loss's share at h_0 is {norms[-1, 0] / norms[-1, -1]:.6f}",
        f"its part of delta_1 has norm {norms[-1, 1]:.3g}, beside ||delta_1|| = {summed[1]:.2g}",
        ", ".join(f"{reach(norms, lag):.2g} at lag {lag}" for lag in lesson.LAGS),
        f"lag {T - 1} on losses {T - 1} and {T} ({reach(norms, T - 1):.2g}, the median of two is their mean), "
        f"lag {T} on the last loss alone ({reach(norms, T):.3g})",
        f"x {norms[-1, 0] / norms[-1, -1]:.3g}, stable",
    ):
        assert phrase in text, phrase
    assert np.all(np.abs(gains[:-1] - 0.1) < 1e-4)  # "steps 1 to T-1 each shrink ... tenfold"
    assert np.count_nonzero(norms[:, T - 1] > 0) == 2 and np.count_nonzero(norms[:, T] > 0) == 1  # lags T-1, T

    norms, summed, gains = independent(tanh, TANH)
    shares = norms[-1, 0] / norms[-1, -1]
    for phrase in (
        f"||delta_t|| stays between {summed.min():.2g} and {summed.max():.2g} at every state, while the median gain "
        f"is {np.median(gains):.2f} and the gains multiply to {np.prod(gains):.2g}",
        ", ".join(f"{reach(norms, lag):.2g} at lag {lag}" for lag in lesson.LAGS),
        f"the last loss's share at h_0 is {shares:.2g}",
        "says vanishing",
    ):
        assert phrase in text, phrase
    assert summed.max() / summed.min() < 2.5  # level
    assert shares < diagnostics.VANISHING  # "vanishing" by the verdict's rule on the last loss alone
    assert reach(norms, 10) < 1e-2  # "not because any gradient survives": ten steps back, under 1% is left


def test_the_quick_runs_sentences_hold_for_the_numbers_it_printed(quick):
    result, printed, _ = quick
    runs = result["runs"]
    check_sentences(printed, runs[LINEAR], runs[TANH], result["steps"])


def test_the_full_size_sentences_hold_for_the_independent_numbers(full):
    linear, tanh, text, T = full
    check_sentences(text, linear, tanh, T)
    # the figures docs/lessons.md quotes
    assert f"{np.median(linear['gains']):.3f}" == "0.100" and f"{linear['gain_product']:.2g}" == "1e-29"
    assert f"{tanh['median_gain']:.2f}" == "0.50" and f"{tanh['last_share']:.2g}" == "1.1e-10"


def test_the_lesson_runs_from_any_folder_and_writes_to_out_lessons(tmp_path):
    result = subprocess.run([sys.executable, str(LESSONS / "10_many_losses.py"), "--quick"], capture_output=True,
                            text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "the last loss's share at h_0 is 1.000000" in " ".join(result.stdout.split())
    for kind in ("linear", "tanh", "sum"):
        assert (tmp_path / "out" / "lessons" / f"10_many_losses_{kind}.png").exists()
