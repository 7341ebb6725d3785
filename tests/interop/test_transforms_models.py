"""Issue 22 on models other people wrote: torchvision's feature extraction
(torch.fx) of a converted ViT, Hugging Face ``save_pretrained`` /
``from_pretrained`` of a converted BERT with seeded dropout (safetensors),
and per-sample gradients (vmap of grad) through a converted BERT layer.

Marked ``timm``: CI runs them in the environment of the ``timm`` extra.
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch

import droplab
from droplab.rng import slice_seed

pytestmark = pytest.mark.timm

transformers = pytest.importorskip("transformers")
torchvision = pytest.importorskip("torchvision")
safetensors_torch = pytest.importorskip("safetensors.torch")
feature_extraction = pytest.importorskip("torchvision.models.feature_extraction")


def converted(model: torch.nn.Module, seed: int | None) -> torch.nn.Module:
    with warnings.catch_warnings():  # the attention dropout convert cannot map
        warnings.simplefilter("ignore", UserWarning)
        return droplab.convert(model, seed=seed)


def test_torchvision_feature_extraction_of_a_converted_vit() -> None:
    torch.manual_seed(0)
    model = torchvision.models.VisionTransformer(
        image_size=16,
        patch_size=8,
        num_layers=2,
        num_heads=2,
        hidden_dim=32,
        mlp_dim=64,
        dropout=0.2,
        num_classes=3,
    )
    converted(model, seed=3).train()
    twin = copy.deepcopy(model)
    train_nodes, _ = feature_extraction.get_graph_node_names(model)
    assert "encoder.layers.encoder_layer_1.dropout" in train_nodes  # one node each
    extractor = feature_extraction.create_feature_extractor(
        model,
        return_nodes={
            "encoder.layers.encoder_layer_1.dropout": "feature",
            "heads": "out",
        },
    )
    x = torch.randn(2, 3, 16, 16)
    for _ in range(2):  # the model's own modules: the same masks, call after call
        out = extractor(x)
        assert torch.equal(out["out"], twin(x))
    assert out["feature"].shape == (2, 5, 32)


def bert(seed: int | None) -> torch.nn.Module:
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=64,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=32,
        hidden_dropout_prob=0.2,
        # BERT's eager attention draws its dropout with torch's F.dropout (not
        # a module convert can swap): off, so every draw here is droplab's
        attention_probs_dropout_prob=0.0,
        attn_implementation="eager",
    )
    return converted(transformers.BertModel(config), seed=seed).train()


def test_save_pretrained_and_from_pretrained_keep_the_streams(tmp_path) -> None:
    model = bert(seed=2**64 - 5)
    ids = torch.randint(0, 64, (2, 8), generator=torch.Generator().manual_seed(1))
    model(ids)  # the streams move on
    model.save_pretrained(tmp_path)
    state = safetensors_torch.load_file(str(tmp_path / "model.safetensors"))
    streams = sorted(key for key in state if key.endswith("._extra_state"))
    assert len(streams) == 7 and all(state[k].dtype == torch.int64 for k in streams)
    # from_pretrained builds torch's dropout (the config's), then: convert,
    # and the saved streams load into the droplab modules
    loaded = transformers.BertModel.from_pretrained(
        tmp_path, attn_implementation="eager"
    )
    converted(loaded, seed=None).train()
    missing, unexpected = loaded.load_state_dict(state, strict=False)
    assert missing == [] and unexpected == []
    before = {
        n: (m.seed, m.offset) for n, m in model.named_modules() if hasattr(m, "offset")
    }
    after = {
        n: (m.seed, m.offset) for n, m in loaded.named_modules() if hasattr(m, "offset")
    }
    assert after == before and len(before) == 7
    assert torch.equal(loaded(ids).last_hidden_state, model(ids).last_hidden_state)


def test_per_sample_gradients_through_a_converted_bert_layer() -> None:
    model = bert(seed=9)
    layer = model.encoder.layer[0]
    params = {k: v.detach() for k, v in layer.named_parameters()}
    x = torch.randn(3, 5, 32, dtype=torch.float32)

    def loss(p: dict, sample: torch.Tensor) -> torch.Tensor:
        out = torch.func.functional_call(layer, p, (sample.unsqueeze(0),))[0]
        return out.square().mean()

    offsets = [m.offset for m in layer.modules() if hasattr(m, "offset")]
    grads = torch.func.vmap(
        torch.func.grad(loss), in_dims=(None, 0), randomness="different"
    )(params, x)
    # sample b: the same layer with every dropout's seed replaced by its
    # slice seed, from the same offsets
    for b in range(3):
        twin = copy.deepcopy(layer)
        for module, offset in zip(
            [m for m in twin.modules() if hasattr(m, "offset")], offsets, strict=True
        ):
            module.seed, module.offset = slice_seed(module.seed, b), offset
        want = torch.func.grad(
            lambda p, s, twin=twin: (
                torch.func.functional_call(twin, p, (s.unsqueeze(0),))[0]
                .square()
                .mean()
            )
        )(params, x[b])
        for name in params:
            torch.testing.assert_close(grads[name][b], want[name], rtol=1e-5, atol=1e-7)
