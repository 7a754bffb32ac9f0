"""Speech-like audio from a script: a vectorised source-filter synthesiser.

Sources (per sample): a glottal pulse train (Rosenberg flow derivative) following a prosodic f0 contour, plus
aspiration noise (breathiness, HH, stop aspiration, breaths) and frication noise (fricatives, plosive bursts).
Filters (per 8 ms frame): a cascade of five formant resonators from coarticulated formant tracks (with a nasal
anti-resonance) for voicing and aspiration, and a band-pass noise shape for frication. Filtering is STFT
overlap-add with numpy rfft: each windowed frame is zero-padded, multiplied by its frame's magnitude envelope
(with a linear phase so the zero-phase impulse response fits inside the padded frame) and added back.

No per-sample Python loops: everything is array arithmetic over the whole clip.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy.ndimage import gaussian_filter1d

from zoo.synth import acoustics as ac
from zoo.synth.script import Script, prosody

CONTROL_DT = 0.002  # control grid step (s): amplitudes and formant tracks are built on this grid
_BANDWIDTHS = np.array([80.0, 100.0, 140.0, 200.0, 280.0])  # formant bandwidths (Hz), F1..F5
_GLOTTAL_RMS = 3.0  # RMS of the normalised Rosenberg derivative below, measured; makes voicing level ~ 1


@dataclass
class Voice:
    """One identity's voice."""

    f0: float             # base pitch (Hz)
    formant_scale: float  # vocal-tract factor: formants are multiplied by it (shorter tract -> higher)
    breathiness: float    # aspiration noise mixed into voicing (0..0.3)
    open_quotient: float  # glottal open phase as a fraction of the period (0.5..0.7)
    loudness: float       # RMS level of speech in the output (0.05..0.15)
    rate: float           # speaking-rate factor (>1 faster)


def _smooth(x: np.ndarray, sigma_s: float) -> np.ndarray:
    """Gaussian smoothing along axis 0 of a control-grid array; sigma in seconds."""
    return gaussian_filter1d(x, sigma_s / CONTROL_DT, axis=0, mode="nearest")


def _next_vowel(phones: np.ndarray) -> np.ndarray:
    """[S] index of the nearest following vowel segment (or the previous one at the end; self if none)."""
    is_v = ac.IS_VOWEL[phones]
    idx = np.arange(len(phones))
    nxt = np.where(is_v, idx, len(phones))
    nxt = np.minimum.accumulate(nxt[::-1])[::-1]  # next vowel at or after i
    prev = np.maximum.accumulate(np.where(is_v, idx, -1))
    return np.where(nxt < len(phones), nxt, np.where(prev >= 0, prev, idx))


def control_tracks(script: Script, voice: Voice, t: np.ndarray) -> dict[str, np.ndarray]:
    """Synthesis controls on times t ([N] s): formants [N,3] Hz, f0 [N] Hz, voicing / aspiration / frication
    amplitudes [N], frication shape [N,3] (centre, bandwidth, floor), nasal zero [N] Hz and nasality [N]."""
    i = script.index_at(t)
    ph = script.phones[i]
    seg_len = np.maximum(script.ends - script.starts, 1e-4)
    u = np.clip((t - script.starts[i]) / seg_len[i], 0.0, 1.0)

    # Formants: consonants lean towards the following vowel (locus blending), diphthongs glide; smoothing
    # the step-wise targets gives the formant transitions between neighbouring phones (coarticulation).
    target_v = script.phones[_next_vowel(script.phones)]
    w = ac.LOCUS_WEIGHT[script.phones][:, None]
    f_start = (1 - w) * ac.FORMANT_START[script.phones] + w * ac.FORMANT_START[target_v]
    f_end = (1 - w) * ac.FORMANT_END[script.phones] + w * ac.FORMANT_START[target_v]
    glide = (u * u * (3 - 2 * u))[:, None]
    formants = _smooth(f_start[i] + (f_end[i] - f_start[i]) * glide, 0.012) * voice.formant_scale

    f0_factor, loud = prosody(script, t)
    voicing = ac.VOICING[ph].copy()
    aspiration = ac.ASPIRATION[ph].copy()
    frication = np.where(ac.IS_FRICATIVE[ph], ac.FRICATION[ph, 3], 0.0)
    # Plosives: closure (silent or a weak voice bar), release burst, then aspiration / voice onset.
    stop = ac.IS_PLOSIVE[ph]
    release = np.where(ac.IS_AFFRICATE[ph], 0.45, 0.65)
    closure = stop & (u < release)
    burst = stop & (u >= release) & (u < release + 0.15)
    after = stop & (u >= release + 0.1)
    voicing = np.where(closure, voicing, np.where(stop, np.where(ac.VOICED_STOP[ph], 0.3, 0.0), voicing))
    burst_env = np.exp(-np.clip(u - release, 0, None) / 0.06)
    frication = np.where(burst, ac.FRICATION[ph, 3] * burst_env, frication)
    frication = np.where(ac.IS_AFFRICATE[ph] & (u >= release), ac.FRICATION[ph, 3], frication)
    aspiration = np.where(stop & ~after, 0.0, aspiration)
    aspiration = np.where(ph == 24, aspiration * np.sin(np.pi * u), aspiration)  # NSN breath: swell and fade

    voicing = _smooth(voicing, 0.006) * loud
    aspiration = _smooth(aspiration, 0.004) * loud
    frication = _smooth(frication, 0.0015) * np.sqrt(loud)
    shape = _smooth(ac.FRICATION[ph, :3], 0.004)
    nasal_zero = ac.NASAL_ZERO[ph]
    nasality = _smooth((nasal_zero > 0).astype(float), 0.008)
    nasal_zero = _smooth(np.where(nasal_zero > 0, nasal_zero, 1500.0), 0.008) * voice.formant_scale
    return {"formants": formants, "f0": voice.f0 * f0_factor, "voicing": voicing, "aspiration": aspiration,
            "frication": frication, "frication_shape": shape, "nasal_zero": nasal_zero, "nasality": nasality}


