"""droplab.intercept, and mc_predict and compile on models droplab did not build."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import droplab
import droplab.functional as DF
from droplab.uncertainty import mc_predict


class Block(nn.Module):
    """A ViT-like block as third-party code writes it: torch's modules, and
    dropout called functionally in ``forward``."""

    def __init__(self, width: int = 8, attention_dropout: float = 0.0) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(
            width, 2, dropout=attention_dropout, batch_first=True
        )
        self.drop = nn.Dropout(0.2)
        self.mlp = nn.Sequential(
            nn.Linear(width, 2 * width),
            nn.GELU(),
            nn.Dropout(0.1),
            nn.Linear(2 * width, width),
        )
        self.p = 0.3

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, width)
        h = self.norm(x)
        x = x + self.drop(self.attn(h, h, h, need_weights=False)[0])
        return x + F.dropout(self.mlp(x), self.p, self.training)


def block(**kwargs: float) -> Block:
    torch.manual_seed(0)
    return Block(**kwargs).double()


X = torch.randn(
    3, 5, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64
)


@pytest.mark.parametrize(
    ("theirs", "ours", "shape", "kwargs"),
    [
        (F.dropout, DF.dropout, (2, 3, 4), {}),
        (F.dropout1d, DF.dropout1d, (2, 3, 4), {}),
        (F.dropout2d, DF.dropout2d, (2, 3, 4, 5), {}),
        (F.dropout3d, DF.dropout3d, (2, 3, 4, 5, 6), {}),
        (F.alpha_dropout, DF.alpha_dropout, (2, 3, 4), {"training": True}),
        (
            F.feature_alpha_dropout,
            DF.feature_alpha_dropout,
            (2, 3, 4),
            {"training": True},
        ),
    ],
)
def test_each_function_draws_droplabs_mask_from_one_stream(
    theirs, ours, shape, kwargs
) -> None:
    x = torch.randn(*shape)
    with droplab.intercept(seed=9) as mode:
        a = theirs(x, 0.4, **kwargs)
        b = theirs(x, 0.4, **kwargs)
    used = mode.offset // 2
    assert mode.calls == 2 and used > 0
    assert torch.equal(a, ours(x, 0.4, seed=9, offset=0, **kwargs))
    assert torch.equal(b, ours(x, 0.4, seed=9, offset=used, **kwargs))


def test_inplace_evaluation_and_torch_dropout() -> None:
    x = torch.randn(4, 6)
    with droplab.intercept(seed=1):
        y = x.clone()
        assert F.dropout(y, 0.5, inplace=True) is y
        z = torch.dropout(x, 0.5, True)
        assert F.dropout(x, 0.5, training=False) is x  # torch's evaluation path
    assert torch.equal(y, DF.dropout(x, 0.5, seed=1))
    assert torch.equal(z, DF.dropout(x, 0.5, seed=1, offset=24))


def test_intercept_replays_functional_dropout_in_a_module_we_did_not_write() -> None:
    model = block()
    runs = []
    for _ in range(2):
        with droplab.intercept(seed=5) as mode:
            runs.append(model(X))
    assert mode.calls == 3  # two nn.Dropout modules and one F.dropout
    assert torch.equal(runs[0], runs[1])
    with droplab.intercept(seed=6):
        assert not torch.equal(model(X), runs[0])
    torch.manual_seed(0)
    with droplab.intercept():  # seed=None: torch's generator, as nn.Dropout
        c = model(X)
    torch.manual_seed(0)
    with droplab.intercept():
        assert torch.equal(model(X), c)


def test_attention_dropout_replays() -> None:
    # nn.MultiheadAttention's dropout, drawn where no mode sees it, now comes
    # from droplab's stream too (tests/interop/test_attention.py has the rest)
    model = block(attention_dropout=0.1)
    with droplab.intercept(seed=0) as mode:
        a = model(X)
    with droplab.intercept(seed=0):
        assert torch.equal(model(X), a)
    assert mode.calls > 0


def test_mc_predict_on_the_block_is_reproducible_and_equals_the_converted_block() -> (
    None
):
    plain = mc_predict(block(), X, samples=6, seed=3, chunk=6, keep_samples=True)
    again = mc_predict(block(), X, samples=6, seed=3, chunk=6, keep_samples=True)
    assert plain.samples is not None and again.samples is not None
    assert torch.equal(plain.samples, again.samples)
    assert not torch.equal(plain.samples[0], plain.samples[1])
    converted = droplab.convert(block())  # no warning: attention dropout is 0
    other = mc_predict(converted, X, samples=6, seed=3, chunk=6, keep_samples=True)
    assert other.samples is not None
    assert torch.equal(plain.samples, other.samples)
    # a functional call not on the batch dim is refused with the reason
    with pytest.raises(ValueError, match="dim 0"):
        mc_predict(nn.Sequential(_Transposed()), X, samples=4, seed=0, chunk=4)


class _Transposed(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        F.dropout(x[:1, :1, :3], 0.5, self.training)  # 3 elements for 4 passes
        return x


@pytest.mark.filterwarnings(
    "ignore:`torch.jit.script_method` is deprecated:DeprecationWarning"
)
@torch._inductor.config.patch(fx_graph_cache=False)  # see tests/core/test_compile.py
@torch._functorch.config.patch(enable_autograd_cache=False)
def test_a_converted_block_compiles_with_no_graph_break_torchs_has_not() -> None:
    torch._dynamo.reset()
    theirs = torch._dynamo.explain(block())(X)
    ours = torch._dynamo.explain(droplab.convert(block(), seed=1))(X)
    assert ours.graph_break_count == theirs.graph_break_count == 0
    assert ours.graph_count == theirs.graph_count == 1
    torch._dynamo.reset()
    eager, twin = droplab.convert(block(), seed=1), droplab.convert(block(), seed=1)
    eager.p = twin.p = 0.0  # the block's own F.dropout draws from torch's generator
    compiled = torch.compile(twin, fullgraph=True)
    for _ in range(3):
        out_e, out_c = eager(X), compiled(X)
        torch.testing.assert_close(out_c, out_e, rtol=1e-12, atol=1e-12)
        assert torch.equal(out_e == 0, out_c == 0)
        out_e.sum().backward()
        out_c.sum().backward()
    assert twin.drop.offset == eager.drop.offset == 3 * X.numel()
    torch._dynamo.reset()


# ------------------------------- issue 31: draws from NumPy's and Python's generators


class _HostNoise(nn.Module):
    """Draws from NumPy's global generator (as wav2vec2's SpecAugment does) or
    from Python's ``random``, in its own forward."""

    def __init__(self, source: str) -> None:
        super().__init__()
        self.source = source

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import random

        import numpy as np

        if self.source == "numpy":
            return x + float(np.random.rand()) * 1e-3  # noqa: NPY002 (the point)
        return x + random.random() * 1e-3


