"""Built-in data sets and the MNIST IDX loader (on small IDX files written here)."""

from __future__ import annotations

import gzip
import random
import struct
from pathlib import Path

import numpy as np
import pytest

from droplab.lab import data


def test_digits_split_sizes_and_standardisation() -> None:
    d = data.load("digits", seed=0)
    assert (d.n_features, d.n_classes, d.task) == (64, 10, "classification")
    sizes = len(d.x_train), len(d.x_val), len(d.x_test)
    assert sum(sizes) == 1797
    assert sizes == (1797 - 2 * round(1797 * 0.2), round(1797 * 0.2), round(1797 * 0.2))
    assert d.x_train.dtype == np.float32 and d.y_train.dtype == np.int64
    spread = d.x_train.std(axis=0)
    varying = spread > 0
    assert np.allclose(d.x_train.mean(axis=0), 0.0, atol=1e-5)
    assert np.allclose(spread[varying], 1.0, atol=1e-4)
    assert np.isfinite(d.x_test).all()


def test_splits_are_deterministic_by_seed() -> None:
    a, b, c = (
        data.load("digits", seed=1),
        data.load("digits", seed=1),
        data.load("digits", seed=2),
    )
    assert np.array_equal(a.x_train, b.x_train) and np.array_equal(a.y_test, b.y_test)
    assert not np.array_equal(a.y_train, c.y_train)


def test_mnist1d_is_generated_and_leaves_global_random_state_alone() -> None:
    np_before = np.random.get_state()[1].copy()  # noqa: NPY002 - checking it is untouched
    py_before = random.getstate()
    x, y = data.make_mnist1d(200, seed=3)
    assert np.array_equal(np.random.get_state()[1], np_before)  # noqa: NPY002
    assert random.getstate() == py_before
    assert x.shape == (200, 40) and x.dtype == np.float32
    assert sorted(np.unique(y).tolist()) == list(range(10))
    expected = x.copy()
    x[:] = 0.0  # the generator caches per process; callers get their own copies
    x2, y2 = data.make_mnist1d(200, seed=3)
    assert np.array_equal(expected, x2) and np.array_equal(y, y2)
    x = expected
    x3, _ = data.make_mnist1d(200, seed=4)
    assert not np.array_equal(x, x3)


def test_mnist1d_load() -> None:
    d = data.load("mnist1d", seed=0, n_samples=300)
    assert d.n_features == 40 and len(d.x_train) + len(d.x_val) + len(d.x_test) == 300


def test_gap_regression_has_no_training_inputs_in_the_gap() -> None:
    x, y = data.make_gap_regression(500, seed=0, gap=(-0.5, 0.5))
    assert x.shape == y.shape == (500, 1)
    assert x.min() >= -2.0 and x.max() <= 2.0
    assert not ((x > -0.5) & (x < 0.5)).any()
    assert (x < -0.5).any() and (x > 0.5).any()
    d = data.load("toy", seed=0)
    assert d.task == "regression" and d.n_classes == 0 and d.y_train.shape[1] == 1


def test_unknown_data_name() -> None:
    with pytest.raises(
        ValueError,
        match=r"The 'name' argument of load must be one of digits, mnist1d, toy, mnist:DIR; got 'cifar'",
    ):
        data.load("cifar")
    with pytest.raises(TypeError, match="'name' argument of load"):
        data.load(3)  # type: ignore[arg-type]


def test_split_needs_a_training_example() -> None:
    with pytest.raises(ValueError, match="at least one training example"):
        data.split_and_standardize(
            np.ones((2, 1)), [0, 1], seed=0, val_fraction=0.5, test_fraction=0.5
        )


# ----------------------------------------------------------------------------- IDX files


def _idx(array: np.ndarray, type_byte: int = 0x08) -> bytes:
    header = bytes([0, 0, type_byte, array.ndim]) + b"".join(
        struct.pack(">I", s) for s in array.shape
    )
    return header + array.astype(np.uint8).tobytes()


def _write_mnist(
    folder: Path, *, n_train: int = 12, n_test: int = 5, gz: bool = False
) -> None:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 4, 4))
        labels = np.arange(n) % 10
        for stem, payload in (
            (f"{prefix}-images-idx3-ubyte", _idx(images)),
            (f"{prefix}-labels-idx1-ubyte", _idx(labels)),
        ):
            if gz:
                (folder / (stem + ".gz")).write_bytes(gzip.compress(payload))
            else:
                (folder / stem).write_bytes(payload)


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_idx_loads(tmp_path: Path, gz: bool) -> None:
    _write_mnist(tmp_path, gz=gz)
    x_train, _, x_test, y_test = data.load_mnist_idx(tmp_path)
    assert x_train.shape == (12, 16) and x_test.shape == (5, 16)
    assert 0.0 <= x_train.min() and x_train.max() <= 1.0
    assert y_test.tolist() == [0, 1, 2, 3, 4]
    d = data.load(f"mnist:{tmp_path}", seed=0)
    assert len(d.x_test) == 5 and d.y_test.tolist() == [0, 1, 2, 3, 4]
    assert len(d.x_train) + len(d.x_val) == 12 and len(d.x_val) == 2
    assert d.n_features == 16 and d.n_classes == 10


def test_mnist_idx_truncated(tmp_path: Path) -> None:
    _write_mnist(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(
        ValueError,
        match=r"truncated or corrupt: its header announces shape \(12, 4, 4\)",
    ):
        data.load_mnist_idx(tmp_path)
    path.write_bytes(path.read_bytes()[:6])
    with pytest.raises(ValueError, match="truncated: its header needs 16 bytes"):
        data.read_idx(path)


def test_mnist_idx_wrong_magic(tmp_path: Path) -> None:
    _write_mnist(tmp_path)
    path = tmp_path / "t10k-labels-idx1-ubyte"
    path.write_bytes(b"\x1f\x8b" + path.read_bytes()[2:])
    with pytest.raises(
        ValueError, match="is not an IDX file: its magic number is 1f8b0801"
    ):
        data.load_mnist_idx(tmp_path)


def test_mnist_idx_images_and_labels_swapped(tmp_path: Path) -> None:
    _write_mnist(tmp_path)
    images = tmp_path / "train-images-idx3-ubyte"
    labels = tmp_path / "train-labels-idx1-ubyte"
    a, b = images.read_bytes(), labels.read_bytes()
    images.write_bytes(b)
    labels.write_bytes(a)
    with pytest.raises(
        ValueError, match=r"must hold uint8 images \(magic 00000803\); got 1-d"
    ):
        data.load_mnist_idx(tmp_path)


def test_mnist_idx_count_mismatch(tmp_path: Path) -> None:
    _write_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(_idx(np.arange(4)))
    with pytest.raises(
        ValueError,
        match="mislabelled: t10k-images-idx3-ubyte holds 5 images but t10k-labels-idx1-ubyte holds 4 labels",
    ):
        data.load_mnist_idx(tmp_path)


def test_mnist_idx_label_out_of_range(tmp_path: Path) -> None:
    _write_mnist(tmp_path)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(
        _idx(np.array([0, 1, 2, 11] + [0] * 8))
    )
    with pytest.raises(
        ValueError, match="has label 11 at index 3; MNIST labels are 0-9"
    ):
        data.load_mnist_idx(tmp_path)


def test_mnist_missing_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        data.load_mnist_idx(tmp_path / "nowhere")
    with pytest.raises(
        FileNotFoundError, match=r"train-images-idx3-ubyte\(.gz\) not found"
    ):
        data.load_mnist_idx(tmp_path)
