"""Fréchet distance between feature distributions (the "F" of FID), with a pluggable feature extractor.

The distance is pytorch-fid 0.3.0's ``calculate_frechet_distance`` (the FID reference of the talking-head papers),
re-implemented with the same algorithm: ``scipy.linalg.sqrtm`` of ``sigma1 @ sigma2``, retried with ``eps * I``
added to both covariances when the square root is not finite, the imaginary part dropped when its diagonal is
within 1e-3 of 0 (``ValueError`` otherwise). Features and statistics are float64 throughout (float32 statistics
move FID visibly, README "Metric protocols").

:class:`FrechetDistance` accumulates float64 sums (sum x, sum x x^T, n) per distribution, as torchmetrics' FID
does, so DDP synchronisation adds a few tensors instead of gathering every feature. The Inception network (or any
other feature extractor) is passed in; loading its weights is the weights registry's job.
"""
from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch
from scipy import linalg
from torch import nn
from torchmetrics import Metric
from torchmetrics.metric import jit_distributed_available
from torchmetrics.utilities.distributed import gather_all_tensors

from zoo.metrics.backbones import module_device


def feature_statistics(features: torch.Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of features, as pytorch-fid computes them (``np.cov(rowvar=False)``, N - 1).

    Args:
        features: [N, D] with N >= 2.

    Returns:
        float64 [D] mean and float64 [D, D] covariance.
    """
    array = features.detach().cpu().double().numpy() if isinstance(features, torch.Tensor) else np.asarray(features)
    array = np.asarray(array, dtype=np.float64)
    if array.ndim != 2 or array.shape[0] < 2:
        raise ValueError(f"feature_statistics expects [N, D] features with N >= 2, got shape {array.shape}")
    return array.mean(axis=0), np.cov(array, rowvar=False)


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    """Fréchet distance ``|mu1 - mu2|^2 + tr(sigma1 + sigma2 - 2 sqrt(sigma1 sigma2))`` between two Gaussians.

    Same value as ``pytorch_fid.fid_score.calculate_frechet_distance`` (same algorithm, float64).

    Args:
        mu1, mu2: [D] means (numpy or torch).
        sigma1, sigma2: [D, D] covariances.
        eps: diagonal offset used only when ``sqrtm(sigma1 @ sigma2)`` is not finite (a singular product).

    Returns:
        The distance (a Python float).

    Raises:
        ValueError: mismatched shapes, or a square root whose diagonal has an imaginary part above 1e-3 (the
            covariances are not positive semi-definite).
    """
    mu1, mu2 = (np.atleast_1d(_float64(m)) for m in (mu1, mu2))
    sigma1, sigma2 = (np.atleast_2d(_float64(s)) for s in (sigma1, sigma2))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != mu1.shape * 2:
        raise ValueError(f"frechet_distance: incompatible shapes mu {mu1.shape}/{mu2.shape}, "
                         f"sigma {sigma1.shape}/{sigma2.shape}")
    diff = mu1 - mu2
    covmean = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        warnings.warn(f"frechet_distance: singular covariance product; adding {eps} to the diagonals", stacklevel=2)
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        # Numerical error gives a small imaginary part; a large one means a non-PSD covariance.
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"frechet_distance: imaginary component {np.max(np.abs(covmean.imag))}")
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def _float64(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


class FrechetDistance(Metric):
    """Fréchet distance between the features of real and generated images (FID with an Inception extractor).

    As input to ``update``: ``images`` (whatever the extractor takes, e.g. float [N, 3, H, W]) and ``real``
    (bool: which distribution they belong to). The extractor must return [N, D] features; [N, D, 1, 1] maps are
    flattened, and from a list/tuple (pytorch-fid's ``InceptionV3`` returns one) the last element is used.

    As output of ``compute``: float64 scalar, :func:`frechet_distance` of the two accumulated distributions.

    Args:
        feature_extractor: the network, kept in evaluation mode and run without gradients.
        num_features: D, the feature size (2048 for Inception pool3).
        reset_real_features: whether ``reset()`` also clears the real statistics (False keeps a reference set
            computed once, e.g. across validation epochs).
        extractor_name: recorded in :attr:`variant`, e.g. ``"pytorch-fid-inception-2048"``.
        kwargs: torchmetrics ``Metric`` options (``sync_on_compute``, ``dist_sync_on_step``, ...).

    Note: compare FID values only at equal sample counts and frame sampling (small-N bias, metrics.md §2.4).
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    def __init__(self, feature_extractor: nn.Module, num_features: int, reset_real_features: bool = True,
                 extractor_name: str | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        if not isinstance(feature_extractor, nn.Module):
            raise TypeError(f"feature_extractor must be an nn.Module, got {type(feature_extractor).__name__}")
        if not isinstance(reset_real_features, bool):
            raise TypeError(f"reset_real_features must be a bool, got {reset_real_features!r}")
        self.feature_extractor = feature_extractor.eval()
        self.num_features = num_features
        self.reset_real_features = reset_real_features
        self.variant = f"FID[{extractor_name or type(feature_extractor).__name__}]"
        for kind in ("real", "fake"):
            self.add_state(f"{kind}_sum", torch.zeros(num_features, dtype=torch.float64), dist_reduce_fx="sum")
            self.add_state(f"{kind}_outer_sum", torch.zeros(num_features, num_features, dtype=torch.float64),
                           dist_reduce_fx="sum")
            self.add_state(f"{kind}_count", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def train(self, mode: bool = True) -> "FrechetDistance":
        """Switch the metric's mode but leave the extractor in evaluation mode (BatchNorm statistics frozen)."""
        super().train(mode)
        self.feature_extractor.eval()
        return self

    @torch.no_grad()
    def features(self, images: Any) -> torch.Tensor:
        """float64 [N, D] features of a batch, on the extractor's device (tensor input is moved there first)."""
        if isinstance(images, torch.Tensor):
            images = images.to(module_device(self.feature_extractor))
        out = self.feature_extractor(images)
        if isinstance(out, (list, tuple)):
            out = out[-1]
        out = out.reshape(out.shape[0], -1).double()
        if out.shape[1] != self.num_features:
            raise ValueError(f"feature extractor returned {out.shape[1]} features, expected {self.num_features}")
        return out

    def update(self, images: Any, real: bool) -> None:
        """Add a batch of real (``real=True``) or generated images to their distribution's statistics."""
        # The states may live elsewhere than the extractor's input (e.g. on the GPU that DDP syncs them on).
        features = self.features(images).to(self.real_sum.device)
        kind = "real" if real else "fake"
        setattr(self, f"{kind}_sum", getattr(self, f"{kind}_sum") + features.sum(0))
        setattr(self, f"{kind}_outer_sum", getattr(self, f"{kind}_outer_sum") + features.T @ features)
        setattr(self, f"{kind}_count", getattr(self, f"{kind}_count") + features.shape[0])

    def statistics(self, real: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """float64 [D] mean and [D, D] covariance (N - 1 normalised, as ``np.cov``) of one distribution."""
        kind = "real" if real else "fake"
        count = int(getattr(self, f"{kind}_count"))
        if count < 2:
            raise RuntimeError(f"FrechetDistance needs at least 2 {kind} samples, got {count}")
        mean = getattr(self, f"{kind}_sum") / count
        cov = (getattr(self, f"{kind}_outer_sum") - count * torch.outer(mean, mean)) / (count - 1)
        return mean, cov

    def sample_counts(self) -> tuple[int, int]:
        """(real, generated) sample counts summed over all processes, as :meth:`compute` will see them (it needs at
        least 2 of each). A collective under DDP: every process must call it. Gathers only the two counts."""
        counts = torch.stack([self.real_count, self.fake_count])
        if self.sync_on_compute and jit_distributed_available():
            gather = self.dist_sync_fn or gather_all_tensors
            counts = torch.stack(gather(counts, self.process_group)).sum(0)
        return int(counts[0]), int(counts[1])

    def compute(self) -> torch.Tensor:
        """float64 scalar Fréchet distance between the real and generated statistics."""
        (mu_real, sigma_real), (mu_fake, sigma_fake) = self.statistics(True), self.statistics(False)
        value = frechet_distance(mu_real, sigma_real, mu_fake, sigma_fake)
        return torch.tensor(value, dtype=torch.float64, device=mu_real.device)

    def reset(self) -> None:
        """Clear the statistics; with ``reset_real_features=False`` the real ones are kept."""
        if self.reset_real_features:
            super().reset()
            return
        kept = {name: getattr(self, name).clone() for name in ("real_sum", "real_outer_sum", "real_count")}
        super().reset()
        for name, value in kept.items():
            setattr(self, name, value)
