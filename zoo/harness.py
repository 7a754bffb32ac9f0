"""The training/evaluation harness behind the CLI: config -> run directory -> datamodule, model, Trainer.

One run directory per run, ``<runs_dir>/<model>/<name>/``, holding ``config.yaml`` (an evaluation's config:
``config.<stage>.yaml``, see :func:`config_name`), ``checkpoints/``
(``last.ckpt`` + the best of the monitored metric), logger files, ``media/`` (mp4s with sound) and ``results/``.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import pytorch_lightning as pl
import torch
from lightning_fabric.utilities.exceptions import MisconfigurationException
from omegaconf import DictConfig

from zoo.config import compose, save_config, to_dataclass
from zoo.data.datamodule import DataConfig, TalkingHeadDataModule
from zoo.errors import ConfigError, DataError
from zoo.evaluation import ClipEvaluator, ValidationVideos, has_preview
from zoo.io.atomic import read_json_object
from zoo.metrics.suite import LEARNED_METRICS
from zoo.model import TalkingHeadModel
from zoo.pipeline import fit_staged, is_staged, split_stage_overrides
from zoo.registry import get_entry
from zoo.tracking import build_logger
from zoo.weights import load_checkpoint, load_checkpoint_state_dict, load_strict

STAGES = ("fit", "validate", "test", "predict")


@dataclass
class Run:
    """A composed, ready-to-run job."""

    stage: str
    cfg: DictConfig
    run_dir: Path
    ckpt_path: Optional[str]
    sources: tuple = (None, None, ())      # (data, config_file, overrides) it was composed from
    force: bool = False                    # staged fit: retrain finished stages


def _run_name(cfg: DictConfig) -> str:
    """The run name: configured, else shared by every rank of a distributed launch, else a timestamp."""
    if cfg.run.name:
        return str(cfg.run.name)
    for var in ("ZOO_RUN_NAME", "TORCHELASTIC_RUN_ID", "SLURM_JOB_ID"):
        if os.environ.get(var):
            return os.environ[var] if var == "ZOO_RUN_NAME" else f"{var.split('_')[0].lower()}-{os.environ[var]}"
    name = time.strftime("%Y%m%d-%H%M%S")
    os.environ["ZOO_RUN_NAME"] = name  # Lightning's DDP launcher re-runs the CLI per rank with this environment
    return name


def _model_root(cfg: DictConfig) -> Path:
    return Path(cfg.run.runs_dir) / cfg.run.model


def _latest_run_with(cfg: DictConfig, filename: str) -> Optional[Path]:
    candidates = sorted(_model_root(cfg).glob(f"*/checkpoints/{filename}"), key=lambda p: p.stat().st_mtime)
    return candidates[-1].parents[1] if candidates else None


def best_checkpoint(run_dir: Path) -> Optional[Path]:
    """A run's newest ``best*.ckpt`` (its monitored metric), else its ``last.ckpt``, else None."""
    ckpts = run_dir / "checkpoints"
    best = sorted(ckpts.glob("best*.ckpt"), key=lambda p: p.stat().st_mtime)
    if best:
        return best[-1]
    last = ckpts / "last.ckpt"
    return last if last.is_file() else None