def _glottal_source(f0: np.ndarray, sample_rate: int, open_quotient: float) -> np.ndarray:
    """Rosenberg glottal-flow derivative for a per-sample f0 track [N] -> [N], roughly unit RMS."""
    phase = np.cumsum(f0 / sample_rate)
    frac = phase - np.floor(phase)
    tp, tn = 0.66 * open_quotient, 0.34 * open_quotient  # opening and closing parts of the open phase
    rising = 0.5 * (1 - np.cos(np.pi * np.minimum(frac / tp, 1.0)))
    falling = np.cos(0.5 * np.pi * np.clip((frac - tp) / tn, 0.0, 1.0))
    flow = np.where(frac < tp, rising, falling)
    d = np.diff(flow, prepend=flow[0]) * (sample_rate / f0)  # slope per period, so level is pitch-independent
    return d / _GLOTTAL_RMS


def _tract_envelope(f: np.ndarray, formants: np.ndarray, nasal_zero: np.ndarray, nasality: np.ndarray,
                    scale: float) -> np.ndarray:
    """Magnitude response [F, B] of the formant cascade (F1..F3 per frame from formants [F,3], fixed F4, F5)
    with an optional nasal anti-resonance; unnormalised (see `synthesize`)."""
    upper = np.broadcast_to(np.array([3500.0, 4500.0]) * scale, (len(formants), 2))
    fk = np.minimum(np.concatenate([formants, upper], axis=1), 0.95 * f[-1])[:, :, None]  # [F,5,1]
    bk = _BANDWIDTHS[None, :, None]
    f2 = (f * f)[None, None, :]
    # Product of the five resonator magnitudes F^2 / sqrt((F^2 - f^2)^2 + (B f)^2): one sqrt instead of
    # five logs (the product stays far inside float64 range); the level is normalised below anyway.
    denom = np.prod((fk * fk - f2) ** 2 + (bk * f[None, None, :]) ** 2, axis=1)
    h = np.prod(fk[:, :, 0] ** 2, axis=1, keepdims=True) / np.sqrt(denom)
    fz = nasal_zero[:, None]
    zero = np.minimum(np.sqrt((fz * fz - f * f) ** 2 + (150.0 * f) ** 2) / (fz * fz), 1.0)
    h *= 1 - nasality[:, None] * (1 - zero)
    return h


def _noise_envelope(f: np.ndarray, shape: np.ndarray) -> np.ndarray:
    """Band-pass magnitude [F, B] for frication with per-frame (centre, bandwidth, floor), unit power."""
    h = np.exp(-0.5 * ((f[None, :] - shape[:, :1]) / shape[:, 1:2]) ** 2) + shape[:, 2:3]
    return h / np.sqrt(np.mean(h * h, axis=1, keepdims=True))


