"""droplab.nn: the Dropout module, its stream in state_dict, and mc_dropout."""

from __future__ import annotations

import copy
import inspect
import io
import math

import pytest
import torch
from torch import nn

import droplab
from droplab import masks
from droplab._core.module import StochasticModule
from droplab.functional import dropout
from droplab.nn import Dropout, mc_dropout


def sample(shape, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(shape, generator=g, dtype=torch.float64)
    return (z + torch.sign(z) * 0.25).to(dtype)


def test_exported_from_the_package():
    assert droplab.Dropout is Dropout
    assert droplab.mc_dropout is mc_dropout
    assert droplab.StochasticModule is StochasticModule


def test_positional_signature_and_repr_match_torch():
    ours = list(inspect.signature(Dropout).parameters.values())[:2]
    theirs = list(inspect.signature(nn.Dropout).parameters.values())
    assert [(q.name, q.default, q.kind) for q in ours] == [
        (q.name, q.default, q.kind) for q in theirs
    ]
    assert repr(Dropout()) == repr(nn.Dropout()) == "Dropout(p=0.5, inplace=False)"
    assert repr(Dropout(0.2, True)) == repr(nn.Dropout(0.2, True))
    extras = Dropout(0.1, seed=3, scale="realized", sampler="fixed", shared_dims=-1)
    assert repr(extras) == (
        "Dropout(p=0.1, inplace=False, seed=3, offset=0, scale='realized', "
        "sampler='fixed', shared_dims=(-1,))"
    )


def test_eval_is_the_identity_and_classic_eval_scales():
    x = sample((4, 5))
    m = Dropout(0.3, seed=1).eval()
    assert m(x) is x
    assert m.offset == 0  # nothing drawn at evaluation
    classic = Dropout(0.25, scale="classic").eval()
    torch.testing.assert_close(classic(x), x * 0.75, rtol=0, atol=0)


@pytest.mark.parametrize(
    ("shape", "shared_dims"),
    [((6, 10), ()), ((3, 4, 5), -1), ((2, 3, 4, 4), (2, 3)), ((0, 7), ())],
)
def test_training_call_uses_its_stream_and_advances_the_offset(shape, shared_dims):
    x = sample(shape)
    m = Dropout(0.4, seed=2**64 - 1, scale="realized", shared_dims=shared_dims)
    m.offset = 3
    dims = tuple(
        sorted(
            d % len(shape)
            for d in ((shared_dims,) if isinstance(shared_dims, int) else shared_dims)
        )
    )
    used = masks.stream_elements(shape, dims)
    for call in range(3):
        expected = dropout(
            x,
            0.4,
            seed=2**64 - 1,
            offset=3 + call * used,
            scale="realized",
            shared_dims=dims,
        )
        assert torch.equal(m(x), expected)
        assert m.offset == 3 + (call + 1) * used


def test_consecutive_calls_continue_one_stream():
    m = Dropout(0.5, seed=42)
    x = torch.ones(2, 5)
    first, second = m(x), m(x)
    assert not torch.equal(first, second)
    assert torch.equal(
        torch.cat([first, second]), dropout(torch.ones(4, 5), 0.5, seed=42)
    )


def test_state_dict_round_trip_replays_the_masks():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(6, 8), Dropout(0.5, seed=2**64 - 1), nn.Linear(8, 2)
    )
    x = sample((5, 6))
    for _ in range(3):
        model(x)  # some training steps
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    expected = [model(x) for _ in range(3)]

    buffer.seek(0)
    state = torch.load(buffer)  # weights_only: the stream is an int64 tensor
    assert state["1._extra_state"].tolist() == [-1, 3 * 40]  # two's complement
    resumed = nn.Sequential(nn.Linear(6, 8), Dropout(0.5), nn.Linear(8, 2))
    resumed.load_state_dict(state)
    assert resumed[1].seed == 2**64 - 1
    for want in expected:
        assert torch.equal(resumed(x), want)
    assert resumed[1].offset == model[1].offset == 6 * 40


def _train(model, steps, x, target):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(steps):
        optimizer.zero_grad()
        nn.functional.mse_loss(model(x), target).backward()
        optimizer.step()


def _make_model():
    torch.manual_seed(7)
    return nn.Sequential(
        nn.Linear(4, 16),
        nn.ReLU(),
        Dropout(0.3, seed=123, sampler="fixed"),
        nn.Linear(16, 1),
    ).double()


