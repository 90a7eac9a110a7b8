"""Lesson 2 (saturation), run small: each chain's dL/dh_0 against the recurrence written out with
math.tanh and a hand-written sigmoid (the chain rule), and against central differences in 50-digit
decimals (float64 differences of h_3 ~ 1 would drown a derivative of 5e-9 in rounding); the printed
sentences against those numbers; the op view's legend says what its rows are."""

import contextlib
import importlib
import io
import math
import sys
from decimal import Decimal, localcontext
from pathlib import Path

import pytest

LESSONS = Path(__file__).resolve().parent.parent / "examples" / "lessons"
sys.path.insert(0, str(LESSONS))

pytest.importorskip("matplotlib")

INPUTS = {"small inputs": [0.2, -0.3, 0.1], "large inputs": [4.0, -5.0, 4.5]}
FUNCTIONS = {"tanh": (math.tanh, lambda y: 1 - y * y),
             "sigmoid": (lambda a: 1 / (1 + math.exp(-a)), lambda y: y * (1 - y))}


@pytest.fixture(scope="module")
def lesson(tmp_path_factory):
    out = tmp_path_factory.mktemp("lesson02")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        result = importlib.import_module("02_saturation").main(quick=True, out=out)
    return result, " ".join(printed.getvalue().split()), out


DECIMAL_FUNCTIONS = {"tanh": lambda a: ((2 * a).exp() - 1) / ((2 * a).exp() + 1),
                     "sigmoid": lambda a: 1 / (1 + (-a).exp())}


def central_difference(nonlinearity, xs, h_0="0.1", eps="1e-20"):
    """(h_3(h_0 + eps) - h_3(h_0 - eps)) / 2 eps, computed with 50 significant digits."""
    with localcontext() as context:
        context.prec = 50
        f, eps = DECIMAL_FUNCTIONS[nonlinearity], Decimal(eps)

        def h_3(h):
            for x in xs:
                h = f(h + Decimal(str(x)))
            return h

        return float((h_3(Decimal(h_0) + eps) - h_3(Decimal(h_0) - eps)) / (2 * eps))


def chain_rule(nonlinearity, xs, h_0=0.1):
    """dh_3/dh_0 = prod_t f'(a_t), with f'(a) written in terms of the output y = f(a)."""
    f, slope = FUNCTIONS[nonlinearity]
    h, product = h_0, 1.0
    for x in xs:
        h = f(h + x)
        product *= slope(h)
    return product


@pytest.mark.parametrize("nonlinearity", ["tanh", "sigmoid"])
@pytest.mark.parametrize("regime", ["small inputs", "large inputs"])
def test_gradient_to_h0_is_the_chain_rule_and_the_central_difference(lesson, nonlinearity, regime):
    result, _, _ = lesson
    computed = result["runs"][(nonlinearity, regime)]["dL/dh_0"]
    xs = INPUTS[regime]
    assert computed == pytest.approx(chain_rule(nonlinearity, xs), rel=1e-12)
    assert computed == pytest.approx(central_difference(nonlinearity, xs), rel=1e-10)


def test_the_products_it_prints_are_the_chain_rule_ones(lesson):
    _, text, _ = lesson
    for nonlinearity in FUNCTIONS:
        for regime, xs in INPUTS.items():
            assert f"{nonlinearity} with {regime}:" in text
            assert f"dL/dh_0 = {chain_rule(nonlinearity, xs):.3g}" in text


def test_its_sentence_on_tanh_prime_and_saturated_sigmoids_holds(lesson):
    _, text, _ = lesson
    at_3_5 = 1 - math.tanh(3.5) ** 2
    assert f"{at_3_5:.3g} at |a| = 3.5 and less beyond" in text
    assert all(1 - math.tanh(a) ** 2 < at_3_5 for a in (3.6, 4.0, 5.0, -3.6, -5.0))
    assert f"leave {chain_rule('sigmoid', INPUTS['large inputs']):.1g} of it" in text
    assert chain_rule("sigmoid", INPUTS["small inputs"]) <= 0.25**3  # "at least 64-fold"


def test_op_view_legend_says_four_chains_of_three_steps_and_what_yellow_is(lesson):
    result, _, out = lesson
    svg = (out / "02_saturation_op_view.svg").read_text()
    assert "4 recurrences of 3 time steps each" in svg
    assert "12 time steps" not in svg
    assert "yellow: a leaf that needs a gradient (a parameter, or an input differentiated)" in svg


def test_lesson_writes_the_op_view_and_the_derivative_plot_as_png_and_svg(lesson):
    result, _, _ = lesson
    names = {Path(p).name for p in result["paths"]}
    assert names == {f"02_saturation_{kind}.{suffix}" for kind in ("op_view", "derivatives") for suffix in ("png", "svg")}
    assert all(Path(p).stat().st_size > 500 for p in result["paths"])
