"""Peak memory of audio-to-video prediction as the audio grows, each measurement in a fresh process.

    python benchmarks/predict_memory.py [--run runs/lsp/identity0] [--seconds 10 120]
                                        [--out benchmarks/results/predict_memory.json] [--quick]

Two ways to turn the same audio file into an mp4 with the same model, side by side:

* ``zoo_predict``: ``zoo predict --audio`` as the CLI runs it: the video is encoded about 2 s at a time as the model
  makes it (``predict_audio_chunks`` into :func:`zoo.io.video.video_writer`);
* ``whole_video``: ``LSP.predict_audio`` (every frame in memory, float [T, 3, H, W]) then one ``write_video`` of all
  of them, which is what ``zoo predict`` did before it streamed.

The audio is the synthetic corpus' speech (identity 0, :func:`zoo.synth.generate_clip` without frames), ``--seconds``
long (1-120 s). Reported per run: the process's peak resident set size (``ru_maxrss`` of that child alone), its wall
time, and the frames written. Writes the JSON atomically and prints a table.
"""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from zoo.io.atomic import write_json  # noqa: E402

DEFAULT_OUT = HERE / "results" / "predict_memory.json"
MODES = ("zoo_predict", "whole_video")

# Each run is its own interpreter, so that one run's peak is not another's.
_CHILD = r"""
import sys
mode, ckpt, audio_path, out = sys.argv[1:5]
if mode == "zoo_predict":
    from zoo.cli import main
    sys.exit(main(["predict", "--model", "lsp", "--ckpt", ckpt, "--audio", audio_path, "--out", out,
                   "--device", "cpu"]))
from lsp.model import LSP
from zoo.io.audio import load_audio
from zoo.io.video import write_video
from zoo.model import to_uint8_hwc
from zoo.predict import resolve_checkpoint
model = LSP.load(resolve_checkpoint("lsp", ckpt))
audio = load_audio(audio_path, model.sample_rate)
frames = to_uint8_hwc(model.predict_audio(audio).frames)
write_video(out, frames, fps=model.fps, audio=audio, sample_rate=model.sample_rate)
"""


def speech(seconds: float, path: Path) -> None:
    """``seconds`` of identity 0's synthetic speech as a 16 kHz wav."""
    import soundfile as sf

    from zoo.synth import SynthConfig, generate_clip

    clip = generate_clip(SynthConfig(seconds=float(seconds)), 0, 0, 0, 99, render=False)
    sf.write(path, clip["audio"], 16000)


def measure(mode: str, ckpt: str, audio: Path, out: Path) -> dict:
    """Run one prediction in a child process; its peak RSS (MB), wall time (s) and the frames in its video."""
    from zoo.io.video import read_video

    log = out.with_suffix(".log")      # a file, not a pipe: the progress bar could fill a pipe nobody reads yet
    started = time.perf_counter()
    with open(log, "wb") as stderr:
        child = subprocess.Popen([sys.executable, "-c", _CHILD, mode, ckpt, str(audio), str(out)],
                                 cwd=HERE.parent, env={**os.environ, "PYTHONPATH": str(HERE.parent)},
                                 stdout=subprocess.DEVNULL, stderr=stderr)
        _, status, usage = os.wait4(child.pid, 0)       # the rusage of this child alone
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        errors = log.read_text(errors="replace").strip()
        raise RuntimeError(f"{mode} on {audio.name} failed (exit {child.returncode}): {errors[-500:]}")
    return {"peak_rss_mb": round(usage.ru_maxrss / 1024, 1), "wall_seconds": round(time.perf_counter() - started, 2),
            "frames": len(read_video(out)[0])}


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="runs/lsp/identity0", help="the LSP run (or its assembled checkpoint)")
    parser.add_argument("--seconds", type=float, nargs="+", default=[10.0, 120.0], help="audio lengths, 1-120 s")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--quick", action="store_true", help="2 s of audio only (tests)")
    args = parser.parse_args(argv)
    lengths = [2.0] if args.quick else args.seconds
    runs = []
    with tempfile.TemporaryDirectory(prefix="zoo-predict-memory-") as scratch:
        for seconds in lengths:
            audio = Path(scratch) / f"speech{seconds:g}.wav"
            speech(seconds, audio)
            for mode in MODES:
                runs.append({"mode": mode, "audio_seconds": seconds,
                             **measure(mode, str(Path(args.run).resolve()), audio, Path(scratch) / f"{mode}.mp4")})
    result = {"benchmark": "predict_memory", "run": str(args.run), "runs": runs,
              "environment": {"python": platform.python_version(), "platform": platform.platform(),
                              "time": time.strftime("%Y-%m-%dT%H:%M:%S")}}
    write_json(args.out, result)
    print(f"{'mode':12s} {'audio s':>8s} {'frames':>7s} {'peak RSS MB':>12s} {'wall s':>7s}")
    for run in runs:
        print(f"{run['mode']:12s} {run['audio_seconds']:8g} {run['frames']:7d} {run['peak_rss_mb']:12.1f} "
              f"{run['wall_seconds']:7.2f}")
    return result


if __name__ == "__main__":
    main()
