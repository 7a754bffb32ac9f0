"""``zoo bench``: train (or reuse) every method under one budget, score every row on the same clips, tabulate.

The work is a list of *cells*: one evaluation of one method on one identity's clips of one split, with the
checkpoint it needs (trained once for one-shot / few-shot methods, once per identity for person-specific ones).
Every training run and every cell lives in an ordinary run directory named by the hash of its composed config,
``<runs_dir>/<method>/bench-[id<k>-]<hash>/`` for training and ``<runs_dir>/bench-<split>/<method>/id<k>-<hash>/``
for evaluation, with a ``bench.json`` marker written when it finished. So an interrupted bench resumes where it
stopped (finished cells are read back, an interrupted fit continues from its ``last.ckpt``), and a changed budget,
seed, dataset, code config or evaluator kit version gets new directories instead of stale numbers.

Rows: per-clip metrics are averaged over every clip of every identity of the row; dataset-level metrics (FID)
are computed per identity and averaged over the identities, for every row alike.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from zoo.bench.budget import Budget, load_budget
from zoo.bench.provenance import git_commit
from zoo.config import config_hash
from zoo.errors import ConfigError
from zoo.evaluation import aggregate
from zoo.io.atomic import read_json_object, write_json
from zoo.metrics.suite import higher_is_better
from zoo.model import TalkingHeadModel
from zoo.registry import get_entry, list_models

BASELINES = ("gt", "static")
MARKER = "bench.json"


def read_marker(marker: Path) -> dict:
    """A finished run's ``bench.json``; one line naming it when it is damaged."""
    return read_json_object(marker, f" (delete {marker.parent} to redo that run)")


def generation_methods() -> list[str]:
    """Registered video-generating methods (the leaderboard's candidates), baselines first."""
    names = [n for n in list_models() if issubclass(get_entry(n).model_class, TalkingHeadModel)]
    return [*BASELINES, *(n for n in names if n not in BASELINES)]


def select_methods(models: str) -> list[str]:
    """``all`` or a comma list -> methods in table order; ``gt`` and ``static`` are always included."""
    valid = generation_methods()
    if models == "all":
        return valid
    wanted = [m.strip() for m in models.split(",") if m.strip()]
    unknown = [m for m in wanted if m not in valid]
    if unknown:
        raise ConfigError(f"unknown method(s) {', '.join(unknown)} in --models; valid: {', '.join(valid)}, all")
    return [m for m in valid if m in BASELINES or m in wanted]


def protocol(method: str) -> str:
    return get_entry(method).model_class.protocol


@dataclass
class Cell:
    """One evaluation: ``method`` on identity ``identity``'s clips of ``split``."""

    method: str
    split: str
    identity: int


