"""Checkpoints: any names round-trip, damaged files never load short, saves are atomic, loads all or nothing."""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tinygrad_rnn import checkpoint, nn
from tinygrad_rnn.checkpoint import CheckpointError
from tinygrad_rnn.optim import SGD, Adam

ROOT = Path(__file__).resolve().parents[1]


class Small(nn.Module):
    """A few layers with parameters and buffers: what a real checkpoint holds, in a few kilobytes."""

    def __init__(self, seed=0, dtype=np.float32):
        rng = np.random.default_rng(seed)
        self.cell = nn.LSTMCell(3, 4, rng=rng, dtype=dtype)
        self.norm = nn.BatchNorm1d(4, dtype=dtype)
        self.head = nn.Linear(4, 2, rng=rng, dtype=dtype)


def trained(seed=0):
    """A Small model and an Adam that has taken two steps (so it has buffers to save)."""
    model = Small(seed)
    optimizer = Adam(model.parameters(), lr=0.01)
    for k in range(2):
        for p in model.parameters():
            p.grad = np.full(p.shape, 0.1 * (k + 1), dtype=np.float32)
        optimizer.step()
    return model, optimizer


def assert_same_entries(loaded: dict, expected: dict):
    assert list(loaded) == list(expected)
    for name, value in expected.items():
        value = np.asarray(value)
        assert loaded[name].dtype == value.dtype and loaded[name].shape == value.shape, name
        assert np.array_equal(loaded[name], value), name


def members(path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def rewrite(path, contents: dict[str, bytes]):
    """Write ``contents`` as a fresh zip (valid CRCs): damage that the zip format itself cannot see."""
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in contents.items():
            archive.writestr(name, data)


# ---- names and format ---------------------------------------------------------------------------


def test_checkpoint_round_trip_keeps_arrays_numbers_and_strings(tmp_path):
    arrays = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "step": 41, "note": "hello"}
    path = checkpoint.save(tmp_path / "run" / "ckpt.npz", arrays)
    loaded = checkpoint.load(path)
    assert loaded["w"].dtype == np.float32 and np.array_equal(loaded["w"], arrays["w"])
    assert loaded["step"].item() == 41 and loaded["note"].item() == "hello"


@pytest.mark.parametrize("name", ["file", "allow_pickle", "", "a/b", "../up", "x.npy", "manifest.json",
                                  "arr_0", "100%", "nul\x00byte", "lone \ud800 surrogate", "ünï cödé"])
def test_names_that_numpy_savez_would_take_as_its_own_arguments_round_trip(tmp_path, name):
    arrays = {name: np.arange(3.0), "other": np.ones(2)}
    assert_same_entries(checkpoint.load(checkpoint.save(tmp_path / "c.npz", arrays)), arrays)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(names=st.lists(st.text(max_size=12), min_size=1, max_size=6, unique=True))
def test_any_string_names_round_trip_in_order(tmp_path, names):
    arrays = {name: np.full(i + 1, i, dtype=np.int16) for i, name in enumerate(names)}
    assert_same_entries(checkpoint.load(checkpoint.save(tmp_path / "c.npz", arrays)), arrays)


def test_checkpoint_is_an_npz_that_numpy_reads_with_a_manifest_of_every_entry(tmp_path):
    arrays = {"model.head.weight": np.eye(2, dtype=np.float32), "a/b": np.arange(3)}
    path = checkpoint.save(tmp_path / "c.npz", arrays)
    with np.load(path, allow_pickle=False) as archive:
        assert np.array_equal(archive["model.head.weight"], arrays["model.head.weight"])
        assert np.array_equal(archive["a%2Fb"], arrays["a/b"])  # member names are percent-quoted
    contents = members(path)
    manifest = json.loads(contents["manifest.json"])
    assert [(e["name"], e["shape"], e["dtype"]) for e in manifest["entries"]] == [
        ("model.head.weight", [2, 2], "<f4"), ("a/b", [3], np.dtype(int).str)
    ]
    for entry in manifest["entries"]:
        member = entry["name"].replace("/", "%2F") + ".npy"
        assert entry["sha256"] == hashlib.sha256(contents[member]).hexdigest()


def test_same_arrays_give_the_same_bytes(tmp_path):
    arrays = {"w": np.arange(4.0), "note": "x"}
    first = checkpoint.save(tmp_path / "a.npz", arrays).read_bytes()
    assert checkpoint.save(tmp_path / "b.npz", arrays).read_bytes() == first


