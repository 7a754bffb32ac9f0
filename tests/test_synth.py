"""The synthetic corpus is consistent and learnable: properties of in-memory clips from zoo.synth.generate_clip.

Each test states a relation a method relies on (audio drives the mouth, prosody drives the head, styles are
recognisable, geometry is exact) and measures it on freshly generated clips, so a regression in the generator
makes the corresponding number fall below its threshold.
"""
from __future__ import annotations

import re

import numpy as np
import pytest
from omegaconf import OmegaConf

from zoo.data.phonemes import (BILABIALS, CLASS_IDS, CLASS_NAMES, NSN_ID, NUM_PHONEMES, PHONEME_TO_ID, PHONEMES,
                               SIL_ID, VOWELS)
from zoo.errors import ConfigError, DataError
from zoo.synth import SynthConfig, config_hash, generate_clip
from zoo.synth import expression as E

CFG = SynthConfig(size=64, seconds=4.0)

# StyleTalk's phindex.json, written out independently of zoo.data.phonemes.
STYLETALK_PHINDEX = {"AA": 0, "AE": 1, "AH": 2, "AO": 3, "AW": 4, "AY": 5, "B": 6, "CH": 7, "D": 8, "DH": 9,
                     "EH": 10, "ER": 11, "EY": 12, "F": 13, "G": 14, "HH": 15, "IH": 16, "IY": 17, "JH": 18,
                     "K": 19, "L": 20, "M": 21, "N": 22, "NG": 23, "NSN": 24, "OW": 25, "OY": 26, "P": 27, "R": 28,
                     "S": 29, "SH": 30, "SIL": 31, "T": 32, "TH": 33, "UH": 34, "UW": 35, "V": 36, "W": 37, "Y": 38,
                     "Z": 39, "ZH": 40}


@pytest.fixture(scope="module")
def clips() -> list[dict]:
    """Eight unrendered clips across identities (incl. unseen ones), styles and intensities."""
    return [generate_clip(CFG, i, i % 6, i % 3, 50 + i, render=False) for i in range(8)]


def _frame_rms(clip: dict) -> np.ndarray:
    audio = clip["audio"]
    return np.sqrt((audio.reshape(len(clip["pose"]), -1).astype(np.float64) ** 2).mean(axis=1))


def _lip_gap_mm(clip: dict) -> np.ndarray:
    lm = clip["landmarks3d"].astype(np.float64)
    return (lm[:, [67, 66, 65], 1] - lm[:, [61, 62, 63], 1]).mean(axis=1) * 1e3


def _euler(rot: np.ndarray) -> np.ndarray:
    """R = Rz @ Ry @ Rx written out from elementary rotations (independent of zoo.synth.camera)."""
    out = []
    for rx, ry, rz in rot:
        x = np.array([[1, 0, 0], [0, np.cos(rx), -np.sin(rx)], [0, np.sin(rx), np.cos(rx)]])
        y = np.array([[np.cos(ry), 0, np.sin(ry)], [0, 1, 0], [-np.sin(ry), 0, np.cos(ry)]])
        z = np.array([[np.cos(rz), -np.sin(rz), 0], [np.sin(rz), np.cos(rz), 0], [0, 0, 1]])
        out.append(z @ y @ x)
    return np.array(out)


def test_phoneme_inventory_matches_styletalk():
    assert PHONEMES == tuple(sorted(STYLETALK_PHINDEX, key=STYLETALK_PHINDEX.get))
    assert PHONEME_TO_ID == STYLETALK_PHINDEX and NUM_PHONEMES == 41 and SIL_ID == 31 and NSN_ID == 24
    assert len(CLASS_IDS) == 41 and set(CLASS_IDS) == set(range(len(CLASS_NAMES)))
    assert CLASS_NAMES[CLASS_IDS[PHONEME_TO_ID["AA"]]] == "vowel" and CLASS_NAMES[CLASS_IDS[SIL_ID]] == "silence"


