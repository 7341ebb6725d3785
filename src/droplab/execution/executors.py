"""Where the lab's independent runs execute: local processes (default) or Ray tasks.

- Ray: Moritz et al., "Ray: a distributed framework for emerging AI
  applications", OSDI 2018. https://www.usenix.org/conference/osdi18/presentation/moritz

An :class:`Executor` runs ``fn(item)`` for independent items (each carrying its
own seed, so the result does not depend on where or in which order it runs) and
yields each result *as it finishes*. :func:`checkpointed_map` writes every
result to a folder the moment it arrives and, on a rerun, reads back the ones
already there: a lost worker or a stopped driver loses only the tasks in flight.

``--executor`` specs (:func:`make_executor`):

- ``local`` (default): this machine, ``--jobs`` processes (``spawn``), or the
  calling process when ``jobs == 1``; no Ray needed;
- ``ray``: Ray's own choice (``$RAY_ADDRESS`` if set, else a fresh local Ray);
- ``ray:auto``: the cluster started on this machine with ``ray start``;
- ``ray:HOST:PORT``: the cluster whose head listens there (``ray start --head``
  prints it). Ray is the optional extra ``droplab[distributed]``; every node needs
  the same droplab installed (tasks are module-level functions, sent by name).

Every task runs with one torch thread, so the numbers are bit-identical between
executors and job counts: the float sums inside a matrix product can depend on
the thread count. :class:`LocalExecutor` is droplab's one process pool (workers
started with ``spawn``, set up by :func:`droplab.execution.workers.init_worker`);
:func:`parallel_map` is the in-order map the lab's experiments call.
"""

from __future__ import annotations

import contextlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from contextvars import ContextVar
from pathlib import Path
from typing import Any, TypeVar

from droplab._validation import check_int, fail
from droplab.execution.progress import current as current_progress
from droplab.execution.storage import TaskCheckpoint
from droplab.execution.workers import init_worker, one_thread

__all__ = [
    "EXECUTOR_HELP",
    "Executor",
    "LocalExecutor",
    "RayExecutor",
    "active",
    "checkpointed_map",
    "make_executor",
    "parallel_map",
    "use_executor",
]

EXECUTOR_HELP = (
    "where independent runs execute: local (a pool of --jobs processes, the "
    "default) or ray[:ADDRESS] (Ray tasks; ADDRESS is HOST:PORT of the head, or auto)"
)

Task = Callable[[Any], Any]
T = TypeVar("T")
R = TypeVar("R")


def _one_thread_call(fn: Task, item: Any) -> Any:
    """``fn(item)`` with one torch thread (the count is restored after)."""
    with one_thread():
        return fn(item)


