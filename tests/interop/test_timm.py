"""droplab in timm's models: a ViT-tiny and a ResNet-18, converted, compiled, sampled.

These need timm (the ``timm`` extra: ``pip install ".[test,timm]"``), which
needs torchvision; they are marked ``timm`` and CI runs them in an environment
of their own (see .ci/run). Both models are timm's, built as timm builds them,
with drop rates: the ViT-tiny (12 blocks of width 192, 3 heads; 32x32 images
in 8x8 patches, so that a CPU step takes milliseconds) has ``nn.Dropout`` after
the patch embedding, in every attention projection and MLP, before the head,
and timm's ``DropPath`` in every block; the ResNet-18 has ``DropPath`` in its
blocks and calls ``F.dropout`` in ``forward_head`` (functional: ``convert``
cannot reach it, ``intercept`` and ``mc_predict`` do).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import droplab
from droplab.interop.kinds import kind_of

timm = pytest.importorskip("timm")

pytestmark = [
    pytest.mark.timm,
    pytest.mark.filterwarnings(
        "ignore:`torch.jit.script_method` is deprecated:DeprecationWarning"
    ),
    pytest.mark.filterwarnings(
        "ignore:.*should not be instantiated:DeprecationWarning"
    ),
]


def vit_tiny() -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8,
        num_classes=10, drop_rate=0.1, proj_drop_rate=0.1, pos_drop_rate=0.1,
        drop_path_rate=0.1,
    )  # fmt: skip


def resnet18() -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model(
        "resnet18", pretrained=False, num_classes=10, drop_rate=0.2, drop_path_rate=0.1
    )


MODELS = {"vit_tiny": vit_tiny, "resnet18": resnet18}
IMAGES = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
LABELS = torch.tensor([0, 3, 5, 9])


@pytest.fixture(autouse=True)
def fresh_dynamo():
    # No on-disk caches (see tests/core/test_compile.py).
    torch._dynamo.reset()
    with (
        torch._inductor.config.patch(fx_graph_cache=False),
        torch._functorch.config.patch(enable_autograd_cache=False),
    ):
        yield
    torch._dynamo.reset()


def torch_dropouts(model: nn.Module) -> list[str]:
    return [
        name
        for name, m in model.named_modules()
        if isinstance(m, nn.modules.dropout._DropoutNd) or kind_of(m) is not None
    ]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_convert_swaps_every_dropout_module(name: str) -> None:
    model = MODELS[name]()
    before = torch_dropouts(model)
    assert any("drop_path" in n for n in before)
    droplab.convert(model, seed=0)
    assert torch_dropouts(model) == []
    swapped = [
        n for n, m in model.named_modules() if isinstance(m, droplab.StochasticModule)
    ]
    assert swapped == before
    seeds = {m.seed for m in model.modules() if isinstance(m, droplab.StochasticModule)}
    assert len(seeds) == len(swapped)  # distinct derived seeds


def train(model: nn.Module, steps: int) -> list[float]:
    optimiser = torch.optim.SGD(model.parameters(), lr=0.01)
    losses = []
    for _ in range(steps):
        optimiser.zero_grad()
        loss = nn.functional.cross_entropy(model(IMAGES), LABELS)
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
    return losses


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(MODELS))
def test_converted_models_train_eager_and_compiled(name: str) -> None:
    eager = droplab.convert(MODELS[name](), seed=0).train()
    eager_losses = train(eager, 2)
    compiled_model = droplab.convert(MODELS[name](), seed=0).train()
    compiled = torch.compile(compiled_model)
    compiled_losses = train(compiled, 2)
    assert all(torch.isfinite(torch.tensor(eager_losses + compiled_losses)))
    assert compiled_losses[1] != compiled_losses[0]  # the step changed the weights

    # The graph advanced every stream by what eager calls used: the same
    # (seed, offset) for every module, so the same masks (bit-exact masks under
    # compile: tests/core/test_compile.py). The losses themselves differ by the
    # compiler's reordering of sums, and ResNet's functional head dropout is
    # torch's own.
    def streams(model: nn.Module) -> list[tuple[int | None, int]]:
        return [
            (m.seed, m.offset)
            for m in model.modules()
            if isinstance(m, droplab.StochasticModule)
        ]

    assert streams(compiled_model) == streams(eager)
    # every module that draws advanced (timm's ViT never calls attn_drop, p = 0:
    # its rate goes to scaled_dot_product_attention, which gets 0.0)
    drawn = [m.offset for m in eager.modules() if getattr(m, "p", 0.0) > 0.0]
    assert drawn and all(offset > 0 for offset in drawn)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_droplab_adds_no_graph_break(name: str) -> None:
    theirs = MODELS[name]().train()
    ours = droplab.convert(MODELS[name](), seed=0).train()
    seedless = droplab.convert(MODELS[name]()).train()
    breaks = {}
    for label, model in (("torch", theirs), ("droplab", ours), ("seedless", seedless)):
        torch._dynamo.reset()
        breaks[label] = torch._dynamo.explain(model)(IMAGES).graph_break_count
    assert breaks["droplab"] <= breaks["torch"], breaks
    assert breaks["seedless"] <= breaks["torch"], breaks


@pytest.mark.parametrize("name", sorted(MODELS))
def test_mc_predict_on_the_unconverted_model_equals_the_converted(name: str) -> None:
    plain = MODELS[name]().eval()
    converted = droplab.convert(MODELS[name]()).eval()
    a = mc_samples(plain, chunk=6)
    again = mc_samples(plain, chunk=2)
    b = mc_samples(converted, chunk=6)
    # the same chunking: bit for bit; another chunking: the same masks, and
    # outputs equal to float32 rounding (a matrix product of another number of
    # rows may be blocked, and threaded, differently: seen here under load)
    assert torch.equal(a, b)
    torch.testing.assert_close(a, again, rtol=1e-5, atol=1e-6)
    assert not torch.equal(a[0], a[1])  # the passes differ
    assert torch_dropouts(plain) and not plain.training  # left as it was


def mc_samples(model: nn.Module, chunk: int) -> torch.Tensor:
    result = droplab.mc_predict(
        model, IMAGES, samples=6, seed=3, chunk=chunk, keep_samples=True
    )
    assert result.samples is not None
    return result.samples


def test_intercept_replays_the_functional_dropout_of_timms_resnet_head() -> None:
    model = resnet18().train()
    features = torch.randn(4, 512, generator=torch.Generator().manual_seed(2))
    with droplab.intercept(seed=7) as interception:
        a = model.forward_head(features.view(4, 512, 1, 1).expand(4, 512, 2, 2))
    with droplab.intercept(seed=7):
        b = model.forward_head(features.view(4, 512, 1, 1).expand(4, 512, 2, 2))
    assert interception.calls == 1
    assert torch.equal(a, b)
