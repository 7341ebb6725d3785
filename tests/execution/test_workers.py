"""Pool workers do not outlive their parent (SIGTERM or SIGKILL of the parent)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

SCRIPT = """
import os, sys, time
from pathlib import Path

from droplab.execution.workers import stop_children_on_sigterm
from droplab.execution import parallel_map

OUT = Path(sys.argv[1])


def slow(k):
    (OUT / f"worker-{k}").write_text(str(os.getpid()))
    time.sleep(120)
    return k


if __name__ == "__main__":
    try:
        with stop_children_on_sigterm():
            parallel_map(slow, [0, 1], jobs=2)
    except KeyboardInterrupt as stop:
        (OUT / "parent").write_text(type(stop).__name__)
        sys.exit(143)
"""


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by its new parent) counts as gone
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return False
    return state != "Z"


def wait_for(condition: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL])
def test_workers_end_with_their_parent(tmp_path: Path, how: signal.Signals) -> None:
    script = tmp_path / "pool.py"
    script.write_text(SCRIPT)
    parent = subprocess.Popen([sys.executable, str(script), str(tmp_path)])
    try:
        assert wait_for(lambda: len(list(tmp_path.glob("worker-*"))) == 2, 120)
        workers = [int(p.read_text()) for p in tmp_path.glob("worker-*")]
        assert all(alive(pid) for pid in workers)
        parent.send_signal(how)
        code = parent.wait(timeout=60)
        if how == signal.SIGTERM:  # stopped like Ctrl-C, with its own exit code
            assert code == 143
            assert (tmp_path / "parent").read_text() == "Terminated"
        assert wait_for(lambda: not any(alive(pid) for pid in workers), 10)
    finally:
        parent.kill()
        for p in tmp_path.glob("worker-*"):
            try:
                os.kill(int(p.read_text()), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
