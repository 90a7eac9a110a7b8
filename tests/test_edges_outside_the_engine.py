"""Edges outside the engine: clipping, optimisers, checkpoints, the command line, pictures, verdicts and
empty batches, each fed what breaks naive code (NaN, inf, huge and empty sizes, hostile files, names
that are only a tab). Each gives PyTorch's answer or one clear error naming what is at fault."""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import shutil
import struct
import subprocess
import tracemalloc
import warnings
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tinygrad_rnn import Value, checkpoint, diagnostics, nn
from tinygrad_rnn.autograd import scope
from tinygrad_rnn.charrnn import CharRNN, sample
from tinygrad_rnn.checkpoint import CheckpointError
from tinygrad_rnn.clip import clip_grad_norm_, clip_grad_value_
from tinygrad_rnn.data import CharVocab
from tinygrad_rnn.diagnostics import verdict
from tinygrad_rnn.optim import SGD, Adagrad, Adam, RMSprop
from visualize import compare_steps, draw_graph, draw_lags, draw_path, draw_steps, preflight, style
from visualize.cli import MAX_JACOBIAN_WIDTH, estimate_render_memory, main

NAN, INF = math.nan, math.inf
DOT = shutil.which("dot")


def with_grads(*grads) -> list[Value]:
    params = []
    for g in grads:
        p = Value(np.zeros(np.shape(g)))
        p.grad = np.array(g, dtype=np.float64)
        params.append(p)
    return params


# ---- 1. clip_grad_norm_: a NaN anywhere makes the total NaN, whatever the order ----------------------

finite = st.floats(-1e3, 1e3, allow_nan=False)
gradient_lists = st.lists(st.lists(finite, min_size=1, max_size=4), min_size=1, max_size=4)


@settings(max_examples=150, deadline=None)
@given(grads=gradient_lists, data=st.data(),
       norm_type=st.sampled_from([INF, -INF, 1.0, 2.0, 3.5]))
def test_a_nan_anywhere_makes_the_total_norm_nan_for_every_norm_type_but_zero(grads, data, norm_type):
    where = data.draw(st.integers(0, len(grads) - 1), label="parameter")
    position = data.draw(st.integers(0, len(grads[where]) - 1), label="position")
    grads[where][position] = NAN
    params = with_grads(*grads)
    before = [p.grad.copy() for p in params]
    with pytest.raises(RuntimeError, match="non-finite"):
        clip_grad_norm_(params, 1.0, norm_type=norm_type, error_if_nonfinite=True)
    for p, g in zip(params, before):  # nothing was scaled
        np.testing.assert_array_equal(p.grad, g)
    assert math.isnan(clip_grad_norm_(params, 1.0, norm_type=norm_type))
    assert all(np.isnan(p.grad).all() for p in params)  # scaled by a NaN coefficient, as PyTorch does


def test_the_inf_norm_is_nan_whether_the_nan_comes_first_or_last():
    # Python's max() keeps its first argument when compared with NaN: max([nan, 1]) is nan, max([1, nan]) is 1.
    for grads in (([NAN], [5.0]), ([5.0], [NAN]), ([1.0, 2.0], [0.5, NAN], [3.0])):
        assert math.isnan(clip_grad_norm_(with_grads(*grads), 1.0, norm_type=INF))


@settings(max_examples=100, deadline=None)
@given(grads=gradient_lists, norm_type=st.sampled_from([INF, -INF, 1.0, 2.0, 3.5]))
def test_the_total_norm_of_finite_gradients_is_the_norm_of_them_all_joined(grads, norm_type):
    joined = np.concatenate([np.asarray(g, dtype=np.float64) for g in grads])
    expected = np.linalg.norm(joined, ord=norm_type)
    assert clip_grad_norm_(with_grads(*grads), 1e9, norm_type=norm_type) == pytest.approx(expected, rel=1e-12)


def test_the_zero_norm_counts_a_nan_as_nonzero_and_stays_finite_as_in_pytorch():
    # PyTorch: vector_norm(g, 0) counts entries != 0 (NaN among them); the total counts the gradients.
    params = with_grads([1.0, 2.0], [NAN, 0.5])
    assert clip_grad_norm_(params, 1.0, norm_type=0.0, error_if_nonfinite=True) == 2.0


@pytest.mark.parametrize("max_norm", [NAN, -1.0, -INF])
def test_a_nan_or_negative_max_norm_is_refused_by_name(max_norm):
    params = with_grads([3.0, 4.0])
    with pytest.raises(ValueError, match=f"clip_grad_norm_: max_norm must be a number >= 0, got {max_norm}"):
        clip_grad_norm_(params, max_norm)
    np.testing.assert_array_equal(params[0].grad, [3.0, 4.0])


