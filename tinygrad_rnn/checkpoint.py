"""Checkpoints: named numpy arrays in one file, written atomically, checked on load, read without pickle.

The format is numpy's ``.npz`` layout (a zip archive, stored uncompressed) plus a manifest:

- one ``<name>.npy`` member per array, in numpy's own ``.npy`` format (``np.lib.format``), its name
  percent-quoted (``model.rnn.cell.weight_hh.npy``, ``a%2Fb.npy``) so any string gives a valid and
  distinct member name; ``np.load`` reads the file like any ``.npz``;
- ``manifest.json``: the format's name and version and, for every array in order, its name, shape,
  dtype and the sha256 of its member's bytes.

Why a manifest. The names live in it rather than in keyword arguments (``np.savez(file, **arrays)``
takes ``file`` and ``allow_pickle`` as its own parameters), so any string can be a name. And it says
what the file must hold: ``load`` checks every member against it (the zip's CRC-32 guards the manifest
itself), so a damaged or truncated file raises ``CheckpointError`` naming the file; it never loads with
entries missing or changed.

Why atomic. The archive is written to ``.<name>.<pid>.<random>.tmp`` beside the target, which it then
replaces in one ``os.replace``: the previous checkpoint stays whole until the new one is complete. A
save that raises removes its temporary file; a process killed outright cannot, so each save first
removes the temporary files of its checkpoint left by processes no longer running. A name too long
to leave room for that (a file name holds at most 255 bytes) is cut in the temporary name, and ends
there with a hash of the whole name instead.

Why every byte is read from the file. ``save`` stores members uncompressed, so ``load`` refuses a
compressed member, members that add up to more bytes than the file holds, and a ``.npy`` header that
promises more than its member holds, all before reading or allocating them: a small hostile file
cannot make ``load`` inflate gigabytes.

Why no pickle. A checkpoint holds only arrays (numbers and strings), read with ``allow_pickle=False``,
so loading one cannot run code hidden in it.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import secrets
import zipfile
from pathlib import Path
from urllib.parse import quote

import numpy as np

__all__ = ["CheckpointError", "save", "load", "save_training", "load_training"]

MANIFEST = "manifest.json"
FORMAT, VERSION = "tinygrad_rnn checkpoint", 1


class CheckpointError(ValueError):
    """A checkpoint file that is damaged, not a checkpoint, or does not fit what it is loaded into."""


# ---- arrays <-> file ----------------------------------------------------------------------------


def save(path: str | Path, arrays: dict) -> Path:
    """Write ``arrays`` (name -> array, number or string; any string names) to ``path`` atomically;
    returns the path."""
    path = Path(path)
    arrays = _as_arrays(arrays)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(path)
    temporary = path.with_name(f"{_temporary_prefix(path)}{os.getpid()}.{secrets.token_hex(6)}.tmp")
    try:
        # os.open applies the umask to 0o666, so the checkpoint gets an ordinary file's mode.
        with os.fdopen(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), "wb") as file:
            _write(file, arrays)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _sync_directory(path.parent)
    return path


def load(path: str | Path) -> dict[str, np.ndarray]:
    """The arrays saved at ``path``, in the order saved, each checked against the file's manifest."""
    path = Path(path)
    with open(path, "rb") as file:  # a missing file raises FileNotFoundError, as open always does
        try:
            return _read(file, path)
        except CheckpointError:
            raise
        except Exception as error:  # zipfile, json and numpy each raise their own kind on damaged bytes
            raise CheckpointError(
                f"checkpoint {path} is damaged or not a checkpoint ({type(error).__name__}: {error})"
            ) from error


def _as_arrays(arrays: dict) -> dict[str, np.ndarray]:
    out = {}
    for name, value in arrays.items():
        if not isinstance(name, str):
            raise TypeError(f"checkpoint.save: names must be strings, got {name!r}")
        value = np.asarray(value)
        if value.dtype.hasobject:
            raise TypeError(f"checkpoint.save: {name!r} is an object array, which cannot load without pickle")
        out[name] = value
    return out


def _write(file, arrays: dict[str, np.ndarray]) -> None:
    entries = []
    with zipfile.ZipFile(file, "w", zipfile.ZIP_STORED) as archive:
        for name, array in arrays.items():
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, array, allow_pickle=False)
            data = buffer.getvalue()
            archive.writestr(_member_info(_member(name)), data)
            entries.append(dict(name=name, shape=list(array.shape), dtype=array.dtype.str,
                                sha256=hashlib.sha256(data).hexdigest()))
        manifest = dict(format=FORMAT, version=VERSION, entries=entries)
        archive.writestr(_member_info(MANIFEST), json.dumps(manifest, separators=(",", ":")))


