"""Audio features aligned to video frames, computed once per whole clip and cached, so a sample only slices.

Three audio fields exist; the row ranges a window of frames ``[s, s + T)`` gets are given by :func:`aligned_span`:

* ``audio``: the float32 waveform, ``sr / fps`` samples per frame; a window gets ``round(T * sr / fps)`` samples
  starting at ``round(s * sr / fps)`` (moved back by one sample if rounding would run past the clip's end).
* ``mel``: LSP's log-mel recipe adapted to the dataset fps (:func:`log_mel`), exactly 2 rows per video frame,
  ``[2T, 80]``. LSP at 60 fps uses window 266, hop 133, n_fft 512; here the window is ``int(sr / fps)``, the
  nominal hop ``win // 2`` and n_fft the next power of two >= win, with reflect padding of ``(n_fft - hop) // 2``
  on each side so the 2 rows of frame t are centred on the two halves of its audio. The hop is applied at its
  exact fractional value ``sr / fps / 2`` (row j starts at sample ``round(j * sr / fps / 2)`` of the padded
  signal): when that is an integer (25 fps at 16 kHz: hop 320) the rows equal ``torch.stft(center=False)``
  exactly; otherwise (60 fps: 133.33) an integer hop of 133 would drift a frame behind every ~7 s of audio.
* ``mfcc``: ``python_speech_features.mfcc`` with its defaults (13 cepstra, 25 ms window, 10 ms step = 100 rows/s,
  26 filters, pre-emphasis 0.97, lifter 22, log energy as c0) on int16-scale samples as SyncNet computes it
  (:func:`mfcc`); 100 / fps rows per frame (4 at 25 fps). A clip of T frames gets exactly ``round(T * 100 / fps)``
  rows: psf emits ``1 + ceil((N - 400) / 160)`` rows (one short of 4T at 25 fps), so the last row is repeated
  (or extra rows dropped). Row i covers samples ``[160 i, 160 i + 400)``: row ``4 t`` starts with frame t at 25 fps.

:class:`FeatureCache` holds whole-clip features in memory and on disk at ``<root>/cache/<recipe-key>/<id>.npy``
(written atomically; memory only when the dataset directory is read-only). The key includes the recipe, the
rates and the dataset version, so a rebuilt corpus or a changed recipe never reads stale features.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Optional

import librosa
import numpy as np
import python_speech_features as psf
import torch

from zoo.data.clip_format import ClipDataset
from zoo.io.atomic import atomic_path
from zoo.io.audio import resample

__all__ = ["FEATURES", "MelRecipe", "mel_recipe", "mel_basis", "mel_row_starts", "mel_right_padding", "log_mel_rows",
           "log_mel", "mfcc", "rows_per_frame", "aligned_span", "feature_rows", "FeatureCache"]

FEATURES = ("mel", "mfcc")
RECIPE_VERSION = 2          # bump when a recipe changes: it is part of the cache key (2: mfcc at 16 kHz)
MEL_BANDS = 80
MEL_PER_FRAME = 2
MEL_FMIN, MEL_FMAX = 90.0, 7600.0
MEL_FLOOR = 1e-5            # log(clamp(x, 1e-5)); normalised so log(1e-5) -> 0 and log(1) -> 1
MFCC_COEFFS = 13
MFCC_RATE = 100.0           # python_speech_features' default winstep of 10 ms
MFCC_SAMPLE_RATE = 16000    # SyncNet's
_CHUNK_ROWS = 4096          # STFT rows per chunk: bounds memory for long clips (4096 x 1024 x 4 B = 16 MB)


def _next_pow2(n: int) -> int:
    return 1 << max(0, math.ceil(math.log2(n)))


@dataclass(frozen=True)
class MelRecipe:
    """STFT geometry of the log-mel recipe at one (sample_rate, fps); see the module docstring."""

    sample_rate: int
    fps: float
    win_length: int        # int(sr / fps): one video frame of audio
    hop_length: int        # win // 2: the nominal hop
    n_fft: int             # next power of two >= win
    pad: int               # reflect padding each side, (n_fft - hop) // 2
    step: float            # exact hop in samples, sr / fps / 2


def mel_recipe(sample_rate: int, fps: float) -> MelRecipe:
    win = int(sample_rate / fps)
    hop = win // 2
    n_fft = _next_pow2(win)
    return MelRecipe(int(sample_rate), float(fps), win, hop, n_fft, (n_fft - hop) // 2,
                     sample_rate / fps / MEL_PER_FRAME)


@lru_cache(maxsize=8)
def mel_basis(sample_rate: int, n_fft: int) -> torch.Tensor:
    """librosa's Slaney-normalised mel filterbank, float32 ``[80, n_fft // 2 + 1]`` (fmin 90 Hz, fmax 7600 Hz)."""
    basis = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=MEL_BANDS, fmin=MEL_FMIN, fmax=MEL_FMAX)
    return torch.from_numpy(basis.astype(np.float32))


