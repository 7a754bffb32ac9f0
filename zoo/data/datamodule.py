"""The one LightningDataModule every model trains and evaluates on, configured by :class:`DataConfig`.

Train items are windows at a stride over every clip of the train split, shuffled by the DataLoader (Lightning
swaps in a DistributedSampler under DDP); eval items are non-overlapping fixed windows (or whole clips when
``window_seconds=None``) in a fixed order. Batches are dicts; see :class:`zoo.data.dataset.WindowDataset` for the
per-sample keys, collated to a leading batch dim B:

* ``frames`` uint8 ``[B, T, 3, H, W]``, ``audio`` float32 ``[B, round(T * sr / fps)]``, ``mel`` float32
  ``[B, 2T, 80]``, ``mfcc`` float32 ``[B, 4T, 13]`` at 25 fps, tracks float32 ``[B, T, ...]`` (phoneme int64);
* ``ref_frames`` uint8 ``[B, K, 3, H, W]``, ``ref_index`` int64 ``[B, K]``, ``ref_landmarks2d`` ``[B, K, 68, 2]``;
* ``clip_id`` list[str], ``start``/``sample_index``/``identity``/``style``/``intensity`` int64 ``[B]``,
  ``intrinsics`` float32 ``[B, 3, 3]``.
"""
from __future__ import annotations

import multiprocessing
from dataclasses import dataclass, field
from typing import Callable, ClassVar, List, Optional

import cv2
import pytorch_lightning as pl
import torch
import torch.distributed as dist
from pytorch_lightning.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader

from zoo.data.clip_format import ClipDataset, open_dataset
from zoo.data.dataset import FIELDS, WindowDataset, make_windows
from zoo.data.features import FEATURES, FeatureCache
from zoo.bounds import require_in_bounds
from zoo.errors import DataError

__all__ = ["DataConfig", "TalkingHeadDataModule"]


@dataclass
class DataConfig:
    """Which data a model sees and how it is batched (an OmegaConf structured config)."""

    name: str = "synth"
    root: Optional[str] = None                      # prepared dataset directory (filled in for name=synth)
    window_seconds: Optional[float] = 2.0           # window length; None = whole clips
    train_stride_seconds: Optional[float] = None    # distance between train windows; None = window / 2
    # window of the val split (data.val_split); None = window_seconds. Lets a model train on single frames and
    # still validate (and preview) on video windows.
    val_window_seconds: Optional[float] = None
    fields: List[str] = field(default_factory=lambda: ["frames", "audio"])
    num_refs: int = 1                               # K reference frames per sample
    identities: Optional[List[int]] = None          # keep only clips whose meta identity is listed
    # the train split keeps every identity's clips (data.identities then filters the val/test/predict splits):
    # a person-specific model that also learns from other people, and is validated on its own person
    train_on_all_identities: bool = False
    max_clips: Optional[int] = None                 # first N clips of each split (debugging)
    batch_size: int = 8
    eval_batch_size: Optional[int] = None           # None = batch_size
    num_workers: int = 2
    pin_memory: bool = False
    seed: int = 0
    train_split: str = "train"
    val_split: str = "val"
    test_split: str = "test"
    predict_split: str = "test"

    bounds: ClassVar[dict[str, str]] = {
        "window_seconds": "(0, inf)", "train_stride_seconds": "(0, inf)", "val_window_seconds": "(0, inf)",
        "num_refs": "[0, inf)", "max_clips": "[1, inf)", "batch_size": "[1, inf)", "eval_batch_size": "[1, inf)",
        "num_workers": "[0, inf)"}


def _worker_init(_: int) -> None:
    cv2.setNumThreads(1)  # the DataLoader already runs one process per core; no nested thread pools


# What the forkserver imports once, before it forks any worker: otherwise every worker imports torch and the data
# stack itself, 10-13 s before a loader's first batch on 2 cores, for each of the 8 loaders of `zoo fit --model lsp`
# (0.8 s with this). "__main__" is the forkserver's own default. The imports start idle thread pools (OpenBLAS,
# OpenCV) in the server, but it never computes, so no lock is held when it forks (160 worker forks in a row ran).
FORKSERVER_PRELOAD = ("__main__", "torch", "zoo.data.datamodule")


