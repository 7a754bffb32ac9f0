"""Rasterise frames from projected points with OpenCV anti-aliased primitives.

Layers, back to front: per-identity background (precomputed once), hair behind the head, torso (from the
shoulder billboard points), neck, ears, face skin with shading, hair in front, brows, eyes (whites, iris,
pupil, lids; blinks follow the lid landmarks), nose, lips and the mouth interior (dark cavity and teeth
inside the inner-lip polygon). Outlines are smoothed by interpolating subdivision, so they pass through their
landmarks.

Frames are drawn at :func:`supersampling` times their size and box-filtered down (``cv2.INTER_AREA``): OpenCV
fills polygons by whole pixel rows (plus a 1-px anti-aliased outline), so drawn at the frame size a shape grows by
about half a pixel and its edges snap to rows, e.g. the inner lips' centroid moved by up to 0.22 px with the
sub-pixel position of the same mouth at 128 px; at 4x, 1/4 of that. Lip motion is about 0.6 px at 128 px, so the
frames must follow the stored landmarks more closely than that. Primitives use ``cv2.LINE_AA`` with 4 bits of
sub-pixel precision at the drawing size.

Drawing the frame at 2x and only a box around the lips again at 4x was tried (2026-12-06) and was no faster: at
these sizes an OpenCV fill costs mostly per call, not per pixel, and the box needs every layer drawn again.

Speed: every derived shape (shading rings, brow outlines, teeth, iris ellipses, ...) is computed for all
frames at once with numpy before the per-frame loop, which then only issues ~40 cv2 calls per frame.
"""
from __future__ import annotations

import cv2
import numpy as np

from zoo.synth.face_model import AUX_SLICES, N_POINTS, PIVOT_MM
from zoo.synth.identity import Identity

_SHIFT = 4
_ONE = 1 << _SHIFT
_AA = cv2.LINE_AA


def _fx(points: np.ndarray) -> np.ndarray:
    """Float pixel coordinates -> int32 fixed point for cv2 (shift=4)."""
    return np.ascontiguousarray(np.round(points * _ONE), dtype=np.int32)


def _subdivide(poly: np.ndarray, iterations: int) -> np.ndarray:
    """Interpolating four-point subdivision (Dyn, Levin and Gregory) of closed polygons [T, M, 2] ->
    [T, M * 2**iterations, 2]: rounder outlines for the face, hair, ears and torso that keep their points (a
    corner-cutting scheme would draw the jaw inside its landmarks)."""
    for _ in range(iterations):
        before, after, after2 = np.roll(poly, 1, axis=1), np.roll(poly, -1, axis=1), np.roll(poly, -2, axis=1)
        middle = (9 * (poly + after) - (before + after2)) / 16
        poly = np.stack([poly, middle], axis=2).reshape(len(poly), -1, 2)
    return poly


def supersampling(size: int) -> int:
    """How many times larger than a ``size``-px frame it is drawn (a power of 2): 4 up to 128 px, 2 up to 256 px,
    then 1 (at 512 px a row is already 1/4 of what it is at 128 px)."""
    return 4 if size <= 128 else 2 if size <= 256 else 1


def _c(rgb) -> tuple[int, int, int]:
    return tuple(int(v) for v in np.clip(np.round(rgb), 0, 255))


