"""A linear morphable model of 68 3D facial landmarks (iBUG-68 order) plus auxiliary render points.

    points(identity_coeffs, expression) = MEAN + ID_BASIS . identity_coeffs + EXP_BASIS . expression

Object space (metres): x to the image right (the subject's left), y down, z away from the camera, origin at the
head's rotation pivot (upper neck, behind the jaw), so a nod rotates the face about the neck like a real head.

iBUG-68: 0-16 jaw (0 is on the image left), 17-21 / 22-26 brows, 27-30 nose bridge (30 = tip), 31-35 nostrils,
36-41 / 42-47 eyes (36, 45 outer corners), 48-59 outer lips (48, 54 corners, 51 top, 57 bottom), 60-67 inner
lips (62 upper middle, 66 lower middle).

Auxiliary points (AUX_*) are not landmarks; they are rigidly attached the same way and give the renderer the
skull outline, hairline, ears and neck. The expression basis lives in :mod:`zoo.synth.expression`.
"""
from __future__ import annotations

import numpy as np

N_LANDMARKS = 68

# Left half (image left, x < 0) and the midline in face coordinates (mm, origin at the nose bridge), mirrored
# below. Values are hand-placed to average adult proportions.
_JAW_LEFT = [(-70, 8, 55), (-68.5, 26, 52), (-65, 44, 47), (-59.5, 61, 40), (-52, 76, 30), (-41.5, 89, 18),
             (-29, 99, 6), (-15, 105, -3), (0, 107, -6)]  # 0..8
_BROW_LEFT = [(-57, -11, 20), (-47, -19, 9), (-36, -22, 2), (-24, -21, -3), (-12, -16, -6)]  # 17..21
_NOSE_BRIDGE = [(0, 0, -6), (0, 14, -14), (0, 28, -22), (0, 42, -31)]  # 27..30
_NOSE_BOTTOM_LEFT = [(-14, 50, -11), (-7, 53, -17), (0, 55, -20)]  # 31..33
_EYE_LEFT = [(-45, 5.5, 9), (-37, 0, 4), (-27, 0, 3), (-18, 5.5, 4), (-27, 10.5, 4), (-37, 10.5, 5)]  # 36..41
_LIPS_OUTER_LEFT = [(-25, 75, -4), (-16, 69, -13), (-6, 66, -17), (0, 67, -18)]  # 48..51
_LIPS_OUTER_LOWER_LEFT = [(-16, 82, -10), (-7, 86, -14), (0, 87, -14)]  # 59, 58, 57
_LIPS_INNER_LEFT = [(-21, 75.5, -6), (-8, 75, -14), (0, 75, -15)]  # 60..62
_LIPS_INNER_LOWER_LEFT = [(-8, 75.6, -14), (0, 75.6, -15)]  # 67, 66
PIVOT_MM = np.array([0.0, 55.0, 85.0])  # rotation pivot in face coordinates (mm)


def _mirror(p):
    return (-p[0], p[1], p[2])


def _landmarks_mm() -> np.ndarray:
    """[68, 3] mean landmarks in face coordinates (mm)."""
    pts = [None] * N_LANDMARKS
    for k, p in enumerate(_JAW_LEFT):
        pts[k] = p
        pts[16 - k] = _mirror(p)
    for k, p in enumerate(_BROW_LEFT):
        pts[17 + k] = p
        pts[26 - k] = _mirror(p)
    for k, p in enumerate(_NOSE_BRIDGE):
        pts[27 + k] = p
    for k, p in enumerate(_NOSE_BOTTOM_LEFT):
        pts[31 + k] = p
        pts[35 - k] = _mirror(p)
    for k, p in enumerate(_EYE_LEFT):
        pts[36 + k] = p
    # right eye: 42 inner corner, 43-44 upper, 45 outer corner, 46-47 lower (mirror of 39, 38, 37, 36, 41, 40)
    for k, src in enumerate([39, 38, 37, 36, 41, 40]):
        pts[42 + k] = _mirror(pts[src])
    for k, p in enumerate(_LIPS_OUTER_LEFT):
        pts[48 + k] = p
        pts[54 - k] = _mirror(p)
    for k, p in zip((59, 58, 57), _LIPS_OUTER_LOWER_LEFT):
        pts[k] = p
        pts[55 + 59 - k] = _mirror(p) if k != 57 else p
    for k, p in enumerate(_LIPS_INNER_LEFT):
        pts[60 + k] = p
        pts[64 - k] = _mirror(p)
    for k, p in zip((67, 66), _LIPS_INNER_LOWER_LEFT):
        pts[k] = p
        pts[65 + 67 - k] = _mirror(p) if k != 66 else p
    return np.array(pts, dtype=np.float64)


