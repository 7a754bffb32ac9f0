"""CSIM: cosine similarity of identity embeddings of generated and reference faces.

Faces are aligned like insightface's ``face_align.norm_crop`` (metrics.md §6): five points from the 68 iBUG
landmarks (eye centres = means of 36-41 and 42-47, nose tip 30, mouth corners 48 and 54), a similarity transform
estimated as skimage's ``SimilarityTransform.estimate`` / ``from_estimate`` does (Umeyama, least squares, with
scale) onto the arcface_torch 112x112 template, and ``cv2.warpAffine`` (bilinear, constant border 0). The aligned RGB faces are
normalised to [-1, 1] (``(x / 255 - 0.5) / 0.5``, the input convention of arcface_torch, IR-SE50 and
insightface alike) and embedded; CSIM is the cosine of the raw embeddings. Which network computed the embeddings is
recorded (``backbone``), since CSIM values from different networks are not comparable.

Landmarks come from the caller (e.g. the dataset's) or from a landmark detector such as
:class:`~zoo.metrics.backbones.fan.FANLandmarks`.
"""
from __future__ import annotations

from typing import Optional

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import Metric

from zoo.errors import DataError
from zoo.metrics.backbones import BackboneRef, module_device

__all__ = ["ARCFACE_TEMPLATE", "ALIGNED_SIZE", "five_points", "similarity_transforms", "align_faces", "embed_faces",
           "csim", "IdentitySimilarity"]

# insightface arcface_dst: where the 5 points land in a 112x112 aligned face.
ARCFACE_TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655],
                             [70.7299, 92.2041]], dtype=np.float64)
ALIGNED_SIZE = 112


def five_points(landmarks68) -> np.ndarray:
    """float64 [..., 5, 2] (left eye, right eye, nose tip, left and right mouth corner) from [..., 68, 2]."""
    lm = np.asarray(landmarks68, dtype=np.float64)
    if lm.shape[-2:] != (68, 2):
        raise DataError(f"expected 68 landmarks [..., 68, 2], got shape {lm.shape}")
    return np.stack([lm[..., 36:42, :].mean(-2), lm[..., 42:48, :].mean(-2), lm[..., 30, :], lm[..., 48, :],
                     lm[..., 54, :]], axis=-2)


