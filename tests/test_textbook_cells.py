"""``tinygrad-rnn render``'s ops and path views draw the textbook's step (visualize/textbook.py): one
step's W_ih x_t + W_hh h_{t-1} + b with states h_t (and c_t), with the numbers of the fast cell the
rest of the library runs (its hoisted projection, transposes made once, summed biases)."""

from __future__ import annotations

import html
import re

import numpy as np
import pytest

from tinygrad_rnn import nn
from visualize.cli import build_model, main
from visualize.textbook import TextbookCell

CELLS = ("rnn", "lstm", "gru")


def gradients(model) -> dict:
    """Each PyTorch-named parameter's gradient, read off either cell (b's for both biases)."""
    if isinstance(model, TextbookCell):
        if model.kind == "gru":
            biases = {"bias_ih": model.b_ih.grad[:, 0], "bias_hh": model.b_hh.grad[:, 0]}
        else:
            biases = {"bias_ih": model.b.grad[:, 0], "bias_hh": model.b.grad[:, 0]}
        return {"weight_ih": model.W_ih.grad, "weight_hh": model.W_hh.grad, **biases}
    return {name: getattr(model, name).grad for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("options", [
    {}, {"batch": 3, "input_size": 3}, {"clip": 0.05}, {"truncate": 2}, {"init_name": "orthogonal", "radius": 1.5},
], ids=["plain", "batch", "clip", "truncate", "radius"])
def test_the_textbook_step_gives_the_fast_cells_loss_and_gradients(cell, options):
    sizes = {"steps": 5, "hidden": 3, "seed": 4, **options}
    fast_loss, fast_states, fast = build_model(cell, **sizes)
    loss, states, textbook = build_model(cell, **sizes, textbook=True)
    assert isinstance(textbook, TextbookCell) and isinstance(fast, nn.RNNCellBase)
    assert abs(loss.item() - fast_loss.item()) <= 1e-12 * max(1.0, abs(fast_loss.item()))
    for name, grad in gradients(fast).items():
        np.testing.assert_allclose(gradients(textbook)[name], grad, rtol=1e-12, atol=1e-14, err_msg=name)
    # The states are the same numbers, as columns.
    for state, fast_state in zip(states, fast_states):
        for part, fast_part in zip(state if isinstance(state, tuple) else (state,),
                                   fast_state if isinstance(fast_state, tuple) else (fast_state,)):
            np.testing.assert_allclose(part.numpy().T, fast_part.numpy(), rtol=1e-12, atol=1e-14)


def drawn_labels(path) -> tuple[set, set]:
    """(bold names on value boxes, texts of op nodes) in a .dot file the command wrote."""
    source = html.unescape(path.read_text(encoding="utf-8"))
    names = set(re.findall(r"<B>([^<]*)</B>", source))
    ops = set(re.findall(r'label=<([^<>]{1,30})>', source))
    return names, ops


@pytest.mark.parametrize("cell", CELLS)
def test_the_commands_op_view_draws_the_textbook_step(tmp_path, capsys, cell):
    output = tmp_path / "ops.dot"
    assert main(["render", "--cell", cell, "--steps", "3", "--hidden", "2", "-o", str(output)]) == 0
    names, ops = drawn_labels(output)
    for t in (1, 2, 3):
        assert {f"x_{t}", f"h_{t}", f"W_ih x_{t}", f"W_hh h_{t - 1}"} <= names
        if cell == "lstm":
            assert f"c_{t}" in names
    assert {"h_0", "W_ih", "W_hh"} <= names
    assert ("b_ih" in names and "b_hh" in names) if cell == "gru" else "b" in names
    if cell != "gru":
        assert {"W_ih x_1 + W_hh h_0", "a_1"} <= names  # a_t = W_ih x_t + W_hh h_{t-1} + b
    # None of the fast path's machinery: no transposes, no hoisted projection read by row, no reshape, no
    # summed PyTorch biases.
    drawn = " ".join(names | ops)
    for machinery in ("ᵀ", "weight_hh", "weight_ih", "bias_ih", "reshape", "[0]", "[1]", "shared"):
        assert machinery not in drawn.replace("shared parameters", ""), machinery
    title = html.unescape(output.read_text(encoding="utf-8"))
    assert "W_ih x_t + W_hh h_{t−1}" in title or "W_in x_t + b_in" in title
    assert f"{cell.upper()} · 3 time steps · hidden 2" in title  # "time step" for t


def test_the_path_view_from_weight_hh_follows_the_textbook_w_hh(tmp_path, capsys):
    output = tmp_path / "path.dot"
    assert main(["render", "--cell", "lstm", "--steps", "3", "--view", "path", "--source", "weight_hh",
                 "-o", str(output)]) == 0
    names, _ = drawn_labels(output)
    assert {"W_hh", "h_1", "c_3"} <= names and "weight_hhᵀ" not in names


def test_the_step_view_keeps_the_fast_cell():
    _, states, model = build_model("lstm", steps=3, hidden=2)
    assert isinstance(model, nn.LSTMCell) and states[1][0].shape == (1, 2)


@pytest.mark.parametrize("cell", [nn.RNNCell, nn.LSTMCell, nn.GRUCell])
def test_the_op_view_names_each_time_steps_state_h_t_and_c_t_outside_the_command_too(cell):
    from visualize import draw_graph

    outputs, _ = nn.RNN(cell(2, 3, rng=0))(np.random.default_rng(0).normal(size=(12, 1, 2)))
    loss = (outputs[-1] ** 2).sum()
    loss.backward()
    source = html.unescape(draw_graph(loss).source)  # 12 time steps: the unroll wraps into rows
    names = set(re.findall(r"<B>([^<]*)</B>", source))
    assert {f"h_{t}" for t in range(1, 13)} <= names
    if cell is nn.LSTMCell:
        assert {f"c_{t}" for t in range(1, 13)} <= names and "c" not in names and "h" not in names
    ghosts = re.findall(r"<B>([^<]*)</B> ↩", source)  # a state from an earlier row, where the next row uses it
    assert ghosts and all(re.fullmatch(r"[hc]_\d+", name) for name in ghosts), ghosts


def test_the_textbook_cell_names_its_steps_after_the_unrolls_time_steps_every_time():
    textbook = TextbookCell(nn.LSTMCell(2, 3, rng=0))
    inputs = np.random.default_rng(1).normal(size=(3, 1, 2))
    for _ in range(2):  # a second unroll, from a state of its own, starts again at t = 1
        outputs, states = nn.RNN(textbook)(inputs, h0=textbook.initial_state(1), return_states=True)
        assert [h.name for h in outputs] == ["h_1", "h_2", "h_3"] and states[-1][1].name == "c_3"
    outputs, _ = nn.RNN(textbook)(inputs, h0=tuple(part for part in states[-1]))
    assert outputs[0].name == "h_1"
