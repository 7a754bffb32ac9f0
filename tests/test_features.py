"""Audio features against their reference libraries, frame-alignment counts and the whole-clip cache."""
from __future__ import annotations

import pickle
import warnings

import librosa
import numpy as np
import pytest
import python_speech_features as psf
import torch

from zoo.data import open_dataset
from zoo.data.fake import write_fake_dataset
from zoo.data.features import (FeatureCache, aligned_span, feature_rows, log_mel, mel_recipe, mfcc,
                               rows_per_frame)

SR = 16000


def _audio(num_samples: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(num_samples) / SR
    return (0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.standard_normal(num_samples)).astype(np.float32)


def _reference_mel(padded: np.ndarray, recipe, hop: int) -> np.ndarray:
    """LSP's recipe written with librosa: |STFT| (center=False) -> Slaney mel -> log -> [0, 1] normalisation."""
    spec = np.abs(librosa.stft(padded, n_fft=recipe.n_fft, hop_length=hop, win_length=recipe.win_length,
                               window="hann", center=False))
    basis = librosa.filters.mel(sr=SR, n_fft=recipe.n_fft, n_mels=80, fmin=90, fmax=7600)
    log = np.log(np.maximum(basis @ spec, 1e-5))
    return ((log - np.log(1e-5)) / -np.log(1e-5)).T


def test_mel_recipe_matches_lsp_geometry():
    lsp = mel_recipe(16000, 60)
    assert (lsp.win_length, lsp.hop_length, lsp.n_fft, lsp.pad) == (266, 133, 512, 189)
    ours = mel_recipe(16000, 25)
    assert (ours.win_length, ours.hop_length, ours.n_fft, ours.pad, ours.step) == (640, 320, 1024, 352, 320.0)


def test_log_mel_equals_librosa_and_torch_stft_reference():
    frames = 30
    audio = _audio(frames * 640)
    recipe = mel_recipe(SR, 25)
    padded = np.pad(audio, recipe.pad, mode="reflect")
    ours = log_mel(audio, SR, 25)
    assert ours.shape == (2 * frames, 80) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, _reference_mel(padded, recipe, recipe.hop_length)[:2 * frames], atol=2e-5)
    spec = torch.stft(torch.from_numpy(padded), recipe.n_fft, recipe.hop_length, recipe.win_length,
                      torch.hann_window(recipe.win_length), center=False, return_complex=True).abs()
    assert spec.shape[1] == 2 * frames  # at 25 fps the plain integer-hop STFT already gives exactly 2T rows
    basis = torch.from_numpy(librosa.filters.mel(sr=SR, n_fft=1024, n_mels=80, fmin=90, fmax=7600))
    log = torch.log(torch.clamp(basis @ spec, min=1e-5))
    np.testing.assert_allclose(ours, ((log - np.log(1e-5)) / -np.log(1e-5)).T.numpy(), atol=2e-5)


def test_log_mel_at_60fps_uses_the_exact_fractional_hop():
    frames = 600                                   # 10 s: an integer hop of 133 would be 2.5 rows off by the end
    audio = _audio(int(round(frames * SR / 60)))
    recipe = mel_recipe(SR, 60)
    ours = log_mel(audio, SR, 60)
    assert ours.shape == (2 * frames, 80)
    padded = np.pad(audio, (recipe.pad, recipe.pad + 1), mode="reflect")
    starts = np.floor(np.arange(2 * frames) * SR / 120 + 0.5).astype(int)    # row j starts at round(j * 400 / 3)
    for row in (0, 1, 2, 3, 601, 1197, 1198, 1199):
        segment = padded[starts[row]:starts[row] + recipe.n_fft]
        np.testing.assert_allclose(ours[row], _reference_mel(segment, recipe, recipe.n_fft)[0], atol=2e-5)
    assert abs(starts[-2] - (frames - 1) * SR / 60) <= 0.5   # row 2t starts within half a sample of frame t