def test_names_must_be_strings(tmp_path):
    with pytest.raises(TypeError, match="names must be strings, got 3"):
        checkpoint.save(tmp_path / "c.npz", {3: np.ones(1)})


# ---- without pickle -----------------------------------------------------------------------------


def test_failed_save_keeps_the_previous_checkpoint(tmp_path):
    path = tmp_path / "ckpt.npz"
    checkpoint.save(path, {"a": np.ones(3)})
    with pytest.raises(TypeError, match="object array"):
        checkpoint.save(path, {"a": np.array([{"x": 1}], dtype=object)})
    assert np.array_equal(checkpoint.load(path)["a"], np.ones(3)) and os.listdir(tmp_path) == ["ckpt.npz"]


def test_checkpoint_load_refuses_pickled_objects(tmp_path):
    path = checkpoint.save(tmp_path / "evil.npz", {"a": np.zeros(1)})
    contents = members(path)
    pickled = io.BytesIO()
    np.save(pickled, np.array([{"x": 1}], dtype=object), allow_pickle=True)  # someone else's, with pickle
    manifest = json.loads(contents["manifest.json"])
    manifest["entries"][0].update(shape=[1], dtype="|O", sha256=hashlib.sha256(pickled.getvalue()).hexdigest())
    rewrite(path, {"a.npy": pickled.getvalue(), "manifest.json": json.dumps(manifest).encode()})
    with pytest.raises(CheckpointError, match=r"evil\.npz .*allow_pickle"):
        checkpoint.load(path)


def test_an_npz_from_numpy_savez_is_refused_with_the_way_to_convert_it(tmp_path):
    path = tmp_path / "plain.npz"
    np.savez(path, a=np.ones(2))
    with pytest.raises(CheckpointError, match=r"plain\.npz has no manifest.json.*checkpoint.save\(path, dict\("):
        checkpoint.load(path)


# ---- damaged files ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_checkpoint(tmp_path_factory):
    """The bytes and entries of a checkpoint of a few layers, an optimiser and some extras."""
    model, optimizer = trained()
    path = checkpoint.save_training(tmp_path_factory.mktemp("ckpt") / "small.npz", model, optimizer,
                                    step=2, cell="lstm")
    return path.read_bytes(), checkpoint.load(path)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_flipped_byte_raises_or_loads_exactly_the_original_entries(tmp_path, small_checkpoint, data):
    original, entries = small_checkpoint
    offset = data.draw(st.integers(0, len(original) - 1), label="offset")
    flip = data.draw(st.integers(1, 255), label="xor")
    damaged = bytearray(original)
    damaged[offset] ^= flip
    path = tmp_path / "damaged.npz"
    path.write_bytes(damaged)
    try:
        loaded = checkpoint.load(path)
    except CheckpointError as error:
        assert str(path) in str(error)
    else:  # the byte sat in a field the reader ignores (a timestamp, say): nothing may have changed
        assert_same_entries(loaded, entries)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_truncated_checkpoint_never_loads(tmp_path, small_checkpoint, data):
    original, _ = small_checkpoint
    length = data.draw(st.integers(0, len(original) - 1), label="length")
    path = tmp_path / "short.npz"
    path.write_bytes(original[:length])
    with pytest.raises(CheckpointError, match=r"short\.npz"):
        checkpoint.load(path)


def test_every_single_byte_flip_is_caught_or_harmless(tmp_path):
    # Two layers: every kind of byte a checkpoint has (zip headers, central directory, manifest,
    # .npy headers and data), few enough of them to try each offset.
    entries = nn.Sequential(nn.Linear(3, 2, rng=0), nn.Linear(2, 1, rng=1)).state_dict()
    original = checkpoint.save(tmp_path / "two_layers.npz", entries).read_bytes()
    path, caught = tmp_path / "damaged.npz", 0
    for offset in range(len(original)):
        damaged = bytearray(original)
        damaged[offset] ^= 0xFF
        path.write_bytes(damaged)
        try:
            assert_same_entries(checkpoint.load(path), entries)
        except CheckpointError:
            caught += 1
    assert caught > 0.8 * len(original)  # the rest sit in header fields never read (dates, attributes)


