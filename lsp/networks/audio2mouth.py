"""LSP's mouth decoder: APC features -> 25 mouth-related 3D landmark displacements per video frame.

This is the LSTM variant of LSP's ``Audio2Feature`` (the one the released checkpoints use). Attribute names follow
the official module so ``Audio2Feature.pkl`` loads key for key (after :mod:`lsp.convert` strips ``module.``):

- ``downsample.{0,1,3}``: Linear(2*apc_dim -> apc_dim), BatchNorm1d, LeakyReLU(0.2) (no parameters), Linear;
- ``LSTM.{weight,bias}_{ih,hh}_l{0,1,2}``: unidirectional, batch-first, no dropout;
- ``fc.{0,1,3,4,6}``: Linear(hidden -> fc_size), BN, LReLU, Linear(fc_size -> fc_size), BN, LReLU,
  Linear(fc_size -> 3*num_points).

APC runs at 120 Hz (two mel frames per 60 fps video frame); consecutive APC frame pairs are concatenated into one
``2*apc_dim`` vector per video frame (:func:`pair_frames`). The official model predicts with an 18-frame look-ahead;
that alignment belongs to the caller (this module maps frame ``t`` of its input to frame ``t`` of its output).
"""
from __future__ import annotations

import torch
from torch import nn

LSTMState = tuple[torch.Tensor, torch.Tensor]


def pair_frames(features: torch.Tensor) -> torch.Tensor:
    """Concatenate consecutive frame pairs: float [B, 2T, D] -> [B, T, 2D] (frame ``2t`` first, then ``2t+1``).

    Raises:
        ValueError: the time axis has odd length.
    """
    b, length, dim = features.shape
    if length % 2:
        raise ValueError(f"pair_frames needs an even number of frames, got {length}")
    return features.reshape(b, length // 2, 2 * dim)


class Audio2Mouth(nn.Module):
    """APC pairs -> per-frame landmark displacements (official ``Audio2Feature`` with the LSTM decoder).

    Args:
        apc_dim: APC feature width (512); the input has ``2 * apc_dim`` channels and ``downsample`` maps it to
            ``apc_dim``, the LSTM input size (official: ``APC_hidden_size``).
        hidden_size: LSTM width (256).
        num_layers: LSTM layers (3).
        num_points: predicted 3D points (25 = 7 chin + 18 lip); the output has ``3 * num_points`` channels.
        fc_size: width of the output MLP (512, hard-coded in the official code).
    """

    def __init__(self, apc_dim: int = 512, hidden_size: int = 256, num_layers: int = 3, num_points: int = 25,
                 fc_size: int = 512):
        super().__init__()
        self.apc_dim, self.hidden_size, self.num_points = apc_dim, hidden_size, num_points
        self.downsample = nn.Sequential(
            nn.Linear(2 * apc_dim, apc_dim), nn.BatchNorm1d(apc_dim), nn.LeakyReLU(0.2), nn.Linear(apc_dim, apc_dim))
        self.LSTM = nn.LSTM(apc_dim, hidden_size, num_layers=num_layers, batch_first=True)
        self.fc = nn.Sequential(
            nn.Linear(hidden_size, fc_size), nn.BatchNorm1d(fc_size), nn.LeakyReLU(0.2),
            nn.Linear(fc_size, fc_size), nn.BatchNorm1d(fc_size), nn.LeakyReLU(0.2),
            nn.Linear(fc_size, 3 * num_points))

    def forward(self, apc_pairs: torch.Tensor, state: LSTMState | None = None) -> tuple[torch.Tensor, LSTMState]:
        """Predict displacements for a chunk of frames.

        Args:
            apc_pairs: float [B, T, 2*apc_dim] paired APC features (see :func:`pair_frames`).
            state: optional LSTM ``(h, c)``, each [num_layers, B, hidden_size], returned by the previous chunk.
                In eval mode, running a sequence chunk by chunk while passing the state on gives the same result
                as running it whole (BatchNorm then uses running statistics, so frames are independent there).

        Returns:
            deltas float [B, T, 3*num_points] (x, y, z per point, point-major as in the official ``[T, 25, 3]``
            reshape) and the new LSTM state ``(h, c)``.
        """
        b, t, c = apc_pairs.shape
        if c != 2 * self.apc_dim:
            raise ValueError(f"Audio2Mouth expects {2 * self.apc_dim} input channels (APC pairs), got {c}")
        # BatchNorm1d sees every frame of every sequence as one sample, as in the official reshape to [B*T, C].
        x = self.downsample(apc_pairs.reshape(b * t, c)).reshape(b, t, self.apc_dim)
        y, new_state = self.LSTM(x, state)
        deltas = self.fc(y.reshape(b * t, self.hidden_size)).reshape(b, t, 3 * self.num_points)
        return deltas, new_state
