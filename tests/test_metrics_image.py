"""SSIM, PSNR and LPIPS against their reference implementations (skimage, the lpips package), and the metric classes
against their functional twins."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage import data
from skimage.filters import gaussian
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from zoo.metrics import functional as F
from zoo.metrics.image import CPBD, PSNR, SSIM
from zoo.metrics.lpips import LPIPS, build_lpips

# lpips 0.1.4 builds its trunk with torchvision's deprecated `pretrained=` argument.
pytestmark = pytest.mark.filterwarnings("ignore:.*(pretrained|weight enum).*:UserWarning")

SKIMAGE_SETTINGS = {
    "wang": dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False),
    "skimage-default": {},
}


@pytest.fixture(scope="module")
def rgb_pairs() -> tuple[np.ndarray, np.ndarray]:
    """float64 [4, 72, 88, 3] originals in [0, 1] and their noisy / blurred / shifted / dimmed copies."""
    rng = np.random.default_rng(0)
    face = data.astronaut()[20:164:2, 150:326:2].astype(np.float64) / 255          # 72 x 88 x 3
    noisy = np.clip(face + rng.normal(0, 12 / 255, face.shape), 0, 1)
    blurred = gaussian(face, sigma=1.5, channel_axis=-1)
    shifted = np.roll(face, 3, axis=1)
    dimmed = face * 0.7
    return np.stack([face] * 4), np.stack([noisy, blurred, shifted, dimmed])


def to_torch(images: np.ndarray) -> torch.Tensor:
    """[..., H, W, C] numpy -> [..., C, H, W] torch."""
    return torch.from_numpy(np.ascontiguousarray(np.moveaxis(images, -1, -3)))


@pytest.mark.parametrize("variant", ["wang", "skimage-default"])
def test_ssim_matches_skimage_float(rgb_pairs, variant):
    target, pred = rgb_pairs
    ours = F.ssim(to_torch(pred), to_torch(target), variant, data_range=1.0)
    reference = [structural_similarity(p, t, data_range=1.0, channel_axis=-1, **SKIMAGE_SETTINGS[variant])
                 for p, t in zip(pred, target)]
    assert ours.dtype == torch.float64 and ours.shape == (4,)
    np.testing.assert_allclose(ours.numpy(), reference, rtol=0, atol=1e-12)


@pytest.mark.parametrize("variant", ["wang", "skimage-default"])
def test_ssim_matches_skimage_uint8_gray_and_batch_dims(rgb_pairs, variant):
    target, pred = (np.round(x * 255).astype(np.uint8) for x in rgb_pairs)
    gray_t, gray_p = target[..., 1], pred[..., 1]                                  # 2-D images, no channel axis
    ours = F.ssim(torch.from_numpy(gray_p)[:, None], torch.from_numpy(gray_t)[:, None], variant, data_range=255)
    reference = [structural_similarity(p, t, data_range=255, **SKIMAGE_SETTINGS[variant])
                 for p, t in zip(gray_p, gray_t)]
    np.testing.assert_allclose(ours.numpy(), reference, rtol=0, atol=1e-12)
    # Leading dimensions are kept: [2, 2, C, H, W] -> [2, 2].
    clips = F.ssim(to_torch(pred).reshape(2, 2, 3, 72, 88), to_torch(target).reshape(2, 2, 3, 72, 88),
                   variant, data_range=255)
    np.testing.assert_allclose(clips.flatten().numpy(), F.ssim(to_torch(pred), to_torch(target), variant, 255))


def test_ssim_variants_differ_and_validate(rgb_pairs):
    target, pred = (to_torch(x[:1]) for x in rgb_pairs)
    wang, default = F.ssim(pred, target, "wang", 1.0), F.ssim(pred, target, "skimage-default", 1.0)
    assert abs(float(wang - default)) > 1e-3                                       # not interchangeable
    assert float(F.ssim(target, target, "wang", 1.0)) == pytest.approx(1.0, abs=1e-12)
    with pytest.raises(ValueError, match="variant"):
        F.ssim(pred, target, "gaussian", 1.0)
    with pytest.raises(ValueError, match="window"):
        F.ssim(pred[..., :10, :10], target[..., :10, :10], "wang", 1.0)
    with pytest.raises(ValueError, match="data_range"):
        F.ssim(pred, target, "wang", 0)


def test_ssim_is_differentiable(rgb_pairs):
    target, pred = (to_torch(x[:1]).float() for x in rgb_pairs)
    pred.requires_grad_(True)
    F.ssim(pred, target, "wang", 1.0).sum().backward()
    assert pred.grad is not None and torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0


def test_psnr_matches_skimage_per_image(rgb_pairs):
    target, pred = rgb_pairs
    ours = F.psnr(to_torch(pred), to_torch(target), data_range=1.0)
    reference = [peak_signal_noise_ratio(t, p, data_range=1.0) for p, t in zip(pred, target)]
    np.testing.assert_allclose(ours.numpy(), reference, rtol=1e-12)
    # uint8 scale
    t8, p8 = (np.round(x * 255).astype(np.uint8) for x in rgb_pairs)
    ours8 = F.psnr(to_torch(p8), to_torch(t8), data_range=255)
    np.testing.assert_allclose(ours8.numpy(), [peak_signal_noise_ratio(t, p, data_range=255) for p, t in zip(p8, t8)],
                               rtol=1e-12)
    # identical images: the README's 100 dB cap, not skimage's inf
    assert (F.psnr(to_torch(t8), to_torch(t8), 255) == F.PSNR_MAX_DB).all() and F.PSNR_MAX_DB == 100.0


def test_psnr_class_counts_an_identical_image_as_100_db(rgb_pairs):
    target, pred = (to_torch(x) for x in rgb_pairs)
    metric = PSNR(data_range=1.0)
    metric.update(target[:1], target[:1])                                          # reproduced exactly
    metric.update(pred[1:], target[1:])
    others = [peak_signal_noise_ratio(t, p, data_range=1.0) for p, t in zip(rgb_pairs[1][1:], rgb_pairs[0][1:])]
    assert float(metric.compute()) == pytest.approx(np.mean([100.0, *others]), rel=1e-12)


def test_psnr_class_is_mean_of_images_not_pooled(rgb_pairs):
    target, pred = (to_torch(x) for x in rgb_pairs)
    metric = PSNR(data_range=1.0)
    metric.update(pred[:1], target[:1])
    metric.update(pred[1:], target[1:])
    per_image = [peak_signal_noise_ratio(t, p, data_range=1.0) for p, t in zip(rgb_pairs[1], rgb_pairs[0])]
    assert float(metric.compute()) == pytest.approx(np.mean(per_image), rel=1e-12)
    pooled = 10 * np.log10(1.0 / np.mean((rgb_pairs[1] - rgb_pairs[0]) ** 2))
    assert abs(float(metric.compute()) - pooled) > 0.1
    assert metric.variant == "PSNR[per-image]"


@pytest.mark.parametrize("variant", ["wang", "skimage-default"])
def test_ssim_class_matches_functional_over_updates(rgb_pairs, variant):
    target, pred = (to_torch(x) for x in rgb_pairs)
    metric = SSIM(variant=variant, data_range=1.0)
    for i in range(0, 4, 3):                                                       # uneven batches: 3 + 1
        metric.update(pred[i:i + 3], target[i:i + 3])
    assert float(metric.compute()) == pytest.approx(float(F.ssim(pred, target, variant, 1.0).mean()), abs=1e-14)
    assert metric.variant == f"SSIM[{variant}]"
    metric.reset()
    assert int(metric.count) == 0
    with pytest.raises(ValueError, match="unknown SSIM variant 'torchmetrics'; expected one of"):
        SSIM(variant="torchmetrics", data_range=1.0)


def test_cpbd_class_matches_functional_over_updates():
    rng = np.random.default_rng(1)
    frames = torch.from_numpy(rng.integers(0, 256, (5, 70, 130), dtype=np.uint8))
    metric = CPBD()
    metric.update(frames[:2])
    metric.update(frames[2:])
    assert float(metric.compute()) == pytest.approx(float(F.cpbd(frames).mean()), abs=1e-15)
    assert metric.higher_is_better and not metric.is_differentiable and metric.variant == "CPBD[cpbd-1.0.7]"


# --- LPIPS -----------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def lpips_net():
    import lpips

    torch.manual_seed(0)
    return lpips.LPIPS(net="alex", pnet_rand=True, verbose=False).eval()


def test_lpips_matches_package(lpips_net, rgb_pairs):
    target, pred = (to_torch(x).float() for x in rgb_pairs)
    with torch.no_grad():
        expected = lpips_net(pred, target, normalize=True).flatten()
        ours = F.lpips(pred, target, lpips_net, normalize=True)
        assert torch.equal(ours, expected)
        assert torch.equal(F.lpips(2 * pred - 1, 2 * target - 1, lpips_net), expected)
        assert F.lpips(target, target, lpips_net, normalize=True).abs().max() == 0

    metric = LPIPS(lpips_net, normalize=True)
    metric.update(pred[:3], target[:3])
    metric.update(pred[3:], target[3:])
    assert float(metric.compute()) == pytest.approx(float(expected.double().mean()), rel=1e-6)
    assert metric.variant == "LPIPS[alex-v0.1]"
    metric.train()
    assert not lpips_net.training                                                 # the network stays in eval


def test_build_lpips_loads_torchvision_trunk(tmp_path, lpips_net):
    import torchvision

    torch.manual_seed(1)
    alexnet = torchvision.models.alexnet(weights=None).eval()
    path = tmp_path / "alexnet-owt-test.pth"
    torch.save(alexnet.state_dict(), path)
    model = build_lpips(path, net="alex")

    x = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        relus = model.net(x)
        for relu, end in zip(relus, (2, 5, 8, 10, 12)):                           # relu1..relu5 of AlexNet
            assert torch.allclose(relu, alexnet.features[:end](x), atol=1e-6)
    # The linear calibration layers are the package's v0.1 weights, untouched by the trunk loading.
    for name, value in lpips_net.state_dict().items():
        if name.startswith("lin"):
            assert torch.equal(model.state_dict()[name], value)

    incomplete = dict(alexnet.state_dict())
    del incomplete["features.3.weight"]
    torch.save(incomplete, path)
    with pytest.raises(KeyError, match="features.3.weight"):
        build_lpips(path)


def test_bad_inputs_name_their_shapes(lpips_net):
    with pytest.raises(ValueError, match=r"ssim expects \[\.\.\., C, H, W\], got shape \(8, 8\)"):
        F.ssim(torch.zeros(8, 8), torch.zeros(8, 8), "wang", 1.0)
    with pytest.raises(ValueError, match=r"lpips expects two \[N, 3, H, W\] batches, got \(1, 3, 32, 32\) and "
                                         r"\(1, 3, 16, 16\)"):
        F.lpips(torch.zeros(1, 3, 32, 32), torch.zeros(1, 3, 16, 16), lpips_net)
    with pytest.raises(TypeError, match="net must be an nn.Module .*got str"):
        LPIPS("alex")
