"""The family on a CUDA device: the same outputs and gradients as on the CPU."""

from __future__ import annotations

import pytest
import torch

from droplab import functional as F
from droplab.nn import WeightDropLSTM

pytestmark = pytest.mark.gpu

OPS = {
    "dropout2d": lambda x: F.dropout2d(x, 0.5, seed=1),
    "gaussian": lambda x: F.gaussian_dropout(x, 0.3, seed=2),
    "alpha": lambda x: F.alpha_dropout(x, 0.2, True, seed=3),
    "feature_alpha": lambda x: F.feature_alpha_dropout(x, 0.2, True, seed=3),
    "locked": lambda x: F.locked_dropout(x, 0.4, seed=4),
    "drop_path": lambda x: F.drop_path(x, 0.4, seed=5),
    "drop_block": lambda x: F.drop_block2d(x, 0.3, 3, seed=6),
    "concrete": lambda x: F.concrete_dropout(x, 0.3, seed=7),
    "drop_connect": lambda x: F.drop_connect_linear(
        x,
        torch.ones(5, 8, dtype=x.dtype, device=x.device),
        None,
        0.5,
        seed=8,
        per_sample=True,
    ),
}


@pytest.mark.parametrize("name", sorted(OPS))
def test_same_output_and_gradient_as_cpu(name):
    x = torch.randn(4, 3, 8, 8, dtype=torch.float64)
    if name == "drop_connect":
        x = x.reshape(-1, 8)
    results = []
    for device in ("cpu", "cuda"):
        xd = x.to(device, copy=True).requires_grad_()
        y = OPS[name](xd)
        y.sum().backward()
        results.append((y.detach().cpu(), xd.grad.cpu()))
    assert torch.allclose(results[0][0], results[1][0], rtol=1e-12, atol=1e-12)
    assert torch.allclose(results[0][1], results[1][1], rtol=1e-12, atol=1e-12)


def test_weight_drop_lstm_on_cuda_matches_cpu():
    torch.manual_seed(0)
    cpu = WeightDropLSTM(
        3, 4, num_layers=2, weight_p=0.5, hidden_p=0.2, seed=1
    ).double()
    gpu = WeightDropLSTM(
        3, 4, num_layers=2, weight_p=0.5, hidden_p=0.2, seed=1
    ).double()
    gpu.load_state_dict(cpu.state_dict())
    gpu.cuda()
    x = torch.randn(6, 2, 3, dtype=torch.float64)
    assert torch.allclose(cpu(x)[0], gpu(x.cuda())[0].cpu(), atol=1e-10)
