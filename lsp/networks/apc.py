"""Autoregressive Predictive Coding (APC) speech representation (Chung et al. 2019), as LSP uses it.

LSP's ``APC_encoder`` is a stack of 3 unidirectional GRUs (80 -> 512 -> 512 -> 512) over log-mel frames, without
residual connections; its state dict keys are ``rnns.{0,1,2}.{weight_ih_l0,weight_hh_l0,bias_ih_l0,bias_hh_l0}``.
The self-supervised objective adds ``postnet`` (Linear 512 -> 80) predicting the mel frame ``n`` steps ahead.
Keeping exactly those names lets the official ``APC_epoch_160.model`` load unchanged.
"""
from __future__ import annotations

import torch
from torch import nn


class APC(nn.Module):
    """GRU stack + linear postnet.

    Args:
        mel_dim: input log-mel bands (80).
        hidden_size: GRU width (512).
        num_layers: GRU layers (3).
    """

    def __init__(self, mel_dim: int = 80, hidden_size: int = 512, num_layers: int = 3):
        super().__init__()
        sizes = [mel_dim] + [hidden_size] * num_layers
        self.rnns = nn.ModuleList(nn.GRU(sizes[i], sizes[i + 1], batch_first=True) for i in range(num_layers))
        self.postnet = nn.Linear(hidden_size, mel_dim)

    def encode(self, mel: torch.Tensor, state: list[torch.Tensor] | None = None
               ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Speech features of a mel sequence.

        Args:
            mel: float [B, L, mel_dim] log-mel frames.
            state: optional per-layer GRU states [1, B, hidden] carried over from a previous chunk (streaming).

        Returns:
            features float [B, L, hidden] (last layer) and the new per-layer states.
        """
        x, new_state = mel, []
        for i, rnn in enumerate(self.rnns):
            x, h = rnn(x, None if state is None else state[i])
            new_state.append(h)
        return x, new_state

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """Predicted mel frames ``n`` steps ahead of each input frame: float [B, L, mel_dim]."""
        features, _ = self.encode(mel)
        return self.postnet(features)