def hair_points(identity: Identity) -> dict[str, np.ndarray]:
    """Identity-specific rigid points (object space, metres) for the hair: 'hair_back' and 'hair_front'."""
    app = identity.appearance
    skull = identity.shape[AUX_SLICES["skull"]]
    hairline = identity.shape[AUX_SLICES["hairline"]]
    centre = (np.array([0.0, -45.0, 45.0]) - PIVOT_MM) * 1e-3
    vol = app.hair_volume if app.hair_style != 2 else 0.012
    back = centre + (skull - centre) * (1 + vol)
    left, right = back[0], back[-1]
    mm = 1e-3
    if app.hair_style == 1:    # long: falls behind the neck to the shoulders
        tail = [right + np.array([8, 70, 10]) * mm, right + np.array([12, 150, 20]) * mm,
                right + np.array([-30, 165, 30]) * mm, left + np.array([30, 165, 30]) * mm,
                left + np.array([-12, 150, 20]) * mm, left + np.array([-8, 70, 10]) * mm]
    elif app.hair_style == 3:  # bob: down to the jaw
        tail = [right + np.array([6, 60, 5]) * mm, right + np.array([-8, 85, 10]) * mm,
                left + np.array([8, 85, 10]) * mm, left + np.array([-6, 60, 5]) * mm]
    else:
        tail = [right + np.array([-2, 18, 0]) * mm, left + np.array([2, 18, 0]) * mm]
    hair_back = np.concatenate([back, np.array(tail)])
    front_top = centre + (skull[1:-1] - centre) * (1 + 0.6 * vol)
    line = hairline.copy()
    if app.hair_style == 3:    # fringe down to just above the brows
        line[:, 1] += np.array([0, 10, 22, 30, 32, 30, 22, 10, 0]) * mm
    elif app.hair_style == 2:  # receding buzz cut
        line[:, 1] -= 8 * mm
    hair_front = np.concatenate([front_top, line[::-1]])
    return {"hair_back": hair_back, "hair_front": hair_front}


