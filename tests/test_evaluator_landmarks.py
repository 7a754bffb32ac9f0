"""The ``landmark_detector`` evaluator: coordinates, augmentation geometry, training, quality check, save/load, CLI."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import zoo.evaluators.landmark_detector as ld  # registers the model
from zoo.cli import main
from zoo.data.clip_format import open_dataset
from zoo.data.fake import write_fake_dataset
from zoo.errors import ConfigError
from zoo.evaluators.common import to_float_images
from zoo.registry import create_model
from helpers import one_line_error, optimise

SMALL = dict(input_size=32, widths=[8, 8, 16, 16], decoder_width=8, mouth_input_size=32, mouth_widths=[8, 8, 16, 16],
             mouth_decoder_width=8)


def _batch(root, frames: int = 8):
    """A datamodule-style batch [1, T, ...] of the first train clip of a corpus."""
    clip = open_dataset(root).clip(open_dataset(root).clip_ids("train")[0])
    images = torch.from_numpy(clip.read_frames(0, frames)).permute(0, 3, 1, 2)[None]
    landmarks = torch.from_numpy(np.array(clip.track("landmarks2d")[:frames], dtype=np.float32))[None]
    return {"frames": images, "landmarks2d": landmarks}


def test_forward_shapes_and_layouts():
    model = ld.LandmarkDetector(ld.LandmarkDetectorConfig(**SMALL)).eval()
    hwc = np.random.default_rng(0).integers(0, 256, (3, 40, 56, 3), dtype=np.uint8)
    out = model(hwc).detach()
    assert out.shape == (3, 68, 2) and out.dtype == torch.float32
    chw = torch.from_numpy(hwc).permute(0, 3, 1, 2)
    with torch.no_grad():
        torch.testing.assert_close(model(chw), out)                          # same frames, other layout
        torch.testing.assert_close(model(chw.float() / 255), out, atol=1e-4, rtol=0)
    detected = model.detect(hwc, batch_size=2)
    assert isinstance(detected, np.ndarray) and detected.shape == (3, 68, 2) and detected.dtype == np.float32
    np.testing.assert_allclose(detected, out.numpy(), atol=1e-5)
    # soft-argmax output lies inside the crop box (x within 0.1..0.9 of 56 px, y within 0.13..0.93 of 40 px)
    assert (out[..., 0] > 5.1).all() and (out[..., 0] < 50.4).all() and (out[..., 1] < 37.2).all()


def test_pixel_normalised_round_trip_and_crop():
    px = torch.tensor([[[0.0, 0.0], [63.0, 31.0], [31.5, 15.5]]])
    whole = (0, 0, 64, 32)
    u = ld.LandmarkDetector._to_normalised(px, whole)
    torch.testing.assert_close(ld.LandmarkDetector._to_pixels(u, whole), px)
    torch.testing.assert_close(u[0, 2], torch.tensor([0.0, 0.0]))           # frame centre -> 0
    torch.testing.assert_close(u[0, 0], torch.tensor([-1 + 1 / 64, -1 + 1 / 32]))   # first pixel centre
    model = ld.LandmarkDetector(ld.LandmarkDetectorConfig(**{**SMALL, "crop_box": [0.25, 0.5, 0.75, 1.0]}))
    box = model.crop_region(32, 64)
    assert box == (16, 16, 32, 16)
    torch.testing.assert_close(ld.LandmarkDetector._to_normalised(torch.tensor([31.5, 23.5]), box),
                               torch.tensor([0.0, 0.0]))                    # crop centre -> 0
    # the working image of a crop that is already S x S is the crop itself
    frames = torch.rand(1, 3, 64, 128)
    model = ld.LandmarkDetector(ld.LandmarkDetectorConfig(**{**SMALL, "crop_box": [0.25, 0.25, 0.5, 0.75]}))
    box = model.crop_region(64, 128)
    assert box == (32, 16, 32, 32)
    torch.testing.assert_close(model._to_working(frames, box), frames[..., 16:48, 32:64])
    with pytest.raises(ld.ConfigError, match="crop_box"):
        ld.LandmarkDetector(ld.LandmarkDetectorConfig(crop_box=[0.5, 0.0, 0.4, 1.0]))


def test_affine_jitter_moves_targets_with_the_image():
    """A bright dot warped by the augmentation lands where the transformed coordinates say."""
    torch.manual_seed(0)
    size, n = 64, 6
    x = torch.zeros(n, 3, size, size)
    dots = torch.tensor([[20.0, 30.0]]).repeat(n, 1)
    x[:, :, 30, 20] = 1.0
    x = torch.nn.functional.avg_pool2d(torch.nn.functional.pad(x, (2, 2, 2, 2)), 5, 1)   # a 5x5 blob, same centre
    whole = (0, 0, size, size)
    coords = ld.LandmarkDetector._to_normalised(dots[:, None], whole)
    warped, moved = ld._affine_jitter(x, coords, degrees=15, scale=0.1, aspect=0.1, shift=0.1)
    expected = ld.LandmarkDetector._to_pixels(moved, whole)[:, 0]
    weights = warped[:, 0]
    ys, xs = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32),
                            indexing="ij")
    centroid = torch.stack([(weights * xs).sum((1, 2)), (weights * ys).sum((1, 2))], -1) / weights.sum((1, 2))[:, None]
    torch.testing.assert_close(centroid, expected, atol=0.15, rtol=0)


def test_nme_definition():
    target = torch.zeros(68, 2)
    target[45, 0] = 10.0                           # inter-ocular distance 10 (points 36 and 45)
    pred = target.clone()
    pred[:, 1] += 0.5                              # every point 0.5 px off
    assert float(ld.landmark_nme(pred, target)) == pytest.approx(0.05)
    assert float(ld.landmark_nme(pred, target, ld.MOUTH)) == pytest.approx(0.05)


def test_training_steps_reduce_the_loss(tiny_corpus):
    torch.manual_seed(0)
    model = ld.LandmarkDetector(ld.LandmarkDetectorConfig(**SMALL, rotate_degrees=0, scale_jitter=0, shift_jitter=0,
                                                          photometric=0, blur_prob=0, noise_std=0))
    model.log = lambda *args, **kwargs: None       # no trainer attached
    batch = _batch(tiny_corpus)
    losses = optimise(lambda: model.training_step(batch, 0), model.parameters(), steps=30, lr=5e-3)
    assert math.isfinite(losses[0]) and max(losses[-3:]) < 0.6 * losses[0]


def test_augmented_training_step_runs(tiny_corpus):
    model = ld.LandmarkDetector(ld.LandmarkDetectorConfig(**SMALL, blur_prob=1.0))
    model.log = lambda *args, **kwargs: None
    loss = model.training_step(_batch(tiny_corpus, 4), 0)
    loss.backward()
    assert math.isfinite(loss.item())


def test_evaluate_quality(tiny_corpus):
    model = ld.LandmarkDetector(ld.LandmarkDetectorConfig(**SMALL)).train()
    result = ld.evaluate_quality(model, open_dataset(tiny_corpus), "test", frame_stride=10)
    assert model.training                                                    # mode restored
    assert set(result) >= {"nme", "nme_mouth", "nme_p95", "error_px", "frames", "clips", "bar", "passed"}
    assert 0 < result["nme"] < 10 and result["error_px"] > 0 and result["bar"] == 0.015
    assert result["frames"] == result["clips"] * 5 and result["passed"] is False   # 50-frame clips, stride 10
    again = ld.evaluate_quality(model, str(tiny_corpus), "test", frame_stride=10)
    assert again["nme"] == pytest.approx(result["nme"])


def test_what_the_detector_cannot_read_is_one_line(tmp_path):
    model = ld.LandmarkDetector(ld.LandmarkDetectorConfig(**SMALL))
    one_line_error(lambda: to_float_images(torch.zeros(2, 4, 8, 8)),
                   "expected RGB images [N, 3, H, W] or [N, H, W, 3], got shape (2, 4, 8, 8)")
    one_line_error(lambda: ld.evaluate_quality(model, {"root": "x"}, "test"),
                   "cannot find a dataset in dict (pass a ClipDataset, a dataset directory or a datamodule")
    dataset = open_dataset(write_fake_dataset(tmp_path / "fake", splits={"train": 1, "test": 1}, seconds=1.0,
                                              size=64))
    dataset.splits["test"] = []                           # in memory only: a prepared split always lists clips
    one_line_error(lambda: ld.evaluate_quality(model, dataset, "test"), "split 'test' of dataset 'fake' has no clips")


def test_create_model_state_dict_round_trip():
    cfg = ld.LandmarkDetectorConfig(**SMALL)
    model = create_model("landmark_detector", cfg).eval()
    assert isinstance(model, ld.LandmarkDetector)
    clone = create_model("landmark_detector", dict(vars(cfg))).eval()        # from a plain dict (the kit's json)
    clone.load_state_dict(model.state_dict())
    frames = np.random.default_rng(1).integers(0, 256, (2, 48, 48, 3), dtype=np.uint8)
    np.testing.assert_array_equal(model.detect(frames), clone.detect(frames))


def test_cli_fit_smoke(tiny_corpus, tmp_path, capsys):
    code = main(["fit", "--model", "landmark_detector", "experiment=smoke", "logger=none", "trainer.progress_bar=none",
                 f"run.runs_dir={tmp_path}", "model.input_size=32", "model.widths=[8,8,16,16]",
                 "model.decoder_width=8", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1"])
    assert code == 0, capsys.readouterr().err
    assert (tmp_path / "landmark_detector" / "smoke" / "checkpoints" / "last.ckpt").is_file()


def test_mouth_squares_resample_and_map_back():
    """A dot read from a turned square (and from a frame larger than the square's working size) maps back to
    where it is in the frame."""
    size, n = 32, 3
    for frame in (96, 320):                             # 320: the square is read from an antialiased downscale
        x = torch.zeros(n, 3, frame, frame)
        dot = torch.tensor([frame * 0.55, frame * 0.6])
        ys, xs = torch.meshgrid(torch.arange(frame, dtype=torch.float32), torch.arange(frame, dtype=torch.float32),
                                indexing="ij")
        x[:] = torch.exp(-((xs - dot[0]) ** 2 + (ys - dot[1]) ** 2) / (2 * (frame / 64) ** 2))
        centre = torch.tensor([[frame * 0.5, frame * 0.5], [frame * 0.52, frame * 0.63], [frame * 0.58, frame * 0.55]])
        side = torch.full((n,), frame * 0.4)
        angle = torch.tensor([0.0, 0.3, -0.2])
        crops = ld.resample_squares(x, centre, side, angle, size)
        assert crops.shape == (n, 3, size, size)
        weights = crops[:, 0]
        cy, cx = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32),
                                indexing="ij")
        peak = torch.stack([(weights * cx).sum((1, 2)), (weights * cy).sum((1, 2))], -1) / weights.sum((1, 2))[:, None]
        normalised = (peak + 0.5) / size * 2 - 1                                   # align_corners=False
        back = ld.square_to_frame(normalised[:, None], centre, side, angle)[:, 0]
        torch.testing.assert_close(back, dot.expand(n, 2), atol=frame * 0.004, rtol=0)


def test_mouth_refinement_replaces_only_the_lips():
    refined = ld.LandmarkDetector(ld.LandmarkDetectorConfig(**SMALL)).eval()
    plain = ld.LandmarkDetector(ld.LandmarkDetectorConfig(**{**SMALL, "mouth_refine": False})).eval()
    plain.load_state_dict({k: v for k, v in refined.state_dict().items() if not k.startswith("mouth_network.")})
    frames = np.random.default_rng(2).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    a, b = refined.detect(frames), plain.detect(frames)
    np.testing.assert_array_equal(np.delete(a, ld.MOUTH, axis=1), np.delete(b, ld.MOUTH, axis=1))
    assert np.abs(a[:, ld.MOUTH] - b[:, ld.MOUTH]).max() > 1e-3
    assert not any(k.startswith("mouth_network.") for k in plain.state_dict())
    with pytest.raises(ld.ConfigError, match="mouth_input_size"):
        ld.LandmarkDetector(ld.LandmarkDetectorConfig(mouth_input_size=40))


class _Replay:
    """A 'detector' that answers each clip of a split with given landmarks, in the split's clip order."""

    def __init__(self, answers):
        self.answers = iter(answers)

    def detect(self, frames, batch_size):
        return next(self.answers)


def test_quality_reports_how_much_mouth_motion_is_read(tiny_corpus):
    dataset = open_dataset(tiny_corpus)
    truth = [np.array(dataset.clip(c).track("landmarks2d"), np.float32) for c in dataset.clip_ids("test")]
    exact = ld.evaluate_quality(_Replay(truth), dataset, "test")
    assert exact["mouth_motion_gain"] == pytest.approx(1.0)
    assert exact["mouth_shape_error_px"] == pytest.approx(0, abs=1e-6)
    # lips moving half as far about each clip's mean shape: gain 0.5; a frozen mouth: gain 0
    half, frozen = [], []
    for lm in truth:
        lips = lm[:, ld.MOUTH] - lm[:, ld.MOUTH].mean(1, keepdims=True)
        mean_shape = lips.mean(0)
        for out, scale in ((half, 0.5), (frozen, 0.0)):
            moved = lm.copy()
            moved[:, ld.MOUTH] = lm[:, ld.MOUTH].mean(1, keepdims=True) + mean_shape + scale * (lips - mean_shape)
            out.append(moved)
    assert ld.evaluate_quality(_Replay(half), dataset, "test")["mouth_motion_gain"] == pytest.approx(0.5)
    still = ld.evaluate_quality(_Replay(frozen), dataset, "test")
    assert still["mouth_motion_gain"] == pytest.approx(0.0, abs=1e-5) and still["mouth_shape_error_px"] > 0.05


@pytest.mark.parametrize("key, value", [("input_size", 40), ("mouth_input_size", 16)])
def test_input_sizes_must_be_multiples_of_16(key, value):
    one_line_error(lambda: ld.LandmarkDetector(ld.LandmarkDetectorConfig(**{**SMALL, key: value})),
                   f"landmark_detector: model.{key} must be a multiple of 16 (>= 32), got {value}",
                   error=ConfigError)


# --- the training-time damage both image evaluators apply (zoo.evaluators.common.degrade) -------------------------

def _scipy_blur(image: torch.Tensor, sigma: float, radius: int) -> np.ndarray:
    """Oracle: scipy's Gaussian filter per channel, mirror padding (torch's 'reflect'), the same kernel radius."""
    from scipy.ndimage import gaussian_filter

    return np.stack([gaussian_filter(ch, sigma, mode="mirror", radius=radius) for ch in image.double().numpy()])


def test_degrade_blur_only_is_the_gaussian_blur_of_the_drawn_sigmas():
    from zoo.evaluators.common import degrade

    x = torch.rand(6, 3, 20, 24, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(3)
    y = degrade(x, blur_prob=0.5, blur_sigma=2.0)
    torch.manual_seed(3)                                 # degrade's draws, in its order: sigma ~ U(0, 2), then the gate
    sigma = torch.rand(6) * 2.0
    blurred = torch.rand(6) < 0.5
    assert blurred.any() and not blurred.all() and (sigma[blurred] > 0.1).any()
    radius = math.ceil(3 * float(sigma[blurred].max()))  # one kernel size for the batch
    for i in range(6):
        expected = _scipy_blur(x[i], float(sigma[i]), radius) if blurred[i] else x[i].numpy()
        np.testing.assert_allclose(y[i].numpy(), expected, rtol=0, atol=1e-5, err_msg=f"image {i}")


def test_degrade_noise_only_adds_gaussian_noise_of_noise_std():
    from zoo.evaluators.common import degrade

    x = torch.full((8, 3, 32, 32), 0.5)
    torch.manual_seed(0)
    residual = degrade(x, noise_std=0.05) - x           # 24576 samples: std estimate within ~0.5 %
    assert abs(residual.mean().item()) < 1e-3
    assert residual.std().item() == pytest.approx(0.05, rel=0.02)
    assert (residual.abs() < 0.05).float().mean().item() == pytest.approx(0.6827, abs=0.015)   # Gaussian, not uniform
    assert not torch.equal(residual[0], residual[1])    # independent per image
    y = degrade(torch.ones(4, 3, 8, 8), noise_std=0.5)
    assert y.max() <= 1 and y.min() >= 0 and (y < 1).any()                                   # clamped to [0, 1]


@pytest.mark.parametrize("channel_gain", [False, True])
def test_degrade_photometric_only_is_a_per_image_affine_map(channel_gain):
    from zoo.evaluators.common import degrade

    a = 0.2
    x = 0.3 + 0.4 * torch.rand(16, 3, 12, 12, generator=torch.Generator().manual_seed(1))     # no clamping
    torch.manual_seed(4)
    y = degrade(x, photometric=a, channel_gain=channel_gain)
    xc, yc = x - x.mean(dim=(2, 3), keepdim=True), y - y.mean(dim=(2, 3), keepdim=True)
    slope = (xc * yc).sum(dim=(2, 3)) / (xc * xc).sum(dim=(2, 3))                                 # [16, 3]
    torch.testing.assert_close(yc, slope[..., None, None] * xc, rtol=0, atol=1e-5)                # y = s x + t
    if channel_gain:                                      # contrast times per-channel gains
        assert slope.min() >= (1 - a) ** 2 - 1e-5 and slope.max() <= (1 + a) ** 2 + 1e-5
        assert (slope.std(dim=1) > 1e-3).all()
    else:                                                 # one contrast factor per image, every channel
        assert slope.min() >= 1 - a - 1e-5 and slope.max() <= 1 + a + 1e-5
        torch.testing.assert_close(slope, slope[:, :1].expand(-1, 3), rtol=0, atol=1e-5)
        brightness = y.mean(dim=(1, 2, 3)) / x.mean(dim=(1, 2, 3))
        assert brightness.min() >= 1 - a - 1e-5 and brightness.max() <= 1 + a + 1e-5
        assert brightness.std() > 0.02
    assert slope.std() > 0.02                            # random per image


def test_degrade_with_the_evaluators_defaults_damages_every_image_and_no_damage_is_identity():
    from zoo.evaluators.common import degrade
    from zoo.evaluators.identity_embedder import IdentityEmbedderConfig

    x = torch.rand(8, 3, 24, 24, generator=torch.Generator().manual_seed(2))
    assert torch.equal(degrade(x), x)                    # every damage off: the input as it is
    for cfg, gain in ((ld.LandmarkDetectorConfig(), True), (IdentityEmbedderConfig(), False)):
        torch.manual_seed(0)
        y = degrade(x, photometric=cfg.photometric, channel_gain=gain, blur_prob=cfg.blur_prob,
                    blur_sigma=cfg.blur_sigma, noise_std=cfg.noise_std)
        assert y.shape == x.shape and y.dtype == x.dtype and y.min() >= 0 and y.max() <= 1
        assert ((y - x).abs().mean(dim=(1, 2, 3)) > 0.01).all()           # every image damaged
        assert not torch.equal(degrade(x, photometric=cfg.photometric, noise_std=cfg.noise_std), y)   # random
