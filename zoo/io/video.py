"""MP4 video files through PyAV: H.264 (libx264, yuv420p) video with optional AAC audio.

yuv420p subsamples chroma 2x2, so H.264 needs even frame sizes. :func:`write_video` pads an odd height/width by one
replicated row/column and records the true size in the container's ``comment`` tag (``zoo:size=WxH``);
:func:`read_video` crops it back, so a round trip keeps the size. Other players just show the extra line.

AAC works in 1024-sample frames and the decoder returns whole frames, so the decoded track is longer than what was
written; :func:`read_video` trims (or zero-pads) it to ``round(num_frames / fps * sample_rate)`` samples, the length
the audio of a clip with that many video frames has. The encoder's priming delay is removed by the mp4 edit list
that ffmpeg writes, so decoded sample 0 is written sample 0.
"""
from __future__ import annotations

import os
import re
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path
from typing import Iterator, Optional

import av
import numpy as np

from zoo.errors import DataError
from zoo.io.atomic import atomic_path

__all__ = ["write_video", "video_writer", "read_video", "read_audio_stream", "VIDEO_CRF"]

VIDEO_CRF = 18                 # visually lossless for x264; metrics are computed on tensors, never on these files
VIDEO_PRESET = "fast"          # x264 speed/size trade-off; "fast" is ~2x quicker than "medium" for a few % size
AUDIO_BITRATE = 96_000         # AAC bit rate; plenty for 16-kHz mono speech
_SIZE_TAG = re.compile(r"zoo:size=(\d+)x(\d+)")


def _check_frames(frames: np.ndarray, path: Path, at_least: int = 1) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] < at_least:
        raise DataError(f"video {path}: frames must be uint8 [T, H, W, 3] RGB with T >= {at_least}, "
                        f"got {frames.dtype} {tuple(frames.shape)}")
    return frames


class VideoStreamWriter:
    """The encoder behind :func:`video_writer`: frames go to H.264 as they are written, the audio when it closes."""

    def __init__(self, tmp: Path, path: Path, fps: float, audio: Optional[np.ndarray], sample_rate: int):
        self.tmp, self.path, self.fps, self.audio, self.sample_rate = tmp, path, fps, audio, int(sample_rate)
        self.container = self.video = self.sound = None
        self.size: Optional[tuple[int, int]] = None    # (height, width) of the first frames
        self.frames_written = 0

    def write(self, frames: np.ndarray) -> None:
        """Append ``frames`` (uint8 ``[T, H, W, 3]`` RGB, T >= 0), all of the first frames' size."""
        frames = _check_frames(frames, self.path, at_least=0)
        if not len(frames):
            return
        if self.size is None:
            self._open(*frames.shape[1:3])
        elif frames.shape[1:3] != self.size:
            raise DataError(f"video {self.path}: frames of {frames.shape[2]}x{frames.shape[1]} after "
                            f"{self.size[1]}x{self.size[0]} ones: a video has one frame size")
        pad_h, pad_w = self.size[0] % 2, self.size[1] % 2
        if pad_h or pad_w:  # replicate the last row/column; the true size is in the comment tag
            frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
        for frame in frames:
            for packet in self.video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                self.container.mux(packet)
        self.frames_written += len(frames)

    def _open(self, height: int, width: int) -> None:
        self.size = (height, width)
        self.container = av.open(str(self.tmp), mode="w", format="mp4", options={"movflags": "+faststart"})
        if height % 2 or width % 2:
            self.container.metadata["comment"] = f"zoo:size={width}x{height}"
        self.video = self.container.add_stream("libx264", rate=Fraction(self.fps).limit_denominator(100_000))
        self.video.width, self.video.height = width + width % 2, height + height % 2
        self.video.pix_fmt = "yuv420p"
        self.video.options = {"crf": str(VIDEO_CRF), "preset": VIDEO_PRESET}
        if self.audio is not None:   # every stream before the first packet: the header is written with it
            self.sound = self.container.add_stream("aac", rate=self.sample_rate)
            self.sound.layout = "mono"
            self.sound.bit_rate = AUDIO_BITRATE

    def finish(self) -> None:
        """Flush the video and mux the audio; one line if no frame was written."""
        if not self.frames_written:
            raise DataError(f"video {self.path}: no frames were written")
        for packet in self.video.encode():
            self.container.mux(packet)
        if self.audio is not None:
            # One big frame: PyAV re-chunks it into the encoder's 1024-sample frames.
            chunk = av.AudioFrame.from_ndarray(self.audio[None, :], format="flt", layout="mono")
            chunk.sample_rate, chunk.pts = self.sample_rate, 0
            for packet in self.sound.encode(chunk):
                self.container.mux(packet)
            for packet in self.sound.encode(None):
                self.container.mux(packet)

    def close(self) -> None:
        if self.container is not None:
            self.container.close()
            self.container = None