def test_a_resumed_training_run_ends_where_an_uninterrupted_one_does():
    x, target = sample((32, 4), torch.float64), sample((32, 1), torch.float64, seed=1)
    straight = _make_model()
    _train(straight, 6, x, target)

    first = _make_model()
    _train(first, 3, x, target)  # plain SGD: the model is the whole checkpoint
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    resumed = nn.Sequential(
        nn.Linear(4, 16), nn.ReLU(), Dropout(0.3, sampler="fixed"), nn.Linear(16, 1)
    ).double()
    resumed.load_state_dict(torch.load(buffer))
    _train(resumed, 3, x, target)
    for a, b in zip(straight.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b)
    assert resumed[2].offset == straight[2].offset == 6 * 32 * 16


def test_checkpoints_of_torch_dropout_models_load_strictly():
    torch.manual_seed(4)
    theirs = nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.5), nn.Linear(4, 2))
    ours = nn.Sequential(nn.Linear(3, 4), Dropout(0.5, seed=6), nn.Linear(4, 2))
    ours[1].offset = 10
    result = ours.load_state_dict(theirs.state_dict(), strict=True)
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert (ours[1].seed, ours[1].offset) == (6, 10)  # the module keeps its stream
    x = sample((2, 3))
    torch.testing.assert_close(ours.eval()(x), theirs.eval()(x), rtol=0, atol=0)


def test_seed_none_draws_from_torch_and_keeps_offset_zero():
    m = Dropout(0.5)
    x = sample((30, 20))
    torch.manual_seed(5)
    a, b = m(x), m(x)
    torch.manual_seed(5)
    assert torch.equal(m(x), a)
    assert torch.equal(m(x), b)
    assert not torch.equal(a, b)
    assert m.offset == 0
    assert m.get_extra_state().shape == (0,) and m.state_dict() == {}


def test_backward_through_the_module_is_mask_times_scale_and_saves_nothing():
    m = Dropout(0.3, seed=8)
    x = torch.ones(16, 32, requires_grad=True)
    sizes = []

    def pack(t):
        sizes.append(t.numel() * t.element_size())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = m(x)
    assert sizes == []
    y.backward(torch.ones_like(y))
    assert torch.equal(x.grad, y.detach())


def test_inplace_module_overwrites_its_input():
    x = sample((4, 6))
    expected = Dropout(0.5, seed=2)(x)
    y = Dropout(0.5, True, seed=2)(x)
    assert y is x
    assert torch.equal(x, expected)


def test_classic_evaluation_equals_scaling_the_next_layers_weights():
    torch.manual_seed(1)
    p = 0.3
    model = nn.Sequential(
        nn.Linear(5, 7), Dropout(p, scale="classic"), nn.Linear(7, 3)
    ).double()
    x = sample((9, 5), torch.float64)
    scaled = nn.Sequential(nn.Linear(5, 7), nn.Linear(7, 3)).double()
    with torch.no_grad():
        scaled[0].load_state_dict(model[0].state_dict())
        scaled[1].weight.copy_(model[2].weight * (1 - p))
        scaled[1].bias.copy_(model[2].bias)
    torch.testing.assert_close(model.eval()(x), scaled(x), rtol=1e-12, atol=1e-12)


def test_classic_training_average_converges_to_the_weight_scaled_network():
    # E[W (m * h)] = (1 - p) W h for a linear next layer: the reason weight scaling works.
    p, draws = 0.4, 20000
    torch.manual_seed(2)
    layer = nn.Linear(6, 1, bias=False).double()
    h = sample((6,), torch.float64)
    mask_layer = Dropout(p, seed=11, scale="classic")
    with torch.no_grad():
        outputs = layer(mask_layer(h.expand(draws, 6))).squeeze(1)
        target = layer(h * (1 - p)).item()
    sd = math.sqrt(
        p * (1 - p) * float(((layer.weight[0].detach() * h) ** 2).sum()) / draws
    )
    assert abs(outputs.mean().item() - target) < 6 * sd


def test_mc_dropout_trains_every_module_but_those_with_running_statistics():
    torch.manual_seed(3)
    model = nn.Sequential(
        nn.Linear(4, 8),
        nn.BatchNorm1d(8),
        Dropout(0.5, seed=1),
        nn.Dropout(0.5),
        nn.Dropout1d(0.5),
        nn.AlphaDropout(0.5),
        nn.FeatureAlphaDropout(0.5),
        nn.Linear(8, 2),
    ).eval()
    x = sample((10, 4))
    stats_before = model[1].running_mean.clone()
    with mc_dropout(model) as inside:
        assert inside is model
        assert [m.training for m in model] == [
            True,
            False,
            True,
            True,
            True,
            True,
            True,
            True,
        ]
        assert not torch.equal(model(x), model(x))
    assert torch.equal(model[1].running_mean, stats_before)  # BatchNorm stayed in eval
    assert not any(m.training for m in model.modules())
    torch.testing.assert_close(model(x), model(x))


