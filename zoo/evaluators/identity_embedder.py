"""The ``identity_embedder`` evaluator: identity embeddings for CSIM on the synthetic corpus, whose pooled features
double as the Fréchet-distance features on this domain (ArcFace and the FID Inception do not apply to it).

**Input** is exactly what CSIM feeds an embedder (:mod:`zoo.metrics.identity`): faces aligned to 112x112 by
:func:`~zoo.metrics.identity.align_faces` (5 points from the 68 landmarks, similarity transform onto the arcface
template), RGB in [-1, 1], float [N, 3, 112, 112]. Training aligns with the ground-truth ``landmarks2d``, jittered
so that the small errors of a landmark detector at evaluation time do not matter.

**Outputs**: :meth:`IdentityEmbedder.forward` -> [N, 512] raw embeddings (CSIM: cosine of raw outputs);
:meth:`IdentityEmbedder.features` -> [N, D] globally pooled penultimate features (D = ``widths[-1]``), the FD
features. :attr:`~IdentityEmbedder.embedder` and :attr:`~IdentityEmbedder.feature_extractor` are the two as plain
``nn.Module`` s for :func:`~zoo.metrics.identity.embed_faces` and :class:`~zoo.metrics.fid.FrechetDistance`.

**Training**: CosFace (Wang et al., CVPR 2018: ``s * (cos(theta_y) - m)`` for the true class) over the identities
of the train split, with random horizontal flips and photometric damage (blur, noise, mild brightness/contrast --
no hue changes: skin colour is part of an identity).

**Quality bar** (:func:`evaluate_quality`): face verification on frames of *different* clips -- same identity or
not, decided by cosine >= a threshold picked on the val split (maximising balanced accuracy there) -- scored as
balanced accuracy (the mean of the same- and different-identity pair accuracies, i.e. accuracy on a balanced pair
set) over all cross-clip pairs of ``frames_per_clip`` frames per clip. Bar: >= 0.95 on the test split (held-out
clips of the seen identities); the test_unseen split (identities never trained on) is reported alongside.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, List, Optional

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import rankdata
from torch import nn

from zoo.errors import ConfigError, DataError
from zoo.evaluators.common import (DataSource, degrade, iter_split_frames, one_cycle_adamw, resolve_dataset,
                                   to_float_images)
from zoo.evaluators.networks import IdentityNet
from zoo.metrics.identity import align_faces, embed_faces
from zoo.model import ZooModule
from zoo.registry import register_model

__all__ = ["IdentityEmbedderConfig", "IdentityEmbedder", "CosFaceHead", "jitter_landmarks", "verification_pairs",
           "best_threshold", "balanced_accuracy", "evaluate_quality", "VERIFICATION_BAR"]

VERIFICATION_BAR = 0.95


@dataclass
class IdentityEmbedderConfig:
    """Network size, CosFace head, optimiser and training augmentation of the identity embedder."""

    num_identities: int = 6              # CosFace classes; every training identity label must be < this
    embedding_dim: int = 512
    widths: List[int] = field(default_factory=lambda: [16, 32, 64, 128])    # stem + 3 residual stages
    margin: float = 0.35                 # CosFace additive cosine margin m
    scale: float = 30.0                  # CosFace logit scale s
    lr: float = 2e-3
    weight_decay: float = 5e-4
    warmup_fraction: float = 0.15        # one-cycle schedule: warm-up share of the run's steps
    # augmentation (training only)
    align_jitter: float = 0.03           # landmark perturbation before alignment, in inter-ocular distances
    flip: bool = True
    photometric: float = 0.1             # brightness / contrast jitter, uniform +-
    blur_prob: float = 0.3               # share of faces blurred, sigma ~ U(0, blur_sigma) pixels of the 112 face
    blur_sigma: float = 2.0
    noise_std: float = 0.02              # additive Gaussian noise on [0, 1] faces

    bounds: ClassVar[dict[str, str]] = {
        "num_identities": "[2, inf)", "embedding_dim": "[1, inf)", "margin": "[0, 2)", "scale": "(0, inf)",
        "lr": "(0, inf)", "weight_decay": "[0, inf)", "warmup_fraction": "(0, 1)", "align_jitter": "[0, inf)",
        "photometric": "[0, 1)", "blur_prob": "[0, 1]", "blur_sigma": "[0, inf)", "noise_std": "[0, inf)"}


class CosFaceHead(nn.Module):
    """Class centres on the unit sphere; logits ``s * (cos(theta_j) - m [j = y])``.

    Input float [N, D] embeddings (any norm) and int64 [N] labels (None at inference: no margin); output [N, C].
    """

    def __init__(self, embedding_dim: int, num_classes: int, scale: float, margin: float):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(num_classes, embedding_dim) * 0.01)
        self.scale, self.margin = scale, margin

    def forward(self, embeddings: torch.Tensor, labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        cos = F.normalize(embeddings, dim=-1) @ F.normalize(self.weight, dim=-1).T
        if labels is not None:
            cos = cos - self.margin * F.one_hot(labels, cos.shape[-1]).to(cos.dtype)
        return self.scale * cos


def jitter_landmarks(landmarks: torch.Tensor, amount: float) -> torch.Tensor:
    """Perturb 68-point sets [N, 68, 2] like detector errors: a random shift, scale and rotation of each whole set
    (std ``amount`` inter-ocular distances / relative / radians) plus independent per-point noise (std amount/2)."""
    if amount <= 0:
        return landmarks
    n = landmarks.shape[0]
    iod = (landmarks[:, 36] - landmarks[:, 45]).norm(dim=-1)[:, None, None]                  # [N, 1, 1]
    centre = landmarks.mean(1, keepdim=True)
    angle = torch.randn(n) * amount
    scale = 1 + torch.randn(n) * amount
    rot = torch.stack([torch.stack([torch.cos(angle), -torch.sin(angle)], -1),
                       torch.stack([torch.sin(angle), torch.cos(angle)], -1)], 1) * scale[:, None, None]
    moved = (landmarks - centre) @ rot.transpose(1, 2) + centre
    return moved + iod * (torch.randn(n, 1, 2) * amount + torch.randn_like(landmarks) * amount / 2)


class IdentityEmbedder(ZooModule):
    """Trains :class:`~zoo.evaluators.networks.IdentityNet` with a CosFace head on batches with ``frames`` uint8
    [B, T, 3, H, W], ``landmarks2d`` float [B, T, 68, 2] and ``identity`` int64 [B] (every frame is a sample)."""

    data_fields = ("frames", "landmarks2d")
    monitor = "val/loss"

    def __init__(self, cfg: IdentityEmbedderConfig):
        super().__init__()
        self.save_hyperparameters(vars(cfg), logger=False)
        self.cfg = cfg
        self.network = IdentityNet(cfg.widths, cfg.embedding_dim)
        self.head = CosFaceHead(cfg.embedding_dim, cfg.num_identities, cfg.scale, cfg.margin)

    # ------------------------------------------------------------------------------------------ inference

    @property
    def embedder(self) -> nn.Module:
        """The embedding network alone (float [N, 3, 112, 112] in [-1, 1] -> [N, embedding_dim]), for CSIM."""
        return self.network

    @property
    def feature_extractor(self) -> nn.Module:
        """The pooled trunk alone (same input -> [N, num_features]), for the Fréchet distance."""
        return self.network.trunk

    @property
    def num_features(self) -> int:
        return self.network.trunk.num_features

    def forward(self, aligned_faces: torch.Tensor) -> torch.Tensor:
        """float [N, 3, 112, 112] aligned faces in [-1, 1] -> float [N, embedding_dim] raw embeddings."""
        return self.network(aligned_faces)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """float [N, 3, 112, 112] aligned faces in [-1, 1] -> float [N, num_features] pooled features."""
        return self.network.trunk(images)

    # ------------------------------------------------------------------------------------------ training

    def _aligned(self, frames: torch.Tensor, landmarks: torch.Tensor, jitter: float) -> torch.Tensor:
        """uint8 [N, 3, H, W] frames + [N, 68, 2] landmarks -> float [N, 3, 112, 112] in [0, 1] on the device."""
        landmarks = jitter_landmarks(landmarks.detach().float().cpu(), jitter)
        faces = align_faces(frames.detach().cpu().permute(0, 2, 3, 1).numpy(), landmarks.numpy())
        return to_float_images(faces).to(self.device)

    def _augment(self, x: torch.Tensor) -> torch.Tensor:
        cfg, n = self.cfg, x.shape[0]
        if cfg.flip:
            flip = torch.rand(n, device=x.device) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        return degrade(x, photometric=cfg.photometric, blur_prob=cfg.blur_prob, blur_sigma=cfg.blur_sigma,
                       noise_std=cfg.noise_std)

    def step(self, batch: dict, stage: str) -> torch.Tensor:
        frames, landmarks = batch["frames"], batch["landmarks2d"]
        if "identity" not in batch:
            raise DataError("identity_embedder: the batches carry no 'identity' (every clip needs meta.identity)")
        t = frames.shape[1]
        labels = batch["identity"].repeat_interleave(t).to(self.device)                # one label per frame
        if int(labels.max()) >= self.cfg.num_identities or int(labels.min()) < 0:
            raise ConfigError(f"identity_embedder: identity label {int(labels.max())} is outside "
                              f"0..{self.cfg.num_identities - 1}; set model.num_identities to the number of "
                              f"identities (largest training identity + 1)")
        train = stage == "train"
        x = self._aligned(frames.flatten(0, 1), landmarks.flatten(0, 1), self.cfg.align_jitter if train else 0.0)
        if train:
            x = self._augment(x)
        embeddings = self.network(x * 2 - 1)
        loss = F.cross_entropy(self.head(embeddings, labels), labels)
        accuracy = (self.head(embeddings).argmax(-1) == labels).float().mean()      # nearest centre, no margin
        n = x.shape[0]
        self.log(f"{stage}/loss", loss, prog_bar=train, batch_size=n, sync_dist=not train)
        self.log(f"{stage}/acc", accuracy, batch_size=n, sync_dist=not train)
        return loss

    def configure_optimizers(self):
        return one_cycle_adamw(self, self.cfg.lr, self.cfg.weight_decay, self.cfg.warmup_fraction)


@register_model("identity_embedder", config=IdentityEmbedderConfig,
                help="evaluator kit: identity embedder (CSIM) and FD features for the synthetic corpus (CosFace)")
def identity_embedder(cfg: IdentityEmbedderConfig) -> IdentityEmbedder:
    return IdentityEmbedder(cfg)


# ---------------------------------------------------------------------------------------------- verification


def verification_pairs(embeddings: torch.Tensor, identity: torch.Tensor, clip: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine scores and same-identity flags of every pair of frames from different clips.

    Args:
        embeddings: float [N, D]; identity, clip: int64 [N].

    Returns:
        float64 [P] cosines and bool [P] same-identity flags, P = number of pairs i < j with clip_i != clip_j.
    """
    e = F.normalize(embeddings.double(), dim=-1)
    i, j = torch.triu_indices(len(e), len(e), offset=1)
    keep = clip[i] != clip[j]
    i, j = i[keep], j[keep]
    return (e[i] * e[j]).sum(-1), identity[i] == identity[j]


