"""Speaking styles and the full per-frame expression track.

A style is a pattern of upper-face activity (constant offsets such as a smile or lowered brows, gestures locked
to pitch accents such as brow raises, coupling to loudness), a mouth amplitude and shape bias, a blink rate, a
head-motion energy and a speaking-rate factor, plus a fixed signature on the 32 "micro" dims. An intensity
level alpha in (0, 1] scales how far the style departs from neutral. Six styles are designed; more are drawn
procedurally from a fixed seed, so style k means the same thing in every corpus.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
from scipy.ndimage import gaussian_filter1d

from zoo.synth import expression as E
from zoo.synth.head_motion import accent_response
from zoo.synth.script import Script
from zoo.synth.visemes import mouth_track


@dataclass
class Style:
    name: str
    offset: dict[int, float]                     # constant coefficients on style dims
    accent: dict[int, float]                     # response to each pitch accent (x strength)
    loud: dict[int, float] = field(default_factory=dict)  # coupling to loudness above 1
    mouth_gain: float = 1.0                      # articulation amplitude
    mouth_bias: dict[int, float] = field(default_factory=dict)  # constant mouth-shape bias
    blink_rate: float = 15.0                     # blinks per minute
    head_energy: float = 1.0                     # head-motion amplitude factor
    wobble: float = 0.08                         # smooth random activity on style dims
    rate: float = 1.0                            # speaking-rate factor
    micro: np.ndarray = field(default_factory=lambda: np.zeros(len(E.MICRO_DIMS)))


def _designed() -> list[Style]:
    return [
        Style("neutral", offset={}, accent={E.BROW_INNER_RAISE: 0.15}, mouth_gain=0.85, blink_rate=14,
              head_energy=0.6, wobble=0.05),
        Style("happy", offset={E.SMILE: 0.9, E.CHEEK_RAISE: 0.6, E.SQUINT: 0.35, E.BROW_OUTER_RAISE: 0.25},
              accent={E.SMILE: 0.3, E.BROW_OUTER_RAISE: 0.35}, mouth_gain=1.05, mouth_bias={E.LIP_SPREAD: 0.25},
              blink_rate=20, head_energy=1.1, rate=1.08),
        Style("angry", offset={E.BROW_LOWER: 1.0, E.SQUINT: 0.5, E.NOSE_WRINKLE: 0.35, E.LIP_CORNER_DEPRESS: 0.3,
                               E.JAW_CLENCH: 0.6, E.NOSTRIL_FLARE: 0.5},
              accent={E.BROW_LOWER: 0.4, E.NOSTRIL_FLARE: 0.3}, mouth_gain=1.2,
              mouth_bias={E.LIP_THIN: 0.3, E.UPPER_LIP_RAISE: 0.2}, blink_rate=8, head_energy=1.2, rate=1.1),
        Style("sad", offset={E.BROW_INNER_RAISE: 0.8, E.LIP_CORNER_DEPRESS: 0.7, E.EYE_WIDE: -0.6,
                             E.CHIN_RAISE: 0.4},
              accent={E.BROW_INNER_RAISE: 0.3}, mouth_gain=0.7, blink_rate=10, head_energy=0.5, wobble=0.05,
              rate=0.85),
        Style("surprised", offset={E.BROW_INNER_RAISE: 0.8, E.BROW_OUTER_RAISE: 0.9, E.EYE_WIDE: 0.9},
              accent={E.BROW_INNER_RAISE: 0.4, E.BROW_OUTER_RAISE: 0.4, E.EYE_WIDE: 0.3}, mouth_gain=1.3,
              mouth_bias={E.JAW_OPEN: 0.15, E.LIP_ROUND: 0.15}, blink_rate=6, head_energy=1.4),
        Style("emphatic", offset={E.SMIRK: 0.5, E.BROW_RAISE_L: 0.3, E.BROW_TILT: 0.5, E.DIMPLER: 0.3},
              accent={E.BROW_RAISE_L: 0.9, E.BROW_RAISE_R: 0.4, E.EYE_WIDE: 0.3},
              loud={E.BROW_OUTER_RAISE: 0.5}, mouth_gain=1.15, blink_rate=22, head_energy=1.7, wobble=0.15,
              rate=1.05),
    ]


_GESTURE_DIMS = (E.SMILE, E.SMIRK, E.BROW_INNER_RAISE, E.BROW_OUTER_RAISE, E.BROW_LOWER, E.BROW_RAISE_L,
                 E.BROW_RAISE_R, E.EYE_WIDE, E.SQUINT, E.CHEEK_RAISE, E.NOSE_WRINKLE, E.LIP_CORNER_DEPRESS,
                 E.CHIN_RAISE, E.JAW_CLENCH, E.NOSTRIL_FLARE, E.DIMPLER, E.BROW_TILT)


def _procedural(k: int) -> Style:
    """Style number k >= 6: a random but fixed combination of gestures."""
    rng = np.random.default_rng([7, k])
    dims = rng.choice(_GESTURE_DIMS, size=4, replace=False)
    offset = {int(d): float(rng.uniform(0.3, 0.9) * rng.choice([-1, 1])) for d in dims[:3]}
    accent = {int(dims[3]): float(rng.uniform(0.3, 0.8))}
    mouth_bias = {int(rng.choice([E.LIP_SPREAD, E.LIP_ROUND, E.LIP_THIN, E.JAW_OPEN])): float(rng.uniform(0.1, 0.25))}
    return Style(f"style{k}", offset, accent, mouth_gain=float(rng.uniform(0.75, 1.3)), mouth_bias=mouth_bias,
                 blink_rate=float(rng.uniform(6, 24)), head_energy=float(rng.uniform(0.5, 1.6)),
                 wobble=float(rng.uniform(0.05, 0.15)), rate=float(rng.uniform(0.9, 1.1)))


def get_style(k: int) -> Style:
    """Style number k (0..5 designed, the rest procedural), with its micro-dim signature."""
    style = _designed()[k] if k < 6 else _procedural(k)
    rng = np.random.default_rng([11, k])
    style.micro = rng.normal(0.0, 0.5 if k else 0.15, len(E.MICRO_DIMS))
    return style


def without_style(style: Style) -> Style:
    """``style`` with no effect on the face but its blinks: no offsets, gestures, loudness coupling, mouth gain or
    bias, micro signature or random activity. The mouth is then the phonemes' and loudness' alone (with the
    identity's own articulation and resting bias, which :func:`expression_track` adds for any style)."""
    return replace(style, offset={}, accent={}, loud={}, mouth_gain=1.0, mouth_bias={}, wobble=0.0,
                   micro=np.zeros_like(style.micro))


def intensity_level(i: int, levels: int) -> float:
    """Intensity alpha of level i in 0..levels-1: evenly spaced in (0, 1], the top level is 1."""
    return (i + 1) / levels


def _blink_profile(x: np.ndarray) -> np.ndarray:
    """Lid closure (0..1) at x seconds from the moment of full closure: fast close, short hold, slower open."""
    close = np.clip((x + 0.09) / 0.09, 0, 1)
    opening = np.clip(1 - (x - 0.04) / 0.16, 0, 1)
    s = np.where(x < 0, close, np.where(x < 0.04, 1.0, opening))
    return s * s * (3 - 2 * s)


def blink_times(script: Script, rate_per_min: float, rng: np.random.Generator) -> np.ndarray:
    """Blink moments (s): a Poisson process plus a tendency to blink at phrase ends, at least 0.5 s apart."""
    n = rng.poisson(rate_per_min / 60.0 * script.duration)
    times = list(rng.uniform(0.2, script.duration - 0.1, n))
    times += [end + 0.12 for end, keep in zip(script.phrases[:, 1], rng.random(len(script.phrases)) < 0.4) if keep]
    kept: list[float] = []
    for x in sorted(times):
        if not kept or x - kept[-1] > 0.5:
            kept.append(x)
    return np.array(kept)


def expression_track(script: Script, t: np.ndarray, style: Style, alpha: float, loud: np.ndarray,
                     articulation: float, personal_bias: np.ndarray, blink_factor: float,
                     rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Expression coefficients [T, 64] at frame times t (before contact resolution) and the blink times.

    articulation: the identity's mouth amplitude; personal_bias: [64] the identity's own resting offsets;
    blink_factor: the identity's blink-rate multiplier.
    """
    n = len(t)
    exp = np.zeros((n, E.N_EXPRESSION))
    mouth_gain = 1.0 + alpha * (style.mouth_gain - 1.0)
    exp[:, list(E.MOUTH_DIMS)] = mouth_track(script, t, loud) * mouth_gain * articulation
    for d, v in style.mouth_bias.items():
        exp[:, d] += alpha * v
    for d, v in style.offset.items():
        exp[:, d] += alpha * v
    exp[:, list(E.MICRO_DIMS)] += alpha * style.micro
    if len(script.accents) and style.accent:
        resp = accent_response(t, script.accents, 0.0, 0.2) @ script.accents[:, 1]  # [T]
        for d, v in style.accent.items():
            exp[:, d] += alpha * v * resp
    for d, v in style.loud.items():
        exp[:, d] += alpha * v * np.clip(loud - 1.0, 0.0, None)
    # Smooth random activity on the style dims (not on the mouth or the blinks).
    dt = float(t[1] - t[0]) if n > 1 else 0.04
    free = [d for d in E.STYLE_DIMS if d not in (E.BLINK_L, E.BLINK_R)]
    noise = gaussian_filter1d(rng.standard_normal((n, len(free))), 0.4 / dt, axis=0) * np.sqrt(0.4 / dt)
    exp[:, free] += (0.3 + alpha) * style.wobble * noise
    exp += personal_bias
    blinks = blink_times(script, style.blink_rate * blink_factor, rng)
    if len(blinks):
        closure = _blink_profile(t[:, None] - blinks[None, :]).max(axis=1)
        exp[:, E.BLINK_L] += closure
        exp[:, E.BLINK_R] += closure
    return exp, blinks
