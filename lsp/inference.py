"""LSP inference, one incremental engine for both offline generation and real-time streaming.

:class:`LSPEngine` consumes log-mel rows as they arrive and emits video frames as soon as everything a frame
depends on is known: APC (a GRU: causal), the manifold projection (per row), the mouth LSTM (its output for frame
t needs the audio of frame ``t + d``, d = 300 ms), the mouth smoothing (``r`` frames either side), the sampled
head pose (audio 250 ms ahead, autoregressive) and its smoothing. Offline generation pushes the whole input at once
and finishes; streaming pushes chunks. Both run exactly these computations in the same order, so a stream gives
the frames of offline generation with the same seed; the latency is :attr:`LSPEngine.latency_frames`.

At the end of the input, the last frame's features are repeated (LSP's padding), and smoothing windows are
clamped at both ends of the sequence.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

import torch

from lsp.manifold import ProjectionBase, manifold_projection
from lsp.networks.headpose import HeadposeSampler, sample
from lsp.speech import seconds_to_frames
from zoo.model import head_poses

if TYPE_CHECKING:
    from lsp.model import LSP


@dataclass
class EngineOutput:
    """Frames produced by one push: ``frames`` float [n, 3, H, W] in [0, 1], ``landmarks2d`` [n, 68, 2] (pixels),
    ``pose`` [n, 6] (rotation rad, translation), ``first_frame``: the index of the first of them in the stream."""

    frames: torch.Tensor
    landmarks2d: torch.Tensor
    pose: torch.Tensor
    first_frame: int

    @staticmethod
    def concat(outputs: list[EngineOutput]) -> EngineOutput:
        first = outputs[0].first_frame if outputs else 0
        return EngineOutput(*(torch.cat([getattr(o, k) for o in outputs]) for k in ("frames", "landmarks2d", "pose")),
                            first_frame=first)


def gaussian_kernel(sigma: float) -> torch.Tensor:
    """Normalised Gaussian weights over offsets ``-r..r`` with ``r = ceil(3 sigma)`` ([1] when sigma <= 0)."""
    if sigma <= 0:
        return torch.ones(1, dtype=torch.float64)
    radius = math.ceil(3 * sigma)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    weights = torch.exp(-0.5 * (offsets / sigma) ** 2)
    return weights / weights.sum()


class _Smoother:
    """Streaming Gaussian smoothing of a per-frame sequence, edges clamped (a value needs ``radius`` successors)."""

    def __init__(self, sigma: float):
        self.kernel = gaussian_kernel(sigma)
        self.radius = (len(self.kernel) - 1) // 2
        self.values: dict[int, torch.Tensor] = {}
        self.count = 0              # raw values received
        self.emitted = 0            # smoothed values returned
        self.finished = False

    def add(self, value: torch.Tensor) -> None:
        self.values[self.count] = value
        self.count += 1

    def ready(self) -> list[torch.Tensor]:
        """Smoothed values that can be computed now, in order."""
        out = []
        limit = self.count if self.finished else self.count - self.radius
        while self.emitted < limit:
            t = self.emitted
            acc = 0
            for j, w in enumerate(self.kernel.tolist()):
                index = min(max(t + j - self.radius, 0), self.count - 1)
                acc = acc + w * self.values[index]
            out.append(acc)
            self.values.pop(t - self.radius - 1, None)   # no later frame reads further back
            self.emitted += 1
        return out


class LSPEngine:
    """Incremental inference of a trained :class:`~lsp.model.LSP` for one stream.

    Args:
        model: the assembled LSP (eval mode).
        fps: video frame rate (2 mel rows per frame).
        seed: seed of the head-motion sampler.
        poses: optional float [T, 6] head poses to use as given instead of sampling (the last one holds past its
            end).
    """

    def __init__(self, model: LSP, fps: float, seed: int = 0, poses: Optional[torch.Tensor] = None):
        if model.training:
            raise RuntimeError("LSP inference needs the model in eval mode (call model.eval() first)")
        cfg = model.cfg
        self.model, self.device = model, model.profile.mean_shape.device
        self.mouth_delay = seconds_to_frames(cfg.mouth.look_ahead_seconds, fps)
        self.pose_ahead = seconds_to_frames(cfg.headpose.look_ahead_seconds, fps)
        self.generator = torch.Generator(device=self.device).manual_seed(int(seed))
        self.poses = None if poses is None else head_poses(poses, "poses").to(self.device)
        self.projection_base = ProjectionBase.of(model.profile.apc_base)
        self.renderer = model.inference_renderer()
        self.apc_state: Optional[list[torch.Tensor]] = None
        self.pending_row: Optional[torch.Tensor] = None     # first mel row of a frame whose second row is missing
        self.pairs: dict[int, torch.Tensor] = {}              # frame -> APC pair [2D] (after manifold projection)
        self.num_pairs = 0
        self.mouth_state = None
        self.mouth_fed = 0                                    # LSTM inputs consumed (pairs + end padding)
        self.mouth = _Smoother(cfg.mouth_smooth_sigma)
        # supplied poses are used as given: no smoothing and no audio look-ahead before they are emitted
        self.pose = _Smoother(cfg.pose_smooth_sigma if poses is None else 0.0)
        self.sampler: Optional[HeadposeSampler] = None
        self.previous_state = torch.zeros(1, model.headpose.state_dim, device=self.device)
        self.pose_count = 0
        self.ready_mouth: list[torch.Tensor] = []             # smoothed, waiting for their pose
        self.ready_pose: list[torch.Tensor] = []
        self.emitted = 0
        self.finished = False

    @property
    def latency_frames(self) -> int:
        """Frames of audio needed after a frame before it is emitted."""
        mouth = self.mouth_delay + self.mouth.radius
        pose = 0 if self.poses is not None else self.pose_ahead + self.pose.radius
        return max(mouth, pose)

    # ------------------------------------------------------------------------------------------ input

    @torch.no_grad()
    def push_mel(self, rows: torch.Tensor) -> EngineOutput:
        """Consume log-mel rows [n, 80] (2 per video frame) and return the frames that are now complete."""
        if self.finished:
            raise RuntimeError("LSPEngine: push after finish")
        rows = rows.to(self.device, torch.float32)
        if len(rows):
            features, self.apc_state = self.model.speech(rows[None], self.apc_state)
            features = self._project(features[0])
            if self.pending_row is not None:
                features = torch.cat([self.pending_row[None], features])
            usable = len(features) - len(features) % 2
            self.pending_row = features[usable] if usable < len(features) else None
            for pair in features[:usable].reshape(-1, 2 * features.shape[-1]):
                self.pairs[self.num_pairs] = pair
                self.num_pairs += 1
        return self._advance()

    @torch.no_grad()
    def finish(self) -> EngineOutput:
        """End of input: pad with the last frame's features and return every remaining frame."""
        if self.finished:
            raise RuntimeError("LSPEngine: finish called twice")
        self.finished = True
        self.mouth.finished = self.pose.finished = True
        return self._advance()

    def _project(self, features: torch.Tensor) -> torch.Tensor:
        cfg = self.model.cfg
        return manifold_projection(features, self.projection_base, cfg.lle_neighbours, cfg.lle_percent)

    def _pair(self, frame: int) -> Optional[torch.Tensor]:
        """The APC pair of ``frame``; past the end of a finished input, the last one; None if not yet known."""
        if frame < self.num_pairs:
            return self.pairs[frame]
        return self.pairs[self.num_pairs - 1] if self.finished and self.num_pairs else None

    # ------------------------------------------------------------------------------------------ stages

    def _advance(self) -> EngineOutput:
        self._run_mouth()
        self._run_pose()
        self.ready_mouth += self.mouth.ready()
        self.ready_pose += self.pose.ready()
        n = min(len(self.ready_mouth), len(self.ready_pose))
        deltas, poses = self.ready_mouth[:n], self.ready_pose[:n]
        self.ready_mouth, self.ready_pose = self.ready_mouth[n:], self.ready_pose[n:]
        first = self.emitted
        self.emitted += n
        self._forget(first + n)
        return self._render(deltas, poses, first)

    def _run_mouth(self) -> None:
        total = self.num_pairs + (self.mouth_delay if self.finished else 0)
        if self.mouth_fed >= total or self.num_pairs == 0:
            return
        inputs = torch.stack([self._pair(k) for k in range(self.mouth_fed, total)])[None]
        outputs, self.mouth_state = self.model.mouth(inputs, self.mouth_state)
        for k, delta in zip(range(self.mouth_fed, total), outputs[0]):
            if k >= self.mouth_delay:            # output k is the mouth of frame k - d
                self.mouth.add(delta.double() * self.model.cfg.mouth_amplitude)
        self.mouth_fed = total

    def _run_pose(self) -> None:
        limit = self.num_pairs if self.finished or self.poses is not None else self.num_pairs - self.pose_ahead
        while self.pose_count < limit:
            t = self.pose_count
            if self.poses is not None:
                pose6 = self.poses[min(t, len(self.poses) - 1)]
            else:
                pose6 = self._sample_pose(t)
            self.pose.add(pose6.double())
            self.pose_count += 1

    def _sample_pose(self, t: int) -> torch.Tensor:
        model, cfg = self.model, self.model.cfg
        if self.sampler is None:
            # LSP's sliding window starts full of the initial state and copies of the first audio frame; its
            # last `pose_ahead` warm-up steps already see the first real frames (Audio2Headpose.generate)
            self.sampler = HeadposeSampler(model.headpose, 1, device=self.device)
            warmup = model.headpose.receptive_field - 1
            for p in range(warmup):
                self.sampler.step(self.previous_state, self._pair(max(0, p + self.pose_ahead - warmup))[None])
        params = self.sampler.step(self.previous_state, self._pair(t + self.pose_ahead)[None])
        self.previous_state = sample(params, cfg.headpose.sigma_scale, self.generator)
        return model.profile.denormalise_state(self.previous_state[0])[:6]

    def _forget(self, next_frame: int) -> None:
        keep_from = next_frame - 1     # the last pair is kept for end padding
        for frame in [f for f in self.pairs if f < min(keep_from, self.mouth_fed, self.pose_count)]:
            del self.pairs[frame]

    def _render(self, deltas: list[torch.Tensor], poses: list[torch.Tensor], first: int) -> EngineOutput:
        model = self.model
        size = model.profile.candidates.shape[-1]
        if not deltas:
            empty = torch.zeros(0, 3, size, size, device=self.device)
            return EngineOutput(empty, torch.zeros(0, 68, 2), torch.zeros(0, 6), first)
        delta = torch.stack(deltas).float()[None]                          # [1, n, 75]
        pose = torch.stack(poses).float()[None]                            # [1, n, 6]
        face = model.profile.face_from_mouth(delta, start_frame=first)     # [1, n, 68, 3]
        landmarks, shoulders = model.profile.landmarks_and_shoulders(face, pose)
        frames = model.render_landmarks(torch.from_numpy(landmarks[0]), torch.from_numpy(shoulders[0]),
                                        self.renderer)
        return EngineOutput(frames, torch.from_numpy(landmarks[0]), pose[0].cpu(), first)