def _host_model(source: str) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(3, 4), nn.Dropout(0.5), _HostNoise(source), nn.Linear(4, 1)
    )


@pytest.mark.parametrize(
    ("source", "named"),
    [
        ("numpy", "numpy.random in '2' draws from NumPy's global generator"),
        ("python", "random in '2' draws from Python's global random generator"),
    ],
)
def test_draws_from_numpy_and_python_generators_are_named(
    source: str, named: str
) -> None:
    model, x = _host_model(source), torch.randn(5, 3)
    with pytest.warns(UserWarning, match=named):
        mc_predict(model, x, samples=4, seed=0)
    with pytest.raises(
        ValueError, match=r"The 'model' argument of mc_predict must be .*"
    ) as error:
        mc_predict(model, x, samples=4, seed=0, strict=True)
    assert "intercept" not in str(error.value)
    with pytest.warns(
        UserWarning, match=named.replace("'2'", "'Sequential>_HostNoise'")
    ):
        with droplab.intercept(seed=0):
            model.train()(x)
    with pytest.raises(ValueError, match=r"The 'model' argument of intercept"):
        with droplab.intercept(seed=0, strict=True):
            model(x)


def test_a_host_draw_in_a_parents_own_code_names_the_parent() -> None:
    class Parent(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.first, self.second = nn.Linear(3, 3), nn.Linear(3, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            import numpy as np

            h = self.first(x)
            h = h * float(np.random.rand() > 2.0)  # noqa: NPY002 (between children)
            return self.second(h)

    with pytest.warns(UserWarning, match="numpy.random in '<root>'"):
        mc_predict(Parent(), torch.randn(2, 3), samples=2, seed=0)


class _LayerDrop(nn.Module):
    """A layer skipped with probability 1/2 per forward call (Bart's layerdrop):
    one draw per call, from torch's generator, and no other randomness."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and bool(torch.rand([]) < 0.5):
            return x
        return self.layer(x)


def test_a_per_pass_draw_shared_by_a_chunk_says_the_variance_collapses() -> None:
    torch.manual_seed(0)
    model, x = _LayerDrop(), torch.randn(4, 3)
    with pytest.warns(UserWarning) as record:
        chunked = mc_predict(model, x, samples=16, seed=0)  # the default chunk
    assert float(chunked.variance.max()) == 0.0  # one draw for all 16 passes
    (message,) = [str(w.message) for w in record]
    assert "torch.rand in '<root>' draws from torch's generator" in message
    assert "variance between passes it should add collapses" in message
    assert "pass chunk=1 to draw it once per pass" in message
    torch.manual_seed(0)
    with pytest.warns(UserWarning) as record:
        per_pass = mc_predict(model, x, samples=16, seed=0, chunk=1)
    assert float(per_pass.variance.max()) > 0.0
    assert all("chunk=1" not in str(w.message) for w in record)
