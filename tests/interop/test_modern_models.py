"""MC dropout and replay on the models people use today, built from configs
with random weights (no download): Hugging Face BERT and GPT-2 (eager and
sdpa attention), torchvision's VisionTransformer, efficientnet_b0 and a small
ConvNeXt, timm's ViT (fused attention and not).

Marked ``timm``: CI runs them in the environment of the ``timm`` extra
(torchvision, transformers and timm pin a torch of their own).

The variance bound. For a model's output ``y_t`` over ``T`` passes, the total
variance ``V = mean_t ||y_t - mean(y)||^2`` is a mean of ``T`` terms
``d_t``, whose standard error is ``sd(d_t) / sqrt(T)``. droplab's passes and
the same passes drawn with torch's generator (the same rule, mc_dropout, and
torch's own dropout) estimate the same ``V``: their difference is within
``5 sqrt(se_1^2 + se_2^2)`` (five standard errors; the seeds are fixed, so the
test is deterministic).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import pytest
import torch
from torch import nn

import droplab
from droplab import mc_dropout, mc_predict

pytestmark = pytest.mark.timm

transformers = pytest.importorskip("transformers")
torchvision = pytest.importorskip("torchvision")
timm = pytest.importorskip("timm")

T = 256


# ---------------------------------------------------------------- the models


def bert(
    attention: str, attn: float = 0.0, hidden: float = 0.0, bare: bool = False
) -> nn.Module:
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=64,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=32,
        attention_probs_dropout_prob=attn,
        hidden_dropout_prob=hidden,
        num_labels=3,
        attn_implementation=attention,
    )
    cls = transformers.BertModel if bare else transformers.BertForSequenceClassification
    return cls(config).eval()


def gpt2(attention: str, attn: float = 0.0, other: float = 0.0) -> nn.Module:
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        vocab_size=64,
        n_positions=32,
        n_embd=32,
        n_layer=2,
        n_head=4,
        attn_pdrop=attn,
        resid_pdrop=other,
        embd_pdrop=other,
        bos_token_id=0,
        eos_token_id=0,
        attn_implementation=attention,
    )
    return transformers.GPT2LMHeadModel(config).eval()


def tv_vit(attn: float = 0.0, other: float = 0.0) -> nn.Module:
    torch.manual_seed(0)
    model = torchvision.models.VisionTransformer(
        image_size=16,
        patch_size=8,
        num_layers=2,
        num_heads=2,
        hidden_dim=32,
        mlp_dim=64,
        dropout=other,
        attention_dropout=attn,
        num_classes=3,
    )
    nn.init.normal_(model.heads.head.weight, std=0.5)  # torchvision zeroes the head
    return model.eval()


def efficientnet(depth: float = 0.0, other: float = 0.0) -> nn.Module:
    torch.manual_seed(0)
    model = torchvision.models.efficientnet_b0(
        num_classes=3, dropout=other, stochastic_depth_prob=depth
    )
    # BatchNorm statistics of random images (the initial ones shrink every
    # activation to about 1e-15, and the output with it)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = None  # a cumulative average
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(8, 3, 32, 32))
    return model.eval()


def convnext(depth: float = 0.0) -> nn.Module:
    from torchvision.models.convnext import CNBlockConfig, ConvNeXt

    torch.manual_seed(0)
    blocks = [CNBlockConfig(16, 32, 2), CNBlockConfig(32, None, 2)]
    # layer_scale 0.5 (torchvision: 1e-6): the branches, hence their drops, count
    return ConvNeXt(
        blocks, stochastic_depth_prob=depth, layer_scale=0.5, num_classes=3
    ).eval()


def timm_vit(
    attn: float = 0.0, path: float = 0.0, other: float = 0.0, fused: bool = True
) -> nn.Module:
    torch.manual_seed(0)
    model = timm.create_model(
        "vit_tiny_patch16_224",
        pretrained=False,
        img_size=32,
        patch_size=8,
        depth=2,
        num_classes=3,
        attn_drop_rate=attn,
        drop_path_rate=path,
        drop_rate=other,
        proj_drop_rate=other,
        pos_drop_rate=other,
    )
    for block in model.blocks:
        block.attn.fused_attn = fused
    return model.eval()


TOKENS = torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(1))
IMAGES = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
SMALL_IMAGES = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(3))
# ConvNeXt's default rate (0.1, decayed over 4 blocks) drops a row rarely: more rows
MANY_IMAGES = torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(4))

# name -> (model with only attention dropout / only stochastic depth on, input)
ONLY: dict[str, tuple[Callable[[], nn.Module], torch.Tensor]] = {
    "bert-eager-attention": (lambda: bert("eager", attn=0.5), TOKENS),
    "bert-sdpa-attention": (lambda: bert("sdpa", attn=0.5), TOKENS),
    "gpt2-eager-attention": (lambda: gpt2("eager", attn=0.5), TOKENS),
    "gpt2-sdpa-attention": (lambda: gpt2("sdpa", attn=0.5), TOKENS),
    "torchvision-vit-attention": (lambda: tv_vit(attn=0.5), SMALL_IMAGES),
    "timm-vit-fused-attention": (lambda: timm_vit(attn=0.5), IMAGES),
    "timm-vit-attention": (lambda: timm_vit(attn=0.5, fused=False), IMAGES),
    "timm-vit-drop-path": (lambda: timm_vit(path=0.5), IMAGES),
    "efficientnet-stochastic-depth": (lambda: efficientnet(depth=0.5), IMAGES),
    "convnext-stochastic-depth": (lambda: convnext(depth=0.5), IMAGES),
}

# name -> (model with the library's default rates, or the usual ones, input)
DEFAULTS: dict[str, tuple[Callable[[], nn.Module], torch.Tensor]] = {
    "bert-eager": (lambda: bert("eager", attn=0.1, hidden=0.1), TOKENS),
    "bert-sdpa": (lambda: bert("sdpa", attn=0.1, hidden=0.1), TOKENS),
    "gpt2-eager": (lambda: gpt2("eager", attn=0.1, other=0.1), TOKENS),
    "gpt2-sdpa": (lambda: gpt2("sdpa", attn=0.1, other=0.1), TOKENS),
    "torchvision-vit": (lambda: tv_vit(attn=0.1, other=0.1), SMALL_IMAGES),
    "efficientnet": (lambda: efficientnet(depth=0.2, other=0.2), IMAGES),
    "convnext": (lambda: convnext(depth=0.1), MANY_IMAGES),
    "timm-vit": (lambda: timm_vit(attn=0.1, path=0.1, other=0.1), IMAGES),
}


def logits(output: object) -> torch.Tensor:
    if isinstance(output, torch.Tensor):
        return output
    return output["logits"]  # type: ignore[index]


def converted(model: nn.Module) -> nn.Module:
    """droplab.convert on a copy; MultiheadAttention's dropout is reported."""
    copied = copy.deepcopy(model)
    if any(
        isinstance(m, nn.MultiheadAttention) and m.dropout > 0 for m in copied.modules()
    ):
        with pytest.warns(UserWarning, match="MultiheadAttention applies dropout"):
            return droplab.convert(copied, seed=0)
    return droplab.convert(copied, seed=0)


