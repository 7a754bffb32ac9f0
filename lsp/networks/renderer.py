"""LSP's Feature2Face renderer: a residual U-Net from a 13-channel conditioning image to an RGB frame.

Input: 1 edge-map channel (landmark + shoulder polylines) and 4 candidate RGB images, all in [-1, 1]. The official
generator is ``Feature2FaceGenerator_large`` (2 residual blocks per side per level; the May checkpoint) or
``_normal`` (1 block; Obama1/Obama2/Nadella/McStay): ``blocks_per_level`` 2 or 1 here.

Each level, outer to inner: stride-2 3x3 conv (no bias: BatchNorm follows everywhere except the outermost and
innermost down paths, exactly as the official code), ReLU, residual blocks; the inner level; nearest x2 upsampling,
3x3 conv, BN, ReLU, residual blocks; then the level's input is concatenated to its output (U-Net skip). The
outermost level ends with upsample + conv (3 channels, no bias, no norm) and the generator applies tanh.

Channels: level ``i`` (0 = outermost) has ``ngf * min(2**i, 8)`` inner channels: 64-128-256-512-512-512-512-512
for ``num_downs = 8, ngf = 64`` (the official 512x512 setting). Fewer levels and narrower nets keep the same rule;
the innermost feature map has ``H / 2**num_downs`` pixels per side, so use ``num_downs = log2(size) - 1`` (2x2 at the
bottom, e.g. 6 at 128x128, 5 at 64x64) to keep BatchNorm well defined at batch size 1. For ``num_downs >= 5`` the
layout is the official one; 2..4 levels are an extension (the official class needs at least 5).

Key layout (matching ``Feature2Face.pkl`` after stripping ``module.netG.``): ``model.model.<i>`` is the outermost
level's Sequential; its submodule is ``model.model.<2+n>`` (n = blocks_per_level) and so on inward, each nested level
at index ``3+n`` of its parent (``2+n`` in the outermost level, which has no down BatchNorm). Residual
blocks hold ``block.{0,1,3,4}`` (conv, BN, ReLU, conv, BN).
"""
from __future__ import annotations

import torch
from torch import nn


class ResidualBlock(nn.Module):
    """``relu(x + BN(conv(relu(BN(conv(x))))))`` with bias-free 3x3 convs (official ``ResidualBlock``)."""

    def __init__(self, channels: int):
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv2d(channels, channels, 3, 1, 1, bias=False), nn.BatchNorm2d(channels), nn.ReLU(),
            nn.Conv2d(channels, channels, 3, 1, 1, bias=False), nn.BatchNorm2d(channels))
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """float [B, C, H, W] -> [B, C, H, W]."""
        return self.relu(x + self.block(x))


class ResUNetLevel(nn.Module):
    """One U-Net level (official ``ResUnetSkipConnectionBlock`` / ``_small``).

    Args:
        outer_nc: channels this level returns to its parent (before the skip concatenation).
        inner_nc: channels after its down conv.
        input_nc: channels it receives (default ``outer_nc``; the image channels for the outermost level).
        submodule: the next inner level; ``None`` makes this the innermost level.
        blocks: residual blocks per side.
        outermost: no skip concatenation, no norm/activation/residual blocks after the final conv.
        input_skip: outermost only, not in LSP: a 3x3 conv of this level's input (``input_conv``) is added to the
            final conv's output (see :class:`Feature2FaceGenerator`).
    """

    def __init__(self, outer_nc: int, inner_nc: int, input_nc: int | None = None,
                 submodule: ResUNetLevel | None = None, blocks: int = 2, outermost: bool = False,
                 input_skip: bool = False):
        super().__init__()
        self.outermost = outermost
        innermost = submodule is None
        layers: list[nn.Module] = [nn.Conv2d(input_nc or outer_nc, inner_nc, 3, 2, 1, bias=False)]
        if not (outermost or innermost):
            layers.append(nn.BatchNorm2d(inner_nc))
        layers += [nn.ReLU()] + [ResidualBlock(inner_nc) for _ in range(blocks)]
        if submodule is not None:
            layers.append(submodule)
        # The inner level returns its input concatenated to its output, hence twice the channels.
        up_in = inner_nc if innermost else 2 * inner_nc
        layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(up_in, outer_nc, 3, 1, 1, bias=False)]
        if input_skip and not outermost:
            raise ValueError("input_skip applies to the outermost level only")
        self.input_conv = nn.Conv2d(input_nc or outer_nc, outer_nc, 3, 1, 1, bias=False) if input_skip else None
        if not outermost:
            layers += [nn.BatchNorm2d(outer_nc), nn.ReLU()] + [ResidualBlock(outer_nc) for _ in range(blocks)]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """float [B, input_nc, H, W] -> [B, outer_nc, H, W] (outermost) or [B, input_nc + outer_nc, H, W]."""
        y = self.model(x)
        if self.input_conv is not None:
            return y + self.input_conv(x)
        return y if self.outermost else torch.cat([x, y], dim=1)


