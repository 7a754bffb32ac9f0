"""Small random-but-valid datasets in the clip format, for tests and loader benchmarks (not for training).

Frames are smooth moving gradients with a few blobs (so PNG sizes and decode times resemble rendered faces rather
than incompressible noise); audio is amplitude-modulated tones; tracks are random with the right shapes.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence

import cv2
import numpy as np

from zoo.data.clip_format import TRACK_SPECS, num_audio_samples
from zoo.data.clip_writer import write_clip, write_dataset

__all__ = ["fake_clip", "write_fake_dataset"]


def fake_clip(num_frames: int, size: int, fps: float, sample_rate: int, seed: int,
              tracks: Sequence[str] = tuple(TRACK_SPECS)) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """(frames uint8 [T, size, size, 3], audio float32 [round(T * sr / fps)], {track: [T, ...]})."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    base = rng.uniform(40, 200, 3).astype(np.float32)
    frames = np.empty((num_frames, size, size, 3), dtype=np.uint8)
    for t in range(num_frames):
        phase = 2 * np.pi * t / max(num_frames, 1)
        image = base + 40 * np.sin(6 * xx + phase)[..., None] + 30 * yy[..., None]
        image = np.clip(image, 0, 255).astype(np.uint8)
        center = (int(size * (0.5 + 0.15 * np.sin(phase))), int(size * 0.5))
        cv2.circle(image, center, size // 4, (200, 160, 130), -1, lineType=cv2.LINE_AA)
        mouth = (size // 10, 1 + int(size / 20 * (1 + np.sin(3 * phase))))
        cv2.ellipse(image, (center[0], center[1] + size // 10), mouth, 0, 0, 360, (90, 30, 40), -1,
                    lineType=cv2.LINE_AA)
        frames[t] = image
    n = num_audio_samples(num_frames, sample_rate, fps)
    time = np.arange(n) / sample_rate
    audio = 0.4 * np.sin(2 * np.pi * rng.uniform(120, 400) * time) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * time))
    audio = (audio + 0.02 * rng.standard_normal(n)).astype(np.float32)
    arrays = {}
    for name in tracks:
        trailing, dtype = TRACK_SPECS[name]
        if name == "phoneme":
            arrays[name] = rng.integers(0, 40, num_frames).astype(np.int16)
        else:
            arrays[name] = rng.uniform(0, size, (num_frames, *trailing)).astype(dtype)
    return frames, audio, arrays


def write_fake_dataset(root: str | os.PathLike, *, splits: Optional[dict[str, int]] = None, seconds: float = 2.0,
                       size: int = 64, fps: float = 25.0, sample_rate: int = 16000,
                       tracks: Sequence[str] = tuple(TRACK_SPECS), num_identities: int = 2,
                       lengths: Optional[Sequence[float]] = None, seed: int = 0) -> Path:
    """Write a dataset of ``splits`` ({split: number of clips}, default train 4 / val 2 / test 2) clips of
    ``seconds`` each (or ``lengths[i]`` seconds for the i-th clip) at ``root``; identities cycle through
    ``range(num_identities)``. Returns ``root``."""
    root = Path(root)
    splits = splits or {"train": 4, "val": 2, "test": 2}
    listing, index = {}, 0
    for split, count in splits.items():
        listing[split] = []
        for _ in range(count):
            identity = index % num_identities
            clip_id = f"id{identity:03d}_{split}_c{index:03d}"
            duration = lengths[index] if lengths is not None else seconds
            frames, audio, arrays = fake_clip(int(round(duration * fps)), size, fps, sample_rate, seed + index, tracks)
            meta = {"identity": identity, "style": index % 3, "intensity": index % 2,
                    "identity_coeffs": [float(identity)] * 4,
                    "intrinsics": [[float(size), 0.0, size / 2], [0.0, float(size), size / 2], [0.0, 0.0, 1.0]]}
            write_clip(root, clip_id, frames=frames, audio=audio, sample_rate=sample_rate, fps=fps, tracks=arrays,
                       meta=meta)
            listing[split].append(clip_id)
            index += 1
    write_dataset(root, name="fake", version=f"fake-{seed}", fps=fps, sample_rate=sample_rate, frame_size=size,
                  splits=listing, info={"generator": "zoo.data.fake", "seed": seed})
    return root
