"""Rendered frames agree with the geometry: mouth interior inside the inner lips, eyes close on blinks, sizes scale."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from zoo.synth import SynthConfig, generate_clip

MOUTH = np.array([62, 22, 28])     # mouth cavity colour used by the renderer
TEETH = np.array([228, 224, 214])
EYE_WHITE = np.array([236, 232, 226])


@pytest.fixture(scope="module")
def clip128() -> dict:
    """An animated speaker (style 5 'emphatic' at top intensity: large mouth movements, frequent blinks)."""
    return generate_clip(SynthConfig(size=256, seconds=6.0), 2, 5, 2, 21)


def _mask(shape: tuple[int, int], polygon: np.ndarray) -> np.ndarray:
    m = np.zeros(shape, np.uint8)
    cv2.fillPoly(m, [np.round(polygon * 16).astype(np.int32)], 1, cv2.LINE_8, 4)
    return m.astype(bool)


def _near(pixels: np.ndarray, colour: np.ndarray, tol: int = 30) -> np.ndarray:
    return np.abs(pixels.astype(int) - colour).max(axis=-1) <= tol


def _cavity(pixels: np.ndarray, tol: float = 30.0) -> np.ndarray:
    """Pixels coloured like the mouth cavity, the teeth, or an anti-aliased blend of the two."""
    x = pixels.astype(np.float64) - MOUTH
    axis = (TEETH - MOUTH).astype(np.float64)
    u = np.clip(x @ axis / (axis @ axis), 0.0, 1.0)
    return np.linalg.norm(x - u[..., None] * axis, axis=-1) <= tol


def test_mouth_interior_is_where_the_inner_lips_are(clip128):
    frames, lm = clip128["frames"], clip128["landmarks2d"].astype(np.float64)
    size = frames.shape[1]
    gap = (lm[:, [67, 66, 65], 1] - lm[:, [61, 62, 63], 1]).mean(axis=1)
    kernel = np.ones((3, 3), np.uint8)
    inside_ok, ring_bad, checked = [], [], 0
    areas, cavity = [], []
    for t in range(len(frames)):
        inner = _mask((size, size), lm[t, 60:68])
        outer = _mask((size, size), lm[t, 48:60])
        cav = _cavity(frames[t])
        box = cv2.boundingRect(np.round(lm[t, 48:60]).astype(np.int32))
        x, y, w, h = box
        crop = frames[t][y - 2:y + h + 2, x - 2:x + w + 2]
        cavity.append((_near(crop, MOUTH) | _near(crop, TEETH)).sum())  # unambiguous cavity / teeth pixels
        areas.append(inner.sum())
        if gap[t] > 3.0:
            core = cv2.erode(inner.astype(np.uint8), kernel).astype(bool)
            lips = cv2.erode(outer.astype(np.uint8), kernel).astype(bool)
            lips &= ~cv2.dilate(inner.astype(np.uint8), kernel, iterations=2).astype(bool)
            inside_ok.append(cav[core].mean())
            ring_bad.append(cav[lips].mean())
            checked += 1
    assert checked >= 5, "the clip should open the mouth wide several times"
    assert len(ring_bad) == checked
    assert np.mean(inside_ok) > 0.95      # cavity / teeth colours fill the inner-lip polygon
    assert np.mean(ring_bad) < 0.05       # ... and not the lips around it
    assert np.corrcoef(areas, cavity)[0, 1] > 0.9
    closed = gap < 0.05
    assert closed.any() and np.max(np.array(cavity)[closed]) <= 3  # closed mouth: no cavity visible


def test_eyes_close_on_blinks_in_the_image(clip128):
    frames, lm = clip128["frames"], clip128["landmarks2d"].astype(np.float64)
    lm3 = clip128["landmarks3d"].astype(np.float64)
    opening = ((lm3[:, 41, 1] - lm3[:, 37, 1]) + (lm3[:, 47, 1] - lm3[:, 43, 1])) * 0.5e3  # mm
    whites = []
    for t in range(len(frames)):
        count = 0
        for eye in (slice(36, 42), slice(42, 48)):
            x, y, w, h = cv2.boundingRect(np.round(lm[t, eye]).astype(np.int32))
            count += _near(frames[t][y - 1:y + h + 2, x - 1:x + w + 2], EYE_WHITE, 20).sum()
        whites.append(count)
    whites = np.array(whites)
    shut, wide = opening < 0.3, opening > 0.7 * np.median(opening)
    assert shut.any() and wide.sum() > 20
    assert whites[shut].max() == 0 and whites[wide].min() > 0
    assert np.corrcoef(opening, whites)[0, 1] > 0.6


def test_rendering_follows_the_landmarks(clip128):
    """Skin under the nose tip, the brow colour on the brows, cavity absent on the chin, in every frame."""
    frames, lm = clip128["frames"], clip128["landmarks2d"]
    t = np.arange(len(frames))
    nose = frames[t, np.round(lm[:, 30, 1]).astype(int), np.round(lm[:, 30, 0]).astype(int)].astype(int)
    cheek = frames[t, np.round(lm[:, 2, 1] * 0.5 + lm[:, 30, 1] * 0.5).astype(int),
                   np.round(lm[:, 2, 0] * 0.5 + lm[:, 30, 0] * 0.5).astype(int)].astype(int)
    background = frames[:, 2, 2].astype(int)
    assert np.abs(nose - cheek).max(axis=1).mean() < 30          # both skin
    assert np.abs(nose - background).max(axis=1).mean() > 20      # ... and not background


@pytest.mark.parametrize("size", [64, 256])
def test_frame_sizes_scale_consistently(size):
    base = generate_clip(SynthConfig(size=128, seconds=1.0), 1, 1, 1, 4)
    other = generate_clip(SynthConfig(size=size, seconds=1.0), 1, 1, 1, 4)
    assert other["frames"].shape == (25, size, size, 3)
    scale = size / 128
    # same geometry; pixel coordinates scale about the frame centre
    np.testing.assert_allclose(other["landmarks2d"] - (size - 1) / 2, (base["landmarks2d"] - 63.5) * scale,
                               atol=2e-3 * scale)
    np.testing.assert_array_equal(other["audio"], base["audio"])
    # and the pictures agree once resampled to the same size
    resized = np.stack([cv2.resize(f, (128, 128), interpolation=cv2.INTER_AREA) for f in other["frames"]])
    diff = np.abs(resized.astype(int) - base["frames"].astype(int)).mean()
    assert diff < 12, diff


def test_background_is_per_identity():
    cfg = SynthConfig(size=64, seconds=1.0)
    a = generate_clip(cfg, 0, 0, 0, 1)["frames"][:, :6, :6]
    b = generate_clip(cfg, 0, 3, 1, 2)["frames"][:, :6, :6]
    c = generate_clip(cfg, 1, 0, 0, 1)["frames"][:, :6, :6]
    assert np.array_equal(a[0], b[5])  # static background of the same person
    assert np.abs(a[0].astype(int) - c[0].astype(int)).mean() > 5


def test_outlines_pass_through_their_points_and_frames_are_supersampled():
    from zoo.synth.render import _subdivide, supersampling

    rng = np.random.default_rng(0)
    poly = rng.normal(size=(3, 9, 2)) * 10
    smooth = _subdivide(poly, 2)
    assert smooth.shape == (3, 36, 2)
    np.testing.assert_allclose(smooth[:, ::4], poly)           # the jaw is drawn through its landmarks
    assert [supersampling(s) for s in (64, 128, 200, 256, 384, 512)] == [4, 4, 2, 2, 1, 1]
