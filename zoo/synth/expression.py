"""The 64-dimensional expression basis: displacement fields on the morphable model's points.

Laid out like the 3DMM expression vector StyleTalk consumes: the 13 mouth-related dims MOUTH_DIMS =
(0, 1, 2, 3, 4, 5, 7, 9, 10, 11, 12, 13, 14) are articulatory (jaw open, rounding, spread, closure, ...) and are
driven by phonemes; the other 51 (smile, brows, blinks, cheeks, ... and 32 small "micro" fields) are driven by
speaking style. Each basis vector is the displacement (metres) of every point for a coefficient of 1.

Mouth closure and blinks are contacts: a bilabial presses the lips together and a blink brings the lids
together. :func:`resolve_contacts` scales the closing coefficients frame by frame so that the lips / lids meet
exactly instead of passing through each other, for any identity shape.
"""
from __future__ import annotations

import numpy as np

from zoo.synth.face_model import (BROW_L, BROW_R, LIPS, LIPS_INNER, LIPS_OUTER, MEAN, N_LANDMARKS, N_POINTS,
                                  PIVOT_MM)

N_EXPRESSION = 64
MOUTH_DIMS: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 7, 9, 10, 11, 12, 13, 14)
STYLE_DIMS: tuple[int, ...] = tuple(d for d in range(N_EXPRESSION) if d not in MOUTH_DIMS)

# Named dims (the rest of 32..63 are "micro" fields).
JAW_OPEN, LIP_ROUND, LIP_SPREAD, LIP_PRESS, LOWER_LIP_TUCK, UPPER_LIP_RAISE = 0, 1, 2, 3, 4, 5
SMILE, LIP_FUNNEL, SMIRK, LIP_PART, LOWER_LIP_DEPRESS, MOUTH_STRETCH = 6, 7, 8, 9, 10, 11
UPPER_LIP_CURL, LOWER_LIP_EVERT, LIP_THIN = 12, 13, 14
BROW_INNER_RAISE, BROW_OUTER_RAISE, BROW_LOWER, BROW_RAISE_L, BROW_RAISE_R = 15, 16, 17, 18, 19
BLINK_L, BLINK_R, EYE_WIDE, SQUINT, CHEEK_RAISE, NOSE_WRINKLE = 20, 21, 22, 23, 24, 25
LIP_CORNER_DEPRESS, CHIN_RAISE, JAW_CLENCH, NOSTRIL_FLARE, DIMPLER, BROW_TILT = 26, 27, 28, 29, 30, 31
MICRO_DIMS = tuple(range(32, 64))

_NAMES = {0: "jaw_open", 1: "lip_round", 2: "lip_spread", 3: "lip_press", 4: "lower_lip_tuck",
          5: "upper_lip_raise", 6: "smile", 7: "lip_funnel", 8: "smirk", 9: "lip_part", 10: "lower_lip_depress",
          11: "mouth_stretch", 12: "upper_lip_curl", 13: "lower_lip_evert", 14: "lip_thin",
          15: "brow_inner_raise", 16: "brow_outer_raise", 17: "brow_lower", 18: "brow_raise_l",
          19: "brow_raise_r", 20: "blink_l", 21: "blink_r", 22: "eye_wide", 23: "squint", 24: "cheek_raise",
          25: "nose_wrinkle", 26: "lip_corner_depress", 27: "chin_raise", 28: "jaw_clench",
          29: "nostril_flare", 30: "dimpler", 31: "brow_tilt"}
EXPRESSION_NAMES: tuple[str, ...] = tuple(_NAMES.get(d, f"micro_{d - 32:02d}") for d in range(N_EXPRESSION))

_UPPER_OUTER, _LOWER_OUTER = [49, 50, 51, 52, 53], [55, 56, 57, 58, 59]
_UPPER_INNER, _LOWER_INNER = [61, 62, 63], [65, 66, 67]
_CORNERS = [48, 54, 60, 64]
_UPPER_LIDS, _LOWER_LIDS = [37, 38, 43, 44], [40, 41, 46, 47]
_LID_GAP = float((MEAN[41, 1] - MEAN[37, 1]) * 1e3)  # mean eye opening (mm)