def resolve_run(stage: str, cfg: DictConfig, resume: Optional[str], ckpt: Optional[str]) -> Run:
    """Pick the run directory and the checkpoint to start from; bad paths fail with one line."""
    trainable = get_entry(cfg.run.model).model_class.trainable
    if stage == "fit":
        if not trainable:
            raise ConfigError(f"model '{cfg.run.model}' has nothing to train; use `zoo test --model {cfg.run.model}`")
        model_class = get_entry(cfg.run.model).model_class
        if is_staged(model_class):   # finished stages are skipped and interrupted ones resumed (zoo.pipeline)
            if resume is not None:
                raise ConfigError(f"'{cfg.run.model}' trains in stages and resumes them by itself: rerun the same "
                                  f"command without --resume (--force retrains)")
            cfg.run.name = cfg.run.name or model_class.default_run_name(cfg.model)
            return Run(stage, cfg, _model_root(cfg) / cfg.run.name, None)
        if resume not in (None, "auto"):
            path = Path(resume)
            if not path.is_file():
                raise ConfigError(f"--resume checkpoint not found: {path}")
            in_run_dir = path.parent.name == "checkpoints"
            run_dir = path.parents[1] if in_run_dir else _model_root(cfg) / _run_name(cfg)
            cfg.run.name = run_dir.name
            return Run(stage, cfg, run_dir, str(path))
        if resume == "auto":
            run_dir = _model_root(cfg) / cfg.run.name if cfg.run.name else _latest_run_with(cfg, "last.ckpt")
            if run_dir is not None and (run_dir / "checkpoints" / "last.ckpt").is_file():
                cfg.run.name = run_dir.name
                return Run(stage, cfg, run_dir, str(run_dir / "checkpoints" / "last.ckpt"))
        run_dir = _model_root(cfg) / _run_name(cfg)
        cfg.run.name = run_dir.name
        if any((run_dir / "checkpoints").glob("*.ckpt")) and is_rank_zero_process():   # other ranks: relaunched
            raise ConfigError(f"run directory {run_dir} already has checkpoints; pass --resume auto to continue it "
                              f"or choose another run.name")
        return Run(stage, cfg, run_dir, None)
    # validate / test / predict
    if resume is not None:
        raise ConfigError(f"--resume only applies to `zoo fit`; use --ckpt PATH for `zoo {stage}`")
    path = find_checkpoint(cfg, ckpt) if ckpt is not None or trainable else None   # baselines need none
    run_dir = _model_root(cfg) / _run_name(cfg)
    cfg.run.name = run_dir.name
    return Run(stage, cfg, run_dir, str(path) if path else None)


def find_checkpoint(cfg: DictConfig, ckpt: Optional[str]) -> Path:
    """The checkpoint to evaluate or predict with: ``--ckpt`` (a file, or a run directory: its best checkpoint,
    else its ``last.ckpt``), else the best checkpoint of the model's default run (LSP: ``identity<k>``) when it has
    one, else of the model's latest run under ``run.runs_dir``; one line when there is none."""
    if ckpt is not None:
        path = Path(ckpt)
        if path.is_dir():
            found = best_checkpoint(path)
            if found is None:
                raise ConfigError(f"--ckpt {path}: no checkpoints/best*.ckpt or checkpoints/last.ckpt in that run")
            return found
        if not path.is_file():
            raise ConfigError(f"--ckpt checkpoint not found: {path}")
        return path
    name = cfg.run.name
    model_class = get_entry(cfg.run.model).model_class
    if not name and hasattr(model_class, "default_run_name"):   # e.g. LSP's identity<model.identity>
        own = model_class.default_run_name(cfg.model)
        name = own if best_checkpoint(_model_root(cfg) / own) else None
    source = _model_root(cfg) / name if name else _latest_run_with(cfg, "*.ckpt")
    found = best_checkpoint(source) if source is not None else None
    if found is None:
        raise ConfigError(f"no checkpoint found for model '{cfg.run.model}' under {_model_root(cfg)}; "
                          f"train it with `zoo fit --model {cfg.run.model}` or pass --ckpt PATH")
    return found


def refuse_manual_optimisation_settings(cfg: DictConfig, what: Optional[str] = None) -> None:
    """One line for ``trainer.gradient_clip_val`` / ``accumulate_grad_batches`` on a module that steps its optimisers
    itself (``automatic_optimization = False``, e.g. a GAN): Lightning refuses them only once that fit starts.

    The module sets the flag when it is built, so it is built here on the meta device (no memory, no weights)."""
    t = cfg.trainer
    settings = [f"trainer.gradient_clip_val={t.gradient_clip_val}"] if t.gradient_clip_val else []
    settings += [f"trainer.accumulate_grad_batches={t.accumulate_grad_batches}"] if t.accumulate_grad_batches != 1 else []
    if not settings:
        return
    entry = get_entry(cfg.run.model)
    with torch.device("meta"):
        module = entry.builder(to_dataclass(cfg.model, entry.config))
    if not module.automatic_optimization:
        where = " for this stage (the other stages take <stage>.trainer.<key>=... of their own)" if what else ""
        raise ConfigError(f"{what or f'model {entry.name!r}'} steps its optimisers itself (manual optimisation), "
                          f"so Lightning cannot apply {' and '.join(settings)}: leave it unset{where}")