def test_a_member_missing_from_the_archive_is_an_error(tmp_path):
    path = checkpoint.save(tmp_path / "c.npz", {"a": np.ones(2), "b": np.zeros(2)})
    contents = members(path)
    del contents["b.npy"]
    rewrite(path, contents)
    with pytest.raises(CheckpointError, match=r"c\.npz is damaged: its members are not the ones its manifest lists"):
        checkpoint.load(path)


def test_a_changed_member_with_a_valid_zip_crc_fails_its_sha256(tmp_path):
    path = checkpoint.save(tmp_path / "c.npz", {"a": np.ones(2), "b": np.zeros(2)})
    contents = members(path)
    changed = io.BytesIO()
    np.save(changed, np.full(2, 7.0))
    contents["b.npy"] = changed.getvalue()
    rewrite(path, contents)
    with pytest.raises(CheckpointError, match=r"c\.npz is damaged: 'b' fails its sha256 check"):
        checkpoint.load(path)


# ---- atomic saves -------------------------------------------------------------------------------


def test_checkpoint_save_leaves_no_temporary_file_and_replaces_old(tmp_path):
    path = tmp_path / "ckpt.npz"
    checkpoint.save(path, {"a": np.zeros(2)})
    checkpoint.save(path, {"a": np.ones(2)})
    assert os.listdir(tmp_path) == ["ckpt.npz"]
    assert np.array_equal(checkpoint.load(path)["a"], np.ones(2))


def test_a_save_that_raises_midway_leaves_no_temporary_file_and_the_old_file_untouched(tmp_path, monkeypatch):
    path = checkpoint.save(tmp_path / "ckpt.npz", {"a": np.arange(5.0), "b": np.ones(3)})
    before = path.read_bytes()
    real, written = np.lib.format.write_array, []

    def write_then_fail(file, array, **options):
        if written:
            raise OSError("disk full (simulated)")
        written.append(array)
        real(file, array, **options)

    monkeypatch.setattr(np.lib.format, "write_array", write_then_fail)
    with pytest.raises(OSError, match="simulated"):
        checkpoint.save(path, {"a": np.zeros(5), "b": np.zeros(3)})
    assert written  # it did fail midway, after one array
    assert os.listdir(tmp_path) == ["ckpt.npz"] and path.read_bytes() == before


KILLED_SAVE = """
import sys
import numpy as np
from tinygrad_rnn import checkpoint

real = np.lib.format.write_array
calls = []

def write_and_stop_at_the_second(*args, **kwargs):
    calls.append(1)
    if len(calls) == 2:
        print("midway", flush=True)
        sys.stdin.read()  # block here until killed
    real(*args, **kwargs)

np.lib.format.write_array = write_and_stop_at_the_second
checkpoint.save(sys.argv[1], {"a": np.zeros(1000), "b": np.zeros(1000)})
"""


