"""The ``syncnet`` evaluator: network shapes, the matching loss, the scoring protocol with its video geometry,
state-dict round trip, the quality check and a `zoo fit` smoke run (tiny corpus / random inputs)."""
from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest
import torch

import zoo.evaluators.sync_expert as sync_expert  # registers "syncnet"
from zoo.cli import main
from zoo.data.clip_format import open_dataset
from zoo.data.datamodule import DataConfig, TalkingHeadDataModule
from zoo.data.fake import write_fake_dataset
from zoo.evaluators.sync_expert import (SyncExpert, SyncExpertConfig, evaluate_quality, matching_loss,
                                        mfcc_windows, shift_audio)
from zoo.evaluators.sync_network import SyncNetwork
from zoo.metrics.sync import (VIDEO_VARIANT, SyncMetric, crop_pixels, prepare_video, sync_scores, video_geometry,
                              video_variant)
from zoo.registry import create_model, get_entry
from helpers import optimise

SMALL = dict(embedding_dim=16, lip_channels=[4, 8, 8, 16], audio_channels=[4, 8, 16], width=16)


def _batch(root, batch_size=4, window_seconds=0.8):
    dm = TalkingHeadDataModule(DataConfig(root=str(root), fields=["frames", "mfcc"], window_seconds=window_seconds,
                                          num_refs=0, batch_size=batch_size, num_workers=0))
    dm.setup("fit")
    return next(iter(dm.train_dataloader()))


def test_network_shapes_and_clip_windows_match_forward_lip():
    torch.manual_seed(0)
    net = SyncNetwork(**{k: v for k, v in SMALL.items()}).eval()
    assert net.input_size == (48, 64) and video_geometry(net) == ((48, 64), net.crop_box)
    assert net.forward_aud(torch.randn(3, 1, 13, 20)).shape == (3, 16)
    video = torch.rand(2, 3, 9, 48, 64) * 255
    assert net.forward_lip(video[:, :, :5]).shape == (2, 16)
    clip = net.lip_windows(video)                                     # [2, 5, 16]: frames shared by windows
    assert clip.shape == (2, 5, 16)
    for v in range(5):
        torch.testing.assert_close(clip[:, v], net.forward_lip(video[:, :, v:v + 5]), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="48x64"):
        net.forward_lip(torch.rand(1, 3, 5, 224, 224))
    with pytest.raises(ValueError, match=r"\[B, 1, 13, 20\]"):
        net.forward_aud(torch.randn(1, 1, 13, 19))


def test_mfcc_windows_are_the_protocol_windows():
    mfcc = torch.randn(2, 4 * 12, 13)                                 # 12 frames
    windows = mfcc_windows(mfcc)
    assert windows.shape == (2, 8, 1, 13, 20)
    for v in range(8):
        assert torch.equal(windows[:, v, 0], mfcc[:, 4 * v:4 * v + 20].transpose(1, 2))


def test_matching_loss_prefers_aligned_pairs():
    torch.manual_seed(0)
    video = torch.randn(3, 6, 8)
    aligned, accuracy = matching_loss(video, video + 0.01 * torch.randn_like(video))
    shuffled, wrong = matching_loss(video, video.roll(1, dims=1))
    assert accuracy == 1.0 and wrong == 0.0 and aligned < shuffled


def test_loss_decreases_on_a_tiny_corpus_batch(tiny_corpus):
    torch.manual_seed(0)
    batch = _batch(tiny_corpus)
    model = SyncExpert(SyncExpertConfig(**SMALL))
    losses = optimise(lambda: matching_loss(*model.embed(batch))[0], model.parameters(), steps=6, lr=3e-3)
    assert np.isfinite(losses).all() and losses[-1] < losses[0]


