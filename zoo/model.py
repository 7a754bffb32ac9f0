"""The common model interface every method implements and every consumer (test, predict, leaderboard) uses.

A :class:`ZooModule` is any registered LightningModule (including single training stages that do not make
video). A :class:`TalkingHeadModel` additionally implements :meth:`TalkingHeadModel.generate`, which turns a
datamodule batch (audio + reference inputs) into a :class:`GeneratedClip`. Test and predict steps are defined
here once: they return the generated clip, and the core's evaluation callback scores it and writes the videos,
so no method re-implements metric evaluation or video writing.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Optional

import numpy as np
import pytorch_lightning as pl
import torch

from zoo.errors import ConfigError, DataError


@dataclass
class GeneratedClip:
    """A batch of generated clips.

    Attributes:
        frames: float [B, T, 3, H, W] in [0, 1].
        landmarks2d: optional float [B, T, 68, 2] image landmarks (pixels) the method predicted.
        pose: optional float [B, T, 6] head pose (rotation xyz rad, translation xyz).
        expression: optional float [B, T, 64] expression coefficients.
    """

    frames: torch.Tensor
    landmarks2d: Optional[torch.Tensor] = None
    pose: Optional[torch.Tensor] = None
    expression: Optional[torch.Tensor] = None

    def __post_init__(self):
        if self.frames.dim() != 5 or self.frames.shape[2] != 3:
            raise ValueError(f"GeneratedClip.frames must be [B, T, 3, H, W], got {tuple(self.frames.shape)}")
        require_float_frames(self.frames, "GeneratedClip.frames")


def require_float_frames(frames: torch.Tensor, what: str) -> None:
    """One line unless ``frames`` are floating point: the metrics and the video writer read [0, 1] floats, and
    uint8 0..255 would be clamped, not rescaled."""
    if not torch.is_floating_point(frames):
        raise DataError(f"{what} must be float in [0, 1], got {frames.dtype} (convert uint8 frames with "
                        f"zoo.model.frames_to_float)")


def head_poses(value, what: str) -> torch.Tensor:
    """Head poses float32 ``[T, 6]`` (rotation xyz rad, translation xyz) from an array or tensor; one
    :class:`DataError` line naming ``what`` unless they are numbers of shape ``[T >= 1, 6]``, all finite."""
    try:
        poses = torch.as_tensor(value).float()
    except (TypeError, ValueError, RuntimeError):
        raise DataError(f"{what}: expected head poses as numbers of shape (T, 6)") from None
    if poses.dim() != 2 or poses.shape[1] != 6 or len(poses) == 0:
        raise DataError(f"{what}: expected head poses of shape (T, 6), got {tuple(poses.shape)}")
    if not bool(torch.isfinite(poses).all()):
        raise DataError(f"{what}: head poses contain NaN or infinite values")
    return poses


def frames_to_float(frames: torch.Tensor) -> torch.Tensor:
    """uint8 [..., 3, H, W] in 0..255 -> float32 in [0, 1] (float input passes through)."""
    return frames.float().div_(255.0) if frames.dtype == torch.uint8 else frames


def to_uint8_hwc(frames: torch.Tensor) -> np.ndarray:
    """float [T, 3, H, W] in [0, 1] (or uint8) -> uint8 [T, H, W, 3] numpy, rounded as a video encoder takes them:
    what the video writer and the metric backbones read."""
    if frames.dtype != torch.uint8:
        frames = frames.detach().clamp(0, 1).mul(255).round().to(torch.uint8)
    return frames.permute(0, 2, 3, 1).cpu().numpy()


class ZooModule(pl.LightningModule):
    """Base of every registered module.

    Class attributes:
        data_fields: datamodule fields the module needs (merged into ``data.fields`` by the harness).
        monitor: the metric that selects the "best" checkpoint (``None``: keep only ``last``).
        trainable: False for modules with nothing to fit (the baselines).
    """

    data_fields: ClassVar[tuple[str, ...]] = ()
    monitor: ClassVar[Optional[str]] = "val/loss"
    monitor_mode: ClassVar[str] = "min"
    trainable: ClassVar[bool] = True
    # GANs step G and D separately, so each backward leaves the other's parameters unused; DDP must be told.
    ddp_find_unused_parameters: ClassVar[bool] = False

    def step(self, batch: dict, stage: str) -> torch.Tensor:
        """The loss of ``batch`` in ``stage`` ("train", "val" or "test"), logged under ``<stage>/...``.

        Modules whose three loops differ only in the name they log under implement this one method."""
        raise NotImplementedError(f"{type(self).__name__} implements neither step() nor its *_step methods")

    @classmethod
    def configure_data(cls, data_cfg, model_cfg) -> None:
        """Adjust the composed ``data`` config to the model config before the run (e.g. a person-specific model
        selects its identity's clips). Default: nothing."""

    def check_loaded(self) -> None:
        """Raise one :class:`ConfigError` line when the weights just loaded cannot run as configured (e.g. a
        person-specific checkpoint asked to score another person). The harness calls it right after loading
        ``--ckpt``, before anything slow (the evaluator kit) starts. Default: nothing."""

    def preview(self, batch: dict) -> Optional[torch.Tensor]:
        """What a validation batch looks like as video, float [B, T, 3, H, W'] in [0, 1] (e.g. ground truth |
        generated side by side), or None (the default) for modules with nothing to show. Logged by
        :class:`zoo.evaluation.ValidationVideos` with the batch's audio."""
        return None

    def scheduled_batches(self, optimizer_steps_per_batch: int = 1) -> int:
        """The training batches this fit runs: the length of a learning-rate schedule stepped once per batch.

        A module that steps ``optimizer_steps_per_batch`` optimisers by hand (a GAN: G and D) advances Lightning's
        ``global_step`` by that much a batch, so ``trainer.max_steps=N`` stops after ``N / k`` batches, while
        ``estimated_stepping_batches`` counts ``N``. One :class:`ConfigError` line when the run has no bound.
        """
        trainer = self.trainer
        batches = float(trainer.estimated_stepping_batches)
        if trainer.max_steps > 0:
            batches = min(batches, math.ceil(trainer.max_steps / optimizer_steps_per_batch))
        if not math.isfinite(batches):
            raise ConfigError(f"{type(self).__name__}'s learning-rate schedule needs a bounded run: set "
                              f"trainer.max_epochs or trainer.max_steps")
        return max(1, int(batches))

    def require_windows_longer_than(self, frames: int, what: str) -> None:
        """One :class:`ConfigError` line before the first step unless the datamodule's training and validation
        windows are longer than ``frames`` (what ``what``, a setting, needs); whole-clip windows are not checked."""
        datamodule = self.trainer.datamodule
        for key, window in (("window_seconds", datamodule.window_frames),
                            ("val_window_seconds", datamodule.val_window_frames)):
            if window is not None and window <= frames:
                raise ConfigError(f"{what} needs windows of more than {frames} frames, data.{key} gives {window} "
                                  f"at {datamodule.fps:g} fps")

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self.step(batch, "train")

    def validation_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self.step(batch, "val")

    def test_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self.step(batch, "test")


PROTOCOLS = ("reference", "one-shot", "few-shot", "person-specific")


class TalkingHeadModel(ZooModule):
    """A model that generates talking-head video from audio and reference inputs.

    ``protocol`` says how the leaderboard (``zoo bench``) trains and evaluates it: ``one-shot`` / ``few-shot``
    methods are trained once on the training identities and also scored on ``test_unseen``; ``person-specific``
    ones are trained per evaluated identity (``model.identity``) and scored on that person's test clips only;
    ``reference`` is the ground-truth row.
    """

    protocol: ClassVar[str] = "one-shot"

    def generate(self, batch: dict) -> GeneratedClip:
        """Generate the clips of ``batch`` (see :class:`zoo.data.datamodule.TalkingHeadDataModule` for its keys)."""
        raise NotImplementedError

    def test_step(self, batch: dict, batch_idx: int) -> GeneratedClip:
        return self.generate(batch)

    def preview(self, batch: dict) -> torch.Tensor:
        """Ground truth | generated, side by side."""
        clip = self.generate(batch)
        return torch.cat([frames_to_float(batch["frames"]).to(clip.frames.device), clip.frames.clamp(0, 1)], dim=-1)

    def validation_step(self, batch: dict, batch_idx: int) -> GeneratedClip:
        return self.generate(batch)

    def predict_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> GeneratedClip:
        return self.generate(batch)
