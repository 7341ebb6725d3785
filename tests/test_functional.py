"""droplab.functional.dropout, checked against the NumPy masks bit for bit.

The oracle below rebuilds every output from ``droplab.masks`` and the numerics
contract of docs/DESIGN.md, in NumPy; whichever backend is active must match it.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from droplab import kernels, masks
from droplab._core.op import MASKED_SCALE
from droplab.functional import dropout
from droplab.kernels.reference import reference_masked_scale
from droplab.masks import make_mask, row_count
from droplab.scaling import SCALES

DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
SAMPLERS = ["bernoulli", "fixed"]
BITS = {
    torch.float16: torch.int16,
    torch.bfloat16: torch.int16,
    torch.float32: torch.int32,
    torch.float64: torch.int64,
}


def oracle(
    x, p, *, seed, offset=0, scale="inverted", sampler="bernoulli", shared_dims=()
):
    """Dropout of ``x`` computed in NumPy from droplab.masks (the reference)."""
    dims = tuple(sorted(d % x.ndim for d in shared_dims)) if x.ndim else ()
    keep = np.asarray(
        make_mask(
            tuple(x.shape),
            p,
            seed=seed,
            offset=offset,
            sampler=sampler,
            shared_dims=dims,
        )
    )
    if scale == "realized":
        rows, n = row_count(keep.shape)
        k = keep.reshape(rows, n).sum(axis=1)
        per_row = np.array([n / kk if kk else 0.0 for kk in k])
        factor = (
            per_row.reshape((rows,) + (1,) * (keep.ndim - 1))
            if keep.ndim > 1
            else per_row.reshape(())
        )
    elif scale == "inverted":
        factor = np.asarray(0.0 if p == 1 else 1 / (1 - p))
    else:
        factor = np.asarray(1.0)
    compute = np.float64 if x.dtype == torch.float64 else np.float32
    values = (
        x.detach()
        .cpu()
        .to(torch.float64 if compute is np.float64 else torch.float32)
        .numpy()
    )
    kept = values * factor.astype(compute)
    out = np.where(np.broadcast_to(keep, x.shape), kept, compute(0.0)).astype(compute)
    return torch.from_numpy(out).to(x.dtype)  # np.where made a fresh C-ordered array


def assert_same_bits(actual, expected):
    assert actual.dtype == expected.dtype
    assert actual.shape == expected.shape
    a = actual.detach().cpu().contiguous().view(BITS[actual.dtype])
    b = expected.detach().cpu().contiguous().view(BITS[expected.dtype])
    assert torch.equal(a, b)


def sample(shape, dtype=torch.float32, seed=0):
    """Normal values pushed away from 0, so a kept unit is never 0."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(shape, generator=g, dtype=torch.float64)
    return (z + torch.sign(z) * 0.25).to(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("sampler", SAMPLERS)
def test_matches_the_numpy_oracle_bit_for_bit(dtype, scale, sampler):
    x = sample((6, 11), dtype)
    y = dropout(x, 0.35, seed=2024, offset=3, scale=scale, sampler=sampler)
    assert_same_bits(
        y, oracle(x, 0.35, seed=2024, offset=3, scale=scale, sampler=sampler)
    )


@pytest.mark.parametrize(
    "make",
    [
        lambda b: b.transpose(0, 2),
        lambda b: b[:, ::2, 1:],
        lambda b: b[0].unsqueeze(0).expand(4, -1, -1),  # stride 0
        lambda b: b.permute(2, 0, 1)[1:3],
    ],
    ids=["transpose", "step-slice", "expand", "permute-slice"],
)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32, torch.float64])
def test_non_contiguous_inputs_use_the_logical_row_major_order(make, dtype):
    x = make(sample((4, 6, 5), dtype))
    assert not x.is_contiguous()
    for scale, sampler in [("inverted", "bernoulli"), ("realized", "fixed")]:
        y = dropout(x, 0.5, seed=77, offset=1, scale=scale, sampler=sampler)
        assert_same_bits(
            y, oracle(x, 0.5, seed=77, offset=1, scale=scale, sampler=sampler)
        )
        assert_same_bits(
            y,
            dropout(
                x.contiguous(), 0.5, seed=77, offset=1, scale=scale, sampler=sampler
            ),
        )


@pytest.mark.parametrize(
    "offset", [1, 2, 3, 5, 4 * 2**32 - 1, 4 * 2**32 + 3, 2**64 + 6]
)
def test_offsets_not_multiple_of_four_and_beyond_32_bit_blocks(offset):
    x = sample((3, 9))
    seed = 2**64 - 1
    y = dropout(x, 0.5, seed=seed, offset=offset)
    assert_same_bits(y, oracle(x, 0.5, seed=seed, offset=offset))


