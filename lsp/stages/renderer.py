"""LSP stage 6: the image-to-image renderer (Feature2Face), a conditional GAN trained with manual optimisation.

Input: the edge map of the face landmarks and the shoulders (1 channel) + the person's 4 candidate images
(12 channels); output: the frame. Losses (LSP's ``backward_G``): LSGAN on a multi-scale PatchGAN, L1 x 100,
VGG19 perceptual x 10 and feature matching x 10; the discriminator sees the condition with the image
(13 + 3 channels, what LSP intended; its shipped D was built for 26, see the README's method notes). Not in LSP:
an extra L1 on the lips' box (``lambda_mouth_l1``) and a second, local discriminator on a crop around the lips
(``lambda_mouth_gan``); both are training-only, the assembled model keeps the generator alone.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional

import torch
import torch.nn.functional as F

from lsp.networks.renderer import Feature2FaceGenerator
from lsp.person import RENDERER_INPUT_CHANNELS
from lsp.stages.person import PersonStage
from zoo.errors import ConfigError
from zoo.metrics.functional import LANDMARK_REGIONS, psnr
from zoo.gan import (ExponentialMovingAverage, GANLoss, MultiscaleDiscriminator, VGG19PerceptualLoss,
                     feature_matching_loss, region_box_mask, region_crops, region_l1_loss)
from zoo.model import frames_to_float


@dataclass
class RendererConfig:
    identity: int = 0
    num_downs: int = 6                 # UNet levels: 2x2 innermost at 128 px (LSP: 8 at 512); frames must be
                                       # divisible by 2**num_downs
    # LSP: ngf = ndf = 64 at 512 px. 16 and 16 make a GAN step 4.6x cheaper on a CPU (0.34 s for 8 frames at
    # 128 px, 2 threads; the discriminator was most of it; NHWC later saved another ~20%), and in the 15-minute
    # budget more steps beat width: on ground-truth landmarks ndf 16 with 1,440 steps scored M-LMD 0.195 and
    # Sync_conf 5.65 against 0.277 / 0.263 and 4.06 for ndf 32 with 864 steps in the same time (README, method
    # notes).
    ngf: int = 16
    blocks_per_level: int = 1          # residual blocks per level and side (LSP: 2 "large" for May, 1 "normal")
    ndf: int = 16
    discriminator_layers: int = 3
    discriminator_scales: int = 2
    gan_mode: str = "lsgan"
    lambda_l1: float = 100.0
    lambda_feat: float = 10.0
    # Not in LSP: an L1 over the box around the lip landmarks (x this, averaged over the box's pixels; 0: off, as
    # LSP). At 128 px the box is ~3 % of the frame, so 30 weighs a mouth pixel ~9x a pixel elsewhere. Two runs
    # against two without it: end-to-end M-LMD 0.337 / 0.339 vs 0.362 / 0.387, Sync_conf 4.70 / 4.51 vs 4.52 / 3.35.
    lambda_mouth_l1: float = 30.0
    perceptual: bool = False           # LSP: true (x10); needs vgg19-dcbb9e9d.pth in the weights directory
    lambda_vgg: float = 10.0
    lambda_style: float = 0.0          # LSP's Gram style loss weight (10 upstream); only with perceptual
    # LSP: 1e-4 for 20 epochs at batch 1. The default budget makes 800 steps; at 4e-4 (with the mouth terms x 3)
    # the renderer on ground-truth landmarks scored M-LMD 0.304 / 0.201 on identities 0 / 1 against 0.426 / 0.267
    # at 2e-4 with x 1 (README, method notes).
    lr: float = 4e-4
    betas: tuple[float, float] = (0.5, 0.999)
    decay_fraction: float = 0.5        # LR constant, then linear to 0 over this last fraction (LSP: 10 + 10 epochs)
    # Not in LSP: the renderer is the exponential moving average of the generator's weights, updated every batch
    # (0: the last weights, as LSP). On ground-truth landmarks, same run: M-LMD 0.246 vs 0.270 (README).
    ema_decay: float = 0.99
    # Not in LSP (opt-in): a conv of the full-resolution input (the edge map) is added to the frame, which LSP
    # builds from features at half its resolution. Mixed on ground-truth landmarks (README, method notes): identity
    # 0 M-LMD 0.234 vs 0.277 / 0.263, identity 1 0.285 vs 0.214 (Sync_conf 2.42 vs 4.44) at ndf 32; at ndf 16
    # 0.205 vs 0.195 on identity 0. The official Feature2Face.pkl has no such conv.
    input_skip: bool = False
    # Not in LSP: a conditional PatchGAN on a square crop around the lips (edge map + image, resampled to
    # mouth_crop_size px), its own LSGAN and feature-matching terms x lambda_mouth_gan (0: off, as LSP). Without it
    # the lips come out blurred and the detector reads their corners ~0.45 px inward; with it, on ground-truth
    # landmarks, same 1,600 steps: M-LMD 0.311 vs 0.484, end to end 0.456 vs 0.642 (README, method notes). x 3
    # at the default's 800 steps and lr 4e-4: the lips read 0.11 px off with 86 % of their motion (x 1: 0.14, 72 %).
    lambda_mouth_gan: float = 3.0
    mouth_crop_size: int = 64

    bounds: ClassVar[dict[str, str]] = {
        "num_downs": "[2, inf)", "ngf": "[1, inf)", "blocks_per_level": "[1, inf)", "ndf": "[1, inf)",
        "discriminator_layers": "[1, inf)", "discriminator_scales": "[1, inf)", "lambda_l1": "[0, inf)",
        "lambda_feat": "[0, inf)", "lambda_mouth_l1": "[0, inf)", "lambda_vgg": "[0, inf)", "lambda_style": "[0, inf)",
        "lr": "(0, inf)", "decay_fraction": "[0, 1]", "ema_decay": "[0, 1)", "lambda_mouth_gan": "[0, inf)",
        "mouth_crop_size": "[16, inf)"}


def check_renderer_depth(num_downs: int, frame_size: int) -> None:
    """One line unless ``frame_size`` is divisible by the generator's ``2 ** num_downs``."""
    if frame_size % 2 ** num_downs:
        raise ConfigError(f"the renderer's {num_downs} levels need frames divisible by {2 ** num_downs}, the data "
                          f"has {frame_size} px; set model.num_downs (model.renderer.num_downs under `zoo fit "
                          f"--model lsp`)")


