"""The metric suite ``zoo test`` runs: every metric, each recording its variant and the backbone behind it.

Per clip (then averaged over clips): M-LMD / F-LMD (landmarks detected on generated and ground-truth frames),
SSIM (both variants), PSNR, CPBD, CSIM (generated frames vs the clip's reference frame), LSE-C (Sync_conf) and
LSE-D, LPIPS when its trunk weights are present. Per dataset: FID (feature statistics summed, so they sync under
DDP). Result keys carry the backbone, e.g. ``FID[inception]`` vs ``FID[synth-id]``.

What a metric could not score is counted per clip (:class:`ClipScores` ``skipped``): frames whose landmark
detection failed (left out of M-LMD / F-LMD), clips without any such frame, and clips too short for one SyncNet
window (their Sync_conf / LSE-D are NaN and left out of the means).

Two backbone sets (:class:`Backbones`): the official networks for real video (FAN, ArcFace iresnet100, the
pytorch-fid Inception, SyncNet; :func:`official_backbones`) and the synthetic-domain evaluator kit for the embedded
corpus (:mod:`zoo.evaluators.kit`), whose identity embedder's pooled features replace Inception's.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
import torch
from torch import nn

from zoo.metrics import functional as F
from zoo.metrics.fid import FrechetDistance
from zoo.metrics.identity import align_faces, csim
from zoo.metrics.sync import VIDEO_WINDOW, num_windows, sync_scores, video_variant
from zoo.model import require_float_frames, to_uint8_hwc

ALL_METRICS = ("lmd", "ssim", "psnr", "cpbd", "csim", "fid", "sync", "lpips")
LEARNED_METRICS = {"lmd", "csim", "fid", "sync", "lpips"}   # the ones that need backbone networks
LUMA = "uint8 luma, ITU-R 601-2 with PIL 'L' rounding"
# Result keys (before their "[backbone]") for which a larger value is better; every other one is an error/distance.
HIGHER_IS_BETTER = frozenset({"PSNR", "SSIM", "CPBD", "CSIM", "Sync_conf"})


def higher_is_better(result_key: str) -> bool:
    """Whether a larger value of result key ``result_key`` (e.g. ``"M-LMD[synth-landmarks]"``) is better."""
    return result_key.split("[", 1)[0] in HIGHER_IS_BETTER


@dataclass
class Backbones:
    """The networks behind the learned metrics, and the names the results record for them.

    ``landmarker``: uint8 [N, H, W, 3] RGB -> float [N, 68, 2] pixels (NaN rows: no face).
    ``embedder``: float [N, 3, 112, 112] aligned faces in [-1, 1] -> [N, 512] identity embeddings.
    ``fid_features``: the FID extractor; input per ``fid_input``: ``"frames"`` (float [N, 3, H, W] in [0, 1]) or
    ``"aligned"`` (the embedder's input). ``syncnet``: ``forward_aud`` / ``forward_lip`` as in :mod:`zoo.metrics.sync`.
    """

    landmarker: Callable
    embedder: nn.Module
    fid_features: nn.Module
    fid_num_features: int
    fid_input: str
    syncnet: nn.Module
    names: dict = field(default_factory=dict)   # {"landmarks": ..., "identity": ..., "fid": ..., "sync": ...}
    lpips: Optional[nn.Module] = None
    notes: dict = field(default_factory=dict)    # metric -> why it was skipped


def luma(frames_uint8: np.ndarray) -> np.ndarray:
    """uint8 [..., H, W, 3] RGB -> uint8 [..., H, W] luma, PIL's ``convert('L')`` integer arithmetic."""
    rgb = frames_uint8.astype(np.uint32)
    return ((rgb[..., 0] * 19595 + rgb[..., 1] * 38470 + rgb[..., 2] * 7471 + 0x8000) >> 16).astype(np.uint8)


# Per-clip counts of what could not be scored (ClipScores.skipped; totals in the results JSON).
SKIPPED_COUNTS = {
    "lmd_frames": "frames left out of M-LMD / F-LMD: landmark detection failed on the generated or ground-truth frame",
    "lmd_clips": "clips left out of M-LMD / F-LMD: no frame with both detections",
    "sync_clips": f"clips left out of Sync_conf / LSE-D: shorter than one SyncNet window ({VIDEO_WINDOW + 1} frames "
                  "and their audio)",
}


@dataclass
class ClipScores:
    """One clip's result: ``metrics`` (result key -> value, NaN where the clip could not be scored) and ``skipped``
    (the :data:`SKIPPED_COUNTS` that apply to the metrics run -> count for this clip)."""

    metrics: dict[str, float]
    skipped: dict[str, int]


def _finite_mean(values) -> float:
    values = torch.as_tensor(values, dtype=torch.float64)
    values = values[torch.isfinite(values)]
    return float(values.mean()) if values.numel() else float("nan")


class MetricSuite:
    """Scores generated clips against ground truth; per-clip values plus dataset-level FID."""

    def __init__(self, backbones: Optional[Backbones], metrics: tuple[str, ...] = ALL_METRICS, fps: float = 25.0):
        unknown = set(metrics) - set(ALL_METRICS)
        if unknown:
            raise ValueError(f"unknown metrics {sorted(unknown)}; valid: {', '.join(ALL_METRICS)}")
        if backbones is None:
            if set(metrics) & LEARNED_METRICS:
                raise ValueError(f"metrics {sorted(set(metrics) & LEARNED_METRICS)} need backbones")
            backbones = Backbones(None, None, None, 0, "frames", None)
        self.backbones = backbones
        self.notes = dict(backbones.notes)
        if "lpips" in metrics and backbones.lpips is None:
            self.notes.setdefault("LPIPS[alex]", "no LPIPS network given")
        if "sync" in metrics and abs(fps - 25.0) > 1e-6:
            self.notes["sync"] = f"SyncNet scores assume 25 fps video; this dataset is {fps:g} fps"
        self.metrics = tuple(m for m in metrics if not (m == "lpips" and backbones.lpips is None)
                             and not (m == "sync" and "sync" in self.notes))
        self.fid = (FrechetDistance(backbones.fid_features, backbones.fid_num_features,
                                    extractor_name=backbones.names.get("fid")) if "fid" in self.metrics else None)
        self.names = self._metric_names()

    def _metric_names(self) -> dict[str, str]:
        n = self.backbones.names
        names = {"psnr": "PSNR", "ssim_wang": "SSIM[wang]", "ssim_skimage": "SSIM[skimage-default]",
                 "cpbd": "CPBD", "m_lmd": f"M-LMD[{n.get('landmarks')}]", "f_lmd": f"F-LMD[{n.get('landmarks')}]",
                 "csim": f"CSIM[{n.get('identity')}]", "sync_conf": f"Sync_conf[{n.get('sync')}]",
                 "lse_d": f"LSE-D[{n.get('sync')}]", "fid": f"FID[{n.get('fid')}]", "lpips": "LPIPS[alex]"}
        return names

    def describe(self) -> dict:
        """How every number is computed: variant and backbone per result key (goes into the results JSON)."""
        n = self.backbones.names
        variants = {
            "PSNR": "per image, data range 1, mean over frames then clips",
            "SSIM[wang]": "11x11 Gaussian sigma 1.5, population covariance, valid region, RGB mean",
            "SSIM[skimage-default]": "7x7 uniform window, sample covariance, per-channel mean",
            "CPBD": f"cpbd 1.0.7 algorithm, vectorised; {LUMA}",
            self.names["m_lmd"]: f"mouth 48-67, per-frame mean-centred, landmarks by {n.get('landmarks')} on both; "
                                 "failed detections skipped and counted",
            self.names["f_lmd"]: f"face 0-67, per-frame mean-centred, landmarks by {n.get('landmarks')} on both; "
                                 "failed detections skipped and counted",
            self.names["csim"]: f"cosine of {n.get('identity')} embeddings, 5-point alignment to 112x112, "
                                "generated frames vs the clip's reference frame",
            self.names["sync_conf"]: "syncnet_python evaluate, LSE-C = median - min; "
                                     + video_variant(self.backbones.syncnet)
                                     + "; clips shorter than one window skipped and counted",
            self.names["lse_d"]: "syncnet_python evaluate, LSE-D = min over +-15 offsets of mean distance; clips "
                                 "shorter than one window skipped and counted",
            self.names["fid"]: f"Frechet distance of {n.get('fid')} features, generated vs ground-truth frames",
            "LPIPS[alex]": "lpips 0.1.4 alex v0.1, inputs in [-1, 1]",
        }
        keys = self.result_keys()
        return {key: {"variant": variants[key], "backbones": dict(n)} for key in keys} | \
            {"skipped": dict(self.notes)}

    def result_keys(self) -> list[str]:
        keys = {"psnr": ["psnr"], "ssim": ["ssim_wang", "ssim_skimage"], "cpbd": ["cpbd"], "lmd": ["m_lmd", "f_lmd"],
                "csim": ["csim"], "sync": ["sync_conf", "lse_d"], "fid": ["fid"], "lpips": ["lpips"]}
        return [self.names[k] for m in self.metrics for k in keys[m]]

    def to(self, device: torch.device | str) -> "MetricSuite":
        """Put the dataset-level metric (FID: its sum states and feature network) on ``device``.

        DDP syncs those states with the process group's backend, and NCCL only moves CUDA tensors: the evaluation
        callback calls this with the LightningModule's device. The per-clip metrics run on their networks' devices.
        """
        if self.fid is not None:
            self.fid.to(device)
        return self

    def score(self, batch: dict, frames: torch.Tensor) -> list[dict[str, float]]:
        """Per-clip scores (result key -> value) of generated ``frames`` (float [B, T, 3, H, W] in [0, 1])."""
        return [clip.metrics for clip in self.score_clips(batch, frames)]

    @torch.no_grad()
    def score_clips(self, batch: dict, frames: torch.Tensor) -> list[ClipScores]:
        """Per-clip scores and skip counts of generated ``frames`` (float [B, T, 3, H, W] in [0, 1]).

        Raises:
            DataError: ``frames`` are not floating point (uint8 frames would be clamped to 0/1, not rescaled).
        """
        require_float_frames(frames, "generated frames")
        target = batch["frames"]
        return [self._score_clip(frames[i].float().cpu(), target[i].cpu(), batch, i) for i in range(frames.shape[0])]

    def _score_clip(self, pred: torch.Tensor, target_u8: torch.Tensor, batch: dict, i: int) -> ClipScores:
        out: dict[str, float] = {}
        skipped: dict[str, int] = {}
        pred = pred.clamp(0, 1)
        target = target_u8.float() / 255.0
        pred_u8 = to_uint8_hwc(pred)
        target_hwc = to_uint8_hwc(target_u8)
        if "psnr" in self.metrics:
            out[self.names["psnr"]] = float(F.psnr(pred, target).mean())      # identical images: F.PSNR_MAX_DB
        if "ssim" in self.metrics:
            out[self.names["ssim_wang"]] = float(F.ssim(pred, target, "wang", 1.0).mean())
            out[self.names["ssim_skimage"]] = float(F.ssim(pred, target, "skimage-default", 1.0).mean())
        if "cpbd" in self.metrics:
            out[self.names["cpbd"]] = float(F.cpbd(luma(pred_u8)).mean())
        pred_lm = target_lm = None
        if "lmd" in self.metrics or "csim" in self.metrics or self._fid_aligned:
            pred_lm = np.asarray(self.backbones.landmarker(pred_u8), dtype=np.float64)
        if "lmd" in self.metrics:
            target_lm = np.asarray(self.backbones.landmarker(target_hwc), dtype=np.float64)
            p, t = torch.from_numpy(pred_lm)[None], torch.from_numpy(target_lm)[None]
            m_lmd, skipped_frames = F.lmd(p, t, "mouth", return_skipped=True)
            out[self.names["m_lmd"]] = float(m_lmd[0])
            out[self.names["f_lmd"]] = float(F.lmd(p, t, "face")[0])      # skips the same frames as the mouth
            skipped["lmd_frames"] = int(skipped_frames[0])
            skipped["lmd_clips"] = int(m_lmd[0].isnan())                   # no frame with both detections
        if "csim" in self.metrics:
            ref = batch["ref_frames"][i, :1].cpu()                       # uint8 [1, 3, H, W]
            ref_hwc = to_uint8_hwc(ref)
            ref_lm = np.asarray(self.backbones.landmarker(ref_hwc), dtype=np.float64)
            sims = csim(pred_u8, ref_hwc, self.backbones.embedder, pred_landmarks=pred_lm, ref_landmarks=ref_lm)
            out[self.names["csim"]] = _finite_mean(sims)
        if "sync" in self.metrics and "audio" in batch:
            audio = batch["audio"][i].float().cpu().numpy()
            too_short = num_windows(len(pred_u8), len(audio)) < 1
            skipped["sync_clips"] = int(too_short)
            if too_short:        # one short clip must not abort the run: NaN, left out of the means, counted
                out[self.names["sync_conf"]] = out[self.names["lse_d"]] = float("nan")
            else:
                score = sync_scores(pred_u8, audio, self.backbones.syncnet)
                out[self.names["sync_conf"]] = float(score.lse_c)
                out[self.names["lse_d"]] = float(score.lse_d)
        if "lpips" in self.metrics:
            out[self.names["lpips"]] = float(F.lpips(pred * 2 - 1, target * 2 - 1, self.backbones.lpips).mean())
        if self.fid is not None:
            self._update_fid(pred, pred_u8, pred_lm, target, target_hwc, target_lm)
        return ClipScores(out, skipped)

    @property
    def _fid_aligned(self) -> bool:
        return self.fid is not None and self.backbones.fid_input == "aligned"

    def _update_fid(self, pred, pred_u8, pred_lm, target, target_hwc, target_lm) -> None:
        if self.backbones.fid_input == "frames":
            self.fid.update(pred, real=False)
            self.fid.update(target, real=True)
            return
        if target_lm is None:
            target_lm = np.asarray(self.backbones.landmarker(target_hwc), dtype=np.float64)
        for images, landmarks, real in ((pred_u8, pred_lm, False), (target_hwc, target_lm, True)):
            ok = np.isfinite(landmarks).all(axis=(1, 2))
            if ok.any():
                aligned = align_faces(images[ok], landmarks[ok])                      # uint8 [n, 112, 112, 3]
                faces = torch.from_numpy(aligned).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
                self.fid.update(faces, real=real)

    def dataset_scores(self) -> dict[str, float]:
        """Dataset-level metrics (FID), synced across DDP ranks by the metric's sum states (a collective: every rank
        calls it). FID is NaN when either side has fewer than 2 samples (no covariance); other errors propagate."""
        if self.fid is None:
            return {}
        if min(self.fid.sample_counts()) < 2:
            return {self.names["fid"]: float("nan")}
        return {self.names["fid"]: float(self.fid.compute())}

    def reset(self) -> None:
        if self.fid is not None:
            self.fid.reset()


def lpips_if_available(weights_dir=None) -> tuple[Optional[nn.Module], dict]:
    """LPIPS-alex from the verified torchvision trunk file, or ``None`` and the reason it is skipped."""
    from zoo import weights
    from zoo.errors import WeightsError
    from zoo.metrics.lpips import build_lpips

    try:
        return build_lpips(weights.resolve("alexnet", weights_dir)), {}
    except WeightsError as err:
        return None, {"LPIPS[alex]": str(err)}


def official_backbones(weights_dir=None) -> Backbones:
    """The published metric networks (real video). A missing or mismatched file raises one WeightsError line."""
    from zoo.metrics.backbones.arcface import ArcFace
    from zoo.metrics.backbones.fan import FANLandmarks
    from zoo.metrics.backbones.inception import FIDInception
    from zoo.metrics.backbones.syncnet import SyncNet

    landmarker = FANLandmarks.from_weights(weights_dir)
    lpips, notes = lpips_if_available(weights_dir)
    return Backbones(
        landmarker=lambda images: landmarker(images).cpu().numpy(), embedder=ArcFace.from_weights(weights_dir),
        fid_features=FIDInception.from_weights(weights_dir), fid_num_features=2048, fid_input="frames",
        syncnet=SyncNet.from_weights(weights_dir), lpips=lpips, notes=notes,
        names={"landmarks": "fan", "identity": "arcface-r100", "fid": "inception", "sync": "syncnet"})
