"""LSP's geometric intermediate on the zoo's iBUG-68 landmarks: mouth points, 3D -> 2D, shoulders, edge maps.

LSP tracks 73 points; the zoo's clip format carries iBUG-68 (``landmarks3d`` in head object space, ``pose`` as
``R = Rz Ry Rx`` + translation, ``intrinsics`` in the clip meta; see :mod:`zoo.synth.camera` for the convention
every prepared dataset follows). The mapping:

* LSP's 25 "mouth-related" points are 7 chin + 18 lip points of its 73-point layout. iBUG-68 has 20 lip points
  (48-67), so the zoo keeps the 5 chin points under the mouth (6-10) + the 20 lip points: still 25 points = the
  75 outputs of LSP's mouth head. Unlike LSP, the predicted chin points are kept in the final landmarks (LSP
  discards its 7 and uses the mean shape there); on iBUG-68 the lower jaw moves with the mouth.
* The edge map draws the iBUG-68 parts (jaw, brows, nose, eyes, lips) and the shoulder contour as polylines,
  thickness scaled with the frame size (LSP: 2 px at 512, i.e. 1 px at 128 and 256).
"""
from __future__ import annotations

import cv2
import numpy as np
import torch

from zoo.synth.camera import pose_points, project

MOUTH_INDICES = np.array([6, 7, 8, 9, 10, *range(48, 68)])        # 25 points -> 75 outputs
EYE_INDICES = np.arange(36, 48)                                    # both eyes (blinks come from training frames)
INNER_LIP_MIDDLE = (62, 66)                                        # upper / lower inner lip: mouth opening
SHOULDER_FOLLOW = 0.5                                              # LSP's shoulder_AMP: billboard follows 50%

# (indices, closed) polylines of the edge map. Shoulders: 2 x 9 points, each side its own open polyline.
FACE_PARTS: tuple[tuple[tuple[int, ...], bool], ...] = (
    (tuple(range(0, 17)), False), (tuple(range(17, 22)), False), (tuple(range(22, 27)), False),
    (tuple(range(27, 31)), False), (tuple(range(31, 36)), False), (tuple(range(36, 42)), True),
    (tuple(range(42, 48)), True), (tuple(range(48, 60)), True), (tuple(range(60, 68)), True))
SHOULDER_PARTS = ((tuple(range(0, 9)), False), (tuple(range(9, 18)), False))


def mouth_opening(landmarks3d: np.ndarray) -> np.ndarray:
    """Inner-lip gap [...] of landmarks [..., 68, 3] (object-space units): lower minus upper middle point."""
    upper, lower = INNER_LIP_MIDDLE
    return landmarks3d[..., lower, 1] - landmarks3d[..., upper, 1]


def project_head(landmarks3d: np.ndarray, pose: np.ndarray, intrinsics: np.ndarray) -> np.ndarray:
    """Image landmarks [T, N, 2] (pixels) of object-space points [T, N, 3] under poses [T, 6]."""
    return project(pose_points(landmarks3d, pose), intrinsics).astype(np.float32)


def project_shoulders(rest_shoulders3d: np.ndarray, translation: np.ndarray, rest_translation: np.ndarray,
                      intrinsics: np.ndarray) -> np.ndarray:
    """Shoulder points [T, 18, 2] (pixels): the person's mean camera-space shoulders [18, 3] on a billboard that
    follows :data:`SHOULDER_FOLLOW` of the head translation [T, 3] away from its mean ``rest_translation`` [3]."""
    moved = rest_shoulders3d[None] + SHOULDER_FOLLOW * (translation - rest_translation)[:, None, :]
    return project(moved, intrinsics).astype(np.float32)


def line_thickness(size: int) -> int:
    """LSP draws 2 px lines at 512 px; keep that fraction of the frame, at least 1 px."""
    return max(1, int(round(2 * size / 512)))


def draw_edge_maps(landmarks2d: np.ndarray | torch.Tensor, shoulders2d: np.ndarray | torch.Tensor,
                   size: int) -> torch.Tensor:
    """LSP's conditional feature map: face and shoulder polylines, white on black.

    Args:
        landmarks2d: [..., 68, 2] pixels; shoulders2d: [..., 18, 2] pixels (same leading dims).
        size: square frame size in pixels.

    Returns:
        float32 [..., 1, size, size] in [-1, 1] (background -1, lines 1).
    """
    faces = np.asarray(landmarks2d.detach().cpu() if torch.is_tensor(landmarks2d) else landmarks2d, np.float32)
    bodies = np.asarray(shoulders2d.detach().cpu() if torch.is_tensor(shoulders2d) else shoulders2d, np.float32)
    lead = faces.shape[:-2]
    faces, bodies = faces.reshape(-1, *faces.shape[-2:]), bodies.reshape(-1, *bodies.shape[-2:])
    out = np.zeros((len(faces), size, size), np.uint8)
    thickness, shift = line_thickness(size), 4          # 4 fractional bits: sub-pixel accurate lines
    for canvas, face, body in zip(out, faces, bodies):
        for points, parts in ((face, FACE_PARTS), (body, SHOULDER_PARTS)):
            fixed = np.round(points * (1 << shift)).astype(np.int32)
            lines = [fixed[list(idx)] for idx, closed in parts if not closed]
            loops = [fixed[list(idx)] for idx, closed in parts if closed]
            cv2.polylines(canvas, lines, False, 255, thickness, cv2.LINE_AA, shift)
            cv2.polylines(canvas, loops, True, 255, thickness, cv2.LINE_AA, shift)
    maps = torch.from_numpy(out).float().div_(127.5).sub_(1.0)
    return maps.reshape(*lead, 1, size, size)


def pose_velocity(pose: np.ndarray | torch.Tensor):
    """LSP's 12-d head state from poses [..., T, 6]: pose and its frame-to-frame difference (0 at t = 0)."""
    if torch.is_tensor(pose):
        velocity = torch.cat([torch.zeros_like(pose[..., :1, :]), pose[..., 1:, :] - pose[..., :-1, :]], dim=-2)
        return torch.cat([pose, velocity], dim=-1)
    velocity = np.concatenate([np.zeros_like(pose[..., :1, :]), np.diff(pose, axis=-2)], axis=-2)
    return np.concatenate([pose, velocity], axis=-1)
