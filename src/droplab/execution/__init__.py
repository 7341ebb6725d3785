"""Scale-out: where independent tasks run, and how their results survive faults.

- :mod:`~droplab.execution.executors`: :class:`LocalExecutor` (the one process
  pool), :class:`RayExecutor`, :func:`checkpointed_map`, :func:`parallel_map`.
- :mod:`~droplab.execution.workers`: the one worker set-up, one-thread tasks,
  SIGTERM handling.
- :mod:`~droplab.execution.storage`: the one atomic writer and the JSON task
  checkpoints.
- :mod:`~droplab.execution.progress`: what a long run shows: a bar on a
  terminal, a heartbeat line at most every 30 s otherwise.

This package depends only on droplab's leaves (:mod:`droplab._validation`).
"""

from droplab.execution.executors import EXECUTOR_HELP as EXECUTOR_HELP
from droplab.execution.executors import Executor as Executor
from droplab.execution.executors import LocalExecutor as LocalExecutor
from droplab.execution.executors import RayExecutor as RayExecutor
from droplab.execution.executors import checkpointed_map as checkpointed_map
from droplab.execution.executors import make_executor as make_executor
from droplab.execution.executors import parallel_map as parallel_map
from droplab.execution.executors import use_executor as use_executor
from droplab.execution.storage import TaskCheckpoint as TaskCheckpoint
from droplab.execution.storage import write_atomically as write_atomically
from droplab.execution.storage import write_json as write_json
from droplab.execution.storage import write_text as write_text
from droplab.execution.workers import one_thread as one_thread

__all__ = [
    "EXECUTOR_HELP",
    "Executor",
    "LocalExecutor",
    "RayExecutor",
    "TaskCheckpoint",
    "checkpointed_map",
    "make_executor",
    "one_thread",
    "parallel_map",
    "use_executor",
    "write_atomically",
    "write_json",
    "write_text",
]
