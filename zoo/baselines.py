"""Two reference rows of every leaderboard: ``static`` (the reference frame, frozen) and ``gt`` (ground truth)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from zoo.model import GeneratedClip, TalkingHeadModel, frames_to_float
from zoo.registry import register_model


@dataclass
class StaticConfig:
    ref_index: int = 0   # which of the K reference frames to repeat

    bounds: ClassVar[dict[str, str]] = {"ref_index": "[0, inf)"}


class StaticBaseline(TalkingHeadModel):
    """Repeats a reference frame for the whole clip: no motion, no lip sync — the lower bound."""

    data_fields = ("frames", "audio", "landmarks2d")
    monitor = None
    trainable = False

    def __init__(self, cfg: StaticConfig):
        super().__init__()
        self.ref_index = cfg.ref_index

    def generate(self, batch: dict) -> GeneratedClip:
        refs = batch["ref_frames"]                       # uint8 [B, K, 3, H, W]
        if refs.shape[1] <= self.ref_index:
            raise ValueError(f"static baseline needs data.num_refs > {self.ref_index}, got {refs.shape[1]}")
        num_frames = batch["frames"].shape[1] if "frames" in batch else batch["phoneme"].shape[1]
        still = frames_to_float(refs[:, self.ref_index])  # [B, 3, H, W]
        frames = still.unsqueeze(1).expand(-1, num_frames, -1, -1, -1).contiguous()
        landmarks = None
        if "ref_landmarks2d" in batch:
            landmarks = batch["ref_landmarks2d"][:, self.ref_index].unsqueeze(1).expand(-1, num_frames, -1, -1)
        return GeneratedClip(frames=frames, landmarks2d=landmarks)


@dataclass
class GroundTruthConfig:
    pass


class GroundTruthBaseline(TalkingHeadModel):
    """Returns the ground-truth clip: the upper bound every metric should rate best."""

    data_fields = ("frames", "audio", "landmarks2d", "pose", "expression")
    protocol = "reference"
    monitor = None
    trainable = False

    def __init__(self, cfg: GroundTruthConfig):
        super().__init__()

    def generate(self, batch: dict) -> GeneratedClip:
        return GeneratedClip(frames=frames_to_float(batch["frames"]), landmarks2d=batch.get("landmarks2d"),
                             pose=batch.get("pose"), expression=batch.get("expression"))


@register_model("static", config=StaticConfig, help="baseline: repeats the reference frame for the whole clip")
def static(cfg: StaticConfig) -> StaticBaseline:
    return StaticBaseline(cfg)


@register_model("gt", config=GroundTruthConfig, help="baseline: the ground-truth clip (upper bound)")
def gt(cfg: GroundTruthConfig) -> GroundTruthBaseline:
    return GroundTruthBaseline(cfg)
