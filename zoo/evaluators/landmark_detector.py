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

**Mouth refinement** (coarse to fine, as cascaded landmark detectors do; on by default). M-LMD measures mouth
motion, and on the synthetic corpus that motion is small: the lips move ~0.6 px about their mean shape at 128 px.
The face network alone read only 56 % of it (``mouth_motion_gain`` on the test split) and its lips were 0.46 px
off the true ones: it met the NME bar while M-LMD through it shrank every method's mouth error and the
``static`` baseline's alike. So a second :class:`~zoo.evaluators.networks.LandmarkNet` reads the 20 lip points
from a square around the first pass' mouth (side ``mouth_crop_scale`` x its inter-ocular distance) resampled to
``mouth_input_size``: about 1.5x the frame's own resolution at 128 px where the face pass has 0.78x, every heatmap
cell on the lips. It is trained on squares around the true mouth, jittered by more than the first pass' error.
With it the test split's lips are read with gain 0.95 and 0.17 px of error (README).

**Training.** The exact ``landmarks2d`` track is the target. Loss = the bar metric itself, the per-point
Euclidean error divided by the inter-ocular distance (smoothed at 0). The corpus is clean and its camera fixed, so
each training image gets a random affine transform (rotation, scale, aspect, shift; the targets move with it) and
photometric damage (brightness / contrast / colour gains, Gaussian blur, noise): generated frames are blurrier and
not always where the corpus puts the head, and the detector must still locate their landmarks.

