"""TalkingHeadDataModule: batch shapes and dtypes, audio/feature alignment, references, determinism, workers."""
from __future__ import annotations

import multiprocessing.forkserver

import numpy as np
import pytest
import torch

from zoo.data import DataConfig, TalkingHeadDataModule, open_dataset
from zoo.data.datamodule import FORKSERVER_PRELOAD
from zoo.data.fake import write_fake_dataset
from zoo.data.features import log_mel, mfcc

from helpers import one_line_error

FPS, SR, SIZE = 25.0, 16000, 32
ALL_FIELDS = ["frames", "audio", "mel", "mfcc", "landmarks2d", "landmarks3d", "pose", "expression", "phoneme",
              "shoulders2d", "shoulders3d"]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    # 2 s clips (50 frames) over 2 identities; one val clip is 3 s so whole-clip lengths differ
    path = tmp_path_factory.mktemp("dm") / "data"
    return str(write_fake_dataset(path, splits={"train": 4, "val": 2, "test": 2}, size=SIZE,
                                  lengths=[2, 2, 2, 2, 2, 3, 2, 2]))


def make(root, stage="fit", **overrides) -> TalkingHeadDataModule:
    cfg = DataConfig(root=root, **{"window_seconds": 1.0, "batch_size": 4, "num_workers": 0, **overrides})
    datamodule = TalkingHeadDataModule(cfg)
    datamodule.setup(stage)
    return datamodule


def test_batch_shapes_and_dtypes_of_every_field(root):
    dm = make(root, fields=ALL_FIELDS, num_refs=3)
    batch = next(iter(dm.train_dataloader()))
    B, T, K = 4, 25, 3
    expected = {
        "frames": ((B, T, 3, SIZE, SIZE), torch.uint8), "audio": ((B, 16000), torch.float32),
        "mel": ((B, 2 * T, 80), torch.float32), "mfcc": ((B, 4 * T, 13), torch.float32),
        "landmarks2d": ((B, T, 68, 2), torch.float32), "landmarks3d": ((B, T, 68, 3), torch.float32),
        "pose": ((B, T, 6), torch.float32), "expression": ((B, T, 64), torch.float32),
        "phoneme": ((B, T), torch.int64), "shoulders2d": ((B, T, 18, 2), torch.float32),
        "shoulders3d": ((B, T, 18, 3), torch.float32), "ref_frames": ((B, K, 3, SIZE, SIZE), torch.uint8),
        "ref_index": ((B, K), torch.int64), "ref_landmarks2d": ((B, K, 68, 2), torch.float32),
        "start": ((B,), torch.int64), "sample_index": ((B,), torch.int64), "identity": ((B,), torch.int64),
        "style": ((B,), torch.int64), "intensity": ((B,), torch.int64), "intrinsics": ((B, 3, 3), torch.float32),
    }
    assert set(batch) == set(expected) | {"clip_id"}
    for key, (shape, dtype) in expected.items():
        assert tuple(batch[key].shape) == shape and batch[key].dtype == dtype, key
    assert isinstance(batch["clip_id"], list) and len(batch["clip_id"]) == B
    assert (dm.window_frames, dm.audio_window_samples, dm.fps, dm.sample_rate, dm.frame_size) == (25, 16000, FPS,
                                                                                                   SR, SIZE)


def test_windows_align_frames_audio_features_and_tracks(root):
    dm = make(root, fields=["frames", "audio", "mel", "mfcc", "pose"], num_refs=0)
    items = dm.split_dataset("train", train=True)
    starts = [w.start for w in items.windows if w.clip_id == items.windows[0].clip_id]
    assert starts == [0, 12, 24]                        # stride = window // 2 = 12 frames over a 50-frame clip
    ds = open_dataset(root)
    for index in (1, 2):
        sample = items[index]
        clip, s = ds.clip(sample["clip_id"]), sample["start"]
        full_audio = clip.read_audio(0, clip.num_samples)
        np.testing.assert_array_equal(sample["frames"].permute(0, 2, 3, 1).numpy(), clip.read_frames(s, s + 25))
        np.testing.assert_array_equal(sample["audio"].numpy(), full_audio[s * 640:(s + 25) * 640])
        np.testing.assert_allclose(sample["mel"].numpy(), log_mel(full_audio, SR, FPS)[2 * s:2 * s + 50], atol=1e-6)
        np.testing.assert_allclose(sample["mfcc"].numpy(), mfcc(full_audio, SR, FPS)[4 * s:4 * s + 100], atol=1e-4)
        np.testing.assert_array_equal(sample["pose"].numpy(), clip.track("pose")[s:s + 25])


