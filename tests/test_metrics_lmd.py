"""M-LMD / F-LMD on hand-computed landmark arrays, including skipped (NaN) frames, and the metric class."""
from __future__ import annotations

import math

import pytest
import torch

from zoo.metrics import functional as F
from zoo.metrics.landmarks import LandmarkDistance


def base_landmarks(frames: int = 3) -> torch.Tensor:
    """float64 [frames, 68, 2] distinct points (a deterministic non-degenerate layout)."""
    torch.manual_seed(0)
    return torch.rand(frames, 68, 2, dtype=torch.float64) * 200 + 20


def moved_point(frames: torch.Tensor, point: int, frame: int | None = None) -> torch.Tensor:
    """Copy with one point displaced by (3, 4) (length 5) in every frame or in one frame."""
    out = frames.clone()
    index = slice(None) if frame is None else frame
    out[index, point] += torch.tensor([3.0, 4.0], dtype=torch.float64)
    return out


# One point moved by a vector of length 5, the set then mean-centred: that point is off by 5 (P - 1) / P, the
# other P - 1 points by 5 / P each, so the mean distance is 2 * 5 (P - 1) / P^2.
MOUTH_ONE_POINT = 2 * 5 * 19 / 20 ** 2        # 0.475
FACE_ONE_POINT = 2 * 5 * 67 / 68 ** 2         # 0.14489...


def test_hand_computed_values():
    target = base_landmarks()
    pred = moved_point(target, 50)                                                  # a mouth point
    assert F.lmd(pred[None], target[None], "mouth").item() == pytest.approx(MOUTH_ONE_POINT, rel=1e-12)
    assert F.lmd(pred[None], target[None], "face").item() == pytest.approx(FACE_ONE_POINT, rel=1e-12)
    # a jaw point is outside the mouth region
    jaw = moved_point(target, 5)
    assert F.lmd(jaw[None], target[None], "mouth").item() == 0.0
    assert F.lmd(jaw[None], target[None], "face").item() == pytest.approx(FACE_ONE_POINT, rel=1e-12)


def test_sets_are_centred_per_frame_without_scaling():
    target = base_landmarks()
    shifted = target + torch.tensor([[[7.0, -3.0]], [[0.0, 11.0]], [[-5.0, 2.0]]], dtype=torch.float64)
    assert F.lmd(shifted[None], target[None], "face").abs().item() < 1e-12         # per-frame translation: 0
    scaled = target * 2                                                             # no scale normalisation
    assert F.lmd(scaled[None], target[None], "mouth").item() > 1.0


def test_mean_over_frames_then_clips():
    target = base_landmarks(4)
    pred = moved_point(target, 60, frame=1)                                         # only frame 1 differs
    frames = F.lmd_frames(pred[None], target[None], "mouth")
    assert frames.shape == (1, 4)
    torch.testing.assert_close(frames[0], torch.tensor([0, MOUTH_ONE_POINT, 0, 0], dtype=torch.float64),
                               rtol=1e-12, atol=1e-12)
    assert F.lmd(pred[None], target[None], "mouth").item() == pytest.approx(MOUTH_ONE_POINT / 4, rel=1e-12)


def test_nan_frames_are_skipped_and_counted():
    target = base_landmarks(4)
    pred = moved_point(target, 50)
    pred[1] = float("nan")                                                          # failed detection (generated)
    target_failed = target.clone()
    target_failed[3, 10] = float("nan")                                             # failed detection (ground truth)
    distance, skipped = F.lmd(pred[None], target_failed[None], "mouth", return_skipped=True)
    assert distance.item() == pytest.approx(MOUTH_ONE_POINT, rel=1e-12)             # frames 0 and 2 only
    assert skipped.tolist() == [2]

    # a clip without a valid frame is NaN (and the batch shape is kept)
    empty = torch.full_like(target, float("nan"))
    distance, skipped = F.lmd(torch.stack([pred, empty]), torch.stack([target, target]), "face", return_skipped=True)
    assert distance.shape == (2,) and not math.isnan(distance[0]) and math.isnan(distance[1])
    assert skipped.tolist() == [1, 4]


def test_validation():
    target = base_landmarks()
    with pytest.raises(ValueError, match="region"):
        F.lmd(target[None], target[None], "lips")
    with pytest.raises(ValueError, match="68, 2"):
        F.lmd(target[None, :, :20], target[None, :, :20], "mouth")


def test_metric_class_mean_over_clips_with_counts():
    target = base_landmarks(4)
    one_point = moved_point(target, 50)
    one_frame = moved_point(target, 50, frame=0)
    failed = one_point.clone()
    failed[2] = float("nan")
    empty = torch.full_like(target, float("nan"))

    metric = LandmarkDistance("mouth")
    metric.update(torch.stack([one_point, one_frame]), torch.stack([target, target]))
    metric.update(torch.stack([failed, empty]), torch.stack([target, target]))
    # clips: 0.475, 0.475 / 4, 0.475 (3 valid frames), and an empty clip that does not count
    expected = (MOUTH_ONE_POINT + MOUTH_ONE_POINT / 4 + MOUTH_ONE_POINT) / 3
    assert metric.compute().item() == pytest.approx(expected, rel=1e-12)
    assert metric.counts() == {"clips": 3, "empty_clips": 1, "frames": 16, "skipped_frames": 5}
    assert metric.variant == "M-LMD" and not metric.higher_is_better
    assert LandmarkDistance("face").variant == "F-LMD"

    # same as the functional form over all clips, skipping the empty one
    per_clip = F.lmd(torch.stack([one_point, one_frame, failed, empty]), torch.stack([target] * 4), "mouth")
    assert metric.compute().item() == pytest.approx(per_clip.nanmean().item(), rel=1e-12)
    metric.reset()
    assert metric.counts()["frames"] == 0
