"""LSE-C / LSE-D: the pure scoring function, windowing, MFCC framing, the metric class, and a real-weight smoke test."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import python_speech_features
import torch
import torch.nn.functional as F

from zoo.errors import DataError, WeightsError
from zoo.metrics.sync import (SyncMetric, audio_mfcc, int16_scale, mean_offset_distances, num_windows,
                              score_offsets, sync_scores)

from helpers import one_line_error


def reference_mdist(video_feats, audio_feats, vshift=15):
    """syncnet_python's calc_pdist as described in metrics.md §1.2: per window, all 31 offsets at once."""
    win = 2 * vshift + 1
    padded = F.pad(audio_feats, (0, 0, vshift, vshift))
    dists = [F.pairwise_distance(video_feats[[i]].repeat(win, 1), padded[i:i + win]) for i in range(len(video_feats))]
    return torch.stack(dists, 1).mean(1)


@pytest.mark.parametrize("k", [-3, 0, 4])
def test_matching_audio_window_gives_offset_minus_k(k):
    gen = torch.Generator().manual_seed(0)
    n, d = 40, 16
    video = torch.randn(n, d, generator=gen)
    audio = torch.randn(n, d, generator=gen)
    for i in range(n):                       # audio window i + k carries video window i
        if 0 <= i + k < n:
            audio[i + k] = video[i]
    score = score_offsets(video, audio)
    assert score.offset == -k
    mdist = mean_offset_distances(video, audio)
    assert mdist.shape == (31,) and int(mdist.argmin()) == 15 + k
    assert score.lse_d == pytest.approx(float(mdist.min()))
    assert score.lse_c == pytest.approx(float(mdist.sort().values[15] - mdist.min()))   # median of 31 = 16th


def test_edge_zero_padding_enters_the_means():
    gen = torch.Generator().manual_seed(1)
    video, audio = torch.randn(5, 8, generator=gen), torch.randn(5, 8, generator=gen)
    mdist = mean_offset_distances(video, audio)
    torch.testing.assert_close(mdist, reference_mdist(video, audio), rtol=1e-6, atol=1e-6)
    # Offset -2 (j = 13): windows 0 and 1 meet zero vectors -> their distance is |v_i + eps|.
    eps = 1e-6
    by_hand = [(video[i] + eps).norm() if i - 2 < 0 else (video[i] - audio[i - 2] + eps).norm() for i in range(5)]
    assert float(mdist[13]) == pytest.approx(float(torch.stack(by_hand).mean()), rel=1e-6)
    # Far offsets only meet padding: the mean norm of the video features (+eps).
    assert float(mdist[0]) == pytest.approx(float((video + eps).norm(dim=1).mean()), rel=1e-6)


def test_window_count_is_min_length_minus_five():
    assert num_windows(30, 30 * 640) == 25
    assert num_windows(30, 20 * 640 + 639) == 15          # audio-limited: floor(len / 640)
    assert num_windows(30, 100 * 640) == 25               # video-limited
    assert num_windows(5, 5 * 640) == 0


def test_mfcc_framing_and_int16_scale():
    rng = np.random.default_rng(0)
    audio = (rng.standard_normal(640 * 10) * 3000).astype(np.int16)
    mfcc = audio_mfcc(audio)
    assert mfcc.shape == (13, 4 * 10 - 1)                  # 100 frames/s: 4 per video frame, 4T - 1 in all
    np.testing.assert_array_equal(mfcc, python_speech_features.mfcc(audio, 16000).T)   # int16 in, as upstream
    odd = audio[:1000]
    assert audio_mfcc(odd).shape == (13, 1 + int(np.ceil((1000 - 400) / 160)))
    # Float audio in [-1, 1] is put on the int16 scale (x 32768, rounded), like a 16-bit wav written by ffmpeg.
    as_float = audio.astype(np.float32) / 32768.0
    np.testing.assert_array_equal(int16_scale(as_float), audio.astype(np.float64))
    np.testing.assert_allclose(audio_mfcc(as_float), mfcc)


class RecordingSyncNet(torch.nn.Module):
    """Stands in for SyncNet: records its inputs, returns cheap deterministic features."""

    def __init__(self):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))     # gives the module a device
        self.lips, self.auds = [], []

    def forward_lip(self, video):
        self.lips.append(video.clone())
        return video.mean(dim=(3, 4)).flatten(1) / 255.0      # [B, 15]

    def forward_aud(self, mfcc):
        self.auds.append(mfcc.clone())
        return mfcc[:, 0, :, :15].mean(dim=1) / 100.0         # [B, 15]


def _clip(frames=12, size=32, seed=0):
    rng = np.random.default_rng(seed)
    video = rng.integers(0, 256, (frames, size, size, 3), dtype=np.uint8)
    audio = (rng.standard_normal(frames * 640) * 2000).astype(np.int16)
    return video, audio


