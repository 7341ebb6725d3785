"""Tests of droplab.uncertainty.mc (mc_predict) and droplab.uncertainty.metrics."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import droplab
from droplab.nn import Dropout, StochasticModule
from droplab.nn import DropPath as DroplabDropPath
from droplab.rng import stream_seed
from droplab.uncertainty import mc_predict, metrics


def regression_net(seed: int | None = 11) -> torch.nn.Sequential:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        Dropout(0.2, seed=seed),
        torch.nn.Linear(5, 16),
        torch.nn.BatchNorm1d(16),
        torch.nn.ReLU(),
        Dropout(0.5, seed=None if seed is None else seed + 1),
        torch.nn.Linear(16, 3),
    ).double()


X = torch.randn(7, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


# --- mc_predict -------------------------------------------------------------------


def elementwise_net() -> torch.nn.Sequential:
    # No matrix products: every output element is computed the same way whatever
    # the batch size, so outputs must be identical bit for bit.
    return torch.nn.Sequential(
        Dropout(0.3, seed=1), torch.nn.Tanh(), Dropout(0.6, seed=2, scale="realized")
    ).double()


@pytest.mark.parametrize("chunk", [1, 2, 5, 13, 40])
def test_same_seed_same_samples_whatever_the_chunking(chunk: int) -> None:
    net = elementwise_net()
    reference = mc_predict(net, X, samples=40, seed=3, chunk=40, keep_samples=True)
    other = mc_predict(net, X, samples=40, seed=3, chunk=chunk, keep_samples=True)
    assert other.samples is not None and reference.samples is not None
    assert torch.equal(other.samples, reference.samples)
    assert torch.equal(other.mean, reference.mean)
    assert torch.equal(other.variance, reference.variance)


@pytest.mark.parametrize("chunk", [1, 3, 40])
def test_same_masks_whatever_the_chunking_with_matrix_products(chunk: int) -> None:
    # BLAS may block a product differently for a different number of rows, so
    # outputs after a Linear layer agree to rounding; the masks (here the zeros
    # of a final dropout) are identical.
    net = torch.nn.Sequential(*regression_net(), Dropout(0.5, seed=5)).double()
    reference = mc_predict(net, X, samples=40, seed=3, chunk=40, keep_samples=True)
    other = mc_predict(net, X, samples=40, seed=3, chunk=chunk, keep_samples=True)
    assert other.samples is not None and reference.samples is not None
    assert torch.equal(other.samples == 0, reference.samples == 0)
    torch.testing.assert_close(other.samples, reference.samples, rtol=1e-12, atol=1e-12)


def test_passes_equal_a_loop_of_single_passes_on_the_same_streams() -> None:
    # Pass t of module m uses stream stream_seed(seed, m, 0) from offset t * E.
    net = torch.nn.Sequential(*regression_net(), Dropout(0.5, seed=5)).double()
    result = mc_predict(net, X, samples=6, seed=9, chunk=4, keep_samples=True)
    assert result.samples is not None
    drops = [net[0], net[4], net[6]]
    sizes = [7 * 5, 7 * 16, 7 * 3]
    net.eval()
    for module in drops:
        module.train()
    with torch.no_grad():
        for t in range(6):
            for m, (module, size) in enumerate(zip(drops, sizes, strict=True)):
                module.seed, module.offset = stream_seed(9, m, 0), t * size
            single = net(X)
            assert torch.equal(single == 0, result.samples[t] == 0)
            torch.testing.assert_close(
                single, result.samples[t], rtol=1e-12, atol=1e-12
            )


def test_a_module_called_twice_gets_two_streams() -> None:
    shared = Dropout(0.5, seed=0)
    net = torch.nn.Sequential(shared, torch.nn.Tanh(), shared).double()
    a = mc_predict(net, X, samples=10, seed=4, chunk=10, keep_samples=True)
    b = mc_predict(net, X, samples=10, seed=4, chunk=3, keep_samples=True)
    assert a.samples is not None and b.samples is not None
    assert torch.equal(a.samples, b.samples)


def test_different_seeds_differ_and_passes_differ() -> None:
    net = regression_net()
    a = mc_predict(net, X, samples=8, seed=1, keep_samples=True)
    b = mc_predict(net, X, samples=8, seed=2, keep_samples=True)
    assert a.samples is not None and b.samples is not None
    assert not torch.equal(a.samples, b.samples)
    assert not torch.equal(a.samples[0], a.samples[1])


def test_modes_seeds_and_offsets_are_restored_even_after_an_error() -> None:
    net = regression_net()
    net[0].offset = 123
    net.train()
    net[2].eval()
    modes = [m.training for m in net.modules()]
    mc_predict(net, X, samples=5, seed=0, chunk=2)
    assert [m.training for m in net.modules()] == modes
    assert (net[0].seed, net[0].offset, net[4].seed, net[4].offset) == (11, 123, 12, 0)
    with pytest.raises(RuntimeError):
        mc_predict(net, torch.randn(7, 4, dtype=torch.float64), samples=5, seed=0)
    assert [m.training for m in net.modules()] == modes
    assert (net[0].seed, net[0].offset) == (11, 123)
    assert not net[0]._forward_pre_hooks and not net[0]._forward_hooks


def test_batchnorm_stays_in_eval_and_statistics_are_untouched() -> None:
    net = regression_net()
    stats = net[2].running_mean.clone()
    mc_predict(net, X, samples=4, seed=0)
    assert torch.equal(net[2].running_mean, stats)


def test_seed_none_follows_torch_manual_seed_and_module_seed_none_works() -> None:
    net = regression_net(seed=None)
    torch.manual_seed(5)
    a = mc_predict(net, X, samples=4)
    torch.manual_seed(5)
    b = mc_predict(net, X, samples=4)
    assert a.seed == b.seed and torch.equal(a.mean, b.mean)
    assert net[0].seed is None


def test_mean_and_variance_match_the_samples() -> None:
    net = regression_net()
    r = mc_predict(net, X, samples=30, seed=4, chunk=7, keep_samples=True)
    assert r.samples is not None and r.samples.shape == (30, 7, 3)
    torch.testing.assert_close(r.mean, r.samples.mean(0), rtol=0, atol=1e-12)
    torch.testing.assert_close(
        r.variance, r.samples.var(0, unbiased=False), rtol=0, atol=1e-12
    )
    assert r.entropy is None and r.mutual_information is None


def test_without_dropout_every_pass_is_the_deterministic_output() -> None:
    net = torch.nn.Sequential(torch.nn.Linear(5, 2)).double()
    r = mc_predict(net, X, samples=3, seed=0)
    torch.testing.assert_close(r.mean, net(X).detach())
    assert torch.equal(r.variance, torch.zeros_like(r.variance))


def test_classification_statistics_match_the_metric_functions() -> None:
    net = regression_net()
    r = mc_predict(
        net, X, samples=25, seed=2, chunk=6, task="classification", keep_samples=True
    )
    assert r.samples is not None and r.entropy is not None
    assert r.mutual_information is not None and r.variation_ratio is not None
    probs = r.samples.numpy()
    np.testing.assert_allclose(r.mean.sum(-1).numpy(), 1.0, atol=1e-12)
    np.testing.assert_allclose(
        r.entropy.numpy(), metrics.predictive_entropy(probs), atol=1e-12
    )
    np.testing.assert_allclose(
        r.mutual_information.numpy(), metrics.mutual_information(probs), atol=1e-12
    )
    np.testing.assert_allclose(
        r.variation_ratio.numpy(), metrics.variation_ratio(probs)
    )


def test_torch_dropout_samples_as_the_converted_model_does() -> None:
    # The model's torch dropouts draw, under the interception, the masks their
    # droplab twins draw in droplab.convert(model): the same result, any chunk.
    def make() -> torch.nn.Sequential:
        torch.manual_seed(0)
        return torch.nn.Sequential(
            torch.nn.Dropout(0.2),
            torch.nn.Tanh(),
            Dropout(0.5, seed=3),
            torch.nn.Dropout(0.4),
        ).double()

    plain, converted = make(), droplab.convert(make())
    assert all(isinstance(m, StochasticModule) for m in converted[::2])
    a = mc_predict(plain, X, samples=9, seed=4, chunk=9, keep_samples=True)
    b = mc_predict(converted, X, samples=9, seed=4, chunk=2, keep_samples=True)
    assert a.samples is not None and b.samples is not None
    assert torch.equal(a.samples, b.samples)
    assert not torch.equal(a.samples[0], a.samples[1])
    assert isinstance(plain[0], torch.nn.Dropout) and plain[0].training


class DropPath(torch.nn.Module):
    """What timm.layers.DropPath is, as convert recognises it (timm not needed)."""

    def __init__(self, drop_prob: float, scale_by_keep: bool = True) -> None:
        super().__init__()
        self.drop_prob, self.scale_by_keep = drop_prob, scale_by_keep

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # timm's rule, torch's RNG
        if not self.training or self.drop_prob == 0.0:
            return x
        keep = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(
            1 - self.drop_prob
        )
        return x * keep / (1 - self.drop_prob if self.scale_by_keep else 1.0)


DropPath.__module__ = "timm.layers.drop"


def test_timm_drop_path_samples_as_the_converted_model_does() -> None:
    # timm's DropPath calls no torch dropout function: mc_predict replaces its
    # draw while it runs, with the stream its droplab twin gets after convert.
    def make() -> torch.nn.Sequential:
        torch.manual_seed(0)
        return torch.nn.Sequential(
            torch.nn.Dropout(0.2),
            DropPath(0.3),
            torch.nn.Tanh(),
            DropPath(0.5, scale_by_keep=False),
        ).double()

    plain, converted = make(), droplab.convert(make())
    assert isinstance(converted[1], DroplabDropPath)
    forward = plain[1].forward
    a = mc_predict(plain, X, samples=12, seed=5, chunk=12, keep_samples=True)
    b = mc_predict(converted, X, samples=12, seed=5, chunk=5, keep_samples=True)
    again = mc_predict(plain, X, samples=12, seed=5, chunk=3, keep_samples=True)
    assert a.samples is not None and b.samples is not None
    assert again.samples is not None
    assert torch.equal(a.samples, b.samples) and torch.equal(a.samples, again.samples)
    # whole samples dropped: some passes zero a row where others keep it
    assert not torch.equal(a.samples[0], a.samples[1])
    assert plain[1].forward == forward and "forward" not in plain[1].__dict__


def test_mask_shared_along_the_batch_is_refused() -> None:
    net = torch.nn.Sequential(Dropout(0.5, seed=0, shared_dims=0)).double()
    with pytest.raises(ValueError, match="sharing its mask along dim 0"):
        mc_predict(net, X, samples=4, seed=0, chunk=2)


def test_masks_shared_along_other_dims_stay_chunk_invariant() -> None:
    net = torch.nn.Sequential(Dropout(0.5, seed=0, shared_dims=(2,))).double()
    x = torch.randn(3, 4, 6, dtype=torch.float64)
    a = mc_predict(net, x, samples=9, seed=1, chunk=9, keep_samples=True)
    b = mc_predict(net, x, samples=9, seed=1, chunk=2, keep_samples=True)
    assert a.samples is not None and b.samples is not None
    assert torch.equal(a.samples, b.samples)
    assert (a.samples[..., :1] == 0).eq(a.samples == 0).all()  # whole rows dropped


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"samples": 0}, ValueError, "'samples' argument of mc_predict"),
        ({"chunk": 0}, ValueError, "'chunk' argument of mc_predict"),
        ({"task": "segmentation"}, ValueError, "'task' argument of mc_predict"),
        ({"seed": -1}, ValueError, "'seed' argument of mc_predict"),
        ({"samples": 2.5}, TypeError, "'samples' argument of mc_predict"),
    ],
)
def test_bad_arguments(kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        mc_predict(regression_net(), X, **kwargs)


def test_bad_model_and_input_types() -> None:
    with pytest.raises(TypeError, match="'model' argument of mc_predict"):
        mc_predict(lambda x: x, X)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="'x' argument of mc_predict"):
        mc_predict(regression_net(), X.numpy())  # type: ignore[arg-type]


# --- metrics ----------------------------------------------------------------------


def test_log_likelihood_equals_the_direct_mixture_density() -> None:
    rng = np.random.default_rng(0)
    samples, y, tau = rng.normal(size=(50, 9)), rng.normal(size=9), 0.7
    direct = [
        math.log(
            sum(
                math.sqrt(tau / (2 * math.pi)) * math.exp(-0.5 * tau * (y[n] - s) ** 2)
                for s in samples[:, n]
            )
            / 50
        )
        for n in range(9)
    ]
    value = metrics.gaussian_log_likelihood(samples, y, tau)
    assert value == pytest.approx(float(np.mean(direct)), rel=1e-12)
    column = metrics.gaussian_log_likelihood(samples[..., None], y[:, None], tau)
    assert column == pytest.approx(value, rel=1e-14)
    per_point = metrics.gaussian_log_likelihood_per_point(samples, y, tau)
    assert per_point.shape == (9,)
    np.testing.assert_allclose(per_point, direct, rtol=1e-12)
    assert float(np.mean(per_point)) == value  # the mean is the same computation


def test_log_likelihood_is_stable_far_in_the_tail() -> None:
    # exp(-0.5 * 100 * 40**2) underflows; logsumexp keeps the exact value.
    value = metrics.gaussian_log_likelihood([[40.0], [40.0]], [0.0], tau=100.0)
    assert value == pytest.approx(-0.5 * 100 * 1600 - 0.5 * math.log(2 * math.pi / 100))


def test_log_likelihood_bad_tau_and_shapes() -> None:
    with pytest.raises(ValueError, match="'tau' argument of gaussian_log_likelihood"):
        metrics.gaussian_log_likelihood([[0.0]], [0.0], tau=0.0)
    with pytest.raises(
        ValueError, match="'samples' argument of gaussian_log_likelihood"
    ):
        metrics.gaussian_log_likelihood([[0.0, 1.0]], [0.0], tau=1.0)
    with pytest.raises(
        ValueError, match="'tau' argument of gaussian_log_likelihood_per_point"
    ):
        metrics.gaussian_log_likelihood_per_point([[0.0]], [0.0], tau=-1.0)


def test_rmse_known_answer() -> None:
    assert metrics.rmse(
        torch.tensor([1.0, 2.0, 3.0]), [1.0, 2.0, 5.0]
    ) == pytest.approx(math.sqrt(4 / 3))


PROBS = np.array([[0.9, 0.1, 0.0], [0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.4, 0.4, 0.2]])
LABELS = np.array([0, 1, 1, 2])


def test_ece_by_hand() -> None:
    # Confidences 0.9, 0.6, 0.7, 0.4 (arg-max of the tie: class 0), correct 1, 0, 1, 0.
    # Five bins: (0.2, 0.4] {0.4: wrong}, (0.4, 0.6] {0.6: wrong},
    # (0.6, 0.8] {0.7: right}, (0.8, 1.0] {0.9: right}.
    expected = (0.4 + 0.6 + 0.3 + 0.1) / 4
    assert metrics.expected_calibration_error(PROBS, LABELS, n_bins=5) == pytest.approx(
        expected
    )
    # One bin: |accuracy - mean confidence| = |0.5 - 0.65|.
    assert metrics.expected_calibration_error(PROBS, LABELS, n_bins=1) == pytest.approx(
        0.15
    )


def test_ece_is_zero_when_calibrated() -> None:
    probs = np.array([[0.75, 0.25]] * 4)
    assert metrics.expected_calibration_error(probs, np.array([0, 0, 0, 1])) == 0.0


def test_brier_and_nll_by_hand() -> None:
    brier = (
        0.01 + 0.01 + (0.36 + 0.49 + 0.01) + (0.04 + 0.09 + 0.01) + (0.16 + 0.16 + 0.64)
    ) / 4
    assert metrics.brier_score(PROBS, LABELS) == pytest.approx(brier)
    nll = -(math.log(0.9) + math.log(0.3) + math.log(0.7) + math.log(0.2)) / 4
    assert metrics.negative_log_likelihood(PROBS, LABELS) == pytest.approx(nll)


def test_entropy_bald_and_variation_ratio_by_hand() -> None:
    # Point 0: two confident passes that disagree; point 1: two identical uniform passes.
    samples = np.array([[[1.0, 0.0], [0.5, 0.5]], [[0.0, 1.0], [0.5, 0.5]]])
    np.testing.assert_allclose(metrics.predictive_entropy(samples), [math.log(2)] * 2)
    np.testing.assert_allclose(metrics.mutual_information(samples), [math.log(2), 0.0])
    np.testing.assert_allclose(metrics.variation_ratio(samples), [0.5, 0.0])


@settings(derandomize=True, deadline=None, max_examples=25)
@given(st.integers(1, 6), st.integers(1, 5), st.integers(2, 4), st.integers(0, 2**32))
def test_bald_between_zero_and_entropy(
    passes: int, points: int, classes: int, seed: int
) -> None:
    logits = np.random.default_rng(seed).normal(size=(passes, points, classes)) * 3
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    mi, h = metrics.mutual_information(probs), metrics.predictive_entropy(probs)
    assert (
        (mi >= 0).all()
        and (mi <= h + 1e-12).all()
        and (h <= math.log(classes) + 1e-12).all()
    )
    ratio = metrics.variation_ratio(probs)
    assert ((ratio >= 0) & (ratio <= 1 - 1 / classes + 1e-12)).all()


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (
            lambda: metrics.brier_score([[0.5, 0.6]], [0]),
            "non-negative rows summing to 1",
        ),
        (lambda: metrics.brier_score([[0.5, 0.5]], [2]), r"class indices in \[0, 2\)"),
        (lambda: metrics.negative_log_likelihood([[0.5, 0.5]], [0.0]), "integer array"),
        (
            lambda: metrics.expected_calibration_error([[1.0]], [0], n_bins=0),
            "'n_bins'",
        ),
        (lambda: metrics.rmse([1.0, 2.0], [1.0]), "2 values"),
        (lambda: metrics.rmse([math.nan], [1.0]), "finite numbers"),
    ],
)
def test_metric_errors(call, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()


def test_torch_channel_and_alpha_dropouts_sample_as_converted() -> None:
    def make() -> torch.nn.Sequential:
        return torch.nn.Sequential(
            torch.nn.Dropout1d(0.3),
            torch.nn.AlphaDropout(0.2),
            torch.nn.FeatureAlphaDropout(0.4),
        ).double()

    x = torch.randn(4, 3, 5, generator=torch.Generator().manual_seed(3)).double()
    a = mc_predict(make(), x, samples=5, seed=8, chunk=5, keep_samples=True)
    b = mc_predict(
        droplab.convert(make()), x, samples=5, seed=8, chunk=2, keep_samples=True
    )
    assert a.samples is not None and b.samples is not None
    assert torch.equal(a.samples, b.samples)


def test_drop_path_and_channel_dropout_are_chunk_invariant() -> None:
    net = torch.nn.Sequential(droplab.nn.DropPath(0.5, seed=1), torch.nn.Tanh())
    x3 = torch.randn(4, 3, 5, generator=torch.Generator().manual_seed(3)).double()
    for model, inputs in [
        (net, X),
        (torch.nn.Sequential(droplab.nn.Dropout1d(0.5)), x3),
    ]:
        a = mc_predict(model, inputs, samples=6, seed=2, chunk=6, keep_samples=True)
        b = mc_predict(model, inputs, samples=6, seed=2, chunk=4, keep_samples=True)
        assert a.samples is not None and b.samples is not None
        assert torch.equal(a.samples, b.samples)
        assert not torch.equal(a.samples[0], a.samples[1])


# --- any output, and everything restored ---------------------------------------

import dataclasses  # noqa: E402


@dataclasses.dataclass
class Prediction:
    logits: torch.Tensor
    hidden: torch.Tensor
    steps: int = 3


class Structured(torch.nn.Module):
    """A model whose output is a structure; ``kind`` says which."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = torch.nn.Sequential(
            torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Dropout(0.4)
        )
        self.head = torch.nn.Linear(8, 3)
        self.kind = kind

    def forward(self, x: torch.Tensor, scale: torch.Tensor | None = None) -> object:
        hidden = self.body(x)
        if scale is not None:
            hidden = hidden * scale  # (B, 1): replicated with x
        logits = self.head(hidden)
        ids = torch.zeros(x.shape[0], dtype=torch.long)
        if self.kind == "tuple":
            return logits, ids, None
        if self.kind == "pair":
            return hidden, logits
        if self.kind == "dict":
            return {"logits": logits, "hidden": hidden, "ids": ids}
        return Prediction(logits, hidden)