def test_whole_clip_features_come_from_the_loaders_cache(root):
    """A model that needs a clip's feature whole (LSP's APC) reads it from the memory the loaders already hold."""
    with_mel, without = make(root, fields=["mel"]), make(root, fields=["audio"])
    assert with_mel.feature_cache("mel") is with_mel._features["mel"]
    clip_id = with_mel.dataset.clip_ids("train")[0]
    np.testing.assert_array_equal(without.feature_cache("mel").get(clip_id), with_mel.feature_cache("mel").get(clip_id))
    assert "mel" not in without._features          # asked for, it does not become a field of the batches


def test_reference_frames(root):
    train = make(root, fields=["frames", "landmarks2d"], num_refs=4).split_dataset("train", train=True)
    again = make(root, fields=["frames", "landmarks2d"], num_refs=4).split_dataset("train", train=True)
    ds = open_dataset(root)
    sample = train[3]
    clip = ds.clip(sample["clip_id"])
    refs = sample["ref_index"].numpy()
    assert len(set(refs.tolist())) == 4 and refs.min() >= 0 and refs.max() < clip.num_frames
    np.testing.assert_array_equal(sample["ref_frames"].permute(0, 2, 3, 1).numpy(),
                                  np.stack([clip.read_frames(i, i + 1)[0] for i in refs]))
    np.testing.assert_array_equal(sample["ref_landmarks2d"].numpy(), clip.track("landmarks2d")[refs])
    np.testing.assert_array_equal(again[3]["ref_index"], sample["ref_index"])            # seeded
    assert any(not torch.equal(train[i]["ref_index"], sample["ref_index"]) for i in range(4, 8))   # random
    val = make(root, stage="validate", num_refs=2).split_dataset("val")
    assert val[0]["ref_index"].tolist() == [12, 37]                                      # evenly spaced, 50 frames


def test_eval_windows_and_whole_clips(root):
    val = make(root, stage="validate").split_dataset("val")
    assert [(w.clip_id[-4:], w.start) for w in val.windows] == [("c004", 0), ("c004", 25), ("c005", 0),
                                                                  ("c005", 25), ("c005", 50)]
    whole = make(root, stage="validate", window_seconds=None, eval_batch_size=1)
    batches = list(whole.val_dataloader())
    assert [b["frames"].shape[1] for b in batches] == [50, 75] and [b["audio"].shape[1] for b in batches] == [32000,
                                                                                                           48000]
    one_line_error(lambda: make(root, stage="validate", window_seconds=None, eval_batch_size=2),
                   "different lengths cannot be batched; set data.eval_batch_size=1")


def test_single_frame_training_with_video_validation_windows(root):
    dm = make(root, window_seconds=0.04, train_stride_seconds=0.04, val_window_seconds=1.0, eval_batch_size=1)
    assert (dm.window_frames, dm.val_window_frames) == (1, 25)
    assert len(dm.split_dataset("train", train=True)) == 4 * 50                 # every frame of the 4 train clips
    assert next(iter(dm.train_dataloader()))["frames"].shape[:2] == (4, 1)
    assert [b["frames"].shape[:2] for b in dm.val_dataloader()] == [(1, 25)] * 5
    dm.setup("test")
    assert dm.split_dataset("test")[0]["frames"].shape[0] == 1                   # test windows are the train ones
    one_line_error(lambda: make(root, stage="validate", val_window_seconds=4.0), "split 'val'",
                   "no clip has 100 frames", "data.val_window_seconds=4.0")


