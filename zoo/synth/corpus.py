"""Clip generation and corpus building.

A clip: one identity speaking one random script in one style at one intensity. The script drives the audio
(source-filter synthesis), the mouth (visemes), the style gestures and the head motion (prosody), so every
modality is consistent and the ground truth is exact. Clips are written through :mod:`zoo.data.clip_format`.

Splits are by clip: each seen identity's clips are divided into train / val / test (so person-specific methods
train and test on the same person), and every clip of the held-out identities forms ``test_unseen``.
"""
from __future__ import annotations

import json
import os
import shutil
from functools import lru_cache
from pathlib import Path
from typing import Optional

import numpy as np

from zoo.data.phonemes import PHONEMES
from zoo.errors import DataError
from zoo.synth import camera
from zoo.synth import expression as E
from zoo.synth.audio import synthesize
from zoo.synth.config import (GENERATOR_VERSION, SynthConfig, as_dict, coerce, config_hash, num_frames, num_samples,
                              held_out_clips, unseen_clips, validate)
from zoo.synth.face_model import IDENTITY_MODES, N_LANDMARKS, N_POINTS
from zoo.synth.head_motion import head_pose
from zoo.synth.identity import Identity, make_identity
from zoo.synth.render import Renderer
from zoo.synth.script import frame_phonemes, make_script, prosody
from zoo.synth.styles import Style, expression_track, get_style, intensity_level

DATASET_NAME = "synth"
_EXP_FLAT = E.EXP_BASIS.reshape(E.N_EXPRESSION, -1)  # [64, N_POINTS * 3]


@lru_cache(maxsize=64)
def _identity(seed: int, index: int) -> Identity:
    return make_identity(seed, index)


@lru_cache(maxsize=16)
def _renderer(seed: int, index: int, size: int) -> Renderer:
    return Renderer(_identity(seed, index), size)


def _r(x, nd: int = 5):
    """JSON-friendly rounded copy of a float array / scalar."""
    return np.round(np.asarray(x, dtype=np.float64), nd).tolist()


