"""Tests of droplab.uncertainty.mc (mc_predict) and droplab.uncertainty.metrics."""

from __future__ import annotations

import math

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
