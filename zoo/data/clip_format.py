"""The on-disk format of prepared clips (schema version 1): random access to frame windows and aligned audio.

Every dataset, synthetic or prepared from real video, is a directory laid out as::

    <root>/dataset.json                    the dataset header, written LAST (atomically): a directory without it is
                                           an unfinished build, never a dataset
    <root>/clips/<clip_id>/clip.json       the clip header
    <root>/clips/<clip_id>/frames.bin      the frames, each a PNG (lossless, RGB), concatenated
    <root>/clips/<clip_id>/frames_index.npy   int64 [T+1] byte offsets of frame t in frames.bin: [off[t], off[t+1])
    <root>/clips/<clip_id>/audio.wav       16-bit PCM mono at the dataset sample rate, N = round(T * sr / fps)
    <root>/clips/<clip_id>/<track>.npy     per-frame tracks, first dim T, memory-mappable
    <root>/cache/<recipe-key>/<clip_id>.npy   derived audio features (zoo.data.features); safe to delete

``dataset.json``: ``schema_version`` (int, = :data:`SCHEMA_VERSION`), ``name``, ``version`` (corpus hash),
``fps`` (float), ``sample_rate`` (int), ``frame_size`` (int; frames are square ``frame_size`` x ``frame_size``),
``fields`` (``frames``, ``audio`` and every track all clips have), ``splits`` ({split: [clip_id, ...]}, each clip in one split), ``info``
(free-form JSON), ``num_clips``.

``clip.json``: ``schema_version``, ``clip_id``, ``num_frames`` T, ``num_samples`` N, ``fps``, ``sample_rate``,
``frame_height``, ``frame_width``, ``frame_codec`` (``"png"``), ``tracks`` ({name: {"shape": [...], "dtype": ...}}
with the shape after the first dim), ``meta`` (free-form JSON: identity, style, intensity, identity_coeffs,
intrinsics, ...).

Known tracks (:data:`TRACK_SPECS`): landmarks2d [T,68,2] float32 (pixels), landmarks3d [T,68,3] float32, pose [T,6]
float32 (rotation xyz in radians, translation xyz), expression [T,64] float32, phoneme [T] int16, shoulders2d [T,18,2]
float32, shoulders3d [T,18,3] float32. Other track names are stored as given (numeric, first dim T).

Why this layout: a training sample is a window of a few dozen frames out of clips of hundreds, so frames are
individually encoded and located through the offset index (one contiguous read per window, no video decoding).
PNG (see :data:`zoo.data.clip_writer.PNG_COMPRESSION`) decodes a 128x128 render in ~0.16-0.2 ms with cv2 and is lossless; JPEG would be
lossy, raw frames are ~6x larger (49 kB vs ~8.5 kB), lossless WebP is as fast to decode but ~12x slower to encode.
WAV supports sample-exact seeks; .npy tracks memory-map.

:mod:`zoo.data.clip_writer` writes every clip directory to a temporary sibling and renames it into place, and
``dataset.json`` only after every listed clip has been validated, so readers never see half-written data. :func:`open_dataset` validates
the header and every clip (shapes against T, NaN/inf in float tracks, frame/audio lengths, schema version) and
raises :class:`~zoo.errors.DataError` with one line naming the clip, the field and the file.
"""
from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import cv2
import numpy as np
import soundfile as sf

from zoo.errors import DataError
from zoo.io.atomic import read_json_object

__all__ = ["SCHEMA_VERSION", "TRACK_SPECS", "open_dataset", "ClipDataset", "Clip", "num_audio_samples"]

SCHEMA_VERSION = 1
FRAME_CODEC = "png"
# name -> (shape after the first dim T, dtype on disk)
TRACK_SPECS: dict[str, tuple[tuple[int, ...], str]] = {
    "landmarks2d": ((68, 2), "float32"),
    "landmarks3d": ((68, 3), "float32"),
    "pose": ((6,), "float32"),
    "expression": ((64,), "float32"),
    "phoneme": ((), "int16"),
    "shoulders2d": ((18, 2), "float32"),
    "shoulders3d": ((18, 3), "float32"),
}
_CLIP_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_TRACK_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
_RESERVED = {"frames", "frames_index", "audio", "clip"}


