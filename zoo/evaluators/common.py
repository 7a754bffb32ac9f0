"""Helpers shared by the image evaluators: input layout/range normalisation, training-time image degradation and
frame sampling for the quality checks."""
from __future__ import annotations

from pathlib import Path
import math
from typing import Iterator, Optional, Union

import numpy as np
import torch
import torch.nn.functional as F

from zoo.data.clip_format import Clip, ClipDataset, open_dataset
from zoo.errors import DataError

__all__ = ["to_float_images", "gaussian_blur", "degrade", "resolve_dataset", "clip_frame_indices",
           "iter_split_frames"]

DataSource = Union[ClipDataset, "TalkingHeadDataModule", str, Path]  # noqa: F821 (the datamodule is duck-typed)


def to_float_images(images) -> torch.Tensor:
    """RGB images in any of the layouts the zoo passes around, as float32 [N, 3, H, W] in [0, 1].

    Accepts a numpy array or tensor, uint8 (0..255) or float ([0, 1]), channels-first [N, 3, H, W] (datamodule
    batches) or channels-last [N, H, W, 3] (the metric suite's frames, FAN's input). The layout is channels-last
    when the last dim is 3 and the second is not (a 3-pixel-high image is not a use case). Tensors keep their device.
    """
    x = torch.from_numpy(np.ascontiguousarray(images)) if isinstance(images, np.ndarray) else images
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or 3 not in (x.shape[1], x.shape[-1]):
        shape = tuple(getattr(images, "shape", ()))
        raise DataError(f"expected RGB images [N, 3, H, W] or [N, H, W, 3], got shape {shape}")
    if x.shape[1] != 3:
        # contiguous: a permuted [N, H, W, 3] array is a channels-last tensor, which sends convolutions down other
        # CPU kernels (one of them crashed in backward with narrow layers, torch 2.15)
        x = x.permute(0, 3, 1, 2).contiguous()
    return x.float().div(255.0) if x.dtype == torch.uint8 else x.float()


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Blur each image of x float [N, C, H, W] with its own sigma [N] in pixels (0: untouched); separable,
    reflect-padded."""
    n, c, h, w = x.shape
    radius = max(1, int(math.ceil(3 * float(sigma.max()))))
    offsets = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    kernel = torch.exp(-0.5 * (offsets / sigma.clamp_min(1e-3)[:, None]) ** 2)
    kernel = (kernel / kernel.sum(-1, keepdim=True)).repeat_interleave(c, 0)      # [N * C, k]; sigma 0 -> delta
    y = F.pad(x.reshape(1, n * c, h, w), (radius, radius, radius, radius), mode="reflect")
    y = F.conv2d(y, kernel[:, None, None, :], groups=n * c)
    y = F.conv2d(y, kernel[:, None, :, None], groups=n * c)
    return y.reshape(n, c, h, w)


def degrade(x: torch.Tensor, *, photometric: float = 0.0, channel_gain: bool = False, blur_prob: float = 0.0,
            blur_sigma: float = 0.0, noise_std: float = 0.0) -> torch.Tensor:
    """Random per-image damage of clean renders, so that evaluators also read blurry, noisy generated frames.

    Args:
        x: float [N, 3, H, W] in [0, 1].
        photometric: brightness and contrast factors 1 + U(-a, a) (and per-channel gains with ``channel_gain``).
        blur_prob, blur_sigma: share of images blurred, with sigma ~ U(0, blur_sigma) pixels.
        noise_std: additive Gaussian noise.

    Returns:
        float [N, 3, H, W] clamped to [0, 1].
    """
    n = x.shape[0]
    if photometric:
        jitter = lambda *shape: (torch.rand(*shape, device=x.device) * 2 - 1) * photometric  # noqa: E731
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * (1 + jitter(n, 1, 1, 1)) + mean * (1 + jitter(n, 1, 1, 1))       # contrast, brightness
        if channel_gain:
            x = x * (1 + jitter(n, 3, 1, 1))
    if blur_prob and blur_sigma:
        sigma = torch.rand(n, device=x.device) * blur_sigma
        sigma = torch.where(torch.rand(n, device=x.device) < blur_prob, sigma, torch.zeros_like(sigma))
        if bool((sigma > 0.1).any()):
            x = gaussian_blur(x, sigma)
    if noise_std:
        x = x + torch.randn_like(x) * noise_std
    return x.clamp(0, 1)


def resolve_dataset(data: DataSource) -> ClipDataset:
    """The :class:`ClipDataset` behind a dataset, a (possibly not yet set up) datamodule or a dataset directory."""
    if isinstance(data, ClipDataset):
        return data
    if isinstance(data, (str, Path)):
        return open_dataset(data)
    if getattr(data, "dataset", None) is not None:       # a TalkingHeadDataModule after setup()
        return data.dataset
    root = getattr(getattr(data, "cfg", None), "root", None)
    if root:
        return open_dataset(root)
    raise DataError(f"cannot find a dataset in {type(data).__name__} (pass a ClipDataset, a dataset directory or a "
                    f"datamodule with data.root set)")


def clip_frame_indices(num_frames: int, frame_stride: int = 1, frames_per_clip: Optional[int] = None) -> np.ndarray:
    """Frame indices to score: ``frames_per_clip`` evenly spaced centres when given, else every ``frame_stride``-th."""
    if frames_per_clip is not None:
        k = min(int(frames_per_clip), num_frames)
        return np.floor((np.arange(k) + 0.5) * num_frames / k).astype(np.int64)
    return np.arange(0, num_frames, max(1, int(frame_stride)), dtype=np.int64)


def _read(clip: Clip, indices: np.ndarray) -> np.ndarray:
    """uint8 [n, H, W, 3] frames at ``indices`` (one ranged read when dense, per-frame reads when sparse)."""
    if len(indices) * 4 >= clip.num_frames:
        return clip.read_frames(0, clip.num_frames)[indices]
    return np.concatenate([clip.read_frames(int(i), int(i) + 1) for i in indices])


def iter_split_frames(dataset: ClipDataset, split: str, *, frame_stride: int = 1,
                      frames_per_clip: Optional[int] = None,
                      landmarks: bool = True) -> Iterator[tuple[Clip, np.ndarray, Optional[np.ndarray]]]:
    """Per clip of ``split``: the clip, uint8 frames [n, H, W, 3] and (optionally) float32 landmarks2d [n, 68, 2]."""
    if split not in dataset.splits:
        raise DataError(f"dataset '{dataset.name}' at {dataset.root} has no split '{split}'; it has: "
                        f"{', '.join(dataset.splits)}")
    if landmarks and "landmarks2d" not in dataset.fields:
        raise DataError(f"dataset '{dataset.name}' at {dataset.root} has no 'landmarks2d' track (ground truth needed)")
    for clip_id in dataset.clip_ids(split):
        clip = dataset.clip(clip_id)
        idx = clip_frame_indices(clip.num_frames, frame_stride, frames_per_clip)
        lm = np.asarray(clip.track("landmarks2d")[idx], dtype=np.float32) if landmarks else None
        yield clip, _read(clip, idx), lm


def one_cycle_adamw(module, lr: float, weight_decay: float, warmup_fraction: float) -> dict:
    """AdamW with a one-cycle schedule over the run's real length (stepped per batch): fast convergence within the
    evaluator kit's few-minute CPU budget. Returns Lightning's ``configure_optimizers`` dict."""
    optimizer = torch.optim.AdamW(module.parameters(), lr=lr, weight_decay=weight_decay)
    total = max(2, module.scheduled_batches())
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=total, pct_start=warmup_fraction)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