@pytest.mark.parametrize("fps", [25, 30, 60, 29.97])
@pytest.mark.parametrize("frames", [1, 7, 50])
def test_feature_counts_are_exact_per_frame(fps, frames):
    audio = _audio(int(round(frames * SR / fps)))
    assert log_mel(audio, SR, fps).shape == (2 * frames, 80)
    assert mfcc(audio, SR, fps).shape == (int(round(frames * 100 / fps)), 13)
    assert feature_rows("mel", frames, SR, fps) == 2 * frames
    assert feature_rows("audio", frames, SR, fps) == len(audio)


def test_mfcc_equals_python_speech_features_on_int16_scale():
    frames = 25
    audio = _audio(frames * 640)
    ours = mfcc(audio, SR, 25)
    reference = psf.mfcc(audio.astype(np.float64) * 32768.0, samplerate=SR)   # psf defaults, SyncNet's input
    assert ours.shape == (4 * frames, 13) and len(reference) == 4 * frames - 1
    np.testing.assert_allclose(ours[:-1], reference, rtol=1e-4, atol=1e-3)
    np.testing.assert_array_equal(ours[-1], ours[-2])                          # the missing row is repeated


@pytest.mark.parametrize("sample_rate", [11025, 22050, 44100])
def test_mfcc_rows_stay_on_the_video_frames_at_any_sample_rate(sample_rate):
    fps, frames, click = 25, 1500, 1400       # a minute of silence with a click at frame 1400
    audio = np.zeros(int(round(frames * sample_rate / fps)), np.float32)
    start = int(round(click * sample_rate / fps))
    audio[start:start + sample_rate // 100] = 0.5
    energy = mfcc(audio, sample_rate, fps)[:, 0]          # coefficient 0: log energy
    assert energy.shape == (4 * frames,)
    onset = int(np.argmax(energy > energy.min() + 5))
    assert abs(onset / 4 - click) <= 1                    # psf at 22.05 kHz alone put it 3.75 frames early


def test_aligned_span():
    assert aligned_span(10, 50, 640.0, 64000) == (6400, 6400 + 32000)
    assert aligned_span(0, 3, SR / 60, 800) == (0, 800)
    first, stop = aligned_span(2, 1, SR / 60, 800)                  # 533.33 -> 533 .. 800
    assert (first, stop) == (533, 800)
    assert aligned_span(5, 2, 4.0, 28) == (20, 28)
    first, stop = aligned_span(59, 1, SR / 60, 16000)               # rounding would end at 16001: moved back
    assert stop == 16000 and stop - first == 267
    assert rows_per_frame("mfcc", SR, 25) == 4.0


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory):
    root = write_fake_dataset(tmp_path_factory.mktemp("feat") / "data", splits={"train": 2}, seconds=1.0, size=16,
                              tracks=())
    return open_dataset(root)


def test_cache_writes_disk_copy_and_slices(small_dataset, monkeypatch):
    ds = small_dataset
    clip_id = ds.clip_ids("train")[0]
    cache = FeatureCache(ds, "mel")
    full = cache.get(clip_id)
    clip = ds.clip(clip_id)
    np.testing.assert_allclose(full, log_mel(clip.read_audio(0, clip.num_samples), SR, 25), atol=1e-6)
    path = ds.root / "cache" / cache.key / f"{clip_id}.npy"
    assert path.is_file() and not [p for p in path.parent.iterdir() if p.name.startswith(".")]
    np.testing.assert_array_equal(cache.window(clip_id, 5, 10), full[10:30])

    import zoo.data.features as features

    monkeypatch.setitem(features._COMPUTE, "mel", lambda *a: pytest.fail("recomputed despite the disk cache"))
    fresh = FeatureCache(ds, "mel")
    np.testing.assert_array_equal(fresh.get(clip_id), full)
    assert isinstance(pickle.loads(pickle.dumps(fresh)), FeatureCache)
    assert pickle.loads(pickle.dumps(fresh))._memory == {}           # memmaps are re-mapped, not pickled


def test_cache_falls_back_to_memory_when_not_writable(small_dataset, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    clip_id = small_dataset.clip_ids("train")[1]
    cache = FeatureCache(small_dataset, "mfcc", cache_dir=blocker / "cache")   # mkdir under a file fails
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        array = cache.get(clip_id)
    assert array.shape == (100, 13) and not isinstance(array, np.memmap)
    assert any("not writable" in str(w.message) for w in caught)
    assert cache.get(clip_id) is array                                        # served from memory