def test_same_seed_same_batches_different_seed_differs(root):
    def first_batch(seed):
        return next(iter(make(root, fields=["audio"], seed=seed).train_dataloader()))

    a, b, c = first_batch(5), first_batch(5), first_batch(6)
    assert torch.equal(a["sample_index"], b["sample_index"]) and torch.equal(a["ref_index"], b["ref_index"])
    assert torch.equal(a["audio"], b["audio"])
    assert not torch.equal(a["sample_index"], c["sample_index"])


def test_workers_give_the_same_eval_batches(root):
    fields = ["frames", "audio", "mel", "phoneme"]
    common = dict(stage="test", fields=fields, num_refs=2, eval_batch_size=1)   # 4 batches over 2 workers
    serial = list(make(root, num_workers=0, **common).test_dataloader())
    loader = make(root, num_workers=2, **common).test_dataloader()
    assert loader.persistent_workers
    # Workers fork from a forkserver that has already imported the data stack (not each importing it again).
    assert loader.multiprocessing_context.get_start_method() == "forkserver"
    assert set(FORKSERVER_PRELOAD) <= set(multiprocessing.forkserver._forkserver._preload_modules)
    parallel = list(loader)
    assert len(serial) == len(parallel) == 4
    for x, y in zip(serial, parallel):
        assert x.keys() == y.keys()
        for key in x:
            assert x[key] == y[key] if key == "clip_id" else torch.equal(x[key], y[key]), key


def test_identity_filter_and_max_clips(root):
    dm = make(root, identities=[1])
    for split in ("train", "val"):
        items = dm.split_dataset(split, train=split == "train")
        assert {items[i]["identity"] for i in range(len(items))} == {1}
    assert {w.clip_id for w in make(root, max_clips=1).split_dataset("train", True).windows} == {"id000_train_c000"}
    one_line_error(lambda: make(root, identities=[9]), "split 'train'", "has no clip of identities [9]")


def test_train_on_all_identities_filters_only_the_evaluation_splits(root):
    dm = make(root, identities=[1], train_on_all_identities=True)
    train = dm.split_dataset("train", train=True)
    val = dm.split_dataset("val", train=False)
    assert {train[i]["identity"] for i in range(len(train))} == {0, 1}
    assert {val[i]["identity"] for i in range(len(val))} == {1}


def test_prepare_fn_runs_in_prepare_data(root):
    calls = []
    dm = TalkingHeadDataModule(DataConfig(root=root), prepare_fn=lambda: calls.append(1))
    dm.prepare_data()
    assert calls == [1]


def test_config_errors(root, tmp_path):
    one_line_error(lambda: TalkingHeadDataModule(DataConfig(fields=["frames", "melspec"])),
                   "unknown data field(s) 'melspec'", "valid fields: frames, audio, mel, mfcc, landmarks2d")
    one_line_error(lambda: make(None), "data.root is not set")
    one_line_error(lambda: make(str(tmp_path)), "is not a prepared dataset")
    one_line_error(lambda: make(root, window_seconds=10.0), "no clip has 250 frames", "window_seconds=10.0")
    one_line_error(lambda: make(root, train_split="training"), "has no split 'training' (splits: train, val, test)")
    bare = write_fake_dataset(tmp_path / "bare", splits={"train": 1}, seconds=1.0, size=16, tracks=["pose"])
    one_line_error(lambda: make(str(bare), fields=["frames", "landmarks2d"]), "has no field(s) 'landmarks2d'",
                   "it has: frames, audio, pose")


def test_dataset_properties_need_setup_and_stages_are_lightnings(root):
    datamodule = TalkingHeadDataModule(DataConfig(root=root))
    with pytest.raises(RuntimeError, match=r"call setup\(\) before reading dataset properties"):
        datamodule.frame_size
    with pytest.raises(ValueError, match="unknown stage 'training'"):
        datamodule.setup("training")


