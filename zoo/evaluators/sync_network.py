"""A CPU-trainable SyncNet for the synthetic domain: the two-stream audio / lip embedding network behind the
synthetic-domain LSE-C / LSE-D (:mod:`zoo.metrics.sync`).

Same interface and input conventions as the official SyncNet (:class:`zoo.metrics.backbones.syncnet.SyncNet`):

- ``forward_aud(mfcc [B, 1, 13, 20]) -> [B, D]``: 13 MFCCs (c0 = log energy, int16-scale audio) x 20 frames
  (0.2 s at 100 frames/s), exactly the windows the protocol cuts;
- ``forward_lip(video [B, 3, 5, H, W]) -> [B, D]``: 5 consecutive BGR frames, values 0..255 (no normalisation
  outside the network);
- raw embeddings (no L2 normalisation): the protocol's score is their Euclidean distance.

What differs from the official network, and why:

- **Input geometry.** The synthetic faces are small (mouth ~20 x 12 px in a 128 px frame) and always framed the
  same way, so instead of the whole face at 224 x 224 the lip stream sees a fixed mouth box (``crop_box``,
  fractions of the frame) at ``input_size`` = 48 x 64 (H x W): at the default 128 px corpus the box is exactly
  48 x 64 pixels, so no resampling happens (smaller corpora are upsampled by the protocol's cv2 bilinear resize).
  Half that input (24 x 32, ``lip_channels=[16, 48, 96]``) trains ~1.8x faster but separates real from mismatched
  audio less (test LSE-C 4.0 vs 0.7 after 3 epochs, against 5.8 vs 0.9 here). The box covers every mouth
  position of the default corpus (all splits, head motion included: mouth landmarks span x 0.36..0.68,
  y 0.52..0.81 of the frame) with a margin. Both are module attributes that :func:`zoo.metrics.sync.video_geometry`
  reads, so scoring crops and resizes exactly as training did. No landmarks are needed at scoring time (generated
  videos have none).
- **Late fusion.** The official lip stream fuses the 5 frames in its first 3-D convolution. Here a 2-D stem encodes
  every frame on its own down to 1/16 resolution (3 x 4 cells, each seeing the whole mouth) and a (5, 1, 1)
  convolution fuses the 5 frame maps; what sync needs is the sequence of mouth shapes. The stem has no
  temporal extent, so a clip's frames can be encoded once and shared by the ~5 windows each frame belongs to
  (:meth:`SyncNetwork.lip_windows`), which makes training 5x cheaper, while per-window :meth:`forward_lip` gives
  identical embeddings.
- **Width.** ~0.7 M parameters and ~5 M multiply-adds per window in training (2.7 M per frame in the stem, 0.9 M
  for fusion, 1.6 M for audio) instead of 13.6 M parameters at 224 x 224; BatchNorm after every convolution as in
  the original.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

__all__ = ["SyncNetwork", "DEFAULT_CROP_BOX", "DEFAULT_INPUT_SIZE"]

VIDEO_WINDOW = 5          # frames per lip window (the protocol's 0.2 s at 25 fps)
MFCC_SHAPE = (13, 20)     # MFCC coefficients x rows per audio window
# x0, y0, x1, y1 in fractions of the frame: pixels 32..96 x 60..108 of a 128 px frame (48 x 64, no resize there).
DEFAULT_CROP_BOX = (0.25, 0.46875, 0.75, 0.84375)
DEFAULT_INPUT_SIZE = (48, 64)


def _conv_bn_relu(cin: int, cout: int, kernel, stride=1, padding=0) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, kernel, stride, padding, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


def _head(width: int, dim: int) -> nn.Sequential:
    """Linear + BN1d + ReLU + Linear, the official ``netfc*`` head at a smaller width."""
    return nn.Sequential(nn.Linear(width, width), nn.BatchNorm1d(width), nn.ReLU(inplace=True), nn.Linear(width, dim))


class SyncNetwork(nn.Module):
    """Audio and lip embedding towers.

    Args:
        embedding_dim: D, the embedding size of both streams.
        input_size: lip input ``(H, W)``; multiples of ``2 ** len(lip_channels)`` (one stride-2 stage each).
        crop_box: fixed mouth box ``(x0, y0, x1, y1)`` in fractions of the frame, read by the scoring protocol.
        lip_channels: widths of the stride-2 stages of the per-frame stem.
        audio_channels: widths of the three audio convolution stages.
        width: width of the fused features and of the projection heads.
    """

    name = "synthetic-domain SyncNet (zoo.evaluators.sync_network)"

    def __init__(self, embedding_dim: int = 128, input_size: Sequence[int] = DEFAULT_INPUT_SIZE,
                 crop_box: Sequence[float] = DEFAULT_CROP_BOX, lip_channels: Sequence[int] = (16, 32, 64, 96),
                 audio_channels: Sequence[int] = (16, 32, 64), width: int = 128):
        super().__init__()
        height, wide = (int(v) for v in input_size)
        scale = 2 ** len(lip_channels)
        if height % scale or wide % scale or len(audio_channels) != 3:
            raise ValueError(f"SyncNetwork: input_size must be multiples of {scale} (one stride-2 stage per entry of "
                             f"lip_channels) and audio_channels needs 3 widths; got {tuple(input_size)}, "
                             f"{list(lip_channels)}, {list(audio_channels)}")
        self.input_size = (height, wide)
        self.crop_box = tuple(float(c) for c in crop_box)
        self.embedding_dim = int(embedding_dim)
        stem, cin = [], 3
        for cout in lip_channels:        # per-frame stem: [N, 3, H, W] -> [N, c_last, H / scale, W / scale]
            stem += _conv_bn_relu(cin, cout, 3, 2, 1)
            cin = cout
        self.lip_stem = nn.Sequential(*stem)
        # Temporal fusion of the 5 frame maps (the only layer that sees time), then a kernel over the whole map.
        self.lip_fuse = nn.Sequential(nn.Conv3d(cin, width, (VIDEO_WINDOW, 1, 1), bias=False),
                                      nn.BatchNorm3d(width), nn.ReLU(inplace=True))
        self.lip_spatial = nn.Sequential(*_conv_bn_relu(width, width, (height // scale, wide // scale)))
        self.lip_head = _head(width, embedding_dim)
        a1, a2, a3 = audio_channels
        # Per-coefficient input normalisation: c0 (log energy, ~20) and the liftered cepstra (up to ~+-100) live on
        # very different scales; learned running statistics put them on one before the first convolution.
        self.aud_norm = nn.BatchNorm1d(MFCC_SHAPE[0])
        # Audio: [B, 1, 13, 20] -> 13x20 -> 13x10 -> 7x5 -> 1x1 (the last kernel spans the whole map, as upstream).
        self.aud_cnn = nn.Sequential(*_conv_bn_relu(1, a1, 3, 1, 1), *_conv_bn_relu(a1, a2, 3, (1, 2), 1),
                                     *_conv_bn_relu(a2, a3, 3, 2, 1), *_conv_bn_relu(a3, width, (7, 5)))
        self.aud_head = _head(width, embedding_dim)

    # --------------------------------------------------------------------------------------------- audio

    def forward_aud(self, mfcc: torch.Tensor) -> torch.Tensor:
        """Audio embedding.

        Args:
            mfcc: float [B, 1, 13, 20] -- 13 MFCCs (c0 = log energy) x 20 frames of int16-scale 16 kHz audio.

        Returns:
            float [B, D].
        """
        if mfcc.shape[1:] != (1, *MFCC_SHAPE):
            raise ValueError(f"forward_aud: expected [B, 1, 13, 20] MFCC windows, got {tuple(mfcc.shape)}")
        return self.aud_head(self.aud_cnn(self.aud_norm(mfcc.squeeze(1)).unsqueeze(1)).flatten(1))

    # --------------------------------------------------------------------------------------------- video

    def _frame_maps(self, frames: torch.Tensor) -> torch.Tensor:
        """Stem features of independent frames: float [N, 3, H, W] BGR 0..255 -> [N, C, H/scale, W/scale]."""
        if tuple(frames.shape[-2:]) != self.input_size:
            raise ValueError(f"SyncNetwork: expected {self.input_size[0]}x{self.input_size[1]} frames (see "
                             f"zoo.metrics.sync.prepare_video), got {tuple(frames.shape[-2:])}")
        # Fixed rescale to about [-1, 1]: keeps the first BatchNorm's statistics well conditioned.
        return self.lip_stem(frames / 127.5 - 1.0)

    def _fuse(self, windows: torch.Tensor) -> torch.Tensor:
        """[B, C, 5, h, w] stacks of frame maps -> [B, D] embeddings."""
        return self.lip_head(self.lip_spatial(self.lip_fuse(windows).squeeze(2)).flatten(1))

    def forward_lip(self, video: torch.Tensor) -> torch.Tensor:
        """Lip embedding of 5-frame windows.

        Args:
            video: float [B, 3, 5, H, W] -- 5 consecutive BGR frames of the mouth box, values 0..255.

        Returns:
            float [B, D].
        """
        if video.dim() != 5 or video.shape[1] != 3 or video.shape[2] != VIDEO_WINDOW:
            raise ValueError(f"forward_lip: expected [B, 3, 5, H, W] windows, got {tuple(video.shape)}")
        b = video.shape[0]
        maps = self._frame_maps(video.transpose(1, 2).flatten(0, 1))            # [B*5, C, h, w]
        maps = maps.unflatten(0, (b, VIDEO_WINDOW)).transpose(1, 2)             # [B, C, 5, h, w]
        return self._fuse(maps)

    def lip_windows(self, video: torch.Tensor) -> torch.Tensor:
        """Embeddings of every 5-frame window of whole clips, each frame encoded once.

        Equal to ``forward_lip`` on windows ``v..v+4`` for ``v = 0..T-5`` (the stem sees one frame at a time).

        Args:
            video: float [B, 3, T, H, W] BGR 0..255, T >= 5.

        Returns:
            float [B, T - 4, D].
        """
        b, _, t = video.shape[:3]
        if t < VIDEO_WINDOW:
            raise ValueError(f"lip_windows: need at least {VIDEO_WINDOW} frames, got {t}")
        maps = self._frame_maps(video.transpose(1, 2).flatten(0, 1))            # [B*T, C, h, w]
        maps = maps.unflatten(0, (b, t))                                         # [B, T, C, h, w]
        windows = maps.unfold(1, VIDEO_WINDOW, 1)                                # [B, T-4, C, h, w, 5]
        windows = windows.permute(0, 1, 2, 5, 3, 4).flatten(0, 1)                # [B*(T-4), C, 5, h, w]
        return self._fuse(windows).unflatten(0, (b, t - VIDEO_WINDOW + 1))

    def forward(self, video: torch.Tensor, mfcc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(forward_lip(video), forward_aud(mfcc))``."""
        return self.forward_lip(video), self.forward_aud(mfcc)
