"""The torch Dataset behind every loader: items are (clip, start frame) windows of a prepared dataset.

A sample is a dict (see :class:`WindowDataset` for keys and shapes). All randomness is derived from
``(seed, sample index)``, never from a global or per-worker RNG, so a sample is the same whichever worker (or
process, under DDP) produces it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from zoo.data.clip_format import TRACK_SPECS, ClipDataset
from zoo.data.features import FeatureCache, aligned_span, rows_per_frame
from zoo.errors import DataError

__all__ = ["FIELDS", "META_INT_KEYS", "Window", "make_windows", "eval_ref_indices", "train_ref_indices",
           "WindowDataset"]

FIELDS = ("frames", "audio", "mel", "mfcc", *TRACK_SPECS)
META_INT_KEYS = ("identity", "style", "intensity")


@dataclass(frozen=True)
class Window:
    """One dataset item: frames ``[start, start + length)`` of ``clip_id``."""

    clip_id: str
    start: int
    length: int


def make_windows(clips: Sequence[tuple[str, int]], window: Optional[int], stride: Optional[int]) -> list[Window]:
    """Windows over ``clips`` ((clip_id, num_frames) pairs, in order).

    ``window=None`` gives one whole-clip item per clip. Otherwise starts are ``0, stride, 2 stride, ...`` while the
    window fits; clips shorter than ``window`` give no item, and frames after the last full window are unused.
    """
    items = []
    for clip_id, num_frames in clips:
        if window is None:
            items.append(Window(clip_id, 0, num_frames))
            continue
        for start in range(0, num_frames - window + 1, stride):
            items.append(Window(clip_id, start, window))
    return items


def eval_ref_indices(num_frames: int, k: int) -> np.ndarray:
    """K evenly spaced frame indices: the centres of K equal parts of the clip (K=1: the middle frame)."""
    return np.floor((np.arange(k) + 0.5) * num_frames / k).astype(np.int64)


def train_ref_indices(num_frames: int, k: int, seed: int, index: int) -> np.ndarray:
    """K frame indices drawn uniformly from the whole clip (distinct when the clip has >= K frames), from an RNG
    seeded by ``(seed, index)``: random across windows, reproducible across runs and workers."""
    rng = np.random.default_rng([seed, index])
    return rng.choice(num_frames, size=k, replace=num_frames < k).astype(np.int64)


class WindowDataset(Dataset):
    """Samples of one split. ``sample = dataset[i]`` has, for a window of T frames (present when requested):

    * ``frames`` uint8 ``[T, 3, H, W]``; ``audio`` float32 ``[round(T * sr / fps)]``; ``mel`` float32 ``[2T, 80]``;
      ``mfcc`` float32 ``[round(T * 100 / fps), 13]`` (``[4T, 13]`` at 25 fps);
    * tracks float32 ``[T, ...]`` (``phoneme`` int64 ``[T]``);
    * ``ref_frames`` uint8 ``[K, 3, H, W]``, ``ref_index`` int64 ``[K]`` and, with landmarks2d,
      ``ref_landmarks2d`` float32 ``[K, 68, 2]`` (only when ``num_refs > 0``);
    * ``clip_id`` str, ``start`` int, ``sample_index`` int (= i), and from the clip meta (when every clip has it)
      ``identity``/``style``/``intensity`` int and ``intrinsics`` float32 ``[3, 3]``.
    """

    def __init__(self, dataset: ClipDataset, windows: list[Window], *, fields: Sequence[str], num_refs: int,
                 train: bool, seed: int, features: dict[str, FeatureCache]):
        self.dataset, self.windows = dataset, windows
        self.fields, self.num_refs, self.train, self.seed = list(fields), int(num_refs), train, int(seed)
        self.features = features
        clips = [dataset.clip(c) for c in dict.fromkeys(w.clip_id for w in windows)]
        self.meta_keys = [key for key in (*META_INT_KEYS, "intrinsics") if all(key in c.meta for c in clips)]
        for clip in clips:  # fail at setup, not in a worker, when a meta value is unusable
            for key in self.meta_keys:
                value = np.asarray(clip.meta[key])
                shape = (3, 3) if key == "intrinsics" else ()
                if value.shape != shape or value.dtype.kind not in ("iu" if shape == () else "iuf"):
                    raise DataError(f"clip '{clip.clip_id}' field 'meta.{key}': expected "
                                    f"{'a 3x3 matrix' if shape else 'an integer'}, got {clip.meta[key]!r} in "
                                    f"{clip.path / 'clip.json'}")

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, index: int) -> dict:
        window = self.windows[index]
        clip = self.dataset.clip(window.clip_id)
        start, length = window.start, window.length
        sample: dict = {"clip_id": clip.clip_id, "start": start, "sample_index": int(index)}
        for name in self.fields:
            if name == "frames":
                frames = clip.read_frames(start, start + length)                   # [T, H, W, 3]
                sample["frames"] = torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous()
            elif name == "audio":
                first, stop = aligned_span(start, length, rows_per_frame("audio", clip.sample_rate, clip.fps),
                                           clip.num_samples)
                sample["audio"] = torch.from_numpy(clip.read_audio(first, stop))
            elif name in self.features:
                sample[name] = torch.from_numpy(self.features[name].window(clip.clip_id, start, length))
            else:
                rows = clip.read_track(name, start, start + length)
                sample[name] = torch.from_numpy(rows.astype(np.int64 if rows.dtype.kind in "iu" else np.float32))
        if self.num_refs > 0:
            if self.train:
                refs = train_ref_indices(clip.num_frames, self.num_refs, self.seed, index)
            else:
                refs = eval_ref_indices(clip.num_frames, self.num_refs)
            images = np.concatenate([clip.read_frames(int(i), int(i) + 1) for i in refs])   # [K, H, W, 3]
            sample["ref_frames"] = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
            sample["ref_index"] = torch.from_numpy(refs)
            if "landmarks2d" in self.fields:
                track = clip.track("landmarks2d")
                sample["ref_landmarks2d"] = torch.from_numpy(np.asarray(track[refs], dtype=np.float32))
        for key in self.meta_keys:
            if key == "intrinsics":
                sample[key] = torch.tensor(clip.meta[key], dtype=torch.float32)
            else:
                sample[key] = int(clip.meta[key])
        return sample