def num_audio_samples(num_frames: int, sample_rate: int, fps: float) -> int:
    """Audio samples of a clip of ``num_frames`` video frames: ``round(T * sample_rate / fps)``."""
    return int(round(num_frames * sample_rate / fps))


def _shape_str(trailing: tuple[int, ...]) -> str:
    return "(" + ", ".join(["T", *map(str, trailing)]) + ")"


def _fail(clip_id: str, field_name: str, problem: str, path: Optional[Path] = None) -> DataError:
    where = f" in {path}" if path is not None else ""
    return DataError(f"clip '{clip_id}' field '{field_name}': {problem}{where}")


# ----------------------------------------------------------------------------------------------------- reading


@dataclass
class Clip:
    """One prepared clip; reads open their file per call, so a Clip is safe to use after ``fork``.

    Attributes: ``clip_id``, ``meta`` (dict), ``num_frames`` T, ``num_samples`` N, ``fps``, ``sample_rate``,
    ``height``, ``width``, ``tracks`` ({name: (shape after T, dtype)}), ``path`` (the clip directory).
    """

    clip_id: str
    path: Path
    num_frames: int
    num_samples: int
    fps: float
    sample_rate: int
    height: int
    width: int
    tracks: dict[str, tuple[tuple[int, ...], str]]
    meta: dict
    _offsets: Optional[np.ndarray] = field(default=None, repr=False)

    def _check_range(self, start: int, stop: int, size: int, what: str) -> None:
        if not 0 <= start <= stop <= size:
            raise IndexError(f"clip '{self.clip_id}': {what} range [{start}, {stop}) outside [0, {size})")

    def frame_offsets(self) -> np.ndarray:
        """int64 ``[T+1]`` byte offsets into frames.bin (loaded once, ~8 bytes per frame)."""
        if self._offsets is None:
            self._offsets = np.load(self.path / "frames_index.npy")
        return self._offsets

    def read_frames(self, start: int, stop: int) -> np.ndarray:
        """Frames ``[start, stop)`` as uint8 ``[stop - start, H, W, 3]`` RGB (one file read, one PNG decode each)."""
        self._check_range(start, stop, self.num_frames, "frame")
        offsets = self.frame_offsets()
        out = np.empty((stop - start, self.height, self.width, 3), dtype=np.uint8)
        if stop == start:
            return out
        path = self.path / "frames.bin"
        with open(path, "rb") as handle:
            handle.seek(int(offsets[start]))
            blob = handle.read(int(offsets[stop] - offsets[start]))
        if len(blob) != offsets[stop] - offsets[start]:
            raise _fail(self.clip_id, "frames", f"file is truncated (frames {start}-{stop})", path)
        data = np.frombuffer(blob, dtype=np.uint8)
        base = int(offsets[start])
        for i, t in enumerate(range(start, stop)):
            image = cv2.imdecode(data[offsets[t] - base:offsets[t + 1] - base], cv2.IMREAD_COLOR)
            if image is None or image.shape != out.shape[1:]:
                got = "undecodable bytes" if image is None else f"shape {image.shape}"
                raise _fail(self.clip_id, "frames", f"frame {t}: expected a {self.height}x{self.width} RGB PNG, "
                                                    f"got {got}", path)
            cv2.cvtColor(image, cv2.COLOR_BGR2RGB, dst=out[i])
        return out

    def read_audio(self, start_sample: int, stop_sample: int) -> np.ndarray:
        """Samples ``[start_sample, stop_sample)`` as float32 ``[n]`` in [-1, 1] (a seek, not a full read)."""
        self._check_range(start_sample, stop_sample, self.num_samples, "audio sample")
        path = self.path / "audio.wav"
        try:
            audio = sf.read(str(path), start=start_sample, stop=stop_sample, dtype="float32", always_2d=False)[0]
        except (sf.LibsndfileError, RuntimeError) as exc:
            raise _fail(self.clip_id, "audio", f"unreadable ({exc})", path) from None
        if len(audio) != stop_sample - start_sample:
            raise _fail(self.clip_id, "audio", f"file is truncated (samples {start_sample}-{stop_sample})", path)
        return audio

    def track(self, name: str) -> np.ndarray:
        """The whole track ``name`` as a read-only memmap ``[T, ...]`` (not cached: each call maps the file)."""
        if name not in self.tracks:
            raise _fail(self.clip_id, name, f"no such track (clip has: {', '.join(sorted(self.tracks)) or 'none'})")
        return np.load(self.path / f"{name}.npy", mmap_mode="r")

    def read_track(self, name: str, start: int, stop: int) -> np.ndarray:
        """Rows ``[start, stop)`` of track ``name`` copied into memory (the mapping is released at once)."""
        self._check_range(start, stop, self.num_frames, f"'{name}' row")
        return np.array(self.track(name)[start:stop])