@pytest.mark.parametrize("shared_dims", [(0,), (1,), (-1,), (2, 3), (1, 2, 3), (0, 3)])
@pytest.mark.parametrize("scale", ["inverted", "realized"])
@pytest.mark.parametrize("sampler", SAMPLERS)
def test_shared_dims_match_the_oracle_and_share_whole_slices(
    shared_dims, scale, sampler
):
    x = sample((3, 4, 5, 2), torch.float64)
    y = dropout(
        x, 0.4, seed=9, offset=2, scale=scale, sampler=sampler, shared_dims=shared_dims
    )
    assert_same_bits(
        y,
        oracle(
            x,
            0.4,
            seed=9,
            offset=2,
            scale=scale,
            sampler=sampler,
            shared_dims=shared_dims,
        ),
    )
    # Along every shared dimension a unit is either kept everywhere or nowhere.
    kept = y != 0
    for d in shared_dims:
        assert torch.equal(kept.all(dim=d), kept.any(dim=d))


def test_channel_dropout_zeroes_whole_feature_maps():
    x = sample((8, 16, 5, 5))
    y = dropout(x, 0.5, seed=4, shared_dims=(2, 3))
    per_map = (y != 0).reshape(8 * 16, 25)
    assert torch.equal(per_map.all(dim=1), per_map.any(dim=1))
    assert 0 < per_map.all(dim=1).sum() < 8 * 16


@settings(derandomize=True, deadline=None, max_examples=80)
@given(
    shape=st.lists(st.integers(0, 5), max_size=4),
    dtype=st.sampled_from(DTYPES),
    p=st.floats(0, 1),
    seed=st.integers(0, 2**64 - 1),
    offset=st.integers(0, 2**40),
    scale=st.sampled_from(SCALES),
    sampler=st.sampled_from(SAMPLERS),
    data=st.data(),
)
def test_property_shape_dtype_and_values_match_the_oracle(
    shape, dtype, p, seed, offset, scale, sampler, data
):
    dims = data.draw(
        st.sets(st.integers(0, max(len(shape) - 1, 0)), max_size=len(shape))
    )
    x = sample(tuple(shape), dtype)
    y = dropout(
        x,
        p,
        seed=seed,
        offset=offset,
        scale=scale,
        sampler=sampler,
        shared_dims=tuple(dims),
    )
    assert y.shape == x.shape
    assert y.dtype == x.dtype
    assert_same_bits(
        y,
        oracle(
            x,
            p,
            seed=seed,
            offset=offset,
            scale=scale,
            sampler=sampler,
            shared_dims=tuple(dims),
        ),
    )


@settings(derandomize=True, deadline=None, max_examples=60)
@given(
    rows=st.integers(1, 4),
    n=st.integers(1, 12),
    dtype=st.sampled_from(DTYPES),
    p=st.floats(0, 1),
    seed=st.integers(0, 2**64 - 1),
    scale=st.sampled_from(SCALES),
    sampler=st.sampled_from(SAMPLERS),
)
def test_property_outputs_are_zero_or_x_times_the_scale(
    rows, n, dtype, p, seed, scale, sampler
):
    x = sample((rows, n), dtype)
    y = dropout(x, p, seed=seed, scale=scale, sampler=sampler)
    compute = torch.float64 if dtype == torch.float64 else torch.float32
    kept = y != 0
    for r in range(rows):
        k = int(kept[r].sum())
        if scale == "realized":
            factor = n / k if k else 0.0
        else:
            factor = {
                "inverted": 0.0 if p == 1 else 1 / (1 - p),
                "classic": 1.0,
                "none": 1.0,
            }[scale]
        expected = (x[r].to(compute) * torch.tensor(factor, dtype=compute)).to(dtype)
        if factor and k:
            assert torch.equal(y[r][kept[r]], expected[kept[r]])


@settings(derandomize=True, deadline=None, max_examples=40)
@given(
    shape=st.lists(st.integers(0, 4), max_size=3),
    dtype=st.sampled_from(DTYPES),
    p=st.floats(0, 1),
    scale=st.sampled_from(SCALES),
    sampler=st.sampled_from(SAMPLERS),
)
def test_property_p_zero_and_eval_are_the_identity(shape, dtype, p, scale, sampler):
    x = sample(tuple(shape), dtype)
    assert_same_bits(dropout(x, 0.0, seed=1, scale=scale, sampler=sampler), x)
    y = dropout(x, p, training=False, scale=scale, sampler=sampler)
    if scale == "classic":  # evaluation multiplies by the keep probability
        compute = torch.float64 if dtype == torch.float64 else torch.float32
        assert_same_bits(
            y, (x.to(compute) * torch.tensor(1 - p, dtype=compute)).to(dtype)
        )
    else:
        assert y is x


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("sampler", SAMPLERS)
def test_gradcheck_and_gradgradcheck_in_float64(scale, sampler):
    x = sample((4, 6), torch.float64).requires_grad_()

    def fn(t):
        return dropout(t, 0.4, seed=123, offset=7, scale=scale, sampler=sampler)

    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))