def total_variance(samples: torch.Tensor) -> tuple[float, float]:
    """(mean_t ||y_t - mean y||^2, its standard error) over passes (dim 0)."""
    flat = samples.reshape(samples.shape[0], -1).to(torch.float64)
    d = ((flat - flat.mean(0)) ** 2).sum(1)
    return float(d.mean()), float(d.std() / math.sqrt(flat.shape[0]))


@torch.no_grad()
def torch_passes(model: nn.Module, x: torch.Tensor, passes: int) -> torch.Tensor:
    """The same passes drawn with torch's generator: mc_dropout's rule, torch's
    own dropout and attention kernels."""
    torch.manual_seed(123)
    with mc_dropout(model):
        return torch.stack([logits(model(x)) for _ in range(passes)])


# ---------------------------------------------------------------- the tests


@pytest.mark.parametrize("name", sorted(ONLY))
def test_only_attention_dropout_or_only_stochastic_depth_is_sampled(name: str) -> None:
    make, x = ONLY[name]
    model = make()
    ours = mc_predict(model, x, samples=T, seed=0, keep_samples=True)
    assert ours.samples is not None
    ours_v, ours_se = total_variance(ours.samples)
    theirs_v, theirs_se = total_variance(torch_passes(model, x, T))
    assert ours_v > 0.0
    assert abs(ours_v - theirs_v) <= 5 * math.hypot(ours_se, theirs_se), (
        name,
        ours_v,
        ours_se,
        theirs_v,
        theirs_se,
    )
    assert not model.training and not any(m.training for m in model.modules())


