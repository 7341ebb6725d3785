"""The registered op under torch.compile and torch.export: the eager masks, bit for bit.

Compiling on this CPU takes seconds per graph: few, small models.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import torch
from torch._dynamo.utils import counters

import droplab
import droplab.functional
import droplab.nn as dnn
from droplab._core.op import MASKED_SCALE
from droplab._core.registered import state_tensor
from droplab.distributed import use_rank
from droplab.variants.alpha import alpha_dropout
from droplab.variants.gaussian import gaussian_dropout

# Inductor's own import of torch.jit, and Dynamo tracing an autograd Function
# (torch 2.13), warn; not ours to fix.
pytestmark = [
    pytest.mark.filterwarnings(
        "ignore:`torch.jit.script_method` is deprecated:DeprecationWarning"
    ),
    pytest.mark.filterwarnings(
        "ignore:.*should not be instantiated:DeprecationWarning"
    ),
]


@pytest.fixture(autouse=True)
def fresh_dynamo():
    # No on-disk caches: Inductor's keys do not cover a custom op's Python
    # (fake) implementation, so an entry written by an older droplab could
    # be reused; compiling afresh keeps each run honest.
    torch._dynamo.reset()
    counters.clear()
    with (
        torch._inductor.config.patch(fx_graph_cache=False),
        torch._functorch.config.patch(enable_autograd_cache=False),
    ):
        yield
    torch._dynamo.reset()


def mlp(*seeds: int | None) -> torch.nn.Sequential:
    torch.manual_seed(0)
    layers: list[torch.nn.Module] = [torch.nn.Linear(12, 32)]
    for seed in seeds:
        layers += [
            torch.nn.ReLU(),
            dnn.Dropout(0.5, seed=seed),
            torch.nn.Linear(32, 32),
        ]
    layers.append(torch.nn.Linear(32, 3))
    return torch.nn.Sequential(*layers)


X = torch.randn(8, 12, generator=torch.Generator().manual_seed(1))


def test_the_op_is_the_eager_op_with_its_state_in_a_tensor() -> None:
    x = torch.randn(5, 7, dtype=torch.float64, requires_grad=True)
    for seed, offset in [(3, 0), (2**64 - 1, 2**63 + 5), (2**63, 13)]:
        state = state_tensor(seed, offset)
        y = MASKED_SCALE.registered(x, state, 0.3, "inverted", "bernoulli", [])
        ref = droplab.dropout(x, 0.3, seed=seed, offset=offset)
        assert torch.equal(y, ref)
        (grad,) = torch.autograd.grad(y.sum(), x)
        (ref_grad,) = torch.autograd.grad(ref.sum(), x)
        assert torch.equal(grad, ref_grad)
    state = state_tensor(5, 6)
    torch.autograd.gradgradcheck(
        lambda t: MASKED_SCALE.registered(t, state, 0.5, "inverted", "bernoulli", []),
        (x,),
    )
    for t in (x, x.detach().t().requires_grad_()):  # any strides: a contiguous result
        torch.library.opcheck(
            MASKED_SCALE.registered,
            (t, state_tensor(1, 2), 0.5, "realized", "fixed", [1]),
        )


def test_a_compiled_seeded_dropout_gives_the_eager_outputs_bit_for_bit() -> None:
    eager = dnn.Dropout(0.4, seed=2**64 - 3)
    compiled_module = dnn.Dropout(0.4, seed=2**64 - 3)
    compiled = torch.compile(compiled_module, fullgraph=True)
    x = torch.randn(6, 10)
    with torch._dynamo.config.patch(error_on_recompile=True):
        for _ in range(5):
            assert torch.equal(compiled(x), eager(x))
    assert compiled_module.offset == eager.offset == 5 * 60
    assert counters["stats"]["unique_graphs"] == 1


def test_a_compiled_functional_dropout_gives_the_eager_outputs() -> None:
    def f(x: torch.Tensor) -> torch.Tensor:
        return droplab.dropout(x, 0.5, seed=7, offset=9, scale="realized")

    x = torch.randn(4, 9)
    assert torch.equal(torch.compile(f, fullgraph=True)(x), f(x))


def test_compiled_training_matches_eager_and_never_recompiles() -> None:
    # Seeded: 20 steps, the same outputs and gradients as eager at every step.
    eager, twin = mlp(3, 2**63 + 1), mlp(3, 2**63 + 1)
    compiled = torch.compile(twin, fullgraph=True)
    opt_e = torch.optim.SGD(eager.parameters(), lr=1e-3)
    opt_c = torch.optim.SGD(twin.parameters(), lr=1e-3)
    with torch._dynamo.config.patch(error_on_recompile=True):
        for _ in range(20):
            out_e, out_c = eager(X), compiled(X)
            assert torch.equal(out_e, out_c)
            out_e.sum().backward()  # integer gradients at the output: the
            out_c.sum().backward()  # same sums whatever the reduction order
            for a, b in zip(eager.parameters(), twin.parameters(), strict=True):
                assert a.grad is not None and b.grad is not None
                assert torch.equal(a.grad, b.grad)
            opt_e.step(), opt_c.step()
            opt_e.zero_grad(), opt_c.zero_grad()
    assert counters["stats"]["unique_graphs"] == 1
    assert twin[2].offset == eager[2].offset == 20 * 8 * 32


def test_an_unseeded_dropout_compiles_draws_fresh_masks_and_follows_manual_seed() -> (
    None
):
    net = mlp(None, 5)
    compiled = torch.compile(net, fullgraph=True)
    with torch._dynamo.config.patch(error_on_recompile=True):
        torch.manual_seed(0)
        first, second = compiled(X), compiled(X)
        net[5].offset = 0  # replay the seeded module's part too
        torch.manual_seed(0)
        again = compiled(X)
        for _ in range(18):
            compiled(X).sum().backward()
    assert not torch.equal(first, second)  # a fresh seed per call
    assert torch.equal(first, again)
    assert counters["stats"]["unique_graphs"] == 1


def test_backward_under_compile_saves_16_bytes_and_nothing_of_the_input() -> None:
    saved: list[int] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.append(t.numel() * t.element_size())
        return t

    x = torch.randn(64, 512, requires_grad=True)
    compiled = torch.compile(dnn.Dropout(0.5, seed=1), fullgraph=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = compiled(x)
    y.sum().backward()
    assert saved == [16]  # the [seed, offset] snapshot
    assert x.grad is not None and torch.equal(x.grad, (y != 0) * 2.0)


def test_export_in_training_mode_records_the_op_and_advances_the_buffer() -> None:
    exported = torch.export.export(mlp(3, 4), (X,))
    targets = {str(node.target) for node in exported.graph.nodes}
    assert "droplab.masked_scale.default" in targets
    module, eager = exported.module(), mlp(3, 4)
    for _ in range(3):
        assert torch.equal(module(X), eager(X))


def test_explain_finds_no_graph_break_and_a_rank_folds_into_the_key() -> None:
    explanation = torch._dynamo.explain(mlp(3, None))(X)
    assert explanation.graph_break_count == 0 and explanation.graph_count == 1
    torch._dynamo.reset()  # the rank is read when a graph is traced
    with use_rank(5):
        eager, twin = mlp(3), mlp(3)
        compiled = torch.compile(twin, fullgraph=True)
        for _ in range(2):
            assert torch.equal(compiled(X), eager(X))


def test_channel_dropout_and_drop_path_compile_into_the_graph() -> None:
    def make() -> torch.nn.Module:
        return torch.nn.Sequential(
            dnn.Dropout2d(0.3, seed=4), dnn.DropPath(0.5, seed=5), dnn.Dropout3d(0.2)
        )

    x = torch.randn(4, 3, 5, 2)
    eager, twin = make(), make()
    eager[2].seed = twin[2].seed = 6  # seeded after construction, as mc_predict does
    compiled = torch.compile(twin, fullgraph=True)
    for _ in range(3):
        assert torch.equal(compiled(x), eager(x))


def test_a_variant_not_on_the_op_breaks_the_graph_and_keeps_its_masks() -> None:
    def make() -> torch.nn.Module:
        torch.manual_seed(0)
        return torch.nn.Sequential(
            dnn.Dropout(0.5, seed=1),
            dnn.DropConnectLinear(12, 12, p=0.3, seed=4),
            torch.nn.ReLU(),
        )

    eager, twin = make(), make()
    compiled: Callable[[torch.Tensor], torch.Tensor] = torch.compile(twin)
    for _ in range(2):
        assert torch.equal(compiled(X), eager(X))
    assert twin[1].offset == eager[1].offset


def test_the_stream_stays_on_the_cpu_and_old_checkpoints_load() -> None:
    m = dnn.Dropout(0.5, seed=2**64 - 1).to(torch.float64)
    assert m.rng_state.device.type == "cpu" and m.rng_state.dtype == torch.int64
    assert m.rng_state.tolist() == [-1, 0]
    state = m.state_dict()
    assert list(state) == ["_extra_state"]
    old = {"_extra_state": {"seed": 2**63 + 7, "offset": 40}}  # droplab 0.1's dict
    m.load_state_dict(old)
    assert (m.seed, m.offset) == (2**63 + 7, 40)
    assert m.rng_state.tolist() == [2**63 + 7 - 2**64, 40]
    with pytest.raises(ValueError, match=r"'offset'.*\[0, 2\*\*64\)"):
        m.offset = 2**64


def test_the_registered_op_reaches_the_triton_kernel_in_the_interpreter(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The CUDA path goes through the same registration: select(x) picks the
    # Triton kernel, run here by Triton's interpreter on CPU tensors.
    pytest.importorskip("triton")
    from droplab.kernels import gpu
    from droplab.kernels.reference import reference_masked_scale

    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setenv("DROPLAB_BACKEND", "triton")
    x = torch.randn(3, 700, requires_grad=True)
    assert droplab.kernels.select(x) is gpu.masked_scale
    for sampler, scale, dims in [
        ("bernoulli", "inverted", []),
        ("fixed", "realized", [1]),
    ]:
        y = MASKED_SCALE.registered(
            x, state_tensor(2**64 - 2, 4 * 2**32 - 3), 0.3, scale, sampler, dims
        )
        ref = reference_masked_scale(
            x.detach(),
            p=0.3,
            seed=2**64 - 2,
            offset=4 * 2**32 - 3,
            scale=scale,
            sampler=sampler,
            shared_dims=tuple(dims),
        )
        assert torch.equal(y, ref)
        (grad,) = torch.autograd.grad(y.sum(), x)
        assert torch.equal(
            grad,
            reference_masked_scale(
                torch.ones_like(x),
                p=0.3,
                seed=2**64 - 2,
                offset=4 * 2**32 - 3,
                scale=scale,
                sampler=sampler,
                shared_dims=tuple(dims),
            ),
        )


@pytest.mark.gpu
def test_cuda_dropout_compiles_bit_exact_with_the_stream_on_the_host() -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    eager = dnn.Dropout(0.3, seed=2**64 - 1).cuda()
    twin = dnn.Dropout(0.3, seed=2**64 - 1).cuda()
    assert twin.rng_state.device.type == "cpu"  # read without a device sync
    compiled = torch.compile(twin, fullgraph=True)
    x = torch.randn(64, 1000, device="cuda", requires_grad=True)
    with torch._dynamo.config.patch(error_on_recompile=True):
        for _ in range(5):
            out_e, out_c = eager(x), compiled(x)
            assert torch.equal(out_e, out_c)
            (grad_e,) = torch.autograd.grad(out_e.sum(), x)
            (grad_c,) = torch.autograd.grad(out_c.sum(), x)
            assert torch.equal(grad_e, grad_c)
    assert twin.offset == eager.offset == 5 * 64000


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_alpha_gaussian_and_locked_dropout_compile_bit_exact_forward_and_backward(
    dtype: torch.dtype,
) -> None:
    # No layer with a reduction in backward (a bias gradient's sum is ordered
    # differently by Inductor): the gradient with respect to the input.
    def make() -> torch.nn.Module:
        return torch.nn.Sequential(
            dnn.AlphaDropout(0.2, seed=1),
            dnn.GaussianDropout(0.25, seed=4),
            dnn.LockedDropout(0.3, seed=2),
            torch.nn.Unflatten(2, (2, 3)),
            dnn.FeatureAlphaDropout(0.4, seed=3),
        )

    eager, twin = make(), make()
    compiled = torch.compile(twin, fullgraph=True)
    for _ in range(3):
        x = torch.randn(4, 5, 6, dtype=dtype, requires_grad=True)
        a, b = eager(x), compiled(x)
        assert torch.equal(a, b)
        g = torch.randn_like(a)
        (grad,) = torch.autograd.grad(a, x, g)
        (twin_grad,) = torch.autograd.grad(b, x, g)
        assert torch.equal(grad, twin_grad)
    offsets = [m.offset for m in twin if isinstance(m, droplab.StochasticModule)]
    assert offsets == [
        m.offset for m in eager if isinstance(m, droplab.StochasticModule)
    ]
    assert counters["stats"]["unique_graphs"] == 1


def test_a_compiled_functional_alpha_dropout_gives_the_eager_outputs() -> None:
    def f(t: torch.Tensor) -> torch.Tensor:
        return droplab.functional.alpha_dropout(t, 0.3, True, seed=5, offset=2)

    x = torch.randn(3, 7)
    assert torch.equal(torch.compile(f, fullgraph=True)(x), f(x))
    state = state_tensor(5, 2)
    from droplab.variants.alpha import ALPHA_DROPOUT

    torch.library.opcheck(
        ALPHA_DROPOUT.registered, (x.double().requires_grad_(), state, 0.3, [])
    )


# Issue 22: seed=None draws at run time, in order, as eager code draws.


def test_unseeded_modules_draw_the_eager_seeds_compiled() -> None:
    torch.manual_seed(0)
    eager = droplab.convert(
        torch.nn.Sequential(
            torch.nn.Linear(12, 16),
            torch.nn.Dropout(0.5),
            torch.nn.Linear(16, 3),
            torch.nn.Dropout(0.2),
        )
    )
    compiled_model = copy.deepcopy(eager)
    compiled = torch.compile(compiled_model, fullgraph=True)
    x = X.clone().requires_grad_()
    with torch._dynamo.config.patch(error_on_recompile=True):
        for step in range(3):
            torch.manual_seed(100 + step)
            want = eager(x)
            want.sum().backward()
            torch.manual_seed(100 + step)
            got = compiled(x)
            got.sum().backward()
            assert torch.equal(got, want), step
            # the same masks; Inductor may sum the batch in another order
            for a, b in zip(
                eager.parameters(), compiled_model.parameters(), strict=True
            ):
                torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-6)
    assert counters["stats"]["unique_graphs"] == 1


def test_unseeded_functional_calls_draw_in_program_order_compiled() -> None:
    def f(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        # the same input twice: the two draws must stay two, in this order
        a = droplab.dropout(x, 0.5)
        b = droplab.dropout(x, 0.5)
        c = gaussian_dropout(x, 0.2)
        return a, b, alpha_dropout(c, 0.1, True)

    compiled = torch.compile(f, fullgraph=True)
    x = torch.randn(8, 8)
    for s in (0, 1):
        torch.manual_seed(s)
        want = f(x)
        torch.manual_seed(s)
        got = compiled(x)
        assert all(torch.equal(g, w) for g, w in zip(got, want, strict=True))
        assert not torch.equal(got[0], got[1])
        # and the generator is left where eager code leaves it
        after = torch.randint(0, 2**62, ())
        torch.manual_seed(s)
        f(x)
        assert torch.equal(after, torch.randint(0, 2**62, ()))
