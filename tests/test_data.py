"""Data: character corpus, (T, B) windows, the adding and temporal order problems."""

from __future__ import annotations

import numpy as np
import pytest

from tinygrad_rnn.data import (
    TEMPORAL_ORDER_SYMBOLS,
    CharCorpus,
    CharVocab,
    adding_problem,
    default_text,
    load_text,
    one_hot,
    random_windows,
    sequential_windows,
    temporal_order,
)

# ---- corpus -------------------------------------------------------------------------------------


def test_default_corpus_is_standard_library_source_found_at_run_time():
    import textwrap

    text = default_text(5_000)
    assert len(text) == 5_000
    with open(textwrap.__file__, encoding="utf-8") as file:
        assert text == file.read()[:5_000]


def test_default_corpus_joins_modules_up_to_the_limit():
    text = default_text(60_000)
    assert len(text) == 60_000 and "def " in text and "import " in text


def test_vocab_encode_decode_round_trip():
    text = "hello, world\n\tÜñí"
    vocab = CharVocab(text)
    ids = vocab.encode(text)
    assert ids.dtype == np.int64 and vocab.decode(ids) == text
    assert vocab.chars == sorted(set(text)) and len(vocab) == len(set(text))


def test_vocab_names_an_unknown_character():
    with pytest.raises(KeyError, match="'z' is not in the vocabulary"):
        CharVocab("abc").encode("abz")


def test_corpus_from_any_text_file(tmp_path):
    path = tmp_path / "poem.txt"
    path.write_text("the cat sat on the mat\n", encoding="utf-8")
    corpus = CharCorpus.from_file(path)
    assert corpus.vocab.decode(corpus.ids) == "the cat sat on the mat\n"
    assert len(corpus.vocab) == len(set("the cat sat on the mat\n"))


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.txt"):
        load_text(tmp_path / "nowhere.txt")


def test_split_holds_out_the_end():
    corpus = CharCorpus("abcdefghij" * 10)
    train, valid = corpus.split(0.2)
    assert len(valid) == 20 and np.array_equal(np.concatenate([train, valid]), corpus.ids)


