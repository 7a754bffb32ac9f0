"""Lip-sync scores LSE-D ("Min dist") and LSE-C ("Confidence", = Sync_conf) with SyncNet.

Follows syncnet_python's ``SyncNetInstance.evaluate`` (metrics.md §1.1-1.2) step by step:

- 25 fps video, 16 kHz audio with **int16-scale** samples (float audio in [-1, 1] is scaled by 32768 and rounded,
  as ffmpeg's ``pcm_s16le`` conversion does; feeding [-1, 1] floats directly would shift c0 by -20.79);
- MFCC = ``python_speech_features.mfcc(audio, 16000)`` with its defaults: 13 coefficients, 100 frames/s;
- ``min_length = min(n_frames, floor(n_samples / 640))`` and ``min_length - 5`` windows (one fewer than
  possible, as upstream); window ``v`` = video frames ``v..v+4`` (B, 3, 5, 224, 224) and MFCC frames
  ``4v..4v+19`` (B, 1, 13, 20); raw 1024-d embeddings (no L2 normalisation), batches of 20 windows;
- for offsets -15..15: audio embeddings zero-padded by 15 rows at both ends, Euclidean distance
  (``F.pairwise_distance``, eps 1e-6) of video window i to audio row i + offset, averaged over windows
  (edge windows meet the zero padding and those distances count);
- ``offset = 15 - argmin``, **LSE-D = min**, **LSE-C = median - min** (median of 31 values = 16th smallest).

Video variant (recorded as :data:`VIDEO_VARIANT`): frames come in as RGB uint8, are converted to BGR 0..255
float and, when not 224x224, resized with ``cv2.resize`` bilinear -- Wav2Lip's ``SyncNetInstance_calc_scores``
path for already-cropped generated videos. There is no JPEG round-trip (syncnet_python extracts frames to JPEG)
and no S3FD face-crop pipeline; both shift scores slightly (metrics.md §1.6).

Other SyncNets (the synthetic-domain evaluator, :mod:`zoo.evaluators.sync_network`) plug into the same protocol
by declaring their video geometry as attributes: ``input_size`` (``int`` or ``(H, W)``; default 224) and
``crop_box`` (a fixed ``(x0, y0, x1, y1)`` box in fractions of the frame width/height, cut out before the resize;
default none). Everything else -- MFCC, windows, offsets, LSE-D/LSE-C -- is unchanged, and the variant string
(:func:`video_variant`) records the geometry. A network without these attributes takes the official path.
"""
from __future__ import annotations

from typing import NamedTuple, Optional, Sequence, Union

import cv2
import numpy as np
import python_speech_features
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import Metric

from zoo.errors import DataError
from zoo.metrics.backbones import BackboneRef, module_device

__all__ = ["SyncScore", "SyncMetric", "sync_scores", "score_offsets", "mean_offset_distances", "audio_mfcc",
           "int16_scale", "prepare_video", "num_windows", "extract_features", "VIDEO_VARIANT", "video_geometry",
           "video_variant", "crop_pixels"]

FPS = 25
SAMPLE_RATE = 16000
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS   # 640
MFCC_PER_FRAME = 4                       # 100 MFCC frames/s over 25 video frames/s
VIDEO_WINDOW = 5
MFCC_WINDOW = 20
SIZE = 224
VSHIFT = 15
ArrayLike = Union[np.ndarray, torch.Tensor]
VIDEO_VARIANT = ("RGB uint8 -> BGR float 0..255, cv2 bilinear resize to 224x224 when needed "
                 "(Wav2Lip calc_scores); no JPEG round-trip, no face crop")


class SyncScore(NamedTuple):
    """Scores of one video.

    ``offset``: AV offset in frames as syncnet_python prints it; -k when audio window i + k matches video window i
    (positive: the audio is ahead of the video). ``lse_d``: min mean distance. ``lse_c``: median - min.
    """

    offset: int
    lse_d: float
    lse_c: float


def int16_scale(audio) -> np.ndarray:
    """float64 [N] samples on the int16 scale, as syncnet_python reads them from a 16-bit wav.

    int16 arrays are used as they are. Float arrays must hold samples in [-1, 1] (the zoo's audio convention) and
    are multiplied by 32768, rounded and clipped to the int16 range (ffmpeg's float -> s16 conversion).
    """
    if isinstance(audio, torch.Tensor):
        audio = audio.detach().cpu().numpy()
    audio = np.asarray(audio)
    if audio.ndim != 1:
        raise DataError(f"sync audio: expected mono samples [N], got shape {audio.shape}")
    if audio.dtype == np.int16:
        return audio.astype(np.float64)
    if not np.issubdtype(audio.dtype, np.floating):
        raise DataError(f"sync audio: expected int16 samples or floats in [-1, 1], got dtype {audio.dtype}")
    if audio.size and np.abs(audio).max() > 1.0 + 1e-6:
        raise DataError("sync audio: float samples must lie in [-1, 1]; pass int16-scale samples as dtype int16")
    return np.clip(np.round(audio.astype(np.float64) * 32768.0), -32768, 32767)


