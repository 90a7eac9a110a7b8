"""The long-lag tasks of tinygrad_rnn.problems: shapes, targets as each paper defines them (computed
again here from the inputs), and the trivial baseline's loss against its formula."""

import math

import numpy as np
import pytest

import tinygrad_rnn as tg
from tinygrad_rnn import nn
from tinygrad_rnn.problems import AddingProblem, CopyMemory, TemporalOrder, copy_memory

TASKS = [AddingProblem(30), AddingProblem(30, variant="hochreiter"), CopyMemory(15), TemporalOrder(40),
         TemporalOrder(60, relevant=3)]
IDS = ["adding-le2015", "adding-hochreiter", "copy", "temporal-order", "temporal-order-3"]


@pytest.mark.parametrize("task", TASKS, ids=IDS)
def test_batch_shapes_and_a_readout_reach_the_loss(task):
    inputs, targets = task.batch(6, rng=0)
    assert inputs.shape == (task.seq_len, 6, task.input_size) and inputs.dtype == np.float64
    cell, readout = nn.RNNCell(task.input_size, 5, rng=0), nn.Linear(5, task.output_size, rng=1)
    hiddens, _ = nn.RNN(cell)(inputs)
    predictions = task.predictions(hiddens, readout)
    expected = (task.seq_len, 6, task.output_size) if task.every_step else (6, task.output_size)
    assert predictions.shape == expected
    loss = task.loss(predictions, targets)
    loss.backward()
    assert loss.size == 1 and cell.weight_hh.grad is not None


def test_adding_target_is_the_sum_of_the_two_marked_values():
    inputs, targets = AddingProblem(50).batch(200, rng=1)
    marked = inputs[:, :, 1] == 1.0
    assert np.all(marked.sum(axis=0) == 2)
    np.testing.assert_allclose(targets, (inputs[:, :, 0] * marked).sum(axis=0))


def test_copy_memory_repeats_the_first_symbols_after_the_delimiter():
    delay, length = 12, 10
    ids, targets = copy_memory(50, delay, rng=2)
    assert ids.shape == targets.shape == (delay + 2 * length, 50)
    assert np.all((ids[:length] >= 1) & (ids[:length] <= 8))  # the message: symbols 1..8
    assert np.all(ids[length + delay - 1] == 9)  # the delimiter, T steps after the message ends
    assert np.all(np.delete(ids, list(range(length)) + [length + delay - 1], axis=0) == 0)  # blanks elsewhere
    np.testing.assert_array_equal(targets[-length:], ids[:length])  # the message, in order, at the end
    assert np.all(targets[:-length] == 0)
    inputs, _ = CopyMemory(delay).batch(50, rng=2)
    np.testing.assert_array_equal(inputs.argmax(axis=-1), ids)  # one-hot over 10 classes


def test_temporal_order_label_reads_the_x_and_y_in_order():
    inputs, labels = TemporalOrder(40).batch(100, rng=3)
    symbols = inputs.argmax(axis=-1)
    for b in range(100):
        relevant = [s for s in symbols[:, b] if s in (4, 5)]  # X = 4, Y = 5
        assert len(relevant) == 2
        assert labels[b] == 2 * (relevant[0] == 5) + (relevant[1] == 5)  # XX=0, XY=1, YX=2, YY=3


@pytest.mark.parametrize("task, formula", [
    (CopyMemory(15), 10 * math.log(8) / 35),
    (TemporalOrder(40), math.log(4)),
    (TemporalOrder(60, relevant=3), math.log(8)),
], ids=["copy", "temporal-order", "temporal-order-3"])
def test_baseline_loss_is_exact_for_the_trivial_answer(task, formula):
    _, targets = task.batch(64, rng=4)
    assert task.baseline_loss() == pytest.approx(formula, rel=1e-12)
    loss = task.loss(tg.Value(task.baseline_predictions(64)), targets)
    assert loss.item() == pytest.approx(formula, rel=1e-9)


@pytest.mark.parametrize("task, formula", [
    (AddingProblem(30), 1 / 6),
    (AddingProblem(30, variant="hochreiter"), (0.9 + 1 - 0.9 / 14) / 3),
], ids=["adding-le2015", "adding-hochreiter"])
def test_adding_baseline_loss_is_the_variance_of_the_sum(task, formula):
    # The mean sum predicted for every sequence: its loss is E[(S - mean)^2], within sampling error.
    _, targets = task.batch(200_000, rng=5)
    loss = task.loss(tg.Value(task.baseline_predictions(200_000)), targets).item()
    assert task.baseline_loss() == pytest.approx(formula, rel=1e-12)
    assert loss == pytest.approx(formula, rel=0.01)


def test_bad_lengths_are_refused_when_the_task_is_made():
    with pytest.raises(ValueError, match="seq_len"):
        TemporalOrder(10)
    with pytest.raises(ValueError, match="too short"):
        AddingProblem(5, variant="hochreiter")
    with pytest.raises(ValueError, match="positive"):
        copy_memory(4, 0, rng=0)