def test_config_hash_and_validation():
    h = config_hash(CFG)
    assert len(h) == 12 and int(h, 16) >= 0
    assert config_hash(SynthConfig(size=64, seconds=4.0)) == h
    assert config_hash(SynthConfig(size=64, seconds=4.0, seed=1)) != h
    assert config_hash(SynthConfig(size=128, seconds=4.0)) != h
    node = OmegaConf.structured(SynthConfig(size=64, seconds=4.0))  # structured-config compatible
    assert config_hash(node) == h
    for bad, message in [(dict(size=32), "synth.size must be in [64, 512], got 32"),
                         (dict(clips_per_identity=2), "synth.clips_per_identity must be in [3, inf), got 2"),
                         (dict(styles=0), "synth.styles must be in [1, 64], got 0"),
                         (dict(seconds=0.5), "synth.seconds must be in [1, 120], got 0.5"),
                         (dict(seed=-1), "synth.seed must be in [0, inf), got -1"),
                         (dict(size=100.7), "synth.size must be an integer, got 100.7"),
                         (dict(clips_per_identity=4, val_fraction=0.45, test_fraction=0.45),
                          "hold out 2 + 2 of synth.clips_per_identity 4: no training clip is left")]:
        with pytest.raises(ConfigError, match=re.escape(message)):
            generate_clip(SynthConfig(**bad), 0, 0, 0, 0, render=False)
    with pytest.raises(ConfigError, match=r"^unknown synth config key\(s\): colour, sise$"):
        config_hash({**CFG.__dict__, "sise": 64, "colour": 1})
    with pytest.raises(DataError, match=r"^identity 9 out of range 0\.\.\d+$"):
        generate_clip(CFG, 9, 0, 0, 0, render=False)
    with pytest.raises(DataError, match=r"^style 0 / intensity 7 out of range \(\d+ styles, \d+ intensities\)$"):
        generate_clip(CFG, 0, 0, 7, 0, render=False)


def test_shapes_dtypes_and_audio_length():
    cfg = SynthConfig(size=64, seconds=2.0, fps=29.97, sample_rate=16000)
    clip = generate_clip(cfg, 0, 1, 0, 3)
    t = round(2.0 * 29.97)
    assert clip["frames"].shape == (t, 64, 64, 3) and clip["frames"].dtype == np.uint8
    assert clip["audio"].dtype == np.float32 and len(clip["audio"]) == round(t * 16000 / 29.97)
    assert np.abs(clip["audio"]).max() <= 1.0
    expect = {"landmarks2d": (68, 2), "landmarks3d": (68, 3), "pose": (6,), "expression": (64,),
              "shoulders2d": (18, 2), "shoulders3d": (18, 3)}
    for name, shape in expect.items():
        assert clip[name].shape == (t, *shape) and clip[name].dtype == np.float32, name
        assert np.isfinite(clip[name]).all(), name
    assert clip["phoneme"].shape == (t,) and clip["phoneme"].dtype == np.int16
    meta = clip["meta"]
    assert meta["identity"] == 0 and meta["style"] == 1 and meta["intensity"] == 0
    assert len(meta["identity_coeffs"]) == len(meta["identity_modes"]) and np.array(meta["intrinsics"]).shape == (3, 3)


def test_landmarks2d_are_projections_of_posed_landmarks3d(clips):
    for clip in clips[:3]:
        k = np.array(clip["meta"]["intrinsics"])
        pose = clip["pose"].astype(np.float64)
        posed = np.einsum("tij,tnj->tni", _euler(pose[:, :3]), clip["landmarks3d"]) + pose[:, None, 3:]
        uv = (posed @ k.T)[..., :2] / posed[..., 2:3]
        assert np.abs(uv - clip["landmarks2d"]).max() < 2e-3
        sh = clip["shoulders3d"].astype(np.float64)
        uv = (sh @ k.T)[..., :2] / sh[..., 2:3]
        assert np.abs(uv - clip["shoulders2d"]).max() < 2e-3
        # the shoulder billboard follows exactly half of the head translation
        follow = np.broadcast_to(0.5 * (pose[:, None, 3:] - pose[:1, None, 3:]), sh.shape)
        np.testing.assert_allclose(sh - sh[:1], follow, atol=1e-6)
        assert pose[:, 3:].std(axis=0).max() > 1e-3  # ... and the head does move


