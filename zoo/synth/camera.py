"""Pinhole camera, head pose and the upper-body billboard.

Conventions (OpenCV): camera at the origin looking down +z, x right, y down. A pose is 6 numbers
``(rx, ry, rz, tx, ty, tz)``: rotation angles in radians about x (pitch, positive = chin down), y (yaw) and z
(roll), composed as ``R = Rz @ Ry @ Rx``, and the camera-space translation of the head's pivot in metres. A
posed point is ``R @ X + t`` for an object-space point X; its image position is ``(K @ p)[:2] / p[2]`` in pixels,
with the centre of the top-left pixel at (0, 0).

The upper body is a billboard: a flat, unrotated set of points that follows 50% of the head's translation away
from its rest position (shoulders move with the head, but less).
"""
from __future__ import annotations

import numpy as np

FOCAL = 1.7               # focal length in units of the frame size (fx = fy = FOCAL * size)
HEAD_DISTANCE = 0.62      # metres from the camera to the head pivot at rest
HEAD_HEIGHT = 0.019       # rest pivot y (metres, down): puts the eyes a little above the frame centre
BILLBOARD_DEPTH = 0.05    # the torso plane sits this far behind the head pivot
BILLBOARD_FOLLOW = 0.5    # fraction of head translation the body follows

# Shoulder contour at rest relative to the pivot (metres): 9 points per side from the neck base outwards and
# down over the shoulder. Left side (image left) first, then the mirrored right side in the same order.
_SHOULDER_X = np.array([-0.05, -0.075, -0.1, -0.12, -0.14, -0.155, -0.168, -0.178, -0.185])
_SHOULDER_Y = np.array([0.112, 0.118, 0.124, 0.13, 0.138, 0.148, 0.162, 0.18, 0.205])
SHOULDERS_REST = np.concatenate([np.stack([_SHOULDER_X, _SHOULDER_Y, np.zeros(9)], 1),
                                 np.stack([-_SHOULDER_X, _SHOULDER_Y, np.zeros(9)], 1)])  # [18, 3]


def intrinsics(size: int) -> np.ndarray:
    """[3, 3] pinhole intrinsics for a square frame of `size` pixels."""
    f = FOCAL * size
    c = (size - 1) / 2.0  # principal point at the frame centre (pixel-centre coordinates)
    return np.array([[f, 0.0, c], [0.0, f, c], [0.0, 0.0, 1.0]])


def rest_translation() -> np.ndarray:
    return np.array([0.0, HEAD_HEIGHT, HEAD_DISTANCE])


def rotation_matrix(rot: np.ndarray) -> np.ndarray:
    """Rotation matrices R = Rz @ Ry @ Rx for angles [..., 3] (rx, ry, rz radians) -> [..., 3, 3]."""
    rx, ry, rz = rot[..., 0], rot[..., 1], rot[..., 2]
    cx, sx, cy, sy, cz, sz = np.cos(rx), np.sin(rx), np.cos(ry), np.sin(ry), np.cos(rz), np.sin(rz)
    r = np.empty(rot.shape[:-1] + (3, 3))
    r[..., 0, 0] = cz * cy
    r[..., 0, 1] = cz * sy * sx - sz * cx
    r[..., 0, 2] = cz * sy * cx + sz * sx
    r[..., 1, 0] = sz * cy
    r[..., 1, 1] = sz * sy * sx + cz * cx
    r[..., 1, 2] = sz * sy * cx - cz * sx
    r[..., 2, 0] = -sy
    r[..., 2, 1] = cy * sx
    r[..., 2, 2] = cy * cx
    return r


def pose_points(points: np.ndarray, pose: np.ndarray) -> np.ndarray:
    """Camera-space points: object points [T, N, 3] (or [N, 3]) and poses [T, 6] -> [T, N, 3]."""
    r = rotation_matrix(pose[:, :3])
    return np.einsum("tij,tnj->tni", r, np.broadcast_to(points, (len(pose),) + points.shape[-2:])) \
        + pose[:, None, 3:]


def project(points_cam: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Pixel coordinates [..., N, 2] of camera-space points [..., N, 3]."""
    z = points_cam[..., 2:3]
    return points_cam[..., :2] / z * np.array([k[0, 0], k[1, 1]]) + np.array([k[0, 2], k[1, 2]])


def shoulders(pose: np.ndarray, width: float = 1.0) -> np.ndarray:
    """Camera-space shoulder points [T, 18, 3] for head poses [T, 6]: the billboard follows 50% of the head's
    translation away from rest; `width` scales the shoulders horizontally (per identity)."""
    rest = rest_translation()
    anchor = rest + BILLBOARD_FOLLOW * (pose[:, 3:] - rest)
    pts = SHOULDERS_REST * np.array([width, 1.0, 1.0]) + np.array([0.0, 0.0, BILLBOARD_DEPTH])
    return pts[None] + anchor[:, None, :]
