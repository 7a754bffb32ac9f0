"""Building the synthetic corpus on disk: splits, determinism, caching, atomicity."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

import zoo.data.clip_writer as clip_writer
import zoo.synth.corpus as corpus
from zoo.data.clip_format import open_dataset
from zoo.errors import DataError
from zoo.evaluators.kit import default_kit_dir
from zoo.synth import SynthConfig, build_corpus, clip_plan, config_hash, default_root

from helpers import one_line_error

# The config of the shared `tiny_corpus` test fixture.
TINY = SynthConfig(seed=0, identities=2, unseen_identities=1, styles=2, intensities=2, clips_per_identity=4,
                   seconds=2.0, size=64)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, float]:
    root = tmp_path_factory.mktemp("synth") / "tiny"
    start = time.perf_counter()
    build_corpus(TINY, root, progress=False)
    return root, time.perf_counter() - start


def test_tiny_corpus_builds_fast_and_opens(tiny):
    root, seconds = tiny
    assert seconds < 15.0  # ~0.4 s on one core; generous for a loaded machine
    ds = open_dataset(root)
    assert ds.name == "synth" and ds.version == config_hash(TINY)
    assert ds.fps == 25.0 and ds.sample_rate == 16000 and ds.frame_size == 64
    assert set(ds.fields) >= {"frames", "audio", "landmarks2d", "landmarks3d", "pose", "expression", "phoneme",
                              "shoulders2d", "shoulders3d"}
    assert ds.info["config"]["clips_per_identity"] == 4 and ds.info["expression"]["mouth_dims"][:3] == [0, 1, 2]
    clip = ds.clip(ds.clip_ids("train")[0])
    assert clip.num_frames == 50 and clip.num_samples == 32000
    assert clip.read_frames(0, 2).shape == (2, 64, 64, 3)
    assert abs(clip.read_audio(0, 32000)).max() > 0.05
    for key in ("identity", "style", "intensity", "identity_coeffs", "intrinsics"):
        assert key in clip.meta


def test_splits_by_clip_and_unseen_identities(tiny):
    ds = open_dataset(tiny[0])
    assert set(ds.splits) == {"train", "val", "test", "test_unseen"}
    ids = {s: ds.clip_ids(s) for s in ds.splits}
    all_ids = sum(ids.values(), [])
    assert len(all_ids) == len(set(all_ids)) == 2 * 4 + 1 * 2  # no clip in two splits
    who = {s: {ds.clip(c).meta["identity"] for c in v} for s, v in ids.items()}
    assert who["train"] == who["val"] == who["test"] == {0, 1}  # person-specific train/test on the same people
    assert who["test_unseen"] == {2}
    for split, clips in ids.items():
        for clip_id in clips:
            meta = ds.clip(clip_id).meta
            assert clip_id == f"id{meta['identity']:03d}_s{meta['style']}i{meta['intensity']}_c{clip_id[-3:]}"
            assert meta["seen"] == (split != "test_unseen")
    # the default corpus: every seen identity covers every style; unseen identities get half the clips
    plan, splits = clip_plan(SynthConfig())
    styles = {}
    for item in plan:
        styles.setdefault(item["identity"], set()).add(item["style"])
    assert all(s == set(range(6)) for s in styles.values())
    assert len(splits["test_unseen"]) == 2 * 12 and len(plan) == 6 * 24 + 2 * 12


def test_same_seed_identical_bytes_different_seed_differs(tiny, tmp_path):
    again = build_corpus(TINY, tmp_path / "again", progress=False)
    assert _files(again) == _files(tiny[0])
    other = build_corpus(SynthConfig(**{**TINY.__dict__, "seed": 1}), tmp_path / "other", progress=False)
    a, b = _files(tiny[0]), _files(other)
    assert a["dataset.json"] != b["dataset.json"]
    frames_a = [v for k, v in a.items() if k.endswith("frames.bin")]
    frames_b = [v for k, v in b.items() if k.endswith("frames.bin")]
    assert not set(frames_a) & set(frames_b)


def test_rebuild_is_cached_and_interrupted_builds_never_look_complete(tmp_path, monkeypatch):
    cfg = SynthConfig(identities=1, unseen_identities=0, styles=1, intensities=1, clips_per_identity=3,
                      seconds=1.0, size=64)
    root = tmp_path / "c"

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(clip_writer, "write_dataset", crash)
    with pytest.raises(KeyboardInterrupt):
        build_corpus(cfg, root, progress=False)
    monkeypatch.undo()
    assert (root / "clips").is_dir() and not (root / "dataset.json").exists()
    with pytest.raises(DataError, match="is not a prepared dataset: no dataset.json"):
        open_dataset(root)
    calls = []
    real = corpus.generate_clip
    monkeypatch.setattr(corpus, "generate_clip", lambda *a, **k: calls.append(a) or real(*a, **k))
    build_corpus(cfg, root, progress=False)  # resumes: finished clips are kept
    assert calls == [] and open_dataset(root).version == config_hash(cfg)
    stamp = (root / "dataset.json").stat().st_mtime_ns
    build_corpus(cfg, root, progress=False)  # complete and current: nothing is rewritten
    assert (root / "dataset.json").stat().st_mtime_ns == stamp and calls == []
    # a synthetic corpus of another config at the same place is replaced
    cfg2 = SynthConfig(**{**cfg.__dict__, "seed": 3})
    build_corpus(cfg2, root, progress=False)
    assert open_dataset(root).version == config_hash(cfg2) and len(calls) == 3


@pytest.mark.parametrize("header, name", [('{"name": "vox", "version": "x"}', "'vox'"), ("[1]", "None"),
                                          ("{oops", "None")])
def test_refuses_to_overwrite_other_datasets(tmp_path, header, name):
    root = tmp_path / "real"
    root.mkdir()
    (root / "dataset.json").write_text(header)
    one_line_error(lambda: build_corpus(SynthConfig(identities=1, unseen_identities=0, clips_per_identity=3,
                                                    seconds=1.0, size=64), root, progress=False),
                   f"{root} holds another dataset ({name}); refusing to overwrite it with the synthetic corpus")
    assert (root / "dataset.json").read_text() == header


def test_an_unusable_directory_is_one_line_before_any_clip(tmp_path, monkeypatch):
    small = SynthConfig(identities=1, unseen_identities=0, clips_per_identity=3, seconds=1.0, size=64)
    monkeypatch.setattr(corpus, "generate_clip", lambda *a, **k: pytest.fail("generated a clip first"))
    (tmp_path / "afile").write_text("")
    one_line_error(lambda: build_corpus(small, tmp_path / "afile", progress=False),
                   f"cannot create the corpus directory {tmp_path / 'afile'}: ")
    one_line_error(lambda: build_corpus(small, tmp_path / "afile" / "below", progress=False),
                   f"cannot create the corpus directory {tmp_path / 'afile' / 'below'}: Not a directory")
    monkeypatch.setattr(corpus.os, "access", lambda path, mode: False)       # root may write anywhere
    one_line_error(lambda: build_corpus(small, tmp_path / "ro", progress=False),
                   f"cannot write the corpus directory {tmp_path / 'ro'}: permission denied")


def test_default_root_is_keyed_by_config(monkeypatch, tmp_path):
    monkeypatch.setenv("ZOO_DATA_DIR", str(tmp_path))
    assert default_root(TINY) == tmp_path / f"synth-{config_hash(TINY)}"
    assert default_root(TINY) != default_root(SynthConfig())
    assert default_kit_dir() == tmp_path / "evaluator-kit"
    monkeypatch.setenv("ZOO_DATA_DIR", "")                      # empty is unset, not the working directory
    assert default_root(TINY) == Path("data") / f"synth-{config_hash(TINY)}"
    assert default_kit_dir() == Path("data") / "evaluator-kit"


def test_tracks_on_disk_match_generation(tiny):
    ds = open_dataset(tiny[0])
    clip_id = ds.clip_ids("val")[0]
    clip = ds.clip(clip_id)
    item = next(i for i in clip_plan(TINY)[0] if i["clip_id"] == clip_id)
    fresh = corpus.generate_clip(TINY, item["identity"], item["style"], item["intensity"], item["clip_seed"])
    np.testing.assert_array_equal(clip.read_frames(0, clip.num_frames), fresh["frames"])  # PNG is lossless
    for name in ("landmarks2d", "pose", "expression", "phoneme", "shoulders3d"):
        np.testing.assert_array_equal(clip.track(name), fresh[name])
    audio = clip.read_audio(0, clip.num_samples)
    assert np.abs(audio - fresh["audio"]).max() < 1e-4  # 16-bit PCM