class Feature2FaceGenerator(nn.Module):
    """Residual U-Net generator (official ``Feature2FaceGenerator_large`` / ``_normal``).

    Args:
        input_nc: conditioning channels (13 = edge map + 4 RGB candidates).
        output_nc: output channels (3).
        num_downs: levels (8 at 512x512); H and W must be divisible by ``2**num_downs``.
        ngf: channels of the outermost level (64).
        blocks_per_level: residual blocks per side per level (2 = ``large``, 1 = ``normal``).
        input_skip: not in LSP (opt-in): a 3x3 conv of the input is added to the last conv's output (the same
            function as one conv over the upsampled features and the input together, at about half its extra CPU
            cost). LSP's frame comes from features at half its resolution (stride-2 first conv, no skip at the
            outermost level); at 128 px the lips are ~5 px tall, and the skip hands the full-resolution edge map to
            the output directly. Adds the key ``model.input_conv.weight``: off for the official checkpoints.
    """

    def __init__(self, input_nc: int = 13, output_nc: int = 3, num_downs: int = 8, ngf: int = 64,
                 blocks_per_level: int = 2, input_skip: bool = False):
        super().__init__()
        if num_downs < 2:
            raise ValueError(f"Feature2FaceGenerator needs num_downs >= 2, got {num_downs}")
        if blocks_per_level < 1:
            raise ValueError(f"blocks_per_level must be >= 1, got {blocks_per_level}")
        self.input_nc, self.output_nc, self.num_downs = input_nc, output_nc, num_downs
        self.ngf, self.blocks_per_level, self.input_skip = ngf, blocks_per_level, input_skip
        inner = [ngf * min(2 ** i, 8) for i in range(num_downs)]
        level = ResUNetLevel(inner[-2], inner[-1], blocks=blocks_per_level)  # innermost
        for i in range(num_downs - 2, 0, -1):
            level = ResUNetLevel(inner[i - 1], inner[i], submodule=level, blocks=blocks_per_level)
        self.model = ResUNetLevel(output_nc, inner[0], input_nc=input_nc, submodule=level, blocks=blocks_per_level,
                                  outermost=True, input_skip=input_skip)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """float [B, input_nc, H, W] in [-1, 1] -> [B, output_nc, H, W] in [-1, 1].

        Raises:
            ValueError: wrong channel count, or H/W not divisible by ``2**num_downs``.
        """
        if x.dim() != 4 or x.shape[1] != self.input_nc:
            raise ValueError(f"Feature2FaceGenerator expects [B, {self.input_nc}, H, W], got {tuple(x.shape)}")
        factor = 2 ** self.num_downs
        h, w = x.shape[-2:]
        if h % factor or w % factor:
            raise ValueError(f"Feature2FaceGenerator with num_downs={self.num_downs} needs H and W divisible by "
                             f"{factor}, got {h}x{w}")
        # NHWC: oneDNN's convolutions are ~1.5x faster on a CPU at 128 px (every layer follows the input's layout)
        return torch.tanh(self.model(x.contiguous(memory_format=torch.channels_last)))
