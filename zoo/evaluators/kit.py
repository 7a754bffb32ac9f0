"""The synthetic-domain evaluator kit: a landmark detector, an identity embedder and a SyncNet trained on a
synthetic corpus, saved as one versioned bundle and used by the metric suite whenever ``data=synth``.

Bundle layout (``<kit_dir>/<corpus name>-<corpus version>-v<KIT_VERSION>/``)::

    kit.json                 kit version, corpus name/version, per model: config, file, sha256, training time,
                             quality on the corpus' test split; written last (atomically)
    <model>.pt               the trained module's state dict (loaded with weights_only=True, hash-checked)

:func:`ensure_kit` trains the missing bundle through the ordinary harness (``zoo fit --model <name>`` with the
recipe in ``configs/model/<name>.yaml``), so ``zoo test`` on the synthetic corpus trains it on first use, like the
corpus itself. Each network is an ordinary registered model and can be trained by hand the same way.

The landmark detector and the identity embedder learn from the evaluated corpus' train split. The SyncNet learns
from speakers of its own (:func:`speakers_config`): a corpus generated like the evaluated one but with another seed,
so it has never seen a face it scores -- as the official SyncNet learnt from the BBC's speakers, not from the
videos it judges. Trained on the corpus' 6 identities it scored their held-out clips at LSE-C 5.85 but ground
truth of the unseen identities at 2.19 (LSE-D 13.8 against 5.8): its lip embeddings did not carry to new faces.
The speakers corpus is deleted once the SyncNet is trained (it is regenerated from its config when needed).
"""
from __future__ import annotations

import hashlib
import shutil
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from zoo.bounds import require_in_bounds
from zoo.data import data_dir
from zoo.data.clip_format import open_dataset
from zoo.errors import ConfigError, DataError
from zoo.io.atomic import atomic_path, read_json_object, write_json
from zoo.metrics.suite import Backbones, lpips_if_available
from zoo.registry import create_model, get_entry
from zoo.synth import SynthConfig, build_corpus, config_hash
from zoo.synth.config import as_dict, coerce
from zoo.weights import load_checkpoint_state_dict, sha256_of

KIT_VERSION = 3
KIT_MODELS = ("landmark_detector", "identity_embedder", "syncnet")
NAMES = {"landmarks": "synth-landmarks", "identity": "synth-id", "fid": "synth-id", "sync": "synth-syncnet"}
# The SyncNet's speakers: many people, few clips each (3: one per split). On the default corpus, same recipe (760
# steps on 160 training clips), ground truth's LSE-C on the seen / unseen identities' test clips: 40 speakers x 6
# clips 5.32 / 4.52, 80 x 4 6.21 / 5.64, 160 x 3 6.93 / 6.68 (the corpus' own 6 identities, 96 clips: 5.85 / 2.19).
SPEAKERS = {"identities": 160, "clips_per_identity": 3}
SPEAKERS_PREFIX = "speakers."        # a kit override ``speakers.identities=N`` sizes them (quick kits)


def default_kit_dir() -> Path:
    return data_dir() / "evaluator-kit"


def kit_path(data_root: str | Path, kit_dir: Optional[str | Path] = None, overrides: Sequence[str] = ()) -> Path:
    """Where the kit for the corpus at ``data_root`` lives: keyed by the corpus version, and by the training
    overrides when there are any (a quick test kit must never pass for the real one)."""
    dataset = open_dataset(data_root)
    name = f"{dataset.name}-{dataset.version}-v{KIT_VERSION}"
    if overrides:
        name += "-" + hashlib.sha256("\n".join(overrides).encode()).hexdigest()[:8]
    return Path(kit_dir or default_kit_dir()) / name


def _quality(name: str, module, data_root: Path) -> dict:
    module_path = get_entry(name).module
    evaluate = getattr(__import__(module_path, fromlist=["evaluate_quality"]), "evaluate_quality")
    return evaluate(module, open_dataset(data_root), "test")


def split_overrides(overrides: Sequence[str]) -> tuple[dict, list[str]]:
    """Kit overrides -> (the speakers' settings, :data:`SPEAKERS` with ``speakers.<key>=N`` applied; the
    overrides every kit model trains with)."""
    speakers, training = dict(SPEAKERS), []
    for item in overrides:
        if not item.startswith(SPEAKERS_PREFIX):
            training.append(item)
            continue
        key, _, value = item[len(SPEAKERS_PREFIX):].partition("=")
        if key not in SPEAKERS or not value.strip().isdigit():
            raise ConfigError(f"eval.kit_overrides: '{item}': expected speakers.<key>=<count> with key one of "
                              f"{', '.join(SPEAKERS)}")
        speakers[key] = int(value)
    return speakers, training


def speakers_config(dataset, speakers: dict) -> SynthConfig:
    """The synthetic corpus the kit's SyncNet learns from: ``dataset``'s generator settings (frame size, fps, clip
    length, styles) with the next seed -- identities are drawn from the seed, so none is one the kit scores -- and
    ``speakers``' identity and clip counts, all of them training identities."""
    settings = dataset.info.get("config") if dataset.info.get("generator") == "zoo.synth" else None
    if not isinstance(settings, dict):
        raise DataError(f"evaluator kit: {dataset.root} is not a zoo.synth corpus (dataset.json info.generator); "
                        f"the kit's SyncNet learns from speakers generated like the evaluated corpus")
    cfg = coerce({**settings, "seed": int(settings["seed"]) + 1, "unseen_identities": 0,
                  "unseen_clips_per_identity": None, **speakers})
    # only the speakers' counts can be out of range: the rest made the evaluated corpus
    require_in_bounds(cfg, "eval.kit_overrides: speakers", SynthConfig)
    return cfg


