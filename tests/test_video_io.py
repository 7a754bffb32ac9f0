"""mp4 (H.264 + AAC) and audio file round trips through zoo.io, and their one-line errors."""
from __future__ import annotations

import av
import numpy as np
import pytest
import soundfile as sf

from zoo.data.fake import fake_clip
from zoo.io import load_audio, read_video, save_audio, write_video
from zoo.io.video import video_writer

from helpers import one_line_error

SR = 16000


def _leftovers(directory):
    return [p.name for p in directory.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("fps, size", [(25.0, (48, 64)), (30.0, (37, 51))])   # even and odd sizes
def test_video_round_trip(tmp_path, fps, size):
    frames, audio, _ = fake_clip(40, max(size), fps, SR, seed=2, tracks=())
    frames = np.ascontiguousarray(frames[:, :size[0], :size[1]])
    path = tmp_path / "clip.mp4"
    write_video(path, frames, fps=fps, audio=audio, sample_rate=SR)
    video, decoded, got_fps, got_rate = read_video(path)
    assert video.shape == frames.shape and video.dtype == np.uint8
    assert got_fps == pytest.approx(fps) and got_rate == SR
    assert np.abs(video.astype(np.float32) - frames).mean() < 4.0          # crf 18 on smooth content
    assert decoded.dtype == np.float32 and len(decoded) == len(audio)       # AAC frame padding trimmed exactly
    assert np.corrcoef(decoded, audio)[0, 1] > 0.95                         # no priming offset
    assert not _leftovers(tmp_path)
    # load_audio on an mp4: trimmed to the stream duration, which the mp4 edit list keeps to the millisecond
    assert abs(len(load_audio(path)) - len(audio)) <= SR // 1000


def test_a_video_written_in_pieces_is_the_video_written_at_once(tmp_path):
    frames, audio, _ = fake_clip(30, 37, 25.0, SR, seed=3, tracks=())        # an odd size, padded the same way
    write_video(tmp_path / "once.mp4", frames, fps=25.0, audio=audio, sample_rate=SR)
    with video_writer(tmp_path / "pieces.mp4", fps=25.0, audio=audio, sample_rate=SR) as video:
        for start, stop in ((0, 7), (7, 7), (7, 20), (20, 30)):              # an empty piece is fine
            video.write(frames[start:stop])
            assert not (tmp_path / "pieces.mp4").exists()                   # nothing visible before the end
    assert video.frames_written == 30
    once, pieces = read_video(tmp_path / "once.mp4"), read_video(tmp_path / "pieces.mp4")
    # x264's threads make two encodings of the same frames differ slightly, so the frames are compared with the input
    assert pieces[0].shape == frames.shape and np.abs(pieces[0].astype(np.float32) - frames).mean() < 4.0
    assert np.array_equal(once[1], pieces[1]) and once[2:] == pieces[2:]
    assert not _leftovers(tmp_path)


def test_a_video_writer_that_fails_leaves_nothing(tmp_path):
    frames = np.zeros((4, 16, 16, 3), np.uint8)
    path = tmp_path / "out.mp4"

    def interrupted():
        with video_writer(path, fps=25.0) as video:
            video.write(frames)
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        interrupted()

    def resized():
        with video_writer(path, fps=25.0) as video:
            video.write(frames)
            video.write(np.zeros((2, 18, 16, 3), np.uint8))

    one_line_error(resized, f"video {path}: frames of 16x18 after 16x16 ones")

    def empty():
        with video_writer(path, fps=25.0) as video:
            video.write(frames[:0])

    one_line_error(empty, f"video {path}: no frames were written")
    one_line_error(lambda: video_writer(path, fps=-1).__enter__(), "fps must be positive, got -1")
    assert not path.exists() and not _leftovers(tmp_path)


def test_video_without_audio(tmp_path):
    frames, _, _ = fake_clip(5, 32, 25.0, SR, seed=0, tracks=())
    write_video(tmp_path / "silent.mp4", frames, fps=25.0)
    video, audio, fps, rate = read_video(tmp_path / "silent.mp4")
    assert video.shape == frames.shape and audio is None and rate == 0 and fps == 25.0


def test_video_errors(tmp_path):
    one_line_error(lambda: read_video(tmp_path / "missing.mp4"), "video file not found", "missing.mp4")
    (tmp_path / "junk.mp4").write_bytes(b"not a video at all")
    one_line_error(lambda: read_video(tmp_path / "junk.mp4"), "cannot open video file", "junk.mp4")
    one_line_error(lambda: write_video(tmp_path / "bad.mp4", np.zeros((3, 8, 8, 3), np.float32), fps=25),
                   "frames must be uint8 [T, H, W, 3]")
    assert not (tmp_path / "bad.mp4").exists() and not _leftovers(tmp_path)


def test_audio_round_trip_resample_and_downmix(tmp_path):
    t = np.arange(SR) / SR
    tone = (0.5 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)
    save_audio(tmp_path / "a.wav", tone, SR)
    assert sf.info(str(tmp_path / "a.wav")).subtype == "PCM_16" and not _leftovers(tmp_path)
    loaded = load_audio(tmp_path / "a.wav", SR)
    assert loaded.dtype == np.float32 and np.abs(loaded - tone).max() < 1e-4
    half = load_audio(tmp_path / "a.wav", 8000)
    assert len(half) == 8000 and np.corrcoef(half, tone[::2])[0, 1] > 0.99
    stereo = np.stack([tone, 0.5 * tone], axis=1)
    save_audio(tmp_path / "s.wav", stereo, 48000)
    down = load_audio(tmp_path / "s.wav", SR)               # 48 kHz stereo -> 16 kHz mono, channels averaged
    assert len(down) == 5334                                # ceil(16000 / 3)
    np.testing.assert_allclose(down[100:-100], 0.75 * tone[::3][100:-100], atol=2e-3)


def test_audio_errors(tmp_path):
    one_line_error(lambda: load_audio(tmp_path / "none.wav"), "audio file not found", "none.wav")
    (tmp_path / "bad.wav").write_bytes(b"RIFF....garbage")
    one_line_error(lambda: load_audio(tmp_path / "bad.wav"), "cannot read audio file", "bad.wav")
    (tmp_path / "bad.m4a").write_bytes(b"not audio at all")  # a container suffix: read through PyAV
    one_line_error(lambda: load_audio(tmp_path / "bad.m4a"), "cannot open audio file", "bad.m4a")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_save_audio_refuses_non_finite_samples(tmp_path, bad):
    one_line_error(lambda: save_audio(tmp_path / "x.wav", np.array([0.0, bad, 0.5]), SR),
                   f"audio for {tmp_path / 'x.wav'}: contains NaN or infinite samples")
    assert not (tmp_path / "x.wav").exists() and not _leftovers(tmp_path)


def test_more_video_and_audio_errors(tmp_path):
    frames = np.zeros((2, 8, 8, 3), np.uint8)
    one_line_error(lambda: write_video(tmp_path / "a.mp4", frames, fps=0), "fps must be positive, got 0")
    one_line_error(lambda: write_video(tmp_path / "a.mp4", frames, fps=25, audio=np.zeros((2, 5))),
                   "audio must be a finite float32 [N] mono array")
    save_audio(tmp_path / "tone.wav", np.zeros(800, np.float32), SR)
    one_line_error(lambda: read_video(tmp_path / "tone.wav"), "no video stream in", "tone.wav")
    write_video(tmp_path / "silent.mp4", frames, fps=25)
    one_line_error(lambda: load_audio(tmp_path / "silent.mp4"), "no audio stream in", "silent.mp4")
    sf.write(str(tmp_path / "empty.wav"), np.zeros(0, np.float32), SR)
    one_line_error(lambda: load_audio(tmp_path / "empty.wav"), "has no samples", "empty.wav")
    one_line_error(lambda: save_audio(tmp_path / "b.wav", np.zeros((2, 2, 2)), SR),
                   "expected a non-empty [N] or [N, C]")
    one_line_error(lambda: save_audio(tmp_path / "b.wav", np.zeros(4, np.int16), SR), "expected float samples")
    assert not _leftovers(tmp_path)


def test_damaged_media_data_is_one_line(tmp_path):
    t = np.arange(SR * 10 // 25) / SR
    write_video(tmp_path / "clip.mp4", np.full((10, 32, 32, 3), 128, np.uint8), fps=25,
                audio=(0.3 * np.sin(2 * np.pi * 200 * t)).astype(np.float32), sample_rate=SR)
    data = bytearray((tmp_path / "clip.mp4").read_bytes())
    start = data.find(b"mdat")                             # the header stays readable, the coded samples do not
    size = int.from_bytes(data[start - 4:start], "big")
    data[start + 4:start - 4 + size] = b"\xff" * (size - 8)
    (tmp_path / "damaged.mp4").write_bytes(bytes(data))
    one_line_error(lambda: read_video(tmp_path / "damaged.mp4"), "cannot decode the video of", "damaged.mp4")
    one_line_error(lambda: load_audio(tmp_path / "damaged.mp4"), "cannot decode the audio of", "damaged.mp4")


def test_video_stream_without_frames_is_one_line(tmp_path):
    path = tmp_path / "empty.avi"
    with av.open(str(path), "w", format="avi") as container:
        stream = container.add_stream("ffv1", rate=25)
        stream.width, stream.height, stream.pix_fmt = 16, 16, "yuv420p"
        container.start_encoding()                         # writes the header although no packet is ever muxed
    one_line_error(lambda: read_video(path), f"video {path} has no frames")


def test_write_json_is_atomic(tmp_path):
    import json

    from zoo.io.atomic import write_json

    target = tmp_path / "sub" / "result.json"
    write_json(target, {"fps": 1.5})
    assert target.read_text() == '{\n  "fps": 1.5\n}\n'
    with pytest.raises(TypeError):
        write_json(target, {"bad": object()})               # not serialisable: the old file stays whole
    assert json.loads(target.read_text()) == {"fps": 1.5}
    assert [p.name for p in target.parent.iterdir()] == ["result.json"]   # no temporary left behind


def test_video_stream_without_a_frame_rate_is_one_line(tmp_path, monkeypatch):
    # FFmpeg guesses a rate for every file it can demux, so a container that declares none is stood in for
    class NoRateContainer:
        streams = type("Streams", (), {"video": [type("Stream", (), {"average_rate": None, "guessed_rate": None})()]})

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    (tmp_path / "norate.mp4").write_bytes(b"")
    monkeypatch.setattr("zoo.io.video._open", lambda path, kind="video": NoRateContainer())
    one_line_error(lambda: read_video(tmp_path / "norate.mp4"), "the video stream has no frame rate", "norate.mp4")


@pytest.mark.parametrize("codec, sample_format, to_pcm, tolerance", [
    ("pcm_u8", "u8", lambda x: np.round(x * 127 + 128).astype(np.uint8), 1 / 64),   # unsigned: offset by 128
    ("pcm_s16le", "s16", lambda x: np.round(x * 32767).astype(np.int16), 1e-4),
    ("pcm_s32le", "s32", lambda x: np.round(x * (2 ** 31 - 1)).astype(np.int32), 1e-6),
])
@pytest.mark.parametrize("layout", ["mono", "stereo"])
def test_every_pcm_sample_format_decodes_to_the_same_signal(tmp_path, codec, sample_format, to_pcm, tolerance,
                                                           layout):
    sr = 16000
    signal = 0.5 * np.sin(2 * np.pi * 440 * np.arange(sr) / sr)
    channels = 2 if layout == "stereo" else 1
    path = tmp_path / "speech.avi"
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=sr, layout=layout)
        frame = av.AudioFrame.from_ndarray(np.repeat(to_pcm(signal), channels)[None], format=sample_format,
                                           layout=layout)
        frame.sample_rate = sr
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    audio = load_audio(path, sr)
    assert audio.shape == (sr,) and np.abs(audio - signal).max() < tolerance
