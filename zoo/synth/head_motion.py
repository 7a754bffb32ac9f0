"""Head pose trajectories: part audio-driven (prosody), part personal rhythm, scaled by the speaking style.

Audio-driven: every pitch accent triggers a nod (pitch), a turn (yaw) and a tilt (roll) response with the
person's own gain, latency and time constant; each phrase start moves the head to a new posture that is held
through the phrase and released in the pause; louder speech lifts the chin. Personal: each identity sways with
its own slow rhythm (frequency and amplitude per axis) and has its own rest pose. So the motion is predictable
from the audio *given* a short reference of the same person, which is what few-shot rhythmic-head-motion
methods learn.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter1d
from scipy.signal import lfilter

from zoo.synth.camera import rest_translation
from zoo.synth.script import Script, prosody

MAX_ROTATION = np.array([0.35, 0.5, 0.3])  # radians (pitch, yaw, roll) clamp


@dataclass
class Personality:
    """One identity's head-motion habits."""

    rest_rotation: np.ndarray     # [3] rad, habitual pitch / yaw / roll offset
    rest_translation: np.ndarray  # [3] m, offset from the nominal seat position
    accent_gain: np.ndarray       # [3] rad per accent of strength 1 (nod, turn, tilt)
    turn_bias: float              # probability that an accent turn has positive yaw (towards the image left)
    latency: float                # s, head response peak relative to the accent
    tau: float                    # s, response time constant
    rhythm_freq: np.ndarray       # [3] Hz, personal sway frequency per axis
    rhythm_amp: np.ndarray        # [3] rad, personal sway amplitude per axis
    phrase_gain: float            # rad, spread of per-phrase postures
    loud_lift: float              # rad per unit loudness above 1 (chin up when loud)


def sample_personality(rng: np.random.Generator) -> Personality:
    return Personality(
        rest_rotation=rng.normal(0.0, [0.04, 0.06, 0.04]),
        rest_translation=rng.normal(0.0, [0.008, 0.005, 0.02]),
        accent_gain=np.array([rng.uniform(0.04, 0.1), rng.uniform(0.02, 0.08), rng.uniform(0.0, 0.04)]),
        turn_bias=float(rng.uniform(0.25, 0.75)),
        latency=float(rng.uniform(-0.04, 0.12)),
        tau=float(rng.uniform(0.12, 0.26)),
        rhythm_freq=rng.uniform(0.15, 0.6, 3),
        rhythm_amp=rng.uniform(0.005, 0.035, 3),
        phrase_gain=float(rng.uniform(0.02, 0.07)),
        loud_lift=float(rng.uniform(0.0, 0.06)),
    )


def accent_response(t: np.ndarray, accents: np.ndarray, latency: float, tau: float) -> np.ndarray:
    """[T, A] alpha-function responses (peak 1 at accent time + latency, rising over tau) to each accent."""
    x = (t[:, None] - (accents[None, :, 0] + latency - tau)) / tau
    after = np.maximum(x, 0.0)   # np.where evaluates both sides: exp(1 - x) of a long clip's early frames overflows
    return np.where(x > 0, after * np.exp(1 - after), 0.0)


def head_pose(script: Script, t: np.ndarray, person: Personality, energy: float,
              rng: np.random.Generator) -> np.ndarray:
    """Pose per frame time t ([T] s) -> [T, 6] (rx, ry, rz radians; tx, ty, tz metres camera-space)."""
    n = len(t)
    dt = float(t[1] - t[0]) if n > 1 else 0.04
    rot = np.zeros((n, 3))

    # Accent-locked gestures: nods always go down; turns and tilts pick a side per accent.
    if len(script.accents):
        resp = accent_response(t, script.accents, person.latency, person.tau) * script.accents[None, :, 1]
        sides = np.where(rng.random((len(script.accents), 2)) < person.turn_bias, 1.0, -1.0)
        rot[:, 0] += person.accent_gain[0] * resp.sum(axis=1)
        rot[:, 1] += person.accent_gain[1] * resp @ sides[:, 0]
        rot[:, 2] += person.accent_gain[2] * resp @ sides[:, 1]

    # Phrase postures: a new target at each phrase start, released in pauses, reached with a 0.35 s lag.
    target = np.zeros((n, 3))
    for start, end in script.phrases:
        inside = (t >= start) & (t < end)
        target[inside] = rng.normal(0.0, person.phrase_gain * np.array([0.6, 1.0, 0.5]))
    a = np.exp(-dt / 0.35)
    rot += lfilter([1 - a], [1, -a], target, axis=0)

    # Louder speech lifts the chin a little (negative pitch), smoothed like a slow postural adjustment.
    _, loud = prosody(script, t)
    rot[:, 0] -= person.loud_lift * gaussian_filter1d(loud - 1.0, 0.15 / dt)

    # Personal rhythm and a little smooth noise.
    phase = rng.uniform(0, 2 * np.pi, 3)
    rot += person.rhythm_amp * np.sin(2 * np.pi * person.rhythm_freq * t[:, None] + phase)
    rot += 0.006 * gaussian_filter1d(rng.standard_normal((n, 3)), 0.3 / dt, axis=0) * np.sqrt(0.3 / dt)

    rot = np.clip(energy * rot + person.rest_rotation, -MAX_ROTATION, MAX_ROTATION)
    # Translation follows the rotation (turning shifts the head sideways, nodding moves it down) plus a lean
    # towards the camera on loud stretches.
    trans = np.empty((n, 3))
    dyn = rot - person.rest_rotation
    trans[:, 0] = 0.06 * dyn[:, 1] + 0.004 * energy * np.sin(2 * np.pi * person.rhythm_freq[1] * 0.7 * t + phase[0])
    trans[:, 1] = 0.04 * dyn[:, 0]
    trans[:, 2] = -0.02 * energy * gaussian_filter1d(loud - 1.0, 0.3 / dt)
    trans += rest_translation() + person.rest_translation
    return np.concatenate([rot, trans], axis=1)