def renderer_generator(cfg: RendererConfig) -> Feature2FaceGenerator:
    """The stage's generator, as the stage trains it and the assembled LSP runs it."""
    return Feature2FaceGenerator(RENDERER_INPUT_CHANNELS, 3, cfg.num_downs, cfg.ngf, cfg.blocks_per_level,
                                 cfg.input_skip)


class RendererStage(PersonStage):
    """``batch``: ``frames`` uint8 [B, T, 3, H, W], ``landmarks2d`` [B, T, 68, 2], ``shoulders2d`` [B, T, 18, 2]; the
    B x T frames form one image batch."""

    data_fields = ("frames", "landmarks2d", "shoulders2d", "audio")
    # The last weights, as LSP: a GAN's validation PSNR favours blur, and at the default budget the
    # best-PSNR epoch was an earlier, blurrier renderer (Sync_conf 2.4 vs 4.4 end to end).
    monitor = None
    ddp_find_unused_parameters = True

    def __init__(self, cfg: RendererConfig):
        super().__init__()
        self.save_hyperparameters(vars(cfg), logger=False)
        self.cfg = cfg
        self.automatic_optimization = False
        self.generator = renderer_generator(cfg)
        self.discriminator = MultiscaleDiscriminator(RENDERER_INPUT_CHANNELS + 3, cfg.ndf, cfg.discriminator_layers,
                                                     cfg.discriminator_scales, norm="batch")
        self.mouth_discriminator = (MultiscaleDiscriminator(4, cfg.ndf, cfg.discriminator_layers, 1, norm="batch")
                                    if cfg.lambda_mouth_gan > 0 else None)
        self.gan_loss = GANLoss(cfg.gan_mode)
        # Explicit only: the loss refuses to run without the verified ImageNet file (never random VGG weights).
        self.perceptual = VGG19PerceptualLoss(style_weight=cfg.lambda_style) if cfg.perceptual else None

    def setup(self, stage: Optional[str] = None) -> None:
        check_renderer_depth(self.cfg.num_downs, self.trainer.datamodule.frame_size)
        super().setup(stage)

    def configure_callbacks(self) -> list:
        return [ExponentialMovingAverage(self.cfg.ema_decay)] if self.cfg.ema_decay > 0 else []

    def condition(self, landmarks2d: torch.Tensor, shoulders2d: torch.Tensor) -> torch.Tensor:
        """The generator input [N, 13, H, W] for N = B x T frames of landmarks [B, T, 68, 2] and shoulders
        [B, T, 18, 2]."""
        return self.profile.renderer_input(landmarks2d, shoulders2d)

    def render(self, condition: torch.Tensor) -> torch.Tensor:
        """Frames [N, 3, H, W] in [0, 1] from conditions [N, 13, H, W]."""
        return self.generator(condition).add(1).div(2)

    def training_step(self, batch: dict, batch_idx: int) -> None:
        optimizer_g, optimizer_d = self.optimizers()
        cfg = self.cfg
        condition = self.condition(batch["landmarks2d"], batch["shoulders2d"])
        real = frames_to_float(batch["frames"].flatten(0, 1)).mul(2).sub(1)
        fake = self.generator(condition)
        lips = batch["landmarks2d"].flatten(0, 1)[:, LANDMARK_REGIONS["mouth"]].float()         # [N, 20, 2]
        if self.mouth_discriminator is not None:   # edge map + image around the lips, cropped once a step
            real_crop, fake_crop = (region_crops(torch.cat([condition[:, :1], image], 1), lips, cfg.mouth_crop_size)
                                    for image in (real, fake))

        self.toggle_optimizer(optimizer_d)
        real_outputs = self.discriminator(torch.cat([condition, real], 1))
        fake_outputs = self.discriminator(torch.cat([condition, fake.detach()], 1))
        loss_d = 0.5 * (self.gan_loss(real_outputs, True) + self.gan_loss(fake_outputs, False))
        if self.mouth_discriminator is not None:
            real_mouth = self.mouth_discriminator(real_crop)
            fake_mouth = self.mouth_discriminator(fake_crop.detach())
            loss_d = loss_d + 0.5 * cfg.lambda_mouth_gan * (self.gan_loss(real_mouth, True) +
                                                             self.gan_loss(fake_mouth, False))
        optimizer_d.zero_grad(set_to_none=True)
        self.manual_backward(loss_d)
        optimizer_d.step()
        self.untoggle_optimizer(optimizer_d)

        self.toggle_optimizer(optimizer_g)
        # Feature matching compares the fakes' features with the reals' under the same, just updated, D (as LSP's
        # backward_G): the reals' from before D's step would leave it a floor even for a perfect generator.
        with torch.no_grad():
            real_outputs = self.discriminator(torch.cat([condition, real], 1))
            if self.mouth_discriminator is not None:
                real_mouth = self.mouth_discriminator(real_crop)
        fake_outputs = self.discriminator(torch.cat([condition, fake], 1))
        losses = {"gan": self.gan_loss(fake_outputs, True, for_discriminator=False),
                  "l1": F.l1_loss(fake, real) * cfg.lambda_l1,
                  "feat": feature_matching_loss(fake_outputs, real_outputs) * cfg.lambda_feat}
        if self.mouth_discriminator is not None:
            fake_mouth = self.mouth_discriminator(fake_crop)
            losses["mouth_gan"] = self.gan_loss(fake_mouth, True, for_discriminator=False) * cfg.lambda_mouth_gan
            losses["mouth_feat"] = (feature_matching_loss(fake_mouth, real_mouth) * cfg.lambda_feat
                                    * cfg.lambda_mouth_gan)
        if cfg.lambda_mouth_l1 > 0:
            mouth = region_box_mask(lips, *real.shape[-2:])
            losses["mouth_l1"] = region_l1_loss(fake, real, mouth) * cfg.lambda_mouth_l1
        if self.perceptual is not None:
            losses["vgg"] = self.perceptual(fake, real) * cfg.lambda_vgg
        loss_g = sum(losses.values())
        optimizer_g.zero_grad(set_to_none=True)
        self.manual_backward(loss_g)
        optimizer_g.step()
        self.untoggle_optimizer(optimizer_g)
        for scheduler in self.lr_schedulers():
            scheduler.step()

        n = len(real)
        self.log_dict({f"train/g_{k}": v for k, v in losses.items()}, batch_size=n)
        self.log_dict({"train/loss_g": loss_g, "train/loss_d": loss_d}, prog_bar=True, batch_size=n)

    def step(self, batch: dict, stage: str) -> torch.Tensor:
        rendered = self.render(self.condition(batch["landmarks2d"], batch["shoulders2d"]))
        real = frames_to_float(batch["frames"].flatten(0, 1))
        l1 = F.l1_loss(rendered, real)
        # identical frames give inf: cap at 100 dB as the metric suite's gt row does
        score = psnr(rendered.clamp(0, 1), real).clamp(max=100).mean().float()
        self.log_dict({f"{stage}/l1": l1, f"{stage}/psnr": score}, prog_bar=True, sync_dist=True, batch_size=len(real))
        return l1

    @torch.no_grad()
    def preview(self, batch: dict) -> torch.Tensor:
        """Ground truth | rendered from the true landmarks, float [B, T, 3, H, 2W]."""
        b, t = batch["frames"].shape[:2]
        rendered = self.render(self.condition(batch["landmarks2d"], batch["shoulders2d"]))
        return torch.cat([frames_to_float(batch["frames"]).to(rendered), rendered.reshape(b, t, *rendered.shape[1:])],
                         dim=-1)

    def configure_optimizers(self):
        cfg = self.cfg
        optimizer_g = torch.optim.Adam(self.generator.parameters(), lr=cfg.lr, betas=tuple(cfg.betas))
        discriminators = [d for d in (self.discriminator, self.mouth_discriminator) if d is not None]
        optimizer_d = torch.optim.Adam([p for d in discriminators for p in d.parameters()], lr=cfg.lr,
                                       betas=tuple(cfg.betas))
        total = self.scheduled_batches(optimizer_steps_per_batch=2)   # G and D
        constant = int(total * (1 - cfg.decay_fraction))

        def linear_decay(step: int) -> float:
            return 1.0 if step < constant else max(0.0, 1.0 - (step - constant) / max(1, total - constant))

        schedulers = [torch.optim.lr_scheduler.LambdaLR(o, linear_decay) for o in (optimizer_g, optimizer_d)]
        return [optimizer_g, optimizer_d], schedulers