def balanced_accuracy(scores: torch.Tensor, same: torch.Tensor, threshold: float) -> float:
    """Mean of the accuracies on same-identity pairs (score >= threshold) and different-identity pairs (below);
    NaN when either kind of pair is missing."""
    if not bool(same.any()) or bool(same.all()) or threshold != threshold:     # no pairs of a kind / NaN threshold
        return float("nan")
    accept = scores >= threshold
    return 0.5 * (float(accept[same].double().mean()) + float((~accept[~same]).double().mean()))


def best_threshold(scores: torch.Tensor, same: torch.Tensor) -> tuple[float, float]:
    """The cosine threshold with the highest balanced accuracy on these pairs (midway between neighbouring scores)
    and that accuracy; both NaN without same- or without different-identity pairs (e.g. one clip per identity)."""
    if not bool(same.any()) or bool(same.all()):
        return float("nan"), float("nan")
    order = torch.argsort(scores)
    s, pos = scores[order], same[order].double()
    # Threshold just above sorted score k: pairs 0..k are rejected, k+1.. accepted (k = -1: accept everything).
    rejected_pos = torch.cat([pos.new_zeros(1), pos.cumsum(0)])
    rejected_neg = torch.cat([pos.new_zeros(1), (1 - pos).cumsum(0)])
    acc = 0.5 * ((pos.sum() - rejected_pos) / pos.sum() + rejected_neg / (1 - pos).sum())
    # a threshold cannot split equal scores: only cut between distinct neighbours (or outside every score)
    between_distinct = torch.cat([torch.tensor([True]), s[1:] > s[:-1], torch.tensor([True])])
    k = int(acc.masked_fill(~between_distinct, -1.0).argmax())
    edges = torch.cat([s[:1] - 1e-6, s, s[-1:] + 1e-6])
    return float(0.5 * (edges[k] + edges[k + 1])), float(acc[k])