def add_model_fields(cfg: DictConfig) -> None:
    """Add the fields the model needs (and audio/refs for video models) to ``data.fields``."""
    model_class = get_entry(cfg.run.model).model_class
    needed = list(model_class.data_fields)
    if issubclass(model_class, TalkingHeadModel):
        needed += ["frames", "audio"]
    fields = list(cfg.data.fields)
    cfg.data.fields = fields + [f for f in dict.fromkeys(needed) if f not in fields]


def build_datamodule(cfg: DictConfig) -> TalkingHeadDataModule:
    """The one datamodule; ``data=synth`` builds the embedded corpus on first use (cached by its config hash)."""
    data_cfg = to_dataclass(cfg.data, DataConfig)
    prepare_fn: Optional[Callable[[], None]] = None
    if cfg.data.name == "synth" and not cfg.data.root:
        from zoo.synth import SynthConfig, build_corpus, default_root

        synth_cfg = to_dataclass(cfg.data.synth, SynthConfig)
        root = default_root(synth_cfg)
        data_cfg.root = str(root)

        def build_corpus_once() -> None:
            if not (root / "dataset.json").is_file():
                build_corpus(synth_cfg, root, progress=True)

        prepare_fn = build_corpus_once
    elif not cfg.data.root:
        raise ConfigError(f"data '{cfg.data.name}' needs data.root=<prepared dataset directory>")
    elif not Path(cfg.data.root).is_dir():
        raise DataError(f"dataset directory not found: {cfg.data.root} (data.root)")
    return TalkingHeadDataModule(data_cfg, prepare_fn=prepare_fn)


def configured_frame_size(cfg: DictConfig) -> Optional[int]:
    """The data's frame size before any corpus is built or opened: ``data.synth.size`` for the embedded corpus, else
    the prepared dataset's ``dataset.json`` (None when it cannot be read: opening the dataset then says why)."""
    if cfg.data.name == "synth" and not cfg.data.root:
        return int(cfg.data.synth.size)
    try:
        return int(read_json_object(Path(cfg.data.root) / "dataset.json")["frame_size"])
    except (DataError, KeyError, TypeError, ValueError):
        return None


def evaluation_domain(cfg: DictConfig) -> str:
    """Which backbones score this run: the synthetic evaluator kit for the embedded corpus, else the official ones."""
    if cfg.eval.backbones != "auto":
        return cfg.eval.backbones
    return "synth-kit" if cfg.data.name == "synth" else "official"


def is_rank_zero_process() -> bool:
    return all(int(os.environ.get(var, "0")) == 0 for var in ("RANK", "LOCAL_RANK", "NODE_RANK"))


def prepare_evaluation(cfg: DictConfig, datamodule: TalkingHeadDataModule) -> Optional[Path]:
    """Make sure the synthetic evaluator kit exists before any Trainer starts (trains it on first use).

    Only the first process trains; other processes of an externally launched job (torchrun, srun) wait for it.
    """
    if not set(cfg.eval.metrics) & LEARNED_METRICS or evaluation_domain(cfg) != "synth-kit":
        return None
    from zoo.evaluators.kit import ensure_kit, kit_path

    datamodule.prepare_data()
    root = Path(datamodule.cfg.root)
    if is_rank_zero_process():
        return ensure_kit(root, cfg.eval.kit_dir, list(cfg.eval.kit_overrides))
    target = kit_path(root, cfg.eval.kit_dir, list(cfg.eval.kit_overrides))
    deadline = time.time() + 6 * 3600
    while not (target / "kit.json").is_file():
        if time.time() > deadline:
            raise DataError(f"timed out waiting for rank 0 to train the evaluator kit at {target}")
        time.sleep(10)
    return target