def test_phoneme_labels_valid_exact_and_silences_quiet(clips):
    vowel_ids = [PHONEME_TO_ID[p] for p in VOWELS]
    sil_rms, vowel_rms = [], []
    for clip in clips:
        ph = clip["phoneme"].astype(int)
        assert ph.min() >= 0 and ph.max() < NUM_PHONEMES
        # labels are the segment containing each frame centre
        seg = np.array(clip["meta"]["segments"])
        centres = (np.arange(len(ph)) + 0.5) / CFG.fps
        idx = np.searchsorted(seg[:, 0], centres, side="right") - 1
        np.testing.assert_array_equal(ph, seg[idx, 2].astype(int))
        rms = _frame_rms(clip)
        # whole frames of silence (labelled SIL at the centre and with no speech inside the frame)
        sil = (ph == SIL_ID) & (seg[idx, 1] - seg[idx, 0] > 0.2)
        sil &= np.abs(centres - seg[idx, 0]) > 0.05
        sil &= np.abs(seg[idx, 1] - centres) > 0.05
        sil_rms += list(rms[sil])
        vowel_rms += list(rms[np.isin(ph, vowel_ids)])
        assert len(set(ph)) >= 12  # a real phoneme mix, not one symbol
    assert len(sil_rms) > 20 and len(vowel_rms) > 100
    assert np.median(sil_rms) < 0.02 * np.median(vowel_rms)
    assert np.max(sil_rms) < 0.1 * np.median(vowel_rms)


def test_mouth_opening_follows_audio_envelope(clips):
    per_clip, gaps, envs = [], [], []
    for clip in clips:
        gap, env = _lip_gap_mm(clip), _frame_rms(clip)
        per_clip.append(np.corrcoef(gap, env)[0, 1])
        gaps.append(gap)
        envs.append(env)
    assert np.median(per_clip) > 0.6 and min(per_clip) > 0.4, per_clip
    assert np.corrcoef(np.concatenate(gaps), np.concatenate(envs))[0, 1] > 0.5


def test_visemes_bilabials_close_and_vowels_open(clips):
    bil = [PHONEME_TO_ID[p] for p in BILABIALS]
    vowel = [PHONEME_TO_ID[p] for p in VOWELS]
    closed, opened = [], []
    for clip in clips:
        seg = np.array(clip["meta"]["segments"])
        gap = _lip_gap_mm(clip)
        centres = (np.arange(len(gap)) + 0.5) / CFG.fps
        idx = np.searchsorted(seg[:, 0], centres, side="right") - 1
        near_mid = np.abs(centres - 0.5 * (seg[idx, 0] + seg[idx, 1])) < 0.021  # frame nearest the phone centre
        closed += list(gap[near_mid & np.isin(seg[idx, 2], bil)])
        opened += list(gap[near_mid & np.isin(seg[idx, 2], vowel)])
    assert len(closed) >= 5 and len(opened) >= 30
    assert np.max(closed) < 0.5          # lips meet (the contact never goes negative either)
    assert np.min(closed) > -1e-3
    assert np.median(opened) > 4.0


def test_coarticulation_anticipates_rounding():
    """A tongue consonant before UW is already rounded; before IY it is not (lips follow the next vowel)."""
    from zoo.synth.script import Script
    from zoo.synth.visemes import mouth_track

    def round_at_consonant(vowel: str, consonant: str) -> float:
        ph = np.array([SIL_ID, PHONEME_TO_ID[consonant], PHONEME_TO_ID[vowel], SIL_ID])
        ends = np.array([0.3, 0.38, 0.55, 0.9])
        starts = np.concatenate([[0.0], ends[:-1]])
        script = Script(ph, starts, ends, np.zeros(4, bool), np.zeros(4), np.array([-1, 0, 0, -1]),
                        np.zeros((0, 2)), np.array([[0.3, 0.55]]), 0.9)
        mouth = mouth_track(script, np.array([0.34]), np.ones(1))
        return float(mouth[0, E.MOUTH_DIMS.index(E.LIP_ROUND)])

    for c in ("T", "S", "K", "N"):
        assert round_at_consonant("UW", c) > round_at_consonant("IY", c) + 0.3, c


