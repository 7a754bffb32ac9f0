"""The ``syncnet`` evaluator: a SyncNet trained on the synthetic corpus (``zoo fit --model syncnet --data synth``).

The official SyncNet weights neither apply to nor can be downloaded for the synthetic domain, so the evaluator kit
trains its own :class:`~zoo.evaluators.sync_network.SyncNetwork` and scores with the unchanged protocol of
:mod:`zoo.metrics.sync` (same MFCC, windows, +-15 offsets, LSE-D / LSE-C); the network only declares its video
geometry (a fixed mouth box at 48 x 64).

**Training** (Chung & Zisserman's audio-visual matching, in the multi-way form of Chung et al., "Perfect match",
ICASSP 2019). A batch holds B windows of T frames with their MFCC rows. Every 5-frame video window ``v`` and every
20-row MFCC window ``4v..4v+19`` (the protocol's pairs) is embedded, giving B * (T - 4) of each. For each video
window the candidates are *all* audio windows of the batch: the aligned one is the positive; the same clip's audio
shifted by 1..T-5 frames (the hard negatives the offset search has to reject) and every window of the other clips
are negatives. The loss is the softmax cross-entropy over candidates with logits = **minus the Euclidean
distance** of the raw embeddings, in both directions (video -> audio and audio -> video).

Why this loss: the protocol decides by ``argmin`` over offsets of mean Euclidean distances of raw embeddings and
reports ``median - min``; the multi-way loss trains exactly that ranking on exactly that distance, including the
+-1 frame neighbours a pairwise margin loss (positive d -> 0, negative d >= margin) would force apart to an
unreachable margin. No temperature: the embedding scale is free and the network learns it, so distances (LSE-D)
come in the network's own units and LSE-C is their spread over offsets.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, List, Optional, Union

import numpy as np
import torch
import torch.nn.functional as F

from zoo.data.clip_format import ClipDataset, open_dataset
from zoo.evaluators.sync_network import DEFAULT_CROP_BOX, DEFAULT_INPUT_SIZE, SyncNetwork
from zoo.metrics.backbones import module_device
from zoo.metrics.sync import (MFCC_PER_FRAME, MFCC_WINDOW, SAMPLES_PER_FRAME, VIDEO_WINDOW, SyncScore,
                              audio_mfcc, extract_features, num_windows, prepare_video, score_offsets, video_geometry)
from zoo.model import ZooModule
from zoo.registry import register_model

__all__ = ["SyncExpertConfig", "SyncExpert", "mfcc_windows", "matching_loss", "shift_audio", "scores_for_audios",
           "evaluate_quality"]


@dataclass
class SyncExpertConfig:
    """Network shape (see :class:`~zoo.evaluators.sync_network.SyncNetwork`) and optimiser."""

    embedding_dim: int = 128
    input_size: List[int] = field(default_factory=lambda: list(DEFAULT_INPUT_SIZE))      # lip input H, W
    crop_box: List[float] = field(default_factory=lambda: list(DEFAULT_CROP_BOX))        # x0, y0, x1, y1 (fractions)
    lip_channels: List[int] = field(default_factory=lambda: [16, 32, 64, 96])
    audio_channels: List[int] = field(default_factory=lambda: [16, 32, 64])
    width: int = 128
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 50           # linear warm-up, then cosine decay to 0 over the run's steps
    # Training-only augmentation, off in the recipe. Trained on the corpus' 6 identities (kit v2), jitter_px=4,
    # color_jitter=0.2 for 4 epochs lowered the test split's LSE-C separation (2.9 vs 0.5) without improving unseen
    # identities (1.1 vs 0.4, against 1.9 vs 0.5); many speakers did (zoo.evaluators.kit.SPEAKERS).
    jitter_px: int = 0               # random shift of the crop box per clip, +-pixels
    color_jitter: float = 0.0        # per-clip channel gains 1 +- c and brightness +- 128 c

    bounds: ClassVar[dict[str, str]] = {"embedding_dim": "[1, inf)", "width": "[1, inf)", "lr": "(0, inf)",
                                        "weight_decay": "[0, inf)", "warmup_steps": "[0, inf)",
                                        "jitter_px": "[0, inf)", "color_jitter": "[0, 1)"}


def mfcc_windows(mfcc: torch.Tensor) -> torch.Tensor:
    """The protocol's audio windows of batch MFCC rows.

    Args:
        mfcc: float [B, 4T, 13] (``batch["mfcc"]``: 4 rows per frame, row 4t starts with frame t).

    Returns:
        float [B, T - 4, 1, 13, 20]; window v = rows 4v .. 4v + 19, the audio of video frames v .. v + 4.
    """
    b, rows, _ = mfcc.shape
    windows = rows // MFCC_PER_FRAME - VIDEO_WINDOW + 1
    if windows < 1:
        raise ValueError(f"mfcc_windows: need at least {VIDEO_WINDOW} frames of MFCC rows, got {rows} rows")
    unfolded = mfcc.unfold(1, MFCC_WINDOW, MFCC_PER_FRAME)            # [B, (4T - 20) / 4 + 1, 13, 20]
    return unfolded[:, :windows].unsqueeze(2)


def pairwise_distances(x: torch.Tensor, y: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Euclidean distances float [N, M] of rows of x [N, D] and y [M, D]; ``eps`` keeps the gradient finite at 0
    (the protocol's ``F.pairwise_distance`` adds 1e-6 to the difference for the same reason)."""
    squared = x.pow(2).sum(1, keepdim=True) + y.pow(2).sum(1) - 2.0 * x @ y.T
    return torch.sqrt(squared.clamp_min(0.0) + eps)


