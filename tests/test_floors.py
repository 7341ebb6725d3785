"""The floors in pyproject.toml are versions the tests ran on (issue 31).

pyproject.toml said torch>=2.3 while droplab calls torch.library.custom_op
(torch 2.4), and nothing had run on the floor of torch, NumPy or Numba. Each
floor must now be a version of the recorded run in docs/floors.md.
"""

from __future__ import annotations

import re
from pathlib import Path

from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]


def _floors() -> dict[str, str]:
    """``name -> floor`` of the ``dependencies`` in pyproject.toml."""
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    block = re.search(r"^dependencies = \[(.*?)^\]", text, re.S | re.M)
    assert block is not None
    found = dict(re.findall(r'"([A-Za-z0-9_.-]+)>=([^",;]+)"', block.group(1)))
    assert found, "no floors found"
    return found


def _recorded() -> dict[str, str]:
    """``name -> version`` of the table of the recorded run in docs/floors.md."""
    text = (ROOT / "docs" / "floors.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `([A-Za-z0-9_.-]+)` \| `[^`]*` \| `([^`]+)` \|", text, re.M)
    return {name.lower(): version for name, version in rows}


def test_every_floor_is_a_version_the_tests_ran_on() -> None:
    recorded = _recorded()
    for name, floor in _floors().items():
        assert name.lower() in recorded, f"{name}: no recorded run in docs/floors.md"
        ran = Version(Version(recorded[name.lower()]).public)  # 2.13.0+cpu -> 2.13.0
        assert ran == Version(floor), f"{name}: floor {floor}, the run used {ran}"


def test_the_torch_floor_has_what_droplab_calls() -> None:
    source = "\n".join(
        path.read_text(encoding="utf-8") for path in (ROOT / "src").rglob("*.py")
    )
    if "torch.library.custom_op" in source:  # added in torch 2.4
        assert Version(_floors()["torch"]) >= Version("2.4")
