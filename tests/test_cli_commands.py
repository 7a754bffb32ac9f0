"""The non-training commands: models, weights, data synth, predict."""
from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from zoo.cli import main
from zoo.data import open_dataset
from zoo.registry import list_models


def test_models_one_line_each(capsys):
    assert main(["models"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[0] for line in lines] == list_models()
    assert all(len(line.split()) > 1 for line in lines)


def test_weights_lists_every_file(capsys, tmp_path):
    assert main(["weights", "--dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "syncnet_v2.model" in out and "missing" in out
    assert "961e8696f888fce4f3f3a6c3d5b3267cf5b343100b238e79b2659bff2c605442" in out


def test_data_synth_writes_a_valid_corpus(capsys, tmp_path):
    out = tmp_path / "corpus"
    code = main(["data", "synth", "--out", str(out), "identities=1", "unseen_identities=1", "styles=1",
                 "intensities=1", "clips_per_identity=3", "seconds=1.0", "size=64", "seed=3"])
    assert code == 0, capsys.readouterr().err
    dataset = open_dataset(out)
    assert set(dataset.splits) >= {"train", "val", "test", "test_unseen"}
    assert dataset.frame_size == 64 and dataset.fps == 25


def test_data_synth_bad_key(capsys):
    assert main(["data", "synth", "identitiez=2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown key 'identitiez'") and err.count("\n") == 1


def test_predict_writes_every_clip(capsys, tiny_corpus, tmp_path):
    code = main(["predict", "--model", "static", "experiment=smoke", "logger=none", "trainer.progress_bar=none",
                 f"run.runs_dir={tmp_path}", "data.max_clips=2"])
    assert code == 0, capsys.readouterr().err
    result = json.loads((tmp_path / "static" / "smoke" / "results" / "predict.json").read_text())
    videos = sorted((tmp_path / "static" / "smoke" / "media" / "predict").glob("*.mp4"))
    assert result["num_clips"] == len(videos) > 0


@pytest.mark.parametrize("extra, message", [
    (["--ckpt", "{tmp}/run"], "--audio needs --out OUT.mp4"),
    (["--ckpt", "{tmp}/run", "--out", "{tmp}/o.avi"],
     "--out {tmp}/o.avi: the video is written as an mp4 (H.264 and AAC); name it OUT.mp4"),
    (["--ckpt", "{tmp}/run", "--out", "{tmp}/o.mp4", "model.mouth_amplitude=2"],
     "--audio prediction takes no config overrides (got model.mouth_amplitude=2); the model's config comes from its "
     "checkpoint"),
    (["--out", "{tmp}/o.mp4", "--model", "static"], "model 'static' does not predict from an audio file"),
    (["--out", "{tmp}/o.mp4", "--audio", "{tmp}/absent.wav"], "--audio file not found: {tmp}/absent.wav"),
    (["--out", "{tmp}/o.mp4", "--pose", "{tmp}/speech.wav"], "--pose {tmp}/speech.wav: cannot read a .npy array"),
    (["--out", "{tmp}/o.mp4", "--pose", "{tmp}/poses.npz"],
     "--pose {tmp}/poses.npz: expected a .npy array, got a NpzFile"),
    (["--out", "{tmp}/o.mp4", "--device", "tpu"], "--device tpu: not a device (auto, cpu, cuda or cuda:N)"),
    (["--out", "{tmp}/o.mp4", "--device", "mps"], "--device mps: not supported: MPS has no float64, which the "
                                                   "inference needs; use cpu"),
    (["--out", "{tmp}/o.mp4", "--ckpt", "{tmp}/run"],
     "--ckpt {tmp}/run: no checkpoints/best*.ckpt or checkpoints/last.ckpt in that run"),
    (["--out", "{tmp}/o.mp4", "--ckpt", "{tmp}/last.ckpt"], "--ckpt checkpoint not found: {tmp}/last.ckpt"),
    (["--out", "{tmp}/o.mp4"], "no checkpoint found for model 'lsp' under runs/lsp; train it with "
                               "`zoo fit --model lsp` or pass --ckpt PATH"),
])
def test_predict_from_audio_errors_are_one_line(capsys, tmp_path, monkeypatch, extra, message):
    # every check runs before a model is loaded, so no trained model is needed; nothing is written
    monkeypatch.chdir(tmp_path)
    (tmp_path / "run").mkdir()
    sf.write(tmp_path / "speech.wav", np.zeros(1600, np.float32), 16000)
    np.savez(tmp_path / "poses.npz", poses=np.zeros((4, 6)))
    argv = ["predict", "--model", "lsp", "--audio", "{tmp}/speech.wav", *extra]
    code = main([a.format(tmp=tmp_path) for a in argv])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(f"error: {message.format(tmp=tmp_path)}") and err.count("\n") == 1, err
    assert not (tmp_path / "o.mp4").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="the machine has a CUDA GPU")
def test_predict_on_a_missing_gpu_is_one_line(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sf.write(tmp_path / "speech.wav", np.zeros(1600, np.float32), 16000)
    code = main(["predict", "--model", "lsp", "--audio", "speech.wav", "--out", "o.mp4", "--device", "cuda:1"])
    err = capsys.readouterr().err
    assert code == 2 and err == "error: --device cuda:1: this machine has no CUDA GPU that torch can use\n", err
    assert not (tmp_path / "o.mp4").exists()


@pytest.mark.parametrize("argv, message", [
    (["predict", "--model", "static", "--out", "x.mp4"], "--out applies to `zoo predict --audio IN.wav` only"),
    (["predict", "--model", "static", "--seed", "3"], "--seed applies to `zoo predict --audio IN.wav` only"),
    (["predict", "--model", "static", "--pose", "p.npy"], "--pose applies to `zoo predict --audio IN.wav` only"),
    (["predict", "--model", "static", "--device", "cpu"], "--device applies to `zoo predict --audio IN.wav` only"),
    (["models", "a=1"], "`zoo models` takes no key=value overrides (got a=1)"),
    (["weights", "b=2"], "`zoo weights` takes no key=value overrides (got b=2)"),
    (["fit", "--model", "lsp.apc", "--force"], "--force retrains the finished stages of a staged model (e.g. lsp); "
                                                "'lsp.apc' trains in one run"),
])
def test_options_a_command_would_ignore_are_refused(capsys, tmp_path, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(f"error: {message}") and err.count("\n") == 1, err
    assert list(tmp_path.iterdir()) == []                       # nothing ran, nothing was written
