"""Functional metrics (pure functions on tensors): the single definitions the metric classes accumulate.

Each function follows one reference implementation of the talking-head literature and says which
(README "Metric protocols"). Per-image or per-clip values come back; averaging over a dataset is the
caller's (or the metric class's) job, always as a mean of per-item values.

=========================  ==============================================================================
``psnr``                   per image, ``10 log10(range^2 / MSE)`` (skimage), capped at 100 dB
``ssim``                   per image, variants ``"wang"`` / ``"skimage-default"`` (:mod:`zoo.metrics.ssim`)
``lmd`` / ``lmd_frames``   M-LMD / F-LMD per clip / per frame (EAMM/EAT/StyleTalk ``test_lmd.py``)
``cpbd``                   per image, the ``cpbd`` 1.0.7 package, vectorised (:mod:`zoo.metrics.cpbd`)
``frechet_distance``       pytorch-fid's ``calculate_frechet_distance`` (:mod:`zoo.metrics.fid`)
``feature_statistics``     mean and ``np.cov`` of features, as pytorch-fid
``lpips``                  per image, through an ``lpips.LPIPS`` network (see :mod:`zoo.metrics.lpips`)
``sync_scores``            (offset, LSE-D, LSE-C) per video, syncnet_python's evaluate (:mod:`zoo.metrics.sync`)
``csim``                   identity cosine similarity after 5-point alignment (:mod:`zoo.metrics.identity`)
=========================  ==============================================================================
"""
from __future__ import annotations

import torch
from torch import nn

from zoo.metrics.cpbd import cpbd
from zoo.metrics.fid import feature_statistics, frechet_distance
from zoo.metrics.identity import csim
from zoo.metrics.ssim import SSIM_VARIANTS, ssim
from zoo.metrics.sync import sync_scores

__all__ = ["psnr", "ssim", "lmd", "lmd_frames", "centred_points", "cpbd", "frechet_distance", "feature_statistics",
           "lpips", "sync_scores", "csim", "SSIM_VARIANTS", "LANDMARK_REGIONS", "PSNR_MAX_DB"]

# iBUG-68 point ranges: the mouth is points 48-67 (outer and inner lips), the face all 68.
LANDMARK_REGIONS = {"mouth": slice(48, 68), "face": slice(0, 68)}
MOUTH = LANDMARK_REGIONS["mouth"]
# PSNR of identical images is infinite; the README protocol counts them as 100 dB so that means stay finite.
PSNR_MAX_DB = 100.0