def _suite_factory(cfg: DictConfig, kit: Callable[[], Optional[Path]]):
    """Builds the suite when an evaluation starts; ``kit()`` is then the prepared evaluator kit."""
    from zoo.metrics.suite import MetricSuite, official_backbones

    def build(datamodule):
        if not set(cfg.eval.metrics) & LEARNED_METRICS:
            backbones = None
        elif evaluation_domain(cfg) == "synth-kit":
            from zoo.evaluators.kit import kit_backbones

            backbones = kit_backbones(kit(), cfg.eval.weights_dir)
        else:
            backbones = official_backbones(cfg.eval.weights_dir)
        return MetricSuite(backbones, tuple(cfg.eval.metrics), fps=datamodule.fps)

    return build if cfg.eval.metrics else None


def build_metric_suite(cfg: DictConfig, datamodule: TalkingHeadDataModule):
    """The metric suite ``zoo test`` would score ``cfg``'s run with (``eval.metrics``, the data domain's backbones;
    trains the synthetic evaluator kit on first use), for scripts that score frames of their own; ``None`` when
    ``eval.metrics`` is empty."""
    kit = prepare_evaluation(cfg, datamodule)
    factory = _suite_factory(cfg, lambda: kit)
    return factory(datamodule) if factory else None


class SeedPerRank(pl.Callback):
    """Re-seeds torch's generators with ``seed + global_rank`` when a fit starts under several processes.

    Every rank runs :func:`pl.seed_everything` with the same ``run.seed`` (so models start alike), which would
    then give every rank the same dropout masks and in-model augmentation noise on its different data. A
    single-process fit is left untouched, so its results do not depend on this callback."""

    def __init__(self, seed: int):
        self.seed = int(seed)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.world_size > 1:
            torch.manual_seed(self.seed + trainer.global_rank)


def _callbacks(run: Run, model_class: type, kit: Callable[[], Optional[Path]]) -> list:
    from pytorch_lightning.callbacks import (LearningRateMonitor, ModelCheckpoint, RichProgressBar,
                                             TQDMProgressBar)

    cfg = run.cfg
    scores_video = run.stage in ("validate", "test") and issubclass(model_class, TalkingHeadModel)
    suite = _suite_factory(cfg, kit) if scores_video else None
    callbacks: list = [ClipEvaluator(run.run_dir, cfg.run.save_videos, metadata=_metadata(cfg), suite_factory=suite)]
    if cfg.trainer.progress_bar == "rich":
        callbacks.append(RichProgressBar())
    elif cfg.trainer.progress_bar == "tqdm":
        callbacks.append(TQDMProgressBar())
    if run.stage == "fit":
        callbacks.append(SeedPerRank(cfg.run.seed))
        monitor = cfg.run.monitor or model_class.monitor
        mode = cfg.run.monitor_mode if cfg.run.monitor else model_class.monitor_mode
        checkpoints = run.run_dir / "checkpoints"
        if monitor:
            callbacks.append(ModelCheckpoint(dirpath=checkpoints, monitor=monitor, mode=mode, save_top_k=1,
                                             filename="best-{epoch:03d}-{step}", auto_insert_metric_name=False))
        # last.ckpt from its own callback, at every epoch's end (after its validation, with or without one):
        # Lightning's save_last rewrites it only when a best file is saved, which leaves it at the best epoch
        # (a stale resume point and a stale model).
        callbacks.append(ModelCheckpoint(dirpath=checkpoints, filename="last", save_top_k=1,
                                         save_on_train_epoch_end=True, enable_version_counter=False))
        if cfg.logger.name != "none":
            callbacks.append(LearningRateMonitor(logging_interval="step"))
        if cfg.logger.log_videos and has_preview(model_class):
            callbacks.append(ValidationVideos(run.run_dir, cfg.logger.num_videos, cfg.logger.video_every_n_epochs))
    return callbacks