class Bench:
    """One leaderboard run. ``run()`` does the missing work and returns the cells' records."""

    def __init__(self, methods: list[str], data: Optional[str], budget_name: str, seed: int, runs_dir: Path,
                 overrides: list[str]):
        self.methods = methods
        self.data = data
        self.budget, self.budget_record = load_budget(budget_name)
        unknown = sorted(set(self.budget.models) - set(generation_methods()))
        if unknown:
            raise ConfigError(f"budget {self.budget_record['file']}: unknown method(s) {', '.join(unknown)} "
                              f"under 'models'")
        self.seed = seed
        self.runs_dir = Path(runs_dir)
        self.overrides = list(overrides)
        self._trained: dict[tuple[str, Optional[int]], dict] = {}
        self._checkpoints: dict[tuple[str, Optional[int]], Path] = {}    # the trained runs' checkpoints

    # ------------------------------------------------------------------------------------------ planning

    def dataset(self):
        """The dataset every row is scored on (built on first use, as ``data=synth`` does)."""
        from zoo.data.clip_format import open_dataset
        from zoo.harness import build_datamodule, prepare

        cfg = prepare("test", "gt", self.data, None, self.overrides).cfg
        datamodule = build_datamodule(cfg)
        datamodule.prepare_data()
        return open_dataset(datamodule.cfg.root)

    def identities(self, dataset, split: str, wanted: Optional[list[int]]) -> list[int]:
        present = sorted({int(dataset.clip(c).meta["identity"]) for c in dataset.clip_ids(split)})
        if wanted is None:
            return present
        key = "identities" if split == "test" else "unseen_identities"
        if not wanted:
            raise ConfigError(f"budget {self.budget_record['file']}: '{key}' is empty (leave it out for every "
                              f"identity of split '{split}')")
        missing = sorted(set(wanted) - set(present))
        if missing:
            raise ConfigError(f"budget {self.budget_record['file']}: '{key}' {missing} has no clip in split "
                              f"'{split}' (present: {present})")
        return sorted(set(wanted))

    def plan(self, dataset) -> tuple[list[Cell], dict]:
        """Every cell of every table, and each table's identities."""
        tables = {"test": self.identities(dataset, "test", self.budget.identities)}
        if any(protocol(m) in ("one-shot", "few-shot") for m in self.methods) and dataset.clip_ids("test_unseen"):
            tables["test_unseen"] = self.identities(dataset, "test_unseen", self.budget.unseen_identities)
        cells = [Cell(m, split, k) for split, ids in tables.items() for m in self.methods
                 if split == "test" or protocol(m) != "person-specific" for k in ids]
        return cells, tables

    # ------------------------------------------------------------------------------------------ training

    def _hash(self, method: str, overrides: list[str], extra: str) -> str:
        """The config hash of ``method`` under ``overrides``; a staged model's stage-only overrides
        (``mouth.trainer.max_epochs=...``) are hashed as given, next to the composed config."""
        from zoo.config import compose
        from zoo.pipeline import route_overrides, split_stage_overrides

        model_class = get_entry(method).model_class
        plain, own = split_stage_overrides(model_class, overrides)
        # a staged model trains each stage with its own config file (configs/model/<stage>.yaml): hash them too
        stages = [config_hash(compose(stage, self.data, None, route_overrides(plain + own, [key])[1][key]))
                  for key, stage in getattr(model_class, "stages", ())]
        return config_hash(compose(method, self.data, None, plain), extra + "".join(stages))

    def train(self, method: str, identity: Optional[int]) -> dict:
        """Reuse the finished training run of this exact config, else train (or resume) it; returns its marker."""
        from zoo.harness import best_checkpoint, execute, prepare
        from zoo.pipeline import DONE_FILE, is_staged, stage_marker

        key = (method, identity)
        if key in self._trained:
            return self._trained[key]
        overrides = [*self.overrides, *self.budget.train_overrides, *self.budget.models.get(method, []),
                     f"run.seed={self.seed}"]
        if identity is not None:
            overrides.append(f"model.identity={identity}")
        digest = self._hash(method, overrides, self._dataset_version)
        name = f"bench-{'' if identity is None else f'id{identity}-'}{digest}"
        run_dir = self.runs_dir / method / name
        marker = run_dir / MARKER
        if marker.is_file():
            print(f"bench: {method}{'' if identity is None else f' (identity {identity})'}: trained earlier, "
                  f"{run_dir}")
        else:
            staged = is_staged(get_entry(method).model_class)
            resume = "auto" if not staged and (run_dir / "checkpoints" / "last.ckpt").is_file() else None
            print(f"bench: {method}: {'resuming' if resume else 'training'} in {run_dir}")
            started = time.time()
            execute(prepare("fit", method, self.data, None,
                            [*overrides, f"run.runs_dir={self.runs_dir}", f"run.name={name}"], resume=resume))
            seconds = time.time() - started
            if staged:   # the stages' own times add up across interruptions
                seconds = sum(float(stage_marker(p)["seconds"]) for p in run_dir.glob(f"*/{DONE_FILE}"))
                checkpoint = run_dir / "checkpoints" / "last.ckpt"
            else:
                checkpoint = best_checkpoint(run_dir)
            # relative to the run directory, so that a moved or copied runs_dir is still found
            write_json(marker, {"method": method, "identity": identity, "config_hash": digest,
                                "checkpoint": os.path.relpath(checkpoint, run_dir),
                                "train_seconds": round(seconds, 1), "overrides": overrides}, sort_keys=True)
        self._trained[key] = read_marker(marker)
        self._checkpoints[key] = run_dir / self._trained[key]["checkpoint"]
        return self._trained[key]

    # ------------------------------------------------------------------------------------------ evaluation

    def scoring_key(self, trained: Optional[dict]) -> str:
        """What a cell's scores depend on besides its config: the dataset, the evaluator kit's version (a new kit
        rescores every cell instead of reading back the old kit's numbers) and the checkpoint's training run."""
        from zoo.evaluators.kit import KIT_VERSION

        return f"{self._dataset_version}kit-v{KIT_VERSION}" + (trained["config_hash"] if trained else "")

    def evaluate(self, cell: Cell) -> dict:
        """The cell's record (its ``results/test.json`` plus training provenance), computed if missing."""
        from zoo.harness import execute, prepare

        kind = protocol(cell.method)
        trained = checkpoint = None
        if get_entry(cell.method).model_class.trainable:
            key = (cell.method, cell.identity if kind == "person-specific" else None)
            trained, checkpoint = self.train(*key), self._checkpoints[key]
        window = "null" if self.budget.eval_window_seconds is None else self.budget.eval_window_seconds
        # the method's model.* training settings (widths...) build the network its checkpoint fits
        model_settings = [o for o in self.budget.models.get(cell.method, []) if o.startswith("model.")]
        overrides = [*self.overrides, *model_settings, *self.budget.eval_overrides, f"run.seed={self.seed}",
                     f"data.window_seconds={window}", f"data.test_split={cell.split}", f"data.identities=[{cell.identity}]", "logger=none"]
        if kind == "person-specific":
            overrides.append(f"model.identity={cell.identity}")
        digest = self._hash(cell.method, overrides, self.scoring_key(trained))
        root = self.runs_dir / f"bench-{cell.split}"
        run_dir = root / cell.method / f"id{cell.identity}-{digest}"
        marker = run_dir / MARKER
        if not marker.is_file():
            print(f"bench: scoring {cell.method} on identity {cell.identity} ({cell.split})")
            started = time.time()
            run = prepare("test", cell.method, self.data, None,
                          [*overrides, f"run.runs_dir={root}", f"run.name={run_dir.name}"],
                          ckpt=str(checkpoint) if checkpoint else None)
            execute(run)
            write_json(marker, {"cell": vars(cell), "config_hash": digest, "trained": trained,
                                "eval_seconds": round(time.time() - started, 1)}, sort_keys=True)
        record = read_marker(marker)
        record["results"] = read_json_object(run_dir / "results" / "test.json",
                                             f" (delete {run_dir} to score the cell again)")
        return record

    def run(self) -> tuple[list[dict], dict]:
        """Train and score whatever is missing; returns (cell records, tables' identities)."""
        dataset = self.dataset()
        self._dataset_version = f"{dataset.name}-{dataset.version}"
        cells, tables = self.plan(dataset)
        return [self.evaluate(cell) for cell in cells], tables


