"""Train-loader throughput of TalkingHeadDataModule (frames + audio + mel by default) in frames per second.

    python benchmarks/datamodule_throughput.py [--root DIR] [--workers 2] [--size 128] [--batches 60]
                                               [--out FILE] [--quick]

Without ``--root`` a temporary fake dataset (zoo.data.fake: smooth moving images, PNG-compressible like renders)
is written at ``--size``. Prints one JSON object (and writes it atomically to ``--out``). ``--quick``: 64x64,
1 warm-up + 5 timed batches (tests). Target: >= 3000 frames/s at 128x128 with 2 workers.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from zoo.data import DataConfig, TalkingHeadDataModule, open_dataset  # noqa: E402
from zoo.data.fake import write_fake_dataset  # noqa: E402


def decode_ms_per_frame(root: str, frames: int = 500) -> float:
    """Single-thread time to read and decode one frame (PNG) through Clip.read_frames, in ms."""
    dataset = open_dataset(root)
    first_split = next(iter(dataset.splits))
    clip = dataset.clip(dataset.clip_ids(first_split)[0])
    count, start = 0, time.perf_counter()
    while count < frames:
        n = min(clip.num_frames, frames - count)
        clip.read_frames(0, n)
        count += n
    return (time.perf_counter() - start) / count * 1e3


def measure(root: Optional[str] = None, num_workers: int = 2, size: int = 128, batch_size: int = 8,
            window_seconds: float = 2.0, num_batches: int = 60, warmup: int = 4,
            fields: Sequence[str] = ("frames", "audio", "mel")) -> dict:
    """Iterate the train loader and report frames/s after ``warmup`` batches (worker start-up excluded)."""
    with tempfile.TemporaryDirectory(prefix="zoo-bench-") as scratch:
        if root is None:
            root = str(write_fake_dataset(Path(scratch) / "data", splits={"train": 8, "val": 1}, seconds=10.0,
                                          size=size, tracks=()))
        cfg = DataConfig(root=root, fields=list(fields), batch_size=batch_size, num_workers=num_workers,
                         window_seconds=window_seconds, num_refs=1)
        datamodule = TalkingHeadDataModule(cfg)
        start = time.perf_counter()
        datamodule.setup("fit")
        setup_s = time.perf_counter() - start
        if datamodule.frame_size != size:
            print(f"note: dataset frames are {datamodule.frame_size}px, not {size}px", file=sys.stderr)
        loader = datamodule.train_dataloader()
        frames = batches = 0
        begin = None
        while batches < warmup + num_batches:
            for batch in loader:
                if batches == warmup:
                    begin, frames = time.perf_counter(), 0
                frames += batch["frames"].shape[0] * batch["frames"].shape[1]
                batches += 1
                if batches >= warmup + num_batches:
                    break
        elapsed = time.perf_counter() - begin
        return {"frames_per_s": round(frames / elapsed, 1),
                "samples_per_s": round(num_batches * batch_size / elapsed, 1),
                "batches": num_batches, "seconds": round(elapsed, 3), "setup_s": round(setup_s, 3),
                "num_workers": num_workers, "frame_size": datamodule.frame_size, "batch_size": batch_size,
                "window_frames": datamodule.window_frames, "fields": list(fields),
                "decode_ms_per_frame": round(decode_ms_per_frame(root), 4), "cpu_count": os.cpu_count()}


def main(argv: Optional[Sequence[str]] = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=None)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--batches", type=int, default=60)
    parser.add_argument("--fields", default="frames,audio,mel")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here (atomically)")
    parser.add_argument("--quick", action="store_true", help="64x64, 1 warm-up + 5 timed batches (tests)")
    args = parser.parse_args(argv)
    warmup = 4
    if args.quick:
        args.size, args.batches, warmup = 64, 5, 1
    result = measure(args.root, args.workers, args.size, args.batch_size, num_batches=args.batches, warmup=warmup,
                     fields=args.fields.split(","))
    if args.out is not None:
        from zoo.io.atomic import write_json

        write_json(args.out, result)
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