def synthesize(script: Script, voice: Voice, sample_rate: int, n_samples: int,
               rng: np.random.Generator) -> np.ndarray:
    """Audio for a script: float32 [n_samples] in [-1, 1]."""
    hop = max(32, int(round(sample_rate * 0.008)))
    win, nfft, delay = 2 * hop, 4 * hop, hop
    n_frames = (n_samples + win + hop) // hop + 1
    # Controls on a fine grid (for per-sample amplitudes) and at STFT frame centres (for filter shapes).
    t_grid = np.arange(-win / sample_rate, n_samples / sample_rate + 2 * CONTROL_DT, CONTROL_DT)
    ctl = control_tracks(script, voice, t_grid)
    t_samp = np.arange(n_samples) / sample_rate
    t_frame = (np.arange(n_frames) * hop - win / 2) / sample_rate

    def per_sample(x):
        return np.interp(t_samp, t_grid, x)

    def per_frame(x):
        if x.ndim == 1:
            return np.interp(t_frame, t_grid, x)
        return np.stack([np.interp(t_frame, t_grid, c) for c in x.T], axis=1)

    # Sources. Slow pitch jitter makes the voice less mechanical; it is part of the seeded clip.
    wobble = gaussian_filter1d(rng.standard_normal(len(t_grid)), 0.03 / CONTROL_DT)
    jitter = 1 + 0.012 * wobble / (wobble.std() + 1e-9)
    f0 = per_sample(ctl["f0"] * jitter)
    voicing = per_sample(ctl["voicing"])
    noise = rng.standard_normal((4, n_samples))
    tract_src = voicing * (_glottal_source(f0, sample_rate, voice.open_quotient) + voice.breathiness * noise[0])
    tract_src += per_sample(ctl["aspiration"]) * noise[1]
    fric_src = per_sample(ctl["frication"]) * noise[2]

    # Filters per frame, applied by STFT overlap-add.
    freqs = np.fft.rfftfreq(nfft, 1.0 / sample_rate)
    h_tract = _tract_envelope(freqs, per_frame(ctl["formants"]), per_frame(ctl["nasal_zero"]),
                              per_frame(ctl["nasality"]), voice.formant_scale)
    h_noise = _noise_envelope(freqs, per_frame(ctl["frication_shape"]))
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win) / win)  # periodic Hann: sums to 1 at hop win/2
    shift = np.exp(-2j * np.pi * np.arange(len(freqs)) * delay / nfft)

    def spectrum(x):
        padded = np.concatenate([np.zeros(win), x, np.zeros(win + 2 * hop)])
        frames = sliding_window_view(padded, win)[::hop][:n_frames] * window
        return np.fft.rfft(frames, n=nfft, axis=1)

    # The tract filter keeps each frame's power (gain normalised against the actual excitation spectrum), so
    # loudness is set by the source levels alone: how well harmonics line up with formants, which depends on
    # f0, would otherwise make close vowels at low pitch louder than open ones.
    x_tract = spectrum(tract_src)
    y_tract = x_tract * h_tract
    p_in = np.sum(np.abs(x_tract) ** 2, axis=1, keepdims=True)
    p_out = np.sum(np.abs(y_tract) ** 2, axis=1, keepdims=True)
    eps = 1e-9 * float(np.mean(p_in)) + 1e-20
    spec = (y_tract * np.sqrt((p_in + eps) / (p_out + eps)) + spectrum(fric_src) * h_noise) * shift
    frames = np.fft.irfft(spec, n=nfft, axis=1)  # [F, nfft]
    # Overlap-add: frame i lands at i*hop; nfft = 4 hops, so add the four hop-sized quarters with offsets.
    quarters = frames.reshape(n_frames, 4, hop)
    out = np.zeros((n_frames + 3, hop))
    for q in range(4):
        out[q:q + n_frames] += quarters[:, q]
    y = out.reshape(-1)[win + delay: win + delay + n_samples]

    speech = voicing > 0.3
    rms = np.sqrt(np.mean(y[speech] ** 2)) if speech.any() else np.sqrt(np.mean(y * y)) + 1e-9
    y = y * (voice.loudness / max(rms, 1e-9))
    y += 3e-3 * noise[3] * voice.loudness  # room-noise floor (~ -50 dB re speech): silence is quiet, not zero
    return np.clip(y, -1.0, 1.0).astype(np.float32)
