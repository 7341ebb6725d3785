"""Shared test set-up: GPU tests skip cleanly on CPU-only machines."""

from __future__ import annotations

import pytest
import torch
from hypothesis import settings

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
