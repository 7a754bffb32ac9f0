"""Audio files: load any soundfile-readable file as float32 mono at a target rate; save atomically as 16-bit PCM.

Compressed audio inside video containers (``.mp4``, ``.m4a``, ``.mov``, ...) is not readable by libsndfile; for
those :func:`load_audio` decodes the first audio stream through PyAV instead.
"""
from __future__ import annotations

import os
from math import gcd
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from zoo.errors import DataError
from zoo.io.atomic import atomic_path

__all__ = ["load_audio", "save_audio", "resample", "mono_float_audio", "CONTAINER_SUFFIXES"]

# Suffixes decoded through PyAV (libsndfile reads wav/flac/ogg/mp3/aiff/... but not ISO-BMFF/Matroska containers).
CONTAINER_SUFFIXES = {".mp4", ".m4a", ".mov", ".mkv", ".webm", ".aac", ".avi"}


def resample(audio: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    """Polyphase resampling (scipy ``resample_poly``, Kaiser window) of a float32 array ``[N]`` or ``[N, C]``
    along its first axis; returns float32 with ``ceil(N * target / source)`` samples."""
    if source_rate == target_rate:
        return audio.astype(np.float32, copy=False)
    g = gcd(int(source_rate), int(target_rate))
    out = resample_poly(audio, int(target_rate) // g, int(source_rate) // g, axis=0)
    return out.astype(np.float32, copy=False)


def load_audio(path: str | os.PathLike, sample_rate: int = 16000) -> np.ndarray:
    """Read ``path`` as float32 mono ``[N]`` in [-1, 1] at ``sample_rate`` (channels averaged, resampled if the
    file's rate differs). Raises :class:`DataError` naming the file when it is missing or unreadable."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"audio file not found: {path}")
    if path.suffix.lower() in CONTAINER_SUFFIXES:
        from zoo.io.video import read_audio_stream  # PyAV path; imported lazily to keep this module light

        audio, rate = read_audio_stream(path)
        if audio is None:
            raise DataError(f"no audio stream in {path}")
    else:
        try:
            data, rate = sf.read(str(path), dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
            raise DataError(f"cannot read audio file {path}: {exc}") from None
        audio = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if audio.size == 0:
        raise DataError(f"audio file {path} has no samples")
    return np.ascontiguousarray(resample(audio, int(rate), int(sample_rate)))


def mono_float_audio(samples, what: str) -> np.ndarray:
    """``samples`` as float32 ``[N]``; one :class:`DataError` line naming ``what`` unless they are 1-D, floating
    point (int16 PCM values would be read as huge floats) and finite (one NaN poisons a recurrent model's state)."""
    audio = np.asarray(samples)
    if audio.ndim != 1:
        raise DataError(f"{what}: expected mono audio [N], got shape {audio.shape}")
    _require_finite_floats(audio, what)
    return audio.astype(np.float32, copy=False)


def _require_finite_floats(audio: np.ndarray, what: str) -> None:
    if not np.issubdtype(audio.dtype, np.floating):
        raise DataError(f"{what}: expected float samples in [-1, 1], got dtype {audio.dtype}")
    if not np.isfinite(audio).all():
        raise DataError(f"{what}: contains NaN or infinite samples")


def save_audio(path: str | os.PathLike, audio: np.ndarray, sample_rate: int) -> None:
    """Write float ``audio`` ``[N]`` (mono) or ``[N, C]`` in [-1, 1] as 16-bit PCM (format from the suffix, e.g.
    ``.wav``/``.flac``); written to a temporary sibling and renamed, so ``path`` is never half-written.
    Samples outside [-1, 1] are clipped (libsndfile would wrap them otherwise)."""
    audio = np.asarray(audio)
    if audio.ndim not in (1, 2) or audio.shape[0] == 0:
        raise DataError(f"audio for {path}: expected a non-empty [N] or [N, C] array, got shape {audio.shape}")
    _require_finite_floats(audio, f"audio for {path}")
    data = np.clip(audio, -1.0, 1.0).astype(np.float32, copy=False)
    with atomic_path(path) as tmp:
        sf.write(str(tmp), data, int(sample_rate), subtype="PCM_16")
