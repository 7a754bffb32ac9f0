"""What LSP knows about its one target person, computed from that person's training clips.

LSP is person-specific: besides network weights, inference needs the person's mean face, how far the mouth
moves, the statistics of the head motion, the rest position of the shoulders, the camera, blinks to replay and
the renderer's candidate images (the official release ships these as per-subject files: ``mean_pts3d.npy``,
``shoulder_points3D.npy``, ``camera_intrinsic.npy``, ``candidates/*.jpg``, ``APC_feature_base.npy``, ...).
:class:`PersonProfile` holds them all as buffers, so every stage checkpoint is self-contained.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from lsp.geometry import (EYE_INDICES, MOUTH_INDICES, draw_edge_maps, mouth_opening, pose_velocity, project_head,
                          project_shoulders)
from zoo.data.clip_format import ClipDataset
from zoo.errors import DataError

EYE_TRACK_FRAMES = 250          # blink replay: the first 10 s (at 25 fps) of the person's training frames
RENDERER_INPUT_CHANNELS = 13    # the edge map + LSP's 4 candidate images x 3 (see renderer_input)


class PersonProfile(nn.Module):
    """The target person's statistics (buffers; shapes follow the data they were fitted on).

    Buffers:
        mean_shape: [68, 3] mean object-space landmarks.
        mouth_scale: [] std of the 25 mouth points' displacements from the mean (the mouth net's output unit).
        eye_track: [E, 12, 3] object-space eye points of consecutive training frames (blinks to replay).
        state_mean, state_std: [12] statistics of the head state (pose 6 + velocity 6).
        rest_translation: [3] mean head translation; rest_shoulders3d: [18, 3] mean camera-space shoulders.
        intrinsics: [3, 3] camera; candidates: uint8 [4, 3, H, W] candidate frames; apc_base: [M, D] the person's
        training-audio APC features for manifold projection (empty until :meth:`set_apc_base`); fps, sample_rate:
        [] of the data.
    """

    FIELDS = ("mean_shape", "mouth_scale", "eye_track", "state_mean", "state_std", "rest_translation",
              "rest_shoulders3d", "intrinsics", "candidates", "apc_base", "fps", "sample_rate")
    # what every stage fitted on the same training clips holds alike (the mouth and head-pose stages read no frames,
    # and the APC base is set at assembly)
    STATISTICS = tuple(name for name in FIELDS if name not in ("candidates", "apc_base"))

    def __init__(self):
        super().__init__()
        for name in self.FIELDS:
            self.register_buffer(name, torch.zeros(0))
        self.register_buffer("identity", torch.tensor(-1))

    @property
    def fitted(self) -> bool:
        return int(self.identity) >= 0

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Shapes depend on the data (frame size, eye-track length, APC base size): take the checkpoint's.
        for name in (*self.FIELDS, "identity"):
            if prefix + name in state_dict:
                setattr(self, name, torch.empty_like(state_dict[prefix + name], device=getattr(self, name).device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def require(self, what: str) -> None:
        if not self.fitted:
            raise RuntimeError(f"PersonProfile: {what} needs a fitted profile (fit it from the training clips, "
                               f"or load a checkpoint that has one)")

    @torch.no_grad()
    def fit(self, dataset: ClipDataset, clip_ids: Sequence[str], identity: int) -> "PersonProfile":
        """Compute every statistic from the clips ``clip_ids`` (the person's training split) of ``dataset``."""
        if not clip_ids:
            raise DataError(f"dataset '{dataset.name}' has no training clip of identity {identity} "
                            f"(model.identity / data.identities)")
        clips = [dataset.clip(c) for c in clip_ids]
        for clip in clips:
            missing = [t for t in ("landmarks3d", "pose", "shoulders3d") if t not in clip.tracks]
            if missing or "intrinsics" not in clip.meta:
                what = f"track '{missing[0]}'" if missing else "meta 'intrinsics'"
                raise DataError(f"clip '{clip.clip_id}' field {what}: LSP needs landmarks3d, pose, shoulders3d "
                                f"and intrinsics, in {clip.path}")
        offsets = np.cumsum([0] + [c.num_frames for c in clips])

        def read_frame(frame: int) -> np.ndarray:
            clip = int(np.searchsorted(offsets, frame, side="right") - 1)
            return clips[clip].read_frames(int(frame - offsets[clip]), int(frame - offsets[clip]) + 1)[0]

        return self.fit_arrays(
            landmarks3d=np.concatenate([np.asarray(c.track("landmarks3d")) for c in clips]),
            poses=[np.asarray(c.track("pose")) for c in clips],
            shoulders3d=np.concatenate([np.asarray(c.track("shoulders3d")) for c in clips]),
            intrinsics=np.asarray(clips[0].meta["intrinsics"]), fps=dataset.fps, sample_rate=dataset.sample_rate,
            read_frame=read_frame, identity=identity)

    @torch.no_grad()
    def fit_arrays(self, landmarks3d: np.ndarray, poses: Sequence[np.ndarray], shoulders3d: np.ndarray,
                   intrinsics: np.ndarray, fps: float, sample_rate: int, read_frame: Callable[[int], np.ndarray],
                   identity: int) -> PersonProfile:
        """The statistics from arrays: landmarks3d [N, 68, 3] and shoulders3d [N, 18, 3] of all N training frames,
        the poses of each clip ([T_i, 6], sum T_i = N; velocities never span two clips), the [3, 3] camera, and
        ``read_frame(n) -> uint8 [H, W, 3]`` for the candidate images."""
        landmarks = np.asarray(landmarks3d, np.float64)
        poses = [np.asarray(p, np.float64) for p in poses]
        states = np.concatenate([pose_velocity(p) for p in poses])
        pose = np.concatenate(poses)
        mean_shape, mouth_scale = mouth_statistics(landmarks)
        values = {
            "mean_shape": mean_shape, "mouth_scale": mouth_scale,
            "eye_track": landmarks[:EYE_TRACK_FRAMES, EYE_INDICES],
            "state_mean": states.mean(0), "state_std": np.maximum(states.std(0), 1e-8),
            "rest_translation": pose[:, 3:].mean(0), "rest_shoulders3d": np.asarray(shoulders3d, np.float64).mean(0),
            "intrinsics": np.asarray(intrinsics, np.float64), "fps": np.float64(fps),
            "sample_rate": np.float64(sample_rate),
        }
        for name, value in values.items():
            setattr(self, name, torch.as_tensor(value, dtype=torch.float32))
        self.candidates = torch.from_numpy(self._candidates(read_frame, landmarks, pose))
        self.identity = torch.tensor(int(identity))
        return self

    @staticmethod
    def _candidates(read_frame: Callable[[int], np.ndarray], landmarks: np.ndarray, pose: np.ndarray) -> np.ndarray:
        """LSP's candidate images, chosen automatically: the frames with the least and the most open mouth in each
        half of the training frames split at the median yaw (pose-stratified). uint8 [4, 3, H, W]."""
        opening, yaw = mouth_opening(landmarks), pose[:, 1]
        chosen = []
        for stratum in (yaw <= np.median(yaw), yaw > np.median(yaw)):
            index = np.flatnonzero(stratum) if stratum.any() else np.arange(len(yaw))
            chosen += [index[np.argmin(opening[index])], index[np.argmax(opening[index])]]
        return np.stack([read_frame(int(frame)).transpose(2, 0, 1) for frame in chosen])

    def set_apc_base(self, features: torch.Tensor) -> None:
        """Store the person's training APC features [M, D] (the manifold projection's base)."""
        self.apc_base = features.detach().float().to(self.mean_shape.device)

    # ------------------------------------------------------------------------------------ conversions

    def normalise_state(self, state: torch.Tensor) -> torch.Tensor:
        return (state - self.state_mean) / self.state_std

    def denormalise_state(self, state: torch.Tensor) -> torch.Tensor:
        return state * self.state_std + self.state_mean

    def mouth_target(self, landmarks3d: torch.Tensor) -> torch.Tensor:
        """Mouth-net targets [..., 75] of landmarks [..., 68, 3]: displacements from the mean in mouth_scale units."""
        return mouth_deltas(landmarks3d, self.mean_shape[list(MOUTH_INDICES)], self.mouth_scale)

    def face_from_mouth(self, deltas: torch.Tensor, start_frame: int = 0) -> torch.Tensor:
        """Full object-space landmarks [B, T, 68, 3]: the mean face, predicted mouth deltas [B, T, 75] and blinks
        replayed from the training frames starting at ``start_frame``."""
        self.require("face_from_mouth")
        b, t = deltas.shape[:2]
        face = self.mean_shape.expand(b, t, -1, -1).clone()
        mouth = torch.as_tensor(MOUTH_INDICES, device=deltas.device)
        face[:, :, mouth] = self.mean_shape[mouth] + deltas.reshape(b, t, -1, 3) * self.mouth_scale
        frames = (torch.arange(t, device=deltas.device) + start_frame) % len(self.eye_track)
        face[:, :, torch.as_tensor(EYE_INDICES, device=deltas.device)] = self.eye_track[frames]
        return face

    def landmarks_and_shoulders(self, face3d: torch.Tensor, pose: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Image landmarks [B, T, 68, 2] and shoulders [B, T, 18, 2] (pixels, numpy) of object-space faces
        [B, T, 68, 3] under head poses [B, T, 6]."""
        self.require("projection")
        k = self.intrinsics.double().cpu().numpy()
        faces = face3d.detach().double().cpu().numpy()
        poses = pose.detach().double().cpu().numpy()
        rest_shoulders = self.rest_shoulders3d.double().cpu().numpy()
        rest = self.rest_translation.double().cpu().numpy()
        landmarks = np.stack([project_head(f, p, k) for f, p in zip(faces, poses)])
        shoulders = np.stack([project_shoulders(rest_shoulders, p[:, 3:], rest, k) for p in poses])
        return landmarks, shoulders

    def renderer_input(self, landmarks2d: torch.Tensor | np.ndarray, shoulders2d: torch.Tensor | np.ndarray
                       ) -> torch.Tensor:
        """LSP's 13-channel renderer input float [N, 13, H, W] for N = prod(leading dims) frames of image landmarks
        [..., 68, 2] and shoulders [..., 18, 2]: the edge map and the 4 candidate images, all in [-1, 1]."""
        self.require("renderer_input")
        edges = draw_edge_maps(landmarks2d, shoulders2d, self.candidates.shape[-1]).flatten(0, -4)
        candidates = self.candidates.float().div(127.5).sub(1).flatten(0, 1)               # [12, H, W]
        return torch.cat([edges.to(candidates.device), candidates.expand(len(edges), -1, -1, -1)], dim=1)

    def sketch(self, face3d: torch.Tensor, pose: torch.Tensor) -> torch.Tensor:
        """The renderer's edge maps float [B, T, 1, H, W] in [-1, 1] for faces [B, T, 68, 3] under poses [B, T, 6]
        (H = W = the candidates' size)."""
        landmarks, shoulders = self.landmarks_and_shoulders(face3d, pose)
        return draw_edge_maps(landmarks, shoulders, self.candidates.shape[-1]).to(face3d.device)


def mouth_statistics(landmarks3d: np.ndarray) -> tuple[np.ndarray, np.float64]:
    """A speaker's mean face [68, 3] and mouth-motion unit (the std of the 25 mouth points' displacements from it)
    from all its training landmarks [N, 68, 3]."""
    landmarks = np.asarray(landmarks3d, np.float64)
    mean_shape = landmarks.mean(0)
    scale = (landmarks[:, MOUTH_INDICES] - mean_shape[MOUTH_INDICES]).std()
    return mean_shape, np.float64(max(scale, 1e-8))


def mouth_deltas(landmarks3d: torch.Tensor, mouth_mean: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """The 25 mouth points of landmarks [..., 68, 3] as displacements from ``mouth_mean`` [..., 25, 3] in units of
    ``scale`` [...] (a speaker's :func:`mouth_statistics`), flattened to [..., 75]: the mouth net's targets."""
    index = torch.as_tensor(MOUTH_INDICES, device=landmarks3d.device)
    return ((landmarks3d[..., index, :] - mouth_mean) / scale[..., None, None]).flatten(-2)


def person_clip_ids(dataset: ClipDataset, split: str, identity: int) -> list[str]:
    """Clip ids of ``split`` whose meta identity is ``identity``."""
    return [c for c in dataset.clip_ids(split) if dataset.clip(c).meta.get("identity") == identity]


def speaker_mouth_units(dataset: ClipDataset, split: str) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """Every identity of ``split``: its mean mouth points float [25, 3] and mouth-motion unit float [] (what
    :func:`mouth_statistics` gives from all its clips' ``landmarks3d``, and its profile would hold)."""
    units = {}
    for identity in sorted({int(dataset.clip(c).meta["identity"]) for c in dataset.clip_ids(split)}):
        landmarks = np.concatenate([np.asarray(dataset.clip(c).track("landmarks3d"))
                                    for c in person_clip_ids(dataset, split, identity)])
        mean, scale = mouth_statistics(landmarks)
        units[identity] = (torch.as_tensor(mean[MOUTH_INDICES], dtype=torch.float32),
                           torch.as_tensor(scale, dtype=torch.float32))
    return units