def audio_mfcc(audio) -> np.ndarray:
    """MFCCs as syncnet_python computes them.

    Args:
        audio: 16 kHz mono samples (see :func:`int16_scale` for accepted dtypes).

    Returns:
        float64 [13, 1 + ceil((N - 400) / 160)] -- 100 frames/s (4 per video frame at 25 fps), c0 = log energy.
    """
    return python_speech_features.mfcc(int16_scale(audio), SAMPLE_RATE).T


def _hw(size) -> tuple[int, int]:
    """``(H, W)`` from an int (square) or a pair."""
    if isinstance(size, int):
        return size, size
    height, width = (int(v) for v in size)
    return height, width


def video_geometry(syncnet: nn.Module) -> tuple[tuple[int, int], Optional[tuple[float, float, float, float]]]:
    """The network's video input geometry: ``((H, W), crop_box)`` from its ``input_size`` / ``crop_box``
    attributes; ``((224, 224), None)`` (the official path) when it has neither."""
    crop = getattr(syncnet, "crop_box", None)
    return _hw(getattr(syncnet, "input_size", SIZE)), (None if crop is None else tuple(float(c) for c in crop))


def video_variant(syncnet: Optional[nn.Module] = None) -> str:
    """The recorded video preprocessing of ``syncnet``: :data:`VIDEO_VARIANT` on the official path, else the same
    description with its input size and fixed crop box."""
    if syncnet is None:
        return VIDEO_VARIANT
    (height, width), crop = video_geometry(syncnet)
    if (height, width) == (SIZE, SIZE) and crop is None:
        return VIDEO_VARIANT
    box = "" if crop is None else ("fixed crop box x %.4g..%.4g, y %.4g..%.4g of the frame, then " % (
        crop[0], crop[2], crop[1], crop[3]))
    return (f"RGB uint8 -> BGR float 0..255, {box}cv2 bilinear resize to {height}x{width} (HxW) when needed; "
            f"no JPEG round-trip, no face detection")


def crop_pixels(crop: tuple[float, float, float, float], height: int, width: int) -> tuple[int, int, int, int]:
    """Pixel box ``(x0, y0, x1, y1)`` (exclusive end) of a fractional crop box in a ``height`` x ``width`` frame:
    each edge rounded to the nearest pixel, so the box scales with the frame resolution."""
    x0, y0, x1, y1 = crop
    if not (0.0 <= x0 < x1 <= 1.0 and 0.0 <= y0 < y1 <= 1.0):
        raise ValueError(f"crop box must satisfy 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1, got {crop}")
    px = (int(round(x0 * width)), int(round(y0 * height)), int(round(x1 * width)), int(round(y1 * height)))
    if px[2] <= px[0] or px[3] <= px[1]:
        raise DataError(f"sync video: crop box {crop} is empty in a {height}x{width} frame")
    return px


def prepare_video(frames, size=SIZE, crop: Optional[tuple[float, float, float, float]] = None) -> torch.Tensor:
    """SyncNet input frames from RGB uint8 frames.

    Args:
        frames: uint8 [T, H, W, 3] RGB (numpy or tensor).
        size: network input size, ``int`` (square) or ``(h, w)``; 224 for the official SyncNet.
        crop: optional fixed box ``(x0, y0, x1, y1)`` in fractions of the frame (see :func:`crop_pixels`), cut out
            before the resize; ``None`` (official path) keeps the whole frame.

    Returns:
        uint8 [3, T, h, w] BGR (converted to float per batch, to keep long videos small in memory).
    """
    if isinstance(frames, torch.Tensor):
        frames = frames.detach().cpu().numpy()
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise DataError(f"sync video: expected uint8 RGB frames [T, H, W, 3], got {frames.dtype} {frames.shape}")
    height, width = _hw(size)
    if crop is not None:
        x0, y0, x1, y1 = crop_pixels(crop, frames.shape[1], frames.shape[2])
        frames = frames[:, y0:y1, x0:x1]
    bgr = np.ascontiguousarray(frames[..., ::-1])
    if bgr.shape[1:3] != (height, width):
        bgr = np.stack([cv2.resize(f, (width, height), interpolation=cv2.INTER_LINEAR) for f in bgr])
    return torch.from_numpy(bgr).permute(3, 0, 1, 2)


