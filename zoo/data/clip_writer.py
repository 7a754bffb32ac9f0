"""Writing clips and datasets in the clip format (:mod:`zoo.data.clip_format`, which describes the layout).

:func:`write_clip` checks one clip's arrays and writes its directory atomically; :func:`write_dataset` validates
every listed clip as :func:`~zoo.data.clip_format.open_dataset` will, then writes ``dataset.json`` last.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import soundfile as sf

from zoo.data.clip_format import (_CLIP_ID, _RESERVED, _TRACK_NAME, FRAME_CODEC, SCHEMA_VERSION, TRACK_SPECS,
                                  _common_tracks, _fail, _shape_str, _validate_clips, num_audio_samples)
from zoo.errors import DataError
from zoo.io.atomic import atomic_dir, atomic_path

__all__ = ["write_clip", "write_dataset", "PNG_COMPRESSION"]

# zlib level 3 + the "up" row filter, measured on 128x128 renders with cv2: ~0.16 ms decode / ~0.8 ms encode per
# frame, ~8.5 kB. Level 1 decodes ~25% slower (more bytes to inflate), level 6+ encodes 3-30x slower; "up" is the
# cheapest filter to undo after "none" and compresses within ~3% of libpng's adaptive choice here.
PNG_COMPRESSION = 3
_PNG_PARAMS = [cv2.IMWRITE_PNG_COMPRESSION, PNG_COMPRESSION]
if hasattr(cv2, "IMWRITE_PNG_FILTER"):  # OpenCV >= 4.11; older versions keep libpng's adaptive filtering
    _PNG_PARAMS += [cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_UP]


def _prepare_track(clip_id: str, name: str, value: Any, num_frames: int) -> np.ndarray:
    """Check one per-frame track against its spec and return it in its on-disk dtype."""
    if not _TRACK_NAME.fullmatch(name) or name in _RESERVED:
        raise _fail(clip_id, name, "invalid track name (lowercase letters, digits and '_'; not frames/audio/clip)")
    array = np.asarray(value)
    if array.dtype.kind not in "iuf":
        raise _fail(clip_id, name, f"expected a numeric array, got dtype {array.dtype}")
    trailing, dtype = TRACK_SPECS.get(name, (tuple(array.shape[1:]), None))
    if array.ndim == 0 or array.shape != (num_frames, *trailing):
        raise _fail(clip_id, name, f"expected shape {_shape_str(trailing)} with T={num_frames}, got {array.shape}")
    if dtype is None:  # an extra track keeps its own dtype (but never float64: tracks are float32 everywhere)
        dtype = "float32" if array.dtype.kind == "f" else array.dtype.str
    if np.dtype(dtype).kind == "f":
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise _fail(clip_id, name, "contains NaN or infinite values")
    elif array.dtype.kind == "f" or (array.size and (array.min() < np.iinfo(dtype).min
                                                      or array.max() > np.iinfo(dtype).max)):
        raise _fail(clip_id, name, f"expected integers that fit {np.dtype(dtype).name}, got {array.dtype} values")
    return np.ascontiguousarray(array, dtype=dtype)


def _encode_frames(clip_id: str, frames: np.ndarray) -> tuple[bytes, np.ndarray]:
    """PNG-encode uint8 ``[T, H, W, 3]`` RGB frames: (concatenated bytes, int64 offsets ``[T+1]``)."""
    chunks, offsets = [], np.zeros(len(frames) + 1, dtype=np.int64)
    for t, frame in enumerate(frames):
        ok, buffer = cv2.imencode(".png", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), _PNG_PARAMS)
        if not ok:
            raise _fail(clip_id, "frames", f"PNG encoding of frame {t} failed")
        chunks.append(buffer.tobytes())
        offsets[t + 1] = offsets[t] + len(chunks[-1])
    return b"".join(chunks), offsets


def write_clip(root: str | os.PathLike, clip_id: str, *, frames: np.ndarray, audio: np.ndarray, sample_rate: int,
               fps: float, tracks: dict[str, np.ndarray], meta: dict) -> None:
    """Write one clip to ``<root>/clips/<clip_id>/`` (replacing an existing one atomically).

    Args:
        frames: uint8 ``[T, H, W, 3]`` RGB.
        audio: float ``[N]`` mono in [-1, 1] with ``N == round(T * sample_rate / fps)``.
        sample_rate, fps: the clip's audio rate (Hz) and frame rate.
        tracks: per-frame arrays with first dim T; known names must match :data:`TRACK_SPECS`.
        meta: JSON-serialisable clip metadata (identity, style, intensity, identity_coeffs, intrinsics, ...).
    """
    if not isinstance(clip_id, str) or not _CLIP_ID.fullmatch(clip_id):
        raise DataError(f"invalid clip id {clip_id!r}: use letters, digits, '_', '-', '.' (at most 128 characters)")
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
        raise _fail(clip_id, "frames", f"expected uint8 [T, H, W, 3] with T >= 1, got {frames.dtype} "
                                       f"{tuple(frames.shape)}")
    if not fps or fps <= 0 or int(sample_rate) <= 0:
        raise _fail(clip_id, "fps", f"fps and sample_rate must be positive, got fps={fps} sample_rate={sample_rate}")
    num_frames, height, width = frames.shape[:3]
    audio = np.asarray(audio)
    expected = num_audio_samples(num_frames, sample_rate, fps)
    if audio.ndim != 1 or audio.dtype.kind != "f":
        raise _fail(clip_id, "audio", f"expected a float [N] array, got {audio.dtype} {tuple(audio.shape)}")
    if len(audio) != expected:
        raise _fail(clip_id, "audio", f"expected N=round(T*sr/fps)={expected} samples for T={num_frames} at "
                                      f"{fps} fps and {sample_rate} Hz, got {len(audio)}")
    if not np.isfinite(audio).all():
        raise _fail(clip_id, "audio", "contains NaN or infinite samples")
    if np.abs(audio).max(initial=0.0) > 1.0 + 1e-3:  # tiny overshoot from float math is clipped, not an error
        raise _fail(clip_id, "audio", f"samples must lie in [-1, 1], got peak {np.abs(audio).max():.4f}")
    prepared = {name: _prepare_track(clip_id, name, value, num_frames) for name, value in tracks.items()}
    try:
        meta_json = json.loads(json.dumps(meta, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise _fail(clip_id, "meta", f"not JSON-serialisable: {exc}") from None

    header = {"schema_version": SCHEMA_VERSION, "clip_id": clip_id, "num_frames": int(num_frames),
              "num_samples": int(expected), "fps": float(fps), "sample_rate": int(sample_rate),
              "frame_height": int(height), "frame_width": int(width), "frame_codec": FRAME_CODEC,
              "tracks": {name: {"shape": list(a.shape[1:]), "dtype": a.dtype.name} for name, a in prepared.items()},
              "meta": meta_json}
    encoded, offsets = _encode_frames(clip_id, frames)
    with atomic_dir(Path(root) / "clips" / clip_id) as tmp:
        (tmp / "frames.bin").write_bytes(encoded)
        np.save(tmp / "frames_index.npy", offsets)
        sf.write(str(tmp / "audio.wav"), np.clip(audio, -1.0, 1.0).astype(np.float32), int(sample_rate),
                 subtype="PCM_16")
        for name, array in prepared.items():
            np.save(tmp / f"{name}.npy", array)
        (tmp / "clip.json").write_text(json.dumps(header, indent=1))


def write_dataset(root: str | os.PathLike, *, name: str, version: str, fps: float, sample_rate: int,
                  frame_size: int, splits: dict[str, list[str]], info: dict) -> None:
    """Validate every clip listed in ``splits`` and then write ``<root>/dataset.json`` (atomically, last).

    ``fields`` is derived: ``frames``, ``audio`` and the tracks; every clip must have the same set of tracks.
    """
    root = Path(root)
    if not splits or not all(isinstance(ids, (list, tuple)) and ids for ids in splits.values()):
        raise DataError(f"dataset {root}: splits must map each split name to a non-empty list of clip ids")
    header = {"schema_version": SCHEMA_VERSION, "name": str(name), "version": str(version), "fps": float(fps),
              "sample_rate": int(sample_rate), "frame_size": int(frame_size),
              "splits": {str(s): [str(c) for c in ids] for s, ids in splits.items()}}
    try:
        header["info"] = json.loads(json.dumps(info, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise DataError(f"dataset {root}: info is not JSON-serialisable: {exc}") from None
    clips = _validate_clips(root, header)
    header["fields"] = ["frames", "audio", *_common_tracks(clips)]
    header["num_clips"] = len(clips)
    with atomic_path(root / "dataset.json") as tmp:
        tmp.write_text(json.dumps(header, indent=1))