def test_a_nan_norm_type_is_refused_by_name():
    with pytest.raises(ValueError, match="clip_grad_norm_: norm_type must be a number"):
        clip_grad_norm_(with_grads([3.0, 4.0]), 1.0, norm_type=NAN)


def test_zero_and_infinite_max_norm_act_as_in_pytorch():
    params = with_grads([3.0, 4.0])
    assert clip_grad_norm_(params, INF) == 5.0
    np.testing.assert_array_equal(params[0].grad, [3.0, 4.0])
    assert clip_grad_norm_(params, 0.0) == 5.0
    np.testing.assert_array_equal(params[0].grad, [0.0, 0.0])


@pytest.mark.parametrize("clip_value", [NAN, -1.0])
def test_clip_grad_value_refuses_a_nan_or_negative_bound(clip_value):
    params = with_grads([3.0, -4.0])
    with pytest.raises(ValueError, match=f"clip_grad_value_: clip_value must be a number >= 0, got {clip_value}"):
        clip_grad_value_(params, clip_value)


def test_clip_grad_value_keeps_a_nan_gradient_nan_as_in_pytorch():
    params = with_grads([3.0, -4.0, NAN])
    clip_grad_value_(params, 1.0)
    np.testing.assert_array_equal(params[0].grad, [1.0, -1.0, NAN])


# ---- 2. optimisers: NaN hyperparameters are refused by name, at construction and on load -------------

FIELDS = [
    (SGD, "lr"), (SGD, "momentum"), (SGD, "weight_decay"), (SGD, "dampening"),
    (Adagrad, "lr"), (Adagrad, "lr_decay"), (Adagrad, "weight_decay"), (Adagrad, "initial_accumulator_value"),
    (Adagrad, "eps"),
    (RMSprop, "lr"), (RMSprop, "alpha"), (RMSprop, "eps"), (RMSprop, "weight_decay"), (RMSprop, "momentum"),
    (Adam, "lr"), (Adam, "eps"), (Adam, "weight_decay"),
]


def param() -> list[Value]:
    return [Value(np.ones(3))]


@pytest.mark.parametrize("optimizer, field", FIELDS)
def test_a_nan_hyperparameter_is_refused_naming_the_optimiser_the_field_and_the_value(optimizer, field):
    with pytest.raises(ValueError, match=rf"^{optimizer.__name__}: .*\b{field} must be .*nan"):
        optimizer(param(), **{field: NAN})


@pytest.mark.parametrize("optimizer, field", [f for f in FIELDS if f[1] != "dampening"])
def test_a_negative_hyperparameter_is_refused_as_pytorch_refuses_it(optimizer, field):
    with pytest.raises(ValueError, match=rf"^{optimizer.__name__}: .*{field} must be >= 0, got -1.0"):
        optimizer(param(), **{field: -1.0})


@pytest.mark.parametrize("optimizer, field", FIELDS)
def test_an_infinite_hyperparameter_is_accepted_as_pytorch_accepts_it(optimizer, field):
    optimizer(param(), **{field: INF})


@pytest.mark.parametrize("betas", [(NAN, 0.9), (0.9, INF), (0.9, 1.0), (-0.1, 0.9), (0.9,), ("a", 0.9), 0.9])
def test_adam_refuses_betas_outside_zero_to_one_including_nan_and_inf(betas):
    with pytest.raises(ValueError, match="Adam: betas must be two numbers in"):
        Adam(param(), betas=betas)


@pytest.mark.parametrize("optimizer", [SGD, Adam])
def test_a_hyperparameter_that_is_not_a_number_is_refused_by_name(optimizer):
    with pytest.raises(ValueError, match=rf"{optimizer.__name__}: lr must be a number, got '0.1'"):
        optimizer(param(), lr="0.1")


@pytest.mark.parametrize("optimizer, field", FIELDS)
def test_load_state_dict_refuses_a_nan_hyperparameter_and_loads_nothing(optimizer, field):
    model = param()
    target = optimizer(model, lr=0.5)
    saved = optimizer(param(), lr=0.25).state_dict()
    saved[f"group.0.{field}"] = np.array(NAN)
    with pytest.raises(ValueError, match=rf"{optimizer.__name__}.load_state_dict: nothing loaded: "
                                         rf"group.0: {field} must be .*nan"):
        target.load_state_dict(saved)
    assert target.param_groups[0]["lr"] == 0.5