def test_mouth_dims_follow_phonemes_and_style_dims_do_not(clips):
    """Per-phoneme means explain most mouth-dim variance and almost none of the style-dim variance."""
    ph = np.concatenate([c["phoneme"] for c in clips]).astype(int)
    exp = np.concatenate([c["expression"] for c in clips]).astype(np.float64)

    def explained(x: np.ndarray) -> float:
        means = np.zeros((NUM_PHONEMES, x.shape[1]))
        for p in np.unique(ph):
            means[p] = x[ph == p].mean(axis=0)
        resid = x - means[ph]
        return 1.0 - resid.var(axis=0).sum() / x.var(axis=0).sum()

    mouth = exp[:, list(E.MOUTH_DIMS)]
    style = exp[:, [d for d in E.STYLE_DIMS if d not in (E.BLINK_L, E.BLINK_R)]]
    assert explained(mouth) > 0.5
    assert explained(style) < 0.15


def test_expression_style_changes_the_face_only():
    """The same clip with its style taken off the face: same audio, head motion and phonemes; the mouth differs by
    the style's offsets and gain, and every style dim but the blinks sits at the identity's resting value."""
    from zoo.synth.styles import get_style, without_style

    happy = 1  # a smile and a wider mouth: the style moves the lips
    clip = generate_clip(CFG, 0, happy, 2, 5, render=False)
    same = generate_clip(CFG, 0, happy, 2, 5, render=False, expression_style=get_style(happy))
    free = generate_clip(CFG, 0, happy, 2, 5, render=False, expression_style=without_style(get_style(happy)))
    assert all(np.array_equal(clip[k], same[k]) for k in ("audio", "landmarks2d", "expression"))
    for key in ("audio", "pose", "phoneme", "shoulders2d"):
        assert np.array_equal(free[key], clip[key]), key
    lips_mm = np.abs(free["landmarks3d"][:, 48:68] - clip["landmarks3d"][:, 48:68]).max() * 1e3
    assert lips_mm > 1.0
    style_dims = [d for d in E.STYLE_DIMS if d not in (E.BLINK_L, E.BLINK_R)]
    assert np.ptp(free["expression"][:, style_dims], axis=0).max() < 1e-6
    assert np.ptp(clip["expression"][:, style_dims], axis=0).max() > 0.1


def test_styles_are_recognisable_from_a_few_seconds():
    """Logistic regression on per-clip statistics of 3 s of expression, tested on a held-out identity."""
    from sklearn.linear_model import LogisticRegression

    cfg = SynthConfig(size=64, seconds=3.0, identities=3, unseen_identities=0)
    feats, labels, idents = [], [], []
    for ident in range(3):
        for style in range(6):
            for intensity in (0, 2):
                exp = generate_clip(cfg, ident, style, intensity, 7 * ident + style + 100 * intensity,
                                    render=False)["expression"].astype(np.float64)
                feats.append(np.concatenate([exp.mean(axis=0), exp.std(axis=0)]))
                labels.append(style)
                idents.append(ident)
    x, y, g = np.array(feats), np.array(labels), np.array(idents)
    accuracy = []
    for held in range(3):
        clf = LogisticRegression(max_iter=3000).fit(x[g != held], y[g != held])
        accuracy.append((clf.predict(x[g == held]) == y[g == held]).mean())
    assert np.mean(accuracy) > 0.8  # chance is 1/6


