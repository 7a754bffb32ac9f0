"""Typed, composed run configuration (OmegaConf structured configs + YAML groups in ``configs/``).

Composition order (later wins):

1. the schema defaults below (and the model's registered config dataclass),
2. ``configs/base.yaml``,
3. ``configs/data/<data>.yaml``            (``--data NAME``, default ``synth``),
4. ``configs/model/<model>.yaml``          (``--model NAME``; may also set ``data.*`` the model needs),
   then, for ``validate``/``test``/``predict`` from a checkpoint, the ``model.*`` settings it was trained with,
5. ``configs/trainer/<trainer>.yaml``      (``trainer=NAME``, default ``default``),
6. ``configs/logger/<logger>.yaml``        (``logger=NAME``, default ``wandb``),
7. ``configs/experiment/<experiment>.yaml`` (``experiment=NAME``, optional),
8. ``--config FILE``,
9. ``key=value`` overrides (dotted keys, e.g. ``trainer.max_epochs=3 data.batch_size=4``).

Every layer is merged into the typed schema, so an unknown key or a wrong type fails at once with one line naming
the key, the file it came from and the valid choices.
"""
from __future__ import annotations

import hashlib
import json
import os
import typing
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, ClassVar, List, Optional

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from zoo.data.datamodule import DataConfig
from zoo.bounds import require_in_bounds
from zoo.errors import ConfigError
from zoo.io.atomic import atomic_path
from zoo.registry import get_entry
from zoo.synth import SynthConfig

GROUPS = ("data", "trainer", "logger", "experiment")


@dataclass
class RunConfig:
    """Where a run lives and how it is seeded. ``runs_dir/<model>/<name>/`` holds config, checkpoints, logs, media."""

    model: str = "static"
    name: Optional[str] = None          # default: a timestamp
    runs_dir: str = "runs"
    seed: int = 0
    deterministic: bool = False         # torch.use_deterministic_algorithms + cudnn.deterministic
    save_videos: int = 4                # mp4s written per evaluation stage (-1: every clip)
    monitor: Optional[str] = None       # metric for the "best" checkpoint; default: the model's own
    monitor_mode: str = "min"

    bounds: ClassVar[dict[str, str]] = {"save_videos": "[-1, inf)"}


@dataclass
class TrainerConfig:
    """Arguments of ``lightning.Trainer`` the zoo exposes (see ``configs/trainer/*.yaml``)."""

    accelerator: str = "auto"
    devices: int = 1                    # -1: all visible devices
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "32"               # 32 | bf16-mixed | 16-mixed
    max_epochs: int = 10
    max_steps: int = -1
    max_time: Optional[str] = None      # "DD:HH:MM:SS"
    gradient_clip_val: Optional[float] = None
    gradient_clip_algorithm: str = "norm"
    accumulate_grad_batches: int = 1
    # Lightning reads an int as a number of batches and a float as a fraction (1 is one batch, 1.0 all of them):
    # typed Any so that the int stays an int (a float field would turn 1 into 1.0); checked by _check_limits
    limit_train_batches: Any = None
    limit_val_batches: Any = None
    limit_test_batches: Any = None
    limit_predict_batches: Any = None
    check_val_every_n_epoch: int = 1
    log_every_n_steps: int = 10
    num_sanity_val_steps: int = 2
    fast_dev_run: bool = False
    sync_batchnorm: bool = False
    progress_bar: str = "rich"          # rich | tqdm | none
    use_slurm_requeue: bool = False     # SLURMEnvironment(auto_requeue=True)

    bounds: ClassVar[dict[str, str]] = {
        "num_nodes": "[1, inf)", "max_epochs": "[-1, inf)", "max_steps": "[-1, inf)", "gradient_clip_val": "[0, inf)",
        "accumulate_grad_batches": "[1, inf)", "check_val_every_n_epoch": "[1, inf)",
        "log_every_n_steps": "[1, inf)", "num_sanity_val_steps": "[-1, inf)"}


@dataclass
class LoggerConfig:
    """Experiment tracking. ``wandb`` runs online when credentials exist, offline otherwise."""

    name: str = "wandb"                 # wandb | csv | none
    project: str = "zoo"
    entity: Optional[str] = None
    group: Optional[str] = None
    tags: List[str] = field(default_factory=list)
    mode: str = "auto"                  # auto | online | offline
    log_videos: bool = True
    num_videos: int = 2                 # validation sample videos per epoch
    video_every_n_epochs: int = 1       # videos every n-th validation epoch (and the last)

    bounds: ClassVar[dict[str, str]] = {"num_videos": "[0, inf)", "video_every_n_epochs": "[1, inf)"}


