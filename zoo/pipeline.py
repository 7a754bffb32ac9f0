"""Multi-stage models: ``zoo fit --model NAME`` trains each stage as its own run, in order, then assembles them.

A model class opts in with a ``stages`` attribute (``(key, registered stage model)`` pairs, in training order)
and two class methods (and optionally ``check_frame_size(cfg, frame_size)``, run before the first stage trains):
``stage_model_config(cfg, key, checkpoints)`` (the stage's model config, given the
checkpoints of the stages before it) and ``assemble(cfg, checkpoints, datamodule)`` (the inference model).

Layout of a staged run ``<runs_dir>/<model>/<name>/``: ``<key>/`` is each stage's ordinary run directory (its
config, checkpoints, logs and media; ``stage.json`` marks it finished), ``checkpoints/last.ckpt`` the assembled
model. A finished stage is skipped when the run is started again, provided it was trained with the settings of
now (its marker records the hash of its config and of the earlier stages' checkpoints it read; a finished stage
trained otherwise is refused, ``--force`` retrains every stage); an interrupted one resumes from its
``last.ckpt``. Overrides apply to every stage (``trainer.*``, ``data.*``, ...), to the assembled model's config
(``model.*``, which includes each stage's section, e.g. ``model.mouth.lr=...``), or to one stage only when
prefixed with its key (``renderer.trainer.max_epochs=2``). Every stage's config is composed and checked before
the first stage trains.
"""
from __future__ import annotations

import copy
import os
import shutil
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from zoo.config import compose, config_hash, save_config, to_dataclass
from zoo.errors import ConfigError, DataError
from zoo.io.atomic import read_json_object, write_json
from zoo.registry import get_entry

DONE_FILE = "stage.json"
# The config sections a stage's weights depend on (config_hash drops the keys among them that do not, run.name...)
TRAINING_SECTIONS = ("run", "model", "data", "trainer")


def is_staged(model_class: type) -> bool:
    return bool(getattr(model_class, "stages", None))


def _stage_of(item: str, keys) -> str | None:
    """The stage key of a stage-only override ``<key>.<setting>=...``, else None."""
    head = item.split("=", 1)[0]
    key = head.split(".", 1)[0]
    if key not in keys or "." not in head:
        return None
    if head.startswith(f"{key}.model."):   # a stage's model config is rebuilt from the staged model's: dropped
        setting = item[len(f"{key}.model."):]
        raise ConfigError(f"{item}: set a stage's model settings as model.{key}.{setting} (they belong to the "
                          f"assembled model's config)")
    return key


def route_overrides(overrides: list[str], keys: list[str]) -> tuple[list[str], dict[str, list[str]]]:
    """Split overrides into (every stage, {key: stage-only}); ``model.*`` ones belong to the staged model."""
    shared, own = [], {key: [] for key in keys}
    for item in overrides:
        key = _stage_of(item, own)
        if key is not None:
            own[key].append(item[len(key) + 1:])
        elif not item.startswith("model."):
            shared.append(item)
    return shared, own


def split_stage_overrides(model_class: type, overrides: list[str]) -> tuple[list[str], list[str]]:
    """(overrides the staged model's own config takes, stage-only ``<key>.*=...`` ones); ([...], []) otherwise."""
    keys = {key for key, _ in getattr(model_class, "stages", ())}
    own = [o for o in overrides if _stage_of(o, keys) is not None]
    return [o for o in overrides if o not in own], own


def stage_marker(done: Path) -> dict:
    """The record in a finished stage's ``stage.json``; one line naming the file when it is damaged."""
    return read_json_object(done, f" (the marker of finished stage {done.parent.name}; --force retrains the stages)")


def finished_checkpoint(done: Path, key: str, record: dict) -> Path:
    """The checkpoint a finished stage's marker ``record`` (read from ``done``) names, relative to the stage
    directory so that a run directory can be moved or copied; one line naming the marker when it cannot be used."""
    recorded = record.get("checkpoint")
    if not isinstance(recorded, str):
        raise DataError(f"{done}: the marker of finished stage {key} names no checkpoint (--force retrains it)")
    checkpoint = done.parent / recorded
    if not checkpoint.is_file():
        raise DataError(f"{done}: the finished stage's checkpoint {checkpoint} is missing (--force retrains {key})")
    return checkpoint


def _map_strings(node, fn):
    """``node`` (a plain config container) with ``fn`` applied to every string in it."""
    if isinstance(node, dict):
        return {k: _map_strings(v, fn) for k, v in node.items()}
    if isinstance(node, list):
        return [_map_strings(v, fn) for v in node]
    return fn(node) if isinstance(node, str) else node