@contextmanager
def video_writer(path: str | os.PathLike, fps: float, audio: Optional[np.ndarray] = None,
                 sample_rate: int = 16000) -> Iterator[VideoStreamWriter]:
    """An mp4 (H.264 crf 18, yuv420p) written a chunk of frames at a time (``.write(frames)``, uint8
    ``[T, H, W, 3]`` RGB), so a video of any length needs the memory of one chunk; ``audio`` (float32 ``[N]`` mono
    in [-1, 1] at ``sample_rate``) is muxed as AAC when the block ends.

    The file is written under a temporary name in the same directory and renamed when the block completes; when
    the block raises, or wrote no frame, nothing is left behind.
    """
    path = Path(path)
    if not fps or fps <= 0:
        raise DataError(f"video {path}: fps must be positive, got {fps}")
    if audio is not None:
        audio = np.asarray(audio, dtype=np.float32)
        if audio.ndim != 1 or audio.size == 0 or not np.isfinite(audio).all():
            raise DataError(f"video {path}: audio must be a finite float32 [N] mono array, got shape {audio.shape}")
        audio = np.clip(audio, -1.0, 1.0)
    with atomic_path(path) as tmp:
        writer = VideoStreamWriter(tmp, path, fps, audio, sample_rate)
        try:
            yield writer
            writer.finish()
        finally:
            writer.close()


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: float, audio: Optional[np.ndarray] = None,
                sample_rate: int = 16000) -> None:
    """Write ``frames`` (uint8 ``[T, H, W, 3]`` RGB, T >= 1) at ``fps`` to an mp4 (H.264 crf 18, yuv420p), muxing
    ``audio`` (float32 ``[N]`` mono in [-1, 1] at ``sample_rate``) as AAC when given: :func:`video_writer` in one
    chunk (written under a temporary name, renamed when complete)."""
    frames = _check_frames(frames, Path(path))
    with video_writer(path, fps, audio, sample_rate) as video:
        video.write(frames)


def _open(path: Path, kind: str = "video") -> av.container.InputContainer:
    """Open ``path`` for reading; ``kind`` ("video" or "audio") names the file in the error line."""
    if not path.is_file():
        raise DataError(f"{kind} file not found: {path}")
    try:
        return av.open(str(path))
    except av.FFmpegError as exc:
        raise DataError(f"cannot open {kind} file {path}: {exc}") from None


def _decode_audio(container: av.container.InputContainer, path: Path) -> tuple[Optional[np.ndarray], int]:
    """All samples of the first audio stream, channels averaged: (float32 ``[N]`` or None, sample rate)."""
    if not container.streams.audio:
        return None, 0
    stream = container.streams.audio[0]
    chunks = []
    # libswresample converts every sample format (u8, s16, s32, double, packed or planar) to planar float in
    # [-1, 1]: [C, n] per frame
    to_float = av.AudioResampler(format="fltp")
    try:
        for frame in [*container.decode(stream), None]:       # None flushes the converter
            for converted in to_float.resample(frame):
                data = converted.to_ndarray()
                chunks.append(data.mean(axis=0) if len(data) > 1 else data[0])
    except av.FFmpegError as exc:
        raise DataError(f"cannot decode the audio of {path}: {exc}") from None
    audio = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)
    rate = int(stream.codec_context.sample_rate)
    if stream.duration is not None and stream.time_base is not None:  # drop the padding of the last AAC frame
        audio = audio[:int(round(float(stream.duration * stream.time_base) * rate))]
    return audio, rate


def read_audio_stream(path: str | os.PathLike) -> tuple[Optional[np.ndarray], int]:
    """Decode the first audio stream of a media file: (float32 mono ``[N]`` or None when there is none, rate),
    trimmed to the stream's declared duration when the container records one (mp4 edit lists keep it to the
    millisecond, so N can exceed the encoded length by up to ``rate / 1000`` samples)."""
    path = Path(path)
    with _open(path, kind="audio") as container:
        return _decode_audio(container, path)


def read_video(path: str | os.PathLike) -> tuple[np.ndarray, Optional[np.ndarray], float, int]:
    """Decode ``path``: ``(frames uint8 [T, H, W, 3] RGB, audio float32 [N] or None, fps, sample_rate)``.

    ``N = round(T / fps * sample_rate)`` (AAC frame padding trimmed); ``sample_rate`` is 0 when there is no audio.
    """
    path = Path(path)
    with _open(path) as container:
        if not container.streams.video:
            raise DataError(f"no video stream in {path}")
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate
        if not rate:
            raise DataError(f"video {path}: the video stream has no frame rate")
        fps = float(rate)
        try:
            frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
        except av.FFmpegError as exc:
            raise DataError(f"cannot decode the video of {path}: {exc}") from None
        tag = _SIZE_TAG.fullmatch(container.metadata.get("comment", ""))
    if not frames:
        raise DataError(f"video {path} has no frames")
    video = np.stack(frames)
    if tag:  # undo the even-size padding of write_video
        width, height = int(tag.group(1)), int(tag.group(2))
        video = np.ascontiguousarray(video[:, :height, :width])

    with _open(path) as container:  # a second pass: seeking back in a demuxed file is not guaranteed exact
        audio, sample_rate = _decode_audio(container, path)
    if audio is not None:
        length = int(round(len(video) / fps * sample_rate))
        audio = audio[:length] if len(audio) >= length else np.pad(audio, (0, length - len(audio)))
    return video, audio, fps, sample_rate