@dataclass
class EvalConfig:
    """The metric suite ``validate``/``test`` run (see :mod:`zoo.metrics.suite`)."""

    metrics: List[str] = field(default_factory=lambda: ["lmd", "ssim", "psnr", "cpbd", "csim", "fid", "sync",
                                                        "lpips"])
    backbones: str = "auto"             # auto (synth-kit for data=synth, official otherwise) | official | synth-kit
    weights_dir: Optional[str] = None   # official weight files (default $ZOO_WEIGHTS_DIR or torch hub's)
    kit_dir: Optional[str] = None       # synthetic evaluator kits (default $ZOO_DATA_DIR/evaluator-kit)
    # extra key=value for training the kit (quick runs); speakers.identities / speakers.clips_per_identity size the
    # SyncNet's synthetic speakers (zoo.evaluators.kit.SPEAKERS)
    kit_overrides: List[str] = field(default_factory=list)


@dataclass
class DataSection(DataConfig):
    """The datamodule config plus the synthetic corpus' generator config (used when ``name=synth``)."""

    synth: SynthConfig = field(default_factory=SynthConfig)


def config_dir() -> Path:
    """The ``configs/`` directory (``$ZOO_CONFIG_DIR`` overrides the repository's)."""
    return Path(os.environ.get("ZOO_CONFIG_DIR", Path(__file__).resolve().parents[1] / "configs"))


def group_choices(group: str) -> list[str]:
    directory = config_dir() / group
    return sorted(p.stem for p in directory.glob("*.yaml")) if directory.is_dir() else []


def schema_for(model: str) -> DictConfig:
    """The typed, all-defaults config of ``model`` (its registered dataclass under ``model``)."""
    entry = get_entry(model)

    @dataclass
    class ZooConfig:
        run: RunConfig = field(default_factory=RunConfig)
        trainer: TrainerConfig = field(default_factory=TrainerConfig)
        logger: LoggerConfig = field(default_factory=LoggerConfig)
        data: DataSection = field(default_factory=DataSection)
        eval: EvalConfig = field(default_factory=EvalConfig)
        model: Any = field(default_factory=entry.config)

    schema = OmegaConf.structured(ZooConfig)
    schema.run.model = model
    return schema


def _valid_keys(schema: DictConfig, dotted: str) -> str:
    """Comma-separated valid keys at the parent level of ``dotted`` (for error messages)."""
    parent = dotted.rsplit(".", 1)[0] if "." in dotted else ""
    node = OmegaConf.select(schema, parent) if parent else schema
    if isinstance(node, DictConfig):
        return ", ".join(str(k) for k in node.keys())
    return ""


def merge_layer(cfg: DictConfig, layer: Any, source: str) -> DictConfig:
    try:
        return OmegaConf.merge(cfg, layer)
    except ConfigKeyError as err:
        key = err.full_key or str(err.key)
        valid = _valid_keys(cfg, key)
        raise ConfigError(f"unknown key '{key}' in {source}; valid keys here: {valid}") from None
    except ValidationError as err:
        key = err.full_key or (str(err.key) if err.key is not None else "")
        if not key:   # a value for a whole section (data.synth=3): OmegaConf names no key
            key = _mismatched_container(cfg, layer)
            raise ConfigError(f"wrong type for '{key}' in {source}: {str(err).splitlines()[0]}") from None
        node = OmegaConf.select(cfg, key, throw_on_missing=False)
        expected = type(node).__name__ if node is not None else "the schema's type"
        raise ConfigError(f"wrong type for '{key}' in {source}: got {err.value!r}, expected {expected}") from None
    except TypeError as err:   # OmegaConf's "Cannot merge incompatible container types" names no key
        key = _mismatched_container(cfg, layer)
        raise ConfigError(f"wrong type for '{key}' in {source}: {err}") from None
    except OmegaConfBaseException as err:
        raise ConfigError(f"invalid config in {source}: {str(err).splitlines()[0]}") from None


def _mismatched_container(cfg: DictConfig, layer: Any) -> str:
    """The dotted key where ``layer`` gives something else than ``cfg``'s section or list (a value, a list for a
    section, a mapping for a list); ``?`` if there is none."""
    def walk(ours: Any, theirs: Any, prefix: str) -> Optional[str]:
        for key in theirs.keys():
            mine, given = ours._get_node(key), theirs._get_node(key)
            dotted = f"{prefix}.{key}" if prefix else str(key)
            if isinstance(mine, DictConfig) and isinstance(given, DictConfig):
                found = walk(mine, given, dotted)
                if found:
                    return found
            elif isinstance(mine, (DictConfig, ListConfig)) and type(given) is not type(mine):
                return dotted
        return None

    theirs = layer if isinstance(layer, DictConfig) else OmegaConf.create(layer)
    return walk(cfg, theirs, "") or "?"


