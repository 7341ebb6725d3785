"""The family's public names in droplab.nn and droplab.functional, any import order."""

from __future__ import annotations

import subprocess
import sys

import pytest

import droplab.functional as F
import droplab.nn as N
import droplab.variants as V


def test_modules_and_functional_twins_are_re_exported():
    for name in V.MODULES:
        assert getattr(N, name) is getattr(V, name) and name in N.__all__
    for name in V.FUNCTIONS:
        assert getattr(F, name) is getattr(V, name) and name in F.__all__


@pytest.mark.parametrize(
    "first", ["droplab.variants.channel", "droplab.nn", "droplab._core.modes"]
)
def test_any_import_order_works(first):
    code = f"import {first}; import droplab.functional as f; import droplab.nn as n; print(f.dropout2d, n.WeightDropLSTM)"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr


def test_mc_dropout_samples_the_family_at_prediction():
    import torch
    from torch import nn

    net = nn.Sequential(
        nn.Linear(4, 6),
        N.GaussianDropout(0.3, seed=1),
        N.DropPath(0.5, seed=2),
        N.DropConnectLinear(6, 2, seed=3),
    ).eval()
    x = torch.ones(3, 4)
    assert torch.equal(net(x), net(x))  # eval: deterministic
    with N.mc_dropout(net):
        a, b = net(x), net(x)
    assert not torch.equal(a, b)
    assert not any(m.training for m in net.modules())
