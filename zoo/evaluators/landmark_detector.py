"""The ``landmark_detector`` evaluator: 68-point iBUG landmarks on synthetic faces, for M-LMD / F-LMD (and the
5-point alignment of CSIM) on the synthetic corpus, where the official FAN / dlib detectors do not apply.

**Model.** The face region of a frame of any size (``crop_box``, fractions of the frame: the synthetic corpus'
camera is fixed, so the head always sits in it) is resized (bilinear, antialiased) to a square working size S (80
by default) and fed to :class:`~zoo.evaluators.networks.LandmarkNet` (68 heatmaps at S/4 from a small CNN with a
feature-pyramid decoder, read out by soft-argmax); the normalised coordinates are mapped back to frame pixels.
Cropping spends the pixels on the face, not on background and shoulders: at S = 80 the default crop keeps 78 % of
a 128 px frame's resolution for 40 % of the whole-frame cost at S = 128. Pixel convention: the centre of pixel
column ``i`` is ``x = i`` (as the corpus' ``landmarks2d`` and OpenCV), so a normalised ``u`` in [-1, 1] of a crop
of width ``w`` starting at ``x0`` maps to ``x = x0 + (u + 1) / 2 * w - 0.5``.

**Training.** The exact ``landmarks2d`` track is the target. Loss = the bar metric itself, the per-point
Euclidean error divided by the inter-ocular distance (smoothed at 0). The corpus is clean and its camera fixed, so
each training image gets a random affine transform (rotation, scale, aspect, shift; the targets move with it) and
photometric damage (brightness / contrast / colour gains, Gaussian blur, noise): generated frames are blurrier and
not always where the corpus puts the head, and the detector must still locate their landmarks.

**Quality bar** (:func:`evaluate_quality`, on the corpus' test split)::

    NME = mean over frames f of  (1/68) sum_p ||pred_fp - gt_fp||_2 / ||gt_f,36 - gt_f,45||_2   <=  0.015

i.e. the mean point-to-point error normalised by the inter-ocular distance between the outer eye corners (iBUG
points 36 and 45, 0-based): the standard 300-W "inter-ocular" NME. On the default corpus that distance is about
27-39 px of a 128 px frame, so the bar is an average error of roughly half a pixel.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np
import torch
import torch.nn.functional as F

from zoo.errors import ConfigError, DataError
from zoo.evaluators.common import (DataSource, degrade, iter_split_frames, one_cycle_adamw, resolve_dataset,
                                   to_float_images)
from zoo.evaluators.networks import LandmarkNet
from zoo.model import ZooModule
from zoo.registry import register_model

__all__ = ["LandmarkDetectorConfig", "LandmarkDetector", "landmark_nme", "evaluate_quality", "NME_BAR"]

NME_BAR = 0.015
OUTER_EYE_CORNERS = (36, 45)
MOUTH = slice(48, 68)


@dataclass
class LandmarkDetectorConfig:
    """Network size, optimiser and training augmentation of the landmark detector."""

    input_size: int = 80                       # working resolution S (divisible by 16)
    # The analysed region (x0, y0, x1, y1 as fractions of the frame), resized to S x S; null: the whole frame. The
    # default holds every landmark of the synthetic corpus' fixed camera framing with >= 8 % margins.
    crop_box: Optional[List[float]] = field(default_factory=lambda: [0.1, 0.13, 0.9, 0.93])
    widths: List[int] = field(default_factory=lambda: [16, 32, 64, 128])   # LandmarkNet encoder channels, /2../16
    decoder_width: int = 48                    # LandmarkNet feature-pyramid channels
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_fraction: float = 0.15              # one-cycle schedule: warm-up share of the run's steps
    # augmentation (training only)
    rotate_degrees: float = 3.0                # uniform +-
    scale_jitter: float = 0.03                 # uniform +- relative
    aspect_jitter: float = 0.0                 # uniform +- x stretch / y squeeze (0.08 did not help unseen faces)
    shift_jitter: float = 0.03                 # uniform +- fraction of the working image
    photometric: float = 0.1                   # brightness/contrast/channel-gain jitter, uniform +-
    blur_prob: float = 0.3                     # share of images blurred, sigma ~ U(0, blur_sigma) working pixels
    blur_sigma: float = 1.5
    noise_std: float = 0.02                    # additive Gaussian noise on [0, 1] images


def landmark_nme(pred: torch.Tensor, target: torch.Tensor, points: slice = slice(0, 68)) -> torch.Tensor:
    """Per-frame inter-ocular NME: mean Euclidean error of ``points`` / distance of the target's points 36 and 45.

    Args:
        pred, target: float [..., 68, 2] pixel landmarks.

    Returns:
        float [...] (the normaliser always uses all 68 target points' corners, whatever ``points`` is).
    """
    iod = (target[..., OUTER_EYE_CORNERS[0], :] - target[..., OUTER_EYE_CORNERS[1], :]).norm(dim=-1)
    return (pred[..., points, :] - target[..., points, :]).norm(dim=-1).mean(-1) / iod.clamp_min(1e-6)


def _affine_jitter(x: torch.Tensor, coords: torch.Tensor, degrees: float, scale: float, aspect: float, shift: float
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Warp images and normalised coordinates by one random affine transform per image: rotation, uniform scale,
    an aspect change (x stretched by 1 + a, y by 1 - a: wider / longer faces than the few training identities have)
    and a shift, each uniform in +- its amount.

    x: float [N, 3, S, S]; coords: float [N, K, 2] normalised (align_corners=False). The forward map is
    ``c' = A c + t``; grid_sample needs the inverse (where each output pixel comes from).
    """
    n = x.shape[0]
    u = lambda: torch.rand(n, device=x.device) * 2 - 1  # noqa: E731 (uniform in [-1, 1])
    angle, s, stretch = u() * math.radians(degrees), 1 + u() * scale, u() * aspect
    t = torch.stack([u(), u()], -1) * (2 * shift)               # a fraction of the image = 2 * fraction in [-1, 1]
    cos, sin = torch.cos(angle) * s, torch.sin(angle) * s
    rotation = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], 1)     # [N, 2, 2]
    a = rotation * torch.stack([1 + stretch, 1 - stretch], -1)[:, None, :]                       # R @ diag(sx, sy)
    a_inv = torch.linalg.inv(a)
    theta = torch.cat([a_inv, -(a_inv @ t.unsqueeze(-1))], -1)                                  # [N, 2, 3]
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return x, coords @ a.transpose(1, 2) + t.unsqueeze(1)


