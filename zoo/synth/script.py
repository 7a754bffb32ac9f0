"""Random sentence-like phoneme sequences with timing and prosodic structure.

A clip's *script* is a sequence of timed phone segments: leading silence, then phrases of words separated by
pauses (sometimes with a breath, NSN), then trailing silence. Words are syllables (onset + vowel + coda) with a
lexical stress; some stressed syllables carry a pitch accent. Everything downstream (audio, mouth, head motion,
upper-face style dynamics) reads this one structure, which is what makes the modalities consistent.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from zoo.data.phonemes import (AFFRICATES, DIPHTHONGS, NASALS, NSN_ID, PHONEME_CLASS, PHONEME_TO_ID, PHONEMES,
                               SIL_ID)

# Rough English frequencies (relative weights), so sequences look like speech rather than uniform noise.
_VOWEL_W = {"AH": 12, "IH": 10, "IY": 7, "EH": 6, "AE": 6, "AA": 5, "ER": 4, "AO": 4, "EY": 4, "AY": 4,
            "OW": 3, "UW": 3, "AW": 1.5, "UH": 1, "OY": 0.5}
_ONSET_W = {"T": 9, "N": 7, "S": 7, "R": 6, "D": 5, "L": 5, "K": 5, "M": 5, "DH": 4, "W": 3, "HH": 3, "B": 3,
            "P": 3, "F": 3, "G": 2, "V": 2, "Y": 2, "SH": 2, "TH": 1, "CH": 1, "JH": 1, "Z": 0.5}
_CODA_W = {"N": 9, "T": 8, "D": 6, "S": 6, "Z": 5, "R": 5, "L": 5, "K": 4, "M": 4, "NG": 3, "V": 2, "TH": 1,
           "F": 1, "P": 1, "SH": 1, "CH": 0.5, "JH": 0.5, "ZH": 0.3, "B": 0.5, "G": 0.5, "DH": 0.3}
_CLUSTERS_ONSET = [("S", "T"), ("S", "P"), ("S", "K"), ("P", "R"), ("T", "R"), ("B", "R"), ("K", "L"),
                   ("P", "L"), ("G", "R"), ("F", "L"), ("S", "M")]
_CLUSTERS_CODA = [("N", "T"), ("N", "D"), ("S", "T"), ("N", "Z"), ("R", "D"), ("L", "D"), ("K", "S"),
                  ("M", "Z"), ("T", "S")]

# Base durations (seconds) by class; scaled by stress, accent, phrase-final lengthening and speaking rate.
_BASE_DUR = {"vowel": 0.085, "fricative": 0.085, "plosive": 0.070, "nasal": 0.060, "approximant": 0.055}
_SHORT_VOWELS = {"IH", "UH", "AH", "EH"}


def _table(weights: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
    ids = np.array([PHONEME_TO_ID[p] for p in weights])
    w = np.array(list(weights.values()), dtype=float)
    return ids, w / w.sum()


_VOWELS_T, _ONSETS_T, _CODAS_T = _table(_VOWEL_W), _table(_ONSET_W), _table(_CODA_W)


@dataclass
class Script:
    """Timed phone segments of one clip (S segments, contiguous, covering [0, duration]).

    phones: [S] int phoneme ids. starts, ends: [S] float seconds. stress: [S] bool (stressed vowel).
    accent: [S] float pitch-accent strength (0 = none). phrase: [S] int phrase index, -1 outside phrases.
    accents: [A, 2] (time s, strength) at accented vowel centres. phrases: [P, 2] (start s, end s).
    """

    phones: np.ndarray
    starts: np.ndarray
    ends: np.ndarray
    stress: np.ndarray
    accent: np.ndarray
    phrase: np.ndarray
    accents: np.ndarray
    phrases: np.ndarray
    duration: float

    def index_at(self, t: np.ndarray) -> np.ndarray:
        """Segment index containing each time t (clipped to the valid range)."""
        return np.clip(np.searchsorted(self.starts, t, side="right") - 1, 0, len(self.phones) - 1)

    def phone_at(self, t: np.ndarray) -> np.ndarray:
        return self.phones[self.index_at(t)]


def _pick(rng: np.random.Generator, table: tuple[np.ndarray, np.ndarray]) -> int:
    return int(rng.choice(table[0], p=table[1]))


def _syllable(rng: np.random.Generator) -> tuple[list[int], int]:
    """Phone ids of one syllable and the position of its vowel."""
    onset: list[int] = []
    r = rng.random()
    if r < 0.12:
        onset = [PHONEME_TO_ID[p] for p in _CLUSTERS_ONSET[rng.integers(len(_CLUSTERS_ONSET))]]
    elif r < 0.72:
        onset = [_pick(rng, _ONSETS_T)]
    coda: list[int] = []
    r = rng.random()
    if r < 0.08:
        coda = [PHONEME_TO_ID[p] for p in _CLUSTERS_CODA[rng.integers(len(_CLUSTERS_CODA))]]
    elif r < 0.52:
        coda = [_pick(rng, _CODAS_T)]
    return onset + [_pick(rng, _VOWELS_T)] + coda, len(onset)


def _word(rng: np.random.Generator) -> tuple[list[int], list[int], int | None, bool]:
    """Phones of one word, the vowel positions, the stressed vowel position (None: function word), content flag."""
    n_syl = int(rng.choice([1, 2, 3], p=[0.55, 0.3, 0.15]))
    phones: list[int] = []
    vowels: list[int] = []
    for _ in range(n_syl):
        syl, v = _syllable(rng)
        vowels.append(len(phones) + v)
        phones += syl
    content = n_syl > 1 or rng.random() < 0.5  # many monosyllables are unstressed function words
    stressed = vowels[0] if rng.random() < 0.7 else vowels[int(rng.integers(len(vowels)))]
    return phones, vowels, (stressed if content else None), content


def _phone_duration(rng: np.random.Generator, ph: int, stressed: bool, accented: bool, final: bool) -> float:
    sym = PHONEMES[ph]
    cls = PHONEME_CLASS[sym]
    d = _BASE_DUR[cls]
    if cls == "vowel":
        d *= 1.45 if sym in DIPHTHONGS else (0.8 if sym in _SHORT_VOWELS else 1.0)
        d *= (1.35 if stressed else 0.85) * (1.2 if accented else 1.0)
    elif sym in AFFRICATES:
        d *= 1.35
    elif sym in ("S", "SH", "Z"):
        d *= 1.15
    elif sym in NASALS and final:
        d *= 1.3
    if final:
        d *= 1.45
    return d * float(rng.lognormal(0.0, 0.15))


def make_script(rng: np.random.Generator, duration: float, rate: float = 1.0) -> Script:
    """Generate a script filling `duration` seconds; `rate` > 1 speaks faster (shorter phones)."""
    phones: list[int] = []
    durs: list[float] = []
    stress: list[bool] = []
    accent: list[float] = []
    phrase: list[int] = []

    def add(ph: int, d: float, st: bool = False, acc: float = 0.0, phr: int = -1) -> None:
        phones.append(ph)
        durs.append(d)
        stress.append(st)
        accent.append(acc)
        phrase.append(phr)

    add(SIL_ID, float(rng.uniform(0.15, 0.4)))
    tail = float(rng.uniform(0.2, 0.45))  # trailing silence kept free
    n_phrase = 0
    while True:
        t_now = float(sum(durs))
        # Build a candidate phrase, then shrink it word by word until it fits before the trailing silence.
        words = [_word(rng) for _ in range(int(rng.integers(2, 7)))]
        n_acc = 1 + int(rng.random() < 0.45)
        fitted = None
        while words:
            seg = _phrase_segments(rng, words, n_acc, rate)
            length = sum(d for _, d, _, _ in seg)
            if t_now + length <= duration - tail:
                fitted = seg
                break
            if n_phrase == 0 and len(words) == 1:  # a very short clip still says one (fast) word
                squeeze = (duration - tail - t_now) / length
                fitted = [(ph, d * squeeze, st, acc) for ph, d, st, acc in seg] if squeeze > 0.3 else None
                break
            words = words[:-1]
        if fitted is None:
            break
        for ph, d, st, acc in fitted:
            add(ph, d, st, acc, n_phrase)
        n_phrase += 1
        # Pause between phrases, sometimes with an audible breath before the next phrase.
        if rng.random() < 0.3:
            add(SIL_ID, float(rng.uniform(0.08, 0.18)))
            add(NSN_ID, float(rng.uniform(0.18, 0.32)))
            add(SIL_ID, float(rng.uniform(0.05, 0.1)))
        else:
            add(SIL_ID, float(rng.uniform(0.15, 0.45)))
        if sum(durs) > duration - tail - 0.3:
            break
    # Drop trailing pauses and end with one silence that fills the clip exactly.
    while len(phones) > 1 and phrase[-1] < 0:
        for lst in (phones, durs, stress, accent, phrase):
            lst.pop()
    remaining = duration - float(sum(durs))
    if phones[-1] == SIL_ID:
        durs[-1] += remaining
    else:
        add(SIL_ID, remaining)

    d = np.array(durs)
    ends = np.cumsum(d)
    ends[-1] = duration
    starts = np.concatenate([[0.0], ends[:-1]])
    acc = np.array(accent)
    phr = np.array(phrase)
    centres = 0.5 * (starts + ends)
    accents = np.stack([centres[acc > 0], acc[acc > 0]], axis=1) if (acc > 0).any() else np.zeros((0, 2))
    phrases = np.array([[starts[phr == p].min(), ends[phr == p].max()] for p in range(n_phrase)]).reshape(-1, 2)
    return Script(np.array(phones, dtype=np.int64), starts, ends, np.array(stress), acc, phr, accents,
                  phrases, float(duration))


def _phrase_segments(rng: np.random.Generator, words, n_acc: int, rate: float):
    """(phone, duration, stressed, accent strength) for one phrase; the nuclear accent is on the last content word."""
    content = [i for i, w in enumerate(words) if w[3]]
    accented: dict[int, float] = {}
    if content:
        accented[content[-1]] = float(rng.uniform(0.8, 1.0))  # nuclear accent
        early = content[:-1]
        if n_acc > 1 and early:
            accented[int(rng.choice(early))] = float(rng.uniform(0.5, 0.85))
    out = []
    n_words = len(words)
    for wi, (phones, vowels, stressed_pos, _) in enumerate(words):
        last_syl_start = vowels[-1] - 1 if len(vowels) else 0
        for pi, ph in enumerate(phones):
            stressed = pi == stressed_pos
            acc = accented.get(wi, 0.0) if stressed else 0.0
            final = wi == n_words - 1 and pi >= last_syl_start
            out.append((ph, _phone_duration(rng, ph, stressed, acc > 0, final) / rate, stressed, acc))
    return out


def frame_phonemes(script: Script, n_frames: int, fps: float) -> np.ndarray:
    """[T] int16 phoneme id at each frame centre ((t + 0.5) / fps)."""
    t = (np.arange(n_frames) + 0.5) / fps
    return script.phone_at(t).astype(np.int16)


def prosody(script: Script, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pitch factor (multiplies a voice's base f0) and loudness factor at times t ([N] s -> two [N] arrays).

    Each phrase declines in pitch and loudness and ends with a final fall; pitch accents add a Gaussian bump
    (peaking just after the accented vowel centre) to both. The face and head read the same curves.
    """
    f0 = np.full(t.shape, 0.97)
    loud = np.ones(t.shape)
    for start, end in script.phrases:
        inside = (t >= start) & (t < end)
        u = (t[inside] - start) / max(end - start, 1e-3)
        fall = np.clip((u - 0.8) / 0.2, 0.0, 1.0)
        f0[inside] = 1.1 - 0.2 * u - 0.1 * fall * fall
        loud[inside] = 1.0 - 0.25 * u
    for ta, strength in script.accents:
        f0 += 0.28 * strength * np.exp(-0.5 * ((t - ta - 0.02) / 0.07) ** 2)
        loud += 0.45 * strength * np.exp(-0.5 * ((t - ta) / 0.09) ** 2)
    return f0, loud
