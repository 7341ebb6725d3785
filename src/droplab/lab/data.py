"""Data for the lab, all offline: built-in sets and a loader for real MNIST files.

- ``digits``: scikit-learn's 8x8 handwritten digits (1797 images, shipped with
  scikit-learn; Alpaydin & Kaynak 1998).
- ``mnist1d``: MNIST-1D (Greydanus 2020), *generated* here with the ``mnist1d``
  package's ``make_dataset`` (never its download or pickle cache).
- ``toy``: a 1-D regression problem with a gap, a region of inputs with no
  training data, where a model's uncertainty should grow.
- ``mnist:DIR``: the real MNIST IDX files (LeCun et al. 1998) in ``DIR``.

:func:`load` returns a :class:`Dataset` split into train, validation and test,
standardised with the training split's statistics, deterministically by seed.
No function here touches NumPy's or Python's global random state.
"""

from __future__ import annotations

import functools
import gzip
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from droplab._validation import check_int, check_seed, fail

__all__ = [
    "DATASETS",
    "Dataset",
    "load",
    "load_mnist_idx",
    "make_gap_regression",
    "make_mnist1d",
    "read_idx",
    "split_and_standardize",
]

DATASETS = ("digits", "mnist1d", "toy", "mnist:DIR")

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Dataset:
    """A split, standardised data set.

    Attributes:
        name: where it came from (``digits``, ``mnist1d``, ``toy``, ``mnist:DIR``).
        x_train, y_train, x_val, y_val, x_test, y_test: float32 inputs of shape
            (N, features); int64 class labels (classification) or float32 targets
            of shape (N, 1) (regression).
        n_classes: number of classes, 0 for regression.
    """

    name: str
    x_train: FloatArray
    y_train: npt.NDArray[np.generic]
    x_val: FloatArray
    y_val: npt.NDArray[np.generic]
    x_test: FloatArray
    y_test: npt.NDArray[np.generic]
    n_classes: int

    @property
    def n_features(self) -> int:
        """Number of input features."""
        return int(self.x_train.shape[1])

    @property
    def task(self) -> str:
        """``"classification"`` or ``"regression"``."""
        return "classification" if self.n_classes else "regression"


def split_and_standardize(
    x: npt.ArrayLike,
    y: npt.ArrayLike,
    *,
    seed: int,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    name: str = "data",
    n_classes: int = 0,
    standardize_targets: bool = False,
) -> Dataset:
    """Shuffle by ``seed``, split, and standardise inputs with the train statistics.

    Features with zero spread in the training split are centred only (their
    scale is taken as 1), so constant pixels do not produce NaNs.

    Examples:
        >>> x = np.arange(20.0).reshape(10, 2)
        >>> d = split_and_standardize(x, np.arange(10) % 2, seed=0, n_classes=2)
        >>> len(d.x_train), len(d.x_val), len(d.x_test)
        (6, 2, 2)
        >>> bool(abs(d.x_train.mean()) < 1e-6)
        True
    """
    seed = check_seed(seed, owner="split_and_standardize")
    xs = np.asarray(x, dtype=np.float64)
    ys = np.asarray(y)
    if xs.ndim != 2 or len(xs) != len(ys):
        raise fail("x, y", (xs.shape, ys.shape), "arrays (N, features) and (N, ...)")
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1):
        raise fail(
            "val_fraction/test_fraction", (val_fraction, test_fraction), "in [0, 1)"
        )
    n = len(xs)
    order = np.random.default_rng(seed).permutation(n)
    n_test = round(n * test_fraction)
    n_val = round(n * val_fraction)
    if n - n_test - n_val < 1:
        raise fail("x", xs.shape, "at least one training example after the split")
    test, val, train = (
        order[:n_test],
        order[n_test : n_test + n_val],
        order[n_test + n_val :],
    )
    mean = xs[train].mean(axis=0)
    spread = xs[train].std(axis=0)
    spread = np.where(spread > 0, spread, 1.0)

    def inputs(index: npt.NDArray[np.int64]) -> FloatArray:
        return ((xs[index] - mean) / spread).astype(np.float32)

    targets: npt.NDArray[Any]
    if n_classes:
        targets = ys.astype(np.int64)
    else:
        targets = ys.astype(np.float64).reshape(n, -1)
        if standardize_targets:
            t_mean, t_std = targets[train].mean(axis=0), targets[train].std(axis=0)
            targets = (targets - t_mean) / np.where(t_std > 0, t_std, 1.0)
        targets = targets.astype(np.float32)
    return Dataset(
        name,
        inputs(train), targets[train],
        inputs(val), targets[val],
        inputs(test), targets[test],
        n_classes,
    )  # fmt: skip