def test_windows_fed_to_syncnet():
    video, audio = _clip()
    net = RecordingSyncNet()
    score = sync_scores(video, audio, net, batch_size=3)
    lips, auds = torch.cat(net.lips), torch.cat(net.auds)
    assert [len(x) for x in net.lips] == [3, 3, 1]          # 12 - 5 = 7 windows in batches of 3
    assert lips.shape == (7, 3, 5, 224, 224) and auds.shape == (7, 1, 13, 20)
    # Video: RGB -> BGR, cv2 bilinear 224x224, 0..255 floats, frames v..v+4.
    bgr = np.stack([cv2.resize(f[..., ::-1].copy(), (224, 224), interpolation=cv2.INTER_LINEAR) for f in video])
    frames = torch.from_numpy(bgr).permute(3, 0, 1, 2).float()
    for v in range(7):
        assert torch.equal(lips[v], frames[:, v:v + 5])
    # Audio: MFCC frames 4v .. 4v+19.
    mfcc = torch.from_numpy(audio_mfcc(audio)).float()
    for v in range(7):
        assert torch.equal(auds[v, 0], mfcc[:, 4 * v:4 * v + 20])
    expected = score_offsets(net.forward_lip(lips), net.forward_aud(auds))
    assert score.offset == expected.offset
    assert score.lse_d == pytest.approx(expected.lse_d, rel=1e-6)
    assert score.lse_c == pytest.approx(expected.lse_c, rel=1e-6, abs=1e-6)


def test_random_syncnet_end_to_end_and_short_clip():
    from zoo.metrics.backbones import random_state_dict
    from zoo.metrics.backbones.syncnet import SyncNet

    net = SyncNet(random_state_dict(SyncNet(), seed=0))
    video, audio = _clip(frames=7, size=224)
    offset, lse_d, lse_c = sync_scores(video, audio, net)
    assert -15 <= offset <= 15 and np.isfinite(lse_d) and lse_c >= 0
    with pytest.raises(DataError, match="too short"):
        sync_scores(video[:5], audio, net)


def test_sync_metric_means_over_videos_and_keeps_net_out_of_state():
    net = RecordingSyncNet()
    clips = [_clip(seed=s) for s in range(2)]
    metric = SyncMetric(net)
    metric.update([c[0] for c in clips], [c[1] for c in clips])
    scores = [sync_scores(v, a, RecordingSyncNet()) for v, a in clips]
    result = metric.compute()
    assert result["lse_c"].item() == pytest.approx(np.mean([s.lse_c for s in scores]))
    assert result["lse_d"].item() == pytest.approx(np.mean([s.lse_d for s in scores]))
    assert metric.backbone == "RecordingSyncNet" and "bilinear" in metric.variant

    owner = torch.nn.Module()
    owner.sync = metric
    assert not any("anchor" in k for k in owner.state_dict())
    assert list(owner.parameters()) == []
    metric.reset()
    metric.update(*clips[0])                                 # a single video is accepted too
    assert metric.videos.item() == 1
    with pytest.raises(DataError, match=r"^sync: 2 videos but 1 audio tracks$"):
        metric.update([c[0] for c in clips], [clips[0][1]])


@pytest.mark.parametrize("convert, fragments", [
    (lambda audio: audio.astype(np.int32), ["expected int16 samples or floats in [-1, 1], got dtype int32"]),
    (lambda audio: audio.astype(np.float32), ["float samples must lie in [-1, 1]", "as dtype int16"]),
], ids=["int32", "unscaled-float"])
def test_sync_audio_of_another_kind_is_one_line(convert, fragments):
    video, audio = _clip()
    one_line_error(lambda: SyncMetric(RecordingSyncNet()).update(video, convert(audio)), "sync audio: ", *fragments)


def test_real_syncnet_smoke():
    """Only with the real syncnet_v2.model (never downloaded): run with ZOO_WEIGHTS_DIR pointing at it."""
    from zoo import weights
    from zoo.metrics.backbones.syncnet import SyncNet

    try:
        weights.resolve("syncnet")
    except WeightsError as exc:
        pytest.skip(str(exc))
    net = SyncNet.from_weights()
    video, audio = _clip(frames=30, size=96)
    score = sync_scores(video, audio, net)
    assert -15 <= score.offset <= 15 and np.isfinite(score.lse_d) and score.lse_c >= 0


def test_offset_distances_need_two_matching_feature_tensors():
    with pytest.raises(ValueError, match=r"expected two \[N, D\] feature tensors, got \(4, 8\) and \(5, 8\)"):
        mean_offset_distances(torch.zeros(4, 8), torch.zeros(5, 8))
