"""pix2pixHD PatchGAN discriminators: one scale (:class:`NLayerDiscriminator`) or
several (:class:`MultiscaleDiscriminator`).

Architecture (pix2pixHD ``NLayerDiscriminator`` with ``getIntermFeat=True``): 4x4 convolutions with padding
``ceil((4 - 1) / 2) = 2``; ``n_layers`` stride-2 blocks then one stride-1 block, channels ``ndf, 2 ndf, ...`` doubling
up to ``8 ndf``; LeakyReLU(0.2) after every block; a normalisation layer on every block but the first; a final
stride-1 convolution to one channel without sigmoid (the losses in :mod:`zoo.gan.losses` take logits).

State-dict layout (pix2pixHD's ``getIntermFeat`` names): one ``nn.Sequential`` per block, ``model0 ... model{n+1}``
with ``n = n_layers``. ``model0 = [conv, lrelu]``, ``model1 .. model{n} = [conv, norm, lrelu]`` (``norm="none"``
keeps an ``Identity`` at index 1 so conv keys do not depend on the norm), ``model{n+1} = [conv]``. Convolutions
keep their bias as in pix2pixHD. :class:`MultiscaleDiscriminator` keeps its discriminators in a ``ModuleList``
``discriminators``, index ``s`` running on scale ``s`` (finest first): ``discriminators.{s}.model{j}.*``.
pix2pixHD names the same tensors ``scale{S-1-s}_layer{j}.*`` (its finest scale uses the highest index).

Size rule: each scale halves the input (AvgPool2d(3, 2, 1), rounding up) and each discriminator downsamples by
``2 ** n_layers``; a coarsest scale smaller than ``2 ** n_layers`` pixels per side would leave its discriminator
with features made mostly of zero padding, so :class:`MultiscaleDiscriminator` refuses inputs smaller than
``(2 ** n_layers - 1) * 2 ** (num_scales - 1) + 1`` pixels per side (15 for 3 layers and 2 scales).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["NORMS", "MultiscaleDiscriminator", "NLayerDiscriminator"]

NORMS = ("batch", "instance", "none")
_KERNEL = 4
_PAD = math.ceil((_KERNEL - 1) / 2)   # = 2, pix2pixHD's padw: the patch map grows by one pixel per stride-1 conv


def _norm_layer(norm: str, channels: int) -> nn.Module:
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    if norm == "instance":
        # pix2pixHD's instance norm has no affine parameters and no running statistics.
        return nn.InstanceNorm2d(channels, affine=False)
    return nn.Identity()


def _conv_out(size: int, stride: int) -> int:
    return (size + 2 * _PAD - _KERNEL) // stride + 1


class NLayerDiscriminator(nn.Module):
    """pix2pixHD PatchGAN for one scale.

    Args:
        input_nc: input channels (image channels plus any concatenated conditioning).
        ndf: channels of the first block; doubled per block up to ``8 * ndf``.
        n_layers: number of stride-2 blocks (the receptive field grows with it; 3 gives 70x70-like patches).
        norm: ``"batch"`` (LSP's choice), ``"instance"`` or ``"none"``.

    ``forward(x, return_features=False)``: ``x`` is ``[B, input_nc, H, W]``. Returns the patch logit map
    ``[B, 1, h, w]``, or with ``return_features=True`` the list of the ``n_layers + 2`` block outputs
    ``[f_0 [B, ndf, ...], ..., f_{n_layers} [B, min(2^n ndf, 8 ndf), ...], patch [B, 1, h, w]]`` (intermediate
    features for :func:`~zoo.gan.losses.feature_matching_loss`, patch map last).
    """

    def __init__(self, input_nc: int, ndf: int = 64, n_layers: int = 3, norm: str = "batch"):
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"unknown discriminator norm {norm!r}; expected one of {', '.join(NORMS)}")
        if n_layers < 1:
            raise ValueError(f"n_layers must be >= 1, got {n_layers}")
        self.input_nc, self.ndf, self.n_layers, self.norm = input_nc, ndf, n_layers, norm
        # No norm on the first block (pix2pixHD): normalising raw pixels would discard their absolute level.
        blocks: list[list[nn.Module]] = [[nn.Conv2d(input_nc, ndf, _KERNEL, stride=2, padding=_PAD),
                                          nn.LeakyReLU(0.2, inplace=True)]]
        nf = ndf
        for i in range(1, n_layers + 1):
            prev, nf = nf, min(nf * 2, ndf * 8)
            stride = 2 if i < n_layers else 1     # the last block before the output keeps the resolution
            blocks.append([nn.Conv2d(prev, nf, _KERNEL, stride=stride, padding=_PAD), _norm_layer(norm, nf),
                           nn.LeakyReLU(0.2, inplace=True)])
        blocks.append([nn.Conv2d(nf, 1, _KERNEL, stride=1, padding=_PAD)])
        for j, block in enumerate(blocks):
            self.add_module(f"model{j}", nn.Sequential(*block))
        self.num_blocks = len(blocks)

    @property
    def min_input_size(self) -> int:
        """Smallest input side this discriminator accepts: its total downsampling ``2 ** n_layers``."""
        return 2 ** self.n_layers

    def patch_size(self, height: int, width: int) -> tuple[int, int]:
        """``(h, w)`` of the patch map for an ``height x width`` input."""
        sizes = []
        for size in (height, width):
            for j in range(self.num_blocks):
                size = _conv_out(size, 2 if j < self.n_layers else 1)
            sizes.append(size)
        return sizes[0], sizes[1]

    def forward(self, x: Tensor, return_features: bool = False) -> Tensor | list[Tensor]:
        features = []
        for j in range(self.num_blocks):
            x = getattr(self, f"model{j}")(x)
            features.append(x)
        return features if return_features else x


class MultiscaleDiscriminator(nn.Module):
    """``num_scales`` :class:`NLayerDiscriminator` s on the input and on 2x, 4x, ... downsampled copies (pix2pixHD).

    Args:
        input_nc, ndf, n_layers, norm: as for :class:`NLayerDiscriminator` (same for every scale).
        num_scales: number of scales (pix2pixHD's ``num_D``). Between scales the input is downsampled by
            ``AvgPool2d(3, stride=2, padding=1, count_include_pad=False)`` (no dark border from the padding).

    ``forward(x, return_features=True)``: ``x`` is ``[B, input_nc, H, W]`` with ``H, W >= min_input_size``.
    Returns a list over scales, finest first, of the per-layer lists of :meth:`NLayerDiscriminator.forward`
    (patch map last) -- the structure :class:`~zoo.gan.losses.GANLoss` and
    :func:`~zoo.gan.losses.feature_matching_loss` take. With ``return_features=False``: a list of patch maps.

    Raises:
        ValueError: the input is not 4-D or smaller than ``min_input_size`` on a side (the message names both).
    """

    def __init__(self, input_nc: int, ndf: int = 64, n_layers: int = 3, num_scales: int = 2, norm: str = "batch"):
        super().__init__()
        if num_scales < 1:
            raise ValueError(f"num_scales must be >= 1, got {num_scales}")
        self.num_scales, self.n_layers = num_scales, n_layers
        self.discriminators = nn.ModuleList(NLayerDiscriminator(input_nc, ndf, n_layers, norm)
                                            for _ in range(num_scales))
        self.downsample = nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)

    @property
    def min_input_size(self) -> int:
        """Smallest input side: the coarsest scale (``ceil`` halved ``num_scales - 1`` times) must still see
        ``2 ** n_layers`` pixels."""
        return (2 ** self.n_layers - 1) * 2 ** (self.num_scales - 1) + 1

    def scale_sizes(self, height: int, width: int) -> list[tuple[int, int]]:
        """Input ``(h, w)`` of every scale, finest first (AvgPool2d(3, 2, 1) gives ``ceil(size / 2)``)."""
        sizes = [(height, width)]
        for _ in range(self.num_scales - 1):
            h, w = sizes[-1]
            sizes.append(((h + 1) // 2, (w + 1) // 2))
        return sizes

    def patch_sizes(self, height: int, width: int) -> list[tuple[int, int]]:
        """``(h, w)`` of every scale's patch map, finest first."""
        return [d.patch_size(h, w) for d, (h, w) in zip(self.discriminators, self.scale_sizes(height, width))]

    def _check(self, x: Tensor) -> None:
        if x.dim() != 4:
            raise ValueError(f"MultiscaleDiscriminator expects [B, C, H, W] input, got shape {tuple(x.shape)}")
        height, width = x.shape[-2:]
        coarse_h, coarse_w = self.scale_sizes(height, width)[-1]
        need = self.discriminators[0].min_input_size
        patch_h, patch_w = self.patch_sizes(height, width)[-1]
        if min(coarse_h, coarse_w) < need or min(patch_h, patch_w) < 1:
            raise ValueError(
                f"MultiscaleDiscriminator input {height}x{width} is too small for {self.num_scales} scales of "
                f"{self.n_layers}-layer PatchGANs: the coarsest scale sees {coarse_h}x{coarse_w} but needs at least "
                f"{need}x{need}, i.e. inputs of at least {self.min_input_size}x{self.min_input_size}")

    def forward(self, x: Tensor, return_features: bool = True) -> list:
        self._check(x)
        # NHWC: oneDNN's CPU convolutions are faster in it; with the renderer's, an LSP GAN step took 0.35 s, not 0.44
        x = x.contiguous(memory_format=torch.channels_last)
        outputs = []
        for s, discriminator in enumerate(self.discriminators):
            if s > 0:
                x = self.downsample(x)
            outputs.append(discriminator(x, return_features=return_features))
        return outputs