def matching_loss(video: torch.Tensor, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Multi-way matching loss and same-clip offset accuracy.

    Args:
        video, audio: float [B, W, D] embeddings of the W aligned windows of B clips.

    Returns:
        loss (scalar, symmetric cross-entropy over all B * W candidates with logits = -distance) and accuracy
        (fraction of video windows whose nearest audio window among the same clip's W is the aligned one).
    """
    b, w, d = video.shape
    dist = pairwise_distances(video.reshape(b * w, d), audio.reshape(b * w, d))          # [BW, BW]
    target = torch.arange(b * w, device=video.device)
    loss = 0.5 * (F.cross_entropy(-dist, target) + F.cross_entropy(-dist.T, target))
    with torch.no_grad():
        same_clip = dist.reshape(b, w, b, w).diagonal(dim1=0, dim2=2).permute(2, 0, 1)  # [B, W, W]
        accuracy = (same_clip.argmin(-1) == torch.arange(w, device=video.device)).float().mean()
    return loss, accuracy


class SyncExpert(ZooModule):
    """Trains :class:`SyncNetwork` on batches with ``frames`` uint8 [B, T, 3, H, W] and ``mfcc`` float [B, 4T, 13].

    The trained network is ``self.network``; it plugs into :func:`zoo.metrics.sync.sync_scores` and
    :class:`~zoo.metrics.sync.SyncMetric` as they are (``input_size`` / ``crop_box`` set the video geometry).
    """

    data_fields = ("frames", "mfcc")
    monitor = "val/loss"

    def __init__(self, cfg: SyncExpertConfig):
        super().__init__()
        self.save_hyperparameters(vars(cfg), logger=False)
        self.cfg = cfg
        self.network = SyncNetwork(cfg.embedding_dim, cfg.input_size, cfg.crop_box, cfg.lip_channels,
                                   cfg.audio_channels, cfg.width)

    def video_input(self, frames: torch.Tensor, augment: bool = False) -> torch.Tensor:
        """Batch frames uint8 [B, T, 3, H, W] RGB -> float [B, 3, T, h, w] BGR 0..255 of the mouth box, through the
        protocol's own :func:`~zoo.metrics.sync.prepare_video` so that training and scoring see identical pixels.

        ``augment`` (training): per clip, the box moves by up to ``jitter_px`` pixels and the colours get random
        gains / brightness (``color_jitter``), the same over the clip's frames -- appearance and framing vary, the
        mouth motion that carries the sync signal does not. Meant for faces unlike the training identities."""
        net, cfg = self.network, self.cfg
        clips = []
        for clip in frames.cpu():
            box = net.crop_box
            if augment and cfg.jitter_px > 0:
                height, width = clip.shape[-2:]
                dx, dy = (torch.randint(-cfg.jitter_px, cfg.jitter_px + 1, (2,)) / torch.tensor([width, height])
                          ).tolist()
                moved = (box[0] + dx, box[1] + dy, box[2] + dx, box[3] + dy)
                box = moved if min(moved) >= 0.0 and max(moved) <= 1.0 else box
            clips.append(prepare_video(clip.permute(0, 2, 3, 1), net.input_size, box))
        video = torch.stack(clips).to(self.device, torch.float32)
        if augment and cfg.color_jitter > 0:
            b = video.shape[0]
            gains = 1.0 + cfg.color_jitter * (2 * torch.rand(b, 3, 1, 1, 1, device=self.device) - 1)
            shift = 128.0 * cfg.color_jitter * (2 * torch.rand(b, 1, 1, 1, 1, device=self.device) - 1)
            video = (video * gains + shift).clamp_(0.0, 255.0)
        return video

    def embed(self, batch: dict, augment: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Video and audio embeddings float [B, T - 4, D] of every aligned window of the batch."""
        video = self.network.lip_windows(self.video_input(batch["frames"], augment))
        windows = mfcc_windows(batch["mfcc"])                                   # [B, W, 1, 13, 20]
        if windows.shape[1] != video.shape[1]:
            raise ValueError(f"syncnet: {video.shape[1]} video windows but {windows.shape[1]} MFCC windows")
        audio = self.network.forward_aud(windows.flatten(0, 1)).unflatten(0, windows.shape[:2])
        return video, audio

    def step(self, batch: dict, stage: str) -> torch.Tensor:
        loss, accuracy = matching_loss(*self.embed(batch, augment=stage == "train"))
        b = batch["frames"].shape[0]
        self.log(f"{stage}/loss", loss, prog_bar=True, sync_dist=stage != "train", batch_size=b)
        self.log(f"{stage}/offset_acc", accuracy, sync_dist=stage != "train", batch_size=b)
        return loss

    def configure_optimizers(self):
        cfg = self.cfg
        optimizer = torch.optim.AdamW(self.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        total = self.scheduled_batches()
        warmup = min(cfg.warmup_steps, max(1, total // 4))

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


@register_model("syncnet", config=SyncExpertConfig,
                help="synthetic-domain SyncNet for LSE-C/LSE-D (mouth box at 48x64, multi-way matching on distance)")
def syncnet(cfg: SyncExpertConfig) -> SyncExpert:
    return SyncExpert(cfg)


# ---------------------------------------------------------------------------------------------- quality check


def shift_audio(audio: np.ndarray, frames: int) -> np.ndarray:
    """Audio delayed by ``frames`` video frames (640 samples each; negative: advanced), zero-filled and cropped to
    the same length. Delaying by k puts the sound of video frame i at audio frame i + k, so
    :func:`~zoo.metrics.sync.sync_scores` should report ``offset == -k``."""
    shift = SAMPLES_PER_FRAME * frames
    out = np.zeros_like(audio)
    if shift >= 0:
        out[shift:] = audio[:len(audio) - shift]
    else:
        out[:shift] = audio[-shift:]
    return out


@torch.no_grad()
def scores_for_audios(net, frames: np.ndarray, audios: list, batch_size: int = 20) -> list[SyncScore]:
    """``[sync_scores(frames, audio, net) for audio in audios]`` with the video embedded once.

    The same steps as :func:`~zoo.metrics.sync.sync_scores` (same preprocessing, windows, batches and scoring, so
    the same numbers), but the lip stream -- nearly all of the cost -- runs once per clip instead of once per audio
    track. All ``audios`` must have the same number of samples.

    Args:
        net: the SyncNet (eval mode).
        frames: uint8 [T, H, W, 3] RGB.
        audios: float [N] tracks in [-1, 1] (or int16), all of length N.
    """
    if len({len(a) for a in audios}) != 1:
        raise ValueError("scores_for_audios: all audio tracks must have the same length")
    device = module_device(net)
    video = prepare_video(frames, *video_geometry(net))
    mfccs = [audio_mfcc(a) for a in audios]
    windows = num_windows(video.shape[1], len(audios[0]))
    video_feats, first = extract_features(net, video, mfccs[0], windows, batch_size)
    scores = [score_offsets(video_feats, first)]
    for mfcc in mfccs[1:]:
        # extract_features' audio windows without its video pass: MFCC rows 4v .. 4v+19, batches of batch_size
        cct = torch.from_numpy(np.ascontiguousarray(mfcc)).float()
        feats = [net.forward_aud(torch.stack([cct[:, MFCC_PER_FRAME * v:MFCC_PER_FRAME * v + MFCC_WINDOW]
                                              for v in range(start, min(windows, start + batch_size))]
                                             ).unsqueeze(1).to(device)).float().cpu()
                 for start in range(0, windows, batch_size)]
        scores.append(score_offsets(video_feats, torch.cat(feats)))
    return scores


def _split_quality(net, dataset: ClipDataset, split: str, max_shift: int) -> dict:
    """:func:`evaluate_quality`'s figures on one split (see there)."""
    clip_ids = dataset.clip_ids(split)
    if len(clip_ids) < 2:
        raise ValueError(f"evaluate_quality: split '{split}' needs at least 2 clips (for mismatched audio)")
    shifts = list(range(-max_shift, max_shift + 1))
    hits = {k: [] for k in shifts}
    gt, mismatched = [], []
    audios = {c: dataset.clip(c).read_audio(0, dataset.clip(c).num_samples) for c in clip_ids}
    for i, clip_id in enumerate(clip_ids):
        clip = dataset.clip(clip_id)
        audio = audios[clip_id]
        other = audios[clip_ids[(i + 1) % len(clip_ids)]][:len(audio)]
        tracks = [audio, np.pad(other, (0, len(audio) - len(other)))] + [shift_audio(audio, k) for k in shifts]
        own, wrong, *shifted = scores_for_audios(net, clip.read_frames(0, clip.num_frames), tracks)
        gt.append(own)
        mismatched.append(wrong)
        for k, score in zip(shifts, shifted):
            hits[k].append(score.offset == -k)
    gt_c, mis_c = np.array([s.lse_c for s in gt]), np.array([s.lse_c for s in mismatched])
    return {
        "offset_accuracy": float(np.mean([h for k in shifts for h in hits[k]])),
        "offset_accuracy_by_shift": {k: float(np.mean(hits[k])) for k in shifts},
        "gt_lse_c": float(gt_c.mean()), "mismatched_lse_c": float(mis_c.mean()),
        "gt_lse_d": float(np.mean([s.lse_d for s in gt])),
        "mismatched_lse_d": float(np.mean([s.lse_d for s in mismatched])),
        "gt_beats_mismatched": float(np.mean(gt_c > mis_c)),
        "num_clips": len(clip_ids),
    }


@torch.no_grad()
def evaluate_quality(model, dataset: Union[ClipDataset, str, Path], split: str = "test", max_shift: int = 5,
                     unseen_split: Optional[str] = "test_unseen") -> dict:
    """The evaluator's quality bars on the ground-truth clips of ``split``.

    (a) offset recovery: every clip's audio delayed by k = -max_shift..max_shift frames (:func:`shift_audio`);
    correct when the protocol (``sync_scores``, via :func:`scores_for_audios`) reports ``offset == -k``.
    (b) real vs mismatched audio: each clip's Sync_conf (LSE-C) with its own audio against that with the audio of
    the next clip of the split (cropped / zero-padded to the clip's length).

    Args:
        model: a :class:`SyncExpert` or its :class:`SyncNetwork` (put in eval mode here, restored after).
        dataset: an opened :class:`~zoo.data.clip_format.ClipDataset` or a prepared dataset directory.
        unseen_split: also scored (keys prefixed ``unseen_``) when the dataset has it with 2 clips or more and it
            is not ``split``.

    Returns:
        ``offset_accuracy`` (all shifts), ``offset_accuracy_by_shift`` {k: fraction}, ``gt_lse_c`` /
        ``mismatched_lse_c`` / ``gt_lse_d`` / ``mismatched_lse_d`` (means over clips), ``gt_beats_mismatched``
        (fraction of clips whose own audio scores the higher LSE-C), ``num_clips``, the ``unseen_*``
        counterparts when scored, and ``seconds``.
    """
    started = time.time()
    net = getattr(model, "network", model)
    was_training = net.training
    net.eval()
    if not isinstance(dataset, ClipDataset):
        dataset = open_dataset(dataset)
    try:
        out = _split_quality(net, dataset, split, max_shift)
        if (unseen_split and unseen_split != split and unseen_split in dataset.splits
                and len(dataset.clip_ids(unseen_split)) >= 2):
            unseen = _split_quality(net, dataset, unseen_split, max_shift)
            out.update({f"unseen_{k}": v for k, v in unseen.items()})
    finally:
        net.train(was_training)
    out["seconds"] = round(time.time() - started, 1)
    return out
