"""Map independent training runs over processes, with the same numbers for any ``jobs``.

Each task carries everything it needs (its own seed included), so its result
does not depend on which worker runs it or in which order. Every task runs with
``torch.set_num_threads(1)``, in the main process too when ``jobs == 1``: the
float sums inside a matrix product can depend on the thread count, and this
keeps results bit-identical across ``--jobs``. Workers are started with the
``spawn`` method (no forked torch state).
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any, TypeVar

from droplab._validation import check_int
from droplab._workers import init_worker, one_thread, watch_parent

__all__ = ["init_worker", "one_thread", "parallel_map", "watch_parent"]

T = TypeVar("T")
R = TypeVar("R")


def _call(fn: Callable[[Any], Any], item: Any) -> Any:
    return fn(item)


def _task_counter(total: int) -> Callable[[], None] | None:
    from droplab.progress import current

    shown = current()
    if shown is None or total <= 1:
        return None
    done = [0]
    shown.step(0, total, "task", label="training runs")

    def tick() -> None:
        done[0] += 1
        shown.step(done[0], total, "task", label="training runs")

    return tick


def parallel_map(
    fn: Callable[[T], R],
    items: Iterable[T],
    *,
    jobs: int = 1,
    progress: Callable[[], None] | None = None,
) -> list[R]:
    """``[fn(item) for item in items]``, in order, over ``jobs`` processes.

    Args:
        fn: a module-level function (it is pickled to the workers).
        items: independent tasks (picklable), each with its own seed.
        jobs: number of processes; 1 runs in this process.
        progress: called once per finished task (e.g. a progress bar's update);
            by default the tasks are counted on the current
            :class:`droplab.progress.Progress`, if there is one.

    Returns:
        The results in the order of ``items``.

    Examples:
        >>> parallel_map(abs, [-1, 2, -3])
        [1, 2, 3]
    """
    jobs = check_int(jobs, "jobs", low=1, owner="parallel_map")
    tasks: Sequence[T] = list(items)
    if progress is None:  # tell the command's progress (droplab.progress), if any
        progress = _task_counter(len(tasks))
    # --- droplab.executors (issue 8): `--executor` chose where tasks run, and a
    # checkpoint folder that keeps each finished task for a rerun.
    from droplab import executors

    chosen = executors.active()
    if chosen is not None:
        executor, checkpoint = chosen
        return executors.checkpointed_map(
            executor, fn, tasks, checkpoint=checkpoint, progress=progress
        )
    # --- end of droplab.executors
    if jobs == 1 or len(tasks) <= 1:
        results = []
        with one_thread():
            for task in tasks:
                results.append(fn(task))
                if progress is not None:
                    progress()
        return results
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        max_workers=min(jobs, len(tasks)), mp_context=context, initializer=init_worker
    ) as pool:
        futures = [pool.submit(_call, fn, task) for task in tasks]
        out = []
        for future in futures:
            out.append(future.result())
            if progress is not None:
                progress()
        return out
