"""Data-pipeline benchmark of the platform: corpus generation and datamodule throughput, one JSON file.

    python benchmarks/data_pipeline.py [--size 128] [--seconds 120] [--workers 2] [--out FILE] [--quick]

1. Corpus generation: frames/s including audio synthesis at ``--size`` on one core (target >= 1000), and the
   same with writing through the clip format.
2. Datamodule throughput: train-loader frames/s (frames + audio + mel) at ``--size`` with ``--workers`` workers
   (target >= 3000), read from a real synthetic corpus generated for the purpose.

Writes ``benchmarks/results/data_pipeline.json`` (atomically; ``--out`` elsewhere) and prints it. ``--quick``
(seconds, for tests): 64x64, one clip generated, a 4-clips-per-identity corpus of 4 s clips, 1 + 5 loader batches.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import corpus_generation  # noqa: E402
import datamodule_throughput  # noqa: E402

from zoo.io.atomic import atomic_path  # noqa: E402
from zoo.synth import SynthConfig, build_corpus  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--seconds", type=float, default=120.0, help="seconds of video for the generation run")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default=str(HERE / "results" / "data_pipeline.json"))
    parser.add_argument("--quick", action="store_true", help="seconds-long settings (tests)")
    args = parser.parse_args(argv)
    corpus_cfg = SynthConfig(identities=2, unseen_identities=1, clips_per_identity=12, size=args.size)
    loader_settings: dict = {}
    if args.quick:
        args.size, args.seconds = 64, 8.0
        corpus_cfg = SynthConfig(identities=2, unseen_identities=1, clips_per_identity=4, seconds=4.0, size=64)
        loader_settings = {"num_batches": 5, "warmup": 1}

    generation = corpus_generation.measure(size=args.size, seconds_of_video=args.seconds)
    generation_with_write = corpus_generation.measure(size=args.size, seconds_of_video=args.seconds, write=True)
    with tempfile.TemporaryDirectory(prefix="zoo-bench-") as scratch:
        corpus = build_corpus(corpus_cfg, Path(scratch) / "synth", progress=False)
        loader = datamodule_throughput.measure(root=str(corpus), num_workers=args.workers, size=args.size,
                                               **loader_settings)
    result = {
        "benchmark": "data_pipeline",
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "corpus_generation": generation,
        "corpus_generation_and_write": generation_with_write,
        "datamodule": {**loader, "target_frames_per_s": 3000},
    }
    with atomic_path(Path(args.out)) as tmp:
        Path(tmp).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