class _Field:
    """Builder of one displacement field in face coordinates (mm)."""

    def __init__(self):
        self.d = np.zeros((N_POINTS, 3))
        self.p = MEAN * 1e3 + PIVOT_MM  # face-coordinate positions (mm)

    def move(self, idx, dx=0.0, dy=0.0, dz=0.0, *, mirror_x: bool = False) -> "_Field":
        """Add (dx, dy, dz) mm to points idx; mirror_x: dx points away from the midline (sign of x)."""
        idx = list(idx)
        sx = np.sign(self.p[idx, 0]) if mirror_x else 1.0
        self.d[idx, 0] += dx * sx
        self.d[idx, 1] += dy
        self.d[idx, 2] += dz
        return self

    def scale_x(self, idx, factor: float) -> "_Field":
        """Move points idx horizontally by factor * x (x = distance from the midline)."""
        idx = list(idx)
        self.d[idx, 0] += factor * self.p[idx, 0]
        return self

    def metres(self) -> np.ndarray:
        return self.d * 1e-3


def _jaw_rotation(angle: float) -> np.ndarray:
    """Displacement of every point when the jaw rotates by `angle` rad about the jaw hinge, with per-point
    weights (chin and lower lip follow fully, cheeks partly, upper face not at all), plus a forward glide."""
    f = _Field()
    w = np.zeros(N_POINTS)
    for k, wk in {2: 0.25, 3: 0.6, 14: 0.6, 13: 0.6, 12: 1, 4: 1, 5: 1, 6: 1, 7: 1, 8: 1, 9: 1, 10: 1, 11: 1}.items():
        w[k] = wk
    w[_LOWER_OUTER + _LOWER_INNER] = 1.0
    w[[48, 54]], w[[60, 64]] = 0.45, 0.5
    hinge = np.array([10.0, 60.0])  # (y, z) of the hinge axis in mm
    rel = f.p[:, 1:] - hinge
    c, s = np.cos(angle), np.sin(angle)
    rot = np.stack([rel[:, 0] * c - rel[:, 1] * s, rel[:, 0] * s + rel[:, 1] * c], axis=1)
    f.d[:, 1:] = (rot - rel) * w[:, None]
    f.d[:, 2] -= 6.0 * w  # the condyle glides forward as the jaw opens
    return f.metres()


def _mouth_fields() -> dict[int, np.ndarray]:
    F = _Field
    fields = {
        JAW_OPEN: _jaw_rotation(0.16),
        LIP_ROUND: F().move([48, 54], dx=-7, mirror_x=True).move([60, 64], dx=-6, mirror_x=True)
        .scale_x([49, 50, 52, 53, 55, 56, 58, 59, 61, 63, 65, 67], -0.25).move(LIPS, dz=-4)
        .move(_UPPER_INNER, dy=-1).move(_LOWER_INNER, dy=1).metres(),
        LIP_SPREAD: F().scale_x(LIPS, 0.22).move(_CORNERS, dy=-1, dz=2).move(_UPPER_OUTER, dy=0.8)
        .move(_LOWER_OUTER, dy=-0.8).metres(),
        LIP_PRESS: F().move(_UPPER_INNER, dy=2.5).move(_LOWER_INNER, dy=-2.5).move(_UPPER_OUTER, dy=1.5)
        .move(_LOWER_OUTER, dy=-1.5).move(LIPS, dz=1).metres(),
        LOWER_LIP_TUCK: F().move(_LOWER_OUTER, dy=-5, dz=4).move(_LOWER_INNER, dy=-4.5, dz=4)
        .move([7, 8, 9], dy=-1).metres(),
        UPPER_LIP_RAISE: F().move(_UPPER_OUTER, dy=-2.5, dz=-0.5).move(_UPPER_INNER, dy=-3)
        .move(range(31, 36), dy=-0.6).metres(),
        LIP_FUNNEL: F().move(LIPS, dz=-5).move(_CORNERS, dx=-3, dz=3, mirror_x=True).move(_UPPER_INNER, dy=-1.5)
        .move(_LOWER_INNER, dy=1.5).move(_UPPER_OUTER, dy=-1).move(_LOWER_OUTER, dy=1).metres(),
        LIP_PART: F().move(_UPPER_INNER, dy=-1.2).move(_LOWER_INNER, dy=2.0).move(_LOWER_OUTER, dy=1.2).metres(),
        LOWER_LIP_DEPRESS: F().move(_LOWER_OUTER, dy=3, dz=-1).move(_LOWER_INNER, dy=2.5).metres(),
        MOUTH_STRETCH: F().move(_CORNERS, dx=3, dy=2, mirror_x=True).move(_LOWER_OUTER + _LOWER_INNER, dy=1.5)
        .move(range(6, 11), dy=1).metres(),
        UPPER_LIP_CURL: F().move(_UPPER_OUTER, dy=-1.5, dz=-3).move(_UPPER_INNER, dy=-0.5, dz=-2).metres(),
        LOWER_LIP_EVERT: F().move(_LOWER_OUTER, dy=1.5, dz=-3).move(_LOWER_INNER, dy=0.5, dz=-2).metres(),
        LIP_THIN: F().move(_UPPER_OUTER, dy=2).move(_LOWER_OUTER, dy=-2).metres(),
    }
    return fields