def test_output_leaves_are_picked_as_documented() -> None:
    tensor_model = Structured("pair")
    reference = mc_predict(
        torch.nn.Sequential(tensor_model.body, tensor_model.head).double(),
        X,
        samples=8,
        seed=3,
    )
    for kind in ("tuple", "dict", "dataclass"):
        model = Structured(kind).double()
        # the only floating leaf (tuple), or the one named "logits"
        got = mc_predict(model, X, samples=8, seed=3)
        assert torch.equal(got.mean, reference.mean), kind
        assert torch.equal(got.variance, reference.variance), kind
    pair = Structured("pair").double()
    # several floating leaves, none named logits: the statistics of each
    both = mc_predict(pair, X, samples=8, seed=3)
    assert sorted(both) == ["0", "1"]
    assert torch.equal(both["1"].mean, reference.mean)
    with pytest.raises(ValueError, match=r"'task'.*pick one leaf"):
        mc_predict(pair, X, samples=2, seed=3, task="classification")
    assert torch.equal(
        mc_predict(pair, X, samples=8, seed=3, output="1").mean, reference.mean
    )
    picked = mc_predict(pair, X, samples=8, seed=3, output=lambda out: out[1])
    assert torch.equal(picked.mean, reference.mean)
    every = mc_predict(Structured("dict").double(), X, samples=8, seed=3, output="all")
    assert sorted(every) == ["hidden", "logits"]  # "ids" is not floating
    assert torch.equal(every["logits"].mean, reference.mean)
    assert every["hidden"].mean.shape == (7, 8)
    classified = mc_predict(
        Structured("dataclass").double(), X, samples=8, seed=3, task="classification"
    )
    assert classified.entropy is not None and classified.entropy.shape == (7,)
    with pytest.raises(
        ValueError,
        match=r"'logits' \(7, 3\) float64, 'hidden' \(7, 8\) float64, 'ids' \(7,\) int64\] \(no leaf is named 'logit'\)",
    ):
        mc_predict(
            Structured("dict").double(), X, samples=2, seed=3, output="logit", chunk=1
        )
    with pytest.raises(ValueError, match=r"'task'.*output='all'"):
        mc_predict(pair, X, samples=2, seed=3, output="all", task="classification")
    with pytest.raises(TypeError, match=r"'output'"):
        mc_predict(pair, X, samples=2, seed=3, output=3)