def generate_clip(cfg: SynthConfig, identity: int, style: int, intensity: int, clip_seed: int, *,
                  render: bool = True, expression_style: Optional[Style] = None) -> dict:
    """Generate one clip in memory.

    Returns a dict with ``frames`` uint8 [T, S, S, 3] RGB (None when render=False), ``audio`` float32 [N],
    the tracks ``landmarks2d`` [T,68,2] (pixels), ``landmarks3d`` [T,68,3] (object space, metres), ``pose``
    [T,6], ``expression`` [T,64], ``phoneme`` [T] int16, ``shoulders2d`` [T,18,2], ``shoulders3d`` [T,18,3]
    (camera space, metres), and ``meta`` (JSON-serialisable: identity, style, intensity, identity_coeffs,
    intrinsics, fps, sample_rate, the exact phone segments, pitch accents, phrases and blinks, ...).

    ``expression_style`` replaces the style in the face's expression track only: the same clip (script, audio,
    head motion, speaking rate) with another face, e.g. :func:`~zoo.synth.styles.without_style` for the part of
    the mouth that the phonemes and loudness alone determine.
    """
    cfg = coerce(cfg)
    validate(cfg)
    if not 0 <= identity < cfg.identities + cfg.unseen_identities:
        raise DataError(f"identity {identity} out of range 0..{cfg.identities + cfg.unseen_identities - 1}")
    if not (0 <= style < cfg.styles and 0 <= intensity < cfg.intensities):
        raise DataError(f"style {style} / intensity {intensity} out of range ({cfg.styles} styles, "
                        f"{cfg.intensities} intensities)")
    person = _identity(cfg.seed, identity)
    st = get_style(style)
    alpha = intensity_level(intensity, cfg.intensities)
    n_frames, n_samples = num_frames(cfg), num_samples(cfg)
    # Independent streams, so e.g. the audio noise never shifts the script or the motion.
    streams = [np.random.default_rng(s) for s in
               np.random.SeedSequence([cfg.seed, 2, identity, style, intensity, clip_seed]).spawn(4)]
    rng_script, rng_audio, rng_face, rng_head = streams

    rate = person.voice.rate * (1.0 + alpha * (st.rate - 1.0))
    script = make_script(rng_script, n_samples / cfg.sample_rate, rate)
    audio = synthesize(script, person.voice, cfg.sample_rate, n_samples, rng_audio)

    t = (np.arange(n_frames) + 0.5) / cfg.fps  # frame centres
    _, loud = prosody(script, t)
    exp, blinks = expression_track(script, t, expression_style or st, alpha, loud, person.articulation,
                                   person.personal_bias, person.blink_factor, rng_face)
    exp = E.resolve_contacts(person.shape, exp)
    pose = head_pose(script, t, person.person, 1.0 + alpha * (st.head_energy - 1.0), rng_head)

    renderer = _renderer(cfg.seed, identity, cfg.size)
    rig = np.broadcast_to(renderer.rig, (n_frames,) + renderer.rig.shape).copy()  # [T, N_RIG, 3]
    rig[:, :N_POINTS] += (exp @ _EXP_FLAT).reshape(n_frames, N_POINTS, 3)
    k = camera.intrinsics(cfg.size)
    points2d = camera.project(camera.pose_points(rig, pose), k)
    shoulders3d = camera.shoulders(pose, person.appearance.shoulder_width)
    shoulders2d = camera.project(shoulders3d, k)
    frames = renderer.render(points2d, shoulders2d) if render else None

    segments = [[round(float(a), 5), round(float(b), 5), int(p)]
                for a, b, p in zip(script.starts, script.ends, script.phones)]
    meta = {
        "identity": int(identity), "seen": bool(identity < cfg.identities), "style": int(style),
        "style_name": st.name, "intensity": int(intensity), "intensity_level": float(alpha),
        "identity_coeffs": _r(person.coeffs), "identity_modes": list(IDENTITY_MODES),
        "intrinsics": _r(k, 6), "fps": float(cfg.fps), "sample_rate": int(cfg.sample_rate),
        "clip_seed": int(clip_seed), "corpus_version": config_hash(cfg),
        "voice": {"f0": round(person.voice.f0, 3), "formant_scale": round(person.voice.formant_scale, 4)},
        "segments": segments, "accents": _r(script.accents, 4), "phrases": _r(script.phrases, 4),
        "blinks": _r(blinks, 4),
    }
    return {
        "frames": frames, "audio": audio,
        "landmarks2d": points2d[:, :N_LANDMARKS].astype(np.float32),
        "landmarks3d": rig[:, :N_LANDMARKS].astype(np.float32),
        "pose": pose.astype(np.float32), "expression": exp.astype(np.float32),
        "phoneme": frame_phonemes(script, n_frames, cfg.fps),
        "shoulders2d": shoulders2d.astype(np.float32), "shoulders3d": shoulders3d.astype(np.float32),
        "meta": meta,
    }


TRACKS = ("landmarks2d", "landmarks3d", "pose", "expression", "phoneme", "shoulders2d", "shoulders3d")


