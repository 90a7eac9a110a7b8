"""Checks the ``tinygrad-rnn`` command makes before doing any work.

A bad value on the command line should cost the user one line of reading, not a traceback, and
never an hour of training or a machine out of memory. So before anything is built:

- every number is parsed by a type that says what it must be (``positive_int``, ``positive_float``,
  ``finite_float``, ``thread_count``: NaN, infinities, zero, negatives and sizes no library takes are refused where they
  make no sense);
- every output path is checked: names the file system can hold (at most NAME_MAX bytes a name,
  PATH_MAX the whole path), a known suffix, not under a file, in a place where a file can really
  be created (a temporary file is made and removed there, which also catches read-only file systems
  and the cases where ``os.access`` says yes to root);
- the memory a run needs is estimated from its sizes and compared with what the machine has free.

A refusal is a ``UsageError``; ``visualize.cli.main`` prints its message as one line on stderr and
exits with status 2, argparse's status for a usage error.
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
from pathlib import Path

import numpy as np

from tinygrad_rnn import graph, nn
from tinygrad_rnn.charrnn import CELLS
from tinygrad_rnn.training import RunError
from visualize.textbook import TextbookCell

__all__ = [
    "UsageError", "positive_int", "nonnegative_int", "positive_float", "finite_float", "thread_count",
    "check_output_file", "check_directory", "check_name", "available_memory", "check_memory", "nodes_per_step",
    "human_bytes", "CELLS",
]


# Python's share of one recorded node (the Value, its parents tuple, small arrays' headers): measured
# at 390-490 bytes with tracemalloc on 2,000-step RNN and LSTM graphs; rounded up.
NODE_OVERHEAD = 600
# What a command holds whatever its sizes (the picture's source, numpy's and graphviz's own buffers):
# tracemalloc peaks of small runs stay under 6 MB beyond the sized terms.
BASE_MEMORY = 16_000_000
# A run may plan to use at most this share of the memory the machine has free: the rest is for the
# layout program, the picture and everything else running.
USABLE_SHARE = 0.8


class UsageError(RunError):
    """A value on the command line that cannot work; the message names the flag, the value and a fix.
    (The library's ``RunError``, a run that cannot go on as asked, is reported the same way.)"""


# ---- numbers ------------------------------------------------------------------------------------

def positive_int(text: str) -> int:
    """An argparse type: a whole number >= 1."""
    value = _whole_number(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {text}")
    return value


def nonnegative_int(text: str) -> int:
    """An argparse type: a whole number >= 0 (a seed)."""
    value = _whole_number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 0, got {text}")
    return value


def positive_float(text: str) -> float:
    """An argparse type: a finite number > 0 (NaN and infinities are refused)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not math.isfinite(value) or value <= 0.0:
        raise argparse.ArgumentTypeError(f"must be a finite number above 0, got {text}")
    return value


def finite_float(text: str) -> float:
    """An argparse type: a finite number, of either sign (NaN and infinities are refused)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


# More threads than any BLAS library runs (OpenBLAS and MKL builds stop far below this); a larger count
# does not even fit the C int they take, and fails inside threadpoolctl.
MAX_THREADS = 1024


def thread_count(text: str) -> int:
    """An argparse type: a whole number of threads, 1 to MAX_THREADS."""
    value = positive_int(text)
    if value > MAX_THREADS:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_THREADS} (no BLAS library runs more threads; this "
                                         f"machine has {os.cpu_count() or 'an unknown number of'} CPUs), got {text}")
    return value


def _whole_number(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None


# ---- paths --------------------------------------------------------------------------------------

def check_output_file(path, flag: str, suffixes) -> Path:
    """``path`` if a file with one of ``suffixes`` can be written there; else a UsageError."""
    path = Path(path)
    _check_names(path, flag)
    if path.suffix.lower() not in suffixes:
        shown = f"suffix {path.suffix!r}" if path.suffix else "no suffix"
        raise UsageError(f"{flag} {path}: {shown}; use one of {', '.join(suffixes)}")
    if os.path.isdir(path):
        raise UsageError(f"{flag} {path} is a directory; give a file name such as {path / ('out' + suffixes[0])}")
    _check_writable_under(path.parent, flag, path)
    return path


def check_directory(path, flag: str) -> Path:
    """``path`` if it is, or can be made, a directory files can be written in; else a UsageError."""
    path = Path(path)
    _check_names(path, flag)
    if os.path.exists(path) and not os.path.isdir(path):
        raise UsageError(f"{flag} {path} is a file; give a directory")
    _check_writable_under(path, flag, path)
    return path


def check_name(directory: Path, name: str, flag: str, why: str) -> None:
    """A UsageError when a file ``name`` the command will write in ``directory`` (named after the value
    of ``flag``, as ``why`` says) is longer than a file name may be."""
    size, limit = _encoded_size(name), _name_max(directory)
    if size is None or size > limit:
        raise UsageError(f"{flag}: {why}, {_shorten(name)!r}, "
                         + (f"is {size} bytes long, more than the {limit} a file name may have; use a shorter name"
                            if size is not None else "cannot be a file name here (it cannot be encoded)"))


def _check_names(path: Path, flag: str) -> None:
    """Names the file system cannot hold, refused before anything asks it about them: a name of
    more than NAME_MAX bytes, or a path of PATH_MAX or more (the system answers "File name too long"
    to both, and pathlib raises it from ``exists``)."""
    limit = _name_max(path.parent)
    for part in path.parts:
        size = _encoded_size(part)
        if size is None:
            raise UsageError(f"{flag} {_shorten(str(path))!r}: {_shorten(part)!r} cannot be a file name here "
                             "(it cannot be encoded)")
        if size > limit:
            raise UsageError(f"{flag}: the name {_shorten(part)!r} is {size} bytes long, more than the {limit} a "
                             "file or directory name may have; use a shorter name")
    whole, path_max = _encoded_size(str(path)), _path_max(path.parent)
    if whole is not None and whole >= path_max:
        raise UsageError(f"{flag} {_shorten(str(path))!r}: the whole path is {whole} bytes long, more than the "
                         f"{path_max - 1} a path may have")


def _encoded_size(name: str) -> int | None:
    """The bytes the file system stores for ``name``; None when it cannot be encoded at all."""
    try:
        return len(os.fsencode(name))
    except UnicodeEncodeError:
        return None


def _shorten(name: str, keep: int = 40) -> str:
    return name if len(name) <= keep else f"{name[:keep - 12]}…{name[-11:]}"


def _nearest_directory(path: Path) -> Path:
    existing = path
    while not os.path.isdir(existing) and existing != existing.parent:
        existing = existing.parent
    return existing


def _name_max(directory: Path) -> int:
    """NAME_MAX of the file system ``directory`` (or its nearest existing parent) is on: 255 bytes on
    the usual ones."""
    try:
        return os.pathconf(_nearest_directory(directory), "PC_NAME_MAX")
    except (AttributeError, ValueError, OSError):  # no pathconf (Windows), or no answer
        return 255


def _path_max(directory: Path) -> int:
    try:
        return os.pathconf(_nearest_directory(directory), "PC_PATH_MAX")
    except (AttributeError, ValueError, OSError):
        return 4096


def _check_writable_under(directory: Path, flag: str, shown: Path) -> None:
    existing = directory
    while not os.path.exists(existing) and existing != existing.parent:
        existing = existing.parent
    if not os.path.isdir(existing):
        raise UsageError(f"{flag} {shown}: {existing} is a file, so nothing can be written under it")
    try:  # the real test: root passes os.access everywhere, and read-only file systems say no only here
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        raise UsageError(f"{flag} {shown}: cannot write in {existing} ({error.strerror or error})") from None


# ---- memory -------------------------------------------------------------------------------------

def available_memory() -> int | None:
    """Bytes the machine can give a new process without swapping: MemAvailable on Linux, else the
    physical memory (macOS and others), else None (then nothing is refused for size)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def check_memory(needed: float, what: str, hint: str) -> None:
    """A UsageError when ``needed`` bytes would not fit in the memory this machine has free."""
    available = available_memory()
    if available is not None and needed > USABLE_SHARE * available:
        raise UsageError(f"{what} needs about {human_bytes(needed)} of memory, this machine has "
                         f"{human_bytes(available)} free; {hint}")


def human_bytes(count: float) -> str:
    for unit in ("bytes", "kB", "MB", "GB", "TB", "PB"):
        if count < 1000.0 or unit == "PB":
            return f"{count:.0f} {unit}" if unit == "bytes" else f"{count:.3g} {unit}"
        count /= 1000.0
    raise AssertionError("unreachable")


def nodes_per_step(cell: str, textbook: bool = False) -> int:
    """How many nodes one time step of ``cell`` adds to a recorded graph, counted on a 1-step and a
    2-step unroll of a tiny cell (so the count follows the engine, whatever it records per step);
    ``textbook``: of the cell as the ops and path views draw it (visualize/textbook.py)."""
    model = CELLS[cell](1, 2, rng=0)
    model = TextbookCell(model) if textbook else model
    counts = []
    for steps in (1, 2):
        outputs, _ = nn.RNN(model)(np.zeros((steps, 1, 1)))
        counts.append(len(graph.walk(outputs[-1]).nodes))
    return counts[1] - counts[0]
