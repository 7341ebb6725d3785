"""droplab._core.stream: words drawn on the device give the CPU's numbers.

A CUDA device draws its words with the Triton kernel (kernels.stream_words).
Without a GPU, Triton's interpreter runs that kernel on CPU tensors, and
``words_on_device`` is told to say yes, so the device path is checked here
against the NumPy path it replaces.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from droplab import kernels
from droplab._core.stream import keep_mask, normal_noise, uniform_noise
from droplab.rng import random_words

pytest.importorskip("triton")

CASES = [(0, 0), (7, 3), (2**63 + 5, 4 * 2**32 - 6)]


@pytest.fixture
def device_words(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setattr(kernels, "words_on_device", lambda device: True)


@pytest.mark.parametrize(("seed", "offset"), CASES)
def test_device_words_are_the_stream(device_words, seed, offset):
    words = kernels.stream_words(37, seed=seed, offset=offset, device="cpu")
    assert words.dtype == torch.int64
    assert np.array_equal(
        words.numpy(), random_words(seed, offset, 37).astype(np.int64)
    )


@pytest.mark.parametrize(("seed", "offset"), CASES)
def test_device_noise_and_masks_match_the_numpy_path(monkeypatch, seed, offset):
    args = {"seed": seed, "offset": offset, "device": "cpu"}
    u = uniform_noise((5, 7), dtype=torch.float64, **args)
    z = normal_noise((5, 7), dtype=torch.float64, **args)
    keep = keep_mask((4, 3, 5), 0.3, shared_dims=(2,), **args)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setattr(kernels, "words_on_device", lambda device: True)
    assert torch.equal(uniform_noise((5, 7), dtype=torch.float64, **args), u)
    assert torch.allclose(
        normal_noise((5, 7), dtype=torch.float64, **args), z, rtol=1e-13, atol=1e-13
    )
    assert torch.equal(keep_mask((4, 3, 5), 0.3, shared_dims=(2,), **args), keep)


@pytest.mark.gpu
@pytest.mark.parametrize(("seed", "offset"), CASES)
def test_cuda_noise_and_masks_match_the_cpu(seed, offset):
    # On a real GPU: the words come from the Triton kernel on the device.
    cpu = {"seed": seed, "offset": offset, "device": "cpu"}
    cuda = {"seed": seed, "offset": offset, "device": "cuda"}
    shape = (64, 33)
    assert torch.equal(
        uniform_noise(shape, dtype=torch.float64, **cuda).cpu(),
        uniform_noise(shape, dtype=torch.float64, **cpu),
    )
    assert torch.allclose(
        normal_noise(shape, dtype=torch.float64, **cuda).cpu(),
        normal_noise(shape, dtype=torch.float64, **cpu),
        rtol=1e-13,
        atol=1e-13,
    )
    assert torch.equal(
        keep_mask((8, 3, 65), 0.3, shared_dims=(2,), **cuda).cpu(),
        keep_mask((8, 3, 65), 0.3, shared_dims=(2,), **cpu),
    )
