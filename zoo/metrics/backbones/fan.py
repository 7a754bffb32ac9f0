"""68-point 2D landmarks with face-alignment's FAN (2DFAN4) and S3FD detector, without its downloader.

``face_alignment.FaceAlignment`` always fetches its FAN file through a URL loader and compiles the network by
default; this wrapper builds the same networks from the installed package (``face_alignment.models.FAN(4)``,
``...sfd.net_s3fd.s3fd``), loads the verified files from the zoo's weights directory (``2DFAN4-11f355bf06.pth.tar``,
``s3fd-619a316812.pth``), and reproduces ``FaceAlignment(LandmarksType.TWO_D, flip_input=False, compile=False)
.get_landmarks_from_image`` batched over frames (metrics.md §5.1):

1. S3FD on the RGB frame (BGR mean subtraction inside), NMS 0.3, keep scores > 0.5; the highest-scoring face is used.
2. centre = box centre moved up by 0.12 x box height; ``scale = (w + h) / 195``; 256x256 crop (face-alignment's
   own ``crop``: zero padding, cv2 bilinear), RGB / 255.
3. FAN's last-stack 64x64 heatmaps -> argmax, +-0.25 px towards the larger neighbour, -0.5 (subpixel refinement),
   mapped back through the inverse crop transform and truncated to integers (face-alignment returns integer
   pixel coordinates).

Frames without a detected face get NaN landmarks.
"""
from __future__ import annotations

import os
from typing import Optional, Sequence, Union

import numpy as np
import torch
from face_alignment.detection.sfd.bbox import nms
from face_alignment.detection.sfd.detect import batch_detect
from face_alignment.detection.sfd.net_s3fd import s3fd
from face_alignment.models import FAN
from face_alignment.utils import crop

from zoo.errors import DataError
from zoo.metrics.backbones import FrozenBackbone, load_exact, module_device

__all__ = ["FANLandmarks", "box_center_scale", "heatmaps_to_landmarks", "CROP_SIZE", "REFERENCE_SCALE"]

CROP_SIZE = 256          # FAN input resolution
REFERENCE_SCALE = 195.0  # S3FD box size (w + h) that maps to scale 1
CENTER_Y_OFFSET = 0.12   # boxes are centred on the eyes/nose; move up by 12 % of the box height
NMS_THRESHOLD = 0.3
FACE_THRESHOLD = 0.5


