"""LSP inference on the tiny corpus's trained model: prediction from an audio file, the engine, streaming."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import soundfile as sf
import torch

from lsp.streaming import LSPStream
from zoo.cli import main

from helpers import one_line_error


@pytest.fixture
def speech(tmp_path, lsp_model):
    rng = np.random.default_rng(0)
    seconds = 1.7
    t = np.arange(int(seconds * lsp_model.sample_rate)) / lsp_model.sample_rate
    audio = (0.3 * np.sin(2 * np.pi * 180 * t) * (1 + np.sin(2 * np.pi * 3 * t)) / 2
             + 0.02 * rng.standard_normal(len(t))).astype(np.float32)
    path = tmp_path / "speech.wav"
    sf.write(path, audio, lsp_model.sample_rate)
    return path, audio


def test_predict_from_audio_writes_video_with_sound(lsp_run, speech, tmp_path, capsys):
    from zoo.io.video import read_video

    path, audio = speech
    out = tmp_path / "out.mp4"
    assert main(["predict", "--model", "lsp", "--ckpt", str(lsp_run), "--audio", str(path), "--out", str(out),
                 "--device", "cpu"]) == 0
    assert capsys.readouterr().out.rstrip().endswith("(on cpu)")
    frames, sound, fps, rate = read_video(out)
    assert fps == 25 and frames.shape[1:] == (64, 64, 3)
    assert len(frames) == round(len(audio) * fps / 16000)
    assert sound is not None and abs(len(sound) / rate - len(audio) / 16000) < 0.05


def test_prediction_from_audio_is_encoded_a_piece_at_a_time(lsp_run, lsp_model, tmp_path, monkeypatch):
    """Audio of any length: zoo predict never holds the whole video; each ~2 s piece is encoded as it comes."""
    from zoo.io.video import VideoStreamWriter, read_video

    audio = (0.2 * np.random.default_rng(1).standard_normal(int(5.3 * 16000))).astype(np.float32)
    sf.write(tmp_path / "long.wav", audio, 16000)
    pieces, write = [], VideoStreamWriter.write

    def counted_write(self, frames):
        pieces.append(len(frames))
        write(self, frames)

    monkeypatch.setattr(VideoStreamWriter, "write", counted_write)
    out = tmp_path / "long.mp4"
    assert main(["predict", "--model", "lsp", "--ckpt", str(lsp_run), "--audio", str(tmp_path / "long.wav"),
                 "--out", str(out), "--device", "cpu"]) == 0
    frames = round(len(audio) * 25 / 16000)
    assert sum(pieces) == frames == len(read_video(out)[0])
    assert len(pieces) >= 4 and max(pieces) <= 50              # 2 s of frames at most per piece
    # unusable audio is refused when asked, not when the first piece is drawn
    one_line_error(lambda: lsp_model.predict_audio_chunks(audio[:300]), "LSP.predict_audio: 300 samples")


def test_seed_and_pose_file(lsp_run, lsp_model, speech, tmp_path, capsys):
    _, audio = speech
    a, b = lsp_model.predict_audio(audio, seed=1), lsp_model.predict_audio(audio, seed=1)
    c = lsp_model.predict_audio(audio, seed=2)
    assert torch.equal(a.pose, b.pose) and torch.equal(a.frames, b.frames)
    assert not torch.allclose(a.pose, c.pose)
    poses = torch.zeros(len(a.pose), 6)
    poses[:, 3:] = lsp_model.profile.rest_translation
    poses[:, 1] = torch.linspace(-0.1, 0.1, len(poses))
    driven = lsp_model.predict_audio(audio, poses=poses)
    assert torch.allclose(driven.pose, poses, atol=1e-6)          # used as given, not smoothed
    held = lsp_model.predict_audio(audio, poses=poses[:5])          # a short pose file holds its last pose
    assert torch.allclose(held.pose[5:], poses[4].expand(len(held.pose) - 5, 6), atol=1e-6)
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((4, 5)))
    common = ["predict", "--model", "lsp", "--audio", str(speech[0]), "--out", str(tmp_path / "o.mp4")]
    short = tmp_path / "short.npy"
    np.save(short, poses[:5].numpy())
    assert main([*common, "--ckpt", str(lsp_run), "--pose", str(short)]) == 0
    assert f"warning: --pose {short} has 5 poses for {len(a.pose)} frames of audio: its last pose is held" \
        in capsys.readouterr().err
    (tmp_path / "o.mp4").unlink()
    assert main([*common, "--ckpt", str(lsp_run), "--pose", str(bad)]) == 2
    assert f"--pose {bad}: expected head poses of shape (T, 6), got (4, 5)" in capsys.readouterr().err
    assert main([*common, "--ckpt", str(tmp_path)]) == 2
    assert "no checkpoints" in capsys.readouterr().err
    assert not (tmp_path / "o.mp4").exists()


def test_bad_audio_or_poses_through_the_api_are_one_line(lsp_model, speech):
    _, audio = speech
    for bad, fragment in [(np.stack([audio, audio]), "expected mono audio [N], got shape (2,"),
                          ((audio * 32767).astype(np.int16), "expected float samples in [-1, 1], got dtype int16"),
                          (np.where(np.arange(len(audio)) == 3000, np.nan, audio), "contains NaN or infinite")]:
        one_line_error(lambda: lsp_model.predict_audio(bad), "LSP.predict_audio: ", fragment)
        one_line_error(lambda: LSPStream(lsp_model).push(bad), "StreamingLogMel.push(): ", fragment)
    one_line_error(lambda: lsp_model.predict_audio(audio[:400]), "LSP.predict_audio: ", "400 samples are too few")
    assert len(lsp_model.predict_audio(audio, poses=np.zeros((5, 6))).frames) > 0     # a numpy array is fine
    for poses, fragment in [(torch.zeros(5, 3), "shape (T, 6), got (5, 3)"), (torch.zeros(0, 6), "got (0, 6)"),
                            (torch.full((5, 6), float("nan")), "contain NaN or infinite")]:
        one_line_error(lambda: LSPStream(lsp_model, poses=poses), "poses: ", fragment)


@pytest.mark.parametrize("chunk_seconds, driven", [(0.013, False), (0.1, False), ("random", False), (0.1, True)])
def test_streaming_equals_offline_with_bounded_latency(lsp_model, speech, chunk_seconds, driven):
    _, audio = speech
    poses = None
    if driven:     # given poses wait for no audio: only the mouth's look-ahead and smoothing delay a frame
        poses = lsp_model.profile.rest_translation.new_zeros(len(audio) * 25 // 16000, 6)
        poses[:, 0] = torch.linspace(-0.1, 0.1, len(poses))
    offline = lsp_model.predict_audio(audio, seed=5, poses=poses)
    stream = LSPStream(lsp_model, seed=5, poses=poses)
    engine = stream.engine
    mouth_latency, pose_latency = engine.mouth_delay + engine.mouth.radius, engine.pose_ahead + engine.pose.radius
    assert engine.latency_frames == (mouth_latency if driven else max(mouth_latency, pose_latency))
    rng = np.random.default_rng(1)
    outputs, received = [], 0
    while received < len(audio):
        size = int(rng.integers(50, 4000)) if chunk_seconds == "random" else int(chunk_seconds * 16000)
        outputs.append(stream.push(audio[received:received + size]))
        received = min(len(audio), received + size)
        complete = int(received * 25 / 16000)                   # frames whose audio has fully arrived
        emitted = sum(len(o.frames) for o in outputs)
        assert emitted >= complete - stream.engine.latency_frames - 1
    outputs.append(stream.flush())
    frames = torch.cat([o.frames for o in outputs])
    assert frames.shape == offline.frames.shape
    assert torch.allclose(frames, offline.frames, atol=1e-4)
    assert torch.allclose(torch.cat([o.pose for o in outputs]), offline.pose, atol=1e-5)


def test_the_engines_head_motion_is_the_headpose_networks_own_sampling(lsp_model, speech):
    """The engine samples frame by frame as audio arrives; Audio2Headpose.generate (what the stage trains
    for, forward_from_start's twin) samples a whole sequence: the same warm-up, look-ahead and noise."""
    from lsp.manifold import manifold_projection
    from lsp.networks.audio2mouth import pair_frames
    from lsp.speech import repeat_last
    from zoo.data.features import log_mel

    _, audio = speech
    unsmoothed = copy.deepcopy(lsp_model)
    unsmoothed.cfg.pose_smooth_sigma = 0.0
    engine = unsmoothed.engine(25.0, seed=3)
    mel = torch.from_numpy(log_mel(audio, 16000, 25.0))
    poses = torch.cat([engine.push_mel(mel).pose, engine.finish().pose])
    cfg = lsp_model.cfg
    features = manifold_projection(lsp_model.speech(mel[None])[0][0], lsp_model.profile.apc_base, cfg.lle_neighbours,
                                   cfg.lle_percent)
    ahead = engine.pose_ahead
    states = lsp_model.headpose.generate(repeat_last(pair_frames(features[None]), ahead), cfg.headpose.sigma_scale,
                                          torch.Generator().manual_seed(3), frame_future=ahead)
    assert len(poses) == states.shape[1] > ahead
    assert torch.allclose(poses, lsp_model.profile.denormalise_state(states[0])[:, :6].float(), atol=1e-5)


def test_the_engine_renders_what_the_trained_renderer_renders(lsp_model, speech):
    """The engine runs a copy of the renderer with its BatchNorms folded into its convolutions (zoo.fusion): the
    same frames to float rounding, and the model's own renderer keeps its BatchNorms (it is what is saved)."""
    from zoo.data.features import log_mel

    _, audio = speech
    engine = lsp_model.engine(25.0, seed=0)
    out = engine.push_mel(torch.from_numpy(log_mel(audio, 16000, 25.0)))
    assert len(out.frames) > 0
    assert engine.renderer is lsp_model.inference_renderer()            # kept between clips and streams
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in engine.renderer.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in lsp_model.renderer.modules())
    face = lsp_model.profile.face_from_mouth(torch.zeros(1, 1, 75), start_frame=0)   # landmarks as the engine makes
    landmarks, shoulders = lsp_model.profile.landmarks_and_shoulders(face, out.pose[None, :1])
    landmarks, shoulders = torch.from_numpy(landmarks[0]), torch.from_numpy(shoulders[0])
    with torch.no_grad():
        folded = lsp_model.render_landmarks(landmarks, shoulders, engine.renderer)
        trained = lsp_model.render_landmarks(landmarks, shoulders)
    torch.testing.assert_close(folded, trained, atol=1e-5, rtol=0)


