"""Evaluation and media, defined once for every model.

:class:`ClipEvaluator` scores the :class:`~zoo.model.GeneratedClip` returned by ``validate``/``test``/``predict``
steps against the batch's ground truth, writes the generated clips as mp4 with the driving audio, gathers the
per-clip results from all DDP ranks (de-duplicated by dataset index, so padding samples added by the distributed
sampler never count twice) and writes ``results/<stage>.json`` in the run directory: per clip its metrics and
``skipped`` counts (e.g. frames whose landmark detection failed, :data:`~zoo.metrics.suite.SKIPPED_COUNTS`), and
their means and totals over clips (``aggregate``, ``skipped``).

:class:`ValidationVideos` renders a few validation clips (ground truth | generated, with sound) at the end of each
validation epoch of a fit and sends them to the logger.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
import torch.distributed as dist
from pytorch_lightning.callbacks import Callback

from zoo.io.atomic import write_json
from zoo.io.video import write_video
from zoo.metrics.suite import SKIPPED_COUNTS, MetricSuite
from zoo.model import GeneratedClip, ZooModule, to_uint8_hwc
from zoo.tracking import log_video_file


def gather_records(records: list[dict]) -> list[dict]:
    """All ranks' records, de-duplicated by ``sample_index`` and sorted (every rank gets the same list)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        gathered: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, records)
        records = [r for part in gathered for r in part]
    unique = {r["sample_index"]: r for r in records}
    return [unique[k] for k in sorted(unique)]


def aggregate(records: list[dict]) -> dict[str, float]:
    """Mean of every score over clips (NaN entries, e.g. clips with no valid landmark frame, are skipped)."""
    names = sorted({k for r in records for k in r.get("metrics", {})})
    result = {}
    for name in names:
        values = [r["metrics"][name] for r in records if name in r["metrics"] and math.isfinite(r["metrics"][name])]
        result[name] = float(np.mean(values)) if values else float("nan")
    return result


def total_skipped(records: list[dict]) -> dict[str, int]:
    """Sum over clips of each per-clip ``skipped`` count (only the counts the metrics run produced)."""
    totals: dict[str, int] = {}
    for record in records:
        for name, count in record.get("skipped", {}).items():
            totals[name] = totals.get(name, 0) + count
    return totals