def _style_fields() -> dict[int, np.ndarray]:
    F = _Field
    brows = BROW_L + BROW_R
    cheeks = [1, 2, 3, 4, 12, 13, 14, 15]
    tilt = F()
    for k, v in zip(BROW_L, np.linspace(-3, 3, 5)):
        tilt.move([k], dy=v)
    for k, v in zip(BROW_R, np.linspace(-3, 3, 5)):
        tilt.move([k], dy=v)
    return {
        SMILE: F().move([48, 54], dx=4, dy=-4.5, dz=3, mirror_x=True).move([60, 64], dx=3.5, dy=-4, dz=3, mirror_x=True)
        .move([49, 53, 55, 59], dx=2, mirror_x=True).move([49, 53], dy=-2).move([55, 59], dy=-2.5)
        .move([50, 52, 56, 58], dy=-1).move([61, 63, 65, 67], dy=-1.5).move(cheeks, dx=1.5, dy=-1, mirror_x=True)
        .move(_LOWER_LIDS, dy=-1).move([31, 35], dx=1, dy=-0.5, mirror_x=True).metres(),
        SMIRK: F().move([54, 64], dx=3, dy=-4, dz=2).move([53, 55, 63, 65], dx=1, dy=-2).metres(),
        BROW_INNER_RAISE: F().move([21, 22], dy=-6).move([20, 23], dy=-4).move([19, 24], dy=-2)
        .move(_UPPER_LIDS, dy=-0.5).metres(),
        BROW_OUTER_RAISE: F().move([17, 26], dy=-6).move([18, 25], dy=-5).move([19, 24], dy=-3)
        .move([20, 23], dy=-1).metres(),
        BROW_LOWER: F().move(brows, dy=3.5).move([20, 21, 22, 23], dx=-2, dy=1.5, dz=-1, mirror_x=True)
        .move(_UPPER_LIDS, dy=0.8).metres(),
        BROW_RAISE_L: F().move(BROW_L, dy=-6).move([37, 38], dy=-0.8).metres(),
        BROW_RAISE_R: F().move(BROW_R, dy=-6).move([43, 44], dy=-0.8).metres(),
        # Blinks overshoot (1.25 x the mean lid gap): resolve_contacts stops the lids where they meet, so a
        # blink of 1 closes the eye fully for every eye size.
        BLINK_L: F().move([37, 38], dy=1.25 * (_LID_GAP - 0.5)).move([40, 41], dy=-1.25 * 0.5)
        .move([36, 39], dy=0.3).metres(),
        BLINK_R: F().move([43, 44], dy=1.25 * (_LID_GAP - 0.5)).move([46, 47], dy=-1.25 * 0.5)
        .move([42, 45], dy=0.3).metres(),
        EYE_WIDE: F().move(_UPPER_LIDS, dy=-2.2).move(_LOWER_LIDS, dy=0.8).move(brows, dy=-1.5).metres(),
        SQUINT: F().move(_LOWER_LIDS, dy=-2.0).move(_UPPER_LIDS, dy=1.5).move([36, 45], dx=-0.5, mirror_x=True)
        .move([1, 2, 3, 13, 14, 15], dy=-1).metres(),
        CHEEK_RAISE: F().move(cheeks, dx=1.5, dy=-2, mirror_x=True).move(_LOWER_LIDS, dy=-1)
        .move([31, 35], dx=1, dy=-0.5, mirror_x=True).move([48, 54], dy=-1).metres(),
        NOSE_WRINKLE: F().move(range(31, 36), dy=-2.5).move([29, 30], dy=-1, dz=-0.5)
        .move([21, 22], dx=-1.5, dy=2, mirror_x=True).move(_UPPER_OUTER, dy=-1).metres(),
        LIP_CORNER_DEPRESS: F().move([48, 54], dy=4).move([60, 64], dy=3.5).move([49, 53, 55, 59], dy=1.5)
        .move([7, 8, 9], dy=0.5).metres(),
        CHIN_RAISE: F().move(range(6, 11), dy=-3, dz=-1).move(_LOWER_OUTER, dy=-2, dz=-2).metres(),
        JAW_CLENCH: F().move(range(2, 15), dx=-1.5, mirror_x=True).move(range(6, 11), dy=-0.5).metres(),
        NOSTRIL_FLARE: F().move([31, 35], dx=2, mirror_x=True).move([32, 34], dx=1, mirror_x=True).metres(),
        DIMPLER: F().move(_CORNERS, dx=-2, dz=2, mirror_x=True).metres(),
        BROW_TILT: tilt.metres(),
    }


