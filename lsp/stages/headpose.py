"""LSP stage 4: probabilistic head pose. An audio-conditioned autoregressive WaveNet over the 12-d head state.

The state is LSP's pose (6) + velocity (6), standardised per dimension with the person's training statistics
(:class:`~lsp.person.PersonProfile`): LSP uses raw degrees and face units, which makes its ``sigma_min = 0.03``
depend on the units; in standard units the floor means the same for any dataset. Trained teacher-forced with the
Gaussian negative log-likelihood: the state of frame t is predicted from the states before it and the audio
250 ms ahead, each window from the warm-up context inference starts from. At inference it is sampled frame by
frame with a reduced sigma (LSP: 0.3).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional

import torch

from lsp.geometry import pose_velocity
from lsp.networks.headpose import Audio2Headpose, gaussian_nll
from lsp.speech import repeat_last
from lsp.stages.person import AudioDrivenStage, AudioStageConfig, sketch_video


@dataclass
class HeadposeConfig(AudioStageConfig):
    residual_layers: int = 7           # 2 blocks x 7 dilated layers (dilations 1..64): receptive field 255 frames
    residual_blocks: int = 2
    dilation_channels: int = 128
    residual_channels: int = 128
    skip_channels: int = 256
    look_ahead_seconds: float = 0.25   # LSP's frame_future = 15 frames at 60 fps
    sigma_min: float = 0.03            # in standard units of each state dimension
    # Sampling temperature. LSP's demo uses 0.3 for its subjects; on the synthetic corpus 0.3 gives 0.42x the true
    # head-motion std and 1.0 (the learned distribution itself) 0.64x, so the default samples the model as trained.
    sigma_scale: float = 1.0
    # No step decay (LSP: x 0.2 halfway). At the default 120 steps the decayed runs sampled 0.43-0.53x the true
    # head-motion std on identity 1 (0.66-0.75x on identity 0), the constant rate 0.59-0.73x (0.62-0.68x); training
    # seeds 0-2, sampling seeds 0-2 each (README, method notes).
    lr_gamma: float = 1.0

    bounds: ClassVar[dict[str, str]] = {
        **AudioStageConfig.bounds, "residual_layers": "[1, inf)", "residual_blocks": "[1, inf)",
        "dilation_channels": "[1, inf)", "residual_channels": "[1, inf)", "skip_channels": "[1, inf)",
        "sigma_min": "(0, inf)", "sigma_scale": "[0, inf)"}


def headpose_network(cfg: HeadposeConfig, apc_dim: int) -> Audio2Headpose:
    """The stage's network, as the stage trains it and the assembled LSP runs it."""
    return Audio2Headpose(apc_dim, residual_layers=cfg.residual_layers, residual_blocks=cfg.residual_blocks,
                          dilation_channels=cfg.dilation_channels, residual_channels=cfg.residual_channels,
                          skip_channels=cfg.skip_channels)


class HeadposeStage(AudioDrivenStage):
    """``batch``: ``mel`` [B, 2T, 80], ``pose`` [B, T, 6] (+ ``landmarks3d`` for previews)."""

    data_fields = ("mel", "pose", "landmarks3d", "audio")
    monitor = "val/loss"

    def __init__(self, cfg: HeadposeConfig):
        super().__init__(cfg.apc_hidden_size, cfg.apc_num_layers)
        self.save_hyperparameters(vars(cfg), logger=False)
        self.cfg = cfg
        self.net = headpose_network(cfg, cfg.apc_hidden_size)

    def step(self, batch: dict, stage: str) -> torch.Tensor:
        state = self.profile.normalise_state(pose_velocity(batch["pose"]))
        # Each window is scored as inference samples a sequence: after the warm-up, from a zero (mean) history,
        # and only where its look-ahead audio is inside the window. The 255-frame receptive field is longer than
        # the corpus' 8 s clips, so LSP's alternative, windows with a receptive field of real history, cannot exist.
        params = self.net.forward_from_start(state, self.audio_features(batch["mel"], batch), self.look_ahead_frames())
        loss = gaussian_nll(params, state[:, :params.shape[1]], self.cfg.sigma_min)
        self.log(f"{stage}/loss", loss, prog_bar=True, sync_dist=stage != "train", batch_size=len(state))
        return loss

    @torch.no_grad()
    def sample_poses(self, features: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Sampled head poses [B, T, 6] for per-frame features [B, T, 2D] (LSP's loop from the mean state)."""
        la = self.look_ahead_frames()
        states = self.net.generate(repeat_last(features, la), self.cfg.sigma_scale, generator, frame_future=la)
        return self.profile.denormalise_state(states)[..., :6]

    @torch.no_grad()
    def preview(self, batch: dict) -> torch.Tensor:
        """Ground truth | the true face under a sampled head motion, float [B, T, 3, H, 2W]."""
        generator = torch.Generator(device=self.device).manual_seed(0)
        poses = self.sample_poses(self.audio_features(batch["mel"]), generator)
        truth = self.profile.sketch(batch["landmarks3d"], batch["pose"])
        return sketch_video(truth, self.profile.sketch(batch["landmarks3d"], poses))