class Executor(ABC):
    """Runs independent tasks and yields ``(index, result)`` as each finishes."""

    name = "executor"

    @abstractmethod
    def imap_unordered(
        self, fn: Task, items: Sequence[Any]
    ) -> Iterator[tuple[int, Any]]:
        """Yield ``(i, fn(items[i]))`` for every ``i``, in order of completion.

        ``fn`` must be a module-level function (it is pickled by name) and the
        items picklable. An exception in a task propagates to the caller.
        """

    def close(self) -> None:  # noqa: B027 - most executors hold nothing
        """Release what the executor holds (processes, a Ray connection)."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LocalExecutor(Executor):
    """``jobs`` processes on this machine (the calling process when ``jobs == 1``).

    Examples:
        >>> sorted(LocalExecutor(1).imap_unordered(abs, [-2, 3]))
        [(0, 2), (1, 3)]
    """

    name = "local"

    def __init__(self, jobs: int = 1) -> None:
        self.jobs = check_int(jobs, "jobs", low=1, owner="LocalExecutor")

    def imap_unordered(
        self, fn: Task, items: Sequence[Any]
    ) -> Iterator[tuple[int, Any]]:
        if self.jobs == 1 or len(items) <= 1:
            for i, item in enumerate(items):
                yield i, _one_thread_call(fn, item)
            return
        import multiprocessing

        context = multiprocessing.get_context("spawn")  # no forked torch state
        with ProcessPoolExecutor(
            max_workers=min(self.jobs, len(items)),
            mp_context=context,
            initializer=init_worker,
        ) as pool:
            pending = {
                pool.submit(_one_thread_call, fn, item): i
                for i, item in enumerate(items)
            }
            try:
                while pending:
                    done, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for future in done:
                        yield pending.pop(future), future.result()
            finally:
                for future in pending:  # stopped early: drop what has not started
                    future.cancel()

    def __repr__(self) -> str:
        return f"LocalExecutor(jobs={self.jobs})"


class RayExecutor(Executor):
    """Each item a Ray task (one CPU each) on the cluster at ``address``.

    Args:
        address: ``None`` (``$RAY_ADDRESS``, else a fresh local Ray), ``"auto"``
            (the cluster started on this machine) or ``"HOST:PORT"`` of the head.
        max_retries: times Ray reruns a task whose worker died (Ray's default 3).

    Ray is connected on first use and disconnected by :meth:`close`.
    """

    name = "ray"

    def __init__(self, address: str | None = None, *, max_retries: int = 3) -> None:
        self.address = address
        self.max_retries = check_int(
            max_retries, "max_retries", low=0, owner="RayExecutor"
        )
        self._connected_here = False

    def _ray(self) -> Any:
        try:
            import ray
        except ImportError:
            raise ImportError(
                "--executor ray needs Ray: pip install 'droplab[distributed]'"
            ) from None
        if not ray.is_initialized():
            ray.init(
                address=self.address, logging_level=logging.WARNING, log_to_driver=False
            )
            self._connected_here = True
        return ray

    def imap_unordered(
        self, fn: Task, items: Sequence[Any]
    ) -> Iterator[tuple[int, Any]]:
        ray = self._ray()
        remote = ray.remote(num_cpus=1, max_retries=self.max_retries)(_one_thread_call)
        pending = {remote.remote(fn, item): i for i, item in enumerate(items)}
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    yield pending.pop(ref), ray.get(ref)
        finally:
            for ref in pending:  # stopped early: do not leave work on the cluster
                ray.cancel(ref)

    def close(self) -> None:
        if self._connected_here:
            import ray

            ray.shutdown()
            self._connected_here = False

    def __repr__(self) -> str:
        return f"RayExecutor(address={self.address!r})"


def make_executor(spec: str = "local", *, jobs: int = 1) -> Executor:
    """The executor for an ``--executor`` value (see the module doc).

    ``jobs`` sizes the local pool; a Ray cluster runs as many tasks at once as
    it has CPUs.

    Examples:
        >>> make_executor("local", jobs=2), make_executor("ray:10.0.0.1:6379")
        (LocalExecutor(jobs=2), RayExecutor(address='10.0.0.1:6379'))
        >>> make_executor("dask")
        Traceback (most recent call last):
        ...
        ValueError: The 'executor' argument must be local, ray or ray:ADDRESS; got 'dask'.
    """
    if not isinstance(spec, str):
        raise fail("executor", spec, "a string", kind=TypeError)
    if spec == "local":
        return LocalExecutor(jobs)
    if spec == "ray":
        return RayExecutor(None)
    if spec.startswith("ray:") and len(spec) > len("ray:"):
        return RayExecutor(spec[len("ray:") :])
    raise fail("executor", spec, "local, ray or ray:ADDRESS")


def checkpointed_map(
    executor: Executor,
    fn: Task,
    items: Sequence[Any],
    *,
    checkpoint: TaskCheckpoint | None = None,
    progress: Callable[[], None] | None = None,
) -> list[Any]:
    """``[fn(item) for item in items]`` on ``executor``, saving each as it finishes.

    Tasks already in ``checkpoint`` are read, not run; each new result is saved
    the moment it arrives, so an interruption loses only the tasks in flight.

    Examples:
        >>> checkpointed_map(LocalExecutor(1), abs, [-1, 2, -3])
        [1, 2, 3]
    """
    results: list[Any] = [None] * len(items)
    keys = (
        [TaskCheckpoint.key(fn, item) for item in items]
        if checkpoint is not None
        else []
    )
    todo = []
    for i in range(len(items)):
        found, value = (
            checkpoint.load(keys[i]) if checkpoint is not None else (False, None)
        )
        if found:
            results[i] = value
            if progress is not None:
                progress()
        else:
            todo.append(i)
    restored = len(items) - len(todo)
    if checkpoint is not None and checkpoint.log is not None and restored:
        checkpoint.log(
            f"{restored} of {len(items)} tasks restored from {checkpoint.directory}"
        )
    for j, value in executor.imap_unordered(fn, [items[i] for i in todo]):
        i = todo[j]
        if checkpoint is not None:
            checkpoint.save(keys[i], value)
        results[i] = value
        if progress is not None:
            progress()
    return results


# The executor chosen by a command line, for code that maps tasks without being
# handed one (parallel_map asks for it). A context variable: a block in one
# thread does not leak into another.
_ACTIVE: ContextVar[tuple[Executor, TaskCheckpoint | None] | None] = ContextVar(
    "droplab_executor", default=None
)


def active() -> tuple[Executor, TaskCheckpoint | None] | None:
    """The ``(executor, checkpoint)`` of the innermost :func:`use_executor` block."""
    return _ACTIVE.get()


@contextlib.contextmanager
def use_executor(
    executor: Executor,
    checkpoint: str | Path | None = None,
    log: Callable[[str], None] | None = None,
) -> Iterator[Executor]:
    """Within the block, ``parallel_map`` runs its tasks on ``executor``.

    Args:
        executor: where tasks run; closed when the block ends.
        checkpoint: a folder where each finished task is saved and from which a
            rerun reads it back (None: no checkpoint).
        log: told how many tasks a map restored (None: say nothing).
    """
    saved = None if checkpoint is None else TaskCheckpoint(checkpoint, log=log)
    token = _ACTIVE.set((executor, saved))
    try:
        with executor:
            yield executor
    finally:
        _ACTIVE.reset(token)


def _task_counter(total: int) -> Callable[[], None] | None:
    """A callback that counts finished tasks on the current progress, if any."""
    shown = current_progress()
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
    """``[fn(item) for item in items]``, in order, with the same numbers for any ``jobs``.

    Each task carries everything it needs (its own seed included), so its
    result does not depend on which worker runs it or in which order. The tasks
    run on the executor of the innermost :func:`use_executor` block (``droplab
    report --executor``, with its task checkpoint), else on a
    ``LocalExecutor(jobs)``: this process when ``jobs == 1``.

    Args:
        fn: a module-level function (it is pickled to the workers by name).
        items: independent tasks (picklable), each with its own seed.
        jobs: processes of the local pool; 1 runs in this process.
        progress: called once per finished task (e.g. a progress bar's update);
            by default the tasks are counted on the current
            :class:`droplab.execution.progress.Progress`, if there is one.

    Returns:
        The results in the order of ``items``.

    Examples:
        >>> parallel_map(abs, [-1, 2, -3])
        [1, 2, 3]
    """
    jobs = check_int(jobs, "jobs", low=1, owner="parallel_map")
    tasks: Sequence[T] = list(items)
    if progress is None:  # tell the command's progress, if any
        progress = _task_counter(len(tasks))
    chosen = active()
    if chosen is not None:
        executor, checkpoint = chosen
        return checkpointed_map(
            executor, fn, tasks, checkpoint=checkpoint, progress=progress
        )
    with LocalExecutor(jobs) as local:
        return checkpointed_map(local, fn, tasks, progress=progress)