def test_block_split_holds_out_every_nth_block_across_the_text():
    corpus = CharCorpus("".join(chr(97 + i % 26) for i in range(1000)))
    train, valid = corpus.split(0.25, block=10)
    assert len(valid) == 250 and len(train) == 750
    positions = np.flatnonzero((np.arange(1000) // 10) % 4 == 3)
    assert np.array_equal(valid, corpus.ids[positions]) and positions[0] == 30 and positions[-1] == 999


def test_one_hot_puts_a_single_one_at_each_id():
    ids = np.array([[2, 0], [1, 2]])
    coded = one_hot(ids, 3, dtype=np.float32)
    assert coded.shape == (2, 2, 3) and coded.dtype == np.float32
    assert np.array_equal(coded.argmax(-1), ids) and np.array_equal(coded.sum(-1), np.ones((2, 2)))
    with pytest.raises(ValueError, match=r"one_hot: ids must lie in \[0, 3\)"):
        one_hot([3], 3)


# ---- windows ------------------------------------------------------------------------------------


def test_random_window_targets_are_inputs_shifted_one_ahead():
    ids = np.arange(1000) * 7 % 101
    inputs, targets = random_windows(ids, seq_len=25, batch_size=8, rng=0)
    assert inputs.shape == targets.shape == (25, 8)
    for b in range(8):
        # Every column is a contiguous run of the text, and its target run starts one later.
        matches = [s for s in range(len(ids) - 25) if np.array_equal(ids[s : s + 25], inputs[:, b])]
        assert matches and any(np.array_equal(ids[s + 1 : s + 26], targets[:, b]) for s in matches)


def test_random_windows_repeat_with_the_same_seed_and_differ_with_another():
    ids = np.arange(500)
    assert np.array_equal(random_windows(ids, 10, 4, 1)[0], random_windows(ids, 10, 4, 1)[0])
    assert not np.array_equal(random_windows(ids, 10, 4, 1)[0], random_windows(ids, 10, 4, 2)[0])


def test_random_windows_reach_the_last_character():
    ids = np.arange(12)
    seen = set()
    rng = np.random.default_rng(0)
    for _ in range(200):
        _, targets = random_windows(ids, 5, 3, rng)
        seen.update(targets.ravel().tolist())
    assert seen == set(range(1, 12))


def test_sequential_windows_continue_each_stream_where_the_last_stopped():
    ids = np.arange(103)
    windows = list(sequential_windows(ids, seq_len=5, batch_size=4))
    stream = (103 - 1) // 4  # 25 characters per stream
    assert len(windows) == stream // 5
    columns = np.concatenate([inputs for inputs, _ in windows])  # (25, 4)
    assert np.array_equal(columns, ids[: 4 * stream].reshape(4, stream).T)
    for inputs, targets in windows:
        assert np.array_equal(targets, inputs + 1)


def test_windows_refuse_text_shorter_than_one_window():
    with pytest.raises(ValueError, match="a window of 10 steps needs 11 characters, got 5"):
        random_windows(np.arange(5), 10, 2, rng=0)
    with pytest.raises(ValueError, match="fewer than one window"):
        next(sequential_windows(np.arange(30), 10, 8))


def test_rng_must_be_a_seed_or_generator():
    with pytest.raises(TypeError, match="seed"):
        random_windows(np.arange(50), 5, 2, rng=None)


# ---- adding problem -----------------------------------------------------------------------------


def test_adding_problem_hochreiter_marks_two_steps_and_targets_their_sum():
    inputs, targets = adding_problem(batch_size=500, seq_len=40, rng=0)
    assert inputs.shape == (40, 500, 2) and targets.shape == (500,)
    values, markers = inputs[..., 0], inputs[..., 1]
    assert values.min() >= -1.0 and values.max() <= 1.0
    marked = markers == 1.0
    assert np.all(marked.sum(axis=0) == 2)
    assert np.allclose(targets, np.where(marked, values, 0.0).sum(axis=0))
    positions = np.sort(np.argwhere(marked.T)[:, 1].reshape(500, 2), axis=1)
    assert positions[:, 1].max() <= 40 // 2 - 1  # both within the first T/2 - 1 steps (0-based)
    assert np.all(positions[:, 0] < 10)  # one of them among the first ten
    # The first and last steps carry -1 unless marked; every other unmarked step carries 0.
    assert np.all(markers[-1] == -1.0) and np.all((markers[0] == -1.0) | marked[0])
    assert set(np.unique(markers[1:-1])) == {0.0, 1.0}


def test_adding_problem_zeroes_a_marked_first_step():
    inputs, targets = adding_problem(batch_size=2000, seq_len=30, rng=1)
    first_marked = inputs[0, :, 1] == 1.0
    assert first_marked.any() and np.all(inputs[0, first_marked, 0] == 0.0)


def test_adding_problem_le2015_marks_one_step_in_each_half():
    inputs, targets = adding_problem(batch_size=300, seq_len=50, rng=2, variant="le2015", dtype=np.float32)
    assert inputs.dtype == targets.dtype == np.float32
    values, markers = inputs[..., 0], inputs[..., 1]
    assert values.min() >= 0.0 and values.max() <= 1.0
    assert np.all(markers[:25].sum(axis=0) == 1) and np.all(markers[25:].sum(axis=0) == 1)
    assert np.allclose(targets, (values * markers).sum(axis=0), rtol=1e-6)


def test_adding_problem_target_has_the_sum_s_spread():
    # X1 + X2 with X uniform on [-1, 1]: mean 0, variance 2/3 (a few sequences have X1 = 0).
    _, targets = adding_problem(batch_size=20_000, seq_len=100, rng=3)
    assert abs(targets.mean()) < 0.03 and abs(targets.var() - 2 / 3) < 0.05


# ---- temporal order -----------------------------------------------------------------------------


@pytest.mark.parametrize("relevant", [2, 3])
def test_temporal_order_label_reads_the_x_y_order(relevant):
    symbols, labels = temporal_order(batch_size=400, seq_len=100, rng=4, relevant=relevant)
    assert symbols.shape == (100, 400) and labels.shape == (400,)
    x, y = TEMPORAL_ORDER_SYMBOLS.index("X"), TEMPORAL_ORDER_SYMBOLS.index("Y")
    assert np.all(symbols[0] == TEMPORAL_ORDER_SYMBOLS.index("E"))
    assert np.all(symbols[-1] == TEMPORAL_ORDER_SYMBOLS.index("B"))
    for b in range(400):
        relevant_symbols = [s for s in symbols[:, b] if s in (x, y)]
        assert len(relevant_symbols) == relevant
        assert labels[b] == int("".join("1" if s == y else "0" for s in relevant_symbols), 2)
    assert set(labels.tolist()) == set(range(2**relevant))


def test_temporal_order_relevant_positions_follow_the_paper():
    symbols, _ = temporal_order(batch_size=300, seq_len=100, rng=5)
    _, steps = np.nonzero(symbols.T[:, 1:-1] >= 4)  # X or Y inside the sequence, batch by batch
    positions = steps.reshape(300, 2) + 1
    assert positions[:, 0].min() >= 10 and positions[:, 0].max() <= 20
    assert positions[:, 1].min() >= 50 and positions[:, 1].max() <= 60


def test_temporal_order_one_hot_gives_eight_inputs():
    symbols, _ = temporal_order(batch_size=3, seq_len=30, rng=6)
    assert one_hot(symbols, len(TEMPORAL_ORDER_SYMBOLS)).shape == (30, 3, 8)
