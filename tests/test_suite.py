"""The metric suite as `zoo test` runs it: per-clip scores, dataset-level FID, recorded variants and backbones."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from zoo.data import DataConfig, TalkingHeadDataModule
from zoo.evaluators.sync_network import SyncNetwork
from zoo.metrics.suite import ALL_METRICS, Backbones, MetricSuite, lpips_if_available, luma


class PixelLandmarker:
    """A deterministic stand-in detector: landmarks from fixed random projections of the image (same image, same
    landmarks), so the suite's plumbing can be checked without a trained network."""

    def __init__(self, size: int):
        generator = torch.Generator().manual_seed(0)
        self.projection = torch.randn(size * size * 3, 136, generator=generator, dtype=torch.float64) / size

    def __call__(self, images: np.ndarray) -> np.ndarray:
        flat = torch.from_numpy(np.ascontiguousarray(images)).reshape(len(images), -1).double() / 255.0
        return (32 + (flat @ self.projection).reshape(-1, 68, 2) * 4).numpy()


@pytest.fixture(scope="module")
def batch(tiny_corpus):
    cfg = DataConfig(root=str(tiny_corpus), fields=["frames", "audio"], window_seconds=1.0, num_workers=0,
                     batch_size=2, num_refs=1)
    datamodule = TalkingHeadDataModule(cfg)
    datamodule.setup("test")
    return next(iter(datamodule.test_dataloader()))


@pytest.fixture(scope="module")
def suite(batch):
    torch.manual_seed(0)
    embedder = nn.Sequential(nn.Conv2d(3, 8, 5, stride=4), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(),
                             nn.Linear(128, 512)).eval()
    lpips, notes = lpips_if_available()        # tests have no torchvision trunk file: skipped, with the reason
    backbones = Backbones(landmarker=PixelLandmarker(batch["frames"].shape[-1]), embedder=embedder,
                          fid_features=embedder, fid_num_features=512, fid_input="aligned",
                          syncnet=SyncNetwork().eval(), lpips=lpips, notes=notes,
                          names={"landmarks": "test-lm", "identity": "test-id", "fid": "test-id", "sync": "test-sync"})
    return MetricSuite(backbones, ALL_METRICS, fps=25.0)


def test_ground_truth_scores_as_ground_truth(suite, batch):
    suite.reset()
    truth = batch["frames"].float() / 255.0
    scores = suite.score(batch, truth)
    for clip in scores:
        assert clip["PSNR"] == 100.0
        assert clip["SSIM[wang]"] == pytest.approx(1.0) and clip["SSIM[skimage-default]"] == pytest.approx(1.0)
        assert clip["M-LMD[test-lm]"] == 0.0 and clip["F-LMD[test-lm]"] == 0.0
        assert 0.0 <= clip["CPBD"] <= 1.0 and -1.0 <= clip["CSIM[test-id]"] <= 1.0
        assert math.isfinite(clip["Sync_conf[test-sync]"]) and clip["LSE-D[test-sync]"] >= 0
    assert suite.dataset_scores()["FID[test-id]"] == pytest.approx(0.0, abs=1e-3)


def test_degraded_frames_score_worse(suite, batch):
    suite.reset()
    truth = batch["frames"].float() / 255.0
    noisy = (truth + 0.1 * torch.randn_like(truth)).clamp(0, 1)
    scores = suite.score(batch, noisy)
    assert all(s["PSNR"] < 30 and s["SSIM[wang]"] < 0.9 and s["M-LMD[test-lm]"] > 0 for s in scores)
    assert suite.dataset_scores()["FID[test-id]"] > 1e-6


def test_describe_records_variant_and_backbone(suite):
    described = suite.describe()
    assert set(suite.result_keys()) == set(described) - {"skipped"}
    assert described["FID[test-id]"]["backbones"]["fid"] == "test-id"
    assert "LPIPS[alex]" in described["skipped"]      # no trunk weights in tests: skipped, and says why
    assert "alexnet-owt-7be5be79.pth" in described["skipped"]["LPIPS[alex]"]


def test_luma_matches_pil():
    from PIL import Image

    rgb = np.random.default_rng(0).integers(0, 256, (17, 19, 3), dtype=np.uint8)
    assert np.array_equal(luma(rgb), np.asarray(Image.fromarray(rgb).convert("L")))


def test_sync_skipped_off_25_fps(suite):
    at_30 = MetricSuite(suite.backbones, ("psnr", "sync"), fps=30.0)
    assert at_30.result_keys() == ["PSNR"] and "25 fps" in at_30.describe()["skipped"]["sync"]


def test_pixel_metrics_need_no_backbones():
    with pytest.raises(ValueError, match="need backbones"):
        MetricSuite(None, ("psnr", "sync"))
    assert MetricSuite(None, ("psnr", "ssim")).result_keys() == ["PSNR", "SSIM[wang]", "SSIM[skimage-default]"]