def _metadata(cfg: DictConfig) -> dict:
    from zoo import __version__

    return {"model": cfg.run.model, "run": cfg.run.name, "seed": cfg.run.seed, "zoo_version": __version__}


def _without_litlogger_tip(record: logging.LogRecord) -> bool:
    """Lightning advertises its cloud logger at every Trainer that lacks it (once per LSP stage); the zoo's output
    stays about the run."""
    return "litlogger" not in record.getMessage()


def build_trainer(run: Run, logger, kit: Callable[[], Optional[Path]] = lambda: None) -> pl.Trainer:
    """The run's Trainer; ``kit()`` gives the evaluator kit once the evaluation starts (see :func:`execute`)."""
    logging.getLogger("pytorch_lightning.utilities.rank_zero").addFilter(_without_litlogger_tip)  # added once
    cfg = run.cfg
    t = cfg.trainer
    plugins = []
    if t.use_slurm_requeue:
        from lightning_fabric.plugins.environments import SLURMEnvironment

        plugins.append(SLURMEnvironment(auto_requeue=True))
    optional = {k: t[k] for k in ("gradient_clip_val", "limit_train_batches", "limit_val_batches",
                                   "limit_test_batches", "limit_predict_batches", "max_time") if t[k] is not None}
    strategy = t.strategy
    if strategy in ("ddp", "ddp_spawn") and get_entry(cfg.run.model).model_class.ddp_find_unused_parameters:
        strategy = f"{strategy}_find_unused_parameters_true"
    callbacks = _callbacks(run, get_entry(cfg.run.model).model_class, kit)
    try:   # Lightning checks accelerator, strategy, devices, max_time and limit_* itself, with its own messages
        return pl.Trainer(
            accelerator=t.accelerator, devices=t.devices, num_nodes=t.num_nodes, strategy=strategy,
            precision=t.precision, max_epochs=t.max_epochs, max_steps=t.max_steps,
            gradient_clip_algorithm=t.gradient_clip_algorithm, accumulate_grad_batches=t.accumulate_grad_batches,
            check_val_every_n_epoch=t.check_val_every_n_epoch, log_every_n_steps=t.log_every_n_steps,
            num_sanity_val_steps=t.num_sanity_val_steps, fast_dev_run=t.fast_dev_run,
            sync_batchnorm=t.sync_batchnorm, deterministic=cfg.run.deterministic or None,
            enable_progress_bar=t.progress_bar != "none", default_root_dir=str(run.run_dir), logger=logger,
            callbacks=callbacks, enable_checkpointing=run.stage == "fit", plugins=plugins or None, **optional)
    except (ValueError, TypeError, MisconfigurationException) as error:
        raise ConfigError(f"invalid trainer.* setting: {str(error).strip().splitlines()[0]}") from None


def compose_run(model: str, data: Optional[str] = None, config_file: Optional[str] = None,
                overrides: Optional[list[str]] = None, trained: Optional[tuple[str, dict]] = None) -> DictConfig:
    """The composed run config of ``model`` as ``zoo fit|test|config`` use it: the data follows the model (e.g. a
    person's clips) and holds the fields it needs. Stage-only overrides of a staged model
    (``renderer.trainer.max_epochs=...``) are left to :mod:`zoo.pipeline`."""
    plain, _ = split_stage_overrides(get_entry(model).model_class, list(overrides or ()))
    cfg = compose(model, data, config_file, plain, trained)
    get_entry(cfg.run.model).model_class.configure_data(cfg.data, cfg.model)
    add_model_fields(cfg)
    return cfg


