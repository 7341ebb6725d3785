"""Drop-in conformance: torch's dropout modules and droplab's, side by side.

Every check below runs on ``torch.nn.X`` and on ``droplab.nn.X`` alike (the
``pair`` fixture), for the six classes droplab replaces; where torch's module
itself does not have a property, the test says so and checks droplab's only.
What differs on purpose (the random numbers, and the few differences listed in
docs/variants.md, "Differences from torch.nn") is asserted as a difference.
"""

from __future__ import annotations

import copy
import io
import pickle
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
from scipy import stats
from torch import nn

import droplab
import droplab.functional
import droplab.nn as dn
from droplab.variants.alpha import SELU_SATURATION, alpha_dropout_affine


@dataclass(frozen=True)
class Case:
    name: str
    shape: tuple[int, ...]  # a batched input
    unbatched: bool  # whether torch reads a rank-1-lower input as one sample
    channel: bool  # one draw per (sample, channel)
    alpha: bool


CASES = [
    Case("Dropout", (6, 8, 5, 7), True, False, False),
    Case("Dropout1d", (6, 8, 35), True, True, False),
    Case("Dropout2d", (6, 8, 5, 7), False, True, False),
    Case("Dropout3d", (6, 8, 5, 7, 3), True, True, False),
    Case("AlphaDropout", (6, 8, 5, 7), True, False, True),
    Case("FeatureAlphaDropout", (6, 8, 5, 7), False, True, True),
]
IDS = [c.name for c in CASES]
PS = [0.0, 1e-10, 0.3, 0.7]


def both(case: Case) -> list[tuple[str, Callable[..., nn.Module]]]:
    return [("torch", getattr(nn, case.name)), ("droplab", getattr(dn, case.name))]


