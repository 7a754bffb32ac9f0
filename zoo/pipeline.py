"""Multi-stage models: ``zoo fit --model NAME`` trains each stage as its own run, in order, then assembles them.

A model class opts in with a ``stages`` attribute (``(key, registered stage model)`` pairs, in training order)
and two class methods (and optionally ``check_frame_size(cfg, frame_size)``, run before the first stage trains):
``stage_model_config(cfg, key, checkpoints)`` (the stage's model config, given the
checkpoints of the stages before it) and ``assemble(cfg, checkpoints, datamodule)`` (the inference model).

Layout of a staged run ``<runs_dir>/<model>/<name>/``: ``<key>/`` is each stage's ordinary run directory (its
config, checkpoints, logs and media; ``stage.json`` marks it finished), ``checkpoints/last.ckpt`` the assembled
model. A finished stage is skipped when the run is started again (``--force`` retrains every stage); an
interrupted one resumes from its ``last.ckpt``. Overrides apply to every stage (``trainer.*``, ``data.*``, ...),
to the assembled model's config (``model.*``, which includes each stage's section, e.g. ``model.mouth.lr=...``),
or to one stage only when prefixed with its key (``renderer.trainer.max_epochs=2``).
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from omegaconf import OmegaConf

from zoo.config import compose, save_config, to_dataclass
from zoo.errors import ConfigError, DataError
from zoo.io.atomic import write_json
from zoo.registry import get_entry

DONE_FILE = "stage.json"


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


def finished_checkpoint(done: Path, key: str) -> Path:
    """The checkpoint a finished stage's marker names; one line naming the marker when it cannot be used."""
    try:
        checkpoint = Path(json.loads(done.read_text())["checkpoint"])
    except (ValueError, KeyError, TypeError):
        raise DataError(f"{done}: unreadable marker of the finished stage {key} (--force retrains it)") from None
    if not checkpoint.is_file():
        raise DataError(f"{done}: the finished stage's checkpoint {checkpoint} is missing (--force retrains {key})")
    return checkpoint


def fit_staged(run, data: str | None, config_file: str | None, overrides: list[str], force: bool = False) -> dict:
    """Train every stage of ``run``'s model that is not finished, then assemble and save the model."""
    from zoo.harness import (Run, add_model_fields, best_checkpoint, build_datamodule, configured_frame_size, execute,
                             is_rank_zero_process)

    entry = get_entry(run.cfg.run.model)
    model_class = entry.model_class
    model_cfg = to_dataclass(run.cfg.model, entry.config)
    keys = [key for key, _ in model_class.stages]
    shared, own = route_overrides(list(overrides), keys)
    frame_size = configured_frame_size(run.cfg)
    if hasattr(model_class, "check_frame_size") and frame_size is not None:   # not after the stages before it
        model_class.check_frame_size(model_cfg, frame_size)
    checkpoints: dict[str, Path] = {}
    timings: dict[str, float] = {}
    for key, stage_model in model_class.stages:
        stage_dir = run.run_dir / key
        done = stage_dir / DONE_FILE
        # Under DDP every rank decides from `force`, not from files rank 0 may not have deleted yet
        if force and stage_dir.exists() and is_rank_zero_process():
            shutil.rmtree(stage_dir)
        if not force and done.is_file():
            checkpoints[key] = finished_checkpoint(done, key)
            print(f"stage {key} ({stage_model}): finished earlier, {checkpoints[key]} (--force retrains)")
            continue
        stage_cfg = model_class.stage_model_config(model_cfg, key, checkpoints)
        cfg = compose(stage_model, data, config_file, shared + own[key])
        cfg.model = OmegaConf.merge(cfg.model, OmegaConf.structured(stage_cfg))
        cfg.run.name = f"{run.run_dir.name}-{key}"
        get_entry(stage_model).model_class.configure_data(cfg.data, cfg.model)
        add_model_fields(cfg)
        last = stage_dir / "checkpoints" / "last.ckpt"
        resume = not force and last.is_file()
        started = time.time()
        print(f"stage {key} ({stage_model}): {'resuming' if resume else 'training'} in {stage_dir}")
        execute(Run("fit", cfg, stage_dir, str(last) if resume else None))
        checkpoints[key] = best_checkpoint(stage_dir)
        if checkpoints[key] is None:
            raise ConfigError(f"stage {key}: its run {stage_dir} finished without a checkpoint (did it train? see "
                              f"{key}.trainer.max_epochs / max_steps)")
        timings[key] = time.time() - started
        if is_rank_zero_process():
            write_json(done, {"model": stage_model, "checkpoint": str(checkpoints[key]),
                              "seconds": round(timings[key], 1)})
    if not is_rank_zero_process():
        return {}
    datamodule = build_datamodule(run.cfg)
    model = model_class.assemble(model_cfg, checkpoints, datamodule)
    run.cfg.model = OmegaConf.structured(model_cfg)
    save_config(run.cfg, run.run_dir / "config.yaml")
    target = run.run_dir / "checkpoints" / "last.ckpt"
    model.save(target)
    print(f"assembled {run.cfg.run.model}: {target}")
    return {f"time/{key}": seconds for key, seconds in timings.items()}


__all__ = ["fit_staged", "is_staged", "route_overrides", "split_stage_overrides", "DONE_FILE"]