def test_training_augmentation_keeps_shapes_and_is_off_for_scoring(tiny_corpus):
    torch.manual_seed(0)
    frames = _batch(tiny_corpus, batch_size=2)["frames"]
    model = SyncExpert(SyncExpertConfig(**SMALL, jitter_px=2, color_jitter=0.2))
    plain = model.video_input(frames)
    assert plain.shape == (2, 3, 20, 48, 64) and torch.equal(plain, model.video_input(frames))
    augmented = model.video_input(frames, augment=True)
    assert augmented.shape == plain.shape and not torch.equal(augmented, plain)
    assert augmented.min() >= 0 and augmented.max() <= 255


def test_video_geometry_crop_and_official_path(tiny_corpus):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (6, 64, 64, 3), dtype=np.uint8)
    box = SyncNetwork().crop_box
    x0, y0, x1, y1 = crop_pixels(box, 64, 64)
    assert (x0, y0, x1, y1) == (16, 30, 48, 54)
    assert crop_pixels(box, 128, 128) == (32, 60, 96, 108)           # exactly 48x64 at the default corpus size
    out = prepare_video(frames, (48, 64), box)
    expected = np.stack([cv2.resize(f[y0:y1, x0:x1, ::-1].copy(), (64, 48), interpolation=cv2.INTER_LINEAR)
                         for f in frames])
    assert out.shape == (3, 6, 48, 64) and torch.equal(out, torch.from_numpy(expected).permute(3, 0, 1, 2))
    big = rng.integers(0, 256, (6, 128, 128, 3), dtype=np.uint8)      # no resampling at 128 px: a pure crop
    assert torch.equal(prepare_video(big, (48, 64), box),
                       torch.from_numpy(big[:, 60:108, 32:96, ::-1].copy()).permute(3, 0, 1, 2))
    # The official path is untouched: defaults give whole 224x224 frames and the official variant string.
    official = prepare_video(frames)
    assert official.shape == (3, 6, 224, 224)
    assert torch.equal(official[:, 0], torch.from_numpy(
        cv2.resize(frames[0, :, :, ::-1].copy(), (224, 224), interpolation=cv2.INTER_LINEAR)).permute(2, 0, 1))
    assert video_variant(torch.nn.Linear(1, 1)) == VIDEO_VARIANT
    assert "crop box" in video_variant(SyncNetwork()) and "48x64" in video_variant(SyncNetwork())


def _first_test_clip(root):
    """uint8 [T, H, W, 3] frames and float32 [N] audio of the first test clip."""
    dataset = open_dataset(root)
    clip = dataset.clip(dataset.clip_ids("test")[0])
    return clip.read_frames(0, clip.num_frames), clip.read_audio(0, clip.num_samples)


def test_sync_scores_with_the_network_end_to_end(tiny_corpus):
    torch.manual_seed(0)
    net = SyncNetwork(**SMALL).eval()
    frames, audio = _first_test_clip(tiny_corpus)
    offset, lse_d, lse_c = sync_scores(frames, audio, net)
    assert -15 <= offset <= 15 and np.isfinite(lse_d) and lse_c >= 0
    metric = SyncMetric(net)
    metric.update(frames, audio)
    assert metric.compute()["lse_c"].item() == pytest.approx(lse_c)
    assert "crop box" in metric.variant and metric.backbone == SyncNetwork.name


def test_scores_for_audios_equal_sync_scores(tiny_corpus):
    torch.manual_seed(0)
    net = SyncNetwork(**SMALL).eval()
    frames, audio = _first_test_clip(tiny_corpus)
    tracks = [audio, shift_audio(audio, 2), shift_audio(audio, -3)]
    assert sync_expert.scores_for_audios(net, frames, tracks) == [sync_scores(frames, a, net) for a in tracks]


def test_shift_audio_convention():
    audio = np.arange(640 * 4, dtype=np.float32)
    late = shift_audio(audio, 1)                                      # delayed one frame: expected offset -1
    assert (late[:640] == 0).all() and np.array_equal(late[640:], audio[:-640])
    early = shift_audio(audio, -2)
    assert np.array_equal(early[:-1280], audio[1280:]) and (early[-1280:] == 0).all()
    assert np.array_equal(shift_audio(audio, 0), audio)


