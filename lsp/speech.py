"""The speech front-end the later LSP stages share: a frozen, pretrained APC encoder and frame alignment.

The mouth and head-pose stages train on APC features of the audio (the APC is trained once, by ``lsp.apc``, and
frozen afterwards, as in LSP). Two mel rows belong to each video frame, so their two APC features are concatenated
into one ``2 x 512``-d feature per frame.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
from torch import nn

from lsp.networks.apc import APC
from zoo.errors import ConfigError
from zoo.weights import load_checkpoint_state_dict, load_strict


class FrozenAPC(nn.Module):
    """An APC encoder without gradients. ``forward(mel [B, 2T, 80], state) -> (features [B, 2T, D], state)``."""

    def __init__(self, mel_dim: int = 80, hidden_size: int = 512, num_layers: int = 3):
        super().__init__()
        self.apc = APC(mel_dim, hidden_size, num_layers)
        self.apc.requires_grad_(False)

    def load_stage_checkpoint(self, path: Optional[str], owner: str) -> None:
        """Load the APC of an ``lsp.apc`` checkpoint (a Lightning ``.ckpt``); ``owner`` names the config key."""
        if not path:
            raise ConfigError(f"{owner} is not set: it needs the checkpoint of a trained lsp.apc "
                              f"(`zoo fit --model lsp.apc`, or `zoo fit --model lsp` to train every stage)")
        if not Path(path).is_file():
            raise ConfigError(f"APC checkpoint not found: {path} ({owner})")
        state = load_checkpoint_state_dict(path, f"APC checkpoint {path} ({owner})")
        weights = {k[len("apc."):]: v for k, v in state.items() if k.startswith("apc.")}
        load_strict(self.apc, weights, f"{path} is not an lsp.apc checkpoint of this APC's sizes ({owner})")

    @torch.no_grad()
    def forward(self, mel: torch.Tensor, state: Optional[list[torch.Tensor]] = None):
        return self.apc.encode(mel, state)


def repeat_last(x: torch.Tensor, frames: int) -> torch.Tensor:
    """x [B, T, C] followed by ``frames`` copies of its last frame: LSP's padding at the end of the audio."""
    return torch.cat([x, x[:, -1:].expand(-1, frames, -1)], dim=1)


def seconds_to_frames(seconds: float, fps: float) -> int:
    return int(round(seconds * fps))
