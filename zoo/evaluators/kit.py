"""The synthetic-domain evaluator kit: a landmark detector, an identity embedder and a SyncNet trained on a
synthetic corpus, saved as one versioned bundle and used by the metric suite whenever ``data=synth``.

Bundle layout (``<kit_dir>/<corpus name>-<corpus version>-v<KIT_VERSION>/``)::

    kit.json                 kit version, corpus name/version, per model: config, file, sha256, training time,
                             quality on the corpus' test split; written last (atomically)
    <model>.pt               the trained module's state dict (loaded with weights_only=True, hash-checked)

:func:`ensure_kit` trains the missing bundle through the ordinary harness (``zoo fit --model <name>`` with the
recipe in ``configs/model/<name>.yaml``), so ``zoo test`` on the synthetic corpus trains it on first use, like the
corpus itself. Each network is an ordinary registered model and can be trained by hand the same way.
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from zoo.data import data_dir
from zoo.data.clip_format import open_dataset
from zoo.errors import DataError
from zoo.io.atomic import atomic_path, write_json
from zoo.metrics.suite import Backbones, lpips_if_available
from zoo.registry import create_model, get_entry
from zoo.weights import sha256_of

KIT_VERSION = 2
KIT_MODELS = ("landmark_detector", "identity_embedder", "syncnet")
NAMES = {"landmarks": "synth-landmarks", "identity": "synth-id", "fid": "synth-id", "sync": "synth-syncnet"}


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


def _train(name: str, data_root: Path, target: Path, overrides: Sequence[str]) -> dict:
    """Fit one kit model through the harness and store its weights in the bundle; returns its kit.json entry."""
    from zoo.harness import execute, prepare

    started = time.time()
    corpus_specific = []
    if name == "identity_embedder":   # one CosFace class per training identity of this corpus
        dataset = open_dataset(data_root)
        labels = [dataset.clip(c).meta["identity"] for c in dataset.clip_ids("train")]
        corpus_specific.append(f"model.num_identities={max(labels) + 1}")
    run = prepare("fit", name, data="folder", overrides=[
        f"data.root={data_root}", "logger=none", f"run.runs_dir={target / 'runs'}", "run.name=kit",
        *corpus_specific, *overrides], resume="auto")
    execute(run)
    ckpts = sorted((run.run_dir / "checkpoints").glob("best*.ckpt")) or [run.run_dir / "checkpoints" / "last.ckpt"]
    state = torch.load(ckpts[-1], map_location="cpu", weights_only=False)["state_dict"]
    config = _plain(run.cfg.model)
    module = create_model(name, get_entry(name).config(**config))
    module.load_state_dict(state)
    module.eval()
    file = target / f"{name}.pt"
    with atomic_path(file) as tmp:
        torch.save(module.state_dict(), tmp)
    return {"config": config, "file": file.name, "sha256": sha256_of(file),
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
    target.mkdir(parents=True, exist_ok=True)
    progress = target / "progress.json"     # finished models survive an interruption
    models = json.loads(progress.read_text()) if progress.is_file() else {}
    for name in KIT_MODELS:
        if name not in models or not (target / models[name]["file"]).is_file():
            print(f"evaluator kit: training {name} on {dataset.name} {dataset.version}", flush=True)
            models[name] = _train(name, data_root, target, overrides)
            write_json(progress, models)
    payload = {"kit_version": KIT_VERSION, "corpus": {"name": dataset.name, "version": dataset.version},
               "overrides": list(overrides), "models": models}
    write_json(manifest, payload)
    return target


def load_kit_modules(path: str | Path) -> dict:
    """The kit's trained modules by name (hash-checked, ``weights_only`` loading)."""
    path = Path(path)
    manifest = path / "kit.json"
    if not manifest.is_file():
        raise DataError(f"no evaluator kit at {path} (kit.json missing); `zoo test` with data=synth trains it")
    info = json.loads(manifest.read_text())
    if info.get("kit_version") != KIT_VERSION:
        raise DataError(f"evaluator kit {path}: kit_version {info.get('kit_version')}, expected {KIT_VERSION}")
    modules = {}
    for name in KIT_MODELS:
        entry = info["models"][name]
        file = path / entry["file"]
        if not file.is_file() or sha256_of(file) != entry["sha256"]:
            raise DataError(f"evaluator kit {path}: {entry['file']} is missing or does not match its sha256 "
                            f"{entry['sha256']}; delete the kit directory to retrain it")
        module = create_model(name, get_entry(name).config(**entry["config"]))
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
