"""The performance suite: every benchmark of ``benchmarks/`` in one command, one JSON and one Markdown summary.

    python benchmarks/perf.py [--quick] [--device auto|cpu|cuda] [--threads N] [--only NAME,NAME]
                              [--out-dir benchmarks/results]

Benchmarks, each run as its own subprocess (``sys.executable SCRIPT --out TMP.json [--quick] [--device D]
[--threads N]``) so that one's threads, memory and imports cannot skew the next:

* ``data_pipeline``: synthetic-corpus generation frames/s (with and without writing the clips) and the datamodule's
  train-loader throughput (``corpus_generation.py`` and ``datamodule_throughput.py`` measured together);
* ``metric_speed``: the zoo's CPBD, SSIM, Fréchet distance and FID next to their reference implementations,
  timed side by side in the same run (speed-ups and value differences);
* ``training_throughput``: training steps/s of every trainable model stage;
* ``lsp_streaming``: LSP's real-time streaming frames/s per frame size.

``--device`` goes to the benchmarks that run models (``auto``: CPU, and the GPU in bf16 as well when there is one);
the data and metric benchmarks are single-core CPU measurements by design. ``--threads`` likewise (default: all
cores). ``--quick`` runs every benchmark's seconds-long settings (tests; the figures only show that the plumbing
works).

Writes ``<out-dir>/perf.json`` (per benchmark: its JSON, the wall seconds, the command line, the return code and,
when it failed, the tail of its stderr), ``<out-dir>/perf.md`` (one table of headline figures per benchmark),
``<out-dir>/<name>.json`` (each benchmark's own JSON, which the README's figures cite) and ``<out-dir>/logs/``
(each benchmark's output). ``--out-dir`` defaults to ``benchmarks/results``, and to ``benchmarks/results/quick``
with ``--quick`` so that a quick run never replaces the committed figures. A failing benchmark is recorded and the
suite goes on, but exits with status 1 at the end.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import NamedTuple

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"
sys.path.insert(0, str(REPO))

from zoo.bench.provenance import cpu_model, git_commit  # noqa: E402
from zoo.io.atomic import atomic_path, write_json  # noqa: E402

STDERR_TAIL = 4000          # characters of a failed benchmark's stderr kept in perf.json


# ------------------------------------------------------------------------------------------------ summaries
# One Markdown table per benchmark from its JSON: the figures the README quotes, nothing else.

def fmt(value, digits: int = 1) -> str:
    """A number for a table: thousands separators, ``digits`` decimals; ``—`` for a missing one."""
    if value is None:
        return "—"
    if isinstance(value, (int, float)):
        return f"{value:,.{digits}f}"
    return str(value)


def table(header: Sequence[str], rows: Sequence[Sequence]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return lines


def summarize_data_pipeline(result: dict) -> list[str]:
    gen, write, loader = result["corpus_generation"], result["corpus_generation_and_write"], result["datamodule"]
    size = f"{gen['size']}²"
    batches_per_s = loader["batches"] / loader["seconds"]
    return table(("what", "measured", "target"), [
        (f"corpus generation, {size}, audio included, {gen['threads']} thread", f"{fmt(gen['frames_per_second'])} "
         f"frames/s", f"≥ {fmt(gen['target_frames_per_second'], 0)} frames/s"),
        (f"corpus generation + writing the clips, {size}", f"{fmt(write['frames_per_second_with_write'])} frames/s",
         "—"),
        (f"datamodule train loader, {loader['frame_size']}², {'+'.join(loader['fields'])}, "
         f"{loader['num_workers']} workers, batch {loader['batch_size']} x {loader['window_frames']} frames",
         f"{fmt(loader['frames_per_s'])} frames/s ({fmt(batches_per_s, 2)} batches/s)",
         f"≥ {fmt(loader['target_frames_per_s'], 0)} frames/s"),
    ])


def summarize_metric_speed(result: dict) -> list[str]:
    cpbd, ssim, frechet, fid = (result["cpbd"], result["ssim"], result["frechet_distance"],
                                result["fid_features_and_distance"])
    rows = [(f"CPBD, {cpbd['size']}²", f"{fmt(cpbd['ours_ms_per_frame'], 2)} ms/frame",
             f"`cpbd` {fmt(cpbd['reference_ms_per_frame'], 2)} ms/frame", f"{fmt(cpbd['speedup'])}×",
             f"max abs {cpbd['max_abs_diff']:.2g}")]
    for variant in ("wang", "skimage-default"):
        s = ssim[variant]
        rows.append((f"SSIM ({variant}), {ssim['size']}²", f"{fmt(s['ours_ms_per_pair'], 2)} ms/pair",
                     f"skimage {fmt(s['skimage_ms_per_pair'], 2)} ms/pair", f"{fmt(s['speedup'])}×",
                     f"max abs {s['max_abs_diff']:.2g}"))
    rows.append((f"Fréchet distance, {frechet['dims']}-d", f"{fmt(frechet['ours_s'], 3)} s",
                 f"pytorch-fid {fmt(frechet['pytorch_fid_s'], 3)} s", f"{fmt(frechet['speedup'], 2)}×",
                 f"relative {frechet['relative_diff']:.2g}"))
    if "skipped" in fid:
        rows.append(("FID end to end", "skipped", "—", "—", fid["skipped"]))
    else:
        rows.append((f"FID end to end, 2 x {fid['images_per_side']} images {fid['size']}²",
                     f"{fmt(fid['ours_s'], 2)} s", f"pytorch-fid {fmt(fid['pytorch_fid_s'], 2)} s",
                     f"{fmt(fid['speedup'], 2)}×", f"relative {fid['relative_diff']:.2g}"))
    return table(("metric", "ours", "reference", "speed-up", "difference"), rows)


def summarize_training_throughput(result: dict) -> list[str]:
    rows = [(s["model"], s["device"], s["precision"], s["batch_size"],
             "—" if s["window_seconds"] is None else fmt(s["window_seconds"], 2), f"{s['frame_size']}²",
             fmt(s["steps_per_s"], 3), fmt(s["samples_per_s"], 2), fmt(s["seconds_per_step_median"], 3))
            for s in result["stages"]]
    return table(("stage", "device", "precision", "batch", "window s", "frame size", "steps/s", "samples/s",
                  "s/step (median)"), rows)


def summarize_lsp_streaming(result: dict) -> list[str]:
    rows = []
    for run in result["runs"]:
        stream, renderer = run["stream"], run["renderer_only"]
        rows.append((run["device"], run["precision"], f"{run['size']}²", run["renderer_variant"],
                     fmt(stream["frames_per_s"], 2), fmt(stream["real_time_factor"], 3),
                     fmt(stream["steady_frames_per_s"], 2), fmt(stream["chunk_latency_ms"].get("p95"), 1),
                     fmt(renderer["frames_per_s_batch1"], 2)))
    return table(("device", "precision", "size", "renderer", "frames/s", "real-time factor", "steady frames/s",
                  "p95 push ms", "renderer-only frames/s"), rows)


# ------------------------------------------------------------------------------------------------ the benchmarks

class Benchmark(NamedTuple):
    """One benchmark script: its name (and results file ``<name>.json``), what it measures, which of the suite's
    options it takes, and the Markdown table of its JSON. (A NamedTuple, not a dataclass: this file is also loaded
    with importlib by path, where a dataclass cannot find its module.)"""

    name: str
    script: Path
    title: str
    takes_device: bool = False
    takes_threads: bool = False
    summarize: Callable[[dict], list[str]] | None = None


BENCHMARKS: list[Benchmark] = [
    Benchmark("data_pipeline", HERE / "data_pipeline.py", "Corpus generation and datamodule throughput",
              summarize=summarize_data_pipeline),
    Benchmark("metric_speed", HERE / "metric_speed.py", "Metric speed against the reference implementations",
              summarize=summarize_metric_speed),
    Benchmark("training_throughput", HERE / "training_throughput.py", "Training-step throughput per model stage",
              takes_device=True, takes_threads=True, summarize=summarize_training_throughput),
    Benchmark("lsp_streaming", HERE / "lsp_streaming.py", "LSP real-time streaming",
              takes_device=True, takes_threads=True, summarize=summarize_lsp_streaming),
]


def command(bench: Benchmark, out: Path, quick: bool, device: str, threads: int | None) -> list[str]:
    cmd = [sys.executable, str(bench.script), "--out", str(out)]
    if quick:
        cmd.append("--quick")
    if bench.takes_device:
        cmd += ["--device", device]
    if bench.takes_threads and threads:
        cmd += ["--threads", str(threads)]
    return cmd


def run_benchmark(bench: Benchmark, quick: bool, device: str, threads: int | None, out_dir: Path,
                  scratch: Path) -> dict:
    """Run one benchmark in a subprocess; its JSON is copied to ``out_dir/<name>.json`` only when it succeeded,
    so a failure leaves the previous figures in place."""
    tmp_json = scratch / f"{bench.name}.json"
    cmd = command(bench, tmp_json, quick, device, threads)
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - start
    log = out_dir / "logs" / f"{bench.name}.log"
    with atomic_path(log) as tmp:
        tmp.write_text(f"$ {' '.join(cmd)}\n# exit status {proc.returncode} after {wall:.1f} s\n"
                       f"# stdout\n{proc.stdout}\n# stderr\n{proc.stderr}")
    record: dict = {"command": cmd, "returncode": proc.returncode, "wall_seconds": round(wall, 2),
                    "log": str(log), "result": None}
    if proc.returncode == 0:
        try:
            record["result"] = json.loads(tmp_json.read_text())
        except (OSError, ValueError) as error:      # exited 0 but wrote no (valid) JSON: a failure too
            record["returncode"] = record["returncode"] or 1
            record["error"] = f"no valid JSON at {tmp_json}: {error}"
    if record["result"] is not None:
        record["json"] = str(out_dir / f"{bench.name}.json")
        with atomic_path(record["json"]) as tmp:
            shutil.copyfile(tmp_json, tmp)
    else:
        record["stderr_tail"] = proc.stderr[-STDERR_TAIL:]
    return record


# ------------------------------------------------------------------------------------------------ the suite

def environment() -> dict:
    def version(package: str) -> str | None:
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return None

    return {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "commit": git_commit(), "python": platform.python_version(),
            "platform": platform.platform(), "cpu_model": cpu_model(), "cpu_count": os.cpu_count(),
            "torch": version("torch"), "pytorch_lightning": version("pytorch-lightning"),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None}


def select(only: Sequence[str] | None) -> list[Benchmark]:
    names = [b.name for b in BENCHMARKS]
    unknown = sorted(set(only or ()) - set(names))
    if unknown:
        raise ValueError(f"unknown benchmark(s) {', '.join(unknown)}; valid: {', '.join(names)}")
    return [b for b in BENCHMARKS if not only or b.name in only]


def run_suite(quick: bool, device: str, only: list[str] | None, out_dir: Path, threads: int | None = None) -> dict:
    """Run the selected benchmarks (all by default) one after the other; writes ``perf.json``, ``perf.md`` and each
    benchmark's JSON to ``out_dir``. Returns the suite's record; ``record["ok"]`` is False if any failed."""
    benchmarks = select(only)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    suite: dict = {"suite": "perf", "quick": quick, "device": device, "threads": threads,
                   "environment": environment(), "benchmarks": {}}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="zoo-perf-") as scratch:
        for i, bench in enumerate(benchmarks, 1):
            print(f"[perf {i}/{len(benchmarks)}] {bench.name}: running ...", file=sys.stderr, flush=True)
            record = run_benchmark(bench, quick, device, threads, out_dir, Path(scratch))
            suite["benchmarks"][bench.name] = record
            status = "ok" if record["result"] is not None else f"FAILED (exit status {record['returncode']})"
            print(f"[perf {i}/{len(benchmarks)}] {bench.name}: {status} in {record['wall_seconds']:.1f} s",
                  file=sys.stderr, flush=True)
    suite["failed"] = [name for name, record in suite["benchmarks"].items() if record["result"] is None]
    suite["ok"] = not suite["failed"]
    suite["wall_seconds"] = round(time.perf_counter() - started, 2)
    write_json(out_dir / "perf.json", suite)
    with atomic_path(out_dir / "perf.md") as tmp:
        tmp.write_text(markdown(suite, benchmarks))
    return suite


def display_command(cmd: Sequence[str]) -> str:
    """``python benchmarks/x.py --quick ...``: the command without the interpreter's path and the temporary
    ``--out`` (perf.json keeps the exact one)."""
    script = Path(cmd[1])
    args = list(cmd[2:])
    if "--out" in args:
        del args[args.index("--out"):args.index("--out") + 2]
    shown = script.relative_to(REPO).as_posix() if script.is_relative_to(REPO) else str(script)
    return " ".join(["python", shown, *args])


def markdown(suite: dict, benchmarks: Sequence[Benchmark]) -> str:
    """The readable summary: where and how it ran, each benchmark's status, then its headline figures."""
    env = suite["environment"]
    quick = "; **quick settings** (a plumbing check, not figures)" if suite["quick"] else ""
    lines = ["# Performance suite", "",
             f"{env['time']}, commit {env['commit'] or 'unknown'}; {env['cpu_model']}, {env['cpu_count']} cores; "
             f"torch {env['torch']}, Python {env['python']}; device `{suite['device']}`, threads "
             f"{suite['threads'] or 'all cores'}{quick}.", ""]
    lines += table(("benchmark", "status", "wall s", "command"), [
        (name, "ok" if record["result"] is not None else f"**failed** (exit {record['returncode']})",
         fmt(record["wall_seconds"]), f"`{display_command(record['command'])}`")
        for name, record in suite["benchmarks"].items()])
    for bench in benchmarks:
        record = suite["benchmarks"][bench.name]
        lines += ["", f"## {bench.title} (`{bench.name}`)", ""]
        if record["result"] is None:
            lines += [f"Failed with exit status {record['returncode']}; the end of its stderr:", "", "```",
                      (record.get("error") or record.get("stderr_tail") or "").strip()[-1500:], "```"]
        elif bench.summarize is None:
            lines.append(f"No summary table; see `{bench.name}.json`.")
        else:
            try:
                lines += bench.summarize(record["result"])
            except (KeyError, TypeError, ValueError, ZeroDivisionError) as error:   # a JSON of another shape
                lines.append(f"Summary unavailable ({type(error).__name__}: {error}); see `{bench.name}.json`.")
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="every benchmark's seconds-long settings (tests)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="for the model benchmarks; auto: CPU, and the GPU (bf16) as well when present")
    parser.add_argument("--threads", type=int, default=None, help="torch threads of the model benchmarks")
    parser.add_argument("--only", default=None,
                        help=f"comma-separated subset of: {', '.join(b.name for b in BENCHMARKS)}")
    parser.add_argument("--out-dir", type=Path, default=None,
                        help="default benchmarks/results (benchmarks/results/quick with --quick, "
                             "benchmarks/results/partial with --only: perf.json there is always a full run)")
    args = parser.parse_args(argv)
    if args.out_dir is None:
        args.out_dir = RESULTS / "quick" if args.quick else RESULTS / "partial" if args.only else RESULTS
    args.only = [name.strip() for name in args.only.split(",") if name.strip()] if args.only else None
    try:
        select(args.only)
    except ValueError as error:
        parser.error(str(error))
    return args


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    suite = run_suite(args.quick, args.device, args.only, args.out_dir, args.threads)
    print(f"perf: {len(suite['benchmarks']) - len(suite['failed'])}/{len(suite['benchmarks'])} benchmarks ok in "
          f"{suite['wall_seconds']:.0f} s; {args.out_dir / 'perf.json'}, {args.out_dir / 'perf.md'}"
          + (f"; failed: {', '.join(suite['failed'])}" if suite["failed"] else ""))
    return suite


def cli(argv: Sequence[str] | None = None) -> int:
    """Exit status of a suite run: 1 when any benchmark failed."""
    return 0 if main(argv)["ok"] else 1


if __name__ == "__main__":
    sys.exit(cli())