def test_an_output_without_the_batch_is_refused() -> None:
    class Pooled(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.dropout(x, 0.5).sum(0)

    with pytest.raises(
        ValueError,
        match=r"batch along dim 0 \(14 rows here\); got 'a model whose output has shape \(5,\)'",
    ):
        mc_predict(Pooled(), X, samples=2, seed=0, chunk=2)


def test_model_kwargs_with_the_batch_are_replicated() -> None:
    model = Structured("dict").double()
    scale = torch.linspace(0.5, 1.5, 7, dtype=torch.float64)[:, None]
    a = mc_predict(model, X, samples=6, seed=1, chunk=6, model_kwargs={"scale": scale})
    b = mc_predict(model, X, samples=6, seed=1, chunk=1, model_kwargs={"scale": scale})
    torch.testing.assert_close(a.mean, b.mean, rtol=0, atol=1e-12)
    plain = mc_predict(model, X, samples=6, seed=1)
    assert not torch.equal(a.mean, plain.mean)
    with pytest.raises(TypeError, match=r"'model_kwargs'"):
        mc_predict(model, X, samples=2, model_kwargs=[("scale", scale)])


class Exploding(torch.nn.Module):
    def __init__(self, after: int) -> None:
        super().__init__()
        self.calls, self.after = 0, after

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls > self.after:
            raise RuntimeError("boom")
        return x


def full_state(model: torch.nn.Module) -> list[object]:
    """Everything mc_predict must leave as it was, bit for bit."""
    state: list[object] = []
    for name, module in model.named_modules():
        state.append((name, module.training, module.__dict__.get("forward")))
        state.append(tuple(module._forward_pre_hooks.items()))
        state.append(tuple(module._forward_hooks.items()))
        if isinstance(module, StochasticModule):
            state.append((module.seed, module.offset, getattr(module, "_groups", None)))
    for name, tensor in model.state_dict(keep_vars=True).items():
        state.append(
            (
                name,
                tensor.detach().clone() if isinstance(tensor, torch.Tensor) else tensor,
            )
        )
    return state


def same_state(a: list[object], b: list[object]) -> bool:
    if len(a) != len(b):
        return False
    for x, y in zip(a, b, strict=True):
        if isinstance(x, tuple) and len(x) == 2 and isinstance(x[1], torch.Tensor):
            if x[0] != y[0] or not torch.equal(x[1], y[1]):  # type: ignore[index]
                return False
        elif x != y:
            return False
    return True


@pytest.mark.parametrize("after", [0, 1, 100])
def test_everything_is_restored_bit_for_bit_even_when_the_forward_raises(
    after: int,
) -> None:
    torch.manual_seed(0)
    drop_path = DropPath(0.3)
    custom = drop_path.forward  # a forward set on the instance by its user
    drop_path.forward = custom
    net = torch.nn.Sequential(
        torch.nn.Linear(5, 8),
        torch.nn.BatchNorm1d(8),
        torch.nn.Dropout(0.2),
        drop_path,
        DroplabDropPath(0.2, seed=4, mode="batch"),
        DroplabDropPath(0.1),
        Dropout(0.3, seed=8),
        Exploding(after),
        torch.nn.Linear(8, 2),
    ).double()
    net[1].running_mean.uniform_()  # statistics that training mode would move
    net.train()
    net[2].eval()  # a mixed state comes back exactly
    net[6].offset = 40
    seen: list[int] = []
    net[0].register_forward_hook(lambda m, i, o: seen.append(1))
    before = full_state(net)
    if after == 100:
        mc_predict(net, X, samples=6, seed=0, chunk=2)
    else:
        with pytest.raises(RuntimeError, match="boom"):
            mc_predict(net, X, samples=6, seed=0, chunk=2)
    assert same_state(before, full_state(net))
    assert net[3].__dict__["forward"] is custom
    assert seen  # the user's hook ran, and is still there


@pytest.mark.parametrize("value", ["y", 1, None])
def test_keep_samples_must_be_a_bool(value: object) -> None:
    net = torch.nn.Sequential(torch.nn.Linear(3, 2), Dropout(0.5))
    with pytest.raises(
        TypeError,
        match=r"The 'keep_samples' argument of mc_predict must be True or False",
    ):
        mc_predict(net, torch.ones(2, 3), samples=2, seed=0, keep_samples=value)  # type: ignore[arg-type]


# --- the plan: one walk, a declared protocol, no calls back ------------------------


class Functional(torch.nn.Module):
    """Functional dropout, and a draw droplab does not replay (named with advice)."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(5, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.nn.functional.dropout(self.linear(x), 0.3, self.training)
        return h + 0.0 * torch.rand(1, dtype=h.dtype)


def every_kind_of_site() -> torch.nn.Sequential:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(5, 5),
        Dropout(0.2, seed=3),
        torch.nn.Sequential(torch.nn.Dropout(0.3), torch.nn.BatchNorm1d(5)),
        DropPath(0.3),  # timm's, as convert recognises it
        DroplabDropPath(0.2, mode="batch"),
        Functional(),
    ).double()


def test_the_model_is_walked_once_and_each_module_kinded_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import droplab.uncertainty.mc as mc

    model = every_kind_of_site()
    walks: list[str] = []  # the walks that start at the model (parameters() too)
    kinded: list[int] = []

    def spied(name: str) -> object:
        original = getattr(torch.nn.Module, name)

        def spy(self: torch.nn.Module, *args: object, **kwargs: object) -> object:
            if self is model:
                walks.append(name)
            return original(self, *args, **kwargs)

        return spy

    for name in ("named_modules", "modules", "children", "named_children"):
        monkeypatch.setattr(torch.nn.Module, name, spied(name))
    kind_of = mc.kind_of

    def counted(module: torch.nn.Module) -> object:
        kinded.append(id(module))
        return kind_of(module)

    monkeypatch.setattr(mc, "kind_of", counted)
    with pytest.warns(UserWarning, match="torch.rand"):
        result = mc_predict(model, X, samples=6, seed=1, chunk=2, keep_samples=True)
    assert result.samples is not None and result.samples.shape == (6, 7, 5)
    assert walks == ["named_modules"]  # the plan's walk, and nothing else
    droplab_modules = sum(isinstance(m, StochasticModule) for m in model.modules())
    assert (
        len(kinded) == len(set(kinded)) == len(list(model.modules())) - droplab_modules
    )


def test_intercept_draws_without_calling_back_into_mc() -> None:
    import importlib
    import sys

    # (droplab.interop.intercept is also the name of the function it re-exports)
    intercept = importlib.import_module("droplab.interop.intercept")
    mc = importlib.import_module("droplab.uncertainty.mc")
    mc_file, intercept_file = mc.__file__, intercept.__file__
    back_calls: list[str] = []
    draws: list[str] = []

    def under_intercept(frame: object) -> bool:
        frame = frame.f_back  # type: ignore[attr-defined]
        while frame is not None:
            if frame.f_code.co_filename == intercept_file:  # type: ignore[attr-defined]
                return True
            frame = frame.f_back  # type: ignore[attr-defined]
        return False

    def profile(frame: object, event: str, arg: object) -> None:
        if event != "call":
            return
        code = frame.f_code  # type: ignore[attr-defined]
        if code.co_filename == mc_file and under_intercept(frame):
            back_calls.append(code.co_name)
        if code.co_filename == intercept_file and code.co_name in (
            "draw",
            "_name_unreplayed",
        ):
            draws.append(code.co_name)

    model = every_kind_of_site()
    sys.setprofile(profile)
    try:
        with pytest.warns(UserWarning, match="with chunk > 1"):  # the advice
            mc_predict(model, X, samples=4, seed=1, chunk=2)
    finally:
        sys.setprofile(None)
    assert "draw" in draws and "_name_unreplayed" in draws  # it drew, and named
    assert back_calls == []
    # nor does intercept import mc_predict's module, at any level
    source = Path(intercept_file).read_text(encoding="utf-8")
    assert "uncertainty" not in source and "mc_predict(" not in source


def test_mc_writes_no_private_attribute_of_a_module() -> None:
    # What mc_predict needs from a module is declared on it (replica_elements,
    # replicated), not written into private attributes from outside.
    import ast
    import inspect

    import droplab.uncertainty.mc as mc

    tree = ast.parse(inspect.getsource(mc))
    written = []
    for node in ast.walk(tree):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            targets = [node.target]
        for target in targets:
            for part in ast.walk(target):
                if isinstance(part, ast.Attribute) and part.attr.startswith("_"):
                    if not (
                        isinstance(part.value, ast.Name) and part.value.id == "self"
                    ):
                        written.append(ast.unparse(part))
        if isinstance(node, ast.Call) and ast.unparse(node.func) == "setattr":
            written.append(ast.unparse(node))
    assert written == []
    assert "_groups" not in inspect.getsource(mc)


def test_the_protocol_declared_on_the_base() -> None:
    from droplab._core.base import Replicable
    from droplab.nn import Dropout2d, FeatureAlphaDropout

    x = torch.ones(4, 3, 5, 6)
    assert Dropout(0.5).replica_elements(x) == 4 * 3 * 5 * 6
    assert Dropout(0.5, shared_dims=(2, -1)).replica_elements(x) == 12
    assert Dropout(0.5, shared_dims=0).replica_elements(x) is None  # shared batch
    assert Dropout2d(0.5).replica_elements(x) == 12  # one per (sample, channel)
    assert FeatureAlphaDropout(0.5).replica_elements(x) == 12
    # the base declares no grouping: its rows draw apart already
    plain = Dropout(0.5)
    assert isinstance(plain, Replicable) and plain.replicated(3) == 1
    with pytest.raises(ValueError, match=r"'groups' argument of Dropout.replicated"):
        plain.replicated(0)
    row, batch = DroplabDropPath(0.5), DroplabDropPath(0.5, mode="batch")
    assert row.replica_elements(x) == 4 and batch.replica_elements(x) == 1
    assert batch.replicated(2) == 1 and batch.replica_elements(x) == 2


def test_a_module_outside_the_base_samples_as_before() -> None:
    # ConcreteDropout is a StochasticModule, not a DropoutBase: read the base's way
    from droplab._core.base import Replicable
    from droplab.nn import ConcreteDropout

    assert not isinstance(ConcreteDropout(), Replicable)

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(5, 5), ConcreteDropout()).double()
    a = mc_predict(net, X, samples=6, seed=2, chunk=6, keep_samples=True)
    b = mc_predict(net, X, samples=6, seed=2, chunk=4, keep_samples=True)
    assert a.samples is not None and b.samples is not None
    assert torch.allclose(a.samples, b.samples, rtol=0, atol=1e-12)
    assert not torch.equal(a.samples[0], a.samples[1])