def similarity_transforms(src: np.ndarray, dst: np.ndarray = ARCFACE_TEMPLATE) -> np.ndarray:
    """Least-squares similarity transforms (rotation, uniform scale, translation) mapping ``src`` onto ``dst``.

    Umeyama's method, batched, with the same branches as skimage's ``_umeyama(estimate_scale=True)`` (reflection
    correction by ``det(A)``; rank-deficient point sets; NaN when all points coincide).

    Args:
        src: [N, P, 2] source points (P >= 2).
        dst: [P, 2] template points.

    Returns:
        float64 [N, 2, 3] affine matrices ``x_dst = M @ [x, y, 1]`` (as ``tform.params[:2]``).
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    n, num = src.shape[0], src.shape[1]
    src_mean, dst_mean = src.mean(1), dst.mean(0)                            # [N, 2], [2]
    src_c, dst_c = src - src_mean[:, None], dst - dst_mean
    cov = np.einsum("pi,npj->nij", dst_c, src_c) / num                       # A = dst_c^T src_c / P, [N, 2, 2]
    u, s, vt = np.linalg.svd(cov)
    d = np.ones((n, 2))
    d[np.linalg.det(cov) < 0, 1] = -1.0                                      # avoid reflections
    tol = s.max(axis=1) * 2 * np.finfo(np.float64).eps
    rank = (s > tol[:, None]).sum(1)
    # Rank 1 (collinear points): the sign comes from det(U) det(V) instead of det(A).
    d_rot = d.copy()
    rank1 = rank == 1
    flip = np.linalg.det(u) * np.linalg.det(vt) <= 0
    d_rot[rank1, 1] = np.where(flip[rank1], -1.0, 1.0)
    rot = u @ (d_rot[:, :, None] * vt)                                       # U diag(d) V
    with np.errstate(invalid="ignore", divide="ignore"):                    # coincident points: NaN, set below
        scale = (s * d).sum(1) / src_c.var(axis=1).sum(1)                    # uses the det(A) signs, as skimage
    mats = np.empty((n, 2, 3))
    mats[:, :, :2] = rot * scale[:, None, None]
    mats[:, :, 2] = dst_mean - np.einsum("nij,nj->ni", mats[:, :, :2], src_mean)
    mats[rank == 0] = np.nan
    return mats


def align_faces(images, landmarks68) -> np.ndarray:
    """112x112 arcface-aligned faces.

    Args:
        images: uint8 [N, H, W, 3] (RGB or BGR; channels are not reordered).
        landmarks68: [N, 68, 2] (x, y) pixel landmarks; must be finite.

    Returns:
        uint8 [N, 112, 112, 3].
    """
    if isinstance(images, torch.Tensor):
        images = images.detach().cpu().numpy()
    if isinstance(landmarks68, torch.Tensor):
        landmarks68 = landmarks68.detach().cpu().numpy()
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise DataError(f"expected uint8 images [N, H, W, 3], got {images.dtype} {images.shape}")
    if len(landmarks68) != len(images):
        raise DataError(f"got {len(landmarks68)} landmark sets for {len(images)} images")
    if not np.isfinite(np.asarray(landmarks68, dtype=np.float64)).all():
        raise DataError("align_faces: landmarks contain NaN/inf (frames without a detected face)")
    mats = similarity_transforms(five_points(landmarks68))
    # cv2 has no batched warp; the transforms above are batched.
    return np.stack([cv2.warpAffine(np.ascontiguousarray(img), m, (ALIGNED_SIZE, ALIGNED_SIZE), borderValue=0.0)
                     for img, m in zip(images, mats)])


@torch.no_grad()
def embed_faces(aligned: np.ndarray, embedder: nn.Module, batch_size: int = 32) -> torch.Tensor:
    """Identity embeddings of aligned RGB faces.

    Args:
        aligned: uint8 [N, 112, 112, 3] RGB.
        embedder: module mapping float [B, 3, 112, 112] in [-1, 1] to [B, D] (e.g. ``ArcFace``).

    Returns:
        float32 [N, D] on CPU.
    """
    device = module_device(embedder)
    x = torch.from_numpy(np.ascontiguousarray(aligned)).permute(0, 3, 1, 2)
    out = [embedder(((x[i:i + batch_size].to(device).float() / 255.0) - 0.5) / 0.5).float().cpu()
           for i in range(0, len(x), batch_size)]
    return torch.cat(out)


def _landmarks(images, landmarks, landmarker: Optional[nn.Module], what: str) -> np.ndarray:
    """float64 [N, 68, 2] landmarks: the given ones, else the landmarker's on ``images``."""
    if landmarks is None:
        if landmarker is None:
            raise DataError(f"csim: no {what} landmarks and no landmark detector given")
        landmarks = landmarker(images)
    if isinstance(landmarks, torch.Tensor):
        landmarks = landmarks.detach().cpu().numpy()
    return np.asarray(landmarks, dtype=np.float64)


