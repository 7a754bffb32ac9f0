"""Shared GAN blocks (zoo.gan): loss values by hand, discriminator structure and sizes, VGG loss weights handling.

No real VGG weights exist here: the VGG tests use a random state dict in torchvision's vgg19 layout, passed
explicitly or written to a temporary weights directory.
"""
from __future__ import annotations

import dataclasses
import hashlib
import math

import pytest
import torch
from torch import nn

from zoo import weights
from zoo.errors import WeightsError
from zoo.gan import (
    GANLoss,
    MultiscaleDiscriminator,
    NLayerDiscriminator,
    VGG19PerceptualLoss,
    feature_matching_loss,
    region_box_mask,
    region_crops,
    region_l1_loss,
)

from helpers import one_line_error

# Patch logits used for the hand-computed values: x = [0.5, -1, 2, 0].
LOGITS = torch.tensor([[[[0.5, -1.0], [2.0, 0.0]]]])


def _softplus(v: float) -> float:
    return math.log1p(math.exp(v))


@pytest.mark.parametrize("mode, real_d, fake_d, gen", [
    # LSGAN: mean((x-1)^2) = (0.25+4+1+1)/4, mean(x^2) = (0.25+1+4+0)/4; the generator uses the "real" target.
    ("lsgan", 6.25 / 4, 5.25 / 4, 6.25 / 4),
    # hinge: mean(relu(1-x)) = (0.5+2+0+1)/4, mean(relu(1+x)) = (1.5+0+3+1)/4, generator -mean(x) = -1.5/4.
    ("hinge", 3.5 / 4, 5.5 / 4, -1.5 / 4),
    # vanilla: BCE with logits = mean(softplus(-x)) for real, mean(softplus(x)) for fake.
    ("vanilla", sum(_softplus(-v) for v in (0.5, -1.0, 2.0, 0.0)) / 4,
     sum(_softplus(v) for v in (0.5, -1.0, 2.0, 0.0)) / 4, sum(_softplus(-v) for v in (0.5, -1.0, 2.0, 0.0)) / 4),
])
def test_gan_loss_values(mode, real_d, fake_d, gen):
    loss = GANLoss(mode)
    assert loss(LOGITS, True).item() == pytest.approx(real_d, abs=1e-6)
    assert loss(LOGITS, False).item() == pytest.approx(fake_d, abs=1e-6)
    assert loss(LOGITS, True, for_discriminator=False).item() == pytest.approx(gen, abs=1e-6)


def test_gan_loss_averages_scales_and_takes_last_feature():
    loss = GANLoss("lsgan")
    feature = torch.full((1, 4, 3, 3), 7.0)           # intermediate features are ignored
    multiscale = [[feature, LOGITS], [feature, torch.zeros(1, 1, 2, 2)]]
    assert loss(multiscale, True).item() == pytest.approx((6.25 / 4 + 1.0) / 2)
    assert loss([LOGITS, torch.zeros(1, 1, 2, 2)], False).item() == pytest.approx((5.25 / 4 + 0.0) / 2)


def test_gan_loss_errors():
    with pytest.raises(ValueError, match="'wgan'"):
        GANLoss("wgan")
    with pytest.raises(ValueError, match="target_is_real=True"):
        GANLoss("hinge")(LOGITS, False, for_discriminator=False)
    with pytest.raises(ValueError, match="non-empty"):
        GANLoss()([], True)


def _expected_shapes(batch, size, ndf=64):
    """Per-layer shapes of a default 3-layer PatchGAN: 4x4 convs, padding 2 (stride 2 -> s//2+1, stride 1 -> s+1)."""
    s1 = size // 2 + 1
    s2 = s1 // 2 + 1
    s3 = s2 // 2 + 1
    return [(batch, ndf, s1, s1), (batch, 2 * ndf, s2, s2), (batch, 4 * ndf, s3, s3),
            (batch, 8 * ndf, s3 + 1, s3 + 1), (batch, 1, s3 + 2, s3 + 2)]