def box_center_scale(boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Crop centre and scale of face boxes, as face-alignment computes them.

    float64 throughout (S3FD's boxes are float64, and face-alignment's ``crop`` only accepts float64 centres), in
    face-alignment's order of operations, so the crops match it bit for bit.

    Args:
        boxes: [N, 4+] ``x1, y1, x2, y2`` (a 5th score column is ignored).

    Returns:
        float64 centres [N, 2] (x, y) and scales [N].
    """
    boxes = np.asarray(boxes, dtype=np.float64)
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    cx = x2 - (x2 - x1) / 2.0
    cy = y2 - (y2 - y1) / 2.0
    cy = cy - (y2 - y1) * CENTER_Y_OFFSET
    scale = (x2 - x1 + y2 - y1) / REFERENCE_SCALE
    return np.stack([cx, cy], axis=1), scale


def heatmaps_to_landmarks(heatmaps: torch.Tensor, centers: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """Landmarks in image pixels from FAN heatmaps (face-alignment's ``get_preds_fromhm``, vectorised).

    Args:
        heatmaps: float [N, K, H, W] (K = 68, H = W = 64).
        centers: [N, 2] crop centres (x, y) in image pixels.
        scales: [N] crop scales (the crop spans ``200 * scale`` pixels).

    Returns:
        float32 [N, K, 2] (x, y), integer-valued like face-alignment's output.
    """
    n, k, h, w = heatmaps.shape
    flat = heatmaps.reshape(n, k, h * w)
    idx = flat.argmax(dim=-1)                        # first maximum, like numpy
    x, y = idx % w, idx // w                         # 0-based heatmap cell
    # The +-0.25 refinement needs all four neighbours: only peaks off the 1-cell border get it.
    inside = (x > 0) & (x < w - 1) & (y > 0) & (y < h - 1)
    xc, yc = x.clamp(1, w - 2), y.clamp(1, h - 2)

    def at(yy: torch.Tensor, xx: torch.Tensor) -> torch.Tensor:
        return flat.gather(-1, (yy * w + xx).unsqueeze(-1)).squeeze(-1)

    dx = torch.sign(at(yc, xc + 1) - at(yc, xc - 1))
    dy = torch.sign(at(yc + 1, xc) - at(yc - 1, xc))
    gate = inside.to(heatmaps.dtype)
    # face-alignment works with 1-based cells and then subtracts 0.5: cell centre = x + 0.5.
    u = x.to(torch.float64) + 0.5 + 0.25 * (dx * gate).to(torch.float64)
    v = y.to(torch.float64) + 0.5 + 0.25 * (dy * gate).to(torch.float64)
    # Inverse of the crop transform at heatmap resolution: pixel = u * size / res - size / 2 + centre.
    centers = torch.as_tensor(centers, dtype=torch.float64, device=heatmaps.device)
    size = 200.0 * torch.as_tensor(scales, dtype=torch.float64, device=heatmaps.device)
    px = u * (size / w)[:, None] - (size / 2)[:, None] + centers[:, 0:1]
    py = v * (size / h)[:, None] - (size / 2)[:, None] + centers[:, 1:2]
    # face-alignment casts to int32 (truncation towards zero).
    return torch.stack([px, py], dim=-1).trunc().to(torch.float32)


def _as_frames(images) -> np.ndarray:
    """uint8 [N, H, W, 3] numpy from a numpy array or tensor of RGB frames."""
    if isinstance(images, torch.Tensor):
        images = images.detach().cpu().numpy()
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise DataError(f"landmarks: expected uint8 RGB frames [N, H, W, 3], got {images.dtype} {images.shape}")
    return images


class FANLandmarks(FrozenBackbone):
    """S3FD face detector + 2DFAN4 landmark network (face-alignment 1.5, ``flip_input=False``), frozen.

    Args:
        fan_state_dict: 2DFAN4 state dict (1129 keys, ``face_alignment.models.FAN(4)`` layout); random when None.
        s3fd_state_dict: S3FD state dict (face-alignment layout); random when None.
        batch_size: frames per S3FD / FAN forward pass.
    """

    name = "face-alignment 2DFAN4 + S3FD (flip_input=False)"

    def __init__(self, fan_state_dict: Optional[dict] = None, s3fd_state_dict: Optional[dict] = None,
                 batch_size: int = 8):
        super().__init__()
        self.fan = FAN(4)
        self.detector = s3fd()
        if fan_state_dict is not None:
            load_exact(self.fan, fan_state_dict, "2DFAN4 state dict")
        if s3fd_state_dict is not None:
            load_exact(self.detector, s3fd_state_dict, "S3FD state dict")
        self.batch_size = batch_size
        self.freeze()

    @classmethod
    def from_weights(cls, weights_dir: Optional[Union[str, os.PathLike]] = None, batch_size: int = 8
                     ) -> "FANLandmarks":
        """Both networks with the verified files ``2DFAN4-11f355bf06.pth.tar`` and ``s3fd-619a316812.pth``."""
        from zoo import weights

        return cls(weights.load_state_dict("fan2d", weights_dir), weights.load_state_dict("s3fd", weights_dir),
                   batch_size=batch_size)

    @torch.no_grad()
    def detect(self, images) -> list[np.ndarray]:
        """Face boxes per frame.

        Args:
            images: uint8 RGB frames [N, H, W, 3] (numpy or tensor), all the same size.

        Returns:
            N arrays [K, 5] (x1, y1, x2, y2, score), highest score first, scores > 0.5 after NMS (K may be 0).
        """
        frames = _as_frames(images)
        device = module_device(self.detector)
        found = []
        for start in range(0, len(frames), self.batch_size):
            batch = torch.from_numpy(frames[start:start + self.batch_size]).permute(0, 3, 1, 2).float()
            candidates = batch_detect(self.detector, batch, device=str(device))   # [B, C, 5] or [B, 0]
            for boxes in candidates:
                boxes = np.asarray(boxes).reshape(-1, 5)
                if len(boxes):
                    boxes = boxes[nms(boxes, NMS_THRESHOLD)]
                    boxes = boxes[boxes[:, 4] > FACE_THRESHOLD]
                found.append(boxes)
        return found

    @torch.no_grad()
    def forward(self, images, boxes: Optional[Sequence[Optional[np.ndarray]]] = None) -> torch.Tensor:
        """68 landmarks per frame.

        Args:
            images: uint8 RGB frames [N, H, W, 3] (numpy or tensor).
            boxes: optional per-frame face box ``x1, y1, x2, y2[, score]`` (``None`` = no face) instead of running
                the detector.

        Returns:
            float32 [N, 68, 2] (x, y) image pixels, on CPU; NaN for frames without a face.
        """
        frames = _as_frames(images)
        if boxes is None:
            boxes = [b[0] if len(b) else None for b in self.detect(frames)]
        if len(boxes) != len(frames):
            raise DataError(f"landmarks: got {len(boxes)} boxes for {len(frames)} frames")
        out = torch.full((len(frames), 68, 2), float("nan"))
        found = [i for i, b in enumerate(boxes) if b is not None]
        if not found:
            return out
        centers, scales = box_center_scale(np.stack([np.asarray(boxes[i])[:4] for i in found]))
        device = module_device(self.fan)
        heatmaps = []
        for start in range(0, len(found), self.batch_size):
            rows = range(start, min(start + self.batch_size, len(found)))
            crops = np.stack([crop(frames[found[r]], centers[r], scales[r]) for r in rows])   # [B, 256, 256, 3]
            x = torch.from_numpy(crops).permute(0, 3, 1, 2).to(device, torch.float32) / 255.0
            heatmaps.append(self.fan(x)[-1].float().cpu())
        landmarks = heatmaps_to_landmarks(torch.cat(heatmaps), torch.from_numpy(centers), torch.from_numpy(scales))
        out[found] = landmarks
        return out