@lru_cache(maxsize=8)
def _window(win_length: int, n_fft: int) -> torch.Tensor:
    """Periodic Hann of ``win_length`` zero-padded to ``n_fft``, centred as torch.stft/librosa do."""
    window = torch.hann_window(win_length, dtype=torch.float32)
    left = (n_fft - win_length) // 2
    return torch.nn.functional.pad(window, (left, n_fft - win_length - left))


def _num_frames(num_samples: int, sample_rate: int, fps: float, num_frames: Optional[int]) -> int:
    # N = round(T * sr / fps) inverts uniquely: |N * fps / sr - T| <= fps / (2 sr) < 0.5
    return int(num_frames) if num_frames is not None else int(round(num_samples * fps / sample_rate))


def mel_row_starts(first: int, stop: int, step: float) -> np.ndarray:
    """Start (in the padded signal) of log-mel rows ``[first, stop)``: ``floor(j * step + 0.5)``, int64."""
    return np.floor(np.arange(first, stop) * step + 0.5).astype(np.int64)


def mel_right_padding(recipe: MelRecipe, rows: int, num_samples: int) -> int:
    """Right reflect padding :func:`log_mel` uses for ``rows >= 1`` rows of ``num_samples`` samples: ``pad``, or
    more when the fractional hop rounds the last row up. Raises ValueError when the signal is too short to be
    reflected (reflect padding of p samples needs at least p + 1 samples)."""
    right = max(recipe.pad, int(mel_row_starts(rows - 1, rows, recipe.step)[0]) + recipe.n_fft
                - num_samples - recipe.pad)
    if max(recipe.pad, right) >= num_samples:
        raise ValueError(f"log-mel at {recipe.sample_rate} Hz / {recipe.fps:g} fps: {num_samples} samples are too "
                         f"few for {rows} rows (reflect padding of {recipe.pad} left and {right} right needs at "
                         f"least {max(recipe.pad, right) + 1} samples)")
    return right


def log_mel_rows(frames: torch.Tensor, recipe: MelRecipe) -> torch.Tensor:
    """The per-row math of :func:`log_mel`: raw ``n_fft``-sample frames of the padded signal, float32
    ``[rows, n_fft]`` -> Hann-windowed |rfft| -> mel -> normalised log, float32 ``[rows, 80]``."""
    window, basis = _window(recipe.win_length, recipe.n_fft), mel_basis(recipe.sample_rate, recipe.n_fft)
    magnitude = torch.fft.rfft(frames * window, dim=-1).abs()                     # [rows, n_fft/2+1]
    log_floor = math.log(MEL_FLOOR)
    return (torch.log(torch.clamp(magnitude @ basis.T, min=MEL_FLOOR)) - log_floor) / -log_floor