def _micro_fields() -> dict[int, np.ndarray]:
    """Small smooth fields on the upper face (no lips), like the low-variance tail of a 3DMM expression PCA.
    Fixed (not seeded by the corpus seed), so the basis is the same for every corpus."""
    rng = np.random.default_rng(64_0032)
    p = MEAN[:N_LANDMARKS] * 1e3 + PIVOT_MM
    anchors = [k for k in range(N_LANDMARKS) if k not in LIPS and k not in range(5, 12)]
    out = {}
    for d in MICRO_DIMS:
        f = np.zeros((N_POINTS, 3))
        for c in rng.choice(anchors, size=2, replace=False):
            direction = rng.standard_normal(3)
            direction *= 1.5 / np.linalg.norm(direction)
            w = np.exp(-np.sum((p - p[c]) ** 2, axis=1) / (2 * 15.0 ** 2))
            w[LIPS_OUTER + LIPS_INNER] = 0.0
            f[:N_LANDMARKS] += w[:, None] * direction
        out[d] = f * 1e-3
    return out


def _basis() -> np.ndarray:
    fields = {**_mouth_fields(), **_style_fields(), **_micro_fields()}
    assert sorted(fields) == list(range(N_EXPRESSION))
    return np.stack([fields[d] for d in range(N_EXPRESSION)])


EXP_BASIS = _basis()  # [64, N_POINTS, 3] metres per unit coefficient

# Contacts: (upper points, lower points, closing dims). The gap is the lower point's y minus the upper's.
CONTACTS = {
    "lips": ([61, 62, 63], [67, 66, 65], (LIP_PRESS, LOWER_LIP_TUCK)),
    "eye_l": ([37, 38], [41, 40], (BLINK_L,)),
    "eye_r": ([43, 44], [47, 46], (BLINK_R,)),
}


def resolve_contacts(shape: np.ndarray, expression: np.ndarray) -> np.ndarray:
    """Scale closing coefficients so lips and eyelids meet instead of crossing.

    shape: [N_POINTS, 3] identity neutral shape; expression: [T, 64] -> a corrected copy [T, 64].
    """
    exp = expression.copy()
    for upper, lower, closers in CONTACTS.values():
        g0 = shape[lower, 1] - shape[upper, 1]                            # [P] neutral gaps
        dg = EXP_BASIS[:, lower, 1] - EXP_BASIS[:, upper, 1]              # [64, P] gap change per unit coeff
        closers = list(closers)
        closing = exp[:, closers] @ dg[closers]                           # [T, P]
        opening = g0 + exp @ dg - closing
        need = np.where(closing < -1e-12, opening / np.minimum(closing, -1e-12) * -1.0, np.inf)
        scale = np.clip(np.min(need, axis=1), 0.0, 1.0)                   # [T]
        exp[:, closers] *= scale[:, None]
    return exp


def gaps(points: np.ndarray, contact: str) -> np.ndarray:
    """Gaps (metres) of a contact for posed or unposed points [..., N, 3] -> [..., P]."""
    upper, lower, _ = CONTACTS[contact]
    return points[..., lower, 1] - points[..., upper, 1]
