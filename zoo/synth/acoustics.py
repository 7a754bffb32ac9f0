"""Acoustic targets of each phoneme for the source-filter synthesiser.

Formant frequencies are adult-male reference values (Peterson & Barney / Hillenbrand style averages, rounded);
a voice scales them by its vocal-tract factor. Every table is indexed by phoneme id ([41, ...] arrays), so the
synthesiser can look up a whole script at once.
"""
from __future__ import annotations

import numpy as np

from zoo.data.phonemes import NUM_PHONEMES, PHONEME_CLASS, PHONEME_TO_ID, PHONEMES

# F1, F2, F3 (Hz) at the start and end of the phone (equal for monophthongs).
_FORMANTS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {}
for _p, _f in {"AA": (730, 1090, 2440), "AE": (660, 1720, 2410), "AH": (640, 1190, 2390),
               "AO": (570, 840, 2410), "EH": (530, 1840, 2480), "ER": (490, 1350, 1690),
               "IH": (390, 1990, 2550), "IY": (270, 2290, 3010), "UH": (440, 1020, 2240),
               "UW": (300, 870, 2240),
               # consonant loci: approximants and nasals have real formants, obstruents only a locus that the
               # neighbouring vowel pulls on (see `locus_weight`)
               "L": (360, 1100, 2700), "R": (420, 1250, 1600), "W": (300, 700, 2200), "Y": (280, 2200, 2950),
               "M": (260, 1000, 2200), "N": (260, 1500, 2500), "NG": (260, 2000, 2700),
               "B": (300, 900, 2200), "P": (300, 900, 2200), "F": (350, 1100, 2400), "V": (350, 1100, 2400),
               "D": (350, 1750, 2600), "T": (350, 1750, 2600), "TH": (350, 1500, 2600), "DH": (350, 1500, 2600),
               "S": (350, 1700, 2600), "Z": (350, 1700, 2600), "SH": (350, 1900, 2500), "ZH": (350, 1900, 2500),
               "CH": (350, 1900, 2500), "JH": (350, 1900, 2500), "G": (350, 2100, 2500), "K": (350, 2100, 2500),
               "HH": (500, 1500, 2500), "NSN": (550, 1500, 2500), "SIL": (500, 1500, 2500)}.items():
    _FORMANTS[_p] = (_f, _f)
for _p, (_a, _b) in {"AW": ("AA", "UH"), "AY": ("AA", "IH"), "EY": ("EH", "IY"), "OW": ("AO", "UH"),
                     "OY": ("AO", "IY")}.items():
    _FORMANTS[_p] = (_FORMANTS[_a][0], _FORMANTS[_b][0])

# How much a consonant's formants follow the next vowel (1 = fully, e.g. HH is that vowel whispered).
_LOCUS_WEIGHT = {"vowel": 0.0, "approximant": 0.25, "nasal": 0.3, "plosive": 0.6, "fricative": 0.6,
                 "silence": 0.0}

# Source levels relative to an open vowel (linear amplitude).
_VOICING = {"vowel": 1.0, "approximant": 0.55, "nasal": 0.4}
_VOICED_OBSTRUENT = {"B": 0.12, "D": 0.12, "G": 0.12, "JH": 0.12, "V": 0.3, "DH": 0.3, "Z": 0.25, "ZH": 0.25}
# Intrinsic vowel intensity: open vowels are several dB louder than close ones (IY, UW).
_VOWEL_LEVEL = {"AA": 1.0, "AE": 1.0, "AH": 0.9, "AO": 1.0, "AW": 1.0, "AY": 0.95, "EH": 0.85, "ER": 0.75,
                "EY": 0.8, "IH": 0.7, "IY": 0.55, "OW": 0.85, "OY": 0.9, "UH": 0.7, "UW": 0.55}

# Frication noise: centre frequency, Gaussian bandwidth (Hz), flat floor (fraction of peak), level.
_FRICATION = {"S": (5800, 1400, 0.03, 0.2), "Z": (5800, 1400, 0.03, 0.14), "SH": (3100, 900, 0.06, 0.24),
              "ZH": (3100, 900, 0.06, 0.16), "CH": (3100, 900, 0.06, 0.24), "JH": (3100, 900, 0.06, 0.18),
              "F": (4500, 2500, 0.5, 0.10), "V": (4500, 2500, 0.5, 0.07), "TH": (5000, 2500, 0.5, 0.08),
              "DH": (5000, 2500, 0.5, 0.06),
              # plosive bursts: labial = diffuse low, alveolar = high, velar = compact mid
              "P": (1200, 1500, 0.4, 0.35), "B": (1200, 1500, 0.4, 0.25), "T": (4500, 1500, 0.1, 0.4),
              "D": (4500, 1500, 0.1, 0.3), "K": (2200, 600, 0.1, 0.4), "G": (2200, 600, 0.1, 0.3)}
_ASPIRATION = {"HH": 0.22, "P": 0.12, "T": 0.12, "K": 0.12, "NSN": 0.06}  # noise through the vocal tract
_NASAL_ZERO = {"M": 1000.0, "N": 1800.0, "NG": 2800.0}


def _array(fn) -> np.ndarray:
    return np.array([fn(p) for p in PHONEMES], dtype=np.float64)


FORMANT_START = np.array([_FORMANTS[p][0] for p in PHONEMES], dtype=np.float64)  # [41, 3] Hz
FORMANT_END = np.array([_FORMANTS[p][1] for p in PHONEMES], dtype=np.float64)    # [41, 3] Hz
LOCUS_WEIGHT = _array(lambda p: _LOCUS_WEIGHT[PHONEME_CLASS[p]] if p != "HH" else 1.0)
VOICING = _array(lambda p: _VOICING.get(PHONEME_CLASS[p], _VOICED_OBSTRUENT.get(p, 0.0))
                 * _VOWEL_LEVEL.get(p, 1.0))
FRICATION = np.array([_FRICATION.get(p, (3000.0, 2000.0, 1.0, 0.0)) for p in PHONEMES])  # [41, 4]
ASPIRATION = _array(lambda p: _ASPIRATION.get(p, 0.0))
NASAL_ZERO = _array(lambda p: _NASAL_ZERO.get(p, 0.0))      # 0 = not nasal
IS_PLOSIVE = _array(lambda p: PHONEME_CLASS[p] == "plosive") > 0
IS_AFFRICATE = _array(lambda p: p in ("CH", "JH")) > 0
IS_VOWEL = _array(lambda p: PHONEME_CLASS[p] == "vowel") > 0
IS_FRICATIVE = _array(lambda p: PHONEME_CLASS[p] == "fricative" and p != "HH") > 0
VOICED_STOP = _array(lambda p: p in ("B", "D", "G", "JH")) > 0

assert FORMANT_START.shape == (NUM_PHONEMES, 3) and PHONEME_TO_ID["SIL"] == 31