class ClipDataset:
    """An opened, validated dataset. Attributes: ``root``, ``name``, ``version``, ``fps``, ``sample_rate``,
    ``frame_size``, ``fields`` (list), ``splits`` ({split: [clip_id]}), ``info`` (dict)."""

    def __init__(self, root: Path, header: dict, clips: dict[str, Clip]):
        self.root = root
        self.name: str = header["name"]
        self.version: str = header["version"]
        self.fps: float = float(header["fps"])
        self.sample_rate: int = int(header["sample_rate"])
        self.frame_size: int = int(header["frame_size"])
        self.fields: list[str] = list(header["fields"])
        self.splits: dict[str, list[str]] = {k: list(v) for k, v in header["splits"].items()}
        self.info: dict = header.get("info", {})
        self._clips = clips

    def __repr__(self) -> str:
        sizes = ", ".join(f"{k}={len(v)}" for k, v in self.splits.items())
        return f"ClipDataset({self.name!r}, version={self.version!r}, {sizes}, root={str(self.root)!r})"

    def clip_ids(self, split: str) -> list[str]:
        """The clip ids of ``split`` in their stored order."""
        if split not in self.splits:
            raise DataError(f"dataset '{self.name}' has no split '{split}' (splits: {', '.join(self.splits)}) "
                            f"in {self.root / 'dataset.json'}")
        return list(self.splits[split])

    def clip(self, clip_id: str) -> Clip:
        if clip_id not in self._clips:
            raise DataError(f"dataset '{self.name}' has no clip '{clip_id}' in {self.root}")
        return self._clips[clip_id]


def open_dataset(root: str | os.PathLike) -> ClipDataset:
    """Open and validate the dataset at ``root``; raises :class:`DataError` (one line) on any problem."""
    root = Path(root)
    path = root / "dataset.json"
    if not root.is_dir():
        raise DataError(f"dataset directory not found: {root}")
    if not path.is_file():
        raise DataError(f"{root} is not a prepared dataset: no dataset.json (an unfinished build never writes one)")
    header = read_json_object(path)
    if header.get("schema_version") != SCHEMA_VERSION:
        raise DataError(f"{path}: schema_version {header.get('schema_version')!r} is not supported (this zoo reads "
                        f"version {SCHEMA_VERSION}); re-prepare the dataset")
    for key, kind in [("name", str), ("version", str), ("fps", (int, float)), ("sample_rate", int),
                      ("frame_size", int), ("fields", list), ("splits", dict)]:
        if not isinstance(header.get(key), kind) or isinstance(header.get(key), bool):
            raise DataError(f"{path}: missing or invalid '{key}'")
    bad = [f for f in header["fields"] if not isinstance(f, str)]
    if bad:
        raise DataError(f"{path}: 'fields' must list field names, got {bad[0]!r}")
    clips = _validate_clips(root, header)
    for field_name in header["fields"]:
        if field_name in ("frames", "audio"):
            continue
        for clip in clips.values():
            if field_name not in clip.tracks:
                raise _fail(clip.clip_id, field_name, "listed in dataset.json fields but missing",
                            clip.path / f"{field_name}.npy")
    return ClipDataset(root, header, clips)


# -------------------------------------------------------------------------------------------------- validation


