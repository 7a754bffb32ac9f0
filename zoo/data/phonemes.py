"""The phoneme inventory shared by the synthetic corpus and StyleTalk.

41 ARPAbet symbols in exactly the index order of StyleTalk's ``phindex.json`` (alphabetical, stress markers
stripped), including ``NSN`` (non-speech noise: breaths, lip smacks) and ``SIL`` (silence). Per-frame phoneme
labels in the clip format are indices into :data:`PHONEMES`.

Each symbol also has one articulatory class. The synthesiser uses the class to pick a sound source (voicing,
frication noise, a plosive burst) and the viseme model uses it for coarticulation strength.
"""
from __future__ import annotations

PHONEMES: tuple[str, ...] = (
    "AA", "AE", "AH", "AO", "AW", "AY", "B", "CH", "D", "DH", "EH", "ER", "EY", "F", "G", "HH", "IH", "IY",
    "JH", "K", "L", "M", "N", "NG", "NSN", "OW", "OY", "P", "R", "S", "SH", "SIL", "T", "TH", "UH", "UW",
    "V", "W", "Y", "Z", "ZH",
)
PHONEME_TO_ID: dict[str, int] = {p: i for i, p in enumerate(PHONEMES)}
NUM_PHONEMES = len(PHONEMES)  # 41
SIL_ID = PHONEME_TO_ID["SIL"]  # 31
NSN_ID = PHONEME_TO_ID["NSN"]  # 24

# Articulatory classes. Affricates (CH, JH) start with a stop closure, so they count as plosives here and are
# also listed in AFFRICATES; HH (glottal fricative) counts as a fricative.
CLASS_NAMES: tuple[str, ...] = ("vowel", "fricative", "plosive", "nasal", "approximant", "silence")
VOWELS = frozenset({"AA", "AE", "AH", "AO", "AW", "AY", "EH", "ER", "EY", "IH", "IY", "OW", "OY", "UH", "UW"})
DIPHTHONGS = frozenset({"AW", "AY", "EY", "OW", "OY"})
FRICATIVES = frozenset({"DH", "F", "HH", "S", "SH", "TH", "V", "Z", "ZH"})
PLOSIVES = frozenset({"B", "CH", "D", "G", "JH", "K", "P", "T"})
AFFRICATES = frozenset({"CH", "JH"})
NASALS = frozenset({"M", "N", "NG"})
APPROXIMANTS = frozenset({"L", "R", "W", "Y"})
SILENCES = frozenset({"SIL", "NSN"})  # non-speech: silence and non-speech noise
VOICED = VOWELS | NASALS | APPROXIMANTS | frozenset({"B", "D", "G", "JH", "DH", "V", "Z", "ZH"})
BILABIALS = frozenset({"B", "P", "M"})
LABIODENTALS = frozenset({"F", "V"})


def _class_of(symbol: str) -> str:
    for name, members in (("vowel", VOWELS), ("fricative", FRICATIVES), ("plosive", PLOSIVES),
                          ("nasal", NASALS), ("approximant", APPROXIMANTS), ("silence", SILENCES)):
        if symbol in members:
            return name
    raise KeyError(symbol)


PHONEME_CLASS: dict[str, str] = {p: _class_of(p) for p in PHONEMES}
CLASS_IDS: tuple[int, ...] = tuple(CLASS_NAMES.index(PHONEME_CLASS[p]) for p in PHONEMES)  # per phoneme id


def phoneme_class(phoneme: int | str) -> str:
    """Class name (one of :data:`CLASS_NAMES`) of a phoneme given by id or symbol."""
    symbol = PHONEMES[phoneme] if isinstance(phoneme, int) else phoneme
    return PHONEME_CLASS[symbol]


def ids_of(symbols: frozenset[str] | set[str]) -> list[int]:
    """Sorted phoneme ids of a set of symbols, e.g. ``ids_of(VOWELS)``."""
    return sorted(PHONEME_TO_ID[s] for s in symbols)


assert NUM_PHONEMES == 41 and SIL_ID == 31 and NSN_ID == 24
assert set(PHONEME_CLASS) == set(PHONEMES)
