"""Landmark distance metric class (M-LMD / F-LMD), DDP-safe, counting failed detections.

The per-clip value is :func:`zoo.metrics.functional.lmd` (EAMM/EAT/StyleTalk convention: each frame's set
mean-centred, mean Euclidean distance over points, mean over the clip's valid frames); the dataset value is the
mean over clips that have a valid frame. Landmarks come from a detector the caller runs (dlib for StyleTalk parity,
FAN as an alternative, metrics.md §5); a frame whose detection failed is NaN and is skipped and counted.
"""
from __future__ import annotations

from typing import Any

import torch
from torchmetrics import Metric

from zoo.metrics import functional as F

COUNTS = ("clips", "empty_clips", "frames", "skipped_frames")


class LandmarkDistance(Metric):
    """M-LMD (``region="mouth"``) or F-LMD (``region="face"``): mean over clips of the per-clip landmark distance.

    As input to ``update``: ``pred``, ``target`` float [B, T, 68, 2] iBUG-68 landmarks of generated and ground-truth
    frames (same frame indexing; NaN for a failed detection).
    As output of ``compute``: float64 scalar, in the landmarks' unit (pixels of the evaluation crop). Clips without
    any valid frame do not enter the mean; :meth:`counts` reports them and the skipped frames.

    Args:
        region: ``"mouth"`` (points 48-67) or ``"face"`` (all 68).
        kwargs: torchmetrics ``Metric`` options.
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    def __init__(self, region: str = "mouth", **kwargs: Any):
        super().__init__(**kwargs)
        if region not in F.LANDMARK_REGIONS:
            raise ValueError(f"region must be one of {sorted(F.LANDMARK_REGIONS)}, got {region!r}")
        self.region = region
        self.variant = "M-LMD" if region == "mouth" else "F-LMD"
        self.add_state("total", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        for name in COUNTS:
            self.add_state(name, torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        if pred.ndim != 4:
            raise ValueError(f"LandmarkDistance expects [B, T, 68, 2] landmarks, got shape {tuple(pred.shape)}")
        per_clip, skipped = F.lmd(pred, target, self.region, return_skipped=True)
        per_clip, skipped = per_clip.to(self.total.device), skipped.to(self.total.device)
        valid = ~torch.isnan(per_clip)
        self.total += per_clip[valid].sum()
        self.clips += valid.sum()
        self.empty_clips += (~valid).sum()
        self.frames += pred.shape[0] * pred.shape[1]
        self.skipped_frames += skipped.sum()

    def compute(self) -> torch.Tensor:
        """float64 scalar mean over clips with a valid frame (NaN if there is none)."""
        return self.total / self.clips

    def counts(self) -> dict[str, int]:
        """Clips scored, clips without a valid frame, frames seen and frames skipped, over all processes."""
        with self.sync_context():
            return {name: int(getattr(self, name)) for name in COUNTS}