class ClipEvaluator(Callback):
    """Scores generated clips with the metric suite, writes them as mp4 with sound, and ``results/<stage>.json``.

    Args:
        run_dir: the run directory.
        save_videos: mp4s written per validate/test run (-1: all; predict always writes all).
        metadata: recorded in the results (model, run, seed, versions).
        suite_factory: builds the :class:`~zoo.metrics.suite.MetricSuite` for the datamodule (its backbones depend
            on the data domain); ``None``: no scoring.
    """

    def __init__(self, run_dir: Path, save_videos: int = 4, metadata: Optional[dict] = None,
                 suite_factory: Optional[Callable[[Any], MetricSuite]] = None):
        self.run_dir = Path(run_dir)
        self.save_videos = save_videos
        self.metadata = metadata or {}
        self.suite_factory = suite_factory
        self.suite: Optional[MetricSuite] = None
        self.records: list[dict] = []
        self.videos_written = 0

    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage in ("validate", "test") and self.suite_factory is not None and self.suite is None:
            self.suite = self.suite_factory(trainer.datamodule)

    # Lightning hook plumbing: one handler for validate / test / predict.
    def _reset(self, trainer, pl_module) -> None:
        self.records, self.videos_written = [], 0
        if self.suite is not None:
            # FID's sum states must be where the DDP backend syncs them (NCCL: the module's GPU); by the epoch start
            # Lightning has put the module on its device.
            self.suite.to(pl_module.device)
            self.suite.reset()

    on_validation_epoch_start = on_test_epoch_start = on_predict_epoch_start = _reset

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if not trainer.sanity_checking and trainer.state.fn == "validate":
            self._handle(trainer, "val", outputs, batch)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self._handle(trainer, "test", outputs, batch)

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self._handle(trainer, "predict", outputs, batch, score=False)

    def _handle(self, trainer, stage: str, clip: Any, batch: dict, score: bool = True) -> None:
        if not isinstance(clip, GeneratedClip):
            return
        if score and self.suite is not None:
            scores = self.suite.score_clips(batch, clip.frames)
        else:
            scores = None
        limit = self.save_videos if stage != "predict" else -1
        for i, clip_id in enumerate(batch["clip_id"]):
            record = {"clip_id": clip_id, "sample_index": int(batch["sample_index"][i]),
                      "start": int(batch["start"][i]), "metrics": scores[i].metrics if scores else {}}
            if scores:
                record["skipped"] = scores[i].skipped
            if limit < 0 or self.videos_written < limit:
                path = self._write(trainer, stage, clip, batch, i)
                record["video"] = str(path)
                self.videos_written += 1
                log_video_file(trainer.logger, f"{stage}/video_{self.videos_written - 1}", path, clip_id,
                               trainer.global_step)
            self.records.append(record)

    def _write(self, trainer, stage: str, clip: GeneratedClip, batch: dict, i: int) -> Path:
        name = f"{batch['clip_id'][i]}_{int(batch['start'][i]):05d}.mp4"
        path = self.run_dir / "media" / stage / name
        audio = batch["audio"][i].float().cpu().numpy() if "audio" in batch else None
        fps = trainer.datamodule.fps
        write_video(path, to_uint8_hwc(clip.frames[i]), fps=fps, audio=audio,
                    sample_rate=trainer.datamodule.sample_rate)
        return path

    def _finish(self, trainer, pl_module, stage: str) -> None:
        records = gather_records(self.records)
        summary = aggregate(records)
        if self.suite is not None and stage != "predict":
            summary.update(self.suite.dataset_scores())   # collective under DDP: every rank calls it
        if stage != "predict" and summary:
            # round brackets in logged names: Rich (the progress/summary tables) treats [..] as markup
            pl_module.log_dict({f"{stage}/{k.replace('[', '(').replace(']', ')')}": v for k, v in summary.items()},
                               sync_dist=False)
        if trainer.is_global_zero:
            dataset = trainer.datamodule.dataset
            split = getattr(trainer.datamodule.cfg, f"{'val' if stage == 'val' else stage}_split")
            skipped = total_skipped(records)
            payload = {"stage": stage, "num_clips": len(records), "aggregate": summary, "clips": records,
                       "skipped": {"counts": skipped, "meaning": {k: SKIPPED_COUNTS[k] for k in skipped}},
                       "dataset": {"name": dataset.name, "version": dataset.version, "split": split,
                                   "root": str(dataset.root)},
                       "metrics": self.suite.describe() if self.suite is not None and stage != "predict" else {},
                       **self.metadata}
            write_json(self.run_dir / "results" / f"{stage}.json", payload, sort_keys=True)
        self.summary = summary

    def on_validation_epoch_end(self, trainer, pl_module):
        if not trainer.sanity_checking and trainer.state.fn == "validate":
            self._finish(trainer, pl_module, "val")

    def on_test_epoch_end(self, trainer, pl_module):
        self._finish(trainer, pl_module, "test")

    def on_predict_epoch_end(self, trainer, pl_module):
        self._finish(trainer, pl_module, "predict")


def has_preview(module) -> bool:
    """Whether a module (or module class) overrides :meth:`ZooModule.preview`."""
    cls = module if isinstance(module, type) else type(module)
    return cls.preview is not ZooModule.preview


class ValidationVideos(Callback):
    """Every ``every_n_epochs``-th validation epoch of a fit and the last: a few clips of the module's
    :meth:`~zoo.model.ZooModule.preview` (for video models ``ground truth | generated``) as mp4 with sound, to the
    logger. Previews can cost more than the validation itself (LSP's head pose samples autoregressively)."""

    def __init__(self, run_dir: Path, num_videos: int = 2, every_n_epochs: int = 1):
        self.run_dir = Path(run_dir)
        self.num_videos = num_videos
        self.every_n_epochs = every_n_epochs
        self._batch: Optional[dict] = None

    def due(self, trainer) -> bool:
        """Whether this validation epoch gets videos: every n-th epoch and the last one (when the fit has one)."""
        epoch, last = trainer.current_epoch, trainer.max_epochs
        return (epoch + 1) % self.every_n_epochs == 0 or (last is not None and last > 0 and epoch + 1 >= last)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if batch_idx == 0 and self._batch is None:
            self._batch = {k: v[: self.num_videos] for k, v in batch.items()}

    def on_validation_epoch_end(self, trainer, pl_module):
        batch, self._batch = self._batch, None
        if (trainer.sanity_checking or batch is None or not trainer.is_global_zero or self.num_videos <= 0
                or not has_preview(pl_module) or not self.due(trainer)):
            return
        with torch.no_grad():
            previews = pl_module.preview(batch)
        for i, clip_id in enumerate(batch["clip_id"]):
            path = self.run_dir / "media" / "val" / f"epoch{trainer.current_epoch:03d}_{clip_id}.mp4"
            audio = batch["audio"][i].float().cpu().numpy() if "audio" in batch else None
            write_video(path, to_uint8_hwc(previews[i]), fps=trainer.datamodule.fps, audio=audio,
                        sample_rate=trainer.datamodule.sample_rate)
            log_video_file(trainer.logger, f"val/video_{i}", path, f"{clip_id}: ground truth | generated",
                           trainer.global_step)