def test_gradcheck_with_shared_dims_and_inplace():
    x = sample((3, 4, 5), torch.float64).requires_grad_()

    def fn(t):
        return dropout(
            t * 1.0, 0.5, seed=5, scale="realized", shared_dims=-1, inplace=True
        )

    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))


def test_gradient_is_the_same_mask_and_scale():
    x = torch.ones(5, 8, requires_grad=True)
    y = dropout(x, 0.3, seed=31, scale="realized")
    y.backward(torch.full_like(y, 2.0))
    assert torch.equal(x.grad, 2 * y.detach())


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("sampler", SAMPLERS)
def test_p_one_gives_zeros_and_zero_finite_gradients(scale, sampler):
    x = sample((3, 5), torch.float64).requires_grad_()
    y = dropout(x, 1.0, seed=0, scale=scale, sampler=sampler)
    assert torch.equal(y, torch.zeros_like(y))
    y.sum().backward()
    assert torch.isfinite(x.grad).all()
    assert torch.equal(x.grad, torch.zeros_like(x))


def test_dropped_inf_and_nan_become_plus_zero():
    x = torch.tensor([float("inf"), float("nan"), -float("inf"), -3.0] * 4)
    y = dropout(x, 1.0, seed=0)
    assert_same_bits(y, torch.zeros_like(x))
    y = dropout(x, 0.5, seed=0)
    kept = torch.from_numpy(np.asarray(make_mask((16,), 0.5, seed=0)))
    assert_same_bits(y[~kept], torch.zeros(int((~kept).sum())))


def saved_bytes(fn):
    """Bytes of every tensor autograd packs for backward while ``fn`` runs."""
    sizes = []

    def pack(t):
        sizes.append(t.numel() * t.element_size())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return sum(sizes), out


@pytest.mark.parametrize("dtype", DTYPES)
def test_nothing_of_the_input_size_is_saved_for_backward(dtype):
    x = sample((256, 64), dtype).requires_grad_()
    # Positive control: PyTorch's dropout keeps at least a byte per element.
    torch_bytes, _ = saved_bytes(lambda: torch.nn.functional.dropout(x, 0.5))
    assert torch_bytes >= x.numel()
    for scale in SCALES:
        nbytes, y = saved_bytes(
            lambda s=scale: dropout(x, 0.5, seed=1, scale=s, sampler="fixed")
        )
        assert nbytes == 0
        y.sum().backward()
    # In place, and through a double backward.
    nbytes, _ = saved_bytes(lambda: dropout(x * 1, 0.5, seed=1, inplace=True))
    assert nbytes == 0
    # Double backward: the gradient is the same op on an upstream gradient v.
    z = sample((32,), torch.float64).requires_grad_()
    v = sample((32,), torch.float64, seed=1).requires_grad_()

    def double_backward():
        y = dropout(z, 0.5, seed=2)
        (grad,) = torch.autograd.grad(y, z, grad_outputs=v, create_graph=True)
        grad.sum().backward()
        return grad

    nbytes, grad = saved_bytes(double_backward)
    assert nbytes == 0
    mask_times_scale = dropout(torch.ones_like(z), 0.5, seed=2)
    assert torch.equal(grad.detach(), v.detach() * mask_times_scale)
    assert torch.equal(v.grad, mask_times_scale)


def test_inplace_overwrites_and_returns_the_input():
    base = sample((4, 7), torch.float64)
    expected = dropout(base, 0.5, seed=6)
    x = base.clone()
    version = x._version
    y = dropout(x, 0.5, seed=6, inplace=True)
    assert y is x
    assert x._version > version
    assert_same_bits(x, expected)
    # Autograd through an in-place dropout on a non-leaf.
    w = base.clone().requires_grad_()
    dropout(w * 1, 0.5, seed=6, inplace=True).sum().backward()
    assert torch.equal(w.grad, (expected != 0).double() * 2)