def csim(pred_faces, ref_faces, embedder: nn.Module, pred_landmarks=None, ref_landmarks=None,
         landmarker: Optional[nn.Module] = None, batch_size: int = 32) -> torch.Tensor:
    """Per-frame identity cosine similarity.

    Args:
        pred_faces: uint8 [N, H, W, 3] RGB generated frames.
        ref_faces: uint8 [N, H', W', 3] or [1, H', W', 3] (one reference for all frames) RGB reference frames.
        embedder: identity network on [-1, 1] RGB 112x112 faces (e.g. ``ArcFace.from_weights()``).
        pred_landmarks: [N, 68, 2] (x, y) landmarks of ``pred_faces`` (NaN rows = no face); ``None``: detect them.
        ref_landmarks: landmarks of ``ref_faces``, same leading size as ``ref_faces``; ``None``: detect them.
        landmarker: detector for missing landmarks, uint8 [N, H, W, 3] -> [N, 68, 2] (e.g. ``FANLandmarks``).

    Returns:
        float32 [N] cosine similarities; NaN where a landmark set (pred or its reference) is not finite.
    """
    pred_lm = _landmarks(pred_faces, pred_landmarks, landmarker, "generated-frame")
    ref_lm = _landmarks(ref_faces, ref_landmarks, landmarker, "reference")
    n, n_ref = len(pred_lm), len(ref_lm)
    if n_ref not in (1, n):
        raise DataError(f"csim: {n_ref} reference frames for {n} generated frames (need 1 or {n})")
    pred_ok = np.isfinite(pred_lm).all(axis=(1, 2))
    ref_ok = np.isfinite(ref_lm).all(axis=(1, 2))
    valid = pred_ok & (ref_ok if n_ref == n else np.repeat(ref_ok, n))
    out = torch.full((n,), float("nan"))
    if not valid.any():
        return out
    pred_images = pred_faces.detach().cpu().numpy() if isinstance(pred_faces, torch.Tensor) else pred_faces
    ref_images = ref_faces.detach().cpu().numpy() if isinstance(ref_faces, torch.Tensor) else ref_faces
    pred_emb = embed_faces(align_faces(np.asarray(pred_images)[valid], pred_lm[valid]), embedder, batch_size)
    ref_rows = valid if n_ref == n else ref_ok
    ref_emb = embed_faces(align_faces(np.asarray(ref_images)[ref_rows], ref_lm[ref_rows]), embedder, batch_size)
    out[torch.from_numpy(valid)] = F.cosine_similarity(pred_emb, ref_emb.expand_as(pred_emb), dim=1)
    return out


class IdentitySimilarity(Metric):
    """Mean CSIM over all frames with landmarks in both the generated and the reference face.

    The embedder (and landmark detector) are kept outside the module tree
    (:class:`~zoo.metrics.backbones.BackboneRef`), so they never land in a model's checkpoint or optimiser. The
    metric starts on the embedder's device and the networks run on the metric's device (``metric.to(device)`` moves
    them all).

    Args:
        embedder: identity network on [-1, 1] RGB 112x112 faces (``ArcFace.from_weights()``; tests inject their own).
        landmarker: optional landmark detector used when ``update`` gets no landmarks (``FANLandmarks``).
        batch_size: faces per forward pass.

    As input to ``update``: ``pred_faces`` uint8 [N, H, W, 3] RGB, ``ref_faces`` uint8 [N or 1, H', W', 3] RGB,
    optional ``pred_landmarks`` [N, 68, 2] and ``ref_landmarks`` [N or 1, 68, 2] (NaN rows = no face; those frames
    are skipped).

    As output of ``compute``: float64 scalar, the mean cosine similarity (NaN before any valid frame).

    Attributes:
        backbone: name of the embedding network (``embedder.name`` if it has one).
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    plot_lower_bound = -1.0
    plot_upper_bound = 1.0

    def __init__(self, embedder: nn.Module, landmarker: Optional[nn.Module] = None, batch_size: int = 32,
                 **kwargs):
        super().__init__(**kwargs)
        self._embedder = BackboneRef(embedder)
        self._landmarker = BackboneRef(landmarker) if landmarker is not None else None
        self.backbone = getattr(embedder, "name", type(embedder).__name__)
        self.batch_size = batch_size
        self.add_state("sim_sum", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("frames", torch.tensor(0, dtype=torch.int64), dist_reduce_fx="sum")
        self.to(module_device(embedder))

    def update(self, pred_faces, ref_faces, pred_landmarks=None, ref_landmarks=None) -> None:
        landmarker = self._landmarker.on(self.device) if self._landmarker is not None else None
        sims = csim(pred_faces, ref_faces, self._embedder.on(self.device), pred_landmarks, ref_landmarks,
                    landmarker, self.batch_size)
        sims = sims[torch.isfinite(sims)]
        self.sim_sum += sims.double().sum().to(self.device)
        self.frames += sims.numel()

    def compute(self) -> torch.Tensor:
        return self.sim_sum / self.frames
