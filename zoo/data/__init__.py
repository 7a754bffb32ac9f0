"""Prepared-clip datasets: the on-disk format, aligned audio features and the one datamodule."""
from zoo.data.clip_format import SCHEMA_VERSION, TRACK_SPECS, Clip, ClipDataset, open_dataset, write_clip, write_dataset
from zoo.data.datamodule import DataConfig, TalkingHeadDataModule
from zoo.data.dataset import FIELDS

__all__ = ["SCHEMA_VERSION", "TRACK_SPECS", "FIELDS", "Clip", "ClipDataset", "open_dataset", "write_clip",
           "write_dataset", "DataConfig", "TalkingHeadDataModule"]