def test_classic_eval_in_place_scales_the_input():
    x = torch.full((3,), 2.0)
    assert dropout(x, 0.25, training=False, scale="classic", inplace=True) is x
    assert torch.equal(x, torch.full((3,), 1.5))


def test_same_seed_twice_gives_the_same_output_and_offsets_differ():
    x = sample((50, 20))
    assert_same_bits(dropout(x, 0.5, seed=8), dropout(x, 0.5, seed=8))
    assert not torch.equal(dropout(x, 0.5, seed=8), dropout(x, 0.5, seed=9))
    assert not torch.equal(
        dropout(x, 0.5, seed=8), dropout(x, 0.5, seed=8, offset=1000)
    )


def test_seed_none_follows_torch_manual_seed():
    x = sample((40, 25))
    torch.manual_seed(0)
    a, b = dropout(x, 0.5), dropout(x, 0.5)
    torch.manual_seed(0)
    c, d = dropout(x, 0.5), dropout(x, 0.5)
    assert_same_bits(a, c)
    assert_same_bits(b, d)
    assert not torch.equal(a, b)
    # Evaluation draws nothing from the global generator, as in PyTorch.
    torch.manual_seed(0)
    dropout(x, 0.5, training=False)
    assert_same_bits(dropout(x, 0.5), a)


@pytest.mark.parametrize("p", [0.3, 0.7])
def test_expected_output_equals_input_under_inverted(p):
    rows, n = 4000, 48
    x = torch.linspace(-2, 2, n, dtype=torch.float64)
    y = dropout(x.expand(rows, n), p, seed=17)
    mean = y.mean(dim=0)
    sd = x.abs() * math.sqrt(p / (1 - p) / rows)
    assert torch.all((mean - x).abs() <= 6 * sd)


@pytest.mark.parametrize("p", [0.3, 0.7])
def test_expected_output_equals_input_under_realized(p):
    rows, n = 4000, 48
    x = torch.linspace(-2, 2, n, dtype=torch.float64)
    y = dropout(x.expand(rows, n), p, seed=18, scale="realized")
    # y_i = x_i m_i n/K with K ~ Binomial(n, 1-p): E = x_i P(K > 0) and
    # E[(m_i n/K)^2] = E[n/K; K > 0], summed exactly over the binomial.
    k = np.arange(1, n + 1)
    pmf = stats.binom.pmf(k, n, 1 - p)
    mean_factor = 1 - p**n
    var_factor = float(np.sum(pmf * n / k)) - mean_factor**2
    sd = x.abs() * math.sqrt(var_factor / rows)
    assert torch.all((y.mean(dim=0) - x * mean_factor).abs() <= 6 * sd)
    # Exact compensation of the count: a row of ones keeps its total n.
    ones = dropout(
        torch.ones(rows, n, dtype=torch.float64), p, seed=18, scale="realized"
    )
    torch.testing.assert_close(
        ones.sum(dim=1), torch.full((rows,), float(n), dtype=torch.float64)
    )


def test_empty_and_zero_dim_inputs():
    for shape in [(), (0,), (0, 3), (3, 0), (2, 0, 4)]:
        for sampler in SAMPLERS:
            x = sample(shape)
            y = dropout(x, 0.5, seed=3, scale="realized", sampler=sampler)
            assert y.shape == x.shape
            assert_same_bits(
                y, oracle(x, 0.5, seed=3, scale="realized", sampler=sampler)
            )


def test_stream_elements_counts_mask_elements():
    assert masks.stream_elements((8, 16, 5, 5), (2, 3)) == 128
    assert masks.stream_elements((3, 0)) == 0
    assert masks.stream_elements(()) == 1


def test_forced_reference_backend_matches_and_unknown_backends_are_refused(monkeypatch):
    x = sample((5, 13), torch.float16)
    default = dropout(x, 0.3, seed=10, offset=2, scale="realized", sampler="fixed")
    monkeypatch.setenv("DROPLAB_BACKEND", "reference")
    assert kernels.select(x) is reference_masked_scale
    assert_same_bits(
        dropout(x, 0.3, seed=10, offset=2, scale="realized", sampler="fixed"), default
    )
    monkeypatch.setenv("DROPLAB_BACKEND", "cuda-magic")
    with pytest.raises(
        ValueError,
        match=r"The DROPLAB_BACKEND environment variable must be unset or one of 'reference', 'numba', 'triton'; got 'cuda-magic'\.",
    ):
        dropout(x, 0.3, seed=10)


def test_masked_scale_writes_into_out():
    x = sample((4, 4))
    out = torch.empty_like(x)
    result = MASKED_SCALE.kernel(x, 1, 0, 0.5, "inverted", "bernoulli", (), out=out)
    assert result is out
    assert_same_bits(out, oracle(x, 0.5, seed=1))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
