"""The one registry of dropout kinds: convert, revert, conversion_plan,
intercept and mc_predict read it; the docs table is generated from it."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import droplab
from droplab.interop.kinds import KINDS, function_rules, kind_of, kinds_table
from droplab.nn import DropPath
from droplab.variants import drop_path

DOCS = Path(__file__).resolve().parents[2] / "docs" / "mc-any-model.md"


class StochasticDepth(nn.Module):
    """What torchvision.ops.StochasticDepth is, as the registry recognises it."""

    def __init__(self, p: float, mode: str) -> None:
        super().__init__()
        self.p, self.mode = p, mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # torchvision's rule
        if not self.training or self.p == 0.0:
            return x
        size = [x.shape[0]] + [1] * (x.ndim - 1) if self.mode == "row" else [1] * x.ndim
        noise = torch.empty(size, dtype=x.dtype).bernoulli_(1 - self.p)
        return x * noise.div_(1 - self.p)


StochasticDepth.__module__ = "torchvision.ops.stochastic_depth"


def test_every_kind_is_one_record_read_by_every_transform() -> None:
    foreign = [kind.foreign for kind in KINDS]
    assert len(set(foreign)) == len(foreign)
    assert (
        "torchvision.ops.StochasticDepth" in foreign
        and "timm.layers.DropPath" in foreign
    )
    rules = function_rules()
    assert (
        F.dropout in rules
        and F.feature_alpha_dropout in rules
        and torch.dropout in rules
    )
    assert kind_of(nn.Dropout(0.1)) is KINDS[0]
    assert kind_of(StochasticDepth(0.1, "row")) is KINDS[-1]

    class MyDropout(nn.Dropout):  # a subclass may have its own forward
        pass

    assert kind_of(MyDropout()) is None


def test_the_docs_table_is_the_registry() -> None:
    text = DOCS.read_text()
    assert kinds_table() in text, (
        "regenerate the table: python -c 'from droplab.interop.kinds import kinds_table; print(kinds_table())'"
    )


@pytest.mark.parametrize("mode", ["row", "batch"])
def test_torchvision_stochastic_depth_converts_with_its_mode(mode: str) -> None:
    model = nn.Sequential(nn.Linear(4, 4), StochasticDepth(0.25, mode))
    plan = droplab.conversion_plan(model)
    assert [(name, cls) for name, cls, _ in plan.swaps] == [("1", "StochasticDepth")]
    droplab.convert(model, seed=3)
    assert isinstance(model[1], DropPath)
    assert (model[1].p, model[1].mode, model[1].scale) == (0.25, mode, "inverted")
    x = torch.ones(6, 4)
    out = model[1](x)
    rows = (out != 0).all(1)
    assert bool(((out == 0).all(1) | rows).all())  # whole rows kept or dropped
    if mode == "batch":
        assert rows.all() or (~rows).all()
        assert model[1].offset == 1
    else:
        assert model[1].offset == 6
    # without torchvision installed revert says why it leaves it; with it,
    # tests/interop/test_modern_models.py checks the way back
    try:
        import torchvision  # noqa: F401
    except ImportError:
        with pytest.warns(UserWarning, match="torchvision is not installed"):
            droplab.revert(model)


def test_drop_path_batch_mode_draws_one_element_per_group() -> None:
    x = torch.ones(6, 3, dtype=torch.float64)
    one = drop_path(x, 0.5, seed=1, mode="batch")
    assert bool((one == one[0, 0]).all())  # one draw for the whole batch
    # a replicated batch is declared on the module (the mc_predict protocol),
    # not through the public function's signature
    module = DropPath(0.5, seed=1, mode="batch")
    assert module.replicated(3) == 1
    grouped = module(x)
    assert module.offset == 3  # one stream element per group
    # group g takes stream element g: the first group equals the one-group draw
    assert torch.equal(grouped[:2], one[:2])
    for g in range(3):
        block = grouped[2 * g : 2 * g + 2]
        assert bool((block == block[0, 0]).all())
    assert "groups" not in inspect.signature(drop_path).parameters
    module.replicated(4)
    with pytest.raises(
        ValueError,
        match=r"'groups' argument of DropPath must be a divisor of the batch size 6; got 4",
    ):
        module(x)
    assert module.offset == 3  # a refused call draws nothing
    with pytest.raises(ValueError, match=r"'mode' argument of drop_path"):
        drop_path(x, 0.5, seed=1, mode="col")


def test_mc_predict_draws_batch_mode_per_pass_whatever_the_chunking() -> None:
    model = nn.Sequential(nn.Tanh(), StochasticDepth(0.5, "batch")).double()
    x = torch.randn(4, 3, dtype=torch.float64)
    a = droplab.mc_predict(model, x, samples=16, seed=2, chunk=16, keep_samples=True)
    b = droplab.mc_predict(model, x, samples=16, seed=2, chunk=3, keep_samples=True)
    converted = droplab.convert(
        nn.Sequential(nn.Tanh(), StochasticDepth(0.5, "batch")).double()
    )
    c = droplab.mc_predict(converted, x, samples=16, seed=2, chunk=5, keep_samples=True)
    assert a.samples is not None and b.samples is not None and c.samples is not None
    assert torch.equal(a.samples, b.samples) and torch.equal(a.samples, c.samples)
    dropped = (a.samples == 0).all(2)  # (T, B): a pass drops all rows or none
    assert bool((dropped.all(1) | (~dropped).all(1)).all())
    assert 0 < int(dropped.all(1).sum()) < 16


def test_stochastic_depth_under_intercept_replays_when_its_draw_site_is_known() -> None:
    # The bernoulli_ of an unknown function is torch's generator: named.
    model = StochasticDepth(0.5, "row").train()
    x = torch.ones(8, 2)
    with pytest.warns(UserWarning, match="Tensor.bernoulli_ in 'StochasticDepth'"):
        with droplab.intercept(seed=0):
            model(x)


def test_weight_scaled_removes_every_registered_kind() -> None:
    model = nn.Sequential(nn.Linear(3, 3), nn.Dropout(0.2), StochasticDepth(0.3, "row"))
    folded = droplab.weight_scaled(model)
    assert [type(m).__name__ for m in folded] == ["Linear", "Identity", "Identity"]