def test_quality_check_runs(tiny_corpus):
    torch.manual_seed(0)
    result = evaluate_quality(SyncNetwork(**SMALL), tiny_corpus, "test", max_shift=1)
    assert set(result["offset_accuracy_by_shift"]) == {-1, 0, 1} and 0 <= result["offset_accuracy"] <= 1
    assert result["num_clips"] >= 2 and np.isfinite(result["gt_lse_c"]) and np.isfinite(result["mismatched_lse_c"])
    # the held-out identities are scored alongside, under the same keys prefixed unseen_
    unseen_clips = len(open_dataset(tiny_corpus).clip_ids("test_unseen"))
    assert result["unseen_num_clips"] == unseen_clips >= 2 and np.isfinite(result["unseen_gt_lse_d"])
    assert set(result["unseen_offset_accuracy_by_shift"]) == {-1, 0, 1}
    assert "unseen_gt_lse_c" not in evaluate_quality(SyncNetwork(**SMALL), tiny_corpus, "test", max_shift=1,
                                                     unseen_split=None)


def test_quality_check_skips_an_unseen_split_too_small_to_mismatch(tmp_path):
    root = write_fake_dataset(tmp_path / "d", splits={"test": 2, "test_unseen": 1}, seconds=1.0)
    result = evaluate_quality(SyncNetwork(**SMALL), root, "test", max_shift=0)
    assert result["num_clips"] == 2 and not any(k.startswith("unseen_") for k in result)


def test_state_dict_round_trip_through_the_registry():
    assert get_entry("syncnet").model_class is SyncExpert
    cfg = SyncExpertConfig(**SMALL)
    model = create_model("syncnet", cfg).eval()
    rebuilt = create_model("syncnet", dataclasses.asdict(cfg)).eval()      # as the kit bundle stores it
    rebuilt.load_state_dict(model.state_dict())
    net, again = model.network, rebuilt.network
    video, mfcc = torch.rand(2, 3, 5, 48, 64) * 255, torch.randn(2, 1, 13, 20)
    assert torch.equal(net.forward_lip(video), again.forward_lip(video))
    assert torch.equal(net.forward_aud(mfcc), again.forward_aud(mfcc))
    assert again.crop_box == net.crop_box and again.input_size == net.input_size


def test_zoo_fit_smoke(tiny_corpus, tmp_path, capsys):
    assert sync_expert.syncnet is get_entry("syncnet").builder
    code = main(["fit", "--model", "syncnet", "experiment=smoke", "logger=none", "trainer.progress_bar=none",
                 f"run.runs_dir={tmp_path}", *[f"model.{k}={v}" for k, v in SMALL.items()]])
    assert code == 0, capsys.readouterr().err
    assert (tmp_path / "syncnet" / "smoke" / "checkpoints" / "last.ckpt").is_file()


def test_bad_network_geometry_and_inputs():
    with pytest.raises(ValueError, match=r"input_size must be multiples of 16 .* got \(50, 96\)"):
        SyncNetwork(**{**SMALL, "input_size": (50, 96)})
    with pytest.raises(ValueError, match="audio_channels needs 3 widths"):
        SyncNetwork(**{**SMALL, "audio_channels": [4, 8]})
    net = SyncNetwork(**SMALL).eval()
    with pytest.raises(ValueError, match=r"SyncNetwork: expected 48x64 frames \(see zoo.metrics.sync.prepare_video\), "
                                         r"got \(32, 32\)"):
        net.forward_lip(torch.zeros(1, 3, 5, 32, 32))
    frames = np.zeros((10, 64, 64, 3), np.uint8)
    with pytest.raises(ValueError, match="all audio tracks must have the same length"):
        sync_expert.scores_for_audios(net, frames, [np.zeros(6400, np.float32), np.zeros(6000, np.float32)])