def num_windows(n_frames: int, n_samples: int) -> int:
    """Number of scored windows: ``min(n_frames, n_samples // 640) - 5`` (may be <= 0 for short clips)."""
    return min(n_frames, n_samples // SAMPLES_PER_FRAME) - VIDEO_WINDOW


@torch.no_grad()
def extract_features(syncnet: nn.Module, video: torch.Tensor, mfcc: np.ndarray, windows: int,
                     batch_size: int = 20) -> tuple[torch.Tensor, torch.Tensor]:
    """SyncNet embeddings of every window, computed in batches on the network's device.

    Args:
        syncnet: module with ``forward_lip`` and ``forward_aud`` (e.g. :class:`~zoo.metrics.backbones.syncnet.SyncNet`).
        video: uint8 [3, T, H, W] BGR from :func:`prepare_video` (224x224 for the official SyncNet).
        mfcc: [13, T_mfcc] from :func:`audio_mfcc`.
        windows: number of windows (:func:`num_windows`).

    Returns:
        video features float32 [windows, D] and audio features float32 [windows, D], on CPU.
    """
    device = module_device(syncnet)
    cct = torch.from_numpy(np.ascontiguousarray(mfcc)).float()      # float64 -> float32 as upstream's .float()
    video_feats, audio_feats = [], []
    for start in range(0, windows, batch_size):
        stop = min(windows, start + batch_size)
        clip = video[:, start:stop + VIDEO_WINDOW - 1].to(device).float()
        lips = torch.stack([clip[:, i:i + VIDEO_WINDOW] for i in range(stop - start)])           # [B, 3, 5, H, W]
        auds = torch.stack([cct[:, MFCC_PER_FRAME * v:MFCC_PER_FRAME * v + MFCC_WINDOW]
                            for v in range(start, stop)]).unsqueeze(1).to(device)             # [B, 1, 13, 20]
        video_feats.append(syncnet.forward_lip(lips).float().cpu())
        audio_feats.append(syncnet.forward_aud(auds).float().cpu())
    return torch.cat(video_feats), torch.cat(audio_feats)


def mean_offset_distances(video_feats: torch.Tensor, audio_feats: torch.Tensor, vshift: int = VSHIFT
                          ) -> torch.Tensor:
    """Mean distance per audio offset (syncnet_python ``calc_pdist`` + mean over windows).

    Args:
        video_feats, audio_feats: float [N, D] embeddings of the same N windows.

    Returns:
        float [2 * vshift + 1]; entry j pairs video window i with audio window ``i + j - vshift`` (a zero vector
        outside 0..N-1) and averages over i.
    """
    if video_feats.shape != audio_feats.shape or video_feats.dim() != 2:
        raise ValueError(f"expected two [N, D] feature tensors, got {tuple(video_feats.shape)} and "
                         f"{tuple(audio_feats.shape)}")
    n = video_feats.shape[0]
    padded = F.pad(audio_feats, (0, 0, vshift, vshift))
    dists = torch.stack([F.pairwise_distance(video_feats, padded[j:j + n]) for j in range(2 * vshift + 1)])
    return dists.mean(dim=1)


def score_offsets(video_feats: torch.Tensor, audio_feats: torch.Tensor, vshift: int = VSHIFT) -> SyncScore:
    """Offset, LSE-D and LSE-C from window embeddings [N, D] (see :func:`mean_offset_distances`).

    If audio window ``i + k`` matches video window ``i``, the minimum sits at ``j = vshift + k`` and the offset is
    ``-k``. LSE-D is the minimum mean distance; LSE-C is the median (``torch.median``: the lower middle value, the
    16th of 31) minus the minimum.
    """
    mdist = mean_offset_distances(video_feats, audio_feats, vshift)
    minval, minidx = torch.min(mdist, 0)
    return SyncScore(offset=int(vshift - minidx), lse_d=float(minval), lse_c=float(torch.median(mdist) - minval))


def sync_scores(video_frames, audio_int16_16k, syncnet: Optional[nn.Module] = None, batch_size: int = 20,
                vshift: int = VSHIFT) -> SyncScore:
    """Offset, LSE-D and LSE-C of one talking-head video (syncnet_python ``evaluate``; see the module docstring).

    Args:
        video_frames: uint8 [T, H, W, 3] RGB frames at 25 fps (face crops; resized to 224x224 if needed, or to
            the network's ``input_size`` after its ``crop_box``; see :func:`video_geometry`).
        audio_int16_16k: 16 kHz mono audio [N]: int16 samples, or float samples in [-1, 1].
        syncnet: the SyncNet to use (any module with ``forward_lip``/``forward_aud``); default: the verified
            ``syncnet_v2.model`` from the weights directory (loaded per call -- pass one when scoring many videos).
        batch_size: windows per forward pass.

    Returns:
        :class:`SyncScore` ``(offset, lse_d, lse_c)``.

    Raises:
        DataError: bad shapes/dtypes, or a clip too short to give one window (needs 6 frames and 0.24 s of audio).
        WeightsError: no ``syncnet`` given and the weights file is missing or wrong.
    """
    if syncnet is None:
        from zoo.metrics.backbones.syncnet import SyncNet

        syncnet = SyncNet.from_weights()
    video = prepare_video(video_frames, *video_geometry(syncnet))
    samples = int16_scale(audio_int16_16k)
    mfcc = python_speech_features.mfcc(samples, SAMPLE_RATE).T
    n_samples = len(samples)
    windows = num_windows(video.shape[1], n_samples)
    if windows < 1:
        raise DataError(f"sync: clip too short ({video.shape[1]} frames, {n_samples} audio samples); SyncNet needs "
                        f"at least {VIDEO_WINDOW + 1} frames and {(VIDEO_WINDOW + 1) * SAMPLES_PER_FRAME} samples")
    video_feats, audio_feats = extract_features(syncnet, video, mfcc, windows, batch_size)
    return score_offsets(video_feats, audio_feats, vshift)


class SyncMetric(Metric):
    """Mean LSE-C and LSE-D over videos (each video weighs 1, as Wav2Lip's ``calculate_scores_LRS.py`` averages).

    The SyncNet is kept outside the module tree (:class:`~zoo.metrics.backbones.BackboneRef`): it never appears in
    ``state_dict()``/``parameters()`` of a model holding this metric. The metric starts on the SyncNet's device and
    the SyncNet runs on the metric's device (``metric.to(device)`` moves both).

    Args:
        syncnet: a SyncNet (``SyncNet.from_weights()``; tests and the synthetic kit inject their own).
        batch_size: windows per forward pass.

    As input to ``update``: ``videos`` -- one uint8 [T, H, W, 3] RGB video or a sequence of them (25 fps);
    ``audios`` -- the matching 16 kHz audio [N] (int16, or float in [-1, 1]) or a sequence of them.

    As output of ``compute``: ``{"lse_c": float64 scalar, "lse_d": float64 scalar}``.

    Attributes:
        backbone: name of the network that computed the scores.
        variant: the video preprocessing variant (:data:`VIDEO_VARIANT` for the official geometry; see
            :func:`video_variant`).
    """

    is_differentiable = False
    higher_is_better = None      # LSE-C: higher is better; LSE-D: lower is better
    full_state_update = False

    def __init__(self, syncnet: nn.Module, batch_size: int = 20, **kwargs):
        super().__init__(**kwargs)
        self._syncnet = BackboneRef(syncnet)
        self.backbone = getattr(syncnet, "name", type(syncnet).__name__)
        self.variant = video_variant(syncnet)
        self.batch_size = batch_size
        self.add_state("lse_c_sum", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("lse_d_sum", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("videos", torch.tensor(0, dtype=torch.int64), dist_reduce_fx="sum")
        self.to(module_device(syncnet))

    def update(self, videos: Union[ArrayLike, Sequence[ArrayLike]], audios: Union[ArrayLike, Sequence[ArrayLike]]
               ) -> None:
        single = (isinstance(videos, (np.ndarray, torch.Tensor)) and videos.ndim == 4)
        videos, audios = ([videos], [audios]) if single else (list(videos), list(audios))
        if len(videos) != len(audios):
            raise DataError(f"sync: {len(videos)} videos but {len(audios)} audio tracks")
        net = self._syncnet.on(self.device)
        for video, audio in zip(videos, audios):
            score = sync_scores(video, audio, net, batch_size=self.batch_size)
            self.lse_c_sum += score.lse_c
            self.lse_d_sum += score.lse_d
            self.videos += 1

    def compute(self) -> dict[str, torch.Tensor]:
        return {"lse_c": self.lse_c_sum / self.videos, "lse_d": self.lse_d_sum / self.videos}
