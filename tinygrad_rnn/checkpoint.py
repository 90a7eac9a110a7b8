"""Checkpoints: named numpy arrays in one ``.npz`` file, written atomically, read without pickle.

Atomic: the arrays go to a temporary file in the same directory, which then replaces the target in
one ``os.replace``. A run killed mid-save leaves the previous checkpoint whole, never half a file.
Read with ``allow_pickle=False``: a checkpoint holds only arrays (numbers and strings), so loading
one cannot run code hidden in it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

__all__ = ["save", "load", "save_training", "load_training"]


def save(path: str | Path, arrays: dict) -> Path:
    """Write ``arrays`` (name -> array, number or string) to ``path`` atomically; returns the path."""
    path = Path(path)
    if path.suffix != ".npz":
        raise ValueError(f"checkpoint.save: the path must end in .npz (numpy adds it otherwise), got {path}")
    arrays = {str(k): np.asarray(v) for k, v in arrays.items()}
    for name, value in arrays.items():
        if value.dtype == object:
            raise TypeError(f"checkpoint.save: {name!r} is an object array, which cannot load without pickle")
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            np.savez(file, **arrays)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, 0o666 & ~_umask())  # mkstemp makes it private; give it a normal file's mode
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)  # reading the umask means setting it: put it straight back
    os.umask(mask)
    return mask


def load(path: str | Path) -> dict[str, np.ndarray]:
    """The arrays saved at ``path``, as a plain dict (the file is closed before returning)."""
    with np.load(Path(path), allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files}


def save_training(path: str | Path, model, optimizer=None, **extra) -> Path:
    """A model's ``state_dict`` under ``model.``, the optimiser's under ``optim.``, and any extra
    numbers or strings (step count, seed, settings) under ``meta.``."""
    arrays = {f"model.{k}": np.array(v) for k, v in model.state_dict().items()}
    if optimizer is not None:
        arrays.update({f"optim.{k}": v for k, v in optimizer.state_dict().items()})
    arrays.update({f"meta.{k}": np.asarray(v) for k, v in extra.items()})
    return save(path, arrays)


def load_training(path: str | Path, model, optimizer=None) -> dict:
    """Restore what ``save_training`` wrote into ``model`` (and ``optimizer``); returns the extras,
    as Python numbers and strings."""
    arrays = load(path)
    sections: dict[str, dict] = {"model": {}, "optim": {}, "meta": {}}
    for name, value in arrays.items():
        section, _, key = name.partition(".")
        if section not in sections:
            raise ValueError(f"checkpoint.load_training: unexpected entry {name!r} in {path}")
        sections[section][key] = value
    model.load_state_dict(sections["model"])
    if optimizer is not None and sections["optim"]:
        optimizer.load_state_dict(sections["optim"])
    return {k: (v.item() if v.ndim == 0 else v) for k, v in sections["meta"].items()}
