"""benchmarks/lsp_quality.py: its bars, their verdicts and the diagnosis it splits the M-LMD bar into."""
from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

from zoo.data import open_dataset
from zoo.metrics.functional import LANDMARK_REGIONS, lmd

from helpers import LSP_SMALL


@pytest.fixture(scope="module")
def quality_benchmark():
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "lsp_quality.py"
    spec = importlib.util.spec_from_file_location("lsp_quality_benchmark", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_lips_read_gives_the_mean_offset_and_the_motion_read_back(quality_benchmark):
    torch.manual_seed(0)
    truth = torch.randn(1, 68, 2).repeat(50, 1, 1) + torch.randn(50, 68, 2)        # a face moving about its mean
    rendered = truth.clone()
    lips = LANDMARK_REGIONS["mouth"]
    mean_lips = truth[:, lips].mean(dim=0, keepdim=True)
    # the rendered lips: half the motion about the mean shape, every point 0.3 px right (undone by the centring)
    # and the two corners 0.5 px inward
    rendered[:, lips] = mean_lips + 0.5 * (truth[:, lips] - mean_lips) + torch.tensor([0.3, 0.0])
    corners = torch.zeros(20, 2)
    corners[0, 0], corners[6, 0] = 0.5, -0.5                                        # points 48 and 54
    rendered[:, lips] += corners
    read = quality_benchmark.lips_read(rendered, truth)
    assert read["motion_gain"] == pytest.approx(0.5)
    assert read["offset_px"] == pytest.approx((2 * 0.5) / 20)                     # the corners' offset, per point
    # a failed detection (NaN points) in either reading leaves its frame out instead of poisoning the figures
    failed_rendered, failed_truth = torch.cat([rendered, rendered[:1]]), torch.cat([truth, truth[:1]])
    failed_rendered[-1, 50] = float("nan")
    failed_truth[0, 3] = float("nan")
    partial = quality_benchmark.lips_read(failed_rendered, failed_truth)
    assert partial == pytest.approx(quality_benchmark.lips_read(rendered[1:], truth[1:]))
    assert quality_benchmark.lips_read(truth, truth) == {"offset_px": 0.0, "motion_gain": 1.0}


def test_offset_removed_lmd_keeps_only_the_error_in_the_motion(quality_benchmark):
    torch.manual_seed(0)
    truth = torch.randn(2, 10, 68, 2, dtype=torch.float64)
    lips = LANDMARK_REGIONS["mouth"]
    # a constant shape offset per window, and a translation per frame (M-LMD's centring undoes it): no motion error
    shaped = truth.clone()
    shaped[:, :, lips] += torch.randn(2, 1, 20, 2, dtype=torch.float64) + torch.randn(2, 10, 1, 2, dtype=torch.float64)
    assert quality_benchmark.offset_removed_lmd(shaped, truth).abs().max() < 1e-12
    assert (lmd(shaped, truth, "mouth") > 0.1).all()
    # an error with no constant part (a lip corner 0.4 px left and right on alternate frames) is all kept
    moving = truth.clone()
    moving[:, :, 48, 0] += 0.4 * torch.tensor([1.0, -1.0], dtype=torch.float64).repeat(5)
    assert quality_benchmark.offset_removed_lmd(moving, truth) == pytest.approx(lmd(moving, truth, "mouth").tolist())


def test_windows_cut_from_a_whole_clip_differ_from_windows_alone_only_at_their_cuts(tiny_corpus, lsp_model,
                                                                                     quality_benchmark):
    from zoo.data.datamodule import DataConfig, TalkingHeadDataModule

    datamodule = TalkingHeadDataModule(DataConfig(root=str(tiny_corpus), window_seconds=1.0, fields=["mel", "pose"],
                                                  num_refs=0, num_workers=0))
    datamodule.setup("test")
    windows = datamodule.split_dataset("test")
    first, second = windows[0], windows[1]
    assert first["clip_id"] == second["clip_id"] and (first["start"], second["start"]) == (0, 25)
    whole = quality_benchmark.whole_clip_true_pose_landmarks(lsp_model, datamodule, first["clip_id"])
    assert whole.shape == (50, 68, 2)
    alone = [quality_benchmark.landmarks_under_poses(lsp_model, item["mel"], item["pose"]) for item in (first, second)]
    engine = lsp_model.engine(float(lsp_model.profile.fps))
    # a frame is the same until the window's end lies within its look-ahead and smoothing: then it hears the
    # speech after the window, where the window alone repeats its last frame
    heard_alike = 25 - engine.mouth_delay - engine.mouth.radius
    torch.testing.assert_close(whole[:heard_alike], alone[0][:heard_alike], atol=1e-6, rtol=0)
    assert (whole[24] - alone[0][24]).abs().max() > 1e-5      # the smoke fit's mouths barely move: a small margin
    # the second window alone starts its recurrent states cold; cut from the clip, it has heard the first second
    assert (whole[25] - alone[1][0]).abs().max() > 1e-3


def test_quality_benchmark_reports_every_bar(lsp_run, tmp_path, quality_benchmark):
    out = tmp_path / "quality.json"
    # the tiny corpus has one test clip per person: score the 2 training clips, so that `static` can take its
    # frame from another clip of the person as well
    result = quality_benchmark.main(["--run", str(lsp_run), "--out", str(out), *LSP_SMALL, "data.test_split=train"])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    assert result["overrides"] == [*LSP_SMALL, "data.test_split=train"]     # what the figures were measured with
    assert set(result["bars"]) == {"m_lmd_vs_static", "sync_conf_vs_gt", "pose_std_vs_gt",
                                   "renderer_psnr_gt_landmarks_db"}
    bars = result["bars"]
    assert bars["m_lmd_vs_static"]["value"] == pytest.approx(bars["m_lmd_vs_static"]["lsp"]
                                                             / bars["m_lmd_vs_static"]["static"], rel=1e-3)
    assert result["aggregate"]["gt"]["M-LMD[synth-landmarks]"] == 0.0
    assert len(result["pose_std"]["ratio"]) == 6 and result["num_windows"] > 0
    assert result["all_pass"] == all(b["pass"] for b in bars.values())
    sync, pose, psnr_db = bars["sync_conf_vs_gt"], bars["pose_std_vs_gt"], bars["renderer_psnr_gt_landmarks_db"]
    assert sync["value"] == pytest.approx(sync["lsp"] / sync["gt"], rel=1e-3)
    assert pose["value"] == pytest.approx(result["pose_std"]["mean_ratio"], rel=1e-3)
    # each verdict is its threshold applied to its value
    assert bars["m_lmd_vs_static"]["pass"] == (bars["m_lmd_vs_static"]["value"] <= 0.5)
    assert sync["pass"] == (sync["value"] >= 0.7) and psnr_db["pass"] == (psnr_db["value"] >= 25.0)
    assert pose["pass"] == (0.5 <= pose["value"] <= 2.0)
    marks = result["diagnosis"]["landmark_m_lmd"]
    assert marks["static"] > 0 and marks["ratio"] == pytest.approx(marks["lsp"] / marks["static"])
    assert marks["lsp_true_pose"] > 0 and marks["detector_on_gt_frames"] > 0
    assert marks["lsp_true_pose_offset_removed"] > 0 and marks["lsp_true_pose_cut_from_whole_clip"] > 0
    assert marks["audio_only_floor"] > 0      # the test corpus is synthetic: its clips regenerate without style
    assert {"M-LMD[synth-landmarks]", "Sync_conf[synth-syncnet]"} <= set(result["diagnosis"]["renderer_gt_landmarks"])
    read = result["diagnosis"]["renderer_lips_read"]
    assert read["offset_px"] >= 0 and math.isfinite(read["motion_gain"])
    rendered = result["diagnosis"]["rendered_m_lmd"]
    # the same renders the suite scored: the ground-truth-driven one is renderer_gt_landmarks' M-LMD
    suite_on_gt = result["diagnosis"]["renderer_gt_landmarks"]
    assert rendered["gt_landmarks"] == pytest.approx(suite_on_gt["M-LMD[synth-landmarks]"])
    for name in ("gt_landmarks", "lsp_true_pose", "audio_only_floor"):
        assert rendered[name] > 0
        assert rendered["ratio_to_static"][name] == pytest.approx(rendered[name] / bars["m_lmd_vs_static"]["static"])
    other = result["diagnosis"]["static_other_clip"]
    assert other["m_lmd"] > 0 and other["landmark_m_lmd"] == marks["static_other_clip"] > 0
    assert other["lsp_ratio"] == pytest.approx(bars["m_lmd_vs_static"]["lsp"] / other["m_lmd"])
    assert other["landmark_lsp_ratio"] == pytest.approx(marks["lsp"] / marks["static_other_clip"])


def test_the_diagnosis_scores_the_model_the_lsp_row_scored(lsp_run, lsp_model, quality_benchmark, monkeypatch):
    """model.* overrides reach the model of the head-pose bar and the diagnosis, as they reach `zoo test`'s."""
    from zoo.harness import build_model

    class Built(Exception):
        pass

    built = []

    def build_and_stop(cfg, ckpt_path=None):
        built.append(build_model(cfg, ckpt_path))
        raise Built   # the model is all this test needs: skip the scoring

    monkeypatch.setattr(quality_benchmark, "build_model", build_and_stop)
    overrides = [*LSP_SMALL, "model.mouth_amplitude=1.5", "model.pose_smooth_sigma=2.5"]
    with pytest.raises(Built):
        quality_benchmark.motion_and_rendering(lsp_run / "checkpoints" / "last.ckpt", 0, overrides)
    (model,) = built
    assert (model.cfg.mouth_amplitude, model.cfg.pose_smooth_sigma) == (1.5, 2.5)
    trained = lsp_model.state_dict()
    assert all(torch.equal(value, trained[key]) for key, value in model.state_dict().items())


def test_static_from_another_clip_takes_the_next_clips_middle_frame(tiny_corpus, quality_benchmark):
    dataset = open_dataset(tiny_corpus)
    clips = dataset.clip_ids("train")[:3]
    stills = quality_benchmark.other_clip_stills(dataset, clips)
    for clip_id, other_id in zip(clips, [*clips[1:], clips[0]]):
        other = dataset.clip(other_id)
        middle = other.num_frames // 2
        frame, marks = stills[clip_id]
        assert torch.equal(frame, torch.from_numpy(other.read_frames(middle, middle + 1)[0]).permute(2, 0, 1))
        assert torch.equal(marks, torch.tensor(other.track("landmarks2d")[middle], dtype=torch.float32))
    assert quality_benchmark.other_clip_stills(dataset, clips[:1]) == {}