def rows_of(records: list[dict], split: str, methods: list[str]) -> list[dict]:
    """One leaderboard row per method of ``split``: metrics pooled over its cells (see the module docstring)."""
    rows = []
    for method in methods:
        cells = [r for r in records if r["cell"]["method"] == method and r["cell"]["split"] == split]
        if not cells:
            continue
        clips = [clip for r in cells for clip in r["results"]["clips"]]
        metrics = aggregate(clips)
        per_clip = set(metrics)
        for name in sorted({k for r in cells for k in r["results"]["aggregate"]} - per_clip):   # dataset-level
            values = [r["results"]["aggregate"][name] for r in cells if name in r["results"]["aggregate"]]
            metrics[name] = sum(values) / len(values)
        described = cells[0]["results"]["metrics"]
        trained = {str(r["trained"]["identity"]): r["trained"] for r in cells if r["trained"]}
        rows.append({
            "method": method, "protocol": protocol(method), "split": split,
            "identities": [r["cell"]["identity"] for r in cells], "num_clips": len(clips),
            "metrics": {name: {"value": value, "higher_is_better": higher_is_better(name),
                               "dataset_level": name not in per_clip, **described.get(name, {})}
                        for name, value in sorted(metrics.items())},
            "windows": sorted((c["clip_id"], c["start"]) for c in clips),
            "skipped_metrics": described.get("skipped", {}),
            "dataset": {k: cells[0]["results"]["dataset"][k] for k in ("name", "version", "split")},
            "eval_config_hashes": {str(r["cell"]["identity"]): r["config_hash"] for r in cells},
            "train_config_hashes": {k: t["config_hash"] for k, t in trained.items()},
            "seed": cells[0]["results"]["seed"], "zoo_version": cells[0]["results"]["zoo_version"],
            "train_seconds": round(sum(t["train_seconds"] for t in trained.values()), 1),
            "eval_seconds": round(sum(r["eval_seconds"] for r in cells), 1),
        })
    return rows


__all__ = ["Bench", "Budget", "generation_methods", "select_methods", "rows_of", "config_hash", "git_commit"]