def _uses(cfg: DictConfig, checkpoints: dict[str, Path]) -> list[str]:
    """The keys of the earlier stages whose checkpoint ``cfg`` reads (its path is a value of the config)."""
    seen: set[str] = set()
    _map_strings(OmegaConf.to_container(cfg, resolve=True), seen.add)
    return [key for key, path in checkpoints.items() if str(path) in seen]


def stage_hash(cfg: DictConfig, checkpoints: dict[str, Path]) -> str:
    """What a stage's weights depend on: the training sections of its composed config, with the path of every
    earlier stage's checkpoint it reads replaced by that file's SHA256 (a retrained APC changes the mouth stage's
    hash; a moved run directory does not), and the name and version of the dataset at ``data.root`` (a prepared
    dataset swapped for another changes it; the same one moved does not)."""
    from zoo.weights import sha256_of

    digests = {str(checkpoints[key]): f"sha256:{sha256_of(checkpoints[key])}" for key in _uses(cfg, checkpoints)}
    container = OmegaConf.to_container(cfg, resolve=True)
    trained = {section: container[section] for section in TRAINING_SECTIONS}
    dataset = ""
    if cfg.data.root:   # without a root, data=synth builds the corpus its data.synth.* settings (hashed) name
        header = read_json_object(Path(cfg.data.root) / "dataset.json", " (the dataset data.root names)")
        dataset = f"dataset:{header.get('name')}-{header.get('version')}"
    return config_hash(_map_strings(trained, lambda text: digests.get(text, text)), dataset)


def placeholders(model_class: type) -> dict[str, Path]:
    """Stand-ins for the stages' checkpoints, to compose every stage's config before any has trained."""
    return {key: Path(f"<checkpoint of stage {key}>") for key, _ in model_class.stages}


def compose_stage(cfg: DictConfig, key: str, sources: tuple, checkpoints: dict[str, Path]) -> DictConfig:
    """The run config of stage ``key`` of ``cfg``'s staged model, given the checkpoints of the stages before it
    (``sources``: the ``(data, config_file, overrides)`` the staged run was composed from)."""
    from zoo.harness import add_model_fields

    data, config_file, overrides = sources
    model_class = get_entry(cfg.run.model).model_class
    keys = [k for k, _ in model_class.stages]
    shared, own = route_overrides(list(overrides), keys)
    stage_model = dict(model_class.stages)[key]
    # on a copy: the assembled model's config takes the stage settings once every checkpoint is known
    model_cfg = to_dataclass(cfg.model, get_entry(cfg.run.model).config)
    stage_cfg = model_class.stage_model_config(copy.deepcopy(model_cfg), key, checkpoints)
    labels = {item: f"{key}.{item}" for item in own[key]}      # errors name the override as the user wrote it
    stage = compose(stage_model, data, config_file, shared + own[key], labels=labels)
    stage.model = OmegaConf.merge(stage.model, OmegaConf.structured(stage_cfg))
    get_entry(stage_model).model_class.configure_data(stage.data, stage.model)
    add_model_fields(stage)
    return stage


def check_stages(cfg: DictConfig, sources: tuple) -> dict[str, DictConfig]:
    """Every stage's config, composed (with stand-in checkpoints) and checked before any stage trains: a bad
    stage-only override or a trainer setting a stage cannot take is one line now, not after the stages before it
    trained. Returns {key: config}."""
    from zoo.harness import configured_frame_size, refuse_manual_optimisation_settings

    model_class = get_entry(cfg.run.model).model_class
    frame_size = configured_frame_size(cfg)
    if hasattr(model_class, "check_frame_size") and frame_size is not None:   # not after the stages before it
        model_class.check_frame_size(to_dataclass(cfg.model, get_entry(cfg.run.model).config), frame_size)
    configs = {}
    for key, stage_model in model_class.stages:
        configs[key] = compose_stage(cfg, key, sources, placeholders(model_class))
        refuse_manual_optimisation_settings(configs[key], f"stage {key} ({stage_model})")
    return configs


