"""The metric suite as `zoo test` runs it: per-clip scores, dataset-level FID, recorded variants and backbones."""
from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from zoo.data import DataConfig, TalkingHeadDataModule
from zoo.evaluation import ClipEvaluator
from zoo.evaluators.sync_network import SyncNetwork
from zoo.metrics.suite import ALL_METRICS, Backbones, MetricSuite, lpips_if_available, luma
from zoo.model import GeneratedClip

from helpers import one_line_error


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


class BlindLandmarker(PixelLandmarker):
    """Fails (NaN landmarks) on all-black frames, as a detector fails on frames without a face."""

    def __call__(self, images: np.ndarray) -> np.ndarray:
        landmarks = super().__call__(images)
        landmarks[images.reshape(len(images), -1).max(1) == 0] = np.nan
        return landmarks


def make_suite(batch, metrics=ALL_METRICS, landmarker=None) -> MetricSuite:
    """A suite on fresh stand-in backbones (seeded, so every suite scores alike)."""
    torch.manual_seed(0)
    embedder = nn.Sequential(nn.Conv2d(3, 8, 5, stride=4), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(),
                             nn.Linear(128, 512)).eval()
    lpips, notes = lpips_if_available()        # tests have no torchvision trunk file: skipped, with the reason
    backbones = Backbones(landmarker=landmarker or PixelLandmarker(batch["frames"].shape[-1]), embedder=embedder,
                          fid_features=embedder, fid_num_features=512, fid_input="aligned",
                          syncnet=SyncNetwork().eval(), lpips=lpips, notes=notes,
                          names={"landmarks": "test-lm", "identity": "test-id", "fid": "test-id", "sync": "test-sync"})
    return MetricSuite(backbones, metrics, fps=25.0)


@pytest.fixture(scope="module")
def suite(batch):
    return make_suite(batch)


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


# --- FID under DDP: states on the sync device, only the too-few-samples case is NaN ------------------------------

def test_fid_is_nan_only_for_too_few_samples(suite, batch, monkeypatch):
    suite.reset()
    assert math.isnan(suite.dataset_scores()["FID[test-id]"])                      # nothing scored: no covariance
    suite.score(batch, batch["frames"].float() / 255.0)

    def failing_sync():
        raise RuntimeError("Tensors must be CUDA and dense")                       # what NCCL says of CPU states
    monkeypatch.setattr(suite.fid, "compute", failing_sync)
    with pytest.raises(RuntimeError, match="must be CUDA"):
        suite.dataset_scores()                                                     # no longer turned into NaN


def test_evaluator_puts_fid_states_on_the_module_device(batch):
    suite = make_suite(batch, ("psnr", "fid"))
    assert suite.to("cpu") is suite and suite.fid.real_sum.device.type == "cpu"
    evaluator = ClipEvaluator("unused", suite_factory=None)
    evaluator.suite = suite
    evaluator.on_test_epoch_start(None, SimpleNamespace(device=torch.device("meta")))  # stands in for a GPU
    assert {suite.fid.real_sum.device.type, suite.fid.fake_count.device.type} == {"meta"}


# --- generated frames must be floats ------------------------------------------------------------------------------

def test_uint8_generated_frames_are_rejected(suite, batch):
    one_line_error(lambda: GeneratedClip(frames=batch["frames"]),
                   "GeneratedClip.frames must be float in [0, 1], got torch.uint8")
    one_line_error(lambda: suite.score(batch, batch["frames"]), "generated frames must be float in [0, 1]",
                   "got torch.uint8")


# --- what could not be scored is counted, per clip and in results/<stage>.json -----------------------------------

def fake_trainer(tiny_corpus):
    dataset = SimpleNamespace(name="tiny", version="1", root=tiny_corpus)
    datamodule = SimpleNamespace(dataset=dataset, cfg=SimpleNamespace(test_split="test"), fps=25.0,
                                 sample_rate=16000)
    return SimpleNamespace(datamodule=datamodule, is_global_zero=True, logger=None, global_step=0)


def test_failed_landmark_detections_are_counted_in_the_results(batch, tiny_corpus, tmp_path):
    truth = batch["frames"].float() / 255.0
    pred = truth.clone()
    pred[0, :3] = 0.0                                                              # 3 frames without a face
    pred[1] = 0.0                                                                  # a clip without any
    suite = make_suite(batch, ("psnr", "lmd"), landmarker=BlindLandmarker(batch["frames"].shape[-1]))
    scores = suite.score_clips(batch, pred)
    assert scores[0].skipped == {"lmd_frames": 3, "lmd_clips": 0} and scores[0].metrics["M-LMD[test-lm]"] == 0.0
    assert scores[1].skipped == {"lmd_frames": pred.shape[1], "lmd_clips": 1}
    assert math.isnan(scores[1].metrics["M-LMD[test-lm]"]) and math.isnan(scores[1].metrics["F-LMD[test-lm]"])

    evaluator = ClipEvaluator(tmp_path, save_videos=0, suite_factory=None)
    evaluator.suite = suite
    trainer = fake_trainer(tiny_corpus)
    module = SimpleNamespace(device=torch.device("cpu"), log_dict=lambda *args, **kwargs: None)
    evaluator.on_test_epoch_start(trainer, module)
    evaluator.on_test_batch_end(trainer, module, GeneratedClip(frames=pred), batch, 0)
    evaluator.on_test_epoch_end(trainer, module)
    results = json.loads((tmp_path / "results" / "test.json").read_text())
    assert [clip["skipped"] for clip in results["clips"]] == [s.skipped for s in scores]
    assert results["skipped"]["counts"] == {"lmd_frames": 3 + pred.shape[1], "lmd_clips": 1}
    assert "landmark detection failed" in results["skipped"]["meaning"]["lmd_frames"]
    assert results["aggregate"]["M-LMD[test-lm]"] == 0.0                          # metric values as before
    assert results["clips"][0]["metrics"] == scores[0].metrics


def test_clip_too_short_for_syncnet_is_skipped_and_counted(batch):
    suite = make_suite(batch, ("psnr", "sync"))
    short = dict(batch, frames=batch["frames"][:, :5], audio=batch["audio"][:, :5 * 640])   # SyncNet needs 6 frames
    scores = suite.score_clips(short, short["frames"].float() / 255.0)
    for clip in scores:
        assert clip.skipped == {"sync_clips": 1} and clip.metrics["PSNR"] == 100.0
        assert math.isnan(clip.metrics["Sync_conf[test-sync]"]) and math.isnan(clip.metrics["LSE-D[test-sync]"])
    full = suite.score_clips(batch, batch["frames"].float() / 255.0)
    assert full[0].skipped == {"sync_clips": 0} and math.isfinite(full[0].metrics["LSE-D[test-sync]"])