def make_mnist1d(
    n_samples: int = 4000, *, seed: int = 0
) -> tuple[FloatArray, IntArray]:
    """Generate MNIST-1D locally (signals of length 40, labels 0-9).

    ``mnist1d.make_dataset`` reseeds NumPy's and Python's *global* generators;
    both states are saved and restored around the call, so the caller's random
    streams are untouched.

    Args:
        n_samples: number of signals (a multiple of 10 is used: 10 classes).
        seed: the generator's seed.

    Returns:
        (x, y): float32 array (n, 40) and int64 labels (n,).
    """
    n_samples = check_int(n_samples, "n_samples", low=10, owner="make_mnist1d")
    seed = check_int(seed, "seed", low=0, high=2**32, owner="make_mnist1d")
    x, y = _mnist1d(n_samples, seed)
    return x.copy(), y.copy()  # the cached arrays stay untouched


@functools.lru_cache(maxsize=4)
def _mnist1d(n_samples: int, seed: int) -> tuple[FloatArray, IntArray]:
    """Generate once per process (about 2 s for 4000 signals); callers get copies."""
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = n_samples
    args.seed = seed
    args.train_split = 1.0
    numpy_state = np.random.get_state()  # noqa: NPY002 (restored below)
    python_state = random.getstate()
    try:
        made = make_dataset(args)
    finally:
        np.random.set_state(numpy_state)  # noqa: NPY002
        random.setstate(python_state)
    x = np.asarray(made["x"], dtype=np.float32)
    y = np.asarray(made["y"], dtype=np.int64)
    return x, y


def make_gap_regression(
    n_samples: int = 200,
    *,
    seed: int = 0,
    gap: tuple[float, float] = (-0.5, 0.5),
    noise: float = 0.1,
) -> tuple[FloatArray, FloatArray]:
    """A 1-D regression toy: ``y = sin(3x) + x/2 + noise``, x in [-2, 2] minus a gap.

    No training input falls inside ``gap``, so a model's uncertainty there shows
    whether it knows what it has not seen.

    Returns:
        (x, y): float32 arrays of shape (n, 1).

    Examples:
        >>> x, y = make_gap_regression(50, seed=1)
        >>> x.shape, bool(((x > -0.5) & (x < 0.5)).any())
        ((50, 1), False)
    """
    n_samples = check_int(n_samples, "n_samples", low=1, owner="make_gap_regression")
    rng = np.random.default_rng(check_seed(seed, owner="make_gap_regression"))
    low, high = gap
    # Uniform on [-2, 2] minus (low, high): draw on the shorter interval, then
    # shift the part beyond ``low`` past the gap.
    u = rng.uniform(0.0, 4.0 - (high - low), size=n_samples) - 2.0
    x = np.where(u < low, u, u + (high - low))
    y = np.sin(3.0 * x) + 0.5 * x + noise * rng.standard_normal(n_samples)
    return x.reshape(-1, 1).astype(np.float32), y.reshape(-1, 1).astype(np.float32)


_IDX_TYPES: dict[int, Any] = {
    0x08: np.uint8,
    0x09: np.int8,
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}


