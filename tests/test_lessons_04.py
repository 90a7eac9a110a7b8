"""Lesson 4 (the cliff), run small: the catapult, the clipped run, the many-starts sweep and the wall's
width, each recomputed without the framework: SGD in plain Python with the hand-derived forward-mode
gradient (dx_t/dw = s + w s' dx_t-1/dw, dx_t/db = 1 + w s' dx_t-1/db), clipping written out, and the
wall bisected in 60-digit decimals."""

import contextlib
import importlib
import io
import math
import re
import sys
from decimal import Decimal, localcontext
from pathlib import Path

import numpy as np
import pytest

LESSONS = Path(__file__).resolve().parent.parent / "examples" / "lessons"
sys.path.insert(0, str(LESSONS))

pytest.importorskip("matplotlib")

STEPS, LR, MAX_NORM = 15, 0.05, 20.0


@pytest.fixture(scope="module")
def lesson(tmp_path_factory):
    module = importlib.import_module("04_cliff")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        result = module.main(quick=True, out=tmp_path_factory.mktemp("lesson04"))
    return module, result, " ".join(printed.getvalue().split())


def sigmoid(x):
    return 1 / (1 + math.exp(-x)) if x >= 0 else math.exp(x) / (1 + math.exp(x))


def loss_and_gradient(w, b, steps=STEPS):
    """(L, dL/dw, dL/db) of x_t = w sigmoid(x_t-1) + b, x_0 = 0.5, L = (x_T - 0.7)^2, forward mode."""
    x, dw, db = 0.5, 0.0, 0.0
    for _ in range(steps):
        s = sigmoid(x)
        dw, db = s + w * s * (1 - s) * dw, 1 + w * s * (1 - s) * db
        x = w * s + b
    return (x - 0.7) ** 2, 2 * (x - 0.7) * dw, 2 * (x - 0.7) * db


def sgd(w, b, lr, max_norm, iterations):
    """Rows (w, b, loss, norm before clipping); clipping as clip_grad_norm_: g min(1, c / (||g|| + 1e-6))."""
    rows = []
    for _ in range(iterations + 1):
        loss, dw, db = loss_and_gradient(w, b)
        norm = math.hypot(dw, db)
        rows.append((w, b, loss, norm))
        scale = 1.0 if max_norm is None else min(1.0, max_norm / (norm + 1e-6))
        w, b = w - lr * scale * dw, b - lr * scale * db
    return np.array(rows)


def decimal_width(w, steps):
    """The b over which x_T climbs from 10% to 90% of the way between the attractors, by bisection in
    60-digit decimals (attractors: the map iterated from 0.5 -+ 1 at b = 0.5 - w sigmoid(0.5))."""
    with localcontext() as context:
        context.prec = 60
        w, x0 = Decimal(float(w)), Decimal("0.5")

        def s(x):
            return 1 / (1 + (-x).exp())

        def last(b):
            x = x0
            for _ in range(steps):
                x = w * s(x) + b
            return x

        b_inf = x0 - w * s(x0)
        ends = []
        for start in (x0 - 1, x0 + 1):
            x = start
            for _ in range(2000):
                x = w * s(x) + b_inf
            ends.append(x)
        low, high = ends
        crossings = []
        for fraction in (Decimal("0.1"), Decimal("0.9")):
            level, a, b = low + fraction * (high - low), b_inf - (high - low) - 1, b_inf + (high - low) + 1
            for _ in range(220):
                middle = (a + b) / 2
                a, b = (middle, b) if last(middle) < level else (a, middle)
            crossings.append((a + b) / 2)
        return float(crossings[1] - crossings[0])


def test_lesson_writes_its_picture_as_png_and_svg(lesson):
    _, result, _ = lesson
    assert {Path(p).name for p in result["paths"]} == {"04_cliff.png", "04_cliff.svg"}
    assert all(Path(p).stat().st_size > 500 for p in result["paths"])


def test_the_catapult_is_where_plain_python_sgd_is_thrown(lesson):
    _, result, text = lesson
    plain = sgd(9.0, -3.0, LR, None, 60)
    jumps = np.hypot(*np.diff(plain[:, :2], axis=0).T)
    k = int(np.argmax(jumps))
    assert result["catapult_iteration"] == k
    assert result["catapult_point"] == pytest.approx(tuple(plain[k, :2]), rel=1e-9)
    assert result["catapult_norm"] == pytest.approx(plain[k, 3], rel=1e-9)
    assert result["catapult_distance"] == pytest.approx(LR * plain[k, 3], rel=1e-9)  # one plain step: lr ||g||
    assert result["catapult_norm"] > 20 * np.median(plain[:k, 3])
    assert plain[k + 1, 2] > plain[0, 2]  # "lost all it had gained": worse than where it started
    assert f"the gradient's norm is {plain[k, 3]:.3g}" in text
    back = next(i for i in range(k + 1, 60) if plain[i, 2] <= plain[k, 2])
    assert f"took until iteration {back} to come back" in text


