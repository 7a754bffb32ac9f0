"""Image-quality metric classes (torchmetrics): PSNR, SSIM, CPBD.

Each accumulates the per-image values of its functional twin in :mod:`zoo.metrics.functional` as a float64 sum
and an integer count (``dist_reduce_fx="sum"``), so the dataset value is the mean over images, under DDP too.
Each records how it computes in ``variant`` (e.g. ``"SSIM[wang]"``) for results tables.
"""
from __future__ import annotations

from typing import Any

import torch
from torchmetrics import Metric

from zoo.metrics import functional as F


class MeanOfScores(Metric):
    """Base class: the mean of per-item scores, as a float64 ``total`` and an int64 ``count`` state."""

    full_state_update = False

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.add_state("total", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def accumulate(self, scores: torch.Tensor) -> None:
        """Add per-item scores (any shape; every element is one item)."""
        scores = scores.to(device=self.total.device, dtype=torch.float64)
        self.total += scores.sum()
        self.count += scores.numel()

    def compute(self) -> torch.Tensor:
        """float64 scalar mean (NaN before any update)."""
        return self.total / self.count


class PSNR(MeanOfScores):
    """Mean of per-image PSNR (skimage's per-image value), in dB.

    Unlike torchmetrics' ``PeakSignalNoiseRatio`` with its default ``dim=None``, which pools one MSE over every
    image seen (4 images: 19.60 dB pooled vs 25.43 dB per-image mean, metrics.md §8).

    As input to ``update``: ``pred``, ``target`` [..., C, H, W] in ``[0, data_range]``.
    As output of ``compute``: float64 scalar; an image reproduced exactly counts as
    :data:`~zoo.metrics.functional.PSNR_MAX_DB` (100 dB), as in the README protocol and the metric suite.

    Args:
        data_range: value range of the images (1.0 for [0, 1] floats, 255 for the uint8 scale).
        kwargs: torchmetrics ``Metric`` options.
    """

    is_differentiable = True
    higher_is_better = True

    def __init__(self, data_range: float, **kwargs: Any):
        super().__init__(**kwargs)
        self.data_range = data_range
        self.variant = "PSNR[per-image]"

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        self.accumulate(F.psnr(pred, target, self.data_range))


class SSIM(MeanOfScores):
    """Mean of per-image SSIM in one of the variants of :func:`zoo.metrics.functional.ssim`.

    As input to ``update``: ``pred``, ``target`` [..., C, H, W].
    As output of ``compute``: float64 scalar.

    Args:
        variant: ``"wang"`` (Gaussian 11, population covariance) or ``"skimage-default"`` (uniform 7, sample
            covariance; what ATVGnet/EAMM/EAT evaluations ran).
        data_range: value range of the images (required: inferring it per batch changes the constants).
        kwargs: torchmetrics ``Metric`` options.
    """

    is_differentiable = True
    higher_is_better = True

    def __init__(self, variant: str, data_range: float, **kwargs: Any):
        super().__init__(**kwargs)
        if variant not in F.SSIM_VARIANTS:
            raise ValueError(f"unknown SSIM variant {variant!r}; expected one of {F.SSIM_VARIANTS}")
        self.ssim_variant = variant
        self.data_range = data_range
        self.variant = f"SSIM[{variant}]"

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        self.accumulate(F.ssim(pred, target, self.ssim_variant, self.data_range))


class CPBD(MeanOfScores):
    """Mean CPBD sharpness of generated frames (no reference image; higher is sharper).

    As input to ``update``: ``gray`` uint8 [..., H, W] grayscale frames on the 0..255 scale. The grayscale
    conversion is the caller's: use a uint8 luma (metrics.md §4: float ``rgb2gray`` gives 0.26 where uint8 luma
    gives 0.32 on the same frame, and cv2 and PIL luma differ slightly).
    As output of ``compute``: float64 scalar.
    """

    is_differentiable = False
    higher_is_better = True

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.variant = "CPBD[cpbd-1.0.7]"

    def update(self, gray: torch.Tensor) -> None:
        self.accumulate(F.cpbd(gray))