def clip_plan(cfg: SynthConfig) -> tuple[list[dict], dict[str, list[str]]]:
    """Every clip of the corpus (identity, style, intensity, clip seed, id) and the splits."""
    cfg = coerce(cfg)
    combos = [(s, i) for s in range(cfg.styles) for i in range(cfg.intensities)]
    plan: list[dict] = []
    splits: dict[str, list[str]] = {"train": [], "val": [], "test": [], "test_unseen": []}
    for ident in range(cfg.identities + cfg.unseen_identities):
        seen = ident < cfg.identities
        n = cfg.clips_per_identity if seen else unseen_clips(cfg)
        rng = np.random.default_rng([cfg.seed, 3, ident])
        # Cycle through shuffled (style, intensity) combinations so every identity covers them evenly.
        order = np.concatenate([rng.permutation(len(combos)) for _ in range(n // len(combos) + 1)])[:n]
        n_test, n_val = held_out_clips(cfg)
        held = rng.permutation(n)
        role = {int(c): "test" for c in held[:n_test]} | {int(c): "val" for c in held[n_test:n_test + n_val]}
        for c in range(n):
            style, intensity = combos[order[c]]
            clip_id = f"id{ident:03d}_s{style}i{intensity}_c{c:03d}"
            seed = int(np.random.SeedSequence([cfg.seed, 4, ident, c]).generate_state(1)[0])
            plan.append({"clip_id": clip_id, "identity": ident, "style": style, "intensity": intensity,
                         "clip_seed": seed})
            splits[role.get(c, "train") if seen else "test_unseen"].append(clip_id)
    return plan, {k: v for k, v in splits.items() if v}


def default_root(cfg: SynthConfig) -> Path:
    """Cache directory of the corpus for this config: ``$ZOO_DATA_DIR/synth-<config hash>`` (default ./data)."""
    from zoo.data import data_dir

    return data_dir() / f"{DATASET_NAME}-{config_hash(cfg)}"


def _existing_version(root: Path) -> str | None:
    """Version of a complete dataset at root (None if there is none); refuses to touch non-synth datasets."""
    path = root / "dataset.json"
    if not path.is_file():
        return None
    try:
        header = json.loads(path.read_text())
    except (OSError, ValueError):
        header = {}
    if not isinstance(header, dict):   # valid JSON but not a dataset header: refuse it like any other dataset
        header = {}
    if header.get("name") != DATASET_NAME:
        raise DataError(f"{root} holds another dataset ({header.get('name')!r}); refusing to overwrite it with the "
                        f"synthetic corpus")
    return str(header.get("version"))


def _clip_done(root: Path, clip_id: str, version: str) -> bool:
    """A clip left by an interrupted build of the same corpus (clip directories are written atomically)."""
    path = root / "clips" / clip_id / "clip.json"
    try:
        return json.loads(path.read_text())["meta"]["corpus_version"] == version
    except (OSError, ValueError, KeyError, TypeError):
        return False


def build_corpus(cfg: SynthConfig, root: str | Path, *, progress: bool = True) -> Path:
    """Generate the corpus and write it to `root` through zoo.data.clip_format; returns root.

    Atomic in the clip-format sense: ``dataset.json`` is written last, so a partial build never looks complete.
    A complete corpus of the same version is reused as is; an interrupted build of the same version resumes
    (finished clips are kept); a synthetic corpus of another version at `root` is replaced.
    """
    from zoo.data.clip_writer import write_clip, write_dataset

    cfg = coerce(cfg)
    validate(cfg)
    root = Path(root)
    try:    # before the first clip is generated, not after
        root.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DataError(f"cannot create the corpus directory {root}: {error.strerror or error}") from None
    if not os.access(root, os.W_OK):
        raise DataError(f"cannot write the corpus directory {root}: permission denied")
    version = config_hash(cfg)
    existing = _existing_version(root)
    if existing == version:
        return root
    if existing is not None:  # another synthetic corpus: invalidate first, then rebuild in place
        (root / "dataset.json").unlink()
        shutil.rmtree(root / "clips", ignore_errors=True)
    plan, splits = clip_plan(cfg)
    n_frames = num_frames(cfg)
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(plan) * n_frames, unit="frame", unit_scale=True, desc=f"synth corpus {version}")
    try:
        for item in plan:
            if not _clip_done(root, item["clip_id"], version):
                clip = generate_clip(cfg, item["identity"], item["style"], item["intensity"], item["clip_seed"])
                write_clip(root, item["clip_id"], frames=clip["frames"], audio=clip["audio"],
                           sample_rate=cfg.sample_rate, fps=cfg.fps, tracks={k: clip[k] for k in TRACKS},
                           meta=clip["meta"])
            if bar is not None:
                bar.update(n_frames)
    finally:
        if bar is not None:
            bar.close()
    info = {
        "generator": "zoo.synth", "generator_version": GENERATOR_VERSION, "config": as_dict(cfg),
        "config_hash": version,
        "identities": {"seen": list(range(cfg.identities)),
                       "unseen": list(range(cfg.identities, cfg.identities + cfg.unseen_identities))},
        "styles": [get_style(s).name for s in range(cfg.styles)],
        "intensity_levels": [intensity_level(i, cfg.intensities) for i in range(cfg.intensities)],
        "expression": {"mouth_dims": list(E.MOUTH_DIMS), "names": list(E.EXPRESSION_NAMES)},
        "phonemes": list(PHONEMES),
        "conventions": {
            "landmarks": "iBUG-68; landmarks3d in object space (metres, x right, y down, z away from camera)",
            "pose": "rx, ry, rz radians (R = Rz @ Ry @ Rx; rx > 0 = chin down) + camera-space translation of the "
                    "head pivot (metres); posed = R @ landmarks3d + t; landmarks2d = (K @ posed)[:2] / z",
            "shoulders3d": "camera space (metres); a billboard following 50% of the head translation",
            "pixels": "x right, y down, centre of the top-left pixel at (0, 0)",
        },
    }
    write_dataset(root, name=DATASET_NAME, version=version, fps=cfg.fps, sample_rate=cfg.sample_rate,
                  frame_size=cfg.size, splits=splits, info=info)
    return root