@pytest.mark.parametrize("name", sorted(ONLY))
def test_without_the_rate_the_variance_is_exactly_zero(name: str) -> None:
    make, x = ONLY[name]
    model = make()
    for module in model.modules():  # every rate of this model to 0
        for attribute in ("p", "drop_prob", "dropout"):
            if isinstance(getattr(module, attribute, None), float):
                setattr(module, attribute, 0.0)
        if hasattr(module, "attention_dropout") and isinstance(
            module.attention_dropout, float
        ):
            module.attention_dropout = 0.0
    # one pass per forward call: a batched convolution may round rows apart
    result = mc_predict(model, x, samples=4, seed=0, chunk=1)
    assert float(result.variance.max()) == 0.0


@pytest.mark.parametrize("name", sorted(ONLY) + sorted(DEFAULTS))
def test_mc_predict_equals_mc_predict_on_the_converted_model(name: str) -> None:
    make, x = {**ONLY, **DEFAULTS}[name]
    model = make()
    plain = mc_predict(model, x, samples=12, seed=5, chunk=4, keep_samples=True)
    twin = mc_predict(
        converted(model), x, samples=12, seed=5, chunk=4, keep_samples=True
    )
    assert plain.samples is not None and twin.samples is not None
    assert torch.equal(plain.samples, twin.samples)
    assert bool((plain.samples != plain.samples[0]).any())  # the passes differ


@pytest.mark.parametrize("name", sorted(DEFAULTS))
def test_intercept_replays_training_forwards_with_the_default_rates(name: str) -> None:
    make, x = DEFAULTS[name]
    model = make()
    with torch.no_grad():
        evaluated = logits(model(x))
        model.train()
        with droplab.intercept(seed=7, strict=True, model=model) as first:
            a = logits(model(x))
        with droplab.intercept(seed=7, strict=True, model=model) as second:
            b = logits(model(x))
        with droplab.intercept(seed=8, model=model):
            c = logits(model(x))
    assert first.calls == second.calls > 0 and first.offset == second.offset
    assert float((a - b).abs().max()) == 0.0
    assert not torch.equal(a, c) and not torch.equal(a, evaluated)


def test_a_bare_hugging_face_model_works_with_mc_predict() -> None:
    model = bert("sdpa", attn=0.1, hidden=0.1, bare=True)
    mask = torch.ones_like(TOKENS)
    mask[1, -3:] = 0  # padding in the second sequence
    result = mc_predict(
        model, TOKENS, samples=16, seed=0, model_kwargs={"attention_mask": mask}
    )
    assert sorted(result) == ["last_hidden_state", "pooler_output"]
    assert result["last_hidden_state"].mean.shape == (2, 12, 32)
    assert bool((result["pooler_output"].variance > 0).all())
    pooled = mc_predict(
        model,
        TOKENS,
        samples=16,
        seed=0,
        output="pooler_output",
        model_kwargs={"attention_mask": mask},
    )
    assert torch.equal(pooled.mean, result["pooler_output"].mean)
    classifier = bert("eager", attn=0.1, hidden=0.1)
    labels = mc_predict(classifier, TOKENS, samples=16, seed=0, task="classification")
    assert labels.mean.shape == (2, 3) and labels.mutual_information is not None
    torch.testing.assert_close(labels.mean.sum(-1), torch.ones(2, dtype=torch.float64))


