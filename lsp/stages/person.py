"""What LSP's person-specific stages (mouth, head pose, renderer) share: the target identity and its profile.

Each stage trains on one identity's clips (``data.identities`` is set from ``model.identity`` by
:meth:`PersonStage.configure_data`) and fits that identity's :class:`~lsp.person.PersonProfile` from the training
split when a fit starts, so every stage checkpoint carries the statistics it was trained with.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional

import numpy as np
import torch

from lsp.person import PersonProfile, person_clip_ids
from lsp.networks.audio2mouth import pair_frames
from lsp.speech import FrozenAPC, seconds_to_frames
from zoo.data.features import FeatureCache
from zoo.model import ZooModule


class PersonStage(ZooModule):
    """A stage trained on one person. Subclasses set ``self.cfg`` (with ``identity``) before calling setup."""

    def __init__(self):
        super().__init__()
        self.profile = PersonProfile()

    @classmethod
    def configure_data(cls, data_cfg, model_cfg) -> None:
        data_cfg.identities = [int(model_cfg.identity)]

    def setup(self, stage: Optional[str] = None) -> None:
        if stage == "fit" and not self.profile.fitted:
            datamodule = self.trainer.datamodule
            dataset = datamodule.dataset
            clip_ids = person_clip_ids(dataset, datamodule.cfg.train_split, self.cfg.identity)
            self.profile.fit(dataset, clip_ids, self.cfg.identity)


@dataclass
class AudioStageConfig:
    """What the audio-driven stages (mouth, head pose) share: the person, the frozen APC and LSP's optimiser."""

    identity: int = 0                  # the target person (corpus identity)
    apc_ckpt: Optional[str] = None     # checkpoint of the trained lsp.apc (set by `zoo fit --model lsp`)
    apc_hidden_size: int = 512         # the APC's sizes (set from model.apc by `zoo fit --model lsp`)
    apc_num_layers: int = 3
    lr: float = 1e-3                   # LSP: 1e-4 for 500 epochs; the short default budget needs a larger step
    betas: tuple[float, float] = (0.9, 0.99)
    lr_step_fraction: float = 0.5      # one step decay halfway (LSP: epoch 250 of 500), gamma 0.2
    lr_gamma: float = 0.2
    look_ahead_seconds: float = 0.0    # how far ahead of a frame the audio is heard (each stage sets LSP's)

    bounds: ClassVar[dict[str, str]] = {"apc_hidden_size": "[1, inf)", "apc_num_layers": "[1, inf)", "lr": "(0, inf)",
                                        "lr_step_fraction": "(0, 1]", "lr_gamma": "(0, 1]",
                                        "look_ahead_seconds": "[0, inf)"}


class AudioDrivenStage(PersonStage):
    """A person stage driven by the frozen APC features of ``lsp.apc`` (``model.apc_ckpt``)."""

    def __init__(self, apc_hidden_size: int = 512, apc_num_layers: int = 3):
        super().__init__()
        self.speech = FrozenAPC(hidden_size=apc_hidden_size, num_layers=apc_num_layers)
        self._clip_features: dict[str, torch.Tensor] = {}
        self._mel: Optional[FeatureCache] = None

    def setup(self, stage: Optional[str] = None) -> None:
        datamodule = self.trainer.datamodule
        # a look-ahead as long as a window leaves the window no frame to learn from
        self.require_windows_longer_than(self.look_ahead_frames(datamodule.fps),
                                         f"model.look_ahead_seconds={self.cfg.look_ahead_seconds}")
        super().setup(stage)
        if stage == "fit":   # a resumed fit then restores the same weights from its own checkpoint
            self.speech.load_stage_checkpoint(self.cfg.apc_ckpt, "model.apc_ckpt")
        self._mel = datamodule.feature_cache("mel")

    def look_ahead_frames(self, fps: Optional[float] = None) -> int:
        """``model.look_ahead_seconds`` in frames at ``fps`` (default: the person's)."""
        return seconds_to_frames(self.cfg.look_ahead_seconds, float(self.profile.fps if fps is None else fps))

    def audio_features(self, mel: torch.Tensor, batch: Optional[dict] = None) -> torch.Tensor:
        """Per-frame APC features [B, T, 2D] of mel [B, 2T, 80].

        With ``batch`` (its ``clip_id`` and ``start``), the window is cut from its whole clip's features: inference
        runs the APC over its whole audio from the start, so a window encoded alone would start from a cold GRU
        state mid-speech, which inference meets only at the start of its audio (the first ~10 frames differ).
        Each clip is encoded once: the APC is frozen and a fit revisits the same clips every epoch.
        """
        if batch is None:
            return pair_frames(self.speech(mel)[0])
        frames = mel.shape[1] // 2
        return torch.stack([self.clip_features(clip_id)[int(start):int(start) + frames]
                            for clip_id, start in zip(batch["clip_id"], batch["start"])])

    def clip_features(self, clip_id: str) -> torch.Tensor:
        """APC features [T, 2D] of a whole clip of the datamodule's dataset (memoised)."""
        features = self._clip_features.get(clip_id)
        if features is None:
            mel = torch.from_numpy(np.array(self._mel.get(clip_id)))[None].to(self.device)
            features = self._clip_features[clip_id] = pair_frames(self.speech(mel)[0])[0]
        return features

    def configure_optimizers(self):
        """LSP's Adam with one step decay after ``lr_step_fraction`` of the run (500 epochs, at 250, gamma 0.2)."""
        c = self.cfg
        optimizer = torch.optim.Adam([p for p in self.parameters() if p.requires_grad], lr=c.lr, betas=tuple(c.betas))
        step = max(1, int(self.scheduled_batches() * c.lr_step_fraction))
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[step], gamma=c.lr_gamma)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def sketch_video(*sketches: torch.Tensor) -> torch.Tensor:
    """Edge maps [B, T, 1, H, W] in [-1, 1], side by side as RGB video frames float [B, T, 3, H, n W] in [0, 1]."""
    return torch.cat(sketches, dim=-1).add(1).div(2).expand(-1, -1, 3, -1, -1)
