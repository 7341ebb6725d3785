"""droplab under PyTorch's transforms: fx, vmap (and the rest of torch.func),
forward-mode AD, unseeded compile, and checkpoints safetensors can hold.

Issue 22. Every stream rule stated in docs/compile.md is checked here against
droplab's own unbatched calls (the oracle), bit for bit.
"""

from __future__ import annotations

import copy
import io

import pytest
import torch
import torch.func
import torch.fx
from torch import nn

import droplab
import droplab.nn as dnn
from droplab._core.op import MASKED_SCALE
from droplab.rng import draw_seed, slice_seed
from droplab.variants.alpha import alpha_dropout
from droplab.variants.gaussian import gaussian_dropout

# torch's forward AD loads its jvp decompositions through torch.jit.script
# (torch 2.13), which warns; not ours to fix.
pytestmark = pytest.mark.filterwarnings(
    "ignore:`torch.jit.script` is deprecated:DeprecationWarning"
)

X = torch.randn(4, 6, generator=torch.Generator().manual_seed(3))


def mlp(*, seed: int | None = None) -> nn.Sequential:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 3), nn.Dropout(0.2)
    )
    return droplab.convert(model, seed=seed)


# ---------------------------------------------------------------- torch.fx


def test_a_converted_model_traces_with_each_dropout_one_call_module_node() -> None:
    model = mlp(seed=7)
    twin = copy.deepcopy(model)
    traced = torch.fx.symbolic_trace(model)
    modules = [n.target for n in traced.graph.nodes if n.op == "call_module"]
    assert modules == ["0", "1", "2", "3", "4"]
    assert (
        traced.get_submodule("2") is model[2]
    )  # the model's own module, stream and all
    for _ in range(3):  # the same masks, call after call
        assert torch.equal(traced(X), twin(X))
    assert model[2].offset == twin[2].offset == 3 * 4 * 16
    traced.eval(), twin.eval()
    assert torch.equal(traced(X), twin(X))


