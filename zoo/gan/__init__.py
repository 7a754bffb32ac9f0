"""GAN building blocks shared by every method in the zoo (LSP's renderer first, then StyleTalk and Chen et al.).

The methods' renderers/image generators are trained the pix2pixHD way: a multi-scale PatchGAN discriminator, an
adversarial loss, discriminator feature matching and a VGG perceptual loss. Keeping one tested implementation here
(instead of one copy per method, as the original repositories do) means the methods differ only where their papers
do -- in the generator, the loss weights and the choices exposed as arguments (GAN mode, norm, number of scales).

* :mod:`zoo.gan.losses`: :class:`GANLoss` (LSGAN / hinge / vanilla), :func:`feature_matching_loss`,
  :func:`region_l1_loss` over a :func:`region_box_mask` (e.g. the mouth).
* :mod:`zoo.gan.discriminators`: :class:`NLayerDiscriminator`, :class:`MultiscaleDiscriminator`.
* :mod:`zoo.gan.perceptual`: :class:`VGG19PerceptualLoss` (torchvision ImageNet VGG19 read through
  :mod:`zoo.weights`; kept out of its owner's checkpoints).
* :mod:`zoo.gan.ema`: :class:`ExponentialMovingAverage`, the generator's weight average (a Lightning callback).
"""
from zoo.gan.discriminators import MultiscaleDiscriminator, NLayerDiscriminator
from zoo.gan.ema import ExponentialMovingAverage
from zoo.gan.losses import GANLoss, feature_matching_loss, region_box_mask, region_crops, region_l1_loss
from zoo.gan.perceptual import VGG19PerceptualLoss

__all__ = ["ExponentialMovingAverage", "GANLoss", "MultiscaleDiscriminator", "NLayerDiscriminator",
           "VGG19PerceptualLoss", "feature_matching_loss", "region_box_mask", "region_crops", "region_l1_loss"]