def layouts(case: Case) -> dict[str, torch.Tensor]:
    """The inputs of the layout checks: contiguous, channels_last, sliced."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(case.shape, generator=gen)
    out = {"contiguous": x, "transposed": x.transpose(-1, -2)}
    if x.ndim == 4:
        cl = x.to(memory_format=torch.channels_last)
        out["channels_last"] = cl
        out["channels_last sliced"] = cl[:, 1:, ::2, 1:]
    if x.ndim == 5:
        out["channels_last_3d"] = x.to(memory_format=torch.channels_last_3d)
        out["channels_last_3d sliced"] = out["channels_last_3d"][:, :, 1:, ::2]
    out["sliced"] = x[::2, :, 1:]
    return out


@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("p", PS)
def test_output_is_laid_out_as_torch_lays_it_out(case: Case, p: float) -> None:
    for label, x in layouts(case).items():
        outputs = {}
        for who, cls in both(case):
            torch.manual_seed(1)
            outputs[who] = cls(p)(x)
        t, d = outputs["torch"], outputs["droplab"]
        assert d.shape == t.shape, label
        assert d.stride() == t.stride(), (label, d.stride(), t.stride())
        if p > 0.0:  # a new tensor: laid out as torch.empty_like(x)
            assert d.stride() == torch.empty_like(x).stride(), label


@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("p", [0.3, 0.7])
def test_the_layout_never_changes_a_value(case: Case, p: float) -> None:
    # The mask is on the logical index: every layout of the same values gives
    # the same output values (the contract of docs/DESIGN.md does not change).
    inputs = layouts(case)
    base = getattr(dn, case.name)(p, seed=11)(inputs["contiguous"])
    for label, x in inputs.items():
        y = getattr(dn, case.name)(p, seed=11)(x)
        same = getattr(dn, case.name)(p, seed=11)(x.contiguous())
        assert torch.equal(y, same), label
        if label in ("channels_last", "channels_last_3d"):
            assert torch.equal(y, base), label


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_p_near_zero_returns_the_inputs_values(case: Case) -> None:
    x = torch.randn(case.shape, generator=torch.Generator().manual_seed(2))
    for who, cls in both(case):
        torch.manual_seed(3)
        y = cls(1e-10)(x)
        if case.alpha:  # a * x + b with a = 1 - O(p), b = O(p)
            assert torch.allclose(y, x, rtol=1e-6, atol=1e-6), who
        else:
            assert torch.equal(y, x), who
        assert cls(0.0)(x).data_ptr() == x.data_ptr(), who  # x, or a view of it


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_eval_is_the_identity(case: Case) -> None:
    x = torch.randn(case.shape)
    results = {}
    for who, cls in both(case):
        m = cls(0.4).eval()
        y = m(x)
        assert torch.equal(y, x) and y.data_ptr() == x.data_ptr(), who
        results[who] = y is x
    # droplab returns x itself wherever torch does (and for Dropout1d/3d, where
    # torch returns a view of x, too).
    assert results["droplab"] or not results["torch"]


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_inplace_modifies_and_returns_the_input_as_torch_does(case: Case) -> None:
    behaviour = {}
    for who, cls in both(case):
        x = torch.randn(case.shape, generator=torch.Generator().manual_seed(4))
        before = x.clone()
        torch.manual_seed(5)
        y = cls(0.5, inplace=True)(x)
        behaviour[who] = (y is x, not torch.equal(x, before))
        if y is x:
            assert not torch.equal(y, before), who
    # Dropout and Dropout1d/2d/3d write into x and return it; torch's alpha
    # modules store inplace but compute out of place, and droplab's do the same.
    assert behaviour["droplab"] == behaviour["torch"]
    assert behaviour["torch"] == ((False, False) if case.alpha else (True, True))


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_functional_inplace_writes_into_x(case: Case) -> None:
    functional = {
        "Dropout": (droplab.functional.dropout, nn.functional.dropout),
        "Dropout1d": (droplab.functional.dropout1d, nn.functional.dropout1d),
        "Dropout2d": (droplab.functional.dropout2d, nn.functional.dropout2d),
        "Dropout3d": (droplab.functional.dropout3d, nn.functional.dropout3d),
        "AlphaDropout": (droplab.functional.alpha_dropout, nn.functional.alpha_dropout),
        "FeatureAlphaDropout": (
            droplab.functional.feature_alpha_dropout,
            nn.functional.feature_alpha_dropout,
        ),
    }[case.name]
    for fn in functional:
        x = torch.randn(case.shape)
        before = x.clone()
        y = fn(x, 0.5, True, inplace=True)
        assert y is x and not torch.equal(x, before), fn


@pytest.mark.parametrize(
    "case", [c for c in CASES if c.unbatched], ids=lambda c: c.name
)
def test_an_unbatched_input_gives_the_batched_result(case: Case) -> None:
    x = torch.randn(case.shape[1:])
    for who, cls in both(case):
        m = cls(0.5)
        with torch.random.fork_rng():
            torch.manual_seed(6)
            single = m(x)
            torch.manual_seed(6)
            batched = m(x.unsqueeze(0)).squeeze(0)
        assert torch.equal(single, batched), who


def binomial_bounds(n: int, keep: float) -> tuple[float, float]:
    """Kept count bounds that a fair draw leaves with probability 1e-9."""
    lo, hi = stats.binom.interval(1 - 1e-9, n, keep)
    return float(lo), float(hi)


@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("p", [0.3, 0.7])
def test_mean_preserved_within_the_binomial_bound(case: Case, p: float) -> None:
    # The number of kept draws is Binomial(units, 1 - p) for both; the mean of
    # the output is a function of it: for ones, kept / n / (1 - p) (expectation 1);
    # for alpha dropout of zeros, b + dropped / n * a * alpha' (expectation 0).
    shape = (40, 50, 6, 5, 4)[: len(case.shape)]
    units = shape[0] * shape[1] if case.channel else int(torch.Size(shape).numel())
    lo, hi = binomial_bounds(units, 1 - p)
    for who, cls in both(case):
        torch.manual_seed(7)
        if case.alpha:
            y = cls(p)(torch.zeros(shape, dtype=torch.float64))
            a, b = alpha_dropout_affine(p)
            kept = float((y - b).abs().lt(1e-12).sum()) / (y.numel() / units)
            mean_bound = max(
                abs(b + (1 - k / units) * a * SELU_SATURATION) for k in (lo, hi)
            )
            assert abs(float(y.mean())) <= mean_bound + 1e-12, who
        else:
            y = cls(p)(torch.ones(shape, dtype=torch.float64))
            kept = float((y != 0).sum()) / (y.numel() / units)
            mean = float(y.mean())
            assert (
                lo / units / (1 - p) - 1e-12 <= mean <= hi / units / (1 - p) + 1e-12
            ), who
        assert lo <= kept <= hi, (who, kept, lo, hi)


def raised(make: Callable[[], object]) -> type[BaseException] | None:
    try:
        make()
    except Exception as error:  # the class is what is compared
        return type(error)
    return None


BAD_RANK = {
    "Dropout1d": [(4, 3, 5, 2), (5,), ()],
    "Dropout2d": [(5,), ()],
    "Dropout3d": [()],
    "FeatureAlphaDropout": [(5,), ()],
}


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_errors_are_catchable_as_torchs(case: Case) -> None:
    torch_cls, ours_cls = getattr(nn, case.name), getattr(dn, case.name)
    bad_inputs = [torch.zeros(s) for s in BAD_RANK.get(case.name, [])]
    bad_inputs += [torch.ones(case.shape, dtype=torch.int64)]
    for x in bad_inputs:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            theirs = raised(lambda: torch_cls(0.5)(x))  # noqa: B023
            ours = raised(lambda: ours_cls(0.5)(x))  # noqa: B023
        assert theirs is not None and ours is not None, x.shape
        # every class torch raises (RuntimeError, or its NotImplementedError)
        # is one our error can be caught as, up to RuntimeError
        assert issubclass(ours, RuntimeError), (x.shape, x.dtype, ours)
        assert issubclass(theirs, RuntimeError), (x.shape, x.dtype, theirs)
        if x.dtype == torch.int64:
            assert issubclass(ours, TypeError) and ours is droplab.InputDtypeError
        else:
            assert issubclass(ours, ValueError) and ours is droplab.InputRankError
    for p in (-0.1, 1.5):
        assert raised(lambda: torch_cls(p)) is ValueError  # noqa: B023
        assert issubclass(raised(lambda: ours_cls(p)) or type(None), ValueError)  # noqa: B023


WARNS = {
    "Dropout2d": [(2, 3, 4), (2, 3, 4, 5, 6)],  # (N, C, L) reading; wrong rank
    "Dropout3d": [(2, 3, 4), (1, 2, 3, 4, 5, 6)],
}


@pytest.mark.parametrize("name", sorted(WARNS))
def test_warnings_are_torchs(name: str) -> None:
    for shape in WARNS[name]:
        caught = {}
        for who, cls in (("torch", getattr(nn, name)), ("droplab", getattr(dn, name))):
            with warnings.catch_warnings(record=True) as record:
                warnings.simplefilter("always")
                cls(0.5)(torch.ones(shape))
            caught[who] = sorted((w.category.__name__, str(w.message)) for w in record)
        assert caught["droplab"] == caught["torch"], shape
        assert caught["torch"], shape


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_repr_is_torchs_for_torchs_arguments(case: Case) -> None:
    for p, inplace in ((0.5, False), (0.25, True)):
        torch_m = getattr(nn, case.name)(p, inplace)
        ours = getattr(dn, case.name)(p, inplace)
        assert repr(ours) == repr(torch_m)
    seeded = getattr(dn, case.name)(0.5, seed=3)
    assert repr(seeded) == f"{case.name}(p=0.5, inplace=False, seed=3, offset=0)"


@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_copies_carry_on_the_stream(case: Case, how: str) -> None:
    x = torch.randn(case.shape)
    for who, cls in [*both(case), ("droplab seeded", None)]:
        m = cls(0.5) if cls is not None else getattr(dn, case.name)(0.5, seed=8)
        m(x)
        twin = copy.deepcopy(m) if how == "deepcopy" else pickle.loads(pickle.dumps(m))
        assert type(twin) is type(m) and repr(twin) == repr(m), who
        torch.manual_seed(9)
        a = m(x)
        torch.manual_seed(9)
        b = twin(x)
        assert torch.equal(a, b), who  # seedless: torch's generator; seeded: the offset


def state_bytes(state: dict[str, object]) -> dict[str, object]:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    loaded: dict[str, object] = torch.load(buffer, weights_only=True)
    return loaded


def net(dropout: nn.Module) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 5), dropout, nn.Linear(5, 5))


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_state_dicts_load_both_ways(case: Case) -> None:
    theirs = net(getattr(nn, case.name)(0.5))
    ours = net(getattr(dn, case.name)(0.5))
    # torch -> droplab, droplab (no seed) -> torch: strict, either way
    ours.load_state_dict(state_bytes(theirs.state_dict()), strict=True)
    theirs.load_state_dict(state_bytes(ours.state_dict()), strict=True)
    assert set(ours.state_dict()) == set(theirs.state_dict())
    # a seeded module keeps its stream in _extra_state ...
    seeded = net(getattr(dn, case.name)(0.5, seed=2**64 - 1))
    seeded[1].offset = 123
    saved = state_bytes(seeded.state_dict())
    assert "1._extra_state" in saved
    with pytest.raises(RuntimeError, match="_extra_state"):
        net(getattr(nn, case.name)(0.5)).load_state_dict(saved, strict=True)
    # ... restored into a droplab model (even a seedless one) ...
    fresh = net(getattr(dn, case.name)(0.5))
    fresh.load_state_dict(saved, strict=True)
    assert (fresh[1].seed, fresh[1].offset) == (2**64 - 1, 123)
    # ... and a torch checkpoint keeps a seeded module's own stream
    seeded.load_state_dict(state_bytes(theirs.state_dict()), strict=True)
    assert (seeded[1].seed, seeded[1].offset) == (2**64 - 1, 123)
    # revert: the way back for a seeded model
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        reverted = droplab.revert(copy.deepcopy(seeded))
    assert type(reverted[1]) is getattr(nn, case.name)
    assert repr(reverted[1]) == repr(getattr(nn, case.name)(0.5))
    net(getattr(nn, case.name)(0.5)).load_state_dict(
        state_bytes(reverted.state_dict()), strict=True
    )
    assert type(seeded[1]) is getattr(dn, case.name)  # the copy was reverted


def test_convert_then_revert_is_the_identity_on_a_torch_model() -> None:
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.Dropout2d(0.2, inplace=True), nn.Flatten(),
        nn.Dropout(0.1), nn.LazyLinear(4), nn.AlphaDropout(0.05),
    )  # fmt: skip
    before = [repr(m) for m in model]
    droplab.convert(model, seed=1)
    assert all(
        isinstance(m, droplab.StochasticModule) for m in (model[1], model[3], model[5])
    )
    model.eval()
    droplab.revert(model)
    assert [repr(m) for m in model] == before
    assert not model[1].training  # the flag travels both ways


def test_revert_names_what_has_no_torch_form() -> None:
    model = nn.Sequential(
        dn.Dropout(0.3, scale="classic"), dn.GaussianDropout(0.2), dn.Dropout(0.1)
    )
    with pytest.warns(UserWarning, match="left 2 droplab module") as record:
        droplab.revert(model)
    message = str(record[0].message)
    assert "0: Dropout with scale='classic'" in message
    assert "1: GaussianDropout has no torch counterpart" in message
    assert type(model[2]) is nn.Dropout
    with pytest.raises(TypeError, match="'model' argument of revert"):
        droplab.revert("model")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="revert swaps children"):
        droplab.revert(dn.Dropout(0.1))


@pytest.mark.filterwarnings(  # Inductor's own import of torch.jit (torch 2.13)
    "ignore:`torch.jit.script_method` is deprecated:DeprecationWarning"
)
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_compiled_output_keeps_the_layout_and_the_values(case: Case) -> None:
    torch._dynamo.reset()  # and no on-disk caches (see tests/core/test_compile.py)
    inputs = layouts(case)
    label = "channels_last" if len(case.shape) == 4 else "sliced"
    if len(case.shape) == 5:
        label = "channels_last_3d"
    x = inputs[label]
    eager = getattr(dn, case.name)(0.4, seed=21)
    compiled_module = getattr(dn, case.name)(0.4, seed=21)
    compiled = torch.compile(compiled_module, fullgraph=True)
    with (
        torch._inductor.config.patch(fx_graph_cache=False),
        torch._functorch.config.patch(enable_autograd_cache=False),
    ):
        for _ in range(2):
            a, b = eager(x), compiled(x)
            assert torch.equal(a, b)
            assert b.stride() == a.stride() == torch.empty_like(x).stride()
    torch._dynamo.reset()


@pytest.mark.parametrize("name", ["Dropout1d", "Dropout2d", "Dropout3d"])
def test_a_refused_call_does_not_advance_the_stream(name: str) -> None:
    m = getattr(dn, name)(0.5, seed=1)
    with pytest.raises(droplab.InputRankError):
        m(torch.zeros(()))
    assert m.offset == 0


@pytest.mark.parametrize(
    "make",
    [
        lambda: dn.DropPath(0.3, seed=1),
        lambda: dn.DropBlock2d(0.3, block_size=2, seed=1),
        lambda: dn.GaussianDropout(0.3, seed=1),
        lambda: dn.LockedDropout(0.3, seed=1),
        lambda: dn.ConcreteDropout(seed=1),
    ],
    ids=[
        "DropPath",
        "DropBlock2d",
        "GaussianDropout",
        "LockedDropout",
        "ConcreteDropout",
    ],
)
def test_the_other_variants_keep_the_layout_too(make: Callable[[], nn.Module]) -> None:
    x = torch.randn(4, 6, 5, 7).to(memory_format=torch.channels_last)
    for inp in (x, x[:, 1:, ::2]):
        y = make()(inp)
        assert y.stride() == torch.empty_like(inp).stride()
        assert torch.equal(y, make()(inp.contiguous()))  # the same values


def test_a_seedless_checkpoint_of_droplab_0_1_still_loads() -> None:
    # droplab 0.1 wrote _extra_state for seedless modules too; it loads, strictly.
    m = dn.Dropout(0.5)
    m.load_state_dict({"_extra_state": {"seed": None, "offset": 0}}, strict=True)
    assert m.seed is None and m.state_dict() == {}
    m.load_state_dict({"_extra_state": {"seed": 5, "offset": 8}}, strict=True)
    assert (m.seed, m.offset) == (5, 8) and list(m.state_dict()) == ["_extra_state"]
