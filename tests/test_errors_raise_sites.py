"""Handled errors no other test raised: each is one line, of the documented class, naming what is wrong.

One parametrised test per module; every case calls the public function that meets the bad input.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from zoo.errors import ConfigError

from helpers import one_line_error


# --- zoo.bench (budget files) ------------------------------------------------------------------------------------

BAD_BUDGETS = {
    "unknown-method": ("description: a budget naming a method nobody registered\nmodels:\n  nope: []\n  lsp: []\n",
                       "under 'models'", "unknown method(s) nope"),
    "unparsable": ("description: [an unclosed list\nmodels: {}\n", "cannot parse"),
}


@pytest.mark.parametrize("case", sorted(BAD_BUDGETS))
def test_bad_budget_file_is_one_line(case, tmp_path):
    from zoo.bench.runner import Bench

    text, *fragments = BAD_BUDGETS[case]
    path = tmp_path / f"{case}.yaml"
    path.write_text(text)
    one_line_error(lambda: Bench(["gt", "static"], None, str(path), 0, tmp_path / "runs", []), str(path),
                   *fragments, error=ConfigError)


# --- zoo.evaluators.common ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def no_landmarks_dataset(tmp_path_factory):
    from zoo.data.clip_format import open_dataset
    from zoo.data.fake import write_fake_dataset

    root = write_fake_dataset(tmp_path_factory.mktemp("nolm") / "data", splits={"train": 1}, seconds=0.4, size=16,
                              tracks=["pose"])
    return open_dataset(root)


@pytest.mark.parametrize("split, landmarks, fragments", [
    ("test", False, ["has no split 'test'; it has: train"]),
    ("train", True, ["has no 'landmarks2d' track (ground truth needed)"]),
])
def test_iter_split_frames_errors_are_one_line(no_landmarks_dataset, split, landmarks, fragments):
    from zoo.evaluators.common import iter_split_frames

    dataset = no_landmarks_dataset
    one_line_error(lambda: next(iter_split_frames(dataset, split, landmarks=landmarks)),
                   f"dataset '{dataset.name}' at {dataset.root}", *fragments)
    if not landmarks:                                   # the same split without ground truth is fine
        assert next(iter_split_frames(dataset, "train", landmarks=False))[2] is None


# --- zoo.model ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("value", [np.array([["0.1"] * 6] * 2), [["a", "b", "c", "d", "e", "f"]], [{"yaw": 0.1}]],
                         ids=["numpy-strings", "list-of-strings", "dicts"])
def test_head_poses_that_are_not_numbers_are_one_line(value):
    from zoo.model import head_poses

    one_line_error(lambda: head_poses(value, "pose track"),
                   "pose track: expected head poses as numbers of shape (T, 6)")


# --- zoo.metrics.sync --------------------------------------------------------------------------------------------

FRAMES = np.zeros((6, 64, 64, 3), np.uint8)
SYNC_CASES = {
    "stereo-audio": (lambda s: s.audio_mfcc(np.zeros((16000, 2), np.float32)),
                     "sync audio: expected mono samples [N], got shape (16000, 2)"),
    "float-frames": (lambda s: s.prepare_video(FRAMES.astype(np.float32) / 255, size=32),
                     "sync video: expected uint8 RGB frames [T, H, W, 3], got float32 (6, 64, 64, 3)"),
    "gray-frames": (lambda s: s.prepare_video(FRAMES[..., 0], size=32),
                    "sync video: expected uint8 RGB frames [T, H, W, 3], got uint8 (6, 64, 64)"),
    "empty-crop": (lambda s: s.prepare_video(FRAMES, size=32, crop=(0.5, 0.1, 0.505, 0.9)),
                   "sync video: crop box (0.5, 0.1, 0.505, 0.9) is empty in a 64x64 frame"),
}


@pytest.mark.parametrize("case", sorted(SYNC_CASES))
def test_sync_input_errors_are_one_line(case):
    import zoo.metrics.sync as sync

    fn, fragment = SYNC_CASES[case]
    one_line_error(lambda: fn(sync), fragment)


# --- zoo.metrics.identity ----------------------------------------------------------------------------------------

def _images(n=2):
    return np.random.default_rng(0).integers(0, 256, (n, 120, 100, 3), dtype=np.uint8)


IDENTITY_CASES = {
    "float-images": (lambda: (_images().astype(np.float32), np.full((2, 68, 2), 50.0)),
                     "expected uint8 images [N, H, W, 3], got float32 (2, 120, 100, 3)"),
    "bgra-images": (lambda: (np.zeros((2, 120, 100, 4), np.uint8), np.full((2, 68, 2), 50.0)),
                    "expected uint8 images [N, H, W, 3], got uint8 (2, 120, 100, 4)"),
    "count-mismatch": (lambda: (_images(3), np.full((2, 68, 2), 50.0)), "got 2 landmark sets for 3 images"),
}


@pytest.mark.parametrize("case", sorted(IDENTITY_CASES))
def test_align_faces_input_errors_are_one_line(case):
    from zoo.metrics.identity import align_faces

    make, fragment = IDENTITY_CASES[case]
    images, landmarks = make()
    one_line_error(lambda: align_faces(images, landmarks), fragment)


# --- zoo.metrics.backbones.fan -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fan():
    from zoo.metrics.backbones.fan import FANLandmarks

    torch.manual_seed(0)
    return FANLandmarks()                                   # random weights: every case fails before a forward pass


FAN_CASES = {
    "detect-float-frames": (lambda m: m.detect(np.zeros((2, 32, 32, 3), np.float32)),
                            "landmarks: expected uint8 RGB frames [N, H, W, 3], got float32 (2, 32, 32, 3)"),
    "forward-chw-frames": (lambda m: m(torch.zeros(2, 3, 32, 32, dtype=torch.uint8), boxes=[None, None]),
                           "landmarks: expected uint8 RGB frames [N, H, W, 3], got uint8 (2, 3, 32, 32)"),
    "box-count-mismatch": (lambda m: m(np.zeros((3, 32, 32, 3), np.uint8), boxes=[None, np.array([0, 0, 8, 8])]),
                           "landmarks: got 2 boxes for 3 frames"),
}


@pytest.mark.parametrize("case", sorted(FAN_CASES))
def test_fan_input_errors_are_one_line(fan, case):
    fn, fragment = FAN_CASES[case]
    one_line_error(lambda: fn(fan), fragment)


# --- zoo.data.clip_writer ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("existing", [False, True], ids=["new-clip", "replacing-a-clip"])
def test_png_encoding_failure_is_one_line_and_writes_nothing(tmp_path, monkeypatch, existing):
    import cv2

    from zoo.data import clip_writer
    from zoo.data.fake import fake_clip

    frames, audio, tracks = fake_clip(3, 16, 25.0, 16000, 0, ["pose"])
    write = lambda f: clip_writer.write_clip(tmp_path, "c0", frames=f, audio=audio, sample_rate=16000,  # noqa: E731
                                             fps=25.0, tracks=tracks, meta={"identity": 0})
    def listing():                              # every path below tmp_path but clips/ itself, with file contents
        return {p.relative_to(tmp_path): p.read_bytes() if p.is_file() else None for p in tmp_path.rglob("*")
                if p != tmp_path / "clips"}

    if existing:
        write(frames)
    before = listing()
    assert bool(before) == existing
    real, calls = cv2.imencode, []

    def fail_on_second_frame(ext, image, params=()):
        calls.append(ext)
        return (False, None) if len(calls) == 2 else real(ext, image, params)

    monkeypatch.setattr(cv2, "imencode", fail_on_second_frame)
    one_line_error(lambda: write(frames[::-1].copy()), "clip 'c0' field 'frames': PNG encoding of frame 1 failed")
    assert len(calls) == 2
    assert listing() == before                  # the old clip intact; no clip, temp or partial file left beside it
