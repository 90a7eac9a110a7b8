"""Data for recurrent nets: a character corpus cut into (T, B) windows, and two long-lag tasks.

- ``CharCorpus``: the characters of any text file (or, with no file, a slice of the Python standard
  library's own source, located at run time, so nothing is downloaded), as integer ids with a vocabulary.
- ``random_windows`` / ``sequential_windows``: (inputs, targets) pairs of shape (T, B), the targets
  being the inputs shifted one character ahead.
- ``adding_problem`` and ``temporal_order``: Hochreiter & Schmidhuber's (1997) tests of memory over
  long time lags.

Every random function takes ``rng``: a seed or a ``numpy.random.Generator``. There is no hidden global
random state, so a run is repeated by repeating its seed.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
from collections.abc import Iterator
from pathlib import Path

import numpy as np

__all__ = [
    "DEFAULT_MODULES", "CharVocab", "CharCorpus", "default_text", "load_text", "one_hot",
    "random_windows", "sequential_windows", "adding_problem", "temporal_order", "TEMPORAL_ORDER_SYMBOLS",
]

# Plain-prose-heavy standard library modules: long docstrings and comments read like English, code
# like code, so a char-RNN trained on them has both to learn.
DEFAULT_MODULES = (
    "textwrap", "argparse", "fractions", "heapq", "bisect", "difflib", "calendar", "statistics", "functools",
    "dataclasses", "pathlib", "collections", "random", "string", "enum", "shutil",
)


def as_rng(rng) -> np.random.Generator:
    """A Generator from a seed (int) or a Generator itself (returned unchanged, so its state runs on)."""
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or isinstance(rng, bool) or not isinstance(rng, (int, np.integer)):
        raise TypeError(f"rng: pass a seed (int) or a numpy.random.Generator, got {rng!r}")
    return np.random.default_rng(int(rng))


# ---- text ---------------------------------------------------------------------------------------

def default_text(max_chars: int = 500_000, modules: tuple = DEFAULT_MODULES) -> str:
    """Source text of standard library modules, joined, cut to ``max_chars``.

    Each module's file is located at run time (``importlib.util.find_spec``) and read without
    importing the module. Where a Python ships without sources (some embedded builds keep only .pyc
    files), the module is imported and its docstrings are used instead, which .pyc files keep.
    """
    if max_chars <= 0:
        raise ValueError(f"default_text: max_chars must be positive, got {max_chars}")
    pieces, total = [], 0
    for name in modules:
        spec = importlib.util.find_spec(name)
        origin = Path(spec.origin) if spec is not None and spec.origin else None
        if origin is not None and origin.suffix == ".py" and origin.is_file():
            text = origin.read_text(encoding="utf-8")
        else:
            module = importlib.import_module(name)
            text = "\n\n".join(doc for doc in (inspect.getdoc(obj) for _, obj in inspect.getmembers(module)) if doc)
        pieces.append(text)
        total += len(text)
        if total >= max_chars:
            break
    text = "\n".join(pieces)[:max_chars]
    if not text:
        raise RuntimeError(f"default_text: found no source or docstrings in the modules {modules}")
    return text


def load_text(path: str | Path | None = None, max_chars: int | None = None) -> str:
    """The text of ``path`` (UTF-8; undecodable bytes replaced), or ``default_text()`` when None."""
    if path is None:
        return default_text() if max_chars is None else default_text(max_chars)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"load_text: no file at {path}")
    text = path.read_text(encoding="utf-8", errors="replace")
    if not text:
        raise ValueError(f"load_text: {path} is empty")
    return text if max_chars is None else text[:max_chars]


class CharVocab:
    """The characters of a text, sorted, each given an id (its position)."""

    def __init__(self, chars):
        self.chars = sorted(set(chars))
        self.index = {c: i for i, c in enumerate(self.chars)}

    def __len__(self) -> int:
        return len(self.chars)

    def __repr__(self) -> str:
        return f"CharVocab({len(self)} characters)"

    def encode(self, text: str) -> np.ndarray:
        """Integer ids (int64), one per character."""
        try:
            return np.fromiter((self.index[c] for c in text), dtype=np.int64, count=len(text))
        except KeyError as error:
            raise KeyError(f"encode: character {error.args[0]!r} is not in the vocabulary") from None

    def decode(self, ids) -> str:
        return "".join(self.chars[int(i)] for i in np.asarray(ids).ravel())


class CharCorpus:
    """A text as ids: ``corpus.ids`` (int64, one per character) and ``corpus.vocab``."""

    def __init__(self, text: str, vocab: CharVocab | None = None):
        if len(text) < 2:
            raise ValueError(f"CharCorpus: need at least 2 characters to predict one from another, got {len(text)}")
        self.text = text
        self.vocab = CharVocab(text) if vocab is None else vocab
        self.ids = self.vocab.encode(text)

    @classmethod
    def from_file(cls, path: str | Path | None = None, max_chars: int | None = None) -> CharCorpus:
        """From a text file; with no path, the default standard-library corpus."""
        return cls(load_text(path, max_chars))

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        return f"CharCorpus({len(self)} characters, vocabulary {len(self.vocab)})"

    def split(self, valid_fraction: float = 0.1, block: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(train ids, validation ids), ``valid_fraction`` of the text held out.

        By default the held-out part is the end of the text. With ``block``, the text is cut into
        blocks of that many characters and every (1/valid_fraction)-th block is held out, so both
        parts sample the whole text (the end of a text is often unlike its start).
        """
        if not 0.0 <= valid_fraction < 1.0:
            raise ValueError(f"split: valid_fraction must lie in [0, 1), got {valid_fraction}")
        if block is None or valid_fraction == 0.0:
            cut = len(self.ids) - int(round(valid_fraction * len(self.ids)))
            return self.ids[:cut], self.ids[cut:]
        if block < 1:
            raise ValueError(f"split: block must be a positive number of characters, got {block}")
        every = max(int(round(1.0 / valid_fraction)), 2)
        held_out = (np.arange(len(self.ids)) // block) % every == every - 1
        return self.ids[~held_out], self.ids[held_out]


def one_hot(ids, size: int, dtype=np.float64) -> np.ndarray:
    """ids of any shape -> an array of that shape plus a last axis of ``size``, 1 at each id."""
    ids = np.asarray(ids)
    if ids.size and (ids.min() < 0 or ids.max() >= size):
        raise ValueError(f"one_hot: ids must lie in [0, {size}), got range [{ids.min()}, {ids.max()}]")
    return np.eye(size, dtype=dtype)[ids]


# ---- windows ------------------------------------------------------------------------------------

def _check_window(ids: np.ndarray, seq_len: int, batch_size: int, where: str) -> None:
    if seq_len < 1 or batch_size < 1:
        raise ValueError(f"{where}: seq_len and batch_size must be >= 1, got {seq_len} and {batch_size}")
    if len(ids) < seq_len + 1:
        raise ValueError(f"{where}: a window of {seq_len} steps needs {seq_len + 1} characters, got {len(ids)}")


def random_windows(ids, seq_len: int, batch_size: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """B windows at random offsets: inputs ``ids[s : s+T]`` and targets ``ids[s+1 : s+T+1]``, each
    laid out time-major, shape (T, B), as the RNN reads them."""
    ids = np.asarray(ids)
    _check_window(ids, seq_len, batch_size, "random_windows")
    starts = as_rng(rng).integers(0, len(ids) - seq_len, size=batch_size)
    offsets = starts[None, :] + np.arange(seq_len)[:, None]  # (T, B)
    return ids[offsets], ids[offsets + 1]


def sequential_windows(ids, seq_len: int, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The text as B parallel streams, read T characters at a time, in order.

    The text is cut into B equal contiguous pieces (column b is piece b); window k holds characters
    [kT, kT+T) of every piece. Window k+1 continues where window k stopped, so the hidden state at
    the end of one window is the right starting state for the next: truncated BPTT over the text.
    """
    ids = np.asarray(ids)
    _check_window(ids, seq_len, 1, "sequential_windows")
    stream = (len(ids) - 1) // batch_size
    if stream < seq_len:
        raise ValueError(
            f"sequential_windows: {len(ids)} characters in {batch_size} streams give {stream} each, "
            f"fewer than one window of {seq_len}"
        )
    inputs = ids[: stream * batch_size].reshape(batch_size, stream).T  # (stream, B)
    targets = ids[1 : stream * batch_size + 1].reshape(batch_size, stream).T
    for start in range(0, stream - seq_len + 1, seq_len):
        yield inputs[start : start + seq_len], targets[start : start + seq_len]


# ---- long time lags -----------------------------------------------------------------------------

def adding_problem(batch_size: int, seq_len: int, rng, variant: str = "hochreiter", dtype=np.float64):
    """The adding problem: remember two marked numbers across a long sequence and output their sum.

    Returns ``inputs`` (T, B, 2) and ``targets`` (B,). Each step is a pair (value, marker); the target
    is the sum X1 + X2 of the two values whose marker is 1.

    - ``"hochreiter"`` (Hochreiter & Schmidhuber 1997, experiment 4): values uniform in [-1, 1]; X1 is
      one of the first ten steps, X2 one of the first T/2 - 1 steps not yet marked; the markers of the
      first and last steps are -1 unless marked, all others 0; a marked step 0 carries the value 0.
      The paper draws the length from [T, T + T/10] and scales the target to 0.5 + (X1 + X2) / 4; here
      every sequence has length T (so they batch) and the target is the plain sum.
    - ``"le2015"`` (the IRNN paper's form, Le, Jaitly & Hinton 2015): values uniform in [0, 1], one
      marked step in each half of the sequence.
    """
    if variant not in ("hochreiter", "le2015"):
        raise ValueError(f"adding_problem: variant must be 'hochreiter' or 'le2015', got {variant!r}")
    if seq_len < (2 if variant == "le2015" else 12) or batch_size < 1:
        raise ValueError(f"adding_problem: seq_len {seq_len} is too short for the {variant!r} variant")
    rng = as_rng(rng)
    rows = np.arange(batch_size)
    inputs = np.zeros((seq_len, batch_size, 2), dtype=dtype)
    if variant == "le2015":
        inputs[:, :, 0] = rng.uniform(0.0, 1.0, (seq_len, batch_size))
        half = seq_len // 2
        first = rng.integers(0, half, batch_size)
        second = rng.integers(half, seq_len, batch_size)
    else:
        inputs[:, :, 0] = rng.uniform(-1.0, 1.0, (seq_len, batch_size))
        first = rng.integers(0, 10, batch_size)
        # The k-th of the first T/2 - 1 unmarked steps: draw k, then step over `first`.
        second = rng.integers(0, seq_len // 2 - 1, batch_size)
        second = second + (second >= first)
        inputs[0, :, 1] = -1.0
        inputs[-1, :, 1] = -1.0
    inputs[first, rows, 1] = 1.0
    inputs[second, rows, 1] = 1.0
    if variant == "hochreiter":
        inputs[0, inputs[0, :, 1] == 1.0, 0] = 0.0  # the paper's rule: a marked first step carries 0
    targets = inputs[first, rows, 0] + inputs[second, rows, 0]
    return inputs, targets.astype(dtype)


# Symbol ids of the temporal order problem: distractors a-d, the relevant X and Y, start E, trigger B.
TEMPORAL_ORDER_SYMBOLS = ("a", "b", "c", "d", "X", "Y", "E", "B")


def temporal_order(batch_size: int, seq_len: int, rng, relevant: int = 2):
    """The temporal order problem (Hochreiter & Schmidhuber 1997, experiment 6): classify a sequence
    by the order in which X and Y appear at a few far-apart positions among random distractors.

    Returns ``symbols`` (T, B) ids into ``TEMPORAL_ORDER_SYMBOLS`` (``one_hot(symbols, 8)`` gives
    the paper's local input coding) and ``labels`` (B,) in [0, 2**relevant): the X/Y choices read as
    binary digits, first position most significant (XX=0, XY=1, YX=2, YY=3 for ``relevant=2``).

    A sequence starts with E, ends with the trigger B, and is otherwise uniform over a-d except at the
    relevant positions, which hold X or Y. The paper's positions for length ~100 are t1 in [10, 20],
    t2 in [50, 60] (task 6a) and t1 in [10, 20], t2 in [33, 43], t3 in [66, 76] (task 6b); here
    they are scaled to ``seq_len``.
    """
    windows = {2: ((0.10, 0.20), (0.50, 0.60)), 3: ((0.10, 0.20), (0.33, 0.43), (0.66, 0.76))}
    if relevant not in windows:
        raise ValueError(f"temporal_order: relevant must be 2 or 3, got {relevant}")
    if seq_len < 20 or batch_size < 1:
        raise ValueError(f"temporal_order: seq_len must be >= 20 so the relevant positions stay apart, got {seq_len}")
    rng = as_rng(rng)
    rows = np.arange(batch_size)
    symbols = rng.integers(0, 4, size=(seq_len, batch_size))
    symbols[0], symbols[-1] = 6, 7
    labels = np.zeros(batch_size, dtype=np.int64)
    for lo, hi in windows[relevant]:
        position = rng.integers(int(lo * seq_len), int(hi * seq_len) + 1, batch_size)
        is_y = rng.integers(0, 2, batch_size)
        symbols[position, rows] = 4 + is_y
        labels = 2 * labels + is_y
    return symbols, labels
