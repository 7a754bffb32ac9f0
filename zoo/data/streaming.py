"""Streaming version of the LSP log-mel front-end (:func:`zoo.data.features.log_mel`), for live audio.

:class:`StreamingLogMel` takes audio in chunks of any size and returns each log-mel row as soon as it is final,
i.e. as soon as every sample of its analysis window has arrived; :meth:`StreamingLogMel.flush` ends the stream
and returns the rows that need the right reflect padding. For any chunking, everything emitted concatenated is
``log_mel(all_audio, sr, fps)``: the same frames through the same math (it shares
:func:`~zoo.data.features.log_mel_rows`, :func:`~zoo.data.features.mel_row_starts` and
:func:`~zoo.data.features.mel_right_padding` with it), so equal to float32 rounding of the mel matrix product
(~1e-7; usually bit for bit with MKL on x86, see ``_MIN_BATCH_ROWS``, but a row can differ in its last bit when
chunks split the rows into other batches).

Geometry (see :class:`~zoo.data.features.MelRecipe`): the padded signal is the audio with ``pad`` reflected samples
on the left, so padded sample ``k`` is audio sample ``|k - pad|`` (reflected again at the end of the stream).
Row ``j`` covers padded samples ``[s_j, s_j + n_fft)`` with ``s_j = floor(j * step + 0.5)``, i.e. audio samples
``[s_j - pad, s_j - pad + n_fft)``: it is final once ``s_j - pad + n_fft`` samples have been received (and at least
``pad + 1`` for the left reflection, which that always implies). The left reflection only reads audio samples
``1 .. pad``, which every early row's window already contains, so no extra waiting is needed at the start.

Memory: only the last ``n_fft`` samples are kept between pushes (all that rows not yet emitted can read, the
right reflection included), plus the pushed chunk while it is processed, so any stream uses constant memory.
"""
from __future__ import annotations

import numpy as np
import torch

from zoo.io.audio import mono_float_audio
from zoo.data.features import (_CHUNK_ROWS, MEL_BANDS, MEL_PER_FRAME, _num_frames, log_mel_rows, mel_recipe,
                               mel_right_padding, mel_row_starts)

__all__ = ["StreamingLogMel"]

# MKL's sgemm computes products of 1-3 rows with another kernel than larger ones, whose sums round differently
# (~1 ulp), while a row comes out the same from any batch of >= 4. log_mel computes its rows in batches of
# _CHUNK_ROWS (the last one shorter), so a push or flush with fewer rows to compute pads them to 4 (duplicates,
# dropped after), except for log_mel's own short last batch. This only makes the rows bit-identical; without it
# (or with another BLAS) they would still agree with log_mel to ~1e-7.
_MIN_BATCH_ROWS = 4


