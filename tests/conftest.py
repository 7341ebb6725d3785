"""Shared test set-up: GPU tests skip cleanly on CPU-only machines; the launcher
of the tests that run several gloo ranks (``tests/_processes.py``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from hypothesis import settings
from tests._processes import launch

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


@pytest.fixture(scope="session")
def launch_ranks() -> Callable[..., Path]:
    """``launch(test_file, world, folder, *, timeout)``: runs ``worker(rank, world,
    folder)`` of ``test_file`` on ``world`` gloo ranks and returns the folder it
    saved in (see ``tests/_processes.py``)."""
    return launch
