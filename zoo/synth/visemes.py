"""Phonemes -> mouth expression coefficients, with coarticulation.

Each phoneme has a viseme target over the 13 mouth dims (jaw open, rounding, spread, closure, ...) and a
dominance per dim (Cohen & Massaro's dominance model): the trajectory is the dominance-weighted average of nearby
targets. Strong dominance is what makes a bilabial close the lips even between open vowels, while a weakly
dominant consonant (K, HH) lets the lips take the shape of the surrounding vowels (anticipatory rounding in
"K UW" etc.). Diphthongs have two targets (start and end). Jaw opening also grows with loudness.
"""
from __future__ import annotations

import numpy as np

from zoo.data.phonemes import BILABIALS, DIPHTHONGS, LABIODENTALS, NUM_PHONEMES, PHONEME_CLASS, PHONEMES
from zoo.synth.expression import (JAW_OPEN, LIP_FUNNEL, LIP_PART, LIP_PRESS, LIP_ROUND, LIP_SPREAD, LIP_THIN,
                                  LOWER_LIP_DEPRESS, LOWER_LIP_EVERT, LOWER_LIP_TUCK, MOUTH_DIMS, MOUTH_STRETCH,
                                  UPPER_LIP_CURL, UPPER_LIP_RAISE)
from zoo.synth.script import Script

_J, _RO, _SP, _PR, _TU, _UR = JAW_OPEN, LIP_ROUND, LIP_SPREAD, LIP_PRESS, LOWER_LIP_TUCK, UPPER_LIP_RAISE
_FU, _PA, _LD, _ST, _UC, _LE, _TH = (LIP_FUNNEL, LIP_PART, LOWER_LIP_DEPRESS, MOUTH_STRETCH, UPPER_LIP_CURL,
                                      LOWER_LIP_EVERT, LIP_THIN)

# Targets (mouth-dim -> coefficient). Diphthongs list (start, end).
_V = {
    "AA": {_J: 1.0, _PA: 0.3, _ST: 0.2}, "AE": {_J: 0.8, _SP: 0.4, _ST: 0.5, _UR: 0.2},
    "AH": {_J: 0.65, _PA: 0.25}, "AO": {_J: 0.75, _RO: 0.5, _FU: 0.2}, "EH": {_J: 0.55, _SP: 0.35, _PA: 0.1},
    "ER": {_J: 0.35, _RO: 0.35, _FU: 0.35, _UC: 0.3}, "IH": {_J: 0.35, _SP: 0.5, _PA: 0.1},
    "IY": {_J: 0.2, _SP: 0.8, _PA: 0.2, _LD: 0.1}, "UH": {_J: 0.35, _RO: 0.55, _PA: 0.1},
    "UW": {_J: 0.15, _RO: 1.0, _FU: 0.5, _LE: 0.2},
}
_DIPH = {"AW": ("AA", "UW"), "AY": ("AA", "IY"), "EY": ("EH", "IY"), "OW": ("AO", "UW"), "OY": ("AO", "IY")}
_C = {
    "B": {_PR: 1.0, _J: 0.05, _TH: 0.3}, "P": {_PR: 1.0, _J: 0.05, _TH: 0.3}, "M": {_PR: 1.0, _J: 0.05, _TH: 0.3},
    "F": {_TU: 1.0, _UR: 0.3, _J: 0.12}, "V": {_TU: 1.0, _UR: 0.3, _J: 0.12},
    "TH": {_J: 0.2, _PA: 0.35, _LD: 0.2}, "DH": {_J: 0.2, _PA: 0.35, _LD: 0.2},
    "S": {_J: 0.08, _SP: 0.35, _PA: 0.25, _TH: 0.4, _LD: 0.2},
    "Z": {_J: 0.08, _SP: 0.35, _PA: 0.25, _TH: 0.4, _LD: 0.2},
    "SH": {_FU: 1.0, _RO: 0.4, _J: 0.12, _UC: 0.6, _LE: 0.6, _PA: 0.3},
    "ZH": {_FU: 1.0, _RO: 0.4, _J: 0.12, _UC: 0.6, _LE: 0.6, _PA: 0.3},
    "CH": {_FU: 1.0, _RO: 0.4, _J: 0.12, _UC: 0.6, _LE: 0.6, _PA: 0.3},
    "JH": {_FU: 1.0, _RO: 0.4, _J: 0.12, _UC: 0.6, _LE: 0.6, _PA: 0.3},
    "T": {_J: 0.2, _PA: 0.2, _TH: 0.3}, "D": {_J: 0.2, _PA: 0.2, _TH: 0.3}, "N": {_J: 0.2, _PA: 0.2, _TH: 0.3},
    "K": {_J: 0.3, _PA: 0.15}, "G": {_J: 0.3, _PA: 0.15}, "NG": {_J: 0.3, _PA: 0.15},
    "L": {_J: 0.3, _PA: 0.25}, "R": {_RO: 0.5, _FU: 0.5, _J: 0.2, _UC: 0.4}, "W": {_RO: 1.0, _FU: 0.6, _J: 0.1},
    "Y": {_SP: 0.6, _J: 0.15}, "HH": {_J: 0.3}, "SIL": {}, "NSN": {_J: 0.1, _PA: 0.25},
}
_ALL_TARGETS = {**_V, **_C}
_SHAPE_DIMS = (_RO, _SP, _FU, _UC, _LE)  # lip shape dims that consonants usually inherit from vowels


