"""Fréchet distance against pytorch-fid's ``calculate_frechet_distance``, and the accumulating metric class."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
from pytorch_fid.fid_score import calculate_frechet_distance
from torch import nn

from zoo.metrics.fid import FrechetDistance, feature_statistics, frechet_distance

from helpers import one_line_error

# pytorch-fid 0.3.0 calls sqrtm(..., disp=False), deprecated in SciPy 1.16; singular products warn.
pytestmark = [pytest.mark.filterwarnings("ignore:The `disp` argument is deprecated:DeprecationWarning"),
              pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning"),
              pytest.mark.filterwarnings("ignore:frechet_distance. singular:UserWarning")]


def random_features(rng: np.random.Generator, n: int, d: int, shift: float = 0.0) -> np.ndarray:
    """Correlated, non-centred float64 [n, d] features."""
    mixing = rng.normal(size=(d, d)) / np.sqrt(d)
    return rng.normal(size=(n, d)) @ mixing + rng.normal(size=d) + shift


@pytest.mark.parametrize("n, d", [(200, 32), (20, 32)])                             # full rank / singular covariances
def test_frechet_distance_matches_pytorch_fid(n, d):
    rng = np.random.default_rng(n)
    stats1 = feature_statistics(random_features(rng, n, d))
    stats2 = feature_statistics(random_features(rng, n + 7, d, shift=0.5))
    expected = calculate_frechet_distance(*stats1, *stats2)
    ours = frechet_distance(*stats1, *stats2)
    assert isinstance(ours, float) and expected > 1.0
    assert ours == pytest.approx(expected, rel=1e-6)
    # torch inputs give the same number
    assert frechet_distance(*(torch.from_numpy(x) for x in (*stats1, *stats2))) == pytest.approx(expected, rel=1e-12)
    assert frechet_distance(*stats1, *stats1) == pytest.approx(0.0, abs=1e-6 * expected)


def test_feature_statistics_is_numpy_cov():
    features = random_features(np.random.default_rng(3), 50, 6)
    mu, sigma = feature_statistics(torch.from_numpy(features).float())
    np.testing.assert_allclose(mu, features.astype(np.float32).astype(np.float64).mean(0), rtol=1e-12)
    np.testing.assert_allclose(sigma, np.cov(features.astype(np.float32).astype(np.float64), rowvar=False), rtol=1e-12)
    with pytest.raises(ValueError, match=r"expects \[N, D\] features with N >= 2, got shape \(1, 6\)"):
        feature_statistics(features[:1])


def test_nonfinite_square_root_falls_back_to_eps_offset(monkeypatch):
    """When the first sqrtm is not finite, both retry with eps * I added to the covariances."""
    rng = np.random.default_rng(4)
    stats1, stats2 = (feature_statistics(random_features(rng, 40, 8, s)) for s in (0.0, 1.0))
    real_sqrtm = scipy.linalg.sqrtm
    calls = []

    def flaky_sqrtm(matrix, *args, **kwargs):
        calls.append(matrix)
        result = real_sqrtm(matrix)
        if len(calls) % 2 == 1:                                                     # first call of each distance
            result = np.full_like(result, np.nan)
        return (result, 0.0) if kwargs.get("disp") is False else result

    monkeypatch.setattr(scipy.linalg, "sqrtm", flaky_sqrtm)
    expected = calculate_frechet_distance(*stats1, *stats2)
    with pytest.warns(UserWarning, match="singular"):
        ours = frechet_distance(*stats1, *stats2)
    assert len(calls) == 4
    offset = np.eye(8) * 1e-6
    np.testing.assert_allclose(calls[3], (stats1[1] + offset) @ (stats2[1] + offset))
    assert ours == pytest.approx(expected, rel=1e-9)


def test_complex_square_root_handling():
    """A tiny imaginary part is dropped; a large one (non-PSD covariance) raises, as in pytorch-fid."""
    rng = np.random.default_rng(5)
    mu = np.zeros(4)
    sigma = np.cov(random_features(rng, 30, 4), rowvar=False)
    slightly_negative = sigma - np.eye(4) * (np.linalg.eigvalsh(sigma)[0] + 1e-9)   # smallest eigenvalue ~ -1e-9
    expected = calculate_frechet_distance(mu, slightly_negative, mu + 1, sigma)
    assert frechet_distance(mu, slightly_negative, mu + 1, sigma) == pytest.approx(expected, rel=1e-9)

    not_psd = np.diag([1.0, 1.0, 1.0, -4.0])
    with pytest.raises(ValueError, match="Imaginary"):
        calculate_frechet_distance(mu, not_psd, mu, np.eye(4))
    with pytest.raises(ValueError, match="imaginary"):
        frechet_distance(mu, not_psd, mu, np.eye(4))
    with pytest.raises(ValueError, match="shapes"):
        frechet_distance(mu, np.eye(4), np.zeros(3), np.eye(3))


class PoolFeatures(nn.Module):
    """A stand-in extractor returning pytorch-fid's format: a list with one [N, D, 1, 1] map."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 16, 3)
        self.norm = nn.BatchNorm2d(16)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        return [nn.functional.adaptive_avg_pool2d(torch.relu(self.norm(self.conv(images))), 1)]