def _auc(scores: torch.Tensor, same: torch.Tensor) -> float:
    """ROC AUC = P(score of a same-identity pair > score of a different-identity pair) (Mann-Whitney)."""
    if not bool(same.any()) or bool(same.all()):
        return float("nan")
    ranks = torch.from_numpy(rankdata(scores.double().numpy(), method="average"))   # ties share their mean rank
    n_pos, n_neg = int(same.sum()), int((~same).sum())
    return float((ranks[same].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


@torch.no_grad()
def _embed_split(model: IdentityEmbedder, dataset, split: str, frames_per_clip: int,
                 landmarker) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Embeddings [N, D], identities [N] and clip indices [N] of ``frames_per_clip`` frames per clip of a split."""
    embeddings, identities, clips = [], [], []
    for k, (clip, frames, landmarks) in enumerate(iter_split_frames(dataset, split, frames_per_clip=frames_per_clip,
                                                                    landmarks=landmarker is None)):
        if "identity" not in clip.meta:
            raise DataError(f"clip '{clip.clip_id}' has no meta.identity (needed for verification pairs)")
        if landmarker is not None:
            landmarks = np.asarray(landmarker(frames), dtype=np.float64)
        embeddings.append(embed_faces(align_faces(frames, landmarks), model.embedder))
        identities.append(torch.full((len(frames),), int(clip.meta["identity"])))
        clips.append(torch.full((len(frames),), k))
    if not embeddings:
        raise DataError(f"split '{split}' of dataset '{dataset.name}' has no clips")
    return torch.cat(embeddings), torch.cat(identities), torch.cat(clips)


def _verify(model, dataset, split: str, threshold: float, frames_per_clip: int, landmarker) -> dict:
    scores, same = verification_pairs(*_embed_split(model, dataset, split, frames_per_clip, landmarker))
    return {"verification_accuracy": balanced_accuracy(scores, same, threshold), "auc": _auc(scores, same),
            "positive_cosine": float(scores[same].mean()) if same.any() else float("nan"),
            "negative_cosine": float(scores[~same].mean()) if (~same).any() else float("nan"),
            "pairs_positive": int(same.sum()), "pairs_negative": int((~same).sum())}


def evaluate_quality(model: IdentityEmbedder, data: DataSource, split: str = "test", threshold_split: str = "val",
                     frames_per_clip: int = 8, unseen_split: Optional[str] = "test_unseen",
                     landmarker=None) -> dict:
    """Face verification accuracy of the embedder on ``split`` with a threshold picked on ``threshold_split``.

    Args:
        model: a trained :class:`IdentityEmbedder` (evaluated in eval mode; its mode is restored).
        data: a ``ClipDataset``, a ``TalkingHeadDataModule`` or a dataset directory (clips need meta.identity).
        split: the scored split (the bar is defined on ``"test"``).
        threshold_split: the split whose cross-clip pairs pick the cosine threshold.
        frames_per_clip: evenly spaced frames embedded per clip.
        unseen_split: also scored (keys prefixed ``unseen_``) when the dataset has it and it is not ``split``.
        landmarker: optional detector (uint8 [N, H, W, 3] -> [N, 68, 2]) aligning the faces instead of the
            ground-truth landmarks, e.g. the kit's ``landmark_detector`` (the full synthetic CSIM pipeline).

    Returns:
        ``verification_accuracy`` (the bar metric), ``auc``, mean ``positive_cosine`` / ``negative_cosine``,
        ``pairs_positive`` / ``pairs_negative``, ``threshold`` and ``threshold_accuracy`` (on ``threshold_split``),
        ``bar`` (0.95), ``passed``, and the ``unseen_*`` counterparts when scored.
    """
    dataset = resolve_dataset(data)
    was_training = model.training
    model.eval()
    try:
        scores, same = verification_pairs(*_embed_split(model, dataset, threshold_split, frames_per_clip, landmarker))
        threshold, threshold_accuracy = best_threshold(scores, same)
        out = _verify(model, dataset, split, threshold, frames_per_clip, landmarker)
        out.update(threshold=threshold, threshold_accuracy=threshold_accuracy, bar=VERIFICATION_BAR,
                   passed=bool(out["verification_accuracy"] >= VERIFICATION_BAR))
        if unseen_split and unseen_split != split and unseen_split in dataset.splits:
            unseen = _verify(model, dataset, unseen_split, threshold, frames_per_clip, landmarker)
            out.update({f"unseen_{k}": v for k, v in unseen.items()})
    finally:
        model.train(was_training)
    return out