def _reused_stages(run, configs: dict[str, DictConfig]) -> dict[str, Path]:
    """The finished stages' checkpoints, each checked to be what the current config would train: a stage that
    finished under other settings, or that read the checkpoint of an earlier stage that trains again now, is
    refused (retraining it silently would throw away a finished stage the user may want back)."""
    model_class = get_entry(run.cfg.run.model).model_class
    stand_ins = placeholders(model_class)
    checkpoints: dict[str, Path] = {}
    for key, stage_model in model_class.stages:
        done = run.run_dir / key / DONE_FILE
        if not done.is_file():
            continue
        retraining = [k for k in _uses(configs[key], stand_ins) if k not in checkpoints]
        if retraining:
            raise ConfigError(f"stage {key} finished earlier ({done}) with the checkpoint of stage {retraining[0]}, "
                              f"which is not finished and trains again now; refused rather than retraining {key} "
                              f"(nothing is lost): --force retrains every stage")
        record = stage_marker(done)
        checkpoint = finished_checkpoint(done, key, record)
        recorded = record.get("config_hash")
        current = stage_hash(compose_stage(run.cfg, key, run.sources, {**stand_ins, **checkpoints}), checkpoints)
        if recorded != current:
            why = ("its marker records no config hash (an older zoo's)" if recorded is None else
                   f"it was trained with other settings (model.{key}.*, data.*, trainer.*, {key}.* overrides) or "
                   f"with another checkpoint of an earlier stage")
            raise ConfigError(f"stage {key} finished earlier ({done}) but {why}; refused rather than retrained "
                              f"(nothing is lost): --force retrains every stage, or rerun with the settings it "
                              f"was trained with ({done.parent / 'config.yaml'})")
        checkpoints[key] = checkpoint
    return checkpoints


def fit_staged(run, data: str | None, config_file: str | None, overrides: list[str], force: bool = False) -> dict:
    """Train every stage of ``run``'s model that is not finished, then assemble and save the model."""
    from zoo.harness import Run, best_checkpoint, build_datamodule, execute, is_rank_zero_process

    entry = get_entry(run.cfg.run.model)
    model_class = entry.model_class
    run.sources = (data, config_file, tuple(overrides))
    configs = check_stages(run.cfg, run.sources)
    if force and is_rank_zero_process():
        # every stage at once, before the first trains: an interrupted --force must not leave later stages marked
        # finished with the weights of before. Under DDP every rank decides from `force`, not from these files.
        for key in configs:
            shutil.rmtree(run.run_dir / key, ignore_errors=True)
    checkpoints = {} if force else _reused_stages(run, configs)
    timings: dict[str, float] = {}
    for key, stage_model in model_class.stages:
        stage_dir = run.run_dir / key
        if key in checkpoints:
            print(f"stage {key} ({stage_model}): finished earlier, {checkpoints[key]} (--force retrains)")
            continue
        cfg = compose_stage(run.cfg, key, run.sources, checkpoints)
        cfg.run.name = f"{run.run_dir.name}-{key}"
        last = stage_dir / "checkpoints" / "last.ckpt"
        resume = not force and last.is_file()
        started = time.time()
        print(f"stage {key} ({stage_model}): {'resuming' if resume else 'training'} in {stage_dir}")
        execute(Run("fit", cfg, stage_dir, str(last) if resume else None))
        checkpoint = best_checkpoint(stage_dir)
        if checkpoint is None:
            raise ConfigError(f"stage {key}: its run {stage_dir} finished without a checkpoint (did it train? see "
                              f"{key}.trainer.max_epochs / max_steps)")
        timings[key] = time.time() - started
        if is_rank_zero_process():
            write_json(stage_dir / DONE_FILE, {
                "model": stage_model, "checkpoint": os.path.relpath(checkpoint, stage_dir),
                "seconds": round(timings[key], 1), "config_hash": stage_hash(cfg, checkpoints)})
        checkpoints[key] = checkpoint
    if not is_rank_zero_process():
        return {}
    model_cfg = to_dataclass(run.cfg.model, entry.config)
    for key, _ in model_class.stages:   # the same record whether a stage trained now or earlier (apc_ckpt, sizes)
        model_class.stage_model_config(model_cfg, key, checkpoints)
    model = model_class.assemble(model_cfg, checkpoints, build_datamodule(run.cfg))
    run.cfg.model = OmegaConf.structured(model_cfg)
    save_config(run.cfg, run.run_dir / "config.yaml")
    target = run.run_dir / "checkpoints" / "last.ckpt"
    model.save(target)
    print(f"assembled {run.cfg.run.model}: {target}")
    return {f"time/{key}": seconds for key, seconds in timings.items()}


__all__ = ["fit_staged", "is_staged", "route_overrides", "split_stage_overrides", "check_stages", "compose_stage",
           "stage_hash", "stage_marker", "DONE_FILE"]
