"""Prepared-clip datasets: the on-disk format, aligned audio features and the one datamodule."""
import os
from pathlib import Path

from zoo.data.clip_format import SCHEMA_VERSION, TRACK_SPECS, Clip, ClipDataset, open_dataset
from zoo.data.clip_writer import write_clip, write_dataset
from zoo.data.datamodule import DataConfig, TalkingHeadDataModule
from zoo.data.dataset import FIELDS

__all__ = ["SCHEMA_VERSION", "TRACK_SPECS", "FIELDS", "Clip", "ClipDataset", "open_dataset", "write_clip",
           "write_dataset", "DataConfig", "TalkingHeadDataModule", "data_dir"]


def data_dir() -> Path:
    """Where the zoo caches what it builds (synthetic corpora, evaluator kits): ``$ZOO_DATA_DIR``, else ``./data``
    (an empty ``ZOO_DATA_DIR`` counts as unset, so nothing lands in the working directory by accident)."""
    return Path(os.environ.get("ZOO_DATA_DIR") or "data")
