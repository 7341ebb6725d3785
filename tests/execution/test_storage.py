"""droplab.execution.storage: the one atomic writer and the JSON task checkpoints."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from droplab.execution.storage import (
    TaskCheckpoint,
    decode,
    encode,
    write_atomically,
    write_json,
)


def test_written_files_are_whole_shared_and_leave_no_temporary(tmp_path):
    path = write_json(tmp_path / "a" / "b.json", {"x": 1})
    assert json.loads(path.read_text()) == {"x": 1}
    assert path.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in path.parent.iterdir()] == ["b.json"]


def test_a_failed_write_keeps_the_old_file_and_removes_the_temporary(tmp_path):
    path = write_json(tmp_path / "r.json", {"old": True})

    def broken(stream):
        stream.write(b"{half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomically(path, broken)
    assert json.loads(path.read_text()) == {"old": True}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_task_results_round_trip_through_json_with_their_types():
    value = {
        "a": (1, 2.5, "s", None, True),
        3: [np.float32(0.1), np.int64(7), math.inf, -math.inf],
        "arr": np.arange(6, dtype=np.float32).reshape(2, 3) / 3,
        "t": torch.tensor([0.1, 0.2], dtype=torch.bfloat16),
    }
    back = decode(json.loads(json.dumps(encode(value), allow_nan=False)))
    assert back.keys() == value.keys()
    assert back["a"] == value["a"] and isinstance(back["a"], tuple)
    assert [type(v) for v in back[3]] == [type(v) for v in value[3]]
    assert back[3][:2] == value[3][:2] and back[3][2:] == value[3][2:]
    assert back["arr"].dtype == np.float32 and np.array_equal(back["arr"], value["arr"])
    assert back["t"].dtype == torch.bfloat16 and torch.equal(back["t"], value["t"])
    assert math.isnan(decode(encode(math.nan)))


def test_checkpoints_are_json_not_pickle(tmp_path):
    checkpoint = TaskCheckpoint(tmp_path)
    key = TaskCheckpoint.key(abs, -3)
    checkpoint.save(key, {"loss": np.float64(0.5)})
    (saved,) = tmp_path.iterdir()
    assert saved.suffix == ".json" and json.loads(saved.read_text())["key"] == key
    assert checkpoint.load(key) == (True, {"loss": 0.5})


def test_unknown_result_types_are_refused():
    with pytest.raises(TypeError, match="task result"):
        encode(object())