@settings(max_examples=60, deadline=None)
@given(values=st.lists(st.sampled_from([NAN, -1.0, 0.0, 0.1, 1e300, INF]), min_size=3, max_size=3))
def test_every_problem_is_listed_in_one_error(values):
    lr, eps, weight_decay = values
    problems = [name for name, v in (("lr", lr), ("eps", eps), ("weight_decay", weight_decay)) if not v >= 0]
    if not problems:
        Adam(param(), lr=lr, eps=eps, weight_decay=weight_decay)
        return
    with pytest.raises(ValueError) as error:
        Adam(param(), lr=lr, eps=eps, weight_decay=weight_decay)
    assert [name for name in ("lr", "eps", "weight_decay") if f"{name} must be" in str(error.value)] == problems


# ---- 3. hostile checkpoints are refused before anything is inflated ----------------------------------


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def manifest(*entries) -> bytes:
    return json.dumps(dict(format=checkpoint.FORMAT, version=checkpoint.VERSION, entries=list(entries))).encode()


def entry(name: str, shape, dtype: str, data: bytes) -> dict:
    return dict(name=name, shape=list(shape), dtype=dtype, sha256=hashlib.sha256(data).hexdigest())


def peak_while(function) -> tuple[BaseException | None, int]:
    """(the exception ``function()`` raised, the most memory Python and numpy held meanwhile)."""
    tracemalloc.start()
    try:
        function()
        raised = None
    except Exception as error:  # noqa: BLE001 - the test looks at which
        raised = error
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return raised, peak


def test_a_compressed_member_is_refused_before_it_is_inflated(tmp_path):
    # 32 MB of zeros as a .npy member, deflated to about 32 kB, with a manifest that vouches for it.
    count = 4 * 2**20
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, np.lib.format.header_data_from_array_1_0(np.zeros(1)) | {
        "shape": (count,)})
    digest = hashlib.sha256(header.getvalue())
    path = tmp_path / "bomb.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("a.npy", "w") as member:
            member.write(header.getvalue())
            zeros = bytes(2**20)
            for _ in range(count * 8 // len(zeros)):
                member.write(zeros)
                digest.update(zeros)
        archive.writestr("manifest.json", json.dumps(dict(
            format=checkpoint.FORMAT, version=checkpoint.VERSION,
            entries=[dict(name="a", shape=[count], dtype="<f8", sha256=digest.hexdigest())])))
    assert path.stat().st_size < 200_000
    raised, peak = peak_while(lambda: checkpoint.load(path))
    assert isinstance(raised, CheckpointError) and "compressed" in str(raised) and str(path) in str(raised)
    assert peak < 2_000_000  # nothing was inflated


def test_a_header_promising_a_huge_array_is_refused_before_numpy_allocates_it(tmp_path):
    header = io.BytesIO()
    np.lib.format.write_array_header_2_0(header, {"descr": "<f8", "fortran_order": False, "shape": (10**10,)})
    data = header.getvalue() + bytes(16)  # an 80 GB array, two numbers of it present
    path = tmp_path / "liar.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("a.npy", data)
        archive.writestr("manifest.json", manifest(entry("a", (10**10,), "<f8", data)))
    raised, peak = peak_while(lambda: checkpoint.load(path))
    assert isinstance(raised, CheckpointError), raised
    assert "header of 'a' describes an array of shape (10000000000,)" in str(raised)
    assert peak < 1_000_000


def duplicate_central_record(data: bytes, member: str, copies: int) -> bytes:
    """The zip ``data`` with the central directory record of ``member`` repeated ``copies`` more times:
    every copy points at the same bytes, which a reader would read once per copy."""
    end = data.rindex(b"PK\x05\x06")
    signature, disk, cd_disk, here, total, size, offset, comment = struct.unpack("<4s4H2LH", data[end:end + 22])
    directory, records, at = data[offset:offset + size], {}, 0
    while at < len(directory):
        name_length, extra_length, comment_length = struct.unpack("<3H", directory[at + 28:at + 34])
        length = 46 + name_length + extra_length + comment_length
        records[directory[at + 46:at + 46 + name_length].decode()] = directory[at:at + length]
        at += length
    directory += records[member] * copies
    tail = struct.pack("<4s4H2LH", signature, disk, cd_disk, here + copies, total + copies, len(directory), offset,
                       comment)
    return data[:offset] + directory + tail + data[end + 22:]


def test_members_that_overlap_to_claim_more_bytes_than_the_file_are_refused(tmp_path):
    path = checkpoint.save(tmp_path / "c.npz", {"a": np.zeros(2**17)})  # a 1 MB member
    path.write_bytes(duplicate_central_record(path.read_bytes(), "a.npy", 100))  # read 101 times: 100 MB
    raised, peak = peak_while(lambda: checkpoint.load(path))
    assert isinstance(raised, CheckpointError) and "more than the file's" in str(raised), raised
    assert peak < 2_000_000


def test_a_manifest_that_lists_a_name_twice_is_damaged(tmp_path):
    data = npy(np.ones(2))
    path = tmp_path / "twice.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("a.npy", data)
        archive.writestr("manifest.json", manifest(entry("a", (2,), "<f8", data), entry("a", (2,), "<f8", data)))
    with pytest.raises(CheckpointError, match="lists a name twice"):
        checkpoint.load(path)


def test_a_recompressed_training_checkpoint_loads_nothing_into_the_model(tmp_path):
    model, source = nn.Linear(3, 2, rng=0), nn.Linear(3, 2, rng=1)
    path = checkpoint.save_training(tmp_path / "run.npz", source, step=3)
    with zipfile.ZipFile(path) as archive:
        contents = {name: archive.read(name) for name in archive.namelist()}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in contents.items():
            archive.writestr(name, data)
    before = model.state_dict()
    with pytest.raises(CheckpointError, match="compressed"):
        checkpoint.load_training(path, model)
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[name])