def test_metric_accumulates_like_functional_over_updates():
    torch.manual_seed(1)
    extractor = PoolFeatures().eval()
    real, fake = torch.rand(30, 3, 12, 12), torch.rand(26, 3, 12, 12) * 0.8
    metric = FrechetDistance(extractor, num_features=16, extractor_name="test-pool16")
    for chunk in real.split(7):
        metric.update(chunk, real=True)
    for chunk in fake.split(9):
        metric.update(chunk, real=False)
    with torch.no_grad():
        real_features, fake_features = (extractor(x)[0].flatten(1).double() for x in (real, fake))
    expected = calculate_frechet_distance(*feature_statistics(real_features), *feature_statistics(fake_features))
    value = metric.compute()
    assert value.dtype == torch.float64 and float(value) == pytest.approx(expected, rel=1e-6)
    assert metric.variant == "FID[test-pool16]" and not metric.higher_is_better

    # real statistics survive reset() only when asked to
    keep = FrechetDistance(extractor, num_features=16, reset_real_features=False)
    keep.update(real, real=True)
    keep.update(fake, real=False)
    keep.reset()
    assert int(keep.real_count) == 30 and int(keep.fake_count) == 0
    keep.update(fake, real=False)
    assert float(keep.compute()) == pytest.approx(expected, rel=1e-6)
    metric.reset()
    assert int(metric.real_count) == 0


def test_metric_keeps_extractor_frozen_and_validates():
    extractor = PoolFeatures()
    metric = FrechetDistance(extractor, num_features=16)
    metric.train()
    assert metric.training and not extractor.training                              # BatchNorm stats stay frozen
    with pytest.raises(ValueError, match="features"):
        FrechetDistance(PoolFeatures(), num_features=8).update(torch.rand(2, 3, 8, 8), real=True)
    metric.update(torch.rand(1, 3, 8, 8), real=True)
    metric.update(torch.rand(3, 3, 8, 8), real=False)
    with pytest.raises(RuntimeError, match="at least 2 real"):
        metric.compute()
    assert metric.sample_counts() == (1, 3)                                        # what compute() checks


def test_metric_states_and_extractor_may_live_on_another_device():
    metric = FrechetDistance(PoolFeatures(), num_features=16)
    metric.to("meta")                                                              # e.g. the GPU DDP syncs on
    assert metric.real_sum.device.type == "meta"
    metric.update(torch.rand(3, 3, 8, 8), real=True)                               # CPU input follows the extractor
    assert metric.real_outer_sum.device.type == "meta" and metric.real_count.device.type == "meta"


@pytest.mark.parametrize("kwargs, fragment", [
    ({"feature_extractor": lambda images: images}, "feature_extractor must be an nn.Module, got function"),
    ({"feature_extractor": "inception"}, "feature_extractor must be an nn.Module, got str"),
    ({"feature_extractor": nn.Identity(), "reset_real_features": 0}, "reset_real_features must be a bool, got 0"),
])
def test_metric_rejects_bad_constructor_arguments(kwargs, fragment):
    one_line_error(lambda: FrechetDistance(num_features=16, **kwargs), fragment, error=TypeError)