def make_background(identity: Identity, size: int) -> np.ndarray:
    """[size, size, 3] uint8 RGB: vertical gradient, a window-like panel and soft lights, defocused."""
    top, bottom, accent = identity.appearance.background
    rng = np.random.default_rng(identity.appearance.background_seed)
    y = np.linspace(0.0, 1.0, size)[:, None, None]
    img = (top * (1 - y) + bottom * y) * np.ones((1, size, 1))
    # Fixed-size shapes are drawn at 1/4 scale then upsampled with the blur, so every size looks the same.
    small = max(32, size // 4)
    layer = np.zeros((small, small, 3))
    x0, y0 = rng.uniform(-0.1, 0.6) * small, rng.uniform(-0.1, 0.3) * small
    w, h = rng.uniform(0.25, 0.5) * small, rng.uniform(0.3, 0.6) * small
    cv2.rectangle(layer, (int(x0), int(y0)), (int(x0 + w), int(y0 + h)), (1, 1, 1), -1)
    for _ in range(int(rng.integers(2, 5))):
        c = (int(rng.uniform(0, small)), int(rng.uniform(0, small * 0.6)))
        cv2.circle(layer, c, int(rng.uniform(0.04, 0.1) * small), (0.6, 0.6, 0.6), -1)
    layer = cv2.resize(layer, (size, size), interpolation=cv2.INTER_LINEAR)
    layer = cv2.GaussianBlur(layer, (0, 0), size / 40)
    img = img * (1 - 0.35 * layer) + accent * 0.35 * layer
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


class Renderer:
    """Renders one identity at one frame size; keeps the identity's background."""

    def __init__(self, identity: Identity, size: int):
        self.size = size
        self.scale = supersampling(size)
        self.draw_size = size * self.scale
        self.app = identity.appearance
        background = make_background(identity, size)
        # drawn at the frame size and repeated, so the box filter gives back its pixels wherever nothing covers it
        self.background = np.repeat(np.repeat(background, self.scale, axis=0), self.scale, axis=1)
        app = self.app
        skin = app.skin
        self.col = {
            "skin_rim": _c(skin * 0.8), "neck": _c(skin * 0.78), "ear": _c(skin * 0.86), "ear_in": _c(skin * 0.66),
            "crease": _c(skin * 0.84), "nose_shadow": _c(skin * 0.9), "nose_wing": _c(skin * 0.82),
            "nostril": _c(skin * 0.45), "hair": _c(app.hair), "brow": _c(app.brow), "white": (236, 232, 226),
            "iris": _c(app.iris), "pupil": (18, 14, 14), "lid": _c(np.minimum(app.hair * 0.5, skin * 0.35)),
            "lower_lid": _c(skin * 0.8), "lip_lower": _c(app.lips), "lip_upper": _c(app.lips * 0.88),
            "lip_line": _c(app.lips * 0.5), "mouth": (62, 22, 28), "teeth": (228, 224, 214),
            "shirt": _c(app.shirt), "collar": _c(np.minimum(app.shirt * 1.3 + 40, 250)),
        }
        # Shading: nested copies of the face outline shrunk towards the nose and shifted towards the light,
        # each a little brighter (a cheap dome-like shading that follows pose, with steps of ~2%).
        scales = np.linspace(0.95, 0.35, int(np.clip(size / 16, 8, 24)))
        self.rings = [(k, _c(skin * (0.84 + 0.2 * (1 - k) / 0.6))) for k in scales]
        self.px = self.draw_size / 128.0  # stroke widths are designed at 128 px (drawing pixels per frame pixel)
        self.smooth = 1 if size < 256 else 2  # subdivision steps for outlines (face, hair)
        hair = hair_points(identity)
        self.rig = np.concatenate([identity.shape, hair["hair_back"], hair["hair_front"]])  # [N_RIG, 3]
        self.hair_back = slice(N_POINTS, N_POINTS + len(hair["hair_back"]))
        self.hair_front = slice(self.hair_back.stop, self.hair_back.stop + len(hair["hair_front"]))

    def _shapes(self, p: np.ndarray, sh: np.ndarray) -> dict[str, np.ndarray]:
        """All derived polygons for all frames (float drawing pixels): p [T, N, 2] points, sh [T, 18, 2] shoulders,
        both in drawing pixels."""
        s = self.draw_size
        out: dict[str, np.ndarray] = {}
        skull = p[:, AUX_SLICES["skull"]]
        face = _subdivide(np.concatenate([p[:, 0:17], skull[:, ::-1]], axis=1), self.smooth)
        out["face"] = face
        out["hair_back"] = _subdivide(p[:, self.hair_back], self.smooth)
        out["hair_front"] = _subdivide(p[:, self.hair_front], self.smooth)
        out["ear_l"] = _subdivide(p[:, AUX_SLICES["ear_left"]], self.smooth)
        out["ear_r"] = _subdivide(p[:, AUX_SLICES["ear_right"]], self.smooth)
        centre = 0.55 * p[:, 30:31] + 0.45 * p[:, 28:29]
        light = np.array([-0.012, -0.02]) * s
        out["rings"] = [centre + k * (face - centre) + (1 - k) * light for k, _ in self.rings]
        # Torso: shoulder contour closed well below and beyond the frame.
        left, right = sh[:, :9], sh[:, 9:]
        spread = np.array([0.3 * s, 0.25 * s])
        low_l = left[:, -1:] + spread * [-1, 1]
        low_r = right[:, -1:] + spread * [1, 1]
        bottom = np.stack([np.stack([low_r[:, 0, 0], np.full(len(p), 2.0 * s)], 1),
                           np.stack([low_l[:, 0, 0], np.full(len(p), 2.0 * s)], 1)], axis=1)
        out["torso"] = _subdivide(np.concatenate([low_l, left[:, ::-1], right, low_r, bottom], axis=1), self.smooth)
        neck_top = p[:, AUX_SLICES["neck"]]
        out["neck"] = np.concatenate([neck_top[:, :1], left[:, :1] + [0.004 * s, 0], right[:, :1] - [0.004 * s, 0],
                                      neck_top[:, 1:]], axis=1)
        base_mid = 0.5 * (left[:, 0] + right[:, 0])
        half = 0.5 * (right[:, 0] - left[:, 0])
        if self.app.collar == 1:  # v-neck
            out["neckline"] = np.stack([left[:, 0], right[:, 0], base_mid + [0, 0.12 * s]], axis=1)
        else:                     # round neck (a half ellipse below the neck base)
            ang = np.linspace(0, np.pi, 9)
            dx = half[:, 0:1] * np.cos(ang)                              # [T, 9]
            dy = np.broadcast_to(0.05 * s * np.sin(ang), dx.shape)
            out["neckline"] = base_mid[:, None] + np.stack([dx, dy], axis=2)
        # Brows: thick at the inner end; the outline is the landmark line offset along its normal.
        for name, idx, profile in (("brow_l", slice(17, 22), [0.5, 0.8, 0.95, 1.0, 0.9]),
                                   ("brow_r", slice(22, 27), [0.9, 1.0, 0.95, 0.8, 0.5])):
            line = p[:, idx]
            tangent = np.gradient(line, axis=1)
            normal = np.stack([tangent[..., 1], -tangent[..., 0]], -1)
            normal /= np.linalg.norm(normal, axis=-1, keepdims=True) + 1e-9
            normal *= np.sign(normal[..., 1:2] + 1e-9) * -1  # point up
            th = 0.022 * s * np.array(profile)[None, :, None]
            out[name] = np.concatenate([line + 0.6 * th * normal, (line - 0.4 * th * normal)[:, ::-1]], axis=1)
        # Eyes: lids never cross; iris as an ellipse clipped vertically by the lid opening.
        for name, idx in (("eye_l", [36, 37, 38, 39, 40, 41]), ("eye_r", [42, 43, 44, 45, 46, 47])):
            e = p[:, idx].copy()
            e[:, 1, 1] = np.minimum(e[:, 1, 1], e[:, 5, 1])
            e[:, 2, 1] = np.minimum(e[:, 2, 1], e[:, 4, 1])
            out[name] = e
            width = np.linalg.norm(e[:, 3] - e[:, 0], axis=-1)
            opening = 0.5 * ((e[:, 5, 1] - e[:, 1, 1]) + (e[:, 4, 1] - e[:, 2, 1]))
            out[name + "_open"] = opening
            mid = 0.25 * (e[:, 1] + e[:, 2] + e[:, 4] + e[:, 5])
            out[name + "_iris"] = np.stack([mid[:, 0], mid[:, 1],
                                            0.19 * width, np.minimum(0.19 * width, 0.5 * opening)], axis=1)
            out[name + "_crease"] = e[:, [0, 1, 2, 3]] + np.array([0, -0.022 * s])
        # Teeth: from the inner upper lip down (and the inner lower lip up), never past the other lip.
        up, low = p[:, [61, 62, 63]], p[:, [67, 66, 65]]
        gap = np.clip(low[..., 1] - up[..., 1], 0, None)[..., None]
        t_up = np.minimum(0.028 * s, 0.6 * gap) * [0, 1]
        t_low = np.minimum(0.016 * s, 0.3 * gap) * [0, 1]
        out["teeth_up"] = np.concatenate([p[:, 60:61], up, p[:, 64:65], (up + t_up)[:, ::-1]], axis=1)
        out["teeth_low"] = np.concatenate([p[:, 60:61], low, p[:, 64:65], (low - t_low)[:, ::-1]], axis=1)
        out["mouth_open"] = gap.max(axis=(1, 2))
        # Nose: a soft shadow line along the bridge on the side away from the light.
        out["nose_side"] = p[:, 28:31] + np.array([0.012 * s, 0.0])
        out["upper_lip"] = np.concatenate([p[:, 48:55], p[:, [64, 63, 62, 61, 60]]], axis=1)
        return out

    def render(self, points2d: np.ndarray, shoulders2d: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Frames [T, size, size, 3] uint8 RGB from projected rig points [T, N_RIG, 2] (the posed
        ``self.rig`` points plus expression: landmarks, aux and hair) and shoulder points [T, 18, 2]."""
        n, size, scale = len(points2d), self.size, self.scale
        frames = np.empty((n, size, size, 3), np.uint8) if out is None else out
        # frame pixel (0, 0), centred at (0, 0), covers drawing pixels 0..scale-1, centred at (scale - 1) / 2
        points2d = (np.asarray(points2d, np.float64) + 0.5) * scale - 0.5
        shoulders2d = (np.asarray(shoulders2d, np.float64) + 0.5) * scale - 0.5
        shp = self._shapes(points2d, shoulders2d)
        fx = {k: _fx(v) for k, v in shp.items() if isinstance(v, np.ndarray) and v.ndim == 3}
        rings = [_fx(r) for r in shp["rings"]]
        iris = {e: np.round(shp[e + "_iris"] * _ONE).astype(np.int64) for e in ("eye_l", "eye_r")}
        P = _fx(points2d)
        canvas = np.empty_like(self.background)
        col, px = self.col, self.px
        lw = max(1, int(round(px)))
        nostril = int(round(0.9 * px * _ONE))
        ear_l, ear_r = AUX_SLICES["ear_left"], AUX_SLICES["ear_right"]
        # the large fills behind the features (head, torso, shading) are anti-aliased by the supersampling alone:
        # OpenCV's anti-aliased fill costs 1.6x as much, and they carry no landmark that is scored
        big = _AA if scale == 1 else cv2.LINE_8
        for t in range(n):
            img = canvas
            np.copyto(img, self.background)
            pt = P[t]
            cv2.fillPoly(img, [fx["hair_back"][t]], col["hair"], big, _SHIFT)
            cv2.fillPoly(img, [fx["torso"][t]], col["shirt"], big, _SHIFT)
            cv2.fillPoly(img, [fx["neck"][t]], col["neck"], big, _SHIFT)
            if self.app.collar == 2:
                cv2.polylines(img, [fx["neckline"][t]], False, col["collar"], 2 * lw, _AA, _SHIFT)
            cv2.fillPoly(img, [fx["neckline"][t]], col["neck"], big, _SHIFT)
            for ear, rim in ((fx["ear_l"][t], pt[ear_l][1:4]), (fx["ear_r"][t], pt[ear_r][1:4])):
                cv2.fillPoly(img, [ear], col["ear"], big, _SHIFT)
                cv2.polylines(img, [rim], False, col["ear_in"], lw, _AA, _SHIFT)
            cv2.fillPoly(img, [fx["face"][t]], col["skin_rim"], _AA, _SHIFT)
            for (_, c), r in zip(self.rings, rings):
                cv2.fillPoly(img, [r[t]], c, big, _SHIFT)
            cv2.fillPoly(img, [fx["hair_front"][t]], col["hair"], big, _SHIFT)
            cv2.fillPoly(img, [fx["brow_l"][t], fx["brow_r"][t]], col["brow"], _AA, _SHIFT)
            for eye in ("eye_l", "eye_r"):
                e = fx[eye][t]
                cv2.polylines(img, [fx[eye + "_crease"][t]], False, col["crease"], lw, _AA, _SHIFT)
                if shp[eye + "_open"][t] > 0.6 * px:
                    cv2.fillPoly(img, [e], col["white"], _AA, _SHIFT)
                    cx, cy, ax, ay = (int(v) for v in iris[eye][t])
                    cv2.ellipse(img, (cx, cy), (ax, ay), 0, 0, 360, col["iris"], -1, _AA, _SHIFT)
                    cv2.ellipse(img, (cx, cy), (ax // 2, ay // 2), 0, 0, 360, col["pupil"], -1, _AA, _SHIFT)
                    cv2.polylines(img, [e[[3, 4, 5, 0]]], False, col["lower_lid"], lw, _AA, _SHIFT)
                cv2.polylines(img, [e[:4]], False, col["lid"], lw, _AA, _SHIFT)
            cv2.polylines(img, [fx["nose_side"][t]], False, col["nose_shadow"], lw, _AA, _SHIFT)
            cv2.polylines(img, [pt[31:36]], False, col["nose_wing"], lw, _AA, _SHIFT)
            for k in (32, 34):
                cv2.circle(img, (int(pt[k, 0]), int(pt[k, 1])), nostril, col["nostril"], -1, _AA, _SHIFT)
            cv2.fillPoly(img, [pt[48:60]], col["lip_lower"], _AA, _SHIFT)
            cv2.fillPoly(img, [fx["upper_lip"][t]], col["lip_upper"], _AA, _SHIFT)
            if shp["mouth_open"][t] > 0.25 * px:
                cv2.fillPoly(img, [pt[60:68]], col["mouth"], _AA, _SHIFT)
                cv2.fillPoly(img, [fx["teeth_up"][t], fx["teeth_low"][t]], col["teeth"], _AA, _SHIFT)
            cv2.polylines(img, [pt[60:65]], False, col["lip_line"], lw, _AA, _SHIFT)
            while img.shape[0] > size:   # 2x2 box averages (OpenCV's fast path; one 4x step costs 7x more)
                img = cv2.resize(img, (img.shape[1] // 2, img.shape[0] // 2), interpolation=cv2.INTER_AREA)
            frames[t] = img
        return frames
