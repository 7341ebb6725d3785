"""The README's "In your model" example runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

README = Path(__file__).resolve().parents[2] / "README.md"


def examples() -> list[str]:
    text = README.read_text(encoding="utf-8")
    section = text.split("## In your model", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


@pytest.mark.filterwarnings(
    "ignore:`torch.jit.script_method` is deprecated:DeprecationWarning"
)
@torch._inductor.config.patch(fx_graph_cache=False)  # see tests/core/test_compile.py
@torch._functorch.config.patch(enable_autograd_cache=False)
def test_the_in_your_model_example_runs() -> None:
    code, _ = examples()
    assert len(code.strip().splitlines()) <= 16
    torch._dynamo.reset()
    scope: dict[str, object] = {}
    exec(compile(code, str(README), "exec"), scope)
    torch._dynamo.reset()
    assert isinstance(scope["y"], torch.Tensor)


@pytest.mark.timm
def test_the_transformer_example_runs() -> None:
    pytest.importorskip(
        "transformers",
        reason="the README's BERT example needs transformers (not a droplab "
        "dependency; the timm extra brings it), as the README says",
    )
    _, code = examples()
    scope: dict[str, object] = {}
    exec(compile(code, str(README), "exec"), scope)
    prediction = scope["prediction"]
    assert prediction.mean.shape == (4, 3)  # type: ignore[attr-defined]
    assert bool((prediction.mutual_information > 0).all())  # type: ignore[attr-defined]
