"""LSP stage 3: audio -> mouth. APC features to the 25 mouth points' displacements from the person's mean face.

Trained with L2 on teacher-forced sequences with LSP's look-ahead: the prediction emitted at frame ``t + d`` is
compared with the mouth at frame t (d = 300 ms), so the LSTM hears 300 ms of the future before committing.
Targets are displacements in units of the person's mouth-motion std (:attr:`PersonProfile.mouth_scale`) rather
than LSP's normalised-face units x 1000: the same loss up to a constant factor, independent of face size.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lsp.networks.audio2mouth import Audio2Mouth
from lsp.speech import repeat_last, seconds_to_frames
from lsp.stages.person import AudioDrivenStage, AudioStageConfig, sketch_video


@dataclass
class MouthConfig(AudioStageConfig):
    hidden_size: int = 256             # LSTM width (3 layers)
    num_layers: int = 3
    look_ahead_seconds: float = 0.3    # LSP's frame_future = 18 frames at 60 fps


class MouthStage(AudioDrivenStage):
    """``batch``: ``mel`` [B, 2T, 80], ``landmarks3d`` [B, T, 68, 3] (+ ``pose`` [B, T, 6] for previews)."""

    data_fields = ("mel", "landmarks3d", "pose", "audio")
    monitor = "val/loss"

    def __init__(self, cfg: MouthConfig):
        super().__init__(cfg.apc_hidden_size)
        self.save_hyperparameters(vars(cfg), logger=False)
        self.cfg = cfg
        self.net = Audio2Mouth(cfg.apc_hidden_size, cfg.hidden_size, cfg.num_layers)

    def delay(self) -> int:
        return seconds_to_frames(self.cfg.look_ahead_seconds, float(self.profile.fps))

    def step(self, batch: dict, stage: str) -> torch.Tensor:
        features = self.audio_features(batch["mel"], batch)
        target = self.profile.mouth_target(batch["landmarks3d"])
        predicted, _ = self.net(features)
        d = self.delay()
        loss = F.mse_loss(predicted[:, d:], target[:, : target.shape[1] - d])
        self.log(f"{stage}/loss", loss, prog_bar=True, sync_dist=stage != "train", batch_size=len(target))
        return loss

    @torch.no_grad()
    def predict_deltas(self, features: torch.Tensor, delay: int) -> torch.Tensor:
        """Offline mouth deltas [B, T, 75] of features [B, T, 2D]: the last frame is repeated ``delay`` times so
        the output of every frame has heard its look-ahead, then the first ``delay`` outputs are dropped."""
        predicted, _ = self.net(repeat_last(features, delay))
        return predicted[:, delay:]

    @torch.no_grad()
    def preview(self, batch: dict) -> torch.Tensor:
        """Ground-truth | predicted face sketches (under the true head pose), float [B, T, 3, H, 2W]."""
        predicted = self.predict_deltas(self.audio_features(batch["mel"]), self.delay())
        truth = self.profile.sketch(batch["landmarks3d"], batch["pose"])
        generated = self.profile.sketch(self.profile.face_from_mouth(predicted), batch["pose"])
        return sketch_video(truth, generated)