@pytest.mark.parametrize(
    "kind",
    [
        nn.Dropout,
        nn.Dropout1d,
        nn.Dropout2d,
        nn.Dropout3d,
        nn.AlphaDropout,
        nn.FeatureAlphaDropout,
        Dropout,
    ],
)
def test_mc_dropout_switches_on_every_dropout_kind(kind):
    model = nn.Sequential(nn.Identity(), kind()).eval()
    with mc_dropout(model):
        assert [m.training for m in model.modules()] == [True, True, True]
    assert not model[1].training


def test_mc_dropout_restores_every_flag_even_after_an_exception():
    model = nn.Sequential(
        nn.Linear(3, 3), nn.Sequential(nn.BatchNorm1d(3), nn.Dropout3d()), Dropout()
    )
    model.train()
    model[1][0].eval()  # a mixed state must come back exactly
    model[2].eval()
    before = [m.training for m in model.modules()]
    with pytest.raises(RuntimeError, match="boom"), mc_dropout(model):
        assert [m.training for m in model.modules()] == [
            True,
            True,
            True,
            False,
            True,
            True,
        ]
        raise RuntimeError("boom")
    assert [m.training for m in model.modules()] == before


def test_mc_dropout_refuses_non_modules():
    with (
        pytest.raises(
            TypeError,
            match=r"The 'model' argument of mc_dropout must be a torch\.nn\.Module; got an object of type list\.",
        ),
        mc_dropout([]),
    ):
        pass


def test_stochastic_module_hands_out_consecutive_streams():
    m = StochasticModule(seed=9)
    assert m.next_stream(5) == (9, 0)
    assert m.next_stream(0) == (9, 5)
    assert m.next_stream(7) == (9, 5)
    assert m.offset == 12
    m.seed = 10  # a new seed keeps the offset; reset it explicitly if wanted
    assert m.next_stream(1) == (10, 12)
    unseeded = StochasticModule()
    torch.manual_seed(0)
    first = unseeded.next_stream(100)
    torch.manual_seed(0)
    assert unseeded.next_stream(100) == first
    assert first[1] == 0 and unseeded.offset == 0


def test_effective_seed_is_the_one_place_keys_are_derived():
    class Folded(Dropout):
        def _effective_seed(self, seed):
            return seed ^ 0xABCD  # what rank folding (issue 8) will do here

    x = sample((3, 8))
    assert torch.equal(Folded(0.5, seed=7)(x), dropout(x, 0.5, seed=7 ^ 0xABCD))


def test_deepcopy_copies_the_stream_position():
    m = Dropout(0.5, seed=4)
    m(torch.ones(3))
    twin = copy.deepcopy(m)
    x = sample((2, 3))
    assert torch.equal(twin(x), m(x))
    assert twin.offset == m.offset == 9


MODULE_ERRORS = [
    (
        {"p": 1.5},
        ValueError,
        r"The 'p' argument of Dropout must be a real number in \[0, 1\]; got 1\.5\.",
    ),
    (
        {"inplace": 1},
        TypeError,
        r"The 'inplace' argument of Dropout must be True or False; got 1\.",
    ),
    (
        {"seed": -1},
        ValueError,
        r"The 'seed' argument of Dropout must be an integer in \[0, 18446744073709551616\); got -1\.",
    ),
    (
        {"seed": 2**64},
        ValueError,
        r"The 'seed' argument of Dropout must be an integer in \[0, 18446744073709551616\); got 18446744073709551616\.",
    ),
    (
        {"scale": "inverse"},
        ValueError,
        r"The 'scale' argument of Dropout must be one of 'inverted', 'classic', 'realized', 'none'; got 'inverse'\.",
    ),
    (
        {"sampler": "exact"},
        ValueError,
        r"The 'sampler' argument of Dropout must be one of 'bernoulli', 'fixed'; got 'exact'\.",
    ),
    (
        {"shared_dims": "1"},
        TypeError,
        r"The 'shared_dims' argument of Dropout must be an int or a tuple of distinct ints; got '1'\.",
    ),
    (
        {"shared_dims": (1.0,)},
        TypeError,
        r"The 'shared_dims' argument of Dropout must be an int or a tuple of distinct ints; got \(1\.0,\)\.",
    ),
    (
        {"shared_dims": (1, 1)},
        ValueError,
        r"The 'shared_dims' argument of Dropout must be an int or a tuple of distinct ints; got \(1, 1\)\.",
    ),
]


