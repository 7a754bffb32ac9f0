"""LSP stage 3: audio -> mouth. APC features to the 25 mouth points' displacements from the person's mean face.

Trained with L2 on teacher-forced sequences with LSP's look-ahead: the prediction emitted at frame ``t + d`` is
compared with the mouth at frame t (d = 300 ms), so the LSTM hears 300 ms of the future before committing.
Targets are displacements in units of the person's mouth-motion std (:attr:`PersonProfile.mouth_scale`) rather
than LSP's normalised-face units x 1000: the same loss up to a constant factor, independent of face size.

Not in LSP (``other_speakers``, on by default): the net also learns from every other identity's training clips,
each speaker's mouth measured from its own mean face in its own motion unit; validation (and the best checkpoint)
stays on the target person. LSP had 3-5 minutes of its person's speech; a synthetic person has about 2, and the
person-only net overfits them (README, method notes).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional

import torch
import torch.nn.functional as F

from lsp.networks.audio2mouth import Audio2Mouth
from lsp.person import mouth_deltas, speaker_mouth_units
from lsp.speech import repeat_last
from lsp.stages.person import AudioDrivenStage, AudioStageConfig, sketch_video
from zoo.errors import DataError


@dataclass
class MouthConfig(AudioStageConfig):
    hidden_size: int = 256             # LSTM width (3 layers)
    num_layers: int = 3
    look_ahead_seconds: float = 0.3    # LSP's frame_future = 18 frames at 60 fps
    other_speakers: bool = True        # not in LSP: also train on the other identities' clips (module docstring)

    bounds: ClassVar[dict[str, str]] = {**AudioStageConfig.bounds, "hidden_size": "[1, inf)",
                                        "num_layers": "[1, inf)"}


def mouth_network(cfg: MouthConfig, apc_dim: int) -> Audio2Mouth:
    """The stage's network, as the stage trains it and the assembled LSP runs it."""
    return Audio2Mouth(apc_dim, cfg.hidden_size, cfg.num_layers)


class MouthStage(AudioDrivenStage):
    """``batch``: ``mel`` [B, 2T, 80], ``landmarks3d`` [B, T, 68, 3] (+ ``pose`` [B, T, 6] for previews)."""

    data_fields = ("mel", "landmarks3d", "pose", "audio")
    monitor = "val/loss"

    def __init__(self, cfg: MouthConfig):
        super().__init__(cfg.apc_hidden_size, cfg.apc_num_layers)
        self.save_hyperparameters(vars(cfg), logger=False)
        self.cfg = cfg
        self.net = mouth_network(cfg, cfg.apc_hidden_size)

    @classmethod
    def configure_data(cls, data_cfg, model_cfg) -> None:
        super().configure_data(data_cfg, model_cfg)
        data_cfg.train_on_all_identities = bool(model_cfg.other_speakers)

    def setup(self, stage: Optional[str] = None) -> None:
        super().setup(stage)
        # Each training speaker's units, so every window is measured in its own speaker's (the target's are its
        # profile's: the same statistics of the same frames).
        self._speakers: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        if self.cfg.other_speakers and stage == "fit":
            datamodule = self.trainer.datamodule
            self._speakers = speaker_mouth_units(datamodule.dataset, datamodule.cfg.train_split)

    def mouth_target(self, batch: dict) -> torch.Tensor:
        """Targets [B, T, 75] of ``landmarks3d`` [B, T, 68, 3]: each window's mouth in its own speaker's units
        (the target person's profile when every window is the target's, as in validation)."""
        identities = [int(i) for i in batch["identity"]]
        if all(i == self.cfg.identity for i in identities):
            return self.profile.mouth_target(batch["landmarks3d"])
        unknown = sorted(set(identities) - set(self._speakers))
        if unknown:
            raise DataError(f"identity {unknown[0]} has no clip in the train split, so its mouth cannot be "
                            f"normalised (model.other_speakers)")
        means = torch.stack([self._speakers[i][0] for i in identities]).to(batch["landmarks3d"])   # [B, 25, 3]
        scales = torch.stack([self._speakers[i][1] for i in identities]).to(batch["landmarks3d"])  # [B]
        return mouth_deltas(batch["landmarks3d"], means[:, None], scales[:, None])

    def step(self, batch: dict, stage: str) -> torch.Tensor:
        features = self.audio_features(batch["mel"], batch)
        target = self.mouth_target(batch)
        predicted, _ = self.net(features)
        d = self.look_ahead_frames()
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
        predicted = self.predict_deltas(self.audio_features(batch["mel"]), self.look_ahead_frames())
        truth = self.profile.sketch(batch["landmarks3d"], batch["pose"])
        generated = self.profile.sketch(self.profile.face_from_mouth(predicted), batch["pose"])
        return sketch_video(truth, generated)
