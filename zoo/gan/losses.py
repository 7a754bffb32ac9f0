"""Adversarial and feature-matching losses for (multi-scale) PatchGAN discriminators.

Both losses accept the output of :class:`~zoo.gan.discriminators.MultiscaleDiscriminator`: a list over scales
(finest first) of lists of per-layer features ``[f_0, ..., f_{n-1}, patch]`` whose LAST element is the patch
logit map ``[B, 1, h_s, w_s]``. :class:`GANLoss` also accepts a bare patch map or a list of patch maps (one per
scale), so single-scale discriminators work too.

Scale reduction: both losses AVERAGE over scales. pix2pixHD's ``GANLoss`` sums over scales (its feature-matching
loss already averages); with the pix2pixHD default of 2 scales, a pix2pixHD ``lambda`` for the adversarial term
corresponds to ``2 * lambda`` here. Averaging keeps the loss scale independent of ``num_scales``.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["GAN_MODES", "GANLoss", "feature_matching_loss", "region_box_mask", "region_l1_loss"]

GAN_MODES = ("lsgan", "hinge", "vanilla")

# A patch map, a list of patch maps (one per scale), or a list per scale of per-layer features (patch map last).
DiscriminatorOutput = Tensor | Sequence[Tensor | Sequence[Tensor]]


def _patch_maps(predictions: DiscriminatorOutput) -> list[Tensor]:
    """The patch logit map of every scale: the tensor itself, or the last element of each scale's feature list."""
    if isinstance(predictions, Tensor):
        return [predictions]
    if not isinstance(predictions, Sequence) or len(predictions) == 0:
        empty = " (empty)" if isinstance(predictions, Sequence) else ""
        raise ValueError(f"discriminator output must be a tensor or a non-empty list over scales, "
                         f"got {type(predictions).__name__}{empty}")
    maps = []
    for i, scale in enumerate(predictions):
        if isinstance(scale, Tensor):
            maps.append(scale)
        elif isinstance(scale, Sequence) and len(scale) > 0 and isinstance(scale[-1], Tensor):
            maps.append(scale[-1])
        else:
            raise ValueError(f"discriminator output scale {i} must be a tensor or a non-empty list of tensors, "
                             f"got {type(scale).__name__}")
    return maps


class GANLoss(nn.Module):
    """Adversarial loss on patch logits, for the discriminator and for the generator.

    Args:
        mode: ``"lsgan"`` (pix2pixHD/LSP default: MSE to the target label), ``"hinge"`` (SPADE/StyleTalk style)
            or ``"vanilla"`` (binary cross-entropy on logits; the discriminator has no sigmoid).
        target_real_label: LSGAN/vanilla target for real samples.
        target_fake_label: LSGAN/vanilla target for fake samples.

    Call ``loss(predictions, target_is_real, for_discriminator=True) -> Tensor`` (scalar):

    * ``predictions``: ``[B, 1, h, w]`` patch logits, a list of those (one per scale) or the multi-scale
      discriminator output (list over scales of per-layer feature lists, patch map last). Averaged over scales.
    * ``target_is_real``: whether the samples should be classified real. The generator passes ``True`` for its
      fakes.
    * ``for_discriminator``: matters only for hinge, whose generator loss is ``-mean(D(fake))`` instead of a
      margin (the margin would stop the generator's gradient once the discriminator is fooled by 1).

    Per scale with logits ``x``: LSGAN ``mean((x - t)^2)``; vanilla ``BCEWithLogits(x, t)``; hinge discriminator
    ``mean(relu(1 - x))`` for real and ``mean(relu(1 + x))`` for fake; hinge generator ``-mean(x)``.
    """

    def __init__(self, mode: str = "lsgan", target_real_label: float = 1.0, target_fake_label: float = 0.0):
        super().__init__()
        if mode not in GAN_MODES:
            raise ValueError(f"unknown GAN loss mode {mode!r}; expected one of {', '.join(GAN_MODES)}")
        self.mode = mode
        self.target_real_label = float(target_real_label)
        self.target_fake_label = float(target_fake_label)

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}"

    def _single(self, logits: Tensor, target_is_real: bool, for_discriminator: bool) -> Tensor:
        if self.mode == "hinge":
            if for_discriminator:
                # Margin loss: real logits are pushed above +1, fake ones below -1; nothing beyond the margin.
                return F.relu(1.0 - logits).mean() if target_is_real else F.relu(1.0 + logits).mean()
            if not target_is_real:
                raise ValueError("hinge GAN loss for the generator is defined only for target_is_real=True")
            return -logits.mean()
        # Labels are built per call with the logits' shape, dtype and device (no cached label tensors, which
        # pix2pixHD keeps and which break when the patch size or device changes).
        label = self.target_real_label if target_is_real else self.target_fake_label
        target = torch.full_like(logits, label)
        if self.mode == "lsgan":
            return F.mse_loss(logits, target)
        return F.binary_cross_entropy_with_logits(logits, target)

    def forward(self, predictions: DiscriminatorOutput, target_is_real: bool,
                for_discriminator: bool = True) -> Tensor:
        maps = _patch_maps(predictions)
        total = sum(self._single(m, target_is_real, for_discriminator) for m in maps)
        return total / len(maps)