def _train(name: str, data_root: Path, target: Path, overrides: Sequence[str], speakers: SynthConfig) -> dict:
    """Fit one kit model through the harness and store its weights in the bundle; returns its kit.json entry.
    ``overrides`` apply to every model, the ``speakers`` corpus is the SyncNet's training data."""
    from zoo.harness import execute, prepare

    started = time.time()
    corpus_specific, extra, train_root = [], {}, data_root
    if name == "identity_embedder":   # one CosFace class per training identity of this corpus
        dataset = open_dataset(data_root)
        labels = [dataset.clip(c).meta["identity"] for c in dataset.clip_ids("train")]
        corpus_specific.append(f"model.num_identities={max(labels) + 1}")
    if name == "syncnet":
        train_root = build_corpus(speakers, target / "speakers", progress=True)
        extra["speakers"] = {**as_dict(speakers), "config_hash": config_hash(speakers)}
    run = prepare("fit", name, data="folder", overrides=[
        f"data.root={train_root}", "logger=none", f"run.runs_dir={target / 'runs'}", "run.name=kit",
        *corpus_specific, *overrides], resume="auto")
    execute(run)
    ckpts = sorted((run.run_dir / "checkpoints").glob("best*.ckpt")) or [run.run_dir / "checkpoints" / "last.ckpt"]
    state = load_checkpoint_state_dict(ckpts[-1], f"the kit's {name} checkpoint {ckpts[-1]}")
    config = _plain(run.cfg.model)
    module = create_model(name, get_entry(name).config(**config))
    module.load_state_dict(state)
    module.eval()
    file = target / f"{name}.pt"
    with atomic_path(file) as tmp:
        torch.save(module.state_dict(), tmp)
    if train_root != data_root:
        shutil.rmtree(train_root)
    return {"config": config, "file": file.name, "sha256": sha256_of(file), **extra,
            "train_seconds": round(time.time() - started, 1), "quality": _quality(name, module, data_root)}


def _plain(config) -> dict:
    """A composed ``model`` config node as plain Python values (lists stay lists) for the config dataclass."""
    from omegaconf import OmegaConf

    return OmegaConf.to_container(config, resolve=True)


def ensure_kit(data_root: str | Path, kit_dir: Optional[str | Path] = None, overrides: Sequence[str] = ()) -> Path:
    """The kit bundle for the corpus at ``data_root``, training whatever is missing; returns its directory."""
    data_root = Path(data_root)
    target = kit_path(data_root, kit_dir, overrides)
    manifest = target / "kit.json"
    if manifest.is_file():
        return target
    dataset = open_dataset(data_root)
    speaker_counts, training_overrides = split_overrides(overrides)
    speakers = speakers_config(dataset, speaker_counts)     # checked before any model trains
    target.mkdir(parents=True, exist_ok=True)
    progress = target / "progress.json"     # finished models survive an interruption
    models = _read_record(progress) if progress.is_file() else {}
    for name in KIT_MODELS:
        if name not in models or not (target / models[name]["file"]).is_file():
            print(f"evaluator kit: training {name} on {dataset.name} {dataset.version}", flush=True)
            models[name] = _train(name, data_root, target, training_overrides, speakers)
            write_json(progress, models)
    payload = {"kit_version": KIT_VERSION, "corpus": {"name": dataset.name, "version": dataset.version},
               "overrides": list(overrides), "models": models}
    write_json(manifest, payload)
    return target


def _read_record(path: Path) -> dict:
    """A kit's JSON record (kit.json, progress.json); one line when it cannot be used."""
    return read_json_object(path, "; delete the kit directory to retrain it")


def load_kit_modules(path: str | Path) -> dict:
    """The kit's trained modules by name (hash-checked, ``weights_only`` loading)."""
    path = Path(path)
    manifest = path / "kit.json"
    if not manifest.is_file():
        raise DataError(f"no evaluator kit at {path} (kit.json missing); `zoo test` with data=synth trains it")
    info = _read_record(manifest)
    if info.get("kit_version") != KIT_VERSION:
        raise DataError(f"evaluator kit {path}: kit_version {info.get('kit_version')}, expected {KIT_VERSION}")
    modules = {}
    for name in KIT_MODELS:
        try:
            entry = info["models"][name]
            file, digest, config = path / entry["file"], entry["sha256"], get_entry(name).config(**entry["config"])
        except (KeyError, TypeError) as error:
            raise DataError(f"{manifest}: models.{name} is missing or malformed ({type(error).__name__}: {error}); "
                            f"delete the kit directory to retrain it") from None
        if not file.is_file() or sha256_of(file) != digest:
            raise DataError(f"evaluator kit {path}: {entry['file']} is missing or does not match its sha256 "
                            f"{digest}; delete the kit directory to retrain it")
        module = create_model(name, config)
        module.load_state_dict(torch.load(file, map_location="cpu", weights_only=True))
        modules[name] = module.eval().requires_grad_(False)
    return modules


def kit_backbones(path: str | Path, weights_dir: Optional[str] = None) -> Backbones:
    """:class:`~zoo.metrics.suite.Backbones` from a kit bundle (LPIPS still needs its torchvision trunk file)."""
    modules = load_kit_modules(path)
    landmarks, identity, sync = (modules[n] for n in KIT_MODELS)
    lpips, notes = lpips_if_available(weights_dir)
    return Backbones(
        landmarker=lambda images: np.asarray(landmarks.detect(images)),
        embedder=identity.embedder, fid_features=identity.feature_extractor,
        fid_num_features=identity.num_features, fid_input="aligned", syncnet=sync.network,
        names=dict(NAMES), lpips=lpips, notes=notes)