def prepare(stage: str, model: str, data: Optional[str] = None, config_file: Optional[str] = None,
            overrides: Optional[list[str]] = None, resume: Optional[str] = None,
            ckpt: Optional[str] = None, force: bool = False) -> Run:
    """Compose the config and resolve the run directory (no side effects besides validation)."""
    if stage not in STAGES:
        raise ConfigError(f"unknown command '{stage}'; valid: {', '.join(STAGES)}")
    if force and not is_staged(get_entry(model).model_class):
        raise ConfigError(f"--force retrains the finished stages of a staged model (e.g. lsp); '{model}' trains in "
                          f"one run: start another (run.name=...) or continue it with --resume auto")
    run = resolve_run(stage, compose_run(model, data, config_file, overrides), resume, ckpt)
    if stage != "fit" and run.ckpt_path:   # evaluate the model as it was trained, unless told otherwise
        trained = load_checkpoint(run.ckpt_path, str(run.ckpt_path)).get("hyper_parameters")
        if trained is not None:
            name, run.cfg = run.cfg.run.name, compose_run(model, data, config_file, overrides,
                                                          (run.ckpt_path, trained))
            run.cfg.run.name = name
    run.sources, run.force = (data, config_file, tuple(overrides or ())), force
    return run


def config_name(stage: str) -> str:
    """The file a run's composed config is saved to: ``config.yaml`` for a fit, ``config.<stage>.yaml`` for an
    evaluation, which may run in a training run's directory (``--ckpt`` / ``run.name`` of that run) and must not
    replace the config the model was trained with."""
    return "config.yaml" if stage == "fit" else f"config.{stage}.yaml"


def build_model(cfg: DictConfig, ckpt_path: Optional[str] = None):
    """The module ``cfg.model`` configures (for model ``cfg.run.model``); with ``ckpt_path``, that checkpoint's
    weights loaded into it strictly (one line when they do not fit) and checked (``check_loaded``): the model
    ``zoo test --ckpt`` evaluates, with the run's ``model.*`` overrides applied to what the checkpoint saved."""
    entry = get_entry(cfg.run.model)
    model = entry.builder(to_dataclass(cfg.model, entry.config))
    if ckpt_path:
        state = load_checkpoint_state_dict(ckpt_path, str(ckpt_path))
        load_strict(model, state, f"checkpoint {ckpt_path} does not fit model '{cfg.run.model}' as configured "
                                  f"(another model's, or trained with other model.* settings?)")
        model.check_loaded()
    return model


def execute(run: Run) -> dict:
    """Run the job; returns the logged metrics (``trainer.callback_metrics`` as floats)."""
    cfg = run.cfg
    entry = get_entry(cfg.run.model)
    if run.stage == "fit" and is_staged(entry.model_class):
        return fit_staged(run, *run.sources, force=run.force)
    if run.stage == "fit":
        refuse_manual_optimisation_settings(cfg)
    pl.seed_everything(cfg.run.seed, workers=True, verbose=False)
    datamodule = build_datamodule(cfg)
    # Lightning would load the checkpoint mid-run, with a traceback when the config's sizes differ
    model = build_model(cfg, run.ckpt_path)
    logger = build_logger(cfg, run.run_dir, job_type=run.stage)
    kit = None
    trainer = build_trainer(run, logger, lambda: kit)   # bad trainer.* settings fail before the kit trains
    if is_rank_zero_process():   # only a config that runs is written, next to what it produces
        if run.stage != "fit":
            # a results file of an earlier evaluation must not pair with this config if this one fails
            (run.run_dir / "results" / f"{run.stage}.json").unlink(missing_ok=True)
        save_config(cfg, run.run_dir / config_name(run.stage))
    if run.stage in ("validate", "test") and issubclass(entry.model_class, TalkingHeadModel):
        kit = prepare_evaluation(cfg, datamodule)
    if run.stage == "fit":
        trainer.fit(model, datamodule=datamodule, ckpt_path=run.ckpt_path)
    else:   # build_model has loaded the checkpoint; Lightning would load it again and warn about its callbacks
        getattr(trainer, run.stage)(model, datamodule=datamodule)
    if logger:
        logger.finalize("success")
        if hasattr(logger, "experiment") and cfg.logger.name == "wandb" and trainer.is_global_zero:
            import wandb

            wandb.finish()
    return {k: float(v) for k, v in trainer.callback_metrics.items()}
