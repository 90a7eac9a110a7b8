"""The lag view: its cells are each loss's share of its gradient at every state, its bars the median
share per lag, both read back from the picture and checked against the lag matrix (itself checked
against states cut into fresh leaves in test_split.py) and an independent median in numpy."""

import re

import numpy as np
import pytest

from tinygrad_rnn import diagnostics, nn
from visualize import draw_lags, render, style


def per_step_run(T=8, seed=0):
    rng = np.random.default_rng(seed)
    cell = nn.RNNCell(3, 6, rng=rng)
    outputs, states = nn.RNN(cell)(rng.standard_normal((T, 2, 3)), return_states=True)
    return [(h**2).sum() for h in outputs], states


def cell_numbers(source: str) -> list[list[float]]:
    """The heatmap's numbers, row by row, as the picture prints them."""
    rows = []
    for line in re.findall(r"<TR><TD ALIGN=\"RIGHT\"><FONT POINT-SIZE=\"8\">losses\[\d+\].*?</TR>", source):
        rows.append([float(x) for x in re.findall(r'<FONT POINT-SIZE="7" COLOR="[^"]+">([-\d.e+]+)</FONT>', line)])
    return rows


def test_every_cell_is_a_losss_share_of_its_own_gradient_at_that_state():
    losses, states = per_step_run()
    matrix = diagnostics.lags(losses, states)
    rows = cell_numbers(draw_lags(losses, states, matrix=matrix).source)
    assert len(rows) == len(losses)
    for i, shown in enumerate(rows):
        t = i + 1  # loss i reads h_{i+1}
        expected = [style.number(x, 2) for x in matrix[i, : t + 1] / matrix[i, t]]
        assert [style.number(x, 2) for x in shown] == expected


def test_the_reach_numbers_are_the_median_share_per_lag():
    losses, states = per_step_run()
    matrix = diagnostics.lags(losses, states)
    source = draw_lags(losses, states, matrix=matrix).source
    reach_row = re.search(r'>reach</FONT></TD>(.*?)</TR>', source).group(1)
    shown = [float(x) for x in re.findall(r'<FONT POINT-SIZE="7">([-\d.e+]+)</FONT>', reach_row)]
    T = len(states) - 1
    expected = [np.median([matrix[t - 1, t - lag] / matrix[t - 1, t] for t in range(max(lag, 1), T + 1)])
                for lag in range(T + 1)]
    assert [style.number(x, 2) for x in shown] == [style.number(x, 2) for x in expected]
    # Loss t reaches t steps back at most: the longest lag that at least 4 of the 8 losses reach is 5.
    half = max(lag for lag in range(T + 1) if sum(t >= lag for t in range(1, T + 1)) >= T / 2)
    assert half == 5
    assert (f"median reach {half} time steps back (the longest lag whose median share, over at least half "
            f"the losses, is above 0): "
            f"{style.number(expected[half], 2)}") in source


def test_bars_that_rest_on_fewer_than_three_losses_are_pale():
    losses, states = per_step_run()
    source = draw_lags(losses, states).source
    T = len(states) - 1
    curve = diagnostics.reach(diagnostics.lags(losses, states))
    decades = int(re.search(r"×10<SUP>−(\d+)</SUP>", source).group(1))  # the curve's scale, as labelled
    bar = r'<TD FIXEDSIZE="TRUE" WIDTH="\d+" HEIGHT="\d+" BGCOLOR="{}">'
    for lag in (T - 1, T):  # two losses reach lag T - 1, one reaches lag T: pale
        assert re.search(bar.format(style.washed(style.colour(curve[lag], decades, power=1.0))), source)
    assert re.search(bar.format(style.colour(curve[T - 2], decades, power=1.0)), source)  # three: full colour
    assert "pale bar: fewer than 3 losses reach that lag" in source


def test_one_summed_loss_is_drawn_one_row_per_state_it_reads():
    losses, states = per_step_run()
    total = losses[0]
    for loss in losses[1:]:
        total = total + loss
    source = draw_lags(total, states).source
    assert [int(k) for k in re.findall(r">read at s(\d+)<", source)] == list(range(1, len(states)))
    assert cell_numbers(source.replace("read at s", "losses[0], t=")) == cell_numbers(draw_lags(losses, states).source)


def test_the_legend_says_what_each_mark_encodes_and_that_hooks_are_not_applied():
    losses, states = per_step_run()
    source = draw_lags(losses, states).source
    for words in ("share of a loss's gradient", "the last state loss i reads", "median over losses",
                  "hooks (clipping) are not applied", "does not reach", "log scale"):
        assert words in source


def test_a_long_run_renders_without_numbers_in_its_cells(tmp_path):
    losses, states = per_step_run(T=40)
    picture = draw_lags(losses[::4], states, max_lag=12)
    assert cell_numbers(picture.source) == [[]] * 10
    path = render(picture, tmp_path / "lags.svg")
    assert path.exists() and path.stat().st_size > 1000


def test_a_matrix_of_the_wrong_shape_is_refused():
    losses, states = per_step_run()
    with pytest.raises(ValueError, match="draw_lags: the matrix must be"):
        draw_lags(losses, states, matrix=np.zeros((3, 2)))


def test_the_readmes_lag_view_says_what_its_numbers_are():
    """The README's lag view (docs/make_pictures.py): node values level in the step view of the summed
    loss, while each loss keeps about half its gradient one step back and 5e-4 ten steps back."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "docs"))
    from make_pictures import loss_at_every_step

    losses, states = loss_at_every_step()
    reach = diagnostics.reach(diagnostics.lags(losses, states))
    assert style.number(reach[1], 2) == "0.51" and style.number(reach[10], 1) == "0.0005"
    total = losses[0]
    for loss in losses[1:]:
        total = total + loss
    total.backward()
    norms = [r.grad_norm for r in diagnostics.steps(total, states)]
    assert max(norms) / min(norms) < 3  # level, where each loss alone falls by 2,000x in ten steps