**Quality bar** (:func:`evaluate_quality`, on the corpus' test split)::

    NME = mean over frames f of  (1/68) sum_p ||pred_fp - gt_fp||_2 / ||gt_f,36 - gt_f,45||_2   <=  0.015

i.e. the mean point-to-point error normalised by the inter-ocular distance between the outer eye corners (iBUG
points 36 and 45, 0-based): the standard 300-W "inter-ocular" NME. On the default corpus that distance is about
27-39 px of a 128 px frame, so the bar is an average error of roughly half a pixel. The check also reports what
M-LMD depends on: the lips' error with each frame's set mean-centred, and the share of their motion read.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar, List, Optional

import numpy as np
import torch
import torch.nn.functional as F

from zoo.errors import ConfigError, DataError
from zoo.evaluators.common import (DataSource, degrade, iter_split_frames, one_cycle_adamw, resolve_dataset,
                                   to_float_images)
from zoo.evaluators.networks import LandmarkNet
from zoo.metrics.functional import LANDMARK_REGIONS, lmd_frames
from zoo.model import ZooModule
from zoo.registry import register_model

__all__ = ["LandmarkDetectorConfig", "LandmarkDetector", "landmark_nme", "evaluate_quality", "NME_BAR"]

NME_BAR = 0.015
OUTER_EYE_CORNERS = (36, 45)
MOUTH = LANDMARK_REGIONS["mouth"]


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
    # mouth refinement (module docstring); false: the face network's lip points, as before
    mouth_refine: bool = True
    mouth_input_size: int = 64                 # working size of the mouth crop (divisible by 16)
    mouth_crop_scale: float = 1.3              # crop side / inter-ocular distance (the widest lips are ~0.83)
    mouth_widths: List[int] = field(default_factory=lambda: [16, 32, 48, 64])
    mouth_decoder_width: int = 32
    mouth_center_jitter: float = 0.08          # training crops: centre moved uniform +- this fraction of the side

    bounds: ClassVar[dict[str, str]] = {
        "decoder_width": "[1, inf)", "lr": "(0, inf)", "weight_decay": "[0, inf)", "warmup_fraction": "(0, 1)",
        "rotate_degrees": "[0, 180]", "scale_jitter": "[0, 1)", "aspect_jitter": "[0, 1)", "shift_jitter": "[0, 1)",
        "photometric": "[0, 1)", "blur_prob": "[0, 1]", "blur_sigma": "[0, inf)", "noise_std": "[0, inf)",
        "mouth_crop_scale": "(0, inf)", "mouth_decoder_width": "[1, inf)", "mouth_center_jitter": "[0, 1)"}


def landmark_nme(pred: torch.Tensor, target: torch.Tensor, points: slice = slice(0, 68)) -> torch.Tensor:
    """Per-frame inter-ocular NME: mean Euclidean error of ``points`` / distance of the target's points 36 and 45.

    Args:
        pred, target: float [..., 68, 2] pixel landmarks.

    Returns:
        float [...] (the normaliser always uses all 68 target points' corners, whatever ``points`` is).
    """
    return (pred[..., points, :] - target[..., points, :]).norm(dim=-1).mean(-1) / inter_ocular(target).clamp_min(1e-6)


def inter_ocular(landmarks: torch.Tensor) -> torch.Tensor:
    """Distance [...] between the outer eye corners (iBUG 36 and 45) of landmarks [..., 68, 2]."""
    return (landmarks[..., OUTER_EYE_CORNERS[0], :] - landmarks[..., OUTER_EYE_CORNERS[1], :]).norm(dim=-1)


def rotations(angle: torch.Tensor) -> torch.Tensor:
    """Rotation matrices [[cos, -sin], [sin, cos]], float [N, 2, 2], of ``angle`` [N] radians."""
    cos, sin = torch.cos(angle), torch.sin(angle)
    return torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], 1)


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
    rotation = rotations(angle) * s[:, None, None]                                              # [N, 2, 2]
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
        for key in ("input_size", "mouth_input_size"):
            if getattr(cfg, key) % 16 or getattr(cfg, key) < 32:
                raise ConfigError(f"landmark_detector: model.{key} must be a multiple of 16 (>= 32), got "
                                  f"{getattr(cfg, key)}")
        box = cfg.crop_box
        if box is not None and (len(box) != 4 or not 0 <= box[0] < box[2] <= 1 or not 0 <= box[1] < box[3] <= 1):
            raise ConfigError(f"landmark_detector: model.crop_box must be [x0, y0, x1, y1] fractions with "
                              f"0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1, got {list(box)}")
        self.save_hyperparameters(vars(cfg), logger=False)
        self.cfg = cfg
        self.network = LandmarkNet(cfg.widths, cfg.decoder_width)
        lips = MOUTH.stop - MOUTH.start
        self.mouth_network = (LandmarkNet(cfg.mouth_widths, cfg.mouth_decoder_width, num_points=lips)
                              if cfg.mouth_refine else None)

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

    def mouth_square(self, landmarks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The mouth crop of frames with landmarks float [N, 68, 2] (pixels): centre [N, 2] (the lips' mean) and
        side [N] (``mouth_crop_scale`` x the inter-ocular distance), in pixels."""
        return landmarks[:, MOUTH].mean(1), self.cfg.mouth_crop_scale * inter_ocular(landmarks).clamp_min(1.0)

    def read_mouth(self, x: torch.Tensor, centre: torch.Tensor, side: torch.Tensor,
                   angle: Optional[torch.Tensor] = None, augment: bool = False) -> torch.Tensor:
        """The mouth network on squares of frames x float [N, 3, H, W] in [0, 1] (centre [N, 2] and side [N] in
        pixels, turned by ``angle`` [N] radians; ``augment``: photometric damage first); returns the 20 lip points
        float [N, 20, 2] in frame pixels."""
        if angle is None:
            angle = side.new_zeros(side.shape)
        crops = resample_squares(x, centre, side, angle, self.cfg.mouth_input_size)
        if augment:
            crops = self._degrade(crops)
        return square_to_frame(self.mouth_network(crops * 2 - 1), centre, side, angle)

    def forward(self, images) -> torch.Tensor:
        """Landmarks of RGB frames: the face network, then (``mouth_refine``) the mouth network on its mouth.

        Args:
            images: [N, 3, H, W] or [N, H, W, 3], uint8 or float in [0, 1], tensor or numpy (any H, W).

        Returns:
            float32 [N, 68, 2] (x, y) in input pixels, on the module's device.
        """
        x = to_float_images(images).to(self.device)
        box = self.crop_region(*x.shape[-2:])
        landmarks = self._to_pixels(self.network(self._to_working(x, box) * 2 - 1), box)
        if self.mouth_network is None:
            return landmarks
        lips = self.read_mouth(x, *self.mouth_square(landmarks))
        return torch.cat([landmarks[:, :MOUTH.start], lips, landmarks[:, MOUTH.stop:]], dim=1)

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

    def _degrade(self, x: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        return degrade(x, photometric=cfg.photometric, channel_gain=True, blur_prob=cfg.blur_prob,
                       blur_sigma=cfg.blur_sigma, noise_std=cfg.noise_std)

    def _augment(self, x: torch.Tensor, coords: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Random geometric + photometric augmentation of working images x float [N, 3, S, S] in [0, 1]."""
        cfg = self.cfg
        if cfg.rotate_degrees or cfg.scale_jitter or cfg.aspect_jitter or cfg.shift_jitter:
            x, coords = _affine_jitter(x, coords, cfg.rotate_degrees, cfg.scale_jitter, cfg.aspect_jitter,
                                       cfg.shift_jitter)
        return self._degrade(x), coords

    def _mouth_loss(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The mouth network's loss on frames x float [N, 3, H, W] with true landmarks [N, 68, 2]: squares around
        the true mouth, their centre, side and angle jittered (the first pass' mouth is not exact)."""
        cfg = self.cfg
        centre, side = self.mouth_square(target)
        u = lambda *shape: torch.rand(*shape, device=x.device) * 2 - 1  # noqa: E731 (uniform in [-1, 1])
        centre = centre + u(len(x), 2) * (cfg.mouth_center_jitter * side[:, None])
        side = side * (1 + u(len(x)) * cfg.scale_jitter)
        angle = u(len(x)) * math.radians(cfg.rotate_degrees)
        lips = self.read_mouth(x, centre, side, angle, augment=True)
        return _point_loss(lips, target[:, MOUTH], target)

    def step(self, batch: dict, stage: str) -> torch.Tensor:
        frames = to_float_images(batch["frames"].flatten(0, 1))     # [B*T, 3, H, W]
        target = batch["landmarks2d"].float().flatten(0, 1)          # [B*T, 68, 2] pixels
        n = len(frames)
        if stage != "train":
            pred = self(frames)
            loss = _point_loss(pred, target, target)
            self.log(f"{stage}/loss", loss, batch_size=n, sync_dist=True)
            self.log(f"{stage}/nme", landmark_nme(pred, target).mean(), prog_bar=True, batch_size=n, sync_dist=True)
            self.log(f"{stage}/nme_mouth", landmark_nme(pred, target, MOUTH).mean(), batch_size=n, sync_dist=True)
            self.log(f"{stage}/error_px", (pred - target).norm(dim=-1).mean(), batch_size=n, sync_dist=True)
            return loss
        box = self.crop_region(*frames.shape[-2:])
        x, coords = self._augment(self._to_working(frames, box), self._to_normalised(target, box))
        warped = self._to_pixels(coords, box)                        # the warped target, in frame pixels
        loss = _point_loss(self._to_pixels(self.network(x * 2 - 1), box), warped, warped)
        if self.mouth_network is not None:
            mouth = self._mouth_loss(frames, target)
            self.log("train/loss_mouth", mouth, batch_size=n)
            loss = loss + mouth
        self.log("train/loss", loss, prog_bar=True, batch_size=n)
        return loss

    def configure_optimizers(self):
        return one_cycle_adamw(self, self.cfg.lr, self.cfg.weight_decay, self.cfg.warmup_fraction)


def _point_loss(pred: torch.Tensor, target: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:
    """The bar metric as a loss: mean point error of pred vs target [N, K, 2] over the inter-ocular distance of
    ``landmarks`` [N, 68, 2], the norm smoothed at 0 so its gradient stays finite."""
    dist = ((pred - target).pow(2).sum(-1) + 1e-6).sqrt()
    return (dist.mean(-1) / inter_ocular(landmarks).clamp_min(1e-6)).mean()


def _square_frame(side: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """The linear part [N, 2, 2] of the map from a square's normalised coordinates (align_corners=False: +-1 are
    its outer edges) to frame pixels: rotation by ``angle`` [N] times half the ``side`` [N]."""
    return rotations(angle) * (side / 2)[:, None, None]


def square_to_frame(coords: torch.Tensor, centre: torch.Tensor, side: torch.Tensor, angle: torch.Tensor
                    ) -> torch.Tensor:
    """Normalised coordinates [N, K, 2] of squares (centre [N, 2], side [N] pixels, angle [N]) -> frame pixels."""
    return coords @ _square_frame(side, angle).transpose(1, 2) + centre[:, None]


def resample_squares(x: torch.Tensor, centre: torch.Tensor, side: torch.Tensor, angle: torch.Tensor, size: int
                     ) -> torch.Tensor:
    """Squares of frames x float [N, 3, H, W] (centre [N, 2] and side [N] in pixels, pixel centres at integers;
    turned by ``angle`` [N]) resampled bilinearly to float [N, 3, size, size].

    Squares much larger than ``size`` pixels (the mouth of a 256 px frame and up, with the defaults) are read from
    an antialiased downscale of the frames, so the crop is not aliased; grid_sample's normalised coordinates do not
    depend on the image's resolution, so the same grid reads either.
    """
    h, w = x.shape[-2:]
    factor = min(1.0, size / float(side.detach().median()))
    if factor < 0.9:
        x = F.interpolate(x, size=(max(1, round(h * factor)), max(1, round(w * factor))), mode="bilinear",
                          align_corners=False, antialias=True)
    to_normalised = x.new_tensor([2.0 / w, 2.0 / h])
    linear = _square_frame(side, angle) * to_normalised[None, :, None]          # [N, 2, 2]
    offset = (centre + 0.5) * to_normalised - 1                                           # [N, 2]
    grid = F.affine_grid(torch.cat([linear, offset[..., None]], -1), [len(x), 3, size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


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
        ``clips``, ``bar`` (0.015) and ``passed`` (nme <= bar); for M-LMD, ``mouth_shape_error_px`` (the lips
        mean-centred per frame, as M-LMD compares them: the detector's M-LMD against the truth) and
        ``mouth_motion_gain`` (how much of the lips' motion about each clip's mean shape the detector reads: the
        least-squares slope of its motion on the true one; 1 is all of it, 0 a frozen mouth).
    """
    dataset = resolve_dataset(data)
    nme, mouth, err, shape_err = [], [], [], []
    read_dot_true = true_energy = 0.0
    clips = 0
    for _clip, frames, target in iter_split_frames(dataset, split, frame_stride=frame_stride):
        pred = torch.from_numpy(model.detect(frames, batch_size)).double()
        target = torch.from_numpy(target).double()
        nme.append(landmark_nme(pred, target))
        mouth.append(landmark_nme(pred, target, MOUTH))
        err.append((pred - target).norm(dim=-1).mean(-1))
        shape_err.append(lmd_frames(pred, target, "mouth"))                     # the detector's M-LMD per frame
        read_shape, true_shape = (p[:, MOUTH] - p[:, MOUTH].mean(1, keepdim=True) for p in (pred, target))
        read_motion, true_motion = read_shape - read_shape.mean(0), true_shape - true_shape.mean(0)
        read_dot_true += float((read_motion * true_motion).sum())
        true_energy += float(true_motion.pow(2).sum())
        clips += 1
    if not clips:
        raise DataError(f"split '{split}' of dataset '{dataset.name}' has no clips")
    nme_all = torch.cat(nme)
    value = float(nme_all.mean())
    return {"nme": value, "nme_mouth": float(torch.cat(mouth).mean()), "nme_p95": float(nme_all.quantile(0.95)),
            "error_px": float(torch.cat(err).mean()), "mouth_shape_error_px": float(torch.cat(shape_err).mean()),
            "mouth_motion_gain": read_dot_true / max(true_energy, 1e-12), "frames": int(nme_all.numel()),
            "clips": clips, "bar": NME_BAR, "passed": bool(value <= NME_BAR)}