class StreamingLogMel:
    """Incremental :func:`~zoo.data.features.log_mel` at ``(sample_rate, fps)``.

    * :meth:`push` appends float audio in [-1, 1] and returns the new final rows, float32 ``[n, 80]`` (n may be 0;
      rows are returned one by one as they become final, so a frame's 2 rows may come from different pushes).
    * :meth:`flush` ends the stream: returns the remaining rows so that ``rows_emitted == 2 * round(N * fps / sr)``
      for N samples in all. A stream too short for the reflect padding raises ValueError there, as ``log_mel``
      does; one shorter than half a video frame gives no rows at all. After it, :meth:`push` and :meth:`flush`
      raise RuntimeError until :meth:`reset`.

    Attributes: ``recipe`` (the :class:`~zoo.data.features.MelRecipe`), ``rows_emitted``, ``samples_received``,
    ``latency_samples`` and ``buffered_samples``.

    ``latency_samples`` = ``n_fft - n_fft // 2`` (512 samples = 32 ms at 16 kHz / 25 fps, 256 = 16 ms at 60 fps):
    row j's window is centred on audio sample ``s_j - pad + n_fft // 2`` (within about a sample of the row's
    nominal centre ``(j + 0.5) * step``, the middle of its half video frame), and the row is emitted by the push
    that brings ``samples_received`` to ``latency_samples`` samples past that centre (:meth:`samples_needed`). A
    video frame t is complete when row ``2t + 1`` is, i.e. that many samples after the centre of its second half.
    """

    def __init__(self, sample_rate: int, fps: float):
        self.recipe = mel_recipe(sample_rate, fps)
        if self.recipe.hop_length < 1:
            raise ValueError(f"fps {fps:g} is too high for {sample_rate} Hz: less than 2 samples per video frame")
        self.latency_samples = self.recipe.n_fft - self.recipe.n_fft // 2
        self.reset()

    def reset(self) -> None:
        """Forget all audio and start a new stream (also after :meth:`flush`)."""
        self.rows_emitted = 0
        self.samples_received = 0
        self._buffer = np.zeros(0, dtype=np.float32)   # audio samples [_offset, samples_received)
        self._offset = 0
        self._next_needed = self.samples_needed(0)
        self._closed = False

    @property
    def buffered_samples(self) -> int:
        """Audio samples held (those rows not yet emitted may still read)."""
        return len(self._buffer)

    @property
    def closed(self) -> bool:
        """Whether :meth:`flush` ended the stream."""
        return self._closed

    def _start(self, row: int) -> int:
        return int(mel_row_starts(row, row + 1, self.recipe.step)[0])

    def samples_needed(self, row: int) -> int:
        """Samples that must have been received before row ``row`` is emitted by :meth:`push` (rows whose window
        reaches past the end of the stream come from :meth:`flush` instead)."""
        recipe = self.recipe
        return max(self._start(row) - recipe.pad + recipe.n_fft, recipe.pad + 1)

    def push(self, samples: np.ndarray) -> np.ndarray:
        """Append ``samples`` (1-D float, in [-1, 1]) and return the rows that became final, float32 ``[n, 80]``."""
        if self._closed:
            raise RuntimeError("StreamingLogMel.push() after flush(): the stream has ended; call reset() to start "
                               "a new one")
        chunk = mono_float_audio(samples, "StreamingLogMel.push()")
        if len(chunk) == 0:
            return np.zeros((0, MEL_BANDS), dtype=np.float32)
        self._buffer = np.concatenate([self._buffer, chunk]) if len(self._buffer) else chunk.copy()
        self.samples_received += len(chunk)
        if self.samples_received < self._next_needed:
            rows = np.zeros((0, MEL_BANDS), dtype=np.float32)
        else:
            stop = self._rows_ready(self.samples_received)
            rows = self._compute(self.rows_emitted, stop, end=None)
            self.rows_emitted = stop
            self._next_needed = self.samples_needed(stop)
        self._trim()
        return rows

    def flush(self) -> np.ndarray:
        """End the stream: the remaining rows, float32 ``[n, 80]``, computed with the right reflect padding.

        Raises ValueError (like ``log_mel``) when the stream has at least one video frame but is too short to be
        reflect-padded."""
        if self._closed:
            raise RuntimeError("StreamingLogMel.flush() called twice; call reset() to start a new stream")
        self._closed = True
        recipe, total = self.recipe, self.samples_received
        rows = MEL_PER_FRAME * _num_frames(total, recipe.sample_rate, recipe.fps, None)
        if rows < self.rows_emitted:  # cannot happen: a row's window ends >= 1.5 hops after its start
            raise RuntimeError(f"internal error: emitted {self.rows_emitted} rows, but {total} samples give {rows}")
        if rows == self.rows_emitted:
            out = np.zeros((0, MEL_BANDS), dtype=np.float32)
        else:
            mel_right_padding(recipe, rows, total)  # validates the reflect padding exactly as log_mel does
            out = self._compute(self.rows_emitted, rows, end=total)
        self.rows_emitted = rows
        self._buffer = np.zeros(0, dtype=np.float32)
        self._offset = total
        return out

    def _rows_ready(self, received: int) -> int:
        """Number of leading rows whose window lies within the first ``received`` samples."""
        recipe = self.recipe
        limit = received + recipe.pad - recipe.n_fft      # row j is ready iff s_j <= limit
        if limit < 0:
            return 0
        count = max(self.rows_emitted, int((limit + 0.5) / recipe.step) - 1)
        while self._start(count) <= limit:
            count += 1
        while count > self.rows_emitted and self._start(count - 1) > limit:
            count -= 1
        return count

    def _compute(self, first: int, stop: int, end: int | None) -> np.ndarray:
        """Rows ``[first, stop)`` from the buffer; ``end`` (the stream's length) enables the right reflection."""
        recipe = self.recipe
        out = np.empty((stop - first, MEL_BANDS), dtype=np.float32)
        offsets = np.arange(recipe.n_fft)
        lo = first
        while lo < stop:  # batches split where log_mel's are (multiples of _CHUNK_ROWS)
            hi = min((lo // _CHUNK_ROWS + 1) * _CHUNK_ROWS, stop)
            index = np.abs(mel_row_starts(lo, hi, recipe.step)[:, None] + offsets - recipe.pad)  # left reflection
            if end is not None:
                index = np.where(index > end - 1, 2 * (end - 1) - index, index)                # right reflection
            index -= self._offset
            if index.min() < 0 or index.max() >= len(self._buffer):
                raise RuntimeError(f"internal error: rows [{lo}, {hi}) need audio outside the buffered samples "
                                   f"[{self._offset}, {self._offset + len(self._buffer)})")
            # log_mel's own last batch may be short: then the same rows, unpadded, match it (see _MIN_BATCH_ROWS)
            short_like_log_mel = end is not None and hi == stop and lo % _CHUNK_ROWS == 0
            if hi - lo < _MIN_BATCH_ROWS and not short_like_log_mel:
                index = np.concatenate([index, np.repeat(index[-1:], _MIN_BATCH_ROWS - (hi - lo), axis=0)])
            frames = torch.from_numpy(self._buffer[index])                                       # [rows, n_fft]
            out[lo - first:hi - first] = log_mel_rows(frames, recipe).numpy()[:hi - lo]
            lo = hi
        return out

    def _trim(self) -> None:
        """Keep only the last ``n_fft`` samples: the next row is not ready yet, so its window (and every later one)
        starts after ``samples_received - n_fft``, and the right reflection at :meth:`flush` reaches back at most
        ``n_fft - pad`` samples. Before the first row this keeps audio sample 0 on, which the left reflection needs."""
        keep_from = max(0, self.samples_received - self.recipe.n_fft)
        if keep_from > self._offset:
            self._buffer = self._buffer[keep_from - self._offset:].copy()
            self._offset = keep_from
