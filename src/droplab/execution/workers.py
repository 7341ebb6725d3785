"""Set-up of droplab's worker processes: the one set-up of the one pool, threads, signals.

:class:`droplab.execution.LocalExecutor` starts its workers with
:func:`init_worker`; :func:`one_thread` runs a task with one torch thread in
any process; :func:`stop_children_on_sigterm` makes SIGTERM stop a command
the way Ctrl-C does.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Iterator
from types import FrameType

__all__ = [
    "Terminated",
    "init_worker",
    "one_thread",
    "stop_children_on_sigterm",
    "watch_parent",
]


class Terminated(KeyboardInterrupt):
    """Raised in the main thread when the process receives SIGTERM."""


@contextlib.contextmanager
def stop_children_on_sigterm() -> Iterator[None]:
    """While inside, SIGTERM ends this process's pool workers and raises
    :class:`Terminated` (a KeyboardInterrupt), so the run stops the way Ctrl-C
    stops it: finished results stay saved, temporary files are removed, no
    worker is left running. Outside the main thread it does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        for child in multiprocessing.active_children():
            child.terminate()
        raise Terminated(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run the body with one torch thread, restoring the previous count after.

    droplab's CPU kernels follow torch's thread count. Numba's own count is
    left alone on purpose: the kernels do not use Numba's thread pool, and
    setting the count starts that pool, whose idle workers made small training
    steps about ten times slower on 2 cores (measured on the UCI networks).
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def watch_parent(interval: float = 0.5) -> None:
    """End this (worker) process within ``interval`` s of its parent's death.

    A pool's worker busy with a long task does not notice that the process
    that started it was killed (SIGTERM, SIGKILL, an out-of-memory kill) and
    would run on as an orphan. A daemon thread compares the parent's pid with
    the one seen at start and calls ``os._exit`` when it changes.
    """
    parent = os.getppid()

    def check() -> None:
        while True:
            time.sleep(interval)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=check, name="droplab-watch-parent", daemon=True).start()


def init_worker() -> None:
    """Initializer of droplab's process pool: one torch thread, watch the parent."""
    import torch

    torch.set_num_threads(1)
    watch_parent()