def _worker_context():
    """The DataLoader workers' multiprocessing context: a forkserver with :data:`FORKSERVER_PRELOAD` (the list only
    takes effect if set before the server starts, i.e. before the process' first worker)."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(list(FORKSERVER_PRELOAD))
    return context


class TalkingHeadDataModule(pl.LightningDataModule):
    """Windows of a prepared dataset (:mod:`zoo.data.clip_format`) as dict batches.

    ``prepare_fn`` (optional) runs in :meth:`prepare_data` (rank 0 only), e.g. to build the synthetic corpus.
    After :meth:`setup`, ``dataset``, ``fps``, ``sample_rate``, ``frame_size``, ``window_frames`` and
    ``audio_window_samples`` describe the data.
    """

    def __init__(self, cfg: DataConfig, prepare_fn: Optional[Callable[[], None]] = None):
        super().__init__()
        self.cfg = cfg
        self.prepare_fn = prepare_fn
        fields = list(cfg.fields)
        unknown = [f for f in fields if f not in FIELDS]
        if unknown:
            raise DataError(f"unknown data field(s) {', '.join(map(repr, unknown))} in data.fields; valid fields: "
                            f"{', '.join(FIELDS)}")
        self.fields = list(dict.fromkeys(fields))
        require_in_bounds(cfg, "data", DataConfig, error=DataError)
        self.dataset: Optional[ClipDataset] = None
        self._splits: dict[tuple[str, bool], WindowDataset] = {}  # (split, train) -> items
        self._features: dict[str, FeatureCache] = {}

    # ------------------------------------------------------------------------------------------ description

    @property
    def fps(self) -> float:
        return self._opened().fps

    @property
    def sample_rate(self) -> int:
        return self._opened().sample_rate

    @property
    def frame_size(self) -> int:
        return self._opened().frame_size

    @property
    def window_frames(self) -> Optional[int]:
        """Frames per window (``round(window_seconds * fps)``), None for whole clips."""
        return self._frames(self.cfg.window_seconds)

    @property
    def val_window_frames(self) -> Optional[int]:
        """Frames per validation window: ``val_window_seconds`` if set, else :attr:`window_frames`."""
        if self.cfg.val_window_seconds is None:
            return self.window_frames
        return self._frames(self.cfg.val_window_seconds)

    def _frames(self, seconds: Optional[float]) -> Optional[int]:
        return None if seconds is None else max(1, int(round(seconds * self._opened().fps)))

    @property
    def audio_window_samples(self) -> Optional[int]:
        """Audio samples per window, ``round(window_frames * sr / fps)``."""
        frames = self.window_frames
        return None if frames is None else int(round(frames * self.sample_rate / self.fps))

    def _opened(self) -> ClipDataset:
        if self.dataset is None:
            raise RuntimeError("TalkingHeadDataModule: call setup() before reading dataset properties")
        return self.dataset

    # ------------------------------------------------------------------------------------------ lifecycle

    def prepare_data(self) -> None:
        if self.prepare_fn is not None:
            self.prepare_fn()

    def setup(self, stage: Optional[str] = None) -> None:
        """Open (and validate) the dataset and build the split(s) ``stage`` needs (all for ``None``)."""
        if self.dataset is None:
            if not self.cfg.root:
                raise DataError(f"data '{self.cfg.name}': data.root is not set (a prepared dataset directory)")
            self.dataset = open_dataset(self.cfg.root)
            missing = [f for f in self.fields if f not in (*self.dataset.fields, *FEATURES)]
            if missing:
                raise DataError(f"dataset '{self.dataset.name}' at {self.dataset.root} has no field(s) "
                                f"{', '.join(map(repr, missing))}; it has: {', '.join(self.dataset.fields)}")
            self._features = {f: FeatureCache(self.dataset, f) for f in self.fields if f in FEATURES}
        cfg = self.cfg
        wanted = {"fit": [cfg.train_split, cfg.val_split], "validate": [cfg.val_split], "test": [cfg.test_split],
                  "predict": [cfg.predict_split]}
        splits = wanted.get(stage) if stage else [s for names in wanted.values() for s in names]
        if splits is None:
            raise ValueError(f"unknown stage {stage!r}")
        for i, split in enumerate(splits):
            train = stage in (None, "fit") and i == 0   # the train split comes first in fit's list
            if (split, train) not in self._splits:
                self._splits[split, train] = self._build_split(split, train)

    def _build_split(self, split: str, train: bool) -> WindowDataset:
        dataset, cfg = self._opened(), self.cfg
        clip_ids = dataset.clip_ids(split)
        if cfg.identities is not None:
            wanted = {int(i) for i in cfg.identities}
            for clip_id in clip_ids:
                if "identity" not in dataset.clip(clip_id).meta:
                    raise DataError(f"clip '{clip_id}' field 'meta.identity': missing, but data.identities is set "
                                    f"in {dataset.clip(clip_id).path / 'clip.json'}")
            if not (train and cfg.train_on_all_identities):
                clip_ids = [c for c in clip_ids if dataset.clip(c).meta["identity"] in wanted]
            if not clip_ids:
                raise DataError(f"split '{split}' of dataset '{dataset.name}' has no clip of identities "
                                f"{sorted(wanted)} (data.identities)")
        if cfg.max_clips is not None:
            clip_ids = clip_ids[:cfg.max_clips]
        lengths = [(c, dataset.clip(c).num_frames) for c in clip_ids]
        is_val = not train and split == cfg.val_split
        window = self.val_window_frames if is_val else self.window_frames
        if window is None:
            stride = None
            batch = cfg.batch_size if train else (cfg.eval_batch_size or cfg.batch_size)
            if batch > 1 and len({n for _, n in lengths}) > 1:
                raise DataError(f"split '{split}': whole-clip items (data.window_seconds=null) of different lengths "
                                f"cannot be batched; set data.{'batch_size' if train else 'eval_batch_size'}=1")
        elif train:
            seconds = cfg.train_stride_seconds
            stride = max(1, int(round(seconds * dataset.fps))) if seconds is not None else max(1, window // 2)
        else:
            stride = window
        windows = make_windows(lengths, window, stride)
        if not windows:
            key = "val_window_seconds" if is_val and cfg.val_window_seconds is not None else "window_seconds"
            raise DataError(f"split '{split}' of dataset '{dataset.name}': no clip has {window} frames "
                            f"(data.{key}={getattr(cfg, key)} at {dataset.fps:g} fps)")
        for cache in self._features.values():  # in the main process, before workers fork
            cache.precompute(clip_ids)
        return WindowDataset(dataset, windows, fields=self.fields, num_refs=cfg.num_refs, train=train,
                             seed=cfg.seed, features=self._features)

    def feature_cache(self, feature: str) -> FeatureCache:
        """The whole-clip ``mel``/``mfcc`` the windows are cut from (after :meth:`setup`): for a model that needs a
        clip's feature whole, from the memory the loaders already hold when the feature is one of the fields."""
        cache = self._features.get(feature)
        return cache if cache is not None else FeatureCache(self._opened(), feature)

    def split_dataset(self, split: str, train: bool = False) -> WindowDataset:
        """The items of ``split`` built by :meth:`setup` (``train=True``: the strided, randomly-referenced ones)."""
        if (split, train) not in self._splits:
            raise RuntimeError(f"split '{split}' is not set up; call setup() with the stage that uses it")
        return self._splits[split, train]

    # ------------------------------------------------------------------------------------------ loaders

    def _loader(self, split: str, train: bool) -> DataLoader:
        cfg = self.cfg
        dataset = self.split_dataset(split, train)
        batch_size = cfg.batch_size if train else (cfg.eval_batch_size or cfg.batch_size)
        workers = int(cfg.num_workers)
        sampler = None
        if not train and self._evaluating() and dist.is_available() and dist.is_initialized():
            # Evaluation under DDP: every clip exactly once (Lightning's default sampler pads the split by
            # repeating samples, which would count them twice in dataset-level metrics such as FID).
            sampler = UnrepeatedDistributedSampler(dataset, shuffle=False)
        return DataLoader(
            dataset, batch_size=batch_size, shuffle=train, sampler=sampler,
            # a full last batch only: BatchNorm-style layers break on a batch of one (kept for tiny splits)
            drop_last=train and len(dataset) >= batch_size,
            generator=torch.Generator().manual_seed(int(cfg.seed)) if train else None,
            num_workers=workers, persistent_workers=workers > 0, pin_memory=cfg.pin_memory,
            # Workers start from a clean server process, not a fork of this one: forking a process that already
            # runs threads (earlier fits' pools, progress bars, OpenCV) can deadlock the child at start-up.
            multiprocessing_context=_worker_context() if workers > 0 else None,
            worker_init_fn=_worker_init if workers > 0 else None)

    def _evaluating(self) -> bool:
        """True in a standalone validate/test/predict run (not the validation loop inside a fit)."""
        trainer = getattr(self, "trainer", None)
        return trainer is not None and trainer.state.fn in ("validate", "test", "predict")

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.cfg.train_split, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.cfg.val_split, train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.cfg.test_split, train=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.cfg.predict_split, train=False)
