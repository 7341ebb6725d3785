"""droplab.convert: torch's dropout modules swapped for droplab's, and reported."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

import droplab
import droplab.nn as dnn


def zoo() -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(4, 4),
        nn.Dropout(0.1, inplace=True),
        nn.Sequential(nn.Dropout1d(0.2), nn.Dropout2d(0.3), nn.Dropout3d(0.4)),
        nn.AlphaDropout(0.5),
        nn.FeatureAlphaDropout(0.6),
        dnn.Dropout(0.7, seed=1),  # droplab's own: left alone
        nn.MultiheadAttention(4, 2, dropout=0.25),
        nn.LSTM(4, 4, num_layers=2, dropout=0.5),
    )


def test_every_torch_dropout_is_swapped_with_its_arguments_and_mode() -> None:
    model = zoo().eval()
    model[2][1].train()
    with pytest.warns(UserWarning, match=r"left 2 dropout\(s\).*'?6'?: Multihead"):
        assert droplab.convert(model) is model
    expected = {
        "1": (dnn.Dropout, 0.1, True),
        "2.0": (dnn.Dropout1d, 0.2, False),
        "2.1": (dnn.Dropout2d, 0.3, False),
        "2.2": (dnn.Dropout3d, 0.4, False),
        "3": (dnn.AlphaDropout, 0.5, None),
        "4": (dnn.FeatureAlphaDropout, 0.6, None),
    }
    modules = dict(model.named_modules())
    for name, (cls, p, inplace) in expected.items():
        new = modules[name]
        assert type(new) is cls and new.p == p and new.seed is None
        if inplace is not None:
            assert new.inplace is inplace
    assert modules["2.1"].training and not modules["2.0"].training
    assert modules["5"].seed == 1  # untouched
    assert not any(
        type(m) in droplab.interop.kinds.TORCH_DROPOUTS for m in model.modules()
    )


def test_the_plan_lists_what_cannot_be_mapped_and_convert_logs_each_swap(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class HomeMadeDropout(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

    class Subclassed(nn.Dropout):
        pass

    model = nn.Sequential(zoo(), HomeMadeDropout(), Subclassed(0.5))
    plan = droplab.conversion_plan(model)
    assert [name for name, _, _ in plan.swaps] == [
        "0.1",
        "0.2.0",
        "0.2.1",
        "0.2.2",
        "0.3",
        "0.4",
    ]
    reasons = dict(plan.unmapped)
    assert set(reasons) == {"0.6", "0.7", "1", "2"}
    assert "fused RNN kernel" in reasons["0.7"]
    assert "not a class droplab maps" in reasons["1"] and "Subclassed" in reasons["2"]
    with caplog.at_level(logging.INFO, logger="droplab"), pytest.warns(UserWarning):
        droplab.convert(model)
    assert "0.2.1: Dropout2d -> droplab Dropout2d(p=0.3" in caplog.text


def test_a_seed_gives_distinct_derived_seeds_and_replays_the_model() -> None:
    def make() -> nn.Sequential:
        torch.manual_seed(0)
        return nn.Sequential(
            nn.Linear(6, 16),
            nn.Dropout(0.5),
            nn.ReLU(),
            nn.Dropout(0.5),
            nn.Linear(16, 2),
        )

    a, b = droplab.convert(make(), seed=7), droplab.convert(make(), seed=7)
    assert a[1].seed == droplab.rng.path_seed(7, "1") != a[3].seed
    x = torch.randn(5, 6)
    assert torch.equal(a(x), b(x)) and torch.equal(a(x), b(x))
    assert not torch.equal(a(x), droplab.convert(make(), seed=8)(x))


def test_convert_seeds_follow_module_paths_so_pipeline_stages_keep_them() -> None:
    # A pipeline split keeps the model's module names (torchtitan deletes the
    # other stages' layers from a ModuleDict): each module keeps its seed.
    def make(layers: range) -> nn.Module:
        torch.manual_seed(0)
        model = nn.Module()
        model.layers = nn.ModuleDict(
            {str(i): nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5)) for i in range(4)}
        )
        for i in set(range(4)) - set(layers):
            del model.layers[str(i)]
        return model

    whole = droplab.convert(make(range(4)), seed=11)
    stage = droplab.convert(make(range(2, 4)), seed=11)  # the second stage
    for i in ("2", "3"):
        ours = stage.layers[i][1]
        assert ours.seed == whole.layers[i][1].seed
        assert ours.seed == droplab.rng.path_seed(11, f"layers.{i}.1")
    x = torch.ones(3, 4)
    assert torch.equal(whole.layers["3"][1](x), stage.layers["3"][1](x))
    assert whole.layers["0"][1].seed != whole.layers["1"][1].seed


def test_timm_drop_path_is_recognised_without_importing_timm() -> None:
    class DropPath(nn.Module):  # what timm.layers.DropPath holds
        def __init__(self, drop_prob: float, scale_by_keep: bool = True) -> None:
            super().__init__()
            self.drop_prob, self.scale_by_keep = drop_prob, scale_by_keep

    DropPath.__module__ = "timm.layers.drop"
    model = nn.Sequential(DropPath(0.1), DropPath(0.2, scale_by_keep=False))
    droplab.convert(model)
    assert isinstance(model[0], dnn.DropPath) and model[0].p == 0.1
    assert model[0].scale == "inverted" and model[1].scale == "none"


def test_timm_models_convert_when_timm_is_installed() -> None:
    timm = pytest.importorskip("timm")
    model = timm.create_model("vit_tiny_patch16_224", drop_rate=0.1, drop_path_rate=0.1)
    droplab.convert(model, seed=0)
    assert not any(
        type(m).__module__.startswith("timm") and "Drop" in type(m).__name__
        for m in model.modules()
    )


def test_bad_arguments() -> None:
    with pytest.raises(TypeError, match="'model' argument of convert"):
        droplab.convert("net")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="'seed' argument of convert"):
        droplab.convert(nn.Sequential(nn.Dropout()), seed=-1)
    with pytest.raises(ValueError, match=r"'model' argument of convert.*bare Dropout"):
        droplab.convert(nn.Dropout())