def test_a_frame_waits_for_latency_seconds_of_audio_after_its_end(lsp_model, speech):
    _, audio = speech
    stream, step, waits = LSPStream(lsp_model, seed=0), 16, []
    for received in range(step, len(audio) + 1, step):      # 1 ms chunks: when each frame comes out
        for _ in stream.push(audio[received - step:received]).frames:
            waits.append(received / 16000 - (len(waits) + 1) / 25)   # audio past the frame's end
    assert len(waits) > 10
    assert max(waits) == pytest.approx(stream.latency_seconds, abs=step / 16000)


def test_too_little_audio_for_a_frame_is_one_line(lsp_run, lsp_model, speech, tmp_path, capsys):
    _, audio = speech
    one_line_error(lambda: lsp_model.predict_audio(audio[:300]), "LSP.predict_audio: 300 samples are less than half a "
                                                             "video frame at 25 fps: no frame to make")
    stream = LSPStream(lsp_model)
    stream.push(audio[:400])
    one_line_error(stream.flush, "LSPStream.flush(): ", "400 samples are too few")
    short = tmp_path / "short.wav"
    sf.write(short, audio[:300], lsp_model.sample_rate)
    out = tmp_path / "o.mp4"
    assert main(["predict", "--model", "lsp", "--ckpt", str(lsp_run), "--audio", str(short), "--out", str(out)]) == 2
    assert capsys.readouterr().err == (f"error: --audio {short}: LSP.predict_audio: 300 samples are less than "
                                       f"half a video frame at 25 fps: no frame to make\n")
    assert not out.exists()


def test_a_stream_is_used_once_and_in_eval_mode(lsp_model, speech):
    _, audio = speech
    stream = LSPStream(lsp_model, seed=0)
    stream.push(audio[:8000])
    stream.flush()
    one_line_error(lambda: stream.push(audio[:100]), "LSPStream.push() after flush()", "start a new LSPStream",
                   error=RuntimeError)
    one_line_error(stream.flush, "LSPStream.flush() after flush()", error=RuntimeError)
    one_line_error(lambda: stream.engine.push_mel(torch.zeros(2, 80)), "LSPEngine: push after finish",
                   error=RuntimeError)
    one_line_error(stream.engine.finish, "LSPEngine: finish called twice", error=RuntimeError)
    lsp_model.train()
    try:
        one_line_error(lambda: LSPStream(lsp_model), "eval mode", "model.eval()", error=RuntimeError)
    finally:
        lsp_model.eval()