def test_cuda_matches_cpu_bit_for_bit(dtype):
    x = sample((33, 65), dtype)
    for scale, sampler, dims in [
        ("inverted", "bernoulli", ()),
        ("realized", "fixed", (1,)),
    ]:
        cpu = dropout(
            x,
            0.4,
            seed=2**64 - 1,
            offset=5,
            scale=scale,
            sampler=sampler,
            shared_dims=dims,
        )
        gpu = dropout(
            x.cuda(),
            0.4,
            seed=2**64 - 1,
            offset=5,
            scale=scale,
            sampler=sampler,
            shared_dims=dims,
        )
        assert gpu.device.type == "cuda"
        assert_same_bits(gpu, cpu)


BAD_ARGUMENTS = [
    (
        {"x": np.ones(3)},
        TypeError,
        r"The 'x' argument of dropout must be a torch\.Tensor of dtype float16, bfloat16, float32 or float64; got an object of type ndarray\.",
    ),
    (
        {"x": torch.arange(3)},
        TypeError,
        r"The 'x' argument of dropout must be a torch\.Tensor of dtype float16, bfloat16, float32 or float64; got a tensor of dtype torch\.int64\.",
    ),
    (
        {"x": torch.ones(3, dtype=torch.complex64)},
        TypeError,
        r"got a tensor of dtype torch\.complex64\.",
    ),
    (
        {"p": 1.5},
        ValueError,
        r"The 'p' argument of dropout must be a real number in \[0, 1\]; got 1\.5\.",
    ),
    (
        {"p": -0.0001},
        ValueError,
        r"The 'p' argument of dropout must be a real number in \[0, 1\]; got -0\.0001\.",
    ),
    (
        {"p": float("nan")},
        ValueError,
        r"The 'p' argument of dropout must be a real number in \[0, 1\]; got nan\.",
    ),
    (
        {"p": True},
        TypeError,
        r"The 'p' argument of dropout must be a real number in \[0, 1\]; got True\.",
    ),
    (
        {"p": "0.5"},
        TypeError,
        r"The 'p' argument of dropout must be a real number in \[0, 1\]; got '0\.5'\.",
    ),
    (
        {"training": 1},
        TypeError,
        r"The 'training' argument of dropout must be True or False; got 1\.",
    ),
    (
        {"seed": -1},
        ValueError,
        r"The 'seed' argument of dropout must be an integer in \[0, 18446744073709551616\); got -1\.",
    ),
    (
        {"seed": 2**64},
        ValueError,
        r"The 'seed' argument of dropout must be an integer in \[0, 18446744073709551616\); got 18446744073709551616\.",
    ),
    (
        {"seed": 1.0},
        TypeError,
        r"The 'seed' argument of dropout must be an integer in \[0, 18446744073709551616\); got 1\.0\.",
    ),
    (
        {"offset": -3},
        ValueError,
        r"The 'offset' argument of dropout must be an integer in \[0, \d+\); got -3\.",
    ),
    (
        {"scale": "inverse"},
        ValueError,
        r"The 'scale' argument of dropout must be one of 'inverted', 'classic', 'realized', 'none'; got 'inverse'\.",
    ),
    (
        {"sampler": "exact"},
        ValueError,
        r"The 'sampler' argument of dropout must be one of 'bernoulli', 'fixed'; got 'exact'\.",
    ),
    (
        {"shared_dims": (2,)},
        ValueError,
        r"The 'shared_dims' argument of dropout must be distinct dimensions in \[-2, 1\] for a 2-d input; got \(2,\)\.",
    ),
    (
        {"shared_dims": (1, -1)},
        ValueError,
        r"The 'shared_dims' argument of dropout must be distinct dimensions in \[-2, 1\] for a 2-d input; got \(1, -1\)\.",
    ),
    (
        {"shared_dims": "1"},
        TypeError,
        r"The 'shared_dims' argument of dropout must be an int or a tuple of ints; got '1'\.",
    ),
    (
        {"inplace": None},
        TypeError,
        r"The 'inplace' argument of dropout must be True or False; got None\.",
    ),
]


@pytest.mark.parametrize(("kwargs", "error", "message"), BAD_ARGUMENTS)
@pytest.mark.parametrize("training", [True, False])
def test_bad_arguments_raise_errors_naming_them(kwargs, error, message, training):
    arguments = {"x": torch.ones(2, 3), "p": 0.5, "training": training, "seed": 1}
    arguments.update(kwargs)
    with pytest.raises(error, match=message):
        dropout(**arguments)
