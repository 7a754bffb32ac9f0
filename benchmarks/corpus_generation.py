"""Synthetic-corpus generation speed on one core, in frames per second INCLUDING audio synthesis.

    python benchmarks/corpus_generation.py [--size 128] [--seconds 120] [--write] [--out FILE] [--quick]

Generates clips of the default corpus config (8 s, 25 fps, 16 kHz) round-robin over identities and styles
until ``seconds`` of video exist, with torch / OpenCV / BLAS limited to one thread. ``--write`` also times
writing the clips through zoo.data.clip_format (PNG encoding dominates that). Prints one JSON object (and writes
it atomically to ``--out``). ``--quick``: one clip at 64x64 (tests). Target: >= 1000 frames/s at 128x128 for
generation.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before numpy / torch load their thread pools
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2  # noqa: E402

from zoo.synth import SynthConfig, generate_clip  # noqa: E402
from zoo.synth.config import num_frames  # noqa: E402
from zoo.synth.corpus import TRACKS  # noqa: E402


def _one_thread() -> None:
    cv2.setNumThreads(1)
    try:
        import torch
        torch.set_num_threads(1)
    except Exception:  # torch is not needed to generate the corpus
        pass


def measure(size: int = 128, seconds_of_video: float = 120.0, write: bool = False) -> dict:
    """Generate ``seconds_of_video`` of clips at ``size``; returns frames/s (generation incl. audio) and, with
    ``write``, frames/s of generation plus writing through the clip format."""
    _one_thread()
    cfg = SynthConfig(size=size)
    per_clip = num_frames(cfg)
    n_clips = max(1, int(round(seconds_of_video * cfg.fps / per_clip)))
    generate_clip(cfg, 0, 0, 0, 0)  # warm-up: identity, background and renderer caches, imports
    gen_time = write_time = 0.0
    frames = 0
    with tempfile.TemporaryDirectory(prefix="zoo-synth-bench-") as scratch:
        for k in range(n_clips):
            ident, style = k % (cfg.identities + cfg.unseen_identities), k % cfg.styles
            start = time.perf_counter()
            clip = generate_clip(cfg, ident, style, k % cfg.intensities, 1000 + k)
            gen_time += time.perf_counter() - start
            frames += len(clip["frames"])
            if write:
                from zoo.data.clip_writer import write_clip

                start = time.perf_counter()
                write_clip(scratch, f"bench{k:04d}", frames=clip["frames"], audio=clip["audio"],
                           sample_rate=cfg.sample_rate, fps=cfg.fps, tracks={t: clip[t] for t in TRACKS},
                           meta=clip["meta"])
                write_time += time.perf_counter() - start
    result = {"benchmark": "corpus_generation", "size": size, "frames": frames, "clips": n_clips,
              "seconds_of_video": frames / cfg.fps, "generate_seconds": round(gen_time, 3),
              "frames_per_second": round(frames / gen_time, 1), "includes_audio": True, "threads": 1,
              "target_frames_per_second": 1000}
    if write:
        result["write_seconds"] = round(write_time, 3)
        result["frames_per_second_with_write"] = round(frames / (gen_time + write_time), 1)
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--seconds", type=float, default=120.0, help="seconds of video to generate")
    parser.add_argument("--write", action="store_true", help="also write clips through the clip format")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here (atomically)")
    parser.add_argument("--quick", action="store_true", help="one 8 s clip at 64x64 (seconds, for tests)")
    args = parser.parse_args(argv)
    if args.quick:
        args.size, args.seconds = 64, 8.0
    result = measure(args.size, args.seconds, args.write)
    if args.out is not None:
        from zoo.io.atomic import write_json

        write_json(args.out, result)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
