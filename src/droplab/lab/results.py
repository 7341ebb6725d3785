"""Results on disk: one JSON file per experiment, written atomically.

A record is ``{"format": "droplab-result", "format_version": 1, "name", "preset",
"config", "config_hash", "code", "seed", "versions", "machine", "started",
"wall_time_s", "result"}``; ``code`` is the fingerprint of the experiment's code
(:func:`droplab.lab.registry.code_fingerprint`): a result is reused only by the
code that made it. It is written to a temporary file in the same folder and moved into
place with :func:`os.replace`, so a crash or Ctrl-C leaves either the old file or
the new one, never half of one. :func:`load_result` refuses (raises
:class:`ResultError`) anything that is not a complete, well-formed record for
the expected experiment; the runner reports it and recomputes.
:func:`output_problem` checks a report folder before any experiment starts.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import platform
import shutil
import sys
import tempfile
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "ResultError",
    "config_dict",
    "config_hash",
    "load_result",
    "machine_info",
    "output_problem",
    "result_path",
    "save_result",
    "versions",
]

FORMAT = "droplab-result"
FORMAT_VERSION = 1
_KEYS = ("name", "preset", "config", "config_hash", "versions", "wall_time_s", "result")


class ResultError(ValueError):
    """A results file that cannot be used: unreadable, corrupt, or not ours."""


def config_dict(config: Any) -> dict[str, Any]:
    """A config dataclass as a JSON-able dict (tuples become lists)."""
    loaded: dict[str, Any] = json.loads(json.dumps(dataclasses.asdict(config)))
    return loaded


def config_hash(config: Any) -> str:
    """SHA-256 of the config's canonical JSON: equal configs, equal hashes.

    >>> from dataclasses import dataclass
    >>> @dataclass(frozen=True)
    ... class C:
    ...     n: int = 1
    >>> config_hash(C()) == config_hash(C(1)) != config_hash(C(2))
    True
    """
    canonical = json.dumps(config_dict(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def versions() -> dict[str, str]:
    """Versions that produced a result: droplab, torch, numpy, python."""
    import numpy
    import torch

    from droplab import __version__

    return {
        "droplab": __version__,
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
    }


def machine_info() -> dict[str, Any]:
    """The machine a result was computed on (no host name).

    ``cpu_model`` and ``torch_cpu_capability`` (the vector instructions torch's
    kernels use: AVX512, AVX2, ...) are kept because float32 training can round
    differently on another instruction set, so a result may differ in its last
    digits between machines while it repeats exactly on one.
    """
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_model": _cpu_model(),
        "cpus": os.cpu_count(),
        "python_implementation": sys.implementation.name,
    }
    torch = sys.modules.get("torch")  # only when already imported: no import here
    if torch is not None:
        info["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    return info


def _cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else platform's guess."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as file:
            for line in file:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def result_path(results_dir: str | Path, name: str) -> Path:
    """``results_dir/NAME.json``."""
    return Path(results_dir) / f"{name}.json"


def save_result(path: str | Path, record: dict[str, Any]) -> Path:
    """Write ``record`` to ``path`` atomically (:func:`droplab.execution.write_json`)."""
    from droplab.execution import write_json  # (imports torch: only to write)

    return write_json(
        path, {"format": FORMAT, "format_version": FORMAT_VERSION, **record}, indent=1
    )


def load_result(path: str | Path, name: str | None = None) -> dict[str, Any]:
    """Read a record, checking it is a complete droplab result (for ``name`` if given).

    Raises:
        ResultError: unreadable or corrupt JSON, another format, a record for
            another experiment, or missing fields.
        FileNotFoundError: no such file.
    """
    path = Path(path)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ResultError(f"{path} is not readable JSON ({error}).") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise ResultError(
            f"{path} is not a droplab result file (no 'format': {FORMAT!r})."
        )
    if record.get("format_version") != FORMAT_VERSION:
        raise ResultError(
            f"{path} has format version {record.get('format_version')!r}; "
            f"this droplab reads {FORMAT_VERSION}."
        )
    missing = [key for key in _KEYS if key not in record]
    if missing:
        raise ResultError(f"{path} lacks {', '.join(missing)}.")
    if name is not None and record["name"] != name:
        raise ResultError(
            f"{path} holds a result for {record['name']!r}, not {name!r}."
        )
    problem = _malformed(record)
    if problem:
        raise ResultError(f"{path} is malformed: {problem}.")
    return record


def _malformed(record: dict[str, Any]) -> str:
    """What is wrong with the fields every record has ("" when nothing is)."""
    if not isinstance(record["name"], str) or not isinstance(
        record["config_hash"], str
    ):
        return "'name' and 'config_hash' must be strings"
    if not isinstance(record["config"], dict):
        return f"'config' must be an object, not {type(record['config']).__name__}"
    wall = record["wall_time_s"]
    if (
        isinstance(wall, bool)
        or not isinstance(wall, (int, float))
        or not math.isfinite(wall)
        or wall < 0
    ):
        return f"'wall_time_s' must be a number of seconds >= 0, not {wall!r}"
    started = record.get("started")
    if started is not None:
        try:
            datetime.fromisoformat(started)
        except (TypeError, ValueError):
            return f"'started' must be an ISO 8601 time, not {started!r}"
    for key in ("code", "preset"):
        if record.get(key) is not None and not isinstance(record[key], str):
            return f"{key!r} must be a string, not {record[key]!r}"
    return ""


# Room a report folder must have before a run starts: the page (a few MB of
# figures) and the results files (tens of kB each), with a wide margin.
MIN_FREE_BYTES = 64 * 2**20


def output_problem(out: str | Path, names: Iterable[str] = ()) -> str:
    """Why ``out`` cannot take a report, in one sentence ("" when it can).

    Checked before any experiment starts, so that an unusable folder costs
    seconds, not the whole run, and without making anything: ``out`` and
    ``out/results`` are folders this process can write in (or, where missing,
    the nearest folder above them is, so they can be made), the disk has
    :data:`MIN_FREE_BYTES` free, and no folder stands where the result of one
    of ``names`` is saved.

    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> output_problem(folder / "new")
    ''
    >>> (folder / "page").write_text("x")
    1
    >>> output_problem(folder / "page")  # doctest: +ELLIPSIS
    '.../page is a file, not a folder'
    """
    out = Path(out)
    results = out / "results"
    for folder in (out, results):
        if folder.exists() and not folder.is_dir():
            return f"{folder} is a file, not a folder"
    existing = results if results.is_dir() else out
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is a file, not a folder"
    for folder in dict.fromkeys((existing, out if out.is_dir() else existing)):
        try:  # the only sure test of "can write here" (root ignores modes)
            with tempfile.TemporaryFile(dir=folder, prefix=".droplab-probe."):
                pass
        except OSError as error:
            return f"cannot write in {folder}: {error.strerror or error}"
    free = shutil.disk_usage(existing).free
    if free < MIN_FREE_BYTES:
        return (
            f"{out} has {free / 2**20:.1f} MiB free; a report needs at least "
            f"{MIN_FREE_BYTES / 2**20:.0f} MiB"
        )
    for name in names:
        path = result_path(results, name)
        if path.exists() and not path.is_file():
            return f"{path} is not a file (the result of {name} is saved there): move it away"
    return ""