def _split_override(item: str) -> tuple[str, str]:
    if "=" not in item:
        raise ConfigError(f"override '{item}' is not of the form key=value")
    key, value = item.split("=", 1)
    return key, value


def merge_overrides(cfg: DictConfig, overrides: list[str], labels: Optional[dict[str, str]] = None) -> DictConfig:
    """Merge ``dotted.key=value`` overrides one at a time, so an error names the override it comes from (as
    ``labels`` spells it, when given: the user's text of an override that was rewritten before it got here)."""
    for item in overrides:
        _split_override(item)
        source = f"override '{(labels or {}).get(item, item)}'"
        try:
            layer = OmegaConf.from_dotlist([item])
        except Exception as err:  # OmegaConf's grammar errors and yaml.YAMLError alike: one line
            raise ConfigError(f"cannot parse {source}: {str(err).splitlines()[0]}") from None
        cfg = merge_layer(cfg, layer, source)
    return cfg


def check_interpolations(cfg: DictConfig) -> None:
    """Fail now, in one line, on a ``${...}`` that resolves to nothing, rather than where the value is first read."""
    try:
        OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as err:
        raise ConfigError(f"cannot resolve '{err.full_key}': {str(err).splitlines()[0]}") from None


def _load_yaml(path: Path, what: str) -> DictConfig:
    if not path.is_file():
        raise ConfigError(f"{what} not found: {path}")
    try:
        loaded = OmegaConf.load(path)
    except Exception as err:  # yaml.YAMLError and friends: report the file, one line
        raise ConfigError(f"cannot parse {path}: {str(err).splitlines()[0]}") from None
    if not isinstance(loaded, DictConfig):
        raise ConfigError(f"{path} must hold a mapping at the top level")
    return loaded


def _group_file(group: str, choice: str) -> Path:
    path = config_dir() / group / f"{choice}.yaml"
    if not path.is_file():
        raise ConfigError(f"unknown {group} '{choice}'; valid {group} choices: {', '.join(group_choices(group))}")
    return path


def _parse_overrides(overrides: list[str]) -> tuple[dict[str, str], list[str]]:
    """Split ``group=choice`` selections (data, trainer, logger, experiment) from ``dotted.key=value`` overrides."""
    selections, dotted = {}, []
    for item in overrides:
        key, value = _split_override(item)
        if key in GROUPS:
            selections[key] = value
        else:
            dotted.append(item)
    return selections, dotted


def compose(model: str, data: Optional[str] = None, config_file: Optional[str] = None,
            overrides: Optional[list[str]] = None, trained: Optional[tuple[str, dict]] = None,
            labels: Optional[dict[str, str]] = None) -> DictConfig:
    """Compose the typed run config in the documented order; raises :class:`ConfigError` on any bad input.

    ``trained`` is ``(checkpoint path, its hyper-parameters)``: the model settings a checkpoint was trained with
    take the place of the model's defaults, and an experiment, ``--config`` file or override still wins over them.
    ``labels`` names overrides in errors as the user wrote them (see :func:`merge_overrides`).
    """
    selections, dotted = _parse_overrides(list(overrides or []))
    if data is not None:
        if selections.get("data", data) != data:
            raise ConfigError(f"--data {data} and the override data={selections['data']} disagree; choose the data "
                              f"once")
        selections["data"] = data
    cfg = schema_for(model)
    layers: list[tuple[Path, str]] = [(config_dir() / "base.yaml", "base config")]
    layers.append((_group_file("data", selections.get("data", "synth")), "data"))
    model_file = config_dir() / "model" / f"{model}.yaml"
    if model_file.is_file():
        layers.append((model_file, "model"))
    trained_after = layers[-1][1]       # a checkpoint's settings replace the model's defaults
    layers.append((_group_file("trainer", selections.get("trainer", "default")), "trainer"))
    layers.append((_group_file("logger", selections.get("logger", "wandb")), "logger"))
    if "experiment" in selections:
        layers.append((_group_file("experiment", selections["experiment"]), "experiment"))
    if config_file is not None:
        layers.append((Path(config_file), "--config file"))
    for path, what in layers:
        cfg = merge_layer(cfg, _load_yaml(path, what), str(path))
        if what == trained_after:
            cfg = _merge_trained(cfg, trained)
    cfg = merge_overrides(cfg, dotted, labels)
    check_interpolations(cfg)
    if cfg.run.model != model:
        raise ConfigError(f"run.model is '{cfg.run.model}' but --model is '{model}'; set the model with --model only")
    _check_choices(cfg)
    for section, schema in (("run", RunConfig), ("trainer", TrainerConfig), ("logger", LoggerConfig),
                            ("data", DataSection), ("model", get_entry(model).config)):
        check_bounds(cfg[section], schema, section)
    _check_limits(cfg.trainer)
    return cfg