# ---- 4. long names: the temporary file's name must fit too -----------------------------------------


def name_max(directory) -> int:
    try:
        return os.pathconf(directory, "PC_NAME_MAX")
    except (AttributeError, ValueError, OSError):
        return 255


def test_a_240_character_name_saves_and_loads(tmp_path):
    path = tmp_path / ("c" * 236 + ".npz")
    checkpoint.save(path, {"a": np.arange(3)})
    np.testing.assert_array_equal(checkpoint.load(path)["a"], np.arange(3))
    assert os.listdir(tmp_path) == [path.name]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(stem=st.text(st.sampled_from("aZ9_-é中😀"), min_size=1, max_size=300))
def test_every_name_the_file_system_takes_saves_with_a_temporary_name_that_fits(tmp_path, stem):
    name = stem + ".npz"
    assume(len(os.fsencode(name)) <= name_max(tmp_path))
    path = tmp_path / name
    checkpoint.save(path, {"a": np.ones(2)})
    assert checkpoint.load(path)["a"].tolist() == [1.0, 1.0]
    assert path.name in os.listdir(tmp_path)
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]
    # The longest temporary name this checkpoint can get (a ten-digit pid) fits as well.
    longest = f"{checkpoint._temporary_prefix(path)}{'9' * 10}.{'f' * 12}.tmp"
    assert len(os.fsencode(longest)) <= name_max(tmp_path)
    path.unlink()


def test_long_names_alike_up_to_the_cut_keep_temporaries_of_their_own_and_stale_ones_are_removed(tmp_path):
    first, second = tmp_path / ("x" * 248 + "1.npz"), tmp_path / ("x" * 248 + "2.npz")
    assert checkpoint._temporary_prefix(first) != checkpoint._temporary_prefix(second)
    stale = tmp_path / f"{checkpoint._temporary_prefix(first)}999999999.abcdefabcdef.tmp"  # no such process
    other = tmp_path / f"{checkpoint._temporary_prefix(second)}999999999.abcdefabcdef.tmp"
    stale.write_bytes(b"partial"), other.write_bytes(b"partial")
    checkpoint.save(first, {"a": np.zeros(1)})
    assert not stale.exists() and other.exists()


# ---- 5. the command line: one line and status 2, never a traceback ------------------------------------


@pytest.fixture
def eight_gigabytes(monkeypatch):
    monkeypatch.setattr(preflight, "available_memory", lambda: 8_000_000_000)


def run_main(argv, capsys):
    try:
        code = main([str(a) for a in argv])
    except SystemExit as stop:
        code = stop.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line(code, err, *fragments):
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


RENDER_NUMBERS = ["--steps", "--hidden", "--input", "--batch", "--radius", "--clip", "--truncate", "--seed",
                  "--threads", "--max-nodes"]
NASTY = ["nan", "inf", "-inf", "-1", "0", "1e308", "1e309", "1e-320", str(10**30), str(2**63)]


@pytest.mark.parametrize("flag", RENDER_NUMBERS)
def test_no_numeric_render_flag_ends_in_a_traceback(tmp_path, capsys, eight_gigabytes, flag):
    for value in NASTY:
        code, out, err = run_main(["render", flag, value, "-o", tmp_path / "x.dot"], capsys)
        if code == 0:
            assert "wrote" in out and "Traceback" not in err, (flag, value)
        else:
            assert_one_line(code, err, flag)