def test_lightning_fit_consumes_the_datamodule(root, tmp_path):
    import pytorch_lightning as pl

    class Tiny(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(80, 1)

        def training_step(self, batch, _):
            assert batch["mel"].shape[1:] == (50, 80)
            return self.layer(batch["mel"]).mean()

        def validation_step(self, batch, _):
            self.log("val", self.layer(batch["mel"]).mean(), batch_size=len(batch["clip_id"]))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    dm = TalkingHeadDataModule(DataConfig(root=root, window_seconds=1.0, fields=["mel"], num_refs=0,
                                          batch_size=4, num_workers=0))
    trainer.fit(Tiny(), datamodule=dm)
    assert trainer.global_step == 2 * 3                 # 12 windows, batch 4


@pytest.mark.parametrize("overrides, fragment", [
    (dict(batch_size=0), "data.batch_size must be in [1, inf), got 0"),
    (dict(eval_batch_size=0), "data.eval_batch_size must be in [1, inf), got 0"),
    (dict(max_clips=0), "data.max_clips must be in [1, inf), got 0"),
    (dict(num_refs=-1), "data.num_refs must be in [0, inf), got -1"),
    (dict(window_seconds=0.0), "data.window_seconds must be in (0, inf), got 0.0"),
    (dict(train_stride_seconds=-1.0), "data.train_stride_seconds must be in (0, inf), got -1.0"),
    (dict(val_window_seconds=0.0), "data.val_window_seconds must be in (0, inf), got 0.0"),
])
def test_bad_numbers_are_one_line_errors(overrides, fragment):
    one_line_error(lambda: TalkingHeadDataModule(DataConfig(**overrides)), fragment)


def test_bad_or_missing_meta(tmp_path):
    from zoo.data import write_clip, write_dataset
    from zoo.data.fake import fake_clip

    frames, audio, _ = fake_clip(25, 16, FPS, SR, seed=0, tracks=())
    for clip_id, meta in [("a", {"identity": "alice"}), ("b", {"style": 1}), ("c", {"identity": 0})]:
        write_clip(tmp_path, clip_id, frames=frames, audio=audio, sample_rate=SR, fps=FPS, tracks={}, meta=meta)
    write_dataset(tmp_path, name="m", version="v", fps=FPS, sample_rate=SR, frame_size=16,
                  splits={"train": ["a"], "val": ["b"], "ok": ["c"]}, info={})
    one_line_error(lambda: make(str(tmp_path), train_split="train", val_split="train"),
                   "clip 'a' field 'meta.identity': expected an integer, got 'alice'")
    one_line_error(lambda: make(str(tmp_path), stage="validate", identities=[0]),
                   "clip 'b' field 'meta.identity': missing, but data.identities is set")
    # every identity in training still needs each train clip to say whose it is (the speakers are told apart)
    one_line_error(lambda: make(str(tmp_path), train_split="val", val_split="ok", identities=[0],
                                train_on_all_identities=True),
                   "clip 'b' field 'meta.identity': missing, but data.identities is set")


def test_a_data_error_in_a_worker_is_the_workers_one_line(tmp_path):
    root = write_fake_dataset(tmp_path / "data", splits={"train": 1, "test": 1}, seconds=1.0, size=16)
    datamodules = {workers: make(str(root), stage="test", num_workers=workers) for workers in (0, 1)}
    clip_dir = root / "clips" / datamodules[0].dataset.splits["test"][0]
    data = bytearray((clip_dir / "frames.bin").read_bytes())   # damaged after the dataset was opened
    data[100:300] = b"\x00" * 200
    (clip_dir / "frames.bin").write_bytes(bytes(data))
    messages = {workers: one_line_error(lambda: list(dm.test_dataloader()), "field 'frames'", "undecodable")
                for workers, dm in datamodules.items()}
    assert messages[1] == messages[0] and "Traceback" not in messages[1]