def log_mel(audio: np.ndarray, sample_rate: int, fps: float, num_frames: Optional[int] = None) -> np.ndarray:
    """Normalised log-mel spectrogram of float ``audio`` ``[N]`` in [-1, 1]: float32 ``[2T, 80]`` in about [0, 1],
    where T = ``num_frames`` (default ``round(N * fps / sr)``); rows ``2t, 2t + 1`` belong to video frame t.

    T = 0 gives ``[0, 80]``; audio too short for the reflect padding raises ValueError (see
    :func:`mel_right_padding`). :class:`zoo.data.streaming.StreamingLogMel` computes the same rows chunk by chunk."""
    recipe = mel_recipe(sample_rate, fps)
    rows = MEL_PER_FRAME * _num_frames(len(audio), sample_rate, fps, num_frames)
    if rows <= 0:
        return np.zeros((0, MEL_BANDS), dtype=np.float32)
    signal = torch.as_tensor(np.asarray(audio, dtype=np.float32))
    starts = torch.from_numpy(mel_row_starts(0, rows, recipe.step))
    # right padding may need to exceed `pad` by a sample when the fractional hop rounds up at the end
    right = mel_right_padding(recipe, rows, len(signal))
    padded = torch.nn.functional.pad(signal[None, None], (recipe.pad, right), mode="reflect")[0, 0]
    offsets = torch.arange(recipe.n_fft)
    out = torch.empty(rows, MEL_BANDS)
    for first in range(0, rows, _CHUNK_ROWS):
        chunk = padded[starts[first:first + _CHUNK_ROWS, None] + offsets]          # [rows, n_fft]
        out[first:first + _CHUNK_ROWS] = log_mel_rows(chunk, recipe)              # [rows, 80]
    return out.numpy()


def mfcc(audio: np.ndarray, sample_rate: int, fps: float, num_frames: Optional[int] = None) -> np.ndarray:
    """SyncNet-style MFCC of float ``audio`` ``[N]`` in [-1, 1]: float32 ``[round(T * 100 / fps), 13]``.

    python_speech_features defaults on ``audio * 32768`` (the int16 values SyncNet reads from wav files) at
    SyncNet's 16 kHz. Other rates are resampled first: psf rounds its 10 ms step to whole samples (221 at 22.05 kHz),
    which would drift the rows from the video frames (by about 4 frames after a minute at 22.05 kHz)."""
    frames = _num_frames(len(audio), sample_rate, fps, num_frames)
    rows = int(round(frames * MFCC_RATE / fps))
    audio = np.asarray(audio, dtype=np.float32)
    if sample_rate != MFCC_SAMPLE_RATE:
        audio = resample(audio, sample_rate, MFCC_SAMPLE_RATE)
    feats = psf.mfcc(audio.astype(np.float64) * 32768.0, samplerate=MFCC_SAMPLE_RATE)
    if len(feats) < rows:  # repeat the last row: psf's final frame already reaches the end of the signal
        feats = np.concatenate([feats, np.repeat(feats[-1:], rows - len(feats), axis=0)])
    return feats[:rows].astype(np.float32)


def rows_per_frame(feature: str, sample_rate: int, fps: float) -> float:
    """Rows (or samples, for ``audio``) per video frame of ``feature``."""
    return {"audio": sample_rate / fps, "mel": float(MEL_PER_FRAME), "mfcc": MFCC_RATE / fps}[feature]


def feature_rows(feature: str, num_frames: int, sample_rate: int, fps: float) -> int:
    """Rows of ``feature`` for a clip (or window) of ``num_frames`` frames: ``round(T * rows_per_frame)``."""
    return int(round(num_frames * rows_per_frame(feature, sample_rate, fps)))


def aligned_span(start: int, num_frames: int, per_frame: float, total: int) -> tuple[int, int]:
    """Row range ``[a, b)`` of a feature with ``per_frame`` rows per video frame for frames ``[start, start + T)``
    of a clip whose feature has ``total`` rows: ``a = round(start * per_frame)``, ``b - a = round(T * per_frame)``,
    shifted back (by at most a row, from rounding) so it ends inside the clip."""
    length = int(round(num_frames * per_frame))
    first = min(int(round(start * per_frame)), total - length)
    return max(first, 0), max(first, 0) + length