LIMITS = ("limit_train_batches", "limit_val_batches", "limit_test_batches", "limit_predict_batches")


def _check_limits(trainer: DictConfig) -> None:
    """``trainer.limit_*_batches``: an int >= 0 (batches) or a float in [0, 1] (a fraction), as Lightning reads
    them; anything else is one line here rather than Lightning's message when the Trainer starts."""
    for name in LIMITS:
        value = trainer[name]
        batches = isinstance(value, int) and not isinstance(value, bool) and value >= 0
        fraction = isinstance(value, float) and 0.0 <= value <= 1.0
        if value is not None and not (batches or fraction):
            raise ConfigError(f"trainer.{name} must be an int >= 0 (batches) or a float in [0, 1] (a fraction of "
                              f"them), got {value!r}")


_CHOICES = {
    "trainer.precision": ("32", "32-true", "64", "bf16-mixed", "bf16-true", "16-mixed", "16-true"),
    "trainer.progress_bar": ("rich", "tqdm", "none"),
    "trainer.gradient_clip_algorithm": ("norm", "value"),
    "logger.name": ("wandb", "csv", "none"),
    "logger.mode": ("auto", "online", "offline"),
    "run.monitor_mode": ("min", "max"),
    "eval.backbones": ("auto", "official", "synth-kit"),
}


def _merge_trained(cfg: DictConfig, trained: Optional[tuple[str, dict]]) -> DictConfig:
    if not trained:
        return cfg
    path, hyper_parameters = trained
    return merge_layer(cfg, {"model": hyper_parameters}, f"the hyper-parameters of checkpoint {path} (another "
                                                         f"model's checkpoint, or an older zoo's?)")


def _check_choices(cfg: DictConfig) -> None:
    from zoo.metrics.suite import ALL_METRICS

    for key, valid in _CHOICES.items():
        value = OmegaConf.select(cfg, key)
        if str(value) not in valid:
            raise ConfigError(f"invalid value {value!r} for '{key}'; valid choices: {', '.join(valid)}")
    for metric in cfg.eval.metrics:
        if metric not in ALL_METRICS:
            raise ConfigError(f"invalid metric {metric!r} in 'eval.metrics'; valid choices: {', '.join(ALL_METRICS)}")


def check_bounds(node: DictConfig, cls: type, prefix: str) -> None:
    """One line for a value outside its range (:mod:`zoo.bounds`); nested config dataclasses are checked under
    their own key."""
    require_in_bounds(node, prefix, cls)
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        if is_dataclass(hints[f.name]) and isinstance(node.get(f.name), DictConfig):
            check_bounds(node[f.name], hints[f.name], f"{prefix}.{f.name}")


def to_dataclass(node: DictConfig, cls: type) -> Any:
    """Instantiate dataclass ``cls`` (recursively) from a composed config node; keys ``cls`` lacks are ignored
    (``DataSection`` -> ``DataConfig``)."""
    hints = typing.get_type_hints(cls)
    values = {}
    for f in fields(cls):
        value = node[f.name]
        if is_dataclass(hints[f.name]) and isinstance(value, DictConfig):
            value = to_dataclass(value, hints[f.name])
        elif OmegaConf.is_config(value):
            value = OmegaConf.to_container(value, resolve=True)
        values[f.name] = value
    return cls(**values)


# Config keys that change where or how loudly a run works, not what it computes: left out of config_hash.
UNHASHED = ("run.name", "run.runs_dir", "run.save_videos", "trainer.progress_bar", "logger", "eval.kit_dir",
            "data.num_workers", "data.root")


def config_hash(cfg: Any, extra: str = "") -> str:
    """12 hex digits of a composed config (a DictConfig or its plain container) without the :data:`UNHASHED` keys,
    plus ``extra`` (e.g. a checkpoint's identity). The bench names its runs by it; a staged fit records it per
    stage to tell a finished stage trained under other settings."""
    container = OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else json.loads(json.dumps(cfg))
    for dotted in UNHASHED:
        *path, last = dotted.split(".")
        parent = container
        for key in path:
            parent = parent.get(key, {})
        parent.pop(last, None)
    text = json.dumps(container, sort_keys=True, default=str) + extra
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def save_config(cfg: DictConfig, path: Path) -> None:
    """Write the composed config as YAML atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(OmegaConf.to_yaml(cfg, resolve=True))
