"""Training-step throughput of every registered trainable model stage, built and fitted through the harness.

    python benchmarks/training_throughput.py [--models 'lsp.*,syncnet'] [--steps 10] [--warmup 3]
                                             [--device auto|cpu|cuda] [--threads N]
                                             [--out benchmarks/results/training_throughput.json] [--quick]

What is measured: for every trainable model in the registry (``zoo.registry``; the baselines have nothing to train),
one ``trainer.fit`` of ``--warmup`` + ``--steps`` training batches, composed exactly as ``zoo fit --model NAME``
composes it (``zoo.harness.prepare`` / ``build_datamodule`` / ``build_trainer``: the model's recipe in
``configs/model/NAME.yaml``, its default architecture and batch size, the default ``data=synth`` corpus at 128 px).
Staged models (``zoo.pipeline.is_staged``, e.g. ``lsp``) are not trained themselves: their stages are, in training
order and with the stage configs ``zoo fit --model lsp`` gives them (``stage_model_config``), so later stages get the
checkpoint of the earlier ones (LSP's mouth and head-pose stages load the trained ``lsp.apc``). Selecting a later
stage with ``--models`` therefore also runs the earlier stages of the same model, and the rows of the stages it did
not measure are kept from the JSON already at ``--out`` (every row has its own ``measured_at``).

Only what the benchmark needs differs from a real fit: validation is off (``limit_val_batches=0``, no sanity
check), there is no logger or progress bar, runs and checkpoints go to a temporary directory, and a callback stops
the fit after the timed batches. Per stage:

* ``steps_per_s``: timed batches / the wall time they took inside their epoch, from the end of one batch to the
  end of the next (so data loading, the optimiser step and Lightning's loop are included; the first batch of an
  epoch counts from its own start, so worker start-up and epoch-end checkpoints are not); ``samples_per_s`` =
  steps/s x batch size, ``frames_per_s`` = samples/s x frames per window;
* ``seconds_per_step_median`` (the same intervals) and ``compute_seconds_per_step_median`` (batch start to batch
  end only: forward, backward, optimiser, without waiting for data).

The first ``--warmup`` batches are not timed (allocator, cuDNN autotuning, lazy initialisation). The mouth and
head-pose stages memoise the frozen APC features per window, so their first epoch (what is timed here unless an
epoch is shorter than the warm-up) is slower than later ones.

Devices: ``--device auto`` (default) measures on the CPU, and on the GPU as well when there is one, like
``lsp_streaming.py``; ``cpu`` or ``cuda`` one of them. CPU runs use ``trainer=cpu`` (fp32) with
``torch.set_num_threads(--threads)`` (default all cores; the DataLoader workers of the recipe come on top), CUDA
runs ``trainer=gpu`` (bf16-mixed), each with its own chain of stage checkpoints. ``--quick``: the
``experiment=smoke`` recipe (the tiny 64 px corpus of 2 s clips, batch 2, no loader workers; its 1 s windows
where the model's own are longer), 1 warm-up and 2 timed steps. Writes the JSON atomically and prints a table.
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import logging
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf
from pytorch_lightning.callbacks import ModelSummary

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from lsp_streaming import environment, model_devices  # noqa: E402

from zoo.config import compose, to_dataclass  # noqa: E402
from zoo.harness import add_model_fields, build_datamodule, build_model, build_trainer, prepare  # noqa: E402
from zoo.io.atomic import write_json  # noqa: E402
from zoo.pipeline import is_staged  # noqa: E402
from zoo.registry import get_entry, list_models  # noqa: E402

DEFAULT_OUT = HERE / "results" / "training_throughput.json"
# Epochs are bounded only so that LR schedules (which read trainer.estimated_stepping_batches) stay finite; the
# timing callback stops the fit long before.
MAX_EPOCHS = 1000


# ------------------------------------------------------------------------------------------------ timing

class StepTimer(pl.Callback):
    """Times training batches after ``warmup`` of them and stops the fit once ``steps`` are timed."""

    def __init__(self, warmup: int, steps: int, cuda: bool):
        self.warmup, self.steps, self.cuda = warmup, steps, cuda
        self.batches = 0
        self.intervals: list[float] = []      # end of the previous batch (same epoch) -> end of this one
        self.compute: list[float] = []        # start -> end of this batch
        self._start = self._from = 0.0
        self._last_end: float | None = None

    def _now(self) -> float:
        if self.cuda:                          # kernels run asynchronously: wait for them before reading the clock
            torch.cuda.synchronize()
        return time.perf_counter()

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._last_end = None                  # worker start-up and epoch-end work are not part of a step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._start = self._now()
        self._from = self._last_end if self._last_end is not None else self._start

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        end = self._now()
        if self.batches >= self.warmup:
            self.intervals.append(end - self._from)
            self.compute.append(end - self._start)
        self.batches += 1
        self._last_end = end
        if self.batches >= self.warmup + self.steps:
            trainer.should_stop = True


# ------------------------------------------------------------------------------------------------ plan

def stage_plan(patterns: Sequence[str]) -> list[dict]:
    """The stages to train, in order: every trainable registered model, a staged one replaced by its stages.

    Each item: ``{"model": name, "parent": staged model or None, "key": stage key or None}``. A stage of a staged
    model that matches ``patterns`` brings the earlier stages of that model along (their checkpoints are inputs)."""
    def wanted(name: str) -> bool:
        return any(fnmatch.fnmatch(name, pattern) for pattern in patterns)

    names = list_models()
    staged = [n for n in names if get_entry(n).model_class.trainable and is_staged(get_entry(n).model_class)]
    stage_names = {stage for n in staged for _, stage in get_entry(n).model_class.stages}
    plan: list[dict] = []
    for name in names:
        model_class = get_entry(name).model_class
        if not model_class.trainable or name in stage_names:
            continue
        if name in staged:
            stages = list(model_class.stages)
            last = max((i for i, (_, stage) in enumerate(stages) if wanted(stage) or wanted(name)), default=-1)
            plan += [{"model": stage, "parent": name, "key": key} for key, stage in stages[:last + 1]]
        elif wanted(name):
            plan.append({"model": name, "parent": None, "key": None})
    return plan


# ------------------------------------------------------------------------------------------------ one stage

def shared_overrides(args: argparse.Namespace, device: str, runs_dir: Path) -> list[str]:
    """What every benchmark run changes against ``zoo fit``: hardware, no validation/logger, a scratch runs dir."""
    overrides = ["experiment=smoke"] if args.quick else []
    overrides += [
        "trainer=gpu" if device == "cuda" else "trainer=cpu", "logger=none", "trainer.progress_bar=none",
        f"trainer.max_epochs={MAX_EPOCHS}", "trainer.max_steps=-1", "trainer.limit_val_batches=0",
        "trainer.num_sanity_val_steps=0", f"run.runs_dir={runs_dir}",
    ]
    return overrides


def measure_stage(item: dict, args: argparse.Namespace, device: str, runs_dir: Path,
                  checkpoints: dict[str, Path]) -> dict:
    """Fit one stage for warm-up + timed batches; returns its figures. A staged model's stage checkpoint is saved
    into ``checkpoints[key]`` for the stages after it."""
    name, parent, key = item["model"], item["parent"], item["key"]
    overrides = shared_overrides(args, device, runs_dir) + [f"run.name={name}"]
    run = prepare("fit", name, overrides=overrides)
    entry = get_entry(name)
    if parent is not None:   # the stage config `zoo fit --model <parent>` gives it (zoo.pipeline.fit_staged)
        parent_entry = get_entry(parent)
        parent_cfg = to_dataclass(compose(parent, None, None, shared_overrides(args, device, runs_dir)).model,
                                  parent_entry.config)
        stage_cfg = parent_entry.model_class.stage_model_config(parent_cfg, key, checkpoints)
        run.cfg.model = OmegaConf.merge(run.cfg.model, OmegaConf.structured(stage_cfg))
        entry.model_class.configure_data(run.cfg.data, run.cfg.model)
        add_model_fields(run.cfg)
    if args.quick:   # smoke's 1 s windows only where the recipe's do not fit the tiny corpus' 2 s clips
        recipe = compose(name, None, None, []).data.window_seconds
        if recipe is not None and recipe < run.cfg.data.window_seconds:
            run.cfg.data.window_seconds = recipe

    started = time.perf_counter()
    pl.seed_everything(run.cfg.run.seed, workers=True, verbose=False)
    datamodule = build_datamodule(run.cfg)
    model = build_model(run.cfg)
    trainer = build_trainer(run, logger=False)
    timer = StepTimer(args.warmup, args.steps, cuda=device == "cuda")
    # the model summary is printed to the console (rich) on every fit; the JSON records the parameter counts
    trainer.callbacks = [c for c in trainer.callbacks if not isinstance(c, ModelSummary)] + [timer]
    trainer.fit(model, datamodule=datamodule)
    if key is not None:
        checkpoints[key] = run.run_dir / "checkpoints" / "benchmark.ckpt"
        trainer.save_checkpoint(checkpoints[key])
    if len(timer.intervals) < args.steps:
        raise RuntimeError(f"{name}: the fit stopped after {timer.batches} batches, fewer than the "
                           f"{args.warmup} + {args.steps} needed (an epoch limit in its recipe?)")

    batch_size = int(run.cfg.data.batch_size)
    window_frames = datamodule.window_frames or 1
    steps_per_s = len(timer.intervals) / sum(timer.intervals)
    return {
        "model": name, "parent": parent, "stage": key, "device": device,
        "precision": str(run.cfg.trainer.precision),
        "batch_size": batch_size, "window_seconds": run.cfg.data.window_seconds,
        "window_frames": window_frames, "frames_per_step": batch_size * window_frames,
        "frame_size": datamodule.frame_size, "num_workers": int(run.cfg.data.num_workers),
        "fields": list(run.cfg.data.fields),
        "parameters_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 3),
        "trainable_parameters_m": round(sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6, 3),
        "warmup_steps": args.warmup, "timed_steps": len(timer.intervals),
        "steps_per_s": round(steps_per_s, 4), "samples_per_s": round(steps_per_s * batch_size, 3),
        "frames_per_s": round(steps_per_s * batch_size * window_frames, 2),
        "seconds_per_step_median": round(statistics.median(timer.intervals), 4),
        "compute_seconds_per_step_median": round(statistics.median(timer.compute), 4),
        "seconds_per_step": [round(s, 4) for s in timer.intervals],
        "run_seconds": round(time.perf_counter() - started, 2),
    }


# ------------------------------------------------------------------------------------------------ driver

def quiet_lightning() -> None:
    """Lightning's per-fit banners (accelerator, model summary) and hints would drown the table."""
    for logger_name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "lightning.fabric"):
        logging.getLogger(logger_name).setLevel(logging.WARNING)
    for message in (".*does not have many workers.*", ".*could not find the monitored key.*",
                    ".*smaller than the logging interval.*", ".*is a small number of batches.*"):
        warnings.filterwarnings("ignore", message=message)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="*", help="comma-separated glob patterns of model names (default all)")
    parser.add_argument("--steps", type=int, default=10, help="timed training batches per stage")
    parser.add_argument("--warmup", type=int, default=3, help="untimed training batches before them")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="auto: CPU, and CUDA (bf16-mixed) as well when available")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: all cores)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--quick", action="store_true", help="the tiny smoke corpus, 1 warm-up + 2 timed steps")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.warmup = 2, 1
    return args


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    devices = model_devices(args.device)
    quiet_lightning()
    env = environment(devices)
    plan = stage_plan([p.strip() for p in args.models.split(",") if p.strip()])
    if not plan:
        raise SystemExit(f"--models {args.models!r} matches no trainable model; registered: {', '.join(list_models())}")

    stages: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="zoo-train-bench-") as scratch:
        for device in devices:
            checkpoints: dict[str, dict[str, Path]] = {}     # per staged model, per device: its stage checkpoints
            runs_dir = Path(scratch) / device
            for item in plan:
                result = measure_stage(item, args, device, runs_dir, checkpoints.setdefault(item["parent"], {}))
                stages.append(result)
                print(f"[training_throughput] {result['model']}: {result['steps_per_s']:.3f} steps/s "
                      f"({result['samples_per_s']:.2f} samples/s), batch {result['batch_size']} x "
                      f"{result['window_frames']} frames at {result['frame_size']} px, {device} "
                      f"{result['precision']}", flush=True)

    env["load_average_end"] = [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None
    for row in stages:
        row["measured_at"] = env["time"]
    if args.models != "*":
        stages = kept_rows(args.out, stages) + stages
    result = {
        "benchmark": "training_throughput",
        "environment": env,
        "workload": {"quick": bool(args.quick), "corpus": "experiment=smoke (64 px)" if args.quick
                     else "data=synth defaults (128 px)", "warmup_steps": args.warmup, "timed_steps": args.steps,
                     "devices": devices, "validation": "off", "models": args.models},
        "stages": stages,
    }
    write_json(args.out, result)
    print_table(result)
    return result


def kept_rows(out: Path, measured: list[dict]) -> list[dict]:
    """The rows of an earlier result at ``out`` for the stages (model, device, precision) not measured now, each with
    its own ``measured_at``: timing a subset with ``--models`` updates those rows and keeps the others."""
    if not out.is_file():
        return []
    previous = json.loads(out.read_text())
    if previous.get("benchmark") != "training_throughput":
        return []
    key = lambda row: (row["model"], row["device"], row["precision"])  # noqa: E731
    fresh = {key(row) for row in measured}
    then = previous.get("environment", {}).get("time")
    return [{**row, "measured_at": row.get("measured_at", then)} for row in previous.get("stages", [])
            if key(row) not in fresh]


def print_table(result: dict) -> None:
    print(f"{'stage':18} {'device':6} {'prec':10} {'batch':>5} {'win s':>6} {'px':>4} {'steps/s':>8} "
          f"{'samples/s':>9} {'s/step':>7} {'compute':>7}")
    for s in result["stages"]:
        window = "-" if s["window_seconds"] is None else f"{s['window_seconds']:.2f}"
        print(f"{s['model']:18} {s['device']:6} {s['precision']:10} {s['batch_size']:>5} {window:>6} "
              f"{s['frame_size']:>4} {s['steps_per_s']:>8.3f} {s['samples_per_s']:>9.2f} "
              f"{s['seconds_per_step_median']:>7.3f} {s['compute_seconds_per_step_median']:>7.3f}")


if __name__ == "__main__":
    main()