def _aux_mm() -> dict[str, np.ndarray]:
    """Auxiliary point groups in face coordinates (mm)."""
    phi = np.radians(np.linspace(-80, 80, 13))
    skull = np.stack([78 * np.sin(phi), -8 - 100 * np.cos(phi), 40 + 15 * np.cos(phi)], axis=1)
    phi_h = np.radians(np.linspace(-72, 72, 9))
    hairline = np.stack([66 * np.sin(phi_h), -30 - 45 * np.cos(phi_h), 18 + 20 * (1 - np.cos(phi_h))], axis=1)
    ear_left = np.array([(-72, -2, 68), (-80, 2, 72), (-84, 18, 74), (-80, 36, 72), (-72, 42, 66)], float)
    ear_right = ear_left * np.array([-1, 1, 1])
    neck = np.array([(-42, 80, 60), (42, 80, 60)], float)
    return {"skull": skull, "hairline": hairline, "ear_left": ear_left, "ear_right": ear_right, "neck": neck}


_AUX = _aux_mm()
AUX_SLICES: dict[str, slice] = {}
_offset = N_LANDMARKS
for _name, _pts in _AUX.items():
    AUX_SLICES[_name] = slice(_offset, _offset + len(_pts))
    _offset += len(_pts)
N_POINTS = _offset  # landmarks + auxiliary points

# Mean shape of all points in object space (metres), [N_POINTS, 3].
MEAN = (np.concatenate([_landmarks_mm()] + list(_AUX.values())) - PIVOT_MM) * 1e-3

# Landmark index groups.
JAW = list(range(0, 17))
BROW_L, BROW_R = list(range(17, 22)), list(range(22, 27))
NOSE = list(range(27, 36))
EYE_L, EYE_R = list(range(36, 42)), list(range(42, 48))
LIPS_OUTER, LIPS_INNER = list(range(48, 60)), list(range(60, 68))
LIPS = LIPS_OUTER + LIPS_INNER


def _field(fn) -> np.ndarray:
    """Displacement field [N_POINTS, 3] (metres) from fn(face-coordinate points mm [N,3]) -> mm [N,3]."""
    pts_mm = MEAN * 1e3 + PIVOT_MM
    return np.asarray(fn(pts_mm), dtype=np.float64) * 1e-3


def _region(indices) -> np.ndarray:
    m = np.zeros((N_POINTS, 1))
    m[list(indices)] = 1.0
    return m


def _identity_basis() -> tuple[tuple[str, ...], np.ndarray]:
    """Semantic identity modes, each a displacement field for a unit (1 sigma) coefficient."""
    all_pts = np.ones((N_POINTS, 1))
    below_eyes = lambda p: np.clip((p[:, 1:2] - 5) / 100, 0, None)  # noqa: E731  0 at eyes -> 1 at chin
    eye_centre = lambda p, c: np.where(p[:, :1] < 0, -c, c)  # noqa: E731
    modes = {
        "face_width": lambda p: p * [0.06, 0, 0.02] * (1 - _region(LIPS + EYE_L + EYE_R + NOSE)),
        "face_length": lambda p: np.concatenate([0 * p[:, :1], 9 * below_eyes(p), 0 * p[:, :1]], 1)
        * (1 - _region(range(17, 48))),
        "jaw_width": lambda p: p * [0.07, 0, 0] * _region(range(3, 14)) * below_eyes(p) * 2,
        "chin": lambda p: np.array([0.0, 5.0, -2.0]) * _region(range(6, 11)) * (1 - np.abs(p[:, :1]) / 40),
        "eye_spacing": lambda p: np.concatenate([eye_centre(p, 3.0), 0 * p[:, 1:]], 1) * _region(EYE_L + EYE_R),
        "eye_size": lambda p: (p - np.where(p[:, :1] < 0, 1, 0) * [-31.5, 5.3, 5]
                               - np.where(p[:, :1] >= 0, 1, 0) * [31.5, 5.3, 5]) * 0.1 * _region(EYE_L + EYE_R),
        "nose": lambda p: (p - [0, 0, -6]) * [0.15, 0.1, 0.2] * _region(NOSE[1:]),
        "mouth_width": lambda p: p * [0.1, 0, 0] * _region(LIPS),
        "lip_thickness": lambda p: np.array([0.0, 2.0, 0.0]) * np.sign(p[:, 1:2] - 75.5) * _region(LIPS_OUTER),
        "brow_height": lambda p: np.array([0.0, -3.5, 0.0]) * _region(BROW_L + BROW_R),
        "profile": lambda p: np.array([0.0, 0.0, -4.0]) * _region(NOSE + LIPS + [7, 8, 9])
        * np.clip(-p[:, 2:3] / 20, 0, 1),
        "scale": lambda p: (p - [0, 40, 0]) * 0.045 * all_pts,
    }
    return tuple(modes), np.stack([_field(fn) for fn in modes.values()])


IDENTITY_MODES, ID_BASIS = _identity_basis()  # names, [K_id, N_POINTS, 3]
N_IDENTITY = len(IDENTITY_MODES)


def identity_shape(coeffs: np.ndarray) -> np.ndarray:
    """Neutral shape of an identity: [K_id] coefficients -> [N_POINTS, 3] metres."""
    return MEAN + np.tensordot(coeffs, ID_BASIS, axes=1)
