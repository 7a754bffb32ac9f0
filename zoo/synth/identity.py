"""Identities: face shape, appearance, voice and personal motion habits, all drawn from the corpus seed."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from zoo.synth import expression as E
from zoo.synth.audio import Voice
from zoo.synth.face_model import N_IDENTITY, identity_shape
from zoo.synth.head_motion import Personality, sample_personality

_SKIN = np.array([[250, 222, 200], [236, 192, 160], [214, 164, 124], [176, 122, 88], [130, 86, 60],
                  [95, 62, 45]], float)
_HAIR = np.array([[30, 24, 22], [62, 40, 28], [110, 72, 40], [196, 160, 100], [140, 60, 30], [150, 150, 150],
                  [52, 52, 60]], float)
_IRIS = np.array([[70, 45, 30], [40, 90, 140], [80, 110, 60], [100, 70, 40], [60, 60, 70]], float)


@dataclass
class Appearance:
    """Colours (RGB floats 0..255) and shapes the renderer needs."""

    skin: np.ndarray
    hair: np.ndarray
    hair_style: int          # 0 short, 1 long, 2 buzz cut, 3 bob with fringe
    hair_volume: float       # how far the hair stands off the skull (relative)
    brow: np.ndarray
    lips: np.ndarray
    iris: np.ndarray
    shirt: np.ndarray
    collar: int              # 0 round neck, 1 v-neck, 2 shirt collar
    background: tuple[np.ndarray, np.ndarray, np.ndarray]  # top colour, bottom colour, accent colour
    background_seed: int
    shoulder_width: float


@dataclass
class Identity:
    index: int
    coeffs: np.ndarray        # [N_IDENTITY] shape coefficients
    shape: np.ndarray         # [N_POINTS, 3] neutral shape (metres)
    voice: Voice
    person: Personality
    appearance: Appearance
    articulation: float       # mouth amplitude factor
    blink_factor: float       # blink-rate multiplier
    personal_bias: np.ndarray  # [64] resting expression offsets


def _colour(rng: np.random.Generator, palette: np.ndarray, jitter: float) -> np.ndarray:
    """A palette entry blended with its neighbour and jittered."""
    i = rng.integers(len(palette))
    j = min(i + 1, len(palette) - 1)
    c = palette[i] + rng.uniform(0, 0.5) * (palette[j] - palette[i])
    return np.clip(c + rng.normal(0, jitter, 3), 0, 255)


def make_identity(seed: int, index: int) -> Identity:
    """Identity number `index` of the corpus with this seed (deterministic)."""
    rng = np.random.default_rng([seed, 1, index])
    coeffs = np.clip(rng.standard_normal(N_IDENTITY), -2.0, 2.0)
    female = rng.random() < 0.5
    voice = Voice(
        f0=float(rng.uniform(180, 240) if female else rng.uniform(95, 135)),
        formant_scale=float(rng.uniform(1.12, 1.2) if female else rng.uniform(0.95, 1.05)),
        breathiness=float(rng.uniform(0.02, 0.15)),
        open_quotient=float(rng.uniform(0.55, 0.7)),
        loudness=float(rng.uniform(0.08, 0.13)),
        rate=float(rng.uniform(0.88, 1.12)),
    )
    if female:  # a slightly smaller face on average
        coeffs[-1] = np.clip(coeffs[-1] - 0.8, -2, 2)
    skin = _colour(rng, _SKIN, 6)
    hair = _colour(rng, _HAIR, 8)
    lips = np.clip(skin * np.array([0.86, 0.58, 0.58]) + np.array([18, 0, 4]) + rng.normal(0, 6, 3), 0, 255)
    hue = rng.uniform(0, 1, 3)
    bg_top = 60 + 170 * rng.uniform(0.3, 1.0) * hue / hue.max()
    bg_bottom = bg_top * rng.uniform(0.55, 0.9)
    accent = np.clip(bg_top * rng.uniform(0.6, 1.4, 3), 0, 255)
    shirt = rng.uniform(20, 230, 3)
    hair_p = np.array([0.25, 0.4, 0.1, 0.25]) if female else np.array([0.5, 0.05, 0.3, 0.15])
    appearance = Appearance(
        skin=skin, hair=hair, hair_style=int(rng.choice(4, p=hair_p)),
        hair_volume=float(rng.uniform(0.03, 0.12)),
        brow=np.clip(0.55 * hair + 0.1 * skin, 0, 255), lips=lips, iris=_colour(rng, _IRIS, 10),
        shirt=shirt, collar=int(rng.integers(3)),
        background=(bg_top, bg_bottom, accent), background_seed=int(rng.integers(2**31)),
        shoulder_width=float(rng.uniform(0.9, 1.1) * (0.92 if female else 1.0)),
    )
    bias = np.zeros(E.N_EXPRESSION)
    free = [d for d in E.STYLE_DIMS if d not in (E.BLINK_L, E.BLINK_R)]
    bias[free] = rng.normal(0.0, 0.12, len(free))
    return Identity(index=index, coeffs=coeffs, shape=identity_shape(coeffs), voice=voice,
                    person=sample_personality(rng), appearance=appearance,
                    articulation=float(rng.uniform(0.85, 1.15)), blink_factor=float(rng.uniform(0.7, 1.4)),
                    personal_bias=bias)