class _Functional(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(6, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = droplab.dropout(self.linear(x), 0.3, seed=11, offset=5)
        h = alpha_dropout(h, 0.2, True, seed=12)
        return gaussian_dropout(h, 0.1, seed=13)


def test_functional_forms_trace_as_call_function_nodes_with_their_arguments() -> None:
    module = _Functional()
    traced = torch.fx.symbolic_trace(module)
    calls = [n for n in traced.graph.nodes if n.op == "call_function"]
    assert [n.target.__name__ for n in calls] == [
        "dropout",
        "alpha_dropout",
        "gaussian_dropout",
    ]
    assert calls[0].kwargs["seed"] == 11 and calls[0].kwargs["offset"] == 5
    assert torch.equal(traced(X), module(X))


def test_tracing_a_droplab_module_as_the_root_says_what_to_trace() -> None:
    with pytest.raises(
        TypeError,
        match=r"The 'root' argument of torch\.fx\.symbolic_trace must be a model that contains the droplab module .*; got 'Dropout'\.",
    ):
        torch.fx.symbolic_trace(dnn.Dropout(0.5))


def test_every_droplab_module_traces_as_a_leaf() -> None:
    kinds = [
        dnn.Dropout(0.5, seed=1),
        dnn.AlphaDropout(0.2, seed=2),
        dnn.GaussianDropout(0.3, seed=3),
        dnn.LockedDropout(0.4, seed=4),
        dnn.DropPath(0.3, seed=5),
    ]
    for module in kinds:
        model = nn.Sequential(nn.Linear(6, 6), module)
        twin = copy.deepcopy(model)
        traced = torch.fx.symbolic_trace(model)
        assert [n.op for n in traced.graph.nodes].count("call_module") == 2
        x = X.reshape(2, 2, 6)
        assert torch.equal(traced(x), twin(x)), type(module).__name__


# ---------------------------------------------------------------- vmap


def test_vmap_different_gives_slice_b_the_stream_of_slice_seed() -> None:
    for shape, kw in [
        ((5, 4, 3), {}),
        ((3, 6, 2), {"scale": "realized", "sampler": "fixed"}),  # rows per slice
        ((4, 3, 5), {"shared_dims": (1,)}),
    ]:
        x = torch.randn(shape, dtype=torch.float64)
        got = torch.func.vmap(
            lambda t, kw=kw: droplab.dropout(t, 0.4, seed=2**64 - 2, offset=9, **kw),
            randomness="different",
        )(x)
        for b in range(shape[0]):
            want = droplab.dropout(
                x[b], 0.4, seed=slice_seed(2**64 - 2, b), offset=9, **kw
            )
            assert torch.equal(got[b], want), (shape, kw, b)


def test_vmap_same_gives_every_slice_the_call_s_own_mask() -> None:
    x = torch.randn(6, 5, 4)
    got = torch.func.vmap(
        lambda t: droplab.dropout(t, 0.5, seed=3, sampler="fixed"), randomness="same"
    )(x)
    for b in range(6):
        assert torch.equal(got[b], droplab.dropout(x[b], 0.5, seed=3, sampler="fixed"))
    mask = got != 0
    assert (mask == mask[0]).all()


def test_vmap_unseeded_draws_one_seed_from_torch_like_eager_code() -> None:
    torch.manual_seed(4)
    got = torch.func.vmap(lambda t: droplab.dropout(t, 0.5), randomness="different")(X)
    torch.manual_seed(4)
    key = draw_seed()
    for b in range(X.shape[0]):
        assert torch.equal(got[b], droplab.dropout(X[b], 0.5, seed=slice_seed(key, b)))
    torch.manual_seed(4)
    same = torch.func.vmap(lambda t: droplab.dropout(t, 0.5), randomness="same")(X)
    for b in range(X.shape[0]):
        assert torch.equal(same[b], droplab.dropout(X[b], 0.5, seed=key))


def test_vmap_error_mode_raises_torch_s_error_and_draws_nothing() -> None:
    module = dnn.Dropout(0.5, seed=1)
    for fn in (lambda t: droplab.dropout(t, 0.5, seed=1), module):
        with pytest.raises(
            RuntimeError, match="called random operation while in randomness error mode"
        ):
            torch.func.vmap(fn)(X)
    # evaluation and p = 0 are not random: no error, as for torch's dropout
    assert torch.equal(torch.func.vmap(lambda t: droplab.dropout(t, 0.0))(X), X)
    module.eval()
    assert torch.equal(torch.func.vmap(module)(X), X)


def test_a_seeded_module_under_vmap_moves_on_by_one_slice_per_call() -> None:
    module = dnn.Dropout(0.5, seed=21)
    calls = [torch.func.vmap(module, randomness="different")(X) for _ in range(2)]
    assert module.offset == 2 * X[0].numel()
    for call, (y) in enumerate(calls):
        for b in range(X.shape[0]):
            want = droplab.dropout(
                X[b], 0.5, seed=slice_seed(21, b), offset=call * X[0].numel()
            )
            assert torch.equal(y[b], want)


def test_vmap_over_an_unbatched_input_still_draws_per_slice() -> None:
    x = torch.ones(5)
    got = torch.func.vmap(
        lambda _, t: droplab.dropout(t, 0.5, seed=8),
        in_dims=(0, None),
        randomness="different",
    )(torch.zeros(3), x)
    for b in range(3):
        assert torch.equal(got[b], droplab.dropout(x, 0.5, seed=slice_seed(8, b)))
    same = torch.func.vmap(
        lambda _, t: droplab.dropout(t, 0.5, seed=8),
        in_dims=(0, None),
        randomness="same",
    )(torch.zeros(3), x)
    assert torch.equal(same, droplab.dropout(x, 0.5, seed=8).expand(3, 5))


def test_nested_vmap_applies_the_slice_rule_per_level_inner_first() -> None:
    x = torch.randn(2, 3, 4)
    got = torch.func.vmap(
        torch.func.vmap(
            lambda t: droplab.dropout(t, 0.5, seed=5), randomness="different"
        ),
        randomness="different",
    )(x)
    for i in range(2):
        for j in range(3):
            key = slice_seed(slice_seed(5, j), i)
            assert torch.equal(got[i, j], droplab.dropout(x[i, j], 0.5, seed=key))


def test_per_sample_gradients_with_vmap_of_grad_use_each_slice_s_mask() -> None:
    torch.manual_seed(0)
    weight = torch.randn(3, 6, dtype=torch.float64)

    def loss(w: torch.Tensor, x: torch.Tensor, seed: int = 17) -> torch.Tensor:
        return droplab.dropout(x @ w.T, 0.5, seed=seed).square().sum()

    x = X.double()
    got = torch.func.vmap(
        torch.func.grad(loss), in_dims=(None, 0), randomness="different"
    )(weight, x)
    for b in range(x.shape[0]):
        want = torch.func.grad(loss)(weight, x[b], slice_seed(17, b))
        # the same masks; the batched matmul may round (and sign zeros) apart
        torch.testing.assert_close(got[b], want, rtol=1e-14, atol=1e-12)


def test_grad_of_vmap_and_jacrev_and_jvp_agree_with_the_mask() -> None:
    x = X.double().requires_grad_()
    y = torch.func.vmap(
        lambda t: droplab.dropout(t, 0.3, seed=2), randomness="different"
    )(x)
    y.sum().backward()
    mask = torch.stack(
        [
            droplab.dropout(
                torch.ones(6, dtype=torch.float64), 0.3, seed=slice_seed(2, b)
            )
            for b in range(4)
        ]
    )
    assert torch.equal(x.grad, mask)
    row = X[0].double()
    jac = torch.func.jacrev(lambda t: droplab.dropout(t, 0.3, seed=2))(row)
    assert torch.equal(
        jac,
        torch.diag(droplab.dropout(torch.ones(6, dtype=torch.float64), 0.3, seed=2)),
    )
    tangent = torch.randn(6, dtype=torch.float64)
    out, jvp = torch.func.jvp(
        lambda t: droplab.dropout(t, 0.3, seed=2), (row,), (tangent,)
    )
    assert torch.equal(out, droplab.dropout(row, 0.3, seed=2))
    assert torch.equal(jvp, droplab.dropout(tangent, 0.3, seed=2))


def test_forward_mode_ad_carries_the_tangent_through_every_op() -> None:
    import torch.autograd.forward_ad as fwad

    x = torch.randn(5, 4, dtype=torch.float64)
    t = torch.randn(5, 4, dtype=torch.float64)
    ops = [
        (
            lambda v: droplab.dropout(v, 0.4, seed=1),
            lambda v: droplab.dropout(v, 0.4, seed=1),
        ),
        (
            lambda v: gaussian_dropout(v, 0.3, seed=2),
            lambda v: gaussian_dropout(v, 0.3, seed=2),
        ),
    ]
    for op, linear in ops:
        with fwad.dual_level():
            out = op(fwad.make_dual(x, t))
            primal, tangent = fwad.unpack_dual(out)
        assert torch.equal(primal, op(x)) and torch.equal(tangent, linear(t))
    a = droplab.variants.alpha.alpha_dropout_affine(0.2)[0]
    with fwad.dual_level():
        out = alpha_dropout(fwad.make_dual(x, t), 0.2, True, seed=3)
        tangent = fwad.unpack_dual(out).tangent
    want = droplab.dropout(t * a, 0.2, seed=3, scale="none")
    assert torch.equal(tangent, want)


def test_alpha_and_gaussian_follow_the_same_vmap_rule() -> None:
    x = torch.randn(3, 7, dtype=torch.float64)
    for op in (
        lambda t, seed: alpha_dropout(t, 0.2, True, seed=seed),
        lambda t, seed: gaussian_dropout(t, 0.3, seed=seed),
    ):
        got = torch.func.vmap(lambda t, op=op: op(t, 9), randomness="different")(x)
        for b in range(3):
            assert torch.equal(got[b], op(x[b], slice_seed(9, b)))
        same = torch.func.vmap(lambda t, op=op: op(t, 9), randomness="same")(x)
        for b in range(3):
            assert torch.equal(same[b], op(x[b], 9))


def test_in_place_dropout_under_vmap_writes_into_the_batch() -> None:
    x = torch.randn(4, 6)
    want = torch.stack(
        [droplab.dropout(x[b], 0.5, seed=slice_seed(3, b)) for b in range(4)]
    )
    target = x.clone()
    torch.func.vmap(
        lambda t: droplab.dropout(t, 0.5, seed=3, inplace=True), randomness="different"
    )(target)
    assert torch.equal(target, want)


def test_a_model_ensemble_with_stacked_parameters_under_vmap() -> None:
    torch.manual_seed(0)
    models = [mlp() for _ in range(3)]
    params, buffers = torch.func.stack_module_state(models)
    base = copy.deepcopy(models[0]).to("meta")

    def run(p: dict, b: dict, x: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(base, (p, b), (x,))

    torch.manual_seed(1)
    got = torch.func.vmap(run, in_dims=(0, 0, None), randomness="different")(
        params, buffers, X
    )
    assert got.shape == (3, 4, 3)
    # each member's forward: its weights, the slice streams of the two drawn seeds
    torch.manual_seed(1)
    keys = [draw_seed(), draw_seed()]
    for i, member in enumerate(models):
        h = member[1](member[0](X))
        h = droplab.dropout(h, 0.5, seed=slice_seed(keys[0], i))
        h = droplab.dropout(member[3](h), 0.2, seed=slice_seed(keys[1], i))
        torch.testing.assert_close(got[i], h, rtol=0, atol=1e-6)


# ---------------------------------------------------------------- checkpoints


def test_the_stream_saves_as_a_tensor_safetensors_can_hold(tmp_path) -> None:
    safetensors_torch = pytest.importorskip("safetensors.torch")
    model = mlp(seed=2**64 - 1)
    model(X), model(X)
    path = tmp_path / "model.safetensors"
    safetensors_torch.save_model(model, str(path))
    fresh = mlp(seed=5)
    missing, unexpected = safetensors_torch.load_model(fresh, str(path))
    assert not missing and not unexpected
    assert [(m.seed, m.offset) for m in (fresh[2], fresh[4])] == [
        (model[2].seed, model[2].offset),
        (model[4].seed, model[4].offset),
    ]
    assert fresh[2].seed != fresh[4].seed  # convert's derived seeds, restored
    assert torch.equal(fresh(X), model(X))


def test_torch_checkpoints_load_both_ways_and_old_dicts_still_load() -> None:
    model = mlp(seed=3)
    model(X)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    fresh = mlp(seed=99)
    fresh.load_state_dict(state)
    assert (fresh[2].seed, fresh[2].offset) == (model[2].seed, model[2].offset)
    # droplab 0.1's dict
    fresh[2].load_state_dict({"_extra_state": {"seed": 2**63 + 1, "offset": 6}})
    assert (fresh[2].seed, fresh[2].offset) == (2**63 + 1, 6)
    # an unseeded module writes nothing and loads a torch checkpoint strictly
    plain = nn.Sequential(
        nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 3), nn.Dropout(0.2)
    )
    mlp().load_state_dict(plain.state_dict(), strict=True)
    plain.load_state_dict(mlp().state_dict(), strict=True)
    with pytest.raises(
        ValueError,
        match=r"The 'state' argument of Dropout\.set_extra_state must be an int64 tensor \[seed, offset\] of shape \(2,\), or of shape \(0,\) for no seed; got 'a torch\.float32 tensor of shape \(2,\)'\.",
    ):
        fresh[2].set_extra_state(torch.zeros(2))


def test_a_reference_check_of_the_eager_kernel_path() -> None:
    # no autograd, no transform: the entry runs the kernel itself; with grad it
    # takes the Function; both give the kernel's bits
    x = torch.randn(7, 9)
    plain = MASKED_SCALE(x, 4, 2, 0.5, "inverted", "bernoulli", ())
    with_grad = MASKED_SCALE(x.requires_grad_(), 4, 2, 0.5, "inverted", "bernoulli", ())
    assert with_grad.grad_fn is not None and plain.grad_fn is None
    assert torch.equal(plain, with_grad.detach())
    assert torch.equal(
        plain, MASKED_SCALE.kernel(x.detach(), 4, 2, 0.5, "inverted", "bernoulli", ())
    )


@pytest.mark.parametrize(
    "make",
    [
        lambda seed: dnn.Dropout(0.4, seed=seed),
        lambda seed: dnn.Dropout2d(0.4, seed=seed),
        lambda seed: dnn.AlphaDropout(0.3, seed=seed),
        lambda seed: dnn.GaussianDropout(0.3, seed=seed),
        lambda seed: dnn.DropPath(0.3, seed=seed),
        lambda seed: dnn.LockedDropout(0.4, seed=seed),
    ],
)
def test_each_transform_ready_module_follows_the_slice_rule(make) -> None:
    x = torch.randn(3, 2, 4, 5, 6, dtype=torch.float64)  # slices (N, C, H, W)
    got = torch.func.vmap(make(31), randomness="different")(x)
    for b in range(3):
        assert torch.equal(got[b], make(slice_seed(31, b))(x[b]))


def test_modules_without_a_declared_op_refuse_torch_func_by_name() -> None:
    for module, x in [
        (dnn.DropBlock2d(0.3, block_size=3), torch.ones(2, 2, 3, 8, 8)),
        (dnn.ConcreteDropout(nn.Linear(8, 8)), torch.ones(2, 5, 8)),
    ]:
        name = type(module).__name__
        with pytest.raises(
            NotImplementedError, match=f"{name} does not support torch.func"
        ):
            torch.func.vmap(module, randomness="different")(x)
        module.eval()  # evaluation draws nothing: it runs
        torch.func.vmap(module)(x)
