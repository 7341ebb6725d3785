"""Files that are whole or absent: the one atomic writer, and per-task checkpoints.

:func:`write_atomically` is how droplab writes every file a run leaves behind
(lab results, the report page, UCI splits and summaries, sweep summaries,
training checkpoints, task checkpoints): a temporary file in the same folder,
flushed and ``fsync``-ed, made ``0644`` (``mkstemp`` makes it private, and
results are ordinary files to share), then moved into place with
:func:`os.replace`. A crash or Ctrl-C leaves the old file or the new one, never
half of one, and the temporary file is removed when the write fails; a
process killed mid-write (SIGKILL, power loss) leaves a hidden
``.NAME.XXXX.tmp``, which :func:`remove_stale_temporaries` removes on the next
run.

:class:`TaskCheckpoint` keeps one JSON file per finished task. JSON, not pickle:
a results folder shared with others must not run their code when it is read.
Results are encoded with tags for what JSON lacks (tuples, NumPy arrays and
scalars, tensors, dicts with non-string keys, non-finite floats), so a task's
result reads back equal to what it returned. A checkpoint that cannot be read
back (cut short, or written by other code) is named, set aside as
``NAME.json.damaged`` and its task run again.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import pickle
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

__all__ = [
    "TaskCheckpoint",
    "decode",
    "encode",
    "remove_stale_temporaries",
    "write_atomically",
    "write_json",
    "write_text",
]


def write_atomically(path: str | Path, write: Callable[[IO[bytes]], object]) -> Path:
    """Call ``write(stream)`` on a temporary file, then move it to ``path``.

    The folder is created if needed; the file is flushed, ``fsync``-ed and made
    ``0644`` before it replaces ``path``; on any failure (Ctrl-C included) the
    temporary file is removed and ``path`` is left as it was.

    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> write_atomically(folder / "a.txt", lambda f: f.write(b"hi")).read_text()
    'hi'
    >>> oct((folder / "a.txt").stat().st_mode & 0o777)
    '0o644'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"
    )
    try:
        with os.fdopen(handle, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


# A temporary file older than this is from a killed write, not one in progress
# (writes take milliseconds): another process writing in the folder is spared.
STALE_SECONDS = 60.0


def remove_stale_temporaries(
    folder: str | Path, log: Callable[[str], None] | None = None
) -> list[Path]:
    """Remove the ``.NAME.XXXX.tmp`` files a killed :func:`write_atomically` left.

    Only files of that pattern last modified more than :data:`STALE_SECONDS`
    ago; returns them (and tells ``log`` how many went, if any).

    >>> import tempfile, pathlib, os
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> (folder / ".a.json.x1.tmp").write_text("{")
    1
    >>> os.utime(folder / ".a.json.x1.tmp", (0, 0))
    >>> [p.name for p in remove_stale_temporaries(folder)] == [".a.json.x1.tmp"]
    True
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    now = time.time()
    removed = []
    for path in sorted(folder.glob(".*.tmp")):
        try:
            if path.is_file() and now - path.stat().st_mtime > STALE_SECONDS:
                path.unlink()
                removed.append(path)
        except OSError:  # gone meanwhile, or not ours to remove: leave it
            continue
    if removed and log is not None:
        log(
            f"removed {len(removed)} temporary file"
            f"{'' if len(removed) == 1 else 's'} of an interrupted write in {folder}"
        )
    return removed


def write_text(path: str | Path, text: str) -> Path:
    """:func:`write_atomically` of ``text`` in UTF-8."""
    return write_atomically(path, lambda stream: stream.write(text.encode("utf-8")))


def write_json(path: str | Path, payload: Any, **dump: Any) -> Path:
    """:func:`write_atomically` of ``json.dumps(payload, **dump)``."""
    return write_text(path, json.dumps(payload, **dump))


# ----------------------------------------------------------------- JSON codec

_TAG = "__droplab__"


def encode(value: Any) -> Any:
    """``value`` as plain JSON data; :func:`decode` gives it back (equal, same types).

    >>> decode(json.loads(json.dumps(encode({"a": (1, np.float32(0.5))}))))
    {'a': (1, np.float32(0.5))}
    """
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, np.generic):
        return {_TAG: "scalar", "dtype": value.dtype.str, "value": encode(value.item())}
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return {_TAG: "float", "value": repr(value)}
    if isinstance(value, list):
        return [encode(v) for v in value]
    if isinstance(value, tuple):
        return {_TAG: "tuple", "items": [encode(v) for v in value]}
    if isinstance(value, dict):
        if all(isinstance(k, str) and k != _TAG for k in value):
            return {k: encode(v) for k, v in value.items()}
        return {
            _TAG: "dict",
            "items": [[encode(k), encode(v)] for k, v in value.items()],
        }
    if isinstance(value, np.ndarray):
        return {
            _TAG: "ndarray",
            "dtype": value.dtype.str,
            "shape": list(value.shape),
            "data": [encode(v) for v in value.ravel().tolist()],
        }
    if isinstance(value, torch.Tensor):
        array = value.detach().cpu()
        return {
            _TAG: "tensor",
            "dtype": str(array.dtype).removeprefix("torch."),
            "array": encode(
                array.double().numpy()
                if array.is_floating_point() and array.dtype != torch.float64
                else array.numpy()
            ),
        }
    raise TypeError(
        f"a task result must be made of JSON types, tuples, NumPy arrays and "
        f"scalars or tensors; got an object of type {type(value).__qualname__}"
    )


def decode(data: Any) -> Any:
    """The value :func:`encode` encoded."""
    if isinstance(data, list):
        return [decode(v) for v in data]
    if not isinstance(data, dict):
        return data
    kind = data.get(_TAG)
    if kind is None:
        return {k: decode(v) for k, v in data.items()}
    if kind == "float":
        return float(data["value"])
    if kind == "scalar":
        return np.dtype(data["dtype"]).type(decode(data["value"]))
    if kind == "tuple":
        return tuple(decode(v) for v in data["items"])
    if kind == "dict":
        return {decode(k): decode(v) for k, v in data["items"]}
    if kind == "ndarray":
        flat = [decode(v) for v in data["data"]]
        return np.array(flat, dtype=np.dtype(data["dtype"])).reshape(data["shape"])
    if kind == "tensor":
        dtype = getattr(torch, data["dtype"])
        return torch.from_numpy(np.asarray(decode(data["array"]))).to(dtype)
    raise ValueError(f"unknown tag {kind!r} in a task checkpoint")


class TaskCheckpoint:
    """One JSON file per finished task in ``directory``, keyed by the task's identity.

    The key is a hash of the function's module and name and of the item (which
    carries the task's config and seed). Results are written with
    :func:`write_atomically`, so a file is either whole or absent, and read
    with :func:`json.loads`: reading a checkpoint never runs code.

    Args:
        directory: the folder (created on the first save).
        log: told how many tasks a map found saved, and of damaged checkpoints
            (None: say nothing).

    Stale temporary files of a killed write are removed when the checkpoint is
    opened (:func:`remove_stale_temporaries`).
    """

    def __init__(
        self, directory: str | Path, log: Callable[[str], None] | None = None
    ) -> None:
        self.directory = Path(directory)
        self.log = log
        remove_stale_temporaries(self.directory, log)

    @staticmethod
    def key(fn: Callable[[Any], Any], item: Any) -> str:
        # The item's pickle is only hashed here, never loaded.
        identity = f"{fn.__module__}.{fn.__qualname__}".encode()
        return hashlib.sha256(
            identity + b"\0" + pickle.dumps(item, protocol=4)
        ).hexdigest()

    def path(self, key: str) -> Path:
        return self.directory / f"{key[:32]}.json"

    def load(self, key: str) -> tuple[bool, Any]:
        """``(True, result)`` if the task is saved, else ``(False, None)``.

        A damaged file (cut short, not JSON, or not a checkpoint this code
        reads) is renamed ``NAME.json.damaged``, named to ``log``, and the task
        counts as not saved, so it runs again and the checkpoint heals.
        """
        path = self.path(key)
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(saved, dict) or saved.get("key") != key:
                raise ValueError("not a checkpoint of this task")
            return True, decode(saved["result"])
        except FileNotFoundError:
            return False, None
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as error:
            # (json.JSONDecodeError and UnicodeDecodeError are ValueErrors.)
            aside = path.with_name(path.name + ".damaged")
            try:
                os.replace(path, aside)
                where = f"set aside as {aside}"
            except OSError:
                where = "left in place"
            if self.log is not None:
                self.log(
                    f"task checkpoint {path} is damaged ({type(error).__name__}: "
                    f"{error}); {where}, its task runs again"
                )
            return False, None

    def save(self, key: str, result: Any) -> None:
        write_json(self.path(key), {"key": key, "result": encode(result)})

    def __len__(self) -> int:
        if not self.directory.is_dir():
            return 0
        return len(list(self.directory.glob("*.json")))