def test_torchvision_stochastic_depth_converts_and_reverts() -> None:
    from torchvision.ops import StochasticDepth

    model = convnext(depth=0.2)
    plan = droplab.conversion_plan(model)
    assert {cls for _, cls, _ in plan.swaps} == {"StochasticDepth"}
    droplab.convert(model, seed=1)
    assert not any(isinstance(m, StochasticDepth) for m in model.modules())
    droplab.revert(model)
    restored = [m for m in model.modules() if isinstance(m, StochasticDepth)]
    assert len(restored) == len(plan.swaps)
    assert [m.p for m in restored] == [new.p for _, _, new in plan.swaps]
    batch = nn.Sequential(StochasticDepth(0.3, "batch"))
    droplab.convert(batch)
    assert batch[0].mode == "batch"
    droplab.revert(batch)
    assert isinstance(batch[0], StochasticDepth) and batch[0].mode == "batch"


def test_bare_intercept_replays_timm_drop_path_and_torchvision_stochastic_depth() -> (
    None
):
    from torchvision.ops import stochastic_depth

    x = torch.ones(64, 3)
    with droplab.intercept(seed=3) as mode:
        a = stochastic_depth(x, 0.5, "row", True)
        b = timm.layers.drop_path(x, 0.5, True)
    with droplab.intercept(seed=3):
        assert torch.equal(stochastic_depth(x, 0.5, "row", True), a)
        assert torch.equal(timm.layers.drop_path(x, 0.5, True), b)
    assert mode.calls == 2 and mode.offset == 128
    # the masks are droplab's: the rows kept are those of droplab's drop_path
    ours = droplab.variants.drop_path(x, 0.5, seed=3, offset=0)
    assert torch.equal(a != 0, ours != 0)
    assert torch.equal(
        b != 0, droplab.variants.drop_path(x, 0.5, seed=3, offset=64) != 0
    )


def tiny_wav2vec2() -> nn.Module:
    """wav2vec2 from a config (random weights), its SpecAugment on as by default
    (mask_time_prob=0.05): in training mode it draws its masks from NumPy's
    global generator. Layerdrop off, so that draw is the only one unreplayed."""
    torch.manual_seed(0)
    config = transformers.Wav2Vec2Config(
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        conv_dim=(8, 8),
        conv_stride=(5, 2),
        conv_kernel=(10, 3),
        num_conv_pos_embeddings=4,
        num_conv_pos_embedding_groups=2,
        layerdrop=0.0,
    )
    assert config.mask_time_prob > 0 and config.apply_spec_augment
    return transformers.Wav2Vec2Model(config).eval()


def test_wav2vec2_spec_augment_draws_are_named_and_refused_under_strict() -> None:
    """Issue 31: these draws went unnoticed, and two mc_predict calls with the
    same seed differed."""
    model, audio = tiny_wav2vec2(), torch.randn(2, 400)
    with pytest.warns(UserWarning) as record:
        mc_predict(model, audio, samples=4, seed=0, output="last_hidden_state")
    messages = [str(w.message) for w in record]
    assert any(
        "numpy.random in '<root>' draws from NumPy's global generator" in m
        for m in messages
    ), messages
    with pytest.raises(ValueError, match=r"The 'model' argument of mc_predict"):
        mc_predict(
            model, audio, samples=4, seed=0, output="last_hidden_state", strict=True
        )
