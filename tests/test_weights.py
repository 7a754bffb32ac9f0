"""The weights registry: directory resolution, hash verification, error messages, weights_only loading."""
from __future__ import annotations

import hashlib
import os

import pytest
import torch

from zoo import weights
from zoo.errors import WeightsError
from zoo.weights import WeightFile


@pytest.fixture
def wdir(tmp_path, monkeypatch):
    """An empty weights directory selected through ZOO_WEIGHTS_DIR."""
    monkeypatch.setenv("ZOO_WEIGHTS_DIR", str(tmp_path))
    return tmp_path


def _register_file(monkeypatch, path, name="tiny", **overrides):
    """Register a temporary entry whose expected hash is the file's real SHA256."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    fields = dict(name=name, filename=path.name, sha256=digest, source="https://example.invalid/tiny.pth",
                  used_by="tests")
    fields.update(overrides)
    entry = WeightFile(**fields)
    monkeypatch.setitem(weights.WEIGHTS, name, entry)
    return entry


def test_known_files_and_hashes():
    table = weights.WEIGHTS
    assert table["syncnet"].filename == "syncnet_v2.model"
    assert table["syncnet"].sha256 == "961e8696f888fce4f3f3a6c3d5b3267cf5b343100b238e79b2659bff2c605442"
    assert table["fid_inception"].sha256.startswith("6726825d")
    assert table["s3fd"].sha256.startswith("619a316812")     # face-alignment names files by their hash prefix
    assert table["fan2d"].sha256 is None and table["fan2d"].verification == "sha256 prefix"
    assert table["alexnet"].sha256_prefix == "7be5be79" and table["vgg19"].sha256_prefix == "dcbb9e9d"
    for entry in table.values():
        assert entry.source and entry.used_by
        if entry.sha256:
            assert len(entry.sha256) == 64 and int(entry.sha256, 16) >= 0
        if entry.sha256_prefix:        # the prefix is the one embedded in the file name
            assert f"-{entry.sha256_prefix}." in entry.filename


def test_weights_dir_precedence(tmp_path, monkeypatch):
    monkeypatch.delenv("ZOO_WEIGHTS_DIR", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    assert weights.get_weights_dir() == tmp_path / "th" / "hub" / "checkpoints"
    monkeypatch.setenv("ZOO_WEIGHTS_DIR", str(tmp_path / "env"))
    assert weights.get_weights_dir() == tmp_path / "env"
    assert weights.get_weights_dir(tmp_path / "arg") == tmp_path / "arg"


def test_missing_file_error_is_one_line(wdir):
    with pytest.raises(WeightsError) as info:
        weights.resolve("syncnet")
    msg = str(info.value)
    assert "\n" not in msg
    assert "syncnet_v2.model" in msg and str(wdir) in msg
    assert weights.WEIGHTS["syncnet"].sha256 in msg
    assert "robots.ox.ac.uk" in msg


def test_unknown_name():
    with pytest.raises(WeightsError, match="unknown weights name"):
        weights.resolve("no-such-net")


def test_correct_file_resolves_and_loads(wdir, monkeypatch):
    path = wdir / "tiny.pth"
    torch.save({"w": torch.arange(6.0).reshape(2, 3)}, path)
    _register_file(monkeypatch, path)
    assert weights.resolve("tiny") == path
    state = weights.load_state_dict("tiny")
    assert torch.equal(state["w"], torch.arange(6.0).reshape(2, 3))


def test_hash_mismatch(wdir, monkeypatch):
    path = wdir / "tiny.pth"
    torch.save({"w": torch.zeros(3)}, path)
    _register_file(monkeypatch, path, sha256="0" * 64)
    with pytest.raises(WeightsError) as info:
        weights.resolve("tiny")
    msg = str(info.value)
    assert "\n" not in msg and "0" * 64 in msg and hashlib.sha256(path.read_bytes()).hexdigest() in msg
    assert "example.invalid" in msg


def test_prefix_verification(wdir, monkeypatch):
    path = wdir / "tiny.pth"
    path.write_bytes(b"weights")
    digest = hashlib.sha256(b"weights").hexdigest()
    _register_file(monkeypatch, path, sha256=None, sha256_prefix=digest[:8])
    assert weights.resolve("tiny") == path
    _register_file(monkeypatch, path, sha256=None, sha256_prefix="deadbeef")
    with pytest.raises(WeightsError, match="deadbeef"):
        weights.resolve("tiny")


def test_argument_overrides_env(tmp_path, wdir, monkeypatch):
    other = tmp_path / "other"
    other.mkdir()
    torch.save({"w": torch.ones(1)}, other / "tiny.pth")
    _register_file(monkeypatch, other / "tiny.pth")
    with pytest.raises(WeightsError, match="not found"):
        weights.resolve("tiny")                     # env dir (wdir) does not hold it
    assert weights.resolve("tiny", weights_dir=other) == other / "tiny.pth"


def test_hash_is_cached_per_size_and_mtime(wdir, monkeypatch):
    path = wdir / "tiny.pth"
    path.write_bytes(b"a" * 100)
    calls = []
    real = hashlib.sha256
    monkeypatch.setattr(weights.hashlib, "sha256", lambda *a: calls.append(1) or real(*a))
    first = weights.sha256_of(path)
    assert weights.sha256_of(path) == first and len(calls) == 1
    path.write_bytes(b"b" * 101)                    # size (and mtime) change -> hashed again
    os.utime(path, ns=(1, 1))
    assert weights.sha256_of(path) != first and len(calls) == 2


def test_weights_only_refuses_arbitrary_objects(wdir, monkeypatch):
    path = wdir / "tiny.pth"
    torch.save({"w": torch.zeros(1), "obj": WeightFile("x", "x", None, "s", "u")}, path)
    _register_file(monkeypatch, path)
    with pytest.raises(WeightsError, match="weights_only=True"):
        weights.load_state_dict("tiny")


def test_status_and_table(wdir, monkeypatch):
    good, bad = wdir / "good.pth", wdir / "bad.pth"
    good.write_bytes(b"good")
    bad.write_bytes(b"bad")
    monkeypatch.setattr(weights, "WEIGHTS", {})
    _register_file(monkeypatch, good, name="good")
    _register_file(monkeypatch, bad, name="bad", sha256="1" * 64)
    _register_file(monkeypatch, good, name="gone", filename="gone.pth")
    status = {row["name"]: row for row in weights.weights_status()}
    assert status["good"]["status"] == "ok" and status["good"]["sha256"] == status["good"]["expected_sha256"]
    assert status["bad"]["status"] == "hash mismatch"
    assert status["gone"]["status"] == "missing" and status["gone"]["sha256"] is None
    table = weights.format_weights_table()
    assert str(wdir) in table and "1" * 64 in table
    lines = table.splitlines()
    assert any(line.startswith("good") and " ok " in line for line in lines)
    assert any(line.startswith("gone:") and "example.invalid" in line for line in lines)
