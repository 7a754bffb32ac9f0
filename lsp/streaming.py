"""Real-time LSP: audio chunks in, video frames out, with bounded latency.

    stream = LSPStream(model, seed=0)
    for chunk in microphone:                  # float32 mono chunks at stream.sample_rate, any size
        show(stream.push(chunk).frames)       # the frames that are complete, float [n, 3, H, W] in [0, 1]
    show(stream.flush().frames)               # end of speech: the remaining frames

Audio becomes log-mel rows (:class:`~zoo.data.streaming.StreamingLogMel`, 32 ms after a row's centre at 25 fps)
and rows become frames through the same :class:`~lsp.inference.LSPEngine` offline generation uses, so the frames
equal those of :meth:`lsp.model.LSP.predict_audio` with the same seed. A frame is emitted once the audio
``LSPEngine.latency_frames`` frames after it has arrived (the mouth's 300 ms look-ahead plus the smoothing).
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from lsp.inference import EngineOutput, LSPEngine
from zoo.data.streaming import StreamingLogMel
from zoo.errors import DataError


class LSPStream:
    """One live stream of a trained, assembled :class:`~lsp.model.LSP` (put it in eval mode on its device)."""

    def __init__(self, model, seed: int = 0, poses: Optional[torch.Tensor] = None):
        self.model = model
        self.fps = float(model.profile.fps)
        self.sample_rate = int(model.profile.sample_rate)
        self.mel = StreamingLogMel(self.sample_rate, self.fps)
        self.engine = LSPEngine(model, self.fps, seed, poses)
        self.ended = False

    @property
    def latency_seconds(self) -> float:
        """Audio needed after a frame's end before it is emitted (look-ahead + smoothing + the mel window).

        Frame t is emitted with mel row ``2 (t + L) + 1`` (``L = engine.latency_frames``), whose centre lies
        ``L - 1/4`` frames after frame t's end and which is final ``mel.latency_samples`` after its centre."""
        return (self.engine.latency_frames - 0.25) / self.fps + self.mel.latency_samples / self.sample_rate

    @torch.no_grad()
    def push(self, audio_chunk: np.ndarray) -> EngineOutput:
        """Consume float mono audio [n] in [-1, 1]; return the frames completed by it."""
        self._check_open("push()")
        rows = self.mel.push(audio_chunk)
        return self.engine.push_mel(torch.from_numpy(rows))

    @torch.no_grad()
    def flush(self) -> EngineOutput:
        """End of the audio: every remaining frame."""
        self._check_open("flush()")
        self.ended = True
        try:
            rows = self.mel.flush()
        except ValueError as error:      # less audio than one frame's analysis window, as predict_audio says
            raise DataError(f"LSPStream.flush(): {error}") from None
        first = self.engine.push_mel(torch.from_numpy(rows))
        return EngineOutput.concat([first, self.engine.finish()])

    def _check_open(self, call: str) -> None:
        if self.ended:
            raise RuntimeError(f"LSPStream.{call} after flush(): the stream has ended; start a new LSPStream")
