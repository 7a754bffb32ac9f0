"""StreamingLogMel (zoo/data/streaming.py) against the whole-clip log_mel (zoo/data/features.py)."""
from __future__ import annotations

import numpy as np
import pytest

from zoo.data.features import log_mel, mel_recipe
from zoo.data.streaming import StreamingLogMel

from helpers import one_line_error

SR = 16000


def _audio(kind: str, num_samples: int, seed: int = 0) -> np.ndarray:
    if kind == "random":
        return np.random.default_rng(seed).uniform(-1, 1, num_samples).astype(np.float32)
    t = np.arange(num_samples) / SR
    return (0.6 * np.sin(2 * np.pi * 220.0 * t) + 0.2 * np.sin(2 * np.pi * 1870.0 * t)).astype(np.float32)


def _chunks(num_samples: int, chunking: str, seed: int = 0) -> list[int]:
    """Chunk sizes summing to num_samples."""
    rng = np.random.default_rng(seed)
    if chunking == "one":
        return [num_samples]
    if chunking == "single":
        return [1] * num_samples
    if chunking == "hundred":
        sizes = [100] * (num_samples // 100)
    elif chunking == "random":
        sizes = list(rng.integers(1, 2000, size=num_samples))
    else:  # "short-first": a first chunk far shorter than the left reflect padding, then a few tiny ones
        sizes = [37, 1, 1, 5] + list(rng.integers(1, 700, size=num_samples))
    out, total = [], 0
    for size in sizes:
        size = min(int(size), num_samples - total)
        if size <= 0:
            break
        out.append(size)
        total += size
    return out + ([num_samples - total] if total < num_samples else [])


def _stream(audio: np.ndarray, fps: float, sizes: list[int], stream: StreamingLogMel | None = None):
    stream = stream or StreamingLogMel(SR, fps)
    parts, position = [], 0
    for size in sizes:
        parts.append(stream.push(audio[position:position + size]))
        position += size
        assert parts[-1].dtype == np.float32 and parts[-1].shape[1:] == (80,)
        assert stream.rows_emitted == sum(len(p) for p in parts)
        assert stream.samples_received == position
    parts.append(stream.flush())
    return np.concatenate(parts), stream


@pytest.mark.parametrize("fps", [25, 60])
@pytest.mark.parametrize("kind", ["random", "sine"])
@pytest.mark.parametrize("chunking", ["one", "hundred", "random", "short-first"])
def test_streaming_equals_log_mel(fps, kind, chunking):
    # 1.37 s: not a whole number of frames (and at 60 fps of the fractional 133.33 hop), > 4 video frames
    audio = _audio(kind, 21931, seed=fps)
    expected = log_mel(audio, SR, fps)
    got, stream = _stream(audio, fps, _chunks(len(audio), chunking, seed=fps))
    assert got.shape == expected.shape == (2 * round(len(audio) * fps / SR), 80)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    assert stream.rows_emitted == len(expected)


@pytest.mark.parametrize("fps", [25, 60])
def test_single_sample_pushes_and_latency(fps):
    """Rows come out exactly when their window is complete: samples_needed, latency_samples after its centre."""
    recipe = mel_recipe(SR, fps)
    audio = _audio("random", 4567, seed=3)
    stream = StreamingLogMel(SR, fps)
    parts, emitted_at = [], []
    for i in range(len(audio)):
        rows = stream.push(audio[i:i + 1])
        parts.append(rows)
        emitted_at += [i + 1] * len(rows)
    pushed = len(emitted_at)
    parts.append(stream.flush())
    got = np.concatenate(parts)
    np.testing.assert_allclose(got, log_mel(audio, SR, fps), rtol=0, atol=1e-5)
    assert pushed >= len(got) - 4  # only the last frame or two wait for the right padding
    for j, received in enumerate(emitted_at):
        assert received == stream.samples_needed(j)
        start = int(np.floor(j * recipe.step + 0.5))
        centre = start - recipe.pad + recipe.n_fft // 2
        assert received - centre == stream.latency_samples == recipe.n_fft - recipe.n_fft // 2
        assert abs(centre - (j + 0.5) * recipe.step) <= 1.5  # the window is centred on its half video frame


def test_a_frame_rate_too_high_for_the_sample_rate():
    with pytest.raises(ValueError, match="fps 10000 is too high for 16000 Hz: less than 2 samples per video frame"):
        StreamingLogMel(16000, 10000.0)


@pytest.mark.parametrize("fps", [25, 60, 29.97])
def test_row_counts_for_any_length(fps):
    audio = _audio("random", 6000, seed=4)
    for num_samples in range(700, 6000, 97):
        clip = audio[:num_samples]
        got, stream = _stream(clip, fps, [333] * (num_samples // 333) + [num_samples % 333])
        assert len(got) == stream.rows_emitted == 2 * round(num_samples * fps / SR)
        np.testing.assert_allclose(got, log_mel(clip, SR, fps), rtol=0, atol=1e-5)


@pytest.mark.parametrize("fps", [25, 60])
def test_short_streams_match_log_mel(fps):
    """Too few samples for a frame: no rows; too few for the reflect padding: ValueError from both."""
    recipe = mel_recipe(SR, fps)
    audio = _audio("random", 1200, seed=5)
    outcomes = set()
    for num_samples in sorted(set(range(0, 1200, 7)) | {recipe.pad, recipe.pad + 1}):
        clip = audio[:num_samples]
        try:
            expected = log_mel(clip, SR, fps)
        except ValueError:
            expected = None
        for size in (max(num_samples, 1), 13):
            sizes = [size] * (num_samples // size) + ([num_samples % size] if num_samples % size else [])
            if expected is None:
                with pytest.raises(ValueError, match="too few"):
                    _stream(clip, fps, sizes)
                continue
            got, _ = _stream(clip, fps, sizes)
            assert got.shape == expected.shape
            np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
        outcomes.add("error" if expected is None else "empty" if len(expected) == 0 else "rows")
    assert outcomes == {"empty", "error", "rows"}
    assert StreamingLogMel(SR, fps).flush().shape == (0, 80)  # an empty stream


def test_push_after_flush_and_reset():
    audio = _audio("sine", 9000)
    stream = StreamingLogMel(SR, 60)
    first, _ = _stream(audio, 60, [1000] * 9, stream)
    with pytest.raises(RuntimeError, match="after flush"):
        stream.push(audio[:10])
    with pytest.raises(RuntimeError, match="twice"):
        stream.flush()
    assert stream.closed
    stream.reset()
    assert (stream.rows_emitted, stream.samples_received, stream.buffered_samples, stream.closed) == (0, 0, 0, False)
    again, _ = _stream(audio, 60, [777] * 11 + [453], stream)
    np.testing.assert_array_equal(first, again)
    one_line_error(lambda: StreamingLogMel(SR, 25).push(np.zeros((2, 10), dtype=np.float32)),
                   "StreamingLogMel.push(): expected mono audio [N], got shape (2, 10)")
    one_line_error(lambda: StreamingLogMel(SR, 25).push(np.full(10, np.inf, dtype=np.float32)), "NaN or infinite")


@pytest.mark.parametrize("fps", [25, 60])
def test_buffer_stays_bounded(fps):
    """60 s in 0.1 s chunks: only the tail future rows need is kept, never the history."""
    recipe = mel_recipe(SR, fps)
    audio = _audio("random", 60 * SR + 123, seed=6)
    stream = StreamingLogMel(SR, fps)
    parts, largest = [], 0
    for position in range(0, len(audio), SR // 10):
        parts.append(stream.push(audio[position:position + SR // 10]))
        largest = max(largest, stream.buffered_samples)
        assert stream.buffered_samples <= recipe.n_fft
    assert largest < 2000
    parts.append(stream.flush())
    got = np.concatenate(parts)
    assert len(got) == 2 * round(len(audio) * fps / SR)
    np.testing.assert_allclose(got, log_mel(audio, SR, fps), rtol=0, atol=1e-5)