def read_idx(path: str | Path) -> npt.NDArray[np.generic]:
    """Read one IDX file (optionally gzipped), checking its header against its size.

    Raises:
        ValueError: bad magic number, unknown element type, or a file shorter or
            longer than its header says (a truncated download).
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        raw = handle.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise ValueError(
            f"{path} is not an IDX file: its magic number is {raw[:4].hex() or 'missing'}; "
            "expected 0000 followed by a type byte (08 for uint8) and the number of dimensions."
        )
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(
            f"{path} is truncated: its header needs {header} bytes, got {len(raw)}."
        )
    shape = tuple(
        int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)
    )
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(
            f"{path} is truncated or corrupt: its header announces shape {shape} "
            f"({expected} bytes of data) but the file holds {len(raw) - header}."
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)


def _find(directory: Path, stem: str) -> Path:
    for candidate in (stem, stem + ".gz", stem.replace("-idx", ".idx")):
        if (directory / candidate).exists():
            return directory / candidate
    raise FileNotFoundError(f"MNIST file {stem}(.gz) not found in {directory}.")


def _pair(directory: Path, prefix: str) -> tuple[FloatArray, IntArray]:
    images_path = _find(directory, f"{prefix}-images-idx3-ubyte")
    labels_path = _find(directory, f"{prefix}-labels-idx1-ubyte")
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(
            f"{images_path} must hold uint8 images (magic 00000803); got {images.ndim}-d {images.dtype}."
        )
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise ValueError(
            f"{labels_path} must hold uint8 labels (magic 00000801); got {labels.ndim}-d {labels.dtype}."
        )
    if len(images) != len(labels):
        raise ValueError(
            f"MNIST {prefix} set is mislabelled: {images_path.name} holds {len(images)} "
            f"images but {labels_path.name} holds {len(labels)} labels."
        )
    label_values = labels.astype(np.int64)
    if label_values.size and int(label_values.max()) > 9:
        bad = int(np.argmax(label_values > 9))
        raise ValueError(
            f"{labels_path} has label {int(labels[bad])} at index {bad}; MNIST labels are 0-9."
        )
    return images.reshape(len(images), -1).astype(np.float32) / 255.0, labels.astype(
        np.int64
    )


def load_mnist_idx(
    directory: str | Path,
) -> tuple[FloatArray, IntArray, FloatArray, IntArray]:
    """Load real MNIST from ``directory`` (``train-*`` and ``t10k-*`` IDX files).

    Returns:
        (x_train, y_train, x_test, y_test), images flattened to 784 values in [0, 1].
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"MNIST directory {directory} does not exist.")
    x_train, y_train = _pair(directory, "train")
    x_test, y_test = _pair(directory, "t10k")
    return x_train, y_train, x_test, y_test


def load(
    name: str = "digits", *, seed: int = 0, n_samples: int | None = None
) -> Dataset:
    """Load a data set by name, split 60/20/20 (train/val/test) by ``seed``.

    ``mnist:DIR`` keeps MNIST's own test set and takes the validation split from
    its training set. ``n_samples`` sizes the generated sets (default 4000 for
    ``mnist1d``, 300 for ``toy``).

    Examples:
        >>> d = load("digits", seed=0)
        >>> d.n_features, d.n_classes, len(d.x_train) + len(d.x_val) + len(d.x_test)
        (64, 10, 1797)
    """
    if not isinstance(name, str):
        raise fail(
            "name", name, "one of " + ", ".join(DATASETS), owner="load", kind=TypeError
        )
    if name == "digits":
        from sklearn.datasets import load_digits

        bunch = load_digits()
        return split_and_standardize(
            bunch.data, bunch.target, seed=seed, name=name, n_classes=10
        )
    if name == "mnist1d":
        x, y = make_mnist1d(n_samples or 4000, seed=seed)
        return split_and_standardize(x, y, seed=seed, name=name, n_classes=10)
    if name == "toy":
        x_toy, y_toy = make_gap_regression(n_samples or 300, seed=seed)
        return split_and_standardize(x_toy, y_toy, seed=seed, name=name)
    if name.startswith("mnist:"):
        x_train, y_train, x_test, y_test = load_mnist_idx(name[len("mnist:") :])
        # Split the official training set into train and validation (5:1) and
        # append the official test set, which then becomes the test split.
        n_test = len(x_test)
        x = np.concatenate([x_test, x_train])
        y = np.concatenate([y_test, y_train])
        return _split_keeping_head(x, y, n_test, seed=seed, name=name)
    raise fail("name", name, "one of " + ", ".join(DATASETS), owner="load")


def _split_keeping_head(
    x: FloatArray, y: IntArray, n_head: int, *, seed: int, name: str
) -> Dataset:
    """Test split = the first ``n_head`` rows; the rest split 5:1 into train/val."""
    order = np.random.default_rng(seed).permutation(len(x) - n_head) + n_head
    n_val = round(len(order) / 6)
    val, train = order[:n_val], order[n_val:]
    if len(train) < 1:
        raise fail("x", x.shape, "at least one training example after the split")
    mean = x[train].mean(axis=0, dtype=np.float64)
    spread = x[train].std(axis=0, dtype=np.float64)
    spread = np.where(spread > 0, spread, 1.0)

    def inputs(index: npt.NDArray[np.int64]) -> FloatArray:
        return ((x[index] - mean) / spread).astype(np.float32)

    test = np.arange(n_head)
    return Dataset(
        name, inputs(train), y[train], inputs(val), y[val], inputs(test), y[test], 10
    )