@pytest.mark.parametrize("cell, view", [("rnn", "ops"), ("lstm", "path"), ("gru", "ops")])
def test_a_huge_radius_draws_or_is_one_line_naming_the_value(tmp_path, capsys, cell, view):
    # A matmul edge's ‖J‖ is an SVD, which LAPACK scales: it converges at any finite size. What cannot
    # be drawn is a weight_hh whose entries, scaled to that radius, pass the largest float64 number.
    code, out, err = run_main(["render", "--cell", cell, "--view", view, "--radius", "1e308", "-o",
                               tmp_path / "x.dot"], capsys)
    if code == 0:
        assert "wrote" in out and "Traceback" not in err
        assert " nan" not in (tmp_path / "x.dot").read_text()
    else:
        assert_one_line(code, err, "--radius 1e+308", "float64")
    assert "converge" not in err


def test_a_huge_radius_still_draws_the_step_view_while_its_weights_are_finite(tmp_path, capsys):
    code, out, err = run_main(["render", "--view", "steps", "--radius", "1e300", "-o", tmp_path / "x.dot"], capsys)
    assert code == 0, err
    code, _, err = run_main(["render", "--view", "steps", "--radius", "1.7e308", "-o", tmp_path / "x.dot"], capsys)
    assert_one_line(code, err, "--radius", "weight_hh")


def test_an_input_width_whose_jacobian_cannot_be_allocated_is_one_line(tmp_path, capsys, eight_gigabytes):
    code, _, err = run_main(["render", "--input", 10**10, "-o", tmp_path / "x.dot"], capsys)
    assert_one_line(code, err, "--input 10000000000", "memory")  # weight_ih alone: 320 GB
    code, _, err = run_main(["render", "--hidden", MAX_JACOBIAN_WIDTH + 1, "--view", "path", "-o",
                             tmp_path / "x.dot"], capsys)
    assert_one_line(code, err, f"--hidden {MAX_JACOBIAN_WIDTH + 1}", "--view steps")
    code, _, err = run_main(["render", "--cell", "lstm", "--hidden", 600, "--input", 3000, "--view", "ops", "-o",
                             tmp_path / "x.dot"], capsys)
    assert_one_line(code, err, "--input 3000", "--view steps")  # weight_ih: 2,400 x 3,000
    code, _, err = run_main(["render", "--input", 3000, "--view", "ops", "-o", tmp_path / "x.dot"], capsys)
    assert code == 0, err  # weight_ih 4 x 3,000: its SVD is quick


def test_the_render_memory_estimate_covers_the_gram_matrix_of_a_wide_input(tmp_path, capsys):
    tracemalloc.start()
    try:
        code = main(["render", "--input", "1200", "-o", str(tmp_path / "x.dot")])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert code == 0, capsys.readouterr().err
    assert estimate_render_memory("rnn", 4, 4, 1200, 1, "ops") > peak


