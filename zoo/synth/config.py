"""Configuration of the synthetic corpus and its version hash."""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import ClassVar, Optional

from zoo.bounds import require_in_bounds
from zoo.errors import ConfigError

# Bump whenever generated content changes for the same config: it is part of the corpus hash, so cached
# corpora built by older code are rebuilt instead of silently reused.
GENERATOR_VERSION = "2"   # 2: frames drawn supersampled, outlines through their landmarks


@dataclass
class SynthConfig:
    """Everything that determines the synthetic corpus (same config -> identical bytes on disk).

    OmegaConf structured-config compatible: only plain scalar / Optional fields.
    """

    seed: int = 0
    identities: int = 6                # seen identities: their clips are split into train / val / test
    unseen_identities: int = 2         # held-out identities: all their clips form the test_unseen split
    styles: int = 6                    # speaking styles (6 designed ones, more are generated procedurally)
    intensities: int = 3               # intensity levels per style
    clips_per_identity: int = 24       # clips per seen identity
    unseen_clips_per_identity: Optional[int] = None  # None -> half of clips_per_identity (at least 1)
    seconds: float = 8.0               # clip length
    fps: float = 25.0
    size: int = 128                    # square frame size in pixels (64..512)
    sample_rate: int = 16000
    val_fraction: float = 0.15         # per seen identity, at least one clip each for val and test
    test_fraction: float = 0.15

    bounds: ClassVar[dict[str, str]] = {
        "seed": "[0, inf)", "identities": "[1, inf)", "unseen_identities": "[0, inf)", "styles": "[1, 64]", "intensities": "[1, 10]",
        "clips_per_identity": "[3, inf)",            # one clip each for train / val / test
        "unseen_clips_per_identity": "[1, inf)", "seconds": "[1, 120]", "fps": "[5, 120]", "size": "[64, 512]",
        "sample_rate": "[8000, 48000]", "val_fraction": "[0, 0.5)", "test_fraction": "[0, 0.5)"}


def num_frames(cfg: SynthConfig) -> int:
    """Frames per clip."""
    return int(round(cfg.seconds * cfg.fps))


def num_samples(cfg: SynthConfig) -> int:
    """Audio samples per clip: exactly round(T * sample_rate / fps)."""
    return int(round(num_frames(cfg) * cfg.sample_rate / cfg.fps))


def unseen_clips(cfg: SynthConfig) -> int:
    if cfg.unseen_clips_per_identity is not None:
        return int(cfg.unseen_clips_per_identity)
    return max(1, cfg.clips_per_identity // 2)


def held_out_clips(cfg: SynthConfig) -> tuple[int, int]:
    """(test, val) clips of each seen identity: the fractions of ``clips_per_identity``, at least one each."""
    n = cfg.clips_per_identity
    return max(1, int(round(cfg.test_fraction * n))), max(1, int(round(cfg.val_fraction * n)))


def validate(cfg: SynthConfig) -> None:
    """Raise ConfigError naming the first field outside its range (``SynthConfig.bounds``), or the fractions that
    would leave a seen identity without a training clip."""
    require_in_bounds(cfg, "synth", SynthConfig)
    n_test, n_val = held_out_clips(cfg)
    if n_test + n_val >= cfg.clips_per_identity:
        raise ConfigError(f"synth.val_fraction {cfg.val_fraction:g} and synth.test_fraction {cfg.test_fraction:g} "
                          f"hold out {n_val} + {n_test} of synth.clips_per_identity {cfg.clips_per_identity}: no "
                          f"training clip is left")


def as_dict(cfg: SynthConfig) -> dict:
    """Plain dict of the config (works for OmegaConf DictConfig views of a SynthConfig too)."""
    if dataclasses.is_dataclass(cfg):
        return dataclasses.asdict(cfg)
    return {f.name: getattr(cfg, f.name) for f in dataclasses.fields(SynthConfig)}


def coerce(cfg) -> SynthConfig:
    """A real SynthConfig from a SynthConfig, an OmegaConf node or a dict, with numeric types normalised."""
    src = cfg if isinstance(cfg, dict) else as_dict(cfg)
    unknown = set(src) - {f.name for f in dataclasses.fields(SynthConfig)}
    if unknown:
        raise ConfigError(f"unknown synth config key(s): {', '.join(sorted(unknown))}")
    out = SynthConfig(**src)
    for f in dataclasses.fields(SynthConfig):
        value = getattr(out, f.name)
        if value is not None and f.type in ("int", "float", "Optional[int]"):
            if f.type != "float" and value != int(value):
                raise ConfigError(f"synth.{f.name} must be an integer, got {value!r}")
            setattr(out, f.name, float(value) if f.type == "float" else int(value))
    return out


def config_hash(cfg: SynthConfig) -> str:
    """12 hex chars identifying the corpus a config produces (stable across runs and machines)."""
    payload = {"generator_version": GENERATOR_VERSION, **as_dict(coerce(cfg))}
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]