def _dominance(symbol: str) -> dict[int, float]:
    """Per-dim dominance (default 1) of a phoneme's target."""
    cls = PHONEME_CLASS[symbol]
    if symbol in BILABIALS:
        return {_PR: 12.0, _J: 4.0, _TH: 2.0, **{d: 0.3 for d in _SHAPE_DIMS}}
    if symbol in LABIODENTALS:
        return {_TU: 10.0, _J: 3.0, _UR: 2.0, **{d: 0.3 for d in _SHAPE_DIMS}}
    if symbol in ("SH", "ZH", "CH", "JH", "R", "W"):
        return {_FU: 3.0, _RO: 3.0, _UC: 2.0, _LE: 2.0}
    if symbol == "Y":
        return {_SP: 2.0}
    if symbol == "HH":
        return {d: 0.1 for d in MOUTH_DIMS}
    if cls in ("plosive", "fricative", "nasal", "approximant"):  # tongue consonants: lips follow the vowels
        return {_J: 1.2, _TH: 1.0, **{d: 0.3 for d in _SHAPE_DIMS}}
    if symbol == "SIL":
        return {d: 0.8 for d in MOUTH_DIMS}
    return {}


def _table(values: dict[int, float], default: float) -> np.ndarray:
    row = np.full(len(MOUTH_DIMS), default)
    for d, v in values.items():
        row[MOUTH_DIMS.index(d)] = v
    return row


# [41, 2, 13] targets (two keys: start and end; equal except diphthongs) and [41, 13] dominance.
TARGETS = np.zeros((NUM_PHONEMES, 2, len(MOUTH_DIMS)))
DOMINANCE = np.ones((NUM_PHONEMES, len(MOUTH_DIMS)))
for _i, _p in enumerate(PHONEMES):
    if _p in DIPHTHONGS:
        TARGETS[_i, 0] = _table(_V[_DIPH[_p][0]], 0.0)
        TARGETS[_i, 1] = _table(_V[_DIPH[_p][1]], 0.0) * 0.8
    else:
        TARGETS[_i, :] = _table(_ALL_TARGETS[_p], 0.0)
    DOMINANCE[_i] = _table(_dominance(_p), 1.0)


def mouth_track(script: Script, t: np.ndarray, loud: np.ndarray) -> np.ndarray:
    """Mouth coefficients at times t: [T] s (loudness [T]) -> [T, 13] in MOUTH_DIMS order."""
    ph = script.phones
    dur = script.ends - script.starts
    diph = np.isin(ph, [PHONEMES.index(p) for p in DIPHTHONGS])
    # Keys: one at each phone centre; diphthongs get a start key (25%) and an end key (80%).
    centre = np.where(diph, script.starts + 0.25 * dur, 0.5 * (script.starts + script.ends))
    key_t = np.concatenate([centre, (script.starts + 0.8 * dur)[diph]])
    # Width of influence: vowels spread further than consonants, whose strong dominance must stay local (a
    # bilabial closes the lips at its centre but must not hold them shut through the next vowel).
    vowel = np.array([PHONEME_CLASS[PHONEMES[p]] == "vowel" for p in ph])
    seg_w = np.where(vowel, 0.45 * dur + 0.035, 0.3 * dur + 0.02)
    key_w = np.concatenate([np.where(diph, 0.5 * seg_w, seg_w), (0.5 * seg_w)[diph]])
    key_target = np.concatenate([TARGETS[ph, 0], TARGETS[ph[diph], 1]])
    key_dom = np.concatenate([DOMINANCE[ph], DOMINANCE[ph[diph]]])
    # Dominance functions exp(-(|t - c| / w)^1.5): [T, K] weights, then a weighted average per dim.
    w = np.exp(-(np.abs(t[:, None] - key_t[None, :]) / key_w[None, :]) ** 1.5)  # [T, K]
    num = np.einsum("tk,kd->td", w, key_dom * key_target)
    den = np.einsum("tk,kd->td", w, key_dom) + 1e-9
    mouth = num / den
    open_gain = 0.6 + 0.4 * loud  # louder -> wider jaw (loudness is ~0.7..1.5)
    mouth[:, MOUTH_DIMS.index(JAW_OPEN)] *= open_gain
    mouth[:, MOUTH_DIMS.index(LIP_PART)] *= open_gain
    return mouth