class LandmarkDetector(ZooModule):
    """Trains :class:`~zoo.evaluators.networks.LandmarkNet` on batches with ``frames`` uint8 [B, T, 3, H, W] and
    ``landmarks2d`` float [B, T, 68, 2] (every frame of every window is a sample).

    Inference: :meth:`forward` (any RGB layout, differentiable) and :meth:`detect` (the metric suite's landmarker:
    uint8 [N, H, W, 3] -> numpy [N, 68, 2]).
    """

    data_fields = ("frames", "landmarks2d")
    monitor = "val/nme"

    def __init__(self, cfg: LandmarkDetectorConfig):
        super().__init__()
        if cfg.input_size % 16 or cfg.input_size < 32:
            raise ConfigError(f"landmark_detector: model.input_size must be a multiple of 16 (>= 32), got "
                              f"{cfg.input_size}")
        box = cfg.crop_box
        if box is not None and (len(box) != 4 or not 0 <= box[0] < box[2] <= 1 or not 0 <= box[1] < box[3] <= 1):
            raise ConfigError(f"landmark_detector: model.crop_box must be [x0, y0, x1, y1] fractions with "
                              f"0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1, got {list(box)}")
        self.save_hyperparameters(vars(cfg), logger=False)
        self.cfg = cfg
        self.network = LandmarkNet(cfg.widths, cfg.decoder_width)

    # ------------------------------------------------------------------------------------------ inference

    def crop_region(self, height: int, width: int) -> tuple[int, int, int, int]:
        """The analysed region of a height x width frame: integer pixel box (x0, y0, crop width, crop height)."""
        if self.cfg.crop_box is None:
            return 0, 0, width, height
        fx0, fy0, fx1, fy1 = self.cfg.crop_box
        x0, y0 = int(round(fx0 * width)), int(round(fy0 * height))
        return x0, y0, max(1, int(round(fx1 * width)) - x0), max(1, int(round(fy1 * height)) - y0)

    def _to_working(self, images: torch.Tensor, box: tuple[int, int, int, int]) -> torch.Tensor:
        """float [N, 3, H, W] in [0, 1] -> the crop ``box`` resized to float [N, 3, S, S] (bilinear, antialiased)."""
        x0, y0, cw, ch = box
        crop = images[..., y0:y0 + ch, x0:x0 + cw]
        s = self.cfg.input_size
        if tuple(crop.shape[-2:]) == (s, s):
            return crop
        return F.interpolate(crop, size=(s, s), mode="bilinear", align_corners=False, antialias=True)

    @staticmethod
    def _to_pixels(coords: torch.Tensor, box: tuple[int, int, int, int]) -> torch.Tensor:
        """Normalised [-1, 1] (x, y) of the working image -> frame pixels (pixel centres at integers)."""
        x0, y0, cw, ch = box
        return (coords + 1) * 0.5 * coords.new_tensor([cw, ch]) - 0.5 + coords.new_tensor([x0, y0])

    @staticmethod
    def _to_normalised(pixels: torch.Tensor, box: tuple[int, int, int, int]) -> torch.Tensor:
        x0, y0, cw, ch = box
        return (pixels - pixels.new_tensor([x0, y0]) + 0.5) / pixels.new_tensor([cw, ch]) * 2 - 1

    def forward(self, images) -> torch.Tensor:
        """Landmarks of RGB frames.

        Args:
            images: [N, 3, H, W] or [N, H, W, 3], uint8 or float in [0, 1], tensor or numpy (any H, W).

        Returns:
            float32 [N, 68, 2] (x, y) in input pixels, on the module's device.
        """
        x = to_float_images(images).to(self.device)
        box = self.crop_region(*x.shape[-2:])
        return self._to_pixels(self.network(self._to_working(x, box) * 2 - 1), box)

    @torch.no_grad()
    def detect(self, images, batch_size: int = 256) -> np.ndarray:
        """The metric suite's landmarker: frames (see :meth:`forward`) -> float32 numpy [N, 68, 2] pixels.

        Runs in eval mode (restoring the previous mode) in chunks of ``batch_size`` frames. Never NaN: there is no
        face detection step, a face is assumed inside ``crop_box`` (true of the synthetic corpus' framing).
        """
        was_training = self.training
        self.eval()
        try:
            out = [self(images[i:i + batch_size]).float().cpu() for i in range(0, len(images), batch_size)]
        finally:
            self.train(was_training)
        return torch.cat(out).numpy() if out else np.zeros((0, 68, 2), np.float32)

    # ------------------------------------------------------------------------------------------ training

    def _augment(self, x: torch.Tensor, coords: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Random geometric + photometric augmentation of working images x float [N, 3, S, S] in [0, 1]."""
        cfg = self.cfg
        if cfg.rotate_degrees or cfg.scale_jitter or cfg.aspect_jitter or cfg.shift_jitter:
            x, coords = _affine_jitter(x, coords, cfg.rotate_degrees, cfg.scale_jitter, cfg.aspect_jitter,
                                       cfg.shift_jitter)
        x = degrade(x, photometric=cfg.photometric, channel_gain=True, blur_prob=cfg.blur_prob,
                    blur_sigma=cfg.blur_sigma, noise_std=cfg.noise_std)
        return x, coords

    def step(self, batch: dict, stage: str) -> torch.Tensor:
        frames, target = batch["frames"], batch["landmarks2d"].float()
        x = to_float_images(frames.flatten(0, 1))                   # [B*T, 3, H, W]
        target = target.flatten(0, 1)                                # [B*T, 68, 2] pixels
        box = self.crop_region(*x.shape[-2:])
        x = self._to_working(x, box)
        if stage == "train":
            x, coords = self._augment(x, self._to_normalised(target, box))
            target = self._to_pixels(coords, box)                    # the warped target, in frame pixels
        pred = self._to_pixels(self.network(x * 2 - 1), box)
        iod = (target[:, OUTER_EYE_CORNERS[0]] - target[:, OUTER_EYE_CORNERS[1]]).norm(dim=-1).clamp_min(1e-6)
        # The bar metric itself, with the norm smoothed at 0 so its gradient stays finite.
        dist = ((pred - target).pow(2).sum(-1) + 1e-6).sqrt()
        loss = (dist.mean(-1) / iod).mean()
        n = x.shape[0]
        self.log(f"{stage}/loss", loss, prog_bar=stage == "train", batch_size=n, sync_dist=stage != "train")
        if stage != "train":
            nme = landmark_nme(pred, target).mean()
            self.log(f"{stage}/nme", nme, prog_bar=True, batch_size=n, sync_dist=True)
            self.log(f"{stage}/error_px", (pred - target).norm(dim=-1).mean(), batch_size=n, sync_dist=True)
        return loss

    def configure_optimizers(self):
        return one_cycle_adamw(self, self.cfg.lr, self.cfg.weight_decay, self.cfg.warmup_fraction)


@register_model("landmark_detector", config=LandmarkDetectorConfig,
                help="evaluator kit: 68-point landmark detector for the synthetic corpus (heatmaps + soft-argmax)")
def landmark_detector(cfg: LandmarkDetectorConfig) -> LandmarkDetector:
    return LandmarkDetector(cfg)


@torch.no_grad()
def evaluate_quality(model: LandmarkDetector, data: DataSource, split: str = "test", frame_stride: int = 1,
                     batch_size: int = 256) -> dict:
    """The detector's accuracy on every ``frame_stride``-th frame of every clip of ``split``.

    Args:
        model: a trained :class:`LandmarkDetector` (its mode is restored afterwards).
        data: a ``ClipDataset``, a ``TalkingHeadDataModule`` or a dataset directory with ``landmarks2d``.
        split: the split to score (the bar is defined on ``"test"``).

    Returns:
        ``nme`` (the bar metric, see the module docstring), ``nme_mouth`` (points 48-67, what M-LMD sees),
        ``nme_p95`` (95th percentile over frames), ``error_px`` (mean point error in frame pixels), ``frames``,
        ``clips``, ``bar`` (0.015) and ``passed`` (nme <= bar).
    """
    dataset = resolve_dataset(data)
    nme, mouth, err = [], [], []
    clips = 0
    for _clip, frames, target in iter_split_frames(dataset, split, frame_stride=frame_stride):
        pred = torch.from_numpy(model.detect(frames, batch_size)).double()
        target = torch.from_numpy(target).double()
        nme.append(landmark_nme(pred, target))
        mouth.append(landmark_nme(pred, target, MOUTH))
        err.append((pred - target).norm(dim=-1).mean(-1))
        clips += 1
    if not clips:
        raise DataError(f"split '{split}' of dataset '{dataset.name}' has no clips")
    nme_all = torch.cat(nme)
    value = float(nme_all.mean())
    return {"nme": value, "nme_mouth": float(torch.cat(mouth).mean()), "nme_p95": float(nme_all.quantile(0.95)),
            "error_px": float(torch.cat(err).mean()), "frames": int(nme_all.numel()), "clips": clips,
            "bar": NME_BAR, "passed": bool(value <= NME_BAR)}