def feature_matching_loss(fake_outputs: Sequence[Sequence[Tensor]],
                          real_outputs: Sequence[Sequence[Tensor]]) -> Tensor:
    """pix2pixHD discriminator feature-matching loss (a generator loss).

    Args:
        fake_outputs: discriminator output on generated samples: list over ``S`` scales of lists
            ``[f_0, ..., f_{n-1}, patch]`` (``f_j``: ``[B, C_j, h_j, w_j]``), as
            :meth:`MultiscaleDiscriminator.forward` returns.
        real_outputs: the same structure on real samples. Detached here: the loss trains the generator only, and
            the real branch must not push the discriminator towards features that are easy to match.

    Returns:
        Scalar ``sum_s (1/S) sum_{j<n} (4/n) * L1(f_j(fake), f_j(real))`` over the intermediate features (the patch
        map, the last element, is excluded: the adversarial loss handles it). ``4/n`` is pix2pixHD's per-layer
        weight ``4 / (n_layers + 1)`` (``n = n_layers + 1`` intermediate features), so ``n_layers=3`` weighs every
        layer 1.

    Raises:
        ValueError: the two outputs differ in scales or layers, or a scale has no intermediate features
            (the discriminator was run without ``return_features``).
    """
    if len(fake_outputs) != len(real_outputs) or len(fake_outputs) == 0:
        raise ValueError(f"feature matching needs the same non-zero number of scales, got {len(fake_outputs)} "
                         f"fake and {len(real_outputs)} real")
    num_scales = len(fake_outputs)
    total = None
    for s, (fake, real) in enumerate(zip(fake_outputs, real_outputs)):
        if isinstance(fake, Tensor) or isinstance(real, Tensor) or len(fake) != len(real) or len(fake) < 2:
            raise ValueError(f"feature matching: scale {s} must be two lists of equal length >= 2 (intermediate "
                             f"features + patch map); run the discriminator with return_features=True")
        n_features = len(fake) - 1
        weight = (4.0 / n_features) / num_scales
        for f_fake, f_real in zip(fake[:-1], real[:-1]):
            term = weight * F.l1_loss(f_fake, f_real.detach())
            total = term if total is None else total + term
    return total


def region_box_mask(points: Tensor, height: int, width: int, margin: float = 0.25) -> Tensor:
    """Mask of each image's axis-aligned box around ``points`` (e.g. the 20 mouth landmarks), grown by ``margin``
    of the box's larger side on every side.

    Args:
        points: float [N, P, 2] pixel coordinates (x, y), pixel centres at integers.
        height, width: the image size.

    Returns:
        float [N, 1, height, width]: 1 on the pixels whose centres lie in the box (its edges rounded outwards, so a
        box around one point covers the 1-4 pixels around it), 0 elsewhere.
    """
    low, high = points.amin(dim=1), points.amax(dim=1)                                  # [N, 2]
    grow = margin * (high - low).amax(dim=1, keepdim=True)
    low, high = low - grow, high + grow
    xs = torch.arange(width, device=points.device, dtype=points.dtype)
    ys = torch.arange(height, device=points.device, dtype=points.dtype)
    inside_x = (xs >= low[:, :1].floor()) & (xs <= high[:, :1].ceil())                 # [N, W]
    inside_y = (ys >= low[:, 1:].floor()) & (ys <= high[:, 1:].ceil())                 # [N, H]
    return (inside_y[:, :, None] & inside_x[:, None, :]).unsqueeze(1).float()


def region_crops(images: Tensor, points: Tensor, size: int, scale: float = 1.5) -> Tensor:
    """Square crops around ``points`` (e.g. the 20 mouth landmarks), bilinearly resampled to ``size`` x ``size``.

    Each crop is centred on the points' bounding box and ``scale`` times its larger side wide, so a local
    discriminator sees the region at a fixed scale wherever it is in the frame; gradients flow to ``images``.

    Args:
        images: float [N, C, H, W]; points: float [N, P, 2] pixel coordinates (x, y), pixel centres at integers.

    Returns:
        float [N, C, size, size] (zeros where a crop leaves the image).
    """
    low, high = points.amin(dim=1), points.amax(dim=1)                                  # [N, 2]
    centre = (low + high) / 2
    half = scale * (high - low).amax(dim=1) / 2                                         # [N]
    h, w = images.shape[-2:]
    # affine_grid maps the output's [-1, 1] square to normalised input coordinates (align_corners=False:
    # pixel x spans [x - 0.5, x + 0.5], the image [-0.5, W - 0.5])
    theta = torch.zeros(len(images), 2, 3, device=images.device, dtype=images.dtype)
    theta[:, 0, 0], theta[:, 1, 1] = 2 * half / w, 2 * half / h
    theta[:, 0, 2], theta[:, 1, 2] = (2 * centre[:, 0] + 1) / w - 1, (2 * centre[:, 1] + 1) / h - 1
    grid = F.affine_grid(theta, [len(images), images.shape[1], size, size], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def region_l1_loss(fake: Tensor, real: Tensor, mask: Tensor) -> Tensor:
    """L1 averaged over the masked pixels only (each image's region weighs the same whatever its area).

    A whole-image L1 spends ~1-3 % of its gradient on a 128 px frame's mouth; this term makes the region that
    carries the speech weigh as much as the whole frame, whatever its size.

    Args:
        fake, real: [N, C, H, W]; mask: [N, 1, H, W] in {0, 1}. An image whose region is empty (e.g. a box outside
            the frame) contributes 0.
    """
    area = mask.sum(dim=(1, 2, 3)).clamp(min=1.0) * fake.shape[1]
    per_image = ((fake - real).abs() * mask).sum(dim=(1, 2, 3)) / area
    return per_image.mean()
