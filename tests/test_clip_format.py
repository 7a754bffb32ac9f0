"""The prepared-clip format: lossless round trip, random access, atomic writes, one-line validation errors."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import soundfile as sf

from zoo.data import SCHEMA_VERSION, TRACK_SPECS, open_dataset, write_clip, write_dataset
from zoo.data.fake import fake_clip, write_fake_dataset

from helpers import one_line_error

FPS, SR, SIZE = 25.0, 16000, 32


@pytest.fixture(scope="module")
def dataset_root(tmp_path_factory):
    return write_fake_dataset(tmp_path_factory.mktemp("fmt") / "data", splits={"train": 2, "val": 1},
                              seconds=1.0, size=SIZE)


@pytest.fixture
def broken(dataset_root, tmp_path):
    """A private copy of the dataset to damage; returns (root, first clip dir, its clip id)."""
    root = tmp_path / "copy"
    shutil.copytree(dataset_root, root)
    clip_id = json.loads((root / "dataset.json").read_text())["splits"]["train"][0]
    return root, root / "clips" / clip_id, clip_id


def test_round_trip_is_lossless_with_random_access(tmp_path):
    frames, audio, tracks = fake_clip(30, SIZE, FPS, SR, seed=3)
    meta = {"identity": 7, "intrinsics": np.eye(3).tolist()}
    write_clip(tmp_path, "a", frames=frames, audio=audio, sample_rate=SR, fps=FPS, tracks=tracks, meta=meta)
    write_dataset(tmp_path, name="t", version="v1", fps=FPS, sample_rate=SR, frame_size=SIZE,
                  splits={"train": ["a"]}, info={"k": 1})
    ds = open_dataset(tmp_path)
    assert (ds.name, ds.version, ds.fps, ds.sample_rate, ds.frame_size) == ("t", "v1", FPS, SR, SIZE)
    assert ds.fields == ["frames", "audio", *sorted(TRACK_SPECS)] and ds.info == {"k": 1}
    clip = ds.clip("a")
    assert clip.num_frames == 30 and clip.num_samples == 30 * SR // 25 and clip.meta == meta
    np.testing.assert_array_equal(clip.read_frames(0, 30), frames)           # PNG is lossless
    np.testing.assert_array_equal(clip.read_frames(11, 14), frames[11:14])   # random access window
    assert clip.read_frames(5, 5).shape == (0, SIZE, SIZE, 3)
    window = clip.read_audio(640, 1280)
    assert window.dtype == np.float32 and np.abs(window - audio[640:1280]).max() <= 1 / 32768 + 1e-7
    for name, array in tracks.items():
        stored = clip.track(name)
        assert isinstance(stored, np.memmap) and stored.dtype == np.dtype(TRACK_SPECS[name][1])
        np.testing.assert_array_equal(stored, array)
        np.testing.assert_array_equal(clip.read_track(name, 3, 9), array[3:9])
    with pytest.raises(IndexError, match="outside"):
        clip.read_frames(25, 31)
    assert sorted(p.name for p in (tmp_path / "clips").iterdir()) == ["a"]  # no temp directories left


def test_rewriting_a_clip_replaces_it_atomically(tmp_path, monkeypatch):
    frames, audio, tracks = fake_clip(10, SIZE, FPS, SR, seed=1)
    write_clip(tmp_path, "c", frames=frames, audio=audio, sample_rate=SR, fps=FPS, tracks=tracks, meta={})
    import zoo.data.clip_writer as fmt

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(fmt.np, "save", crash)
    with pytest.raises(OSError):
        write_clip(tmp_path, "c", frames=frames[::-1].copy(), audio=audio, sample_rate=SR, fps=FPS, tracks=tracks,
                   meta={})
    monkeypatch.undo()
    assert [p.name for p in (tmp_path / "clips").iterdir()] == ["c"]      # temp dir removed, old clip intact
    write_dataset(tmp_path, name="t", version="v", fps=FPS, sample_rate=SR, frame_size=SIZE, splits={"a": ["c"]},
                  info={})
    np.testing.assert_array_equal(open_dataset(tmp_path).clip("c").read_frames(0, 10), frames)


@pytest.mark.parametrize("change, fragments", [
    (dict(audio=np.zeros(100, np.float32)), ["clip 'x' field 'audio'", "expected N=round(T*sr/fps)=6400", "got 100"]),
    (dict(frames=np.zeros((10, 8, 8), np.uint8)), ["clip 'x' field 'frames'", "expected uint8 [T, H, W, 3]"]),
    (dict(tracks={"pose": np.zeros((9, 6))}), ["clip 'x' field 'pose'", "expected shape (T, 6) with T=10, got (9, 6)"]),
    (dict(tracks={"pose": np.full((10, 6), np.nan)}), ["clip 'x' field 'pose'", "NaN"]),
    (dict(tracks={"phoneme": np.full(10, 0.5)}), ["clip 'x' field 'phoneme'", "int16"]),
    (dict(tracks={"Bad-Name": np.zeros(10)}), ["clip 'x' field 'Bad-Name'", "invalid track name"]),
    (dict(meta={"a": object()}), ["clip 'x' field 'meta'", "not JSON-serialisable"]),
    (dict(audio=np.full(6400, 3.0, np.float32)), ["clip 'x' field 'audio'", "[-1, 1]"]),
    (dict(clip_id="../evil"), ["invalid clip id '../evil'"]),
])
def test_write_clip_rejects_bad_input(tmp_path, change, fragments):
    args = dict(clip_id="x", frames=np.zeros((10, 8, 8, 3), np.uint8), audio=np.zeros(6400, np.float32),
                sample_rate=SR, fps=FPS, tracks={}, meta={})
    args.update(change)
    one_line_error(lambda: write_clip(tmp_path, **args), *fragments)
    assert not (tmp_path / "clips").exists() or not any((tmp_path / "clips").iterdir())


def test_write_dataset_validates_before_writing_the_header(tmp_path):
    frames, audio, tracks = fake_clip(10, SIZE, FPS, SR, seed=0)
    write_clip(tmp_path, "a", frames=frames, audio=audio, sample_rate=SR, fps=FPS, tracks=tracks, meta={})
    del tracks["pose"]
    write_clip(tmp_path, "b", frames=frames, audio=audio, sample_rate=SR, fps=FPS, tracks=tracks, meta={})
    common = dict(name="t", version="v", fps=FPS, sample_rate=SR, info={})
    one_line_error(lambda: write_dataset(tmp_path, frame_size=SIZE, splits={"train": ["a", "b"]}, **common),
                   "clip 'b' field 'pose': missing, but clip 'a' has it")
    one_line_error(lambda: write_dataset(tmp_path, frame_size=SIZE, splits={"train": ["a", "zz"]}, **common),
                   "clip 'zz' field 'clip.json': missing (clip listed in split 'train')")
    one_line_error(lambda: write_dataset(tmp_path, frame_size=64, splits={"train": ["a"]}, **common),
                   "clip 'a' field 'frames': expected 64x64 frames, got 32x32")
    one_line_error(lambda: write_dataset(tmp_path, frame_size=SIZE, splits={"train": ["a"]}, **{**common, "fps": 30}),
                   "clip 'a' field 'fps': expected the dataset's 30")
    assert not (tmp_path / "dataset.json").exists()


def test_incomplete_or_missing_dataset(tmp_path):
    one_line_error(lambda: open_dataset(tmp_path / "nope"), "dataset directory not found")
    (tmp_path / "clips").mkdir()
    one_line_error(lambda: open_dataset(tmp_path), "is not a prepared dataset: no dataset.json")


def test_unknown_split_and_clip(dataset_root):
    ds = open_dataset(dataset_root)
    one_line_error(lambda: ds.clip_ids("tets"), "has no split 'tets' (splits: train, val)")
    one_line_error(lambda: ds.clip("nope"), "has no clip 'nope'")


def _rewrite_json(path, **changes):
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def test_schema_version_mismatch(broken):
    root, clip_dir, clip_id = broken
    _rewrite_json(clip_dir / "clip.json", schema_version=SCHEMA_VERSION + 1)
    one_line_error(lambda: open_dataset(root), f"clip '{clip_id}' field 'schema_version': expected {SCHEMA_VERSION}")
    _rewrite_json(root / "dataset.json", schema_version=99)
    one_line_error(lambda: open_dataset(root), "schema_version 99 is not supported", "re-prepare")


def test_track_with_wrong_length(broken):
    root, clip_dir, clip_id = broken
    np.save(clip_dir / "pose.npy", np.zeros((24, 6), np.float32))
    one_line_error(lambda: open_dataset(root), f"clip '{clip_id}' field 'pose': expected shape (T, 6) with T=25, "
                                               f"got (24, 6) in {clip_dir / 'pose.npy'}")


def test_track_with_nan_or_wrong_dtype(broken):
    root, clip_dir, clip_id = broken
    bad = np.zeros((25, 68, 2), np.float32)
    bad[3, 4, 0] = np.nan
    np.save(clip_dir / "landmarks2d.npy", bad)
    one_line_error(lambda: open_dataset(root), f"clip '{clip_id}' field 'landmarks2d': contains NaN")
    np.save(clip_dir / "landmarks2d.npy", bad.astype(np.float64))
    one_line_error(lambda: open_dataset(root), "field 'landmarks2d': expected dtype float32, got float64")


def test_missing_track_file(broken):
    root, clip_dir, clip_id = broken
    (clip_dir / "expression.npy").unlink()
    one_line_error(lambda: open_dataset(root), f"clip '{clip_id}' field 'expression': missing in "
                                               f"{clip_dir / 'expression.npy'}")


def test_missing_field_listed_in_dataset(broken):
    root, clip_dir, clip_id = broken
    _rewrite_json(clip_dir / "clip.json", tracks={})
    one_line_error(lambda: open_dataset(root), f"clip '{clip_id}' field", "listed in dataset.json fields but missing")


def test_audio_length_mismatch(broken):
    root, clip_dir, clip_id = broken
    sf.write(str(clip_dir / "audio.wav"), np.zeros(15000, np.float32), SR, subtype="PCM_16")
    one_line_error(lambda: open_dataset(root), f"clip '{clip_id}' field 'audio': expected 16000 samples "
                                               f"(T=25 frames), got 15000")


def test_frame_count_mismatch(broken):
    root, clip_dir, clip_id = broken
    _rewrite_json(clip_dir / "clip.json", num_frames=26)
    one_line_error(lambda: open_dataset(root), f"clip '{clip_id}' field 'audio': expected N=round(T*sr/fps)=16640")


def test_truncated_frames(broken):
    root, clip_dir, clip_id = broken
    data = (clip_dir / "frames.bin").read_bytes()
    (clip_dir / "frames.bin").write_bytes(data[:-10])
    one_line_error(lambda: open_dataset(root), f"clip '{clip_id}' field 'frames': index ends at byte")


def test_corrupt_frame_bytes(broken):
    root, clip_dir, clip_id = broken
    data = bytearray((clip_dir / "frames.bin").read_bytes())
    data[:64] = b"\0" * 64
    (clip_dir / "frames.bin").write_bytes(bytes(data))
    one_line_error(lambda: open_dataset(root), f"clip '{clip_id}' field 'frames': frame 0", "undecodable")


def _edit_clip_json(**changes):
    return lambda root, clip_dir: _rewrite_json(clip_dir / "clip.json", **changes)


def _write(name, content):
    return lambda root, clip_dir: (clip_dir / name).write_bytes(content)


def _unlink(name):
    return lambda root, clip_dir: (clip_dir / name).unlink()


def _save(name, array):
    return lambda root, clip_dir: np.save(clip_dir / name, array)


@pytest.mark.parametrize("damage, fragment", [
    (_write("clip.json", b"{not json"), "field 'clip.json': cannot parse"),
    (_edit_clip_json(num_frames="25"), "field 'num_frames': missing or of the wrong type"),
    (_edit_clip_json(meta=None), "field 'meta': missing or of the wrong type"),
    (_edit_clip_json(num_frames=0), "field 'num_frames': expected >= 1, got 0"),
    (_edit_clip_json(sample_rate=8000), "field 'sample_rate': expected the dataset's 16000, got 8000"),
    (_edit_clip_json(frame_codec="jpeg"), "field 'frame_codec': expected 'png', got 'jpeg'"),
    (_edit_clip_json(num_samples=5), "field 'audio': expected N=round(T*sr/fps)=16000 samples for T=25"),
    (_edit_clip_json(tracks={"pose": [6]}), "field 'pose': track entry needs 'shape' (a list of sizes) and 'dtype'"),
    (_edit_clip_json(tracks={"pose": {"shape": 5, "dtype": "float32"}}), "field 'pose': track entry needs 'shape'"),
    (_edit_clip_json(tracks={"pose": {"shape": [6], "dtype": "floaty"}}), "field 'pose': invalid dtype 'floaty'"),
    (_edit_clip_json(tracks={"../../x": {"shape": [6], "dtype": "float32"}}), "field '../../x': invalid track name"),
    (_write("clip.json", b"[1, 2]"), "field 'clip.json': expected a JSON object"),
    (_unlink("frames_index.npy"), "field 'frames': missing frame index"),
    (_unlink("frames.bin"), "field 'frames': missing frame data"),
    (_write("frames_index.npy", b"garbage"), "field 'frames': unreadable frame index"),
    (_save("frames_index.npy", np.zeros(5, np.int64)), "expected int64 offsets of shape (T+1,) with T=25"),
    (_save("frames_index.npy", np.zeros(26, np.int64)), "field 'frames': offsets must start at 0 and increase"),
    (_unlink("audio.wav"), "field 'audio': missing"),
    (_write("audio.wav", b"RIFF0000WAVEjunk"), "field 'audio': unreadable"),
    (lambda root, d: sf.write(str(d / "audio.wav"), np.zeros((16000, 2)), SR, subtype="PCM_16"),
     "field 'audio': expected mono at 16000 Hz, got 2 channel(s)"),
    (_write("pose.npy", b"garbage"), "field 'pose': unreadable"),
])
def test_damaged_clip_is_one_line_error(broken, damage, fragment):
    root, clip_dir, clip_id = broken
    damage(root, clip_dir)
    message = one_line_error(lambda: open_dataset(root), f"clip '{clip_id}'", fragment)
    assert str(clip_dir) in message


@pytest.mark.parametrize("content, fragment", [
    ("{oops", "cannot parse"),
    ("[1, 2]", "expected a JSON object"),
    (json.dumps({"schema_version": SCHEMA_VERSION, "name": "x"}), "missing or invalid 'version'"),
    (json.dumps({"schema_version": SCHEMA_VERSION, "name": "x", "version": "v", "fps": 25.0, "sample_rate": SR,
                 "frame_size": SIZE, "fields": [], "splits": {"train": "a"}}), "split 'train' must be a list"),
    (json.dumps({"schema_version": SCHEMA_VERSION, "name": "x", "version": "v", "fps": 25.0, "sample_rate": SR,
                 "frame_size": SIZE, "fields": [], "splits": {"train": []}}), "the splits list no clips"),
])
def test_damaged_dataset_header_is_one_line_error(broken, content, fragment):
    root, _, _ = broken
    (root / "dataset.json").write_text(content)
    one_line_error(lambda: open_dataset(root), "dataset.json", fragment)


@pytest.mark.parametrize("change, fragment", [
    (lambda h: h["splits"]["val"].append(h["splits"]["train"][0]), "is listed in split 'val' and in 'train'"),
    (lambda h: h["splits"]["train"].append(h["splits"]["train"][0]), "is listed in split 'train' twice"),
    (lambda h: h["splits"]["train"].append("../clips/x"), "split 'train' lists an invalid clip id '../clips/x'"),
    (lambda h: h["fields"].append(["x"]), "'fields' must list field names, got ['x']"),
])
def test_inconsistent_dataset_header_is_one_line_error(broken, change, fragment):
    root, _, _ = broken
    header = json.loads((root / "dataset.json").read_text())
    change(header)
    (root / "dataset.json").write_text(json.dumps(header))
    one_line_error(lambda: open_dataset(root), str(root / "dataset.json"), fragment)


def test_damage_after_opening_is_reported_on_read(broken):
    root, clip_dir, clip_id = broken
    clip = open_dataset(root).clip(clip_id)
    one_line_error(lambda: clip.track("blink"), f"clip '{clip_id}' field 'blink': no such track (clip has: expr")
    (clip_dir / "frames.bin").write_bytes(b"")
    one_line_error(lambda: clip.read_frames(0, 2), f"clip '{clip_id}' field 'frames': file is truncated")
    sf.write(str(clip_dir / "audio.wav"), np.zeros(100, np.float32), SR, subtype="PCM_16")
    one_line_error(lambda: clip.read_audio(0, 1000), f"clip '{clip_id}' field 'audio': file is truncated")
    (clip_dir / "audio.wav").write_bytes(b"junk")
    one_line_error(lambda: clip.read_audio(0, 10), f"clip '{clip_id}' field 'audio': unreadable")


@pytest.mark.parametrize("change, fragment", [
    (dict(fps=0), "clip 'x' field 'fps': fps and sample_rate must be positive"),
    (dict(audio=np.zeros(6400, np.int16)), "clip 'x' field 'audio': expected a float [N] array, got int16"),
    (dict(audio=np.full(6400, np.nan, np.float32)), "clip 'x' field 'audio': contains NaN"),
    (dict(tracks={"pose": np.full((10, 6), "a")}), "clip 'x' field 'pose': expected a numeric array"),
])
def test_write_clip_rejects_more_bad_input(tmp_path, change, fragment):
    args = dict(frames=np.zeros((10, 8, 8, 3), np.uint8), audio=np.zeros(6400, np.float32), sample_rate=SR,
                fps=FPS, tracks={}, meta={})
    args.update(change)
    one_line_error(lambda: write_clip(tmp_path, "x", **args), fragment)


def test_write_dataset_rejects_bad_splits_and_info(tmp_path):
    common = dict(name="t", version="v", fps=FPS, sample_rate=SR, frame_size=SIZE)
    one_line_error(lambda: write_dataset(tmp_path, splits={"train": []}, info={}, **common),
                   "splits must map each split name to a non-empty list")
    one_line_error(lambda: write_dataset(tmp_path, splits={"train": ["a"]}, info={"x": float("nan")}, **common),
                   "info is not JSON-serialisable")
