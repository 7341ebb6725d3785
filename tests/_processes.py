"""Worker processes for the tests that need several ranks: gloo over loopback.

Both halves live here. In the test process, :func:`launch` (the ``launch_ranks``
fixture of ``conftest.py``) starts ``world`` interpreters on this file, as
torchrun would: each its own interpreter, its rank and the world size given
explicitly. In each of them, :func:`main` loads the test file by its path, joins
a gloo process group and calls that file's ``worker(rank, world, folder)``, which
saves what the test checks under ``folder``.

The rendezvous is a file store in ``folder``: no port to pick and race for; gloo
then talks over loopback (``GLOO_SOCKET_IFNAME=lo``).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
from pathlib import Path


def launch(test_file: str, world: int, folder: Path, *, timeout: float) -> Path:
    """Run ``worker`` of ``test_file`` on ``world`` ranks; the folder it saved in.

    A worker killed by a signal (seen: SIGABRT from a C++ runtime thread, about 1
    run in 10 on a loaded 2-core machine, not reproduced alone) is the
    environment, not the code under test: the launch is made once more, fresh,
    in a folder of its own (the one returned). Any other failure fails the test
    with the worker's output.
    """
    for attempt in range(2):
        if attempt:
            folder = folder / "again"
        folder.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    __file__,
                    test_file,
                    str(rank),
                    str(world),
                    str(folder),
                ],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
            for rank in range(world)
        ]
        logs = [
            p.communicate(timeout=timeout)[0].decode(errors="replace") for p in procs
        ]
        codes = [p.returncode for p in procs]
        if not any(code < 0 for code in codes):
            break
    for code, log in zip(codes, logs, strict=True):
        assert code == 0, log
    return folder


def main() -> None:
    """One worker: the test file's ``worker`` inside a gloo process group."""
    cli = argparse.ArgumentParser(description="one rank of a test's workers")
    cli.add_argument("test_file", type=Path)
    cli.add_argument("rank", type=int)
    cli.add_argument("world", type=int)
    cli.add_argument("folder", type=Path)
    options = cli.parse_args()

    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    spec = importlib.util.spec_from_file_location("worker_file", options.test_file)
    assert spec is not None and spec.loader is not None, options.test_file
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    store = options.folder / "rendezvous"
    dist.init_process_group(
        "gloo",
        init_method=f"file://{store}",
        rank=options.rank,
        world_size=options.world,
    )
    try:
        module.worker(options.rank, options.world, options.folder)
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