@pytest.mark.skipif(os.name != "posix", reason="SIGKILL is POSIX")
def test_a_killed_save_keeps_the_old_checkpoint_and_the_next_save_removes_its_temporary_file(tmp_path):
    path = checkpoint.save(tmp_path / "ckpt.npz", {"a": np.ones(1000)})
    before = path.read_bytes()
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    saver = subprocess.Popen([sys.executable, "-c", KILLED_SAVE, str(path)], env=env,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        line = saver.stdout.readline()  # returns once the save is midway (or the child died)
        left = [p.name for p in tmp_path.iterdir() if p.name != "ckpt.npz"]
        saver.send_signal(signal.SIGKILL)
    finally:
        saver.kill()
        _, stderr = saver.communicate(timeout=60)
    assert line == b"midway\n", stderr.decode()
    assert len(left) == 1 and left[0].startswith(f".ckpt.npz.{saver.pid}.") and left[0].endswith(".tmp")
    assert path.read_bytes() == before  # the old checkpoint, byte for byte
    assert (tmp_path / left[0]).exists()  # a killed process cleans nothing up itself ...
    checkpoint.save(path, {"a": np.zeros(1000)})
    assert os.listdir(tmp_path) == ["ckpt.npz"]  # ... the next save of the same checkpoint does


def test_a_save_keeps_temporary_files_of_running_saves_and_of_other_checkpoints(tmp_path):
    running = tmp_path / f".ckpt.npz.{os.getpid()}.abc123.tmp"  # this process: a save under way
    other = tmp_path / ".other.npz.999999999.abc123.tmp"
    running.write_bytes(b"partial"), other.write_bytes(b"partial")
    checkpoint.save(tmp_path / "ckpt.npz", {"a": np.ones(1)})
    assert running.exists() and other.exists()


# ---- a model and its optimiser, all or nothing --------------------------------------------------


def test_training_checkpoint_restores_model_optimizer_and_extras(tmp_path):
    model, optimizer = trained(seed=1)
    path = checkpoint.save_training(tmp_path / "t.npz", model, optimizer, step=2, cell="lstm")
    target = Small(seed=2)
    target_optimizer = Adam(target.parameters(), lr=0.5)
    assert checkpoint.load_training(path, target, target_optimizer) == {"step": 2, "cell": "lstm"}
    assert_same_entries(target.state_dict(), model.state_dict())
    assert_same_entries(target_optimizer.state_dict(), optimizer.state_dict())
    assert all(p.dtype == np.float32 for p in target.parameters())


def snapshot(model, optimizer):
    return {**{f"m.{k}": v for k, v in model.state_dict().items()},
            **{f"o.{k}": v for k, v in optimizer.state_dict().items()}}


def test_a_bad_optimiser_part_leaves_the_model_untouched_and_every_problem_is_listed(tmp_path):
    model, optimizer = trained(seed=1)
    arrays = {f"model.{k}": v for k, v in model.state_dict().items()}
    arrays.update({f"optim.{k}": v for k, v in optimizer.state_dict().items()})
    arrays["optim.state.7.exp_avg"] = np.zeros((9, 9), dtype=np.float32)  # head.bias has shape (2,)
    arrays["optim.group.0.lr"] = np.array("fast")
    del arrays["optim.state.0.exp_avg_sq"]
    arrays["optim.state.99.exp_avg"] = np.zeros(2)
    path = checkpoint.save(tmp_path / "bad_optim.npz", arrays)
    target = Small(seed=2)
    target_optimizer = Adam(target.parameters(), lr=0.5)
    before = snapshot(target, target_optimizer)
    with pytest.raises(CheckpointError) as error:
        checkpoint.load_training(path, target, target_optimizer)
    message = str(error.value)
    assert f"load_training from {path}: nothing loaded" in message
    assert "state.7.exp_avg has shape (9, 9), the parameter (2,)" in message
    assert "group.0.lr holds a <U4 array of shape (), expected a float" in message
    assert "missing state.0.exp_avg_sq" in message
    assert "unexpected entry 'state.99.exp_avg'" in message
    assert_same_entries(snapshot(target, target_optimizer), before)


def test_a_bad_last_model_entry_leaves_the_earlier_ones_unloaded(tmp_path):
    model, optimizer = trained(seed=1)
    arrays = {f"model.{k}": v for k, v in model.state_dict().items()}
    last = list(arrays)[-1]
    arrays[last] = np.array(["not", "a", "number", "!"])
    path = checkpoint.save(tmp_path / "bad_model.npz", arrays)
    target = Small(seed=2)
    before = target.state_dict()
    with pytest.raises(CheckpointError, match=rf"bad_model\.npz: nothing loaded: model: {last[6:]!r} has dtype <U6"):
        checkpoint.load_training(path, target)
    assert_same_entries(target.state_dict(), before)


def test_an_optimiser_asked_for_but_not_saved_is_an_error(tmp_path):
    model, _ = trained()
    path = checkpoint.save_training(tmp_path / "model_only.npz", model)
    target = Small(seed=2)
    before = target.state_dict()
    with pytest.raises(CheckpointError, match="no optimiser state in the file"):
        checkpoint.load_training(path, target, SGD(target.parameters(), lr=0.1))
    assert_same_entries(target.state_dict(), before)
    checkpoint.load_training(path, target)  # the model alone loads
    assert_same_entries(target.state_dict(), model.state_dict())


def test_an_entry_outside_the_three_sections_is_an_error(tmp_path):
    model, _ = trained()
    arrays = {f"model.{k}": v for k, v in model.state_dict().items()}
    arrays["stray"] = np.zeros(1)
    path = checkpoint.save(tmp_path / "stray.npz", arrays)
    with pytest.raises(CheckpointError, match="unexpected entry 'stray'"):
        checkpoint.load_training(path, Small())
