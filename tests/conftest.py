"""Shared test set-up: GPU tests skip cleanly on CPU-only machines."""

from __future__ import annotations

import os
import tempfile

import pytest
import torch
from hypothesis import settings

# droplab's optional C++ op (droplab.kernels.cpp) is used by every process that
# finds it built in DROPLAB_CPP_DIR. The tests look in an empty folder of their
# own, so a build on this machine cannot change which path they test;
# tests/kernels/test_cpp.py builds it there and checks it.
os.environ["DROPLAB_CPP_DIR"] = tempfile.mkdtemp(prefix="droplab-cpp-tests-")

# No example database on disk: runs are derandomised anyway, and the checkout
# stays clean. Tests still pass their own @settings (max_examples, ...).
settings.register_profile("droplab", database=None)
settings.load_profile("droplab")


def pytest_collection_modifyitems(
    config: pytest.Config, items: list[pytest.Item]
) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