_COMPUTE = {"mel": log_mel, "mfcc": mfcc}


class FeatureCache:
    """Whole-clip ``mel``/``mfcc`` arrays of one dataset: memory first, then ``<root>/cache/<key>/<clip>.npy``,
    else computed (and saved). Safe after fork (plain arrays and read-only memmaps) and picklable (memmaps are
    dropped and re-mapped lazily)."""

    def __init__(self, dataset: ClipDataset, feature: str, cache_dir: Optional[Path] = None):
        if feature not in _COMPUTE:
            raise ValueError(f"unknown feature {feature!r}; valid: {', '.join(FEATURES)}")
        self.dataset, self.feature = dataset, feature
        self.key = (f"{feature}-r{RECIPE_VERSION}-sr{dataset.sample_rate}-fps{dataset.fps:g}-"
                    f"{''.join(c if c.isalnum() else '_' for c in dataset.version)[:24]}")
        self.directory = Path(cache_dir if cache_dir is not None else dataset.root / "cache") / self.key
        self._writable: Optional[bool] = None
        self._memory: dict[str, np.ndarray] = {}

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_memory"] = {k: v for k, v in self._memory.items() if not isinstance(v, np.memmap)}
        return state

    def rows(self, clip_id: str) -> int:
        clip = self.dataset.clip(clip_id)
        return feature_rows(self.feature, clip.num_frames, clip.sample_rate, clip.fps)

    def get(self, clip_id: str) -> np.ndarray:
        """The whole clip's feature, float32 ``[rows, dims]`` (possibly a read-only memmap)."""
        array = self._memory.get(clip_id)
        if array is None:
            array = self._load(clip_id)
            if array is None:
                array = self._compute_and_store(clip_id)
            self._memory[clip_id] = array
        return array

    def window(self, clip_id: str, start: int, num_frames: int) -> np.ndarray:
        """Rows for frames ``[start, start + num_frames)`` copied into a float32 array (see :func:`aligned_span`)."""
        array = self.get(clip_id)
        clip = self.dataset.clip(clip_id)
        first, stop = aligned_span(start, num_frames, rows_per_frame(self.feature, clip.sample_rate, clip.fps),
                                   len(array))
        return np.array(array[first:stop], dtype=np.float32)

    def precompute(self, clip_ids: list[str]) -> None:
        """Make sure every clip's feature is cached (called once in the main process, before workers fork)."""
        for clip_id in clip_ids:
            self.get(clip_id)

    def _load(self, clip_id: str) -> Optional[np.ndarray]:
        path = self.directory / f"{clip_id}.npy"
        if not path.is_file():
            return None
        try:
            array = np.load(path, mmap_mode="r")
        except (OSError, ValueError):
            return None  # unreadable cache entry: recompute and overwrite it
        return array if array.ndim == 2 and len(array) == self.rows(clip_id) and array.dtype == np.float32 else None

    def _compute_and_store(self, clip_id: str) -> np.ndarray:
        clip = self.dataset.clip(clip_id)
        audio = clip.read_audio(0, clip.num_samples)
        array = _COMPUTE[self.feature](audio, clip.sample_rate, clip.fps, clip.num_frames)
        if self._writable is not False:
            path = self.directory / f"{clip_id}.npy"
            try:
                with atomic_path(path) as tmp:
                    np.save(tmp, array)
                self._writable = True
                return np.load(path, mmap_mode="r")  # page cache instead of private memory
            except OSError as exc:
                self._writable = False
                warnings.warn(f"feature cache {self.directory} is not writable ({exc}); keeping "
                              f"{self.feature} features in memory only", RuntimeWarning, stacklevel=2)
        return array
