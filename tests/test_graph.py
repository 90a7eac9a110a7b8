"""tinygrad_rnn.graph, the one door through which pictures and diagnostics read a graph: time steps
from scopes, cuts and clip records from notes, the nodes of each step, and products through them."""

import numpy as np
import pytest

import tinygrad_rnn as tg
from tinygrad_rnn import Value, graph, nn, recurrence
from tinygrad_rnn.clip import clip_norm


def test_time_step_and_inner_scope_come_from_the_scope_a_node_was_made_in():
    x = Value(1.0)
    with tg.scope("encoder"), tg.scope(recurrence.step_scope(3)), tg.scope("forget gate"):
        y = x * 2.0
    with tg.scope("t=4"):
        z = y * 2.0
    assert recurrence.time_step(y) == recurrence.TimeStep("encoder", 3) and recurrence.inner_scope(y) == "forget gate"
    assert recurrence.time_step(y).scope == "encoder/t=3"
    assert recurrence.time_step(z) == recurrence.TimeStep("", 4) and recurrence.inner_scope(z) == ""
    assert recurrence.time_step(x) is None and recurrence.inner_scope(x) == ""


def test_cuts_and_clip_records_are_read_as_typed_values():
    h = Value(np.ones(3))
    assert not recurrence.is_cut(h) and recurrence.clip_record(h) is None
    cut = recurrence.mark_cut(h.detach())
    assert recurrence.is_cut(cut) and not recurrence.is_cut(h)
    y = h * 4.0
    y.register_hook(clip_norm(1.0))
    y.sum().backward()
    record = recurrence.clip_record(y)
    assert record == recurrence.ClipRecord(norm_before=pytest.approx(np.sqrt(3)), norm_after=pytest.approx(1.0), fired=True)


def test_the_nodes_of_a_step_lie_between_its_two_states_and_include_the_lstm_path_from_c_to_h():
    cell = nn.LSTMCell(2, 3, rng=0)
    _, states = nn.RNN(cell)(np.ones((3, 1, 2)), return_states=True)
    step = recurrence.step_graph(states[2], states[1])
    assert step.connected and not step.cut
    h2, c2 = states[2]
    assert {id(n) for n in step.nodes} >= {id(h2), id(c2)}
    inside = {id(n) for n in step.nodes}
    assert any(e.parent is c2 and id(e.child) in inside for e in step.edges)  # c_2 -> tanh -> h_2
    assert not any(n is cell.weight_hh or n.op is None for n in step.nodes)  # parameters are outside


def test_one_pass_over_the_steps_meets_every_node_once():
    cell = nn.GRUCell(2, 4, rng=0)
    _, states = nn.RNN(cell)(np.ones((50, 2, 2)), return_states=True)
    steps = recurrence.step_graphs(states)
    met = [id(n) for step in steps for n in step.fresh]
    assert len(met) == len(set(met))  # linear in T: no node is walked twice
    assert len(met) <= len(graph.walk(states[-1]).nodes)


def test_a_step_that_reads_an_older_state_is_differentiated_with_respect_to_the_previous_one_only():
    W = Value(np.eye(2) * 0.5)
    states = [Value(np.ones((1, 2)), requires_grad=False)]
    for t in range(1, 5):
        with tg.scope(recurrence.step_scope(t)):
            older = states[max(t - 3, 0)]  # attention-like: reads s_{t-3} too
            states.append((states[-1] @ W + older * 0.1).tanh())
    step = recurrence.step_graph(states[4], states[3])
    (g,) = step.vjp([np.ones((1, 2))])
    h = states[4].data
    np.testing.assert_allclose(g, ((1 - h**2) @ W.data.T), rtol=1e-12)  # d/ds_3 only


def test_the_vjp_through_a_step_leaves_gradients_and_hooks_alone():
    cell = nn.RNNCell(2, 3, rng=0)
    calls = []
    outputs, states = nn.RNN(cell, hidden_hook=lambda g: calls.append(1))(np.ones((2, 1, 2)), return_states=True)
    outputs[-1].sum().backward()
    before = [s.grad.copy() for s in states[1:]]
    calls.clear()
    recurrence.step_graph(states[2], states[1]).vjp([np.ones((1, 3))])
    assert calls == [] and all(np.array_equal(s.grad, b) for s, b in zip(states[1:], before))


def test_count_nodes_stops_counting_past_the_limit():
    x = Value(1.0)
    y = x
    for _ in range(100):
        y = y * 1.0
    assert graph.count_nodes(y, 10) == 11 and graph.count_nodes(y, 1000) == 201


def test_the_names_moved_to_recurrence_are_still_found_in_graph_with_a_warning():
    for name in ("time_step", "state_parts", "step_graphs", "StepGraph", "clip_record", "mark_cut"):
        with pytest.deprecated_call(match=f"tinygrad_rnn.graph.{name} moved to tinygrad_rnn.recurrence.{name}"):
            assert getattr(graph, name) is getattr(recurrence, name)
    with pytest.raises(AttributeError):
        graph.no_such_name  # noqa: B018
