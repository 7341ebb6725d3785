"""``import droplab``: light (no PyTorch), yet enough for what PyTorch loads.

Issue 31: a program saved with ``torch.export.save`` failed to load in a fresh
process after ``import droplab`` ("failed to resolve torch.ops.droplab.snapshot"),
because the lazy package no longer registered its operators.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import droplab.nn

SAVE = """
import torch, droplab.nn
torch.manual_seed(0)
model = torch.nn.Sequential(
    torch.nn.Linear(3, 4), droplab.nn.Dropout(0.5, seed=1),
    droplab.nn.AlphaDropout(0.2, seed=2), droplab.nn.GaussianDropout(0.3, seed=3),
).train()
x = torch.ones(2, 3)
program = torch.export.export(model, (x,))
torch.export.save(program, sys.argv[1] + "/program.pt2")
torch.save(program.module()(x), sys.argv[1] + "/expected.pt")
model(x)  # the stream moves on
torch.save(model, sys.argv[1] + "/model.pt")
torch.save(model.state_dict(), sys.argv[1] + "/state.pt")
with open(sys.argv[1] + "/stream.txt", "w") as file:
    file.write(f"{model[1].seed} {model[1].offset}")
"""


def _python(code: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("saved")
    _python("import sys\n" + SAVE, str(folder))
    return folder


@pytest.mark.parametrize("order", ["import droplab, torch", "import torch, droplab"])
def test_a_fresh_process_loads_an_exported_program_after_import_droplab(
    saved: Path, order: str
) -> None:
    out = _python(
        f"""
        import sys
        {order}
        program = torch.export.load(sys.argv[1] + "/program.pt2")
        got = program.module()(torch.ones(2, 3))
        print(torch.equal(got, torch.load(sys.argv[1] + "/expected.pt")))
        """,
        str(saved),
    )
    assert out.strip() == "True"


def test_a_fresh_process_loads_a_saved_model_and_state_dict_after_import_droplab(
    saved: Path,
) -> None:
    out = _python(
        """
        import sys
        import droplab, torch
        model = torch.load(sys.argv[1] + "/model.pt", weights_only=False)
        model[1].offset = 0
        state = torch.load(sys.argv[1] + "/state.pt", weights_only=True)
        model.load_state_dict(state)
        print(model[1].seed, model[1].offset)
        """,
        str(saved),
    )
    seed, offset = (saved / "stream.txt").read_text().split()
    assert out.split() == [seed, offset] and int(offset) > 0


def test_import_droplab_still_imports_no_torch() -> None:
    out = _python("import sys, droplab; print('torch' in sys.modules)")
    assert out.strip() == "False"


def test_the_operators_are_registered_in_this_process() -> None:
    assert droplab.nn.Dropout is not None
    for name in ("snapshot", "draw_key", "masked_scale"):
        assert hasattr(torch.ops.droplab, name)