def psnr(pred: torch.Tensor, target: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """PSNR per image, in dB (not one pooled MSE: averaging per-image values is the convention).

    Equals skimage's ``peak_signal_noise_ratio(target, pred, data_range=data_range)`` image by image, except that
    values are capped at :data:`PSNR_MAX_DB` (README "Metric protocols": identical images count as 100 dB, where
    skimage gives ``inf``).

    Args:
        pred, target: [..., C, H, W] with values in ``[0, data_range]``.
        data_range: the value range (1.0 for [0, 1] floats, 255 for the uint8 scale).

    Returns:
        float64 [...] one value per image, at most :data:`PSNR_MAX_DB` (identical images give exactly that).
    """
    if pred.shape != target.shape:
        raise ValueError(f"psnr: pred and target shapes differ: {tuple(pred.shape)} vs {tuple(target.shape)}")
    mse = (pred.double() - target.double()).pow(2).flatten(-3).mean(-1)
    return (10.0 * torch.log10(data_range ** 2 / mse)).clamp(max=PSNR_MAX_DB)


def centred_points(landmarks: torch.Tensor, region: str = "mouth") -> torch.Tensor:
    """float64 [..., P, 2]: the region's points of each frame minus their mean, what LMD compares (from
    [..., 68, 2] iBUG-68 landmarks; P = 20 for the mouth, 68 for the face)."""
    points = landmarks[..., LANDMARK_REGIONS[region], :].double()
    return points - points.mean(-2, keepdim=True)


def lmd_frames(pred: torch.Tensor, target: torch.Tensor, region: str = "mouth") -> torch.Tensor:
    """Landmark distance of every frame; NaN where either input has a non-finite point (failed detection).

    Each frame's point set is mean-centred on its own (no scale normalisation, so the unit is that of the input,
    pixels of the evaluation crop), then the Euclidean distances of corresponding points are averaged.

    Args:
        pred, target: float [..., T, 68, 2] iBUG-68 landmarks.
        region: ``"mouth"`` (points 48-67, M-LMD) or ``"face"`` (all 68, F-LMD).

    Returns:
        float64 [..., T].
    """
    if region not in LANDMARK_REGIONS:
        raise ValueError(f"lmd region must be one of {sorted(LANDMARK_REGIONS)}, got {region!r}")
    if pred.shape != target.shape or pred.ndim < 3 or tuple(pred.shape[-2:]) != (68, 2):
        raise ValueError(f"lmd expects pred and target of shape [..., T, 68, 2], got {tuple(pred.shape)} "
                         f"and {tuple(target.shape)}")
    per_frame = (centred_points(pred, region) - centred_points(target, region)).norm(dim=-1).mean(-1)
    # A frame is valid only if all 68 points of both sets are finite, so M-LMD and F-LMD skip the same frames.
    valid = torch.isfinite(pred).flatten(-2).all(-1) & torch.isfinite(target).flatten(-2).all(-1)
    return torch.where(valid, per_frame, torch.full_like(per_frame, float("nan")))


def lmd(pred: torch.Tensor, target: torch.Tensor, region: str = "mouth",
        return_skipped: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Landmark distance of each clip (M-LMD for ``region="mouth"``, F-LMD for ``"face"``).

    The per-frame distances of :func:`lmd_frames` are averaged over the frames of the clip (the EAMM/EAT/StyleTalk
    convention ``sum / (valid frames * points)``). Frames whose landmarks hold NaN in either input (failed
    detection) are skipped and counted.

    Args:
        pred, target: float [..., T, 68, 2].
        region: ``"mouth"`` or ``"face"``.
        return_skipped: also return the number of skipped frames per clip.

    Returns:
        float64 [...] per-clip distances (NaN for a clip without any valid frame); with ``return_skipped``, also
        int64 [...] skipped-frame counts.
    """
    per_frame = lmd_frames(pred, target, region)
    valid = ~torch.isnan(per_frame)
    distance = per_frame.nan_to_num(0.0).sum(-1) / valid.sum(-1)           # 0 / 0 -> NaN for an empty clip
    if return_skipped:
        return distance, (~valid).sum(-1)
    return distance


def lpips(pred: torch.Tensor, target: torch.Tensor, net: nn.Module, normalize: bool = False) -> torch.Tensor:
    """LPIPS distance per image pair (lower is more similar), computed by the ``lpips`` package's network.

    Args:
        pred, target: float [N, 3, H, W] RGB in [-1, 1], or in [0, 1] with ``normalize=True``.
        net: an ``lpips.LPIPS`` network (or any module mapping two [-1, 1] batches to [N, 1, 1, 1] distances);
            :func:`zoo.metrics.lpips.build_lpips` assembles one offline.
        normalize: map [0, 1] inputs to [-1, 1] first (the package's ``normalize=True``: ``2 x - 1``).

    Returns:
        float [N] distances (differentiable; the network's dtype).
    """
    if pred.shape != target.shape or pred.ndim != 4 or pred.shape[1] != 3:
        raise ValueError(f"lpips expects two [N, 3, H, W] batches, got {tuple(pred.shape)} and {tuple(target.shape)}")
    if normalize:
        pred, target = 2 * pred - 1, 2 * target - 1
    return net(pred, target).reshape(pred.shape[0])