def test_the_clipped_run_is_the_plain_run_until_its_first_clip_then_steps_at_most_lr_times_max_norm(lesson):
    _, result, text = lesson
    plain, clipped = sgd(9.0, -3.0, LR, None, 60), sgd(9.0, -3.0, LR, MAX_NORM, 60)
    first = int(np.argmax(clipped[:, 3] > MAX_NORM))
    assert result["first_clip"] == first
    assert result["same_until"] == first + 1  # rows 0..first are the same (w, b); the clip changes row first + 1
    np.testing.assert_allclose(clipped[: first + 1, :2], plain[: first + 1, :2], rtol=1e-12)
    moves = np.hypot(*np.diff(clipped[:, :2], axis=0).T)
    assert result["clipped_max_move"] == pytest.approx(moves.max(), rel=1e-9)
    assert moves.max() <= LR * MAX_NORM * (1 + 1e-9)
    assert f"The clipped run is the plain run until iteration {first}" in text
    assert result["final_loss_clipped"] == pytest.approx(clipped[-2, 2], rel=1e-6)  # the lesson keeps 60 rows


def test_many_runs_at_once_equal_the_library_optimiser_with_clip_grad_norm(lesson):
    module, _, _ = lesson
    starts = [(9.0, -3.0), (6.0, -2.0), (11.0, -4.5)]
    for max_norm in (None, MAX_NORM):
        together = module.descend_many([w for w, _ in starts], [b for _, b in starts], LR, max_norm, 40)
        for i, start in enumerate(starts):
            alone = module.descend(41, max_norm, start=start)
            np.testing.assert_allclose(together[:, i], alone[:, 2], rtol=1e-9, atol=1e-12)


def plain_python_sweep(module, learning_rates, per_side, iterations):
    w, b = module.starting_points(per_side)
    result = {}
    for method, max_norm in (("plain", None), ("clipped", MAX_NORM)):
        rows = []
        for lr in learning_rates:
            runs = [sgd(wi, bi, lr, max_norm, iterations)[:, 2] for wi, bi in zip(w, b)]
            worst = np.array([np.max(r[1:] / r[0]) for r in runs])
            thrown = worst > 10
            rows.append({"thrown": int(thrown.sum()), "thrown_back": int(sum(t and r[-1] < r[0] for t, r in
                                                                                zip(thrown, runs))),
                         "converged": int(sum(r[-1] < 1e-3 for r in runs)), "worst": worst.max()})
        result[method] = rows
    return result, len(w)


def test_the_sweeps_shares_are_those_of_plain_python_sgd(lesson):
    module, result, text = lesson
    many = result["many"]
    rates = [row["lr"] for row in many["plain"]]
    reference, runs = plain_python_sweep(module, rates, 8, many["iterations"])
    assert many["runs"] == runs
    for method in ("plain", "clipped"):
        for row, expected in zip(many[method], reference[method]):
            assert abs(row["thrown"] * runs - expected["thrown"]) <= 1  # a run on the threshold may tip
            assert abs(row["converged"] * runs - expected["converged"]) <= 1
            assert row["worst"] == pytest.approx(expected["worst"], rel=1e-6)
    assert all(row["thrown"] == 0 for row in many["clipped"])
    assert max(row["thrown"] for row in many["plain"]) > 0.05
    assert f"clipped SGD in 0%: its worst loss is {max(r['worst'] for r in reference['clipped']):.2g} times" in text
    thrown = sum(r["thrown"] for r in reference["plain"])
    back = sum(r["thrown_back"] for r in reference["plain"])
    assert f"of the {thrown} throws (all rates together), {back} end below where they started" in text
    assert back > 0  # "thrown runs can come back"


def test_plain_sgd_ends_below_1e_3_about_as_often_as_clipped_sgd_or_more_as_it_says(lesson):
    module, result, text = lesson
    many = result["many"]
    reference, runs = plain_python_sweep(module, [row["lr"] for row in many["plain"]], 8, many["iterations"])
    plain = [row["converged"] for row in reference["plain"]]
    clipped = [row["converged"] for row in reference["clipped"]]
    assert all(p >= c - 0.01 * runs for p, c in zip(plain, clipped))
    assert "at every rate plain SGD ends below 0.001 about as often (within 1% of the runs) or more often" in text


def test_printed_wall_widths_are_the_60_digit_bisection(lesson):
    _, result, text = lesson
    for w, wall in result["walls"].items():
        for steps in (STEPS, 50):
            assert wall["widths"][steps - 1] == pytest.approx(decimal_width(w, steps), rel=1e-2)
    w_k = result["catapult_point"][0]
    near, far = decimal_width(w_k, STEPS), decimal_width(8.0, 50)
    assert f"it is {near:.2g} for T = {STEPS}" in text
    assert f"{far:.2g}. Each step divides it" in text
    assert far == pytest.approx(1.34e-13, rel=1e-2)


def test_wall_narrows_by_lambda_per_step(lesson):
    _, result, text = lesson
    s = sigmoid(0.5)
    for w, wall in result["walls"].items():
        assert wall["lambda"] == pytest.approx(w * s * (1 - s), rel=1e-12)
        widths = wall["widths"]
        assert widths[29] / widths[30] == pytest.approx(wall["lambda"], rel=1e-3)
        assert f"{wall['lambda']:.2f}" in text


def test_factors_on_the_wall_exceed_one_and_off_it_are_small(lesson):
    _, result, text = lesson

    def factors(w, b):
        x, out = 0.5, []
        for _ in range(STEPS):
            s = sigmoid(x)
            out.append(w * s * (1 - s))
            x = w * s + b
        return np.array(out)

    on_wall, at_start = factors(*result["catapult_point"]), factors(9.0, -3.0)
    assert on_wall.min() > 1
    assert np.median(at_start) < 0.1
    assert re.search(rf"between {on_wall.min():.2f} and {on_wall.max():.2f} \(product {on_wall.prod():.3g}\)", text)