def _common_tracks(clips: dict[str, Clip]) -> list[str]:
    """The track names, requiring every clip to have the same set (names the first clip that differs)."""
    first = next(iter(clips.values()))
    names = sorted(first.tracks)
    for clip in clips.values():
        for name in set(names) ^ set(clip.tracks):
            owner = first if name in first.tracks else clip
            other = clip if owner is first else first
            raise _fail(other.clip_id, name, f"missing, but clip '{owner.clip_id}' has it (all clips need the "
                                             f"same tracks)", other.path / f"{name}.npy")
    return names


def _validate_clips(root: Path, header: dict) -> dict[str, Clip]:
    """Validate every clip listed in ``header['splits']`` against the dataset header; returns {clip_id: Clip}."""
    clips: dict[str, Clip] = {}
    split_of: dict[str, str] = {}
    for split, ids in header["splits"].items():
        if not isinstance(ids, list):
            raise DataError(f"{root / 'dataset.json'}: split '{split}' must be a list of clip ids")
        for clip_id in ids:
            if not isinstance(clip_id, str) or not _CLIP_ID.fullmatch(clip_id):
                raise DataError(f"{root / 'dataset.json'}: split '{split}' lists an invalid clip id {clip_id!r} "
                                f"(letters, digits, '_', '-', '.')")
            if clip_id in split_of:   # a clip in train and test would score the model on what it trained on
                where = "twice" if split_of[clip_id] == split else f"and in '{split_of[clip_id]}'"
                raise DataError(f"{root / 'dataset.json'}: clip '{clip_id}' is listed in split '{split}' {where}")
            split_of[clip_id] = split
            clips[clip_id] = _validate_clip(root, clip_id, split, header)
    if not clips:
        raise DataError(f"{root / 'dataset.json'}: the splits list no clips")
    return clips


def _validate_clip(root: Path, clip_id: str, split: str, dataset: dict) -> Clip:
    directory = root / "clips" / clip_id
    path = directory / "clip.json"
    if not path.is_file():
        raise _fail(clip_id, "clip.json", f"missing (clip listed in split '{split}')", path)
    try:
        head = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise _fail(clip_id, "clip.json", f"cannot parse ({exc})", path) from None
    if not isinstance(head, dict):
        raise _fail(clip_id, "clip.json", "expected a JSON object", path)
    if head.get("schema_version") != SCHEMA_VERSION:
        raise _fail(clip_id, "schema_version", f"expected {SCHEMA_VERSION}, got {head.get('schema_version')!r}", path)
    for key, kind in [("num_frames", int), ("num_samples", int), ("fps", (int, float)), ("sample_rate", int),
                      ("frame_height", int), ("frame_width", int), ("frame_codec", str), ("tracks", dict),
                      ("meta", dict)]:
        if not isinstance(head.get(key), kind) or isinstance(head.get(key), bool):
            raise _fail(clip_id, key, "missing or of the wrong type", path)
    num_frames = head["num_frames"]
    if num_frames < 1:
        raise _fail(clip_id, "num_frames", f"expected >= 1, got {num_frames}", path)
    for key in ("fps", "sample_rate"):
        if not math.isclose(float(head[key]), float(dataset[key]), rel_tol=1e-9):
            raise _fail(clip_id, key, f"expected the dataset's {dataset[key]}, got {head[key]}", path)
    size = dataset["frame_size"]
    if (head["frame_height"], head["frame_width"]) != (size, size):
        raise _fail(clip_id, "frames", f"expected {size}x{size} frames, got {head['frame_height']}x"
                                       f"{head['frame_width']}", path)
    if head["frame_codec"] != FRAME_CODEC:
        raise _fail(clip_id, "frame_codec", f"expected '{FRAME_CODEC}', got '{head['frame_codec']}'", path)
    expected = num_audio_samples(num_frames, dataset["sample_rate"], dataset["fps"])
    if head["num_samples"] != expected:
        raise _fail(clip_id, "audio", f"expected N=round(T*sr/fps)={expected} samples for T={num_frames}, clip.json "
                                      f"says {head['num_samples']}", path)

    _check_frame_index(clip_id, directory, num_frames)
    _check_audio_file(clip_id, directory / "audio.wav", expected, dataset["sample_rate"], num_frames)
    tracks = {}
    for name, spec in head["tracks"].items():
        if not _TRACK_NAME.fullmatch(name) or name in _RESERVED:   # it names a file in the clip's directory
            raise _fail(clip_id, name, "invalid track name (lowercase letters, digits and '_')", path)
        shape = spec.get("shape") if isinstance(spec, dict) else None
        dtype = spec.get("dtype") if isinstance(spec, dict) else None
        if not isinstance(shape, list) or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0
                                                  for n in shape) or not isinstance(dtype, str):
            raise _fail(clip_id, name, "track entry needs 'shape' (a list of sizes) and 'dtype'", path)
        try:
            np.dtype(dtype)
        except TypeError:
            raise _fail(clip_id, name, f"invalid dtype {dtype!r}", path) from None
        trailing = tuple(shape)
        if name in TRACK_SPECS:
            trailing, dtype = TRACK_SPECS[name]
        _check_track(clip_id, name, directory / f"{name}.npy", num_frames, trailing, dtype)
        tracks[name] = (trailing, dtype)

    clip = Clip(clip_id=clip_id, path=directory, num_frames=num_frames, num_samples=expected,
                fps=float(head["fps"]), sample_rate=int(head["sample_rate"]), height=size, width=size,
                tracks=tracks, meta=head["meta"])
    clip.read_frames(0, 1)  # one PNG decode catches a wrong codec/size cheaply
    return clip