def _member(name: str) -> str:
    """The zip member holding ``name``: percent-quoting makes any string (``/``, NUL, a lone surrogate)
    a valid member name, and distinct names distinct members."""
    return quote(name, safe="", errors="surrogatepass") + ".npy"


def _member_info(member: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(member, date_time=(1980, 1, 1, 0, 0, 0))  # a fixed date: same arrays, same bytes
    info.external_attr = 0o644 << 16  # what unzip shows; a bare ZipInfo says ?---------
    return info


def _read(file, path: Path) -> dict[str, np.ndarray]:
    with zipfile.ZipFile(file) as archive:
        _check_sizes(archive, os.fstat(file.fileno()).st_size, path)
        if MANIFEST not in archive.namelist():
            raise CheckpointError(
                f"checkpoint {path} has no {MANIFEST}: it was not written by checkpoint.save, or is damaged "
                f"(an .npz from numpy.savez converts with checkpoint.save(path, dict(np.load(path))))"
            )
        manifest = json.loads(archive.read(MANIFEST))  # read() checks the member's CRC-32
        if (manifest.get("format"), manifest.get("version")) != (FORMAT, VERSION):
            raise CheckpointError(f"checkpoint {path}: unknown format {manifest.get('format')!r} "
                                  f"version {manifest.get('version')!r}")
        entries = manifest["entries"]
        names = [entry["name"] for entry in entries]
        if len(set(names)) != len(names):
            raise CheckpointError(f"checkpoint {path} is damaged: its manifest lists a name twice")
        if sorted(archive.namelist()) != sorted([_member(name) for name in names] + [MANIFEST]):
            raise CheckpointError(f"checkpoint {path} is damaged: its members are not the ones its manifest lists")
        arrays = {}
        for entry in entries:
            data = archive.read(_member(entry["name"]))
            if hashlib.sha256(data).hexdigest() != entry["sha256"]:
                raise CheckpointError(f"checkpoint {path} is damaged: {entry['name']!r} fails its sha256 check")
            array = _array(data, entry, path)
            if list(array.shape) != entry["shape"] or array.dtype.str != entry["dtype"]:
                raise CheckpointError(f"checkpoint {path} is damaged: {entry['name']!r} is not the array listed")
            arrays[entry["name"]] = array
    return arrays


def _check_sizes(archive: zipfile.ZipFile, file_size: int, path: Path) -> None:
    """Refuse, before reading any member, what could make reading cost more than the file's own size:
    a compressed member (``save`` stores every one as it is: a compressed one can inflate a thousandfold),
    and members adding up to more bytes than the file (zip entries that overlap, read many times over)."""
    members = archive.infolist()
    for info in members:
        if info.compress_type != zipfile.ZIP_STORED:
            raise CheckpointError(
                f"checkpoint {path}: member {info.filename!r} is compressed (zip method {info.compress_type}), "
                "but checkpoint.save stores every member uncompressed: the file was not written by it, or was "
                "altered; refused before inflating it"
            )
        if info.compress_size != info.file_size:
            raise CheckpointError(f"checkpoint {path} is damaged: member {info.filename!r} is stored as "
                                  f"{info.compress_size:,} bytes but said to hold {info.file_size:,}")
    total = sum(info.file_size for info in members)
    if total > file_size:
        raise CheckpointError(f"checkpoint {path} is damaged: its {len(members)} members claim {total:,} bytes, "
                              f"more than the file's {file_size:,}")


def _array(data: bytes, entry: dict, path: Path) -> np.ndarray:
    """The array in one ``.npy`` member, once its header is known to describe the array the manifest
    lists, in exactly the bytes the member holds: numpy allocates what a header promises before
    reading the data, so a header promising a terabyte is refused here first."""
    buffer = io.BytesIO(data)
    version = np.lib.format.read_magic(buffer)
    # Version 3 differs from 2 only in the header's text encoding (UTF-8), which changes no size.
    read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, _, dtype = read_header(buffer)
    if dtype.hasobject:
        raise CheckpointError(f"checkpoint {path} holds Python objects in {entry['name']!r}, which only pickle can "
                              "load (allow_pickle=False here, so loading cannot run code): refused")
    if list(shape) != entry["shape"] or buffer.tell() + math.prod(shape) * dtype.itemsize != len(data):
        raise CheckpointError(f"checkpoint {path} is damaged: the header of {entry['name']!r} describes an array of "
                              f"shape {shape} and dtype {dtype}, not the {len(data):,} bytes of shape "
                              f"{tuple(entry['shape'])} its manifest lists")
    buffer.seek(0)
    return np.lib.format.read_array(buffer, allow_pickle=False)


# ---- temporary files and the directory ----------------------------------------------------------


# Bytes the temporary name adds to the checkpoint's: "." in front, ".<pid>.<random>.tmp" behind (a pid
# of up to 10 digits, 12 random hex digits).
TEMPORARY_EXTRA = 1 + 1 + 10 + 1 + 12 + 4
# A cut name keeps this many hex digits of the sha256 of the whole name, after a "~".
NAME_HASH = 8


def _name_max(directory: Path) -> int:
    """The most bytes a file name may have in ``directory`` (NAME_MAX: 255 on the usual file systems)."""
    try:
        return os.pathconf(directory, "PC_NAME_MAX")
    except (AttributeError, ValueError, OSError):  # no pathconf (Windows), or no answer
        return 255


def _temporary_prefix(path: Path) -> str:
    """``.<name>.``, the start of every temporary file name of the checkpoint at ``path``. When the
    whole temporary name would be longer than a file name may be, ``<name>`` is cut (counted in the
    bytes the file system stores) and ends in ``~`` and a hash of the whole name, so two long names
    that start alike still have temporaries of their own."""
    name, room = path.name, _name_max(path.parent) - TEMPORARY_EXTRA
    if len(os.fsencode(name)) <= room:
        return f".{name}."
    digest = hashlib.sha256(os.fsencode(name)).hexdigest()[:NAME_HASH]
    cut = name
    while len(os.fsencode(cut)) > room - 1 - NAME_HASH:
        cut = cut[:-1]
    return f".{cut}~{digest}."


def _remove_stale_temporaries(path: Path) -> None:
    """Remove ``.<name>.<pid>.<random>.tmp`` files beside ``path`` whose process no longer runs."""
    prefix = _temporary_prefix(path)
    for candidate in path.parent.iterdir():
        parts = candidate.name[len(prefix):].split(".")
        if (candidate.name.startswith(prefix) and len(parts) == 3 and parts[0].isdecimal() and parts[2] == "tmp"
                and not _running(int(parts[0]))):
            candidate.unlink(missing_ok=True)


def _running(pid: int) -> bool:
    if os.name != "posix":
        return True  # no safe way to ask (os.kill would end the process on Windows): keep the file
    try:
        os.kill(pid, 0)  # signal 0 only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, and belongs to someone else
    return True


def _sync_directory(directory: Path) -> None:
    """Flush the directory entry, so the rename itself survives a power cut."""
    if os.name == "posix":
        handle = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(handle)
        finally:
            os.close(handle)


# ---- a model and its optimiser ------------------------------------------------------------------


def save_training(path: str | Path, model, optimizer=None, **extra) -> Path:
    """A model's ``state_dict`` under ``model.``, the optimiser's under ``optim.``, and any extra
    numbers or strings (step count, seed, settings) under ``meta.``."""
    arrays = {f"model.{k}": v for k, v in model.state_dict().items()}
    if optimizer is not None:
        arrays.update({f"optim.{k}": v for k, v in optimizer.state_dict().items()})
    arrays.update({f"meta.{k}": v for k, v in extra.items()})
    return save(path, arrays)


def load_training(path: str | Path, model, optimizer=None) -> dict:
    """Restore what ``save_training`` wrote into ``model`` (and ``optimizer``); returns the extras,
    as Python numbers and strings.

    All or nothing: the model's and the optimiser's entries are all checked (names, shapes, dtypes,
    hyperparameter types) before either changes; any problem raises ``CheckpointError`` listing
    every one, with nothing loaded."""
    sections: dict[str, dict] = {"model": {}, "optim": {}, "meta": {}}
    problems = []
    for name, value in load(path).items():
        section, _, key = name.partition(".")
        if section in sections:
            sections[section][key] = value
        else:
            problems.append(f"unexpected entry {name!r}")
    model_problems, load_model = model._prepare_load(sections["model"])
    problems += [f"model: {problem}" for problem in model_problems]
    load_optimizer = None
    if optimizer is not None:
        if not sections["optim"]:
            problems.append("no optimiser state in the file (saved without one): pass optimizer=None")
        else:
            optimizer_problems, load_optimizer = optimizer._prepare_load(sections["optim"])
            problems += [f"optimiser: {problem}" for problem in optimizer_problems]
    if problems:
        raise CheckpointError(f"load_training from {path}: nothing loaded: " + "; ".join(problems))
    load_model()
    if load_optimizer is not None:
        load_optimizer()
    return {k: (v.item() if v.ndim == 0 else v) for k, v in sections["meta"].items()}