def test_head_motion_follows_pitch_accents(clips):
    """Head rotation speed peaks around pitch accents (the audio-driven part of the motion)."""
    near, far, corr = [], [], []
    for clip in clips:
        pose = clip["pose"].astype(np.float64)
        speed = np.linalg.norm(np.diff(pose[:, :3], axis=0), axis=1) * CFG.fps
        t = (np.arange(len(speed)) + 1.0) / CFG.fps  # between frame centres
        accents = np.array(clip["meta"]["accents"]).reshape(-1, 2)
        if not len(accents):
            continue
        events = (accents[None, :, 1] * np.exp(-0.5 * ((t[:, None] - accents[None, :, 0] - 0.05) / 0.15) ** 2)).sum(1)
        corr.append(np.corrcoef(events, speed)[0, 1])
        dist = np.abs(t[:, None] - accents[None, :, 0]).min(axis=1)
        near += list(speed[dist < 0.15])
        far += list(speed[dist > 0.6])
    assert np.mean(corr) > 0.3, corr
    assert np.mean(near) > 1.5 * np.mean(far)


def test_head_motion_is_personal():
    """Per-clip head-motion statistics identify the speaker across different sentences and styles."""
    from sklearn.neighbors import NearestCentroid

    cfg = SynthConfig(size=64, seconds=4.0, identities=4, unseen_identities=0)
    feats, who = [], []
    for ident in range(4):
        for k in range(4):
            pose = generate_clip(cfg, ident, 0, 1, 300 + 10 * ident + k, render=False)["pose"].astype(np.float64)
            vel = np.diff(pose[:, :3], axis=0) * cfg.fps
            feats.append(np.concatenate([pose[:, :3].mean(axis=0) * 10, pose[:, 3:].mean(axis=0) * 50,
                                         np.abs(vel).mean(axis=0)]))
            who.append(ident)
    x, y = np.array(feats), np.array(who)
    train = np.arange(len(y)) % 4 < 2
    clf = NearestCentroid().fit(x[train], y[train])
    assert (clf.predict(x[~train]) == y[~train]).mean() >= 0.75  # chance 0.25


def test_blinks_close_the_eyes(clips):
    closed, opened = [], []
    for clip in clips:
        lm = clip["landmarks3d"].astype(np.float64)
        eye = ((lm[:, 41, 1] - lm[:, 37, 1]) + (lm[:, 47, 1] - lm[:, 43, 1])) * 0.5e3  # mm
        t = (np.arange(len(lm)) + 0.5) / CFG.fps
        for b in clip["meta"]["blinks"]:
            if 0.1 < b < CFG.seconds - 0.1:
                closed.append(eye[np.argmin(np.abs(t - b - 0.02))])
        blink_free = np.min(np.abs(t[:, None] - np.array(clip["meta"]["blinks"] + [-9.0])[None]), axis=1) > 0.4
        opened += list(eye[blink_free])
        assert eye.min() > -1e-3  # lids meet but never cross
    assert len(closed) >= 3
    assert np.median(closed) < 0.1 * np.median(opened)


def test_same_seed_same_clip_different_seed_differs():
    a = generate_clip(SynthConfig(size=64, seconds=2.0), 1, 2, 1, 9)
    b = generate_clip(SynthConfig(size=64, seconds=2.0), 1, 2, 1, 9)
    c = generate_clip(SynthConfig(size=64, seconds=2.0, seed=5), 1, 2, 1, 9)
    for key in ("frames", "audio", "landmarks2d", "expression", "pose", "phoneme"):
        assert np.array_equal(a[key], b[key]), key
        assert not np.array_equal(a[key], c[key]), key
    assert a["meta"] == b["meta"]


def test_accent_responses_of_a_long_clip_do_not_overflow():
    """An accent 2 minutes after a frame (a long clip) gives that frame no response, and no overflow warning."""
    import warnings

    from zoo.synth.head_motion import accent_response

    t = np.array([0.0, 119.9, 120.0, 120.2])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        response = accent_response(t, np.array([[120.0, 1.0]]), latency=0.0, tau=0.1)[:, 0]
    assert response[0] == 0.0 and response[1] == 0.0                 # before the rise
    assert response[2] == pytest.approx(1.0) and 0 < response[3] < 1    # the peak, then the decay