def _check_frame_index(clip_id: str, directory: Path, num_frames: int) -> None:
    index_path, data_path = directory / "frames_index.npy", directory / "frames.bin"
    if not index_path.is_file():
        raise _fail(clip_id, "frames", "missing frame index", index_path)
    if not data_path.is_file():
        raise _fail(clip_id, "frames", "missing frame data", data_path)
    try:
        offsets = np.load(index_path, mmap_mode="r")
    except (OSError, ValueError) as exc:
        raise _fail(clip_id, "frames", f"unreadable frame index ({exc})", index_path) from None
    if offsets.shape != (num_frames + 1,) or offsets.dtype != np.int64:
        raise _fail(clip_id, "frames", f"expected int64 offsets of shape (T+1,) with T={num_frames}, got "
                                       f"{offsets.dtype} {offsets.shape}", index_path)
    if offsets[0] != 0 or not (np.diff(offsets) > 0).all():
        raise _fail(clip_id, "frames", "offsets must start at 0 and increase", index_path)
    if int(offsets[-1]) != data_path.stat().st_size:
        raise _fail(clip_id, "frames", f"index ends at byte {int(offsets[-1])} but the file has "
                                       f"{data_path.stat().st_size} bytes", data_path)


def _check_audio_file(clip_id: str, path: Path, expected: int, sample_rate: int, num_frames: int) -> None:
    if not path.is_file():
        raise _fail(clip_id, "audio", "missing", path)
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise _fail(clip_id, "audio", f"unreadable ({exc})", path) from None
    if info.channels != 1 or info.samplerate != sample_rate:
        raise _fail(clip_id, "audio", f"expected mono at {sample_rate} Hz, got {info.channels} channel(s) at "
                                      f"{info.samplerate} Hz", path)
    if info.frames != expected:
        raise _fail(clip_id, "audio", f"expected {expected} samples (T={num_frames} frames), got {info.frames}", path)


def _check_track(clip_id: str, name: str, path: Path, num_frames: int, trailing: tuple, dtype: str) -> None:
    if not path.is_file():
        raise _fail(clip_id, name, "missing", path)
    try:
        array = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as exc:
        raise _fail(clip_id, name, f"unreadable ({exc})", path) from None
    if array.shape != (num_frames, *trailing):
        raise _fail(clip_id, name, f"expected shape {_shape_str(trailing)} with T={num_frames}, got {array.shape}",
                    path)
    if array.dtype != np.dtype(dtype):
        raise _fail(clip_id, name, f"expected dtype {dtype}, got {array.dtype}", path)
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise _fail(clip_id, name, "contains NaN or infinite values", path)