@pytest.mark.parametrize("size", [64, 128])
def test_multiscale_structure_and_shapes(size):
    torch.manual_seed(0)
    disc = MultiscaleDiscriminator(input_nc=6, num_scales=2)
    out = disc(torch.randn(2, 6, size, size))
    assert isinstance(out, list) and len(out) == 2
    for scale, features in enumerate(out):                  # finest first; AvgPool halves the input per scale
        assert [tuple(f.shape) for f in features] == _expected_shapes(2, size // 2 ** scale)
    assert [tuple(f[-1].shape[-2:]) for f in out] == disc.patch_sizes(size, size)
    if size == 64:                                          # 64 -> patch maps 11x11 and 7x7
        assert disc.patch_sizes(64, 64) == [(11, 11), (7, 7)]
    patches = disc(torch.randn(2, 6, size, size), return_features=False)
    assert [tuple(p.shape) for p in patches] == [tuple(f[-1].shape) for f in out]


def test_discriminator_layout_and_norms():
    keys = set(MultiscaleDiscriminator(3, ndf=8, num_scales=2).state_dict())
    assert {"discriminators.0.model0.0.weight", "discriminators.1.model4.0.bias",
            "discriminators.0.model1.1.running_mean"} <= keys
    assert not any(k.startswith("discriminators.0.model0.1") for k in keys)   # no norm on the first block
    inorm = NLayerDiscriminator(3, ndf=8, norm="instance")
    assert isinstance(inorm.model1[1], nn.InstanceNorm2d) and not list(inorm.model1[1].parameters())
    plain = NLayerDiscriminator(3, ndf=8, norm="none")
    assert set(plain.state_dict()) == {f"model{j}.0.{p}" for j in range(5) for p in ("weight", "bias")}
    assert [m[0].out_channels for m in (plain.model0, plain.model1, plain.model2, plain.model3)] == [8, 16, 32, 64]
    patch = plain(torch.randn(1, 3, 32, 32))
    assert patch.shape == (1, 1, *plain.patch_size(32, 32))
    assert len(plain(torch.randn(1, 3, 32, 32), return_features=True)) == 5
    with pytest.raises(ValueError, match="'group'"):
        NLayerDiscriminator(3, norm="group")
    with pytest.raises(ValueError, match="n_layers must be >= 1, got 0"):
        NLayerDiscriminator(3, n_layers=0)


def test_multiscale_rejects_too_small_input():
    disc = MultiscaleDiscriminator(3, ndf=8, num_scales=2)
    assert disc.min_input_size == 15
    with pytest.raises(ValueError, match="8x12"):
        disc(torch.randn(1, 3, 8, 12))
    with pytest.raises(ValueError, match="inputs of at least 15x15"):
        disc(torch.randn(1, 3, 14, 15))
    with pytest.raises(ValueError, match=r"expects \[B, C, H, W\] input, got shape \(3, 16, 16\)"):
        disc(torch.randn(3, 16, 16))
    assert len(disc(torch.randn(1, 3, 15, 15))) == 2        # the smallest accepted size works
    three = MultiscaleDiscriminator(3, ndf=8, num_scales=3)
    assert all(h > 0 and w > 0 for h, w in three.patch_sizes(64, 64))
    assert len(three(torch.randn(1, 3, 64, 64))) == 3


def test_feature_matching_by_hand():
    full = lambda v: torch.full((1, 2, 3, 3), float(v))
    # Two scales with two intermediate features each: weight (4/2) * (1/2) = 1 per layer; patch maps ignored.
    fake = [[full(1), full(3), full(9)], [full(0.5), full(2), full(-9)]]
    real = [[full(0), full(1), full(0)], [full(0), full(2), full(0)]]
    assert feature_matching_loss(fake, real).item() == pytest.approx(1 + 2 + 0.5 + 0)
    # One scale, four intermediate features (n_layers=3): weight 4/4 = 1 each.
    assert feature_matching_loss([[full(1)] * 4 + [full(0)]], [[full(0)] * 5]).item() == pytest.approx(4.0)
    with pytest.raises(ValueError, match="scales"):
        feature_matching_loss(fake, real[:1])
    with pytest.raises(ValueError, match="return_features"):
        feature_matching_loss([[full(1)]], [[full(0)]])


def test_feature_matching_zero_for_identical_and_gradients_to_fake_only():
    torch.manual_seed(0)
    disc = MultiscaleDiscriminator(3, ndf=8, num_scales=2)
    real = torch.randn(2, 3, 32, 32, requires_grad=True)
    assert feature_matching_loss(disc(real), disc(real)).item() == 0.0
    fake = torch.randn(2, 3, 32, 32, requires_grad=True)
    loss = feature_matching_loss(disc(fake), disc(real))
    assert loss.item() > 0
    loss.backward()
    assert fake.grad is not None and fake.grad.abs().sum() > 0
    assert real.grad is None                                 # the real branch is detached


def test_region_box_mask_covers_the_grown_box_of_each_image():
    points = torch.tensor([[[10.0, 20.0], [30.0, 30.0]],                 # box 20 x 10 px, grown by 0.25 * 20 = 5
                           [[40.2, 50.0], [40.2, 50.0]]])                 # one point: the pixel around it
    mask = region_box_mask(points, 64, 64)
    assert mask.shape == (2, 1, 64, 64) and set(mask.unique().tolist()) == {0.0, 1.0}
    ys, xs = torch.nonzero(mask[0, 0], as_tuple=True)
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (5, 35, 15, 35)
    assert mask[0].sum() == 31 * 21
    ys, xs = torch.nonzero(mask[1, 0], as_tuple=True)
    assert set(xs.tolist()) == {40, 41} and set(ys.tolist()) == {50}
    assert region_box_mask(points, 64, 64, margin=0.0)[0].sum() == 21 * 11


def test_region_l1_is_the_mean_error_inside_each_box_and_ignores_the_rest():
    real = torch.zeros(2, 3, 8, 8)
    fake = real.clone()
    fake[:, :, 6:, 6:] = 5.0                                              # outside both boxes: no loss
    mask = torch.zeros(2, 1, 8, 8)
    mask[0, :, 0:2, 0:2] = 1                                              # 4 px with error 1
    fake[0, :, 0:2, 0:2] = 1.0
    mask[1, :, 2:6, 2:6] = 1                                              # 16 px, a quarter with error 2
    fake[1, :, 2:4, 2:4] = 2.0
    fake.requires_grad_(True)
    loss = region_l1_loss(fake, real, mask)
    assert loss.item() == pytest.approx((1.0 + 0.5) / 2)                 # images weigh the same whatever the area
    loss.backward()
    assert fake.grad[:, :, 6:, 6:].abs().sum() == 0
    mask[1] = 0                                                           # an empty region contributes 0, not NaN
    assert region_l1_loss(fake, real, mask).item() == pytest.approx(1.0 / 2)


def test_region_crops_sample_the_square_around_the_points():
    ys, xs = torch.meshgrid(torch.arange(64.0), torch.arange(96.0), indexing="ij")
    coordinates = torch.stack([xs, ys])[None].repeat(2, 1, 1, 1).requires_grad_(True)   # [2, 2, 64, 96]: x, y
    points = torch.tensor([[[40.0, 20.0], [60.0, 30.0], [50.0, 22.0]],             # box 20 x 10, centre (50, 25)
                           [[10.0, 10.0], [14.0, 10.0], [12.0, 12.0]]])            # box 4 x 2, centre (12, 11)
    crops = region_crops(coordinates, points, size=30)                              # 1.5 x 20 = 30 px: scale 1
    assert crops.shape == (2, 2, 30, 30)
    # a ramp resamples exactly: output pixel j sits at centre - side / 2 + (j + 0.5) * side / size
    steps = torch.arange(30.0)
    torch.testing.assert_close(crops[0, 0], (35.5 + steps).expand(30, 30))
    torch.testing.assert_close(crops[0, 1], (10.5 + steps)[:, None].expand(30, 30))
    torch.testing.assert_close(crops[1, 0, 0], 9.0 + 6.0 * (steps + 0.5) / 30)      # 6 px magnified to 30
    crops.sum().backward()
    assert coordinates.grad[0, :, 10:40, 35:66].abs().sum() > 0
    assert coordinates.grad[0, :, 45:, :].abs().sum() == 0                          # outside the crop: no gradient
    outside = region_crops(coordinates.detach(), torch.tensor([[[-40.0, -40.0], [-20.0, -30.0]]]), size=8)
    assert outside.abs().sum() == 0                                                 # beyond the image: zeros


# --- VGG19 perceptual loss ----------------------------------------------------------------------------------------

VGG_FILE = "vgg19-dcbb9e9d.pth"


@pytest.fixture(scope="module")
def vgg_state_dict():
    """A random state dict in torchvision's complete vgg19 layout (features + classifier)."""
    import torchvision

    torch.manual_seed(0)
    return torchvision.models.vgg19(weights=None).state_dict()


def test_vgg_missing_file_names_it(tmp_path, monkeypatch):
    with pytest.raises(WeightsError, match=VGG_FILE) as info:
        VGG19PerceptualLoss(weights_dir=tmp_path)
    assert "download.pytorch.org/models/vgg19-dcbb9e9d.pth" in str(info.value)
    monkeypatch.setenv("ZOO_WEIGHTS_DIR", str(tmp_path))      # the default directory goes through zoo.weights
    with pytest.raises(WeightsError, match=VGG_FILE):
        VGG19PerceptualLoss()


def test_vgg_file_with_wrong_hash_is_rejected_and_verified_file_loads(vgg_state_dict, tmp_path, monkeypatch):
    path = tmp_path / VGG_FILE
    torch.save(vgg_state_dict, path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert not digest.startswith("dcbb9e9d")
    with pytest.raises(WeightsError, match="dcbb9e9d"):
        VGG19PerceptualLoss(weights_dir=tmp_path)
    # With the registry expecting this file's own hash prefix, the file path loads the same weights.
    entry = dataclasses.replace(weights.WEIGHTS["vgg19"], sha256_prefix=digest[:8])
    monkeypatch.setitem(weights.WEIGHTS, "vgg19", entry)
    loss = VGG19PerceptualLoss(weights_dir=tmp_path)
    assert torch.equal(loss.features[28].weight, vgg_state_dict["features.28.weight"])


def test_vgg_rejects_other_layouts(vgg_state_dict):
    partial = {k: v for k, v in vgg_state_dict.items() if k != "classifier.6.bias"}
    with pytest.raises(WeightsError, match="1 missing keys"):
        VGG19PerceptualLoss.from_state_dict(partial)
    reshaped = dict(vgg_state_dict, **{"features.0.weight": torch.zeros(64, 1, 3, 3)})
    with pytest.raises(WeightsError, match="shape mismatches"):
        VGG19PerceptualLoss.from_state_dict(reshaped)


def test_vgg_weights_file_that_is_not_a_state_dict_names_the_file(tmp_path, monkeypatch):
    path = tmp_path / VGG_FILE
    torch.save([torch.zeros(1)], path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    monkeypatch.setitem(weights.WEIGHTS, "vgg19",
                        dataclasses.replace(weights.WEIGHTS["vgg19"], sha256_prefix=digest[:8]))
    one_line_error(lambda: VGG19PerceptualLoss(weights_dir=tmp_path),
                   f"{VGG_FILE} (vgg19): expected a state dict (mapping of tensors), got list", error=WeightsError)
    one_line_error(lambda: VGG19PerceptualLoss.from_state_dict([torch.zeros(1)]),
                   "the given VGG19 state dict: expected a state dict", "got list", error=WeightsError)


def test_vgg_features_only_state_dict_names_missing_and_unexpected_keys(vgg_state_dict):
    features_only = {k.removeprefix("features."): v for k, v in vgg_state_dict.items() if k.startswith("features.")}
    one_line_error(lambda: VGG19PerceptualLoss.from_state_dict(features_only),
                   "the given VGG19 state dict is not a torchvision vgg19 state dict",
                   "38 missing keys (classifier.0.bias, classifier.0.weight, classifier.3.bias, ...)",
                   "32 unexpected keys (0.bias, 0.weight, 10.bias, ...)", error=WeightsError)


def test_vgg_loss_explicit_state_dict(vgg_state_dict):
    loss = VGG19PerceptualLoss.from_state_dict(vgg_state_dict)
    # Loaded (copied), not random and not aliasing the caller's tensors.
    assert torch.equal(loss.features[0].weight, vgg_state_dict["features.0.weight"])
    assert loss.features[0].weight.data_ptr() != vgg_state_dict["features.0.weight"].data_ptr()
    assert not any(p.requires_grad for p in loss.parameters())
    loss.train()
    assert not loss.training and not any(m.training for m in loss.modules())
    gen = torch.Generator().manual_seed(0)
    real = torch.rand(2, 3, 32, 32, generator=gen) * 2 - 1
    fake = (torch.rand(2, 3, 32, 32, generator=gen) * 2 - 1).requires_grad_()
    assert loss(real, real.clone()).item() == 0.0
    value = loss(fake, real)
    assert value.item() > 0
    value.backward()
    assert fake.grad is not None and fake.grad.abs().sum() > 0
    assert all(p.grad is None for p in loss.parameters())
    assert [tuple(f.shape[1:]) for f in loss.extract(real)] == [(64, 32, 32), (128, 16, 16), (256, 8, 8),
                                                                (512, 4, 4), (512, 2, 2)]
    with pytest.raises(ValueError, match="16x16"):
        loss(real[..., :8, :8], real[..., :8, :8])
    with pytest.raises(ValueError, match=r"same shape \[B, 3, H, W\], got \(2, 3, 32, 32\) and \(2, 3, 16, 16\)"):
        loss(real, real[..., :16, :16])


def test_vgg_style_term_and_layer_weights(vgg_state_dict):
    styled = VGG19PerceptualLoss.from_state_dict(vgg_state_dict, style_weight=10.0)
    gen = torch.Generator().manual_seed(1)
    a, b = (torch.rand(1, 3, 32, 32, generator=gen) * 2 - 1 for _ in range(2))
    perceptual, style = styled.loss_terms(a, b)
    assert perceptual.item() > 0 and style.item() > 0
    assert styled(a, b).item() == pytest.approx((perceptual + style).item())
    assert styled.loss_terms(a, a.clone())[1].item() == 0.0
    shallow = VGG19PerceptualLoss.from_state_dict(vgg_state_dict, layer_weights=(1, 0, 0, 0, 0))
    assert len(shallow.extract(a)) == 1                        # stops after relu1_1
    with pytest.raises(ValueError, match="5 values"):
        VGG19PerceptualLoss.from_state_dict(vgg_state_dict, layer_weights=(1, 1))
    with pytest.raises(ValueError, match="style_weight must be >= 0, got -1"):
        VGG19PerceptualLoss.from_state_dict(vgg_state_dict, style_weight=-1.0)


def _reference_vgg_terms(state_dict, fake, real, layer_weights, style_weight):
    """By hand, from torchvision's own vgg19 loaded with ``state_dict``: ImageNet normalisation of the [0, 1]
    images, the ReLU right after the first conv of each of the five blocks (relu1_1 ... relu5_1, found by walking
    the network), ``sum_i w_i mean|f_i - r_i|`` and ``style_weight * sum_i mean((G(f_i) - G(r_i))^2)`` with per-sample
    ``G = F F^T / (C H W)``; in float64."""
    import torchvision

    vgg = torchvision.models.vgg19(weights=None)
    vgg.load_state_dict(state_dict)
    vgg = vgg.double().eval()
    mean = torch.tensor([0.485, 0.456, 0.406], dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225], dtype=torch.float64).view(1, 3, 1, 1)

    def features(images):
        x = ((images.double() + 1) / 2 - mean) / std
        out, first_conv_of_block, pools = [], True, 0
        for layer in vgg.features:
            x = layer(x)
            if isinstance(layer, nn.MaxPool2d):
                pools, first_conv_of_block = pools + 1, True
            elif isinstance(layer, nn.ReLU) and first_conv_of_block:
                out.append(x.clone())                    # relu{pools + 1}_1
                first_conv_of_block = False
            if len(out) == 5:
                return out
        raise AssertionError("vgg19 has five blocks")

    def gram(f):
        b, c, h, w = f.shape
        flat = f.reshape(b, c, h * w)
        return flat @ flat.transpose(1, 2) / (c * h * w)

    with torch.no_grad():
        fake_f, real_f = features(fake), features(real)
    l1 = [(f - r).abs().mean() for f, r in zip(fake_f, real_f)]
    style = [((gram(f) - gram(r)) ** 2).mean() for f, r in zip(fake_f, real_f)]
    return (sum(w * t for w, t in zip(layer_weights, l1)), style_weight * sum(style), l1, style)


def test_vgg_loss_matches_a_reference_computed_by_hand(vgg_state_dict):
    gen = torch.Generator().manual_seed(2)
    real = torch.rand(2, 3, 32, 48, generator=gen) * 2 - 1
    fake = (real + 0.3 * torch.randn(2, 3, 32, 48, generator=gen)).clamp(-1, 1)
    layer_weights, style_weight = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0), 5.0        # pix2pixHD's weights
    perceptual_ref, style_ref, l1, style = _reference_vgg_terms(vgg_state_dict, fake, real, layer_weights,
                                                                style_weight)
    assert all(t > 0 for t in l1) and all(t > 0 for t in style)         # every layer takes part in the sums
    loss = VGG19PerceptualLoss.from_state_dict(vgg_state_dict, layer_weights=layer_weights, style_weight=style_weight)
    perceptual, styled = loss.loss_terms(fake, real)
    # float32 module vs float64 reference through 13 convolutions: ~3e-8 relative apart (float32 epsilon: 1.2e-7)
    assert perceptual.item() == pytest.approx(perceptual_ref.item(), rel=1e-6)
    assert styled.item() == pytest.approx(style_ref.item(), rel=1e-6)
    assert loss(fake, real).item() == pytest.approx((perceptual_ref + style_ref).item(), rel=1e-6)
    plain = VGG19PerceptualLoss.from_state_dict(vgg_state_dict)                    # LSP's: all ones, no style
    assert plain(fake, real).item() == pytest.approx(sum(l1).item(), rel=1e-6)
    assert plain.loss_terms(fake, real)[1].item() == 0.0


def test_vgg_stays_out_of_owner_state_dict(vgg_state_dict):
    class Owner(nn.Module):
        def __init__(self):
            super().__init__()
            self.generator = nn.Conv2d(3, 3, 1)
            self.perceptual = VGG19PerceptualLoss.from_state_dict(vgg_state_dict)

    owner = Owner()
    state = owner.state_dict()
    assert set(state) == {"generator.weight", "generator.bias"}
    Owner().load_state_dict(state, strict=True)                 # strict loading of a VGG-free checkpoint works
    tampered = dict(state, **{"perceptual.features.0.weight": torch.zeros(64, 3, 3, 3)})
    owner.load_state_dict(tampered, strict=True)                # a checkpoint cannot replace the verified weights
    assert torch.equal(owner.perceptual.features[0].weight, vgg_state_dict["features.0.weight"])
    owner.train()
    assert owner.training and not owner.perceptual.training
    owner.to(torch.float64)                                     # an ordinary submodule: .to() reaches the VGG
    assert owner.perceptual.features[0].weight.dtype == torch.float64
    x = torch.zeros(1, 3, 16, 16, dtype=torch.float64)
    assert owner.perceptual(x, x).dtype == torch.float64