@pytest.mark.parametrize(("kwargs", "error", "message"), MODULE_ERRORS)
def test_constructor_errors_name_the_argument(kwargs, error, message):
    with pytest.raises(error, match=message):
        Dropout(**kwargs)


def test_forward_errors_leave_the_offset_alone():
    m = Dropout(0.5, seed=1, shared_dims=2)
    with pytest.raises(
        ValueError,
        match=r"The 'shared_dims' argument of Dropout must be distinct dimensions in \[-2, 1\] for a 2-d input; got \(2,\)\.",
    ):
        m(torch.ones(3, 4))
    with pytest.raises(
        TypeError,
        match=r"The 'x' argument of Dropout must be a torch\.Tensor of dtype float16, bfloat16, float32 or float64; got a tensor of dtype torch\.int32\.",
    ):
        m(torch.ones(3, 4, 5, dtype=torch.int32))
    assert m.offset == 0


def test_stream_attributes_and_extra_state_are_validated():
    m = Dropout(seed=1)
    with pytest.raises(
        ValueError,
        match=r"The 'offset' argument of Dropout must be an integer in \[0, \d+\); got -1\.",
    ):
        m.offset = -1
    with pytest.raises(
        TypeError,
        match=r"The 'seed' argument of Dropout must be an integer in \[0, 18446744073709551616\); got '7'\.",
    ):
        m.seed = "7"
    with pytest.raises(
        ValueError,
        match=r"The 'state' argument of Dropout\.set_extra_state must be an int64 tensor \[seed, offset\], or a dict with the keys 'seed' and 'offset'; got \{'seed': 1\}\.",
    ):
        m.set_extra_state({"seed": 1})
    with pytest.raises(
        TypeError,
        match=r"The 'state' argument of Dropout\.set_extra_state must be an int64 tensor \[seed, offset\], or a dict with the keys 'seed' and 'offset'; got 3\.",
    ):
        m.set_extra_state(3)
    with pytest.raises(
        ValueError,
        match=r"The 'n' argument of Dropout\.next_stream must be an integer in \[0, inf\); got -1\.",
    ):
        m.next_stream(-1)
    assert (m.seed, m.offset) == (1, 0)


def test_a_refused_extra_state_changes_nothing() -> None:
    """Issue 31: a valid seed with a negative offset used to set the seed,
    then refuse the offset; and a module's parameters were loaded before."""
    m = Dropout(seed=1)
    m.offset = 40
    for state in ({"seed": 9, "offset": -1}, {"seed": 9, "offset": 2**64}):
        with pytest.raises(
            ValueError, match=r"'offset' argument of Dropout\.set_extra_state"
        ):
            m.set_extra_state(state)
        assert (m.seed, m.offset) == (1, 40)
    with pytest.raises(TypeError, match=r"'seed' argument of Dropout\.set_extra_state"):
        m.set_extra_state({"seed": "9", "offset": 3})
    assert (m.seed, m.offset) == (1, 40)

    class Scaled(Dropout):
        def __init__(self) -> None:
            super().__init__(0.5, seed=1)
            self.gain = nn.Parameter(torch.ones(3))

    s = Scaled()
    bad = {"gain": torch.full((3,), 7.0), "_extra_state": {"seed": 5, "offset": -2}}
    with pytest.raises(ValueError, match="offset"):
        s.load_state_dict(bad)
    assert torch.equal(s.gain, torch.ones(3)) and (s.seed, s.offset) == (1, 0)


def test_the_stream_view_follows_its_buffer():
    # next_stream reads rng_state through a cached NumPy view: it must follow
    # the buffer when it is replaced, copied, or moved to other memory.
    x = torch.ones(5)
    m = Dropout(0.5, seed=4)
    m(x)
    m.share_memory()  # new storage under the same tensor
    m(x)
    assert m.rng_state.is_shared() and m.offset == 10
    twin = copy.deepcopy(m)
    twin(x)
    assert (m.offset, twin.offset) == (10, 15)
    m.register_buffer("rng_state", torch.tensor([4, 100]), persistent=False)
    assert m.next_stream(3) == (4, 100) and m.offset == 103
    m.load_state_dict({"_extra_state": torch.tensor([4, 7])})
    assert m.next_stream(1) == (4, 7) and m.offset == 8