def test_running_out_of_memory_while_drawing_is_one_line(tmp_path, capsys, monkeypatch):
    def no_memory(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr("visualize.cli.draw_graph", no_memory)
    code, _, err = run_main(["render", "-o", tmp_path / "x.dot"], capsys)
    assert_one_line(code, err, "ran out of memory", "use smaller sizes")


@pytest.mark.parametrize("name", ["a" * 300 + ".svg", "a" * 300 + "/x.svg", "a/" * 2100 + "x.svg"])
def test_an_output_name_too_long_for_the_file_system_is_one_line(tmp_path, capsys, name):
    code, _, err = run_main(["render", "-o", tmp_path / name], capsys)
    assert_one_line(code, err, "-o")
    assert "bytes long" in err


def test_an_output_name_of_exactly_name_max_bytes_is_written(tmp_path, capsys):
    name = "b" * (name_max(tmp_path) - 4) + ".dot"
    code, out, err = run_main(["render", "-o", tmp_path / name], capsys)
    assert code == 0 and (tmp_path / name).is_file(), err


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "fox.txt"
    path.write_text("the quick brown fox jumps over the lazy dog.\n" * 80, encoding="utf-8")
    return path


def train_argv(tmp_path, text_file, *extra):
    return ["train", "--hidden", 8, "--seq", 6, "--batch", 2, "--steps", 2, "--text", text_file,
            "--checkpoint", tmp_path / "run.npz", "--out", tmp_path / "pictures", *extra]


@pytest.mark.parametrize("flag, value", [
    ("--checkpoint", "c" * 300 + ".npz"), ("--out", "o" * 300), ("--checkpoint", "c" * 250 + ".npz"),
])
def test_train_refuses_names_too_long_for_it_before_training(tmp_path, text_file, capsys, flag, value):
    code, out, err = run_main([*train_argv(tmp_path, text_file), flag, tmp_path / value], capsys)
    assert_one_line(code, err, flag)
    assert "bytes long" in err and out == ""


def test_train_saves_a_checkpoint_named_with_240_characters(tmp_path, text_file, capsys, monkeypatch):
    monkeypatch.setattr("visualize.train._pictures", lambda *args: None)  # the pictures are not the point
    name = "r" * 236 + ".npz"
    code, _, err = run_main([*train_argv(tmp_path, text_file), "--checkpoint", tmp_path / name], capsys)
    assert code == 0, err
    assert int(checkpoint.load(tmp_path / name)["meta.step"]) == 2


def test_a_learning_rate_that_makes_training_diverge_is_one_line_and_saves_nothing(tmp_path, text_file, capsys):
    code, out, err = run_main(train_argv(tmp_path, text_file, "--lr", "1e308"), capsys)
    lines = [line for line in err.splitlines() if "error" in line]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert "diverged" in lines[0] and "--lr" in lines[0]
    assert not (tmp_path / "run.npz").exists()


@pytest.mark.parametrize("value", [str(10**20), "1025", "0", "nan"])
def test_a_thread_count_no_blas_takes_is_one_line(tmp_path, capsys, value):
    code, _, err = run_main(["render", "--threads", value, "-o", tmp_path / "x.dot"], capsys)
    assert_one_line(code, err, "--threads")


def test_sampling_refuses_what_it_cannot_start_from_or_draw_with():
    model, vocab = CharRNN(3, 4), CharVocab("abc")
    with pytest.raises(ValueError, match="prompt must hold at least one character"):
        sample(model, vocab, "", 5, np.random.default_rng(0))
    with pytest.raises(ValueError, match="temperature must be a number > 0, got nan"):
        sample(model, vocab, "a", 5, np.random.default_rng(0), temperature=NAN)
    model.head.weight.data = np.full_like(model.head.weight.data, np.nan)
    with pytest.raises(ValueError, match="probabilities are not numbers"):
        sample(model, vocab, "a", 5, np.random.default_rng(0))


# ---- 6. names, scopes and titles of any text render through dot ---------------------------------------

AWKWARD = ["\t", "]", "]]", "", " ", "\t\t", " \t ", "\n", "\r", "\x00", "\x0b", "\ud800", "[", "<B>", "&", "\\",
           '"', "{}", "|", ";", "\u2028", "\ufffe", "\x85"]
texts = st.text(st.one_of(st.characters(), st.sampled_from([c for c in AWKWARD if len(c) == 1])), max_size=5)


def rendered(picture) -> None:
    """``dot`` renders the picture's source (without Graphviz: no text a label cannot hold)."""
    source = picture.source
    if DOT is not None:
        result = subprocess.run([DOT, "-Tsvg"], input=source.encode("utf-8"), capture_output=True, timeout=60)
        assert result.returncode == 0, result.stderr.decode()
    assert "<B></B>" not in source and "<FONT></FONT>" not in source
    assert not any(ch < " " and ch not in "\t\n" for ch in source)


def pictures_named(name: str, where: str, title: str):
    a = Value(np.ones(2), name=name)
    with scope(where), scope(name):
        b = (a * 2.0).sum()
    b.name = title
    cell = nn.RNNCell(2, 2, rng=0)
    outputs, states = nn.RNN(cell)(np.ones((2, 1, 2)), return_states=True)
    loss = outputs[-1].sum()
    loss.backward()
    yield draw_graph(b, title=title)
    yield draw_path(b, a, title=title)
    yield draw_steps(loss, states, title=title, name=name)
    yield compare_steps({title: (loss, states), name + "!": (loss, states, where)}, title=where)
    yield draw_lags(loss, states, title=title)


@pytest.mark.parametrize("text", AWKWARD)
def test_a_name_scope_or_title_of_awkward_text_renders(text):
    for picture in pictures_named(text, text, text):
        rendered(picture)


@settings(max_examples=25, deadline=None)
@given(name=texts, where=texts, title=texts)
def test_names_scopes_and_titles_of_any_text_render(name, where, title):
    for picture in pictures_named(name, where, title):
        rendered(picture)


def test_a_tab_is_drawn_as_a_mark_and_text_of_only_brackets_as_references():
    assert style.text("\t") == "⇥" and style.text("a\tb") == "a⇥b"
    assert style.text("]") == "&#93;" and style.text("]]") == "&#93;&#93;"
    assert style.text("losses[0]") == "losses[0]"  # a "]" among other text reads as it is


# ---- 7. plots: mathtext and lone surrogates in titles and names --------------------------------------
# Each "$" is escaped (as "\$": matplotlib reads a pair as mathematics) and a lone surrogate is replaced.


def rows_of_a_small_run():
    cell = nn.RNNCell(2, 3, rng=0)
    outputs, states = nn.RNN(cell)(np.ones((3, 1, 2)), return_states=True)
    loss = outputs[-1].sum()
    loss.backward()
    return diagnostics.steps(loss, states)


@pytest.mark.parametrize("title", ["$$", "$x^$", "cost: $5 or $6", "\ud800"])
def test_a_plot_title_with_dollars_or_a_lone_surrogate_is_drawn_as_written(title):
    pytest.importorskip("matplotlib")
    from tinygrad_rnn.diagnostics.plots import plot_steps

    figure = plot_steps(rows_of_a_small_run(), title=title)
    for form in ("png", "svg"):
        figure.savefig(io.BytesIO(), format=form)
    shown = figure.axes[0].get_title()
    assert "$" not in shown.replace("\\$", "")  # every dollar escaped: drawn as a dollar, never as mathtext
    assert shown.replace("\\$", "$") == title.replace("\ud800", "\ufffd")


def test_a_monitor_plot_with_dollars_in_its_names_and_title_is_drawn():
    pytest.importorskip("matplotlib")
    from tinygrad_rnn.diagnostics import Monitor

    model = nn.Linear(2, 1, rng=0)
    model.__dict__["$$"] = model.__dict__.pop("weight")  # a parameter named "$$"
    monitor = Monitor(model)
    x = Value(np.ones((1, 2)))
    loss = (x @ model.__dict__["$$"].T).sum()
    loss.backward()
    monitor.after_backward(loss)
    monitor.plot(title="$x^$").savefig(io.BytesIO(), format="png")


# ---- 8. verdict: the list form agrees with the rows --------------------------------------------------


def test_a_list_of_no_gradients_is_no_gradient_as_its_rows_are():
    with pytest.deprecated_call(match="pass the rows of diagnostics.steps"):
        assert verdict([None, None]) == "no gradient"
    rows = diagnostics.steps(None, [Value(np.ones(2)), Value(np.ones(2))])
    assert verdict(rows) == "no gradient"


@settings(max_examples=40, deadline=None)
@given(scale=st.floats(0.05, 4.0), steps=st.integers(1, 12), seed=st.integers(0, 1000),
       cell=st.sampled_from(["rnn", "gru", "identity"]), backward=st.booleans())
def test_the_list_of_norms_gets_the_verdict_of_its_rows(scale, steps, seed, cell, backward):
    rng = np.random.default_rng(seed)
    model = (nn.GRUCell(2, 3, rng=rng) if cell == "gru" else
             nn.RNNCell(2, 3, rng=rng, nonlinearity="identity" if cell == "identity" else "tanh"))
    model.weight_hh.data = model.weight_hh.data * scale
    outputs, states = nn.RNN(model)(rng.normal(size=(steps, 1, 2)), return_states=True)
    loss = (outputs[-1] ** 2).sum()
    if backward:
        loss.backward()
    rows = diagnostics.steps(loss if backward else None, states)
    expected = verdict(rows)
    assume(expected != "frozen")  # a list of norms holds nothing about the weights
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        assert verdict([r.grad_norm for r in rows]) == expected


@pytest.mark.parametrize("norms, expected", [
    ([1.0, 0.0], "stable"),  # a gradient only at s_0: one state holds it, nothing to compare (as the rows)
    ([0.0, 0.0], "no gradient"), ([0.0, 1.0], "vanishing"), ([None, 1e-6, 1.0], "vanishing"),
    ([1e300, 1e-300], "exploding"), ([NAN, 1.0], "exploding"), ([], "no gradient"),
])
def test_the_list_form_follows_the_row_rule(norms, expected):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        assert verdict(norms) == expected


# ---- 9. an empty batch: empty outputs, as PyTorch ----------------------------------------------------

CELLS = [nn.RNNCell, nn.LSTMCell, nn.GRUCell]


@settings(max_examples=30, deadline=None)
@given(cell=st.sampled_from(CELLS), steps=st.integers(1, 4), inputs=st.integers(0, 3), hidden=st.integers(1, 3),
       form=st.sampled_from(["array", "value", "list"]), truncate=st.sampled_from([None, 1, 2]))
def test_an_rnn_on_an_empty_batch_returns_empty_outputs_and_zero_gradients(cell, steps, inputs, hidden, form,
                                                                           truncate):
    model = cell(inputs, hidden, rng=0)
    x = np.zeros((steps, 0, inputs))
    given_inputs = Value(x) if form == "value" else list(x) if form == "list" else x
    outputs, states = nn.RNN(model, truncate=truncate)(given_inputs, return_states=True)
    assert len(outputs) == steps and all(o.shape == (0, hidden) for o in outputs)
    assert all(p.shape == (0, hidden) for s in states for p in (s if isinstance(s, tuple) else (s,)))
    sum(o.sum() for o in outputs).backward()
    for name, p in model.named_parameters():
        assert p.grad is None or (np.shape(p.grad) == p.shape and not np.any(p.grad)), name
    if form == "value":
        assert given_inputs.grad.shape == x.shape


@pytest.mark.parametrize("cell", CELLS)
def test_a_cell_on_an_empty_batch_returns_an_empty_state(cell):
    state = cell(3, 4, rng=0)(np.zeros((0, 3)))
    assert all(p.shape == (0, 4) for p in (state if isinstance(state, tuple) else (state,)))


def test_linear_on_an_empty_batch_of_sequences_returns_empty_outputs():
    layer = nn.Linear(3, 2, rng=0)
    x = Value(np.zeros((4, 0, 3)))
    y = layer(x)
    assert y.shape == (4, 0, 2)
    y.sum().backward()
    assert x.grad.shape == (4, 0, 3) and not np.any(layer.weight.grad)


@pytest.mark.parametrize("make, message", [
    (lambda: nn.RNNCell(3, 0), "RNNCell: hidden_size must be at least 1, got 0"),
    (lambda: nn.LSTMCell(-1, 4), "LSTMCell: input_size must be at least 0, got -1"),
    (lambda: nn.GRUCell(3.5, 4), "GRUCell: input_size must be a whole number, got 3.5"),
    (lambda: nn.Linear(2, -1), "Linear: out_features must be at least 0, got -1"),
    (lambda: nn.Embedding(True, 2), "Embedding: num_embeddings must be a whole number, got True"),
    (lambda: nn.LayerNorm((4,)), r"LayerNorm: normalized_shape must be a whole number, got \(4,\)"),
    (lambda: nn.BatchNorm1d(-2), "BatchNorm1d: num_features must be at least 0, got -2"),
])
def test_a_size_that_is_not_one_is_refused_naming_the_module_and_the_argument(make, message):
    with pytest.raises((ValueError, TypeError), match=message):
        make()


def test_a_linear_layer_with_no_inputs_starts_at_zero_as_in_pytorch():
    layer = nn.Linear(0, 3, rng=0)
    assert layer.weight.shape == (3, 0) and not np.any(layer.bias.data)
    assert layer(np.zeros((2, 0))).shape == (2, 3)


# ---- siblings: other NaN settings that would fill a model with NaN --------------------------------------


@pytest.mark.parametrize("make, message", [
    (lambda: nn.init.normal_(Value(np.ones((2, 2))), 0.0, NAN), "normal_: mean must be a finite number"),
    (lambda: nn.init.uniform_(Value(np.ones((2, 2))), NAN, 1.0), "uniform_: the bounds must be finite numbers"),
    (lambda: nn.init.xavier_uniform_(Value(np.ones((2, 2))), gain=NAN), "uniform_: the bounds must be finite"),
    (lambda: nn.init.orthogonal_(Value(np.ones((2, 2))), gain=NAN), "orthogonal_: gain must be a finite number"),
    (lambda: nn.init.scale_spectral_radius_(Value(np.eye(2)), NAN), "radius must be a number >= 0, got nan"),
    (lambda: nn.init.scale_spectral_radius_(Value(np.eye(2)), -1.0), "radius must be a number >= 0, got -1.0"),
    (lambda: nn.LayerNorm(3, eps=NAN), "LayerNorm: eps must be a number, got nan"),
    (lambda: nn.BatchNorm1d(3, momentum=NAN), "BatchNorm1d: eps and momentum must be numbers"),
])
def test_a_nan_setting_that_would_fill_a_model_with_nan_is_refused_by_name(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_a_bnrnn_cell_refuses_nan_settings():
    from tinygrad_rnn.nn.batchnorm_rnn import BNRNNCell

    with pytest.raises(ValueError, match="BNRNNCell: gamma, eps and momentum must be numbers"):
        BNRNNCell(2, 3, gamma=NAN)


def test_a_nan_contribution_to_the_weights_is_exploding_not_stable():
    rows = [diagnostics.StepRow(0, 1.0, None, None, None, None, False),
            diagnostics.StepRow(1, 1.0, 1.0, 1.0, "rows", None, False, contribution=NAN)]
    assert verdict(rows) == "exploding"


def test_an_lstm_op_view_wrapped_into_rows_of_one_step_draws():
    # Values repeated in a later row are kept by identity: == on a Value compares its numbers.
    cell = nn.LSTMCell(2, 3, rng=0)
    outputs, states = nn.RNN(cell)(np.ones((3, 1, 2)), return_states=True)
    loss = outputs[-1].sum()
    loss.backward()
    rendered(draw_graph(loss, per_row=1))
