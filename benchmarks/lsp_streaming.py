"""Real-time streaming throughput of LSP: audio chunks in, frames out, at several frame sizes.

    python benchmarks/lsp_streaming.py [--sizes 128 256 512] [--seconds 10] [--device auto|cpu|cuda]
                                       [--threads N] [--out benchmarks/results/lsp_streaming.json] [--quick]

For every frame size, a :class:`lsp.streaming.LSPStream` is fed ``--seconds`` of speech in 40 ms chunks (one
video frame of audio per ``push``, as a microphone would deliver it, but as fast as the model takes it), after a
short warm-up stream. Reported per run:

* ``frames_per_s``: frames emitted by the pushes / the wall time of all pushes; ``real_time_factor`` =
  frames_per_s / 25 (>= 1: keeps up with live audio at 25 fps). ``steady_frames_per_s``: the same over the pushes
  from the first emitted frame on (without the start-up: the first ``latency_frames`` pushes emit nothing but still
  run the speech stages, and the first head-pose sample runs the WaveNet's warm-up); the flush is timed apart;
* ``chunk_latency_ms``: p50 / p95 / max / mean wall time of one ``push`` in steady state (from the first push that
  emits a frame) and over all pushes (where the WaveNet's 254 warm-up steps of the first pose sample show in
  ``max``); ``algorithmic_latency_s``: ``stream.latency_seconds`` (audio a frame waits for: mouth look-ahead +
  smoothing + mel window), independent of the hardware;
* a breakdown measured separately: renderer-only frames/s (``model.render_landmarks``: edge maps + network, at
  batch 1 as in streaming and at ``--render-batch``), the network alone (as trained, and with its BatchNorms folded
  into its convolutions as the stream runs it, ``model.inference_renderer()``), the edge-map drawing alone, and per
  device the head-pose sampler's steps/s and the speech front end (APC + manifold projection + mouth LSTM) per
  frame.

Model: the DEFAULT :class:`lsp.model.LSPConfig` architecture (APC 3 x 512 GRU, 3-layer mouth LSTM, 2 x 7 WaveNet,
renderer ngf 16, 1 block per level, no input skip) with ``num_downs = log2(size) - 1`` renderer levels (2 x 2
innermost), plus the paper's renderer (ngf 64, 2 blocks per level, 8 levels) at 512 as a separate row. **Weights are
random** (seeded): the amount of computation does not depend on their values, only on the architecture. The person
profile is realistic: fitted by hand, as :meth:`lsp.person.PersonProfile.fit` would, from one in-memory synthetic
clip of identity 0 at that size (mean face, mouth scale, 10 s blink track, head-state statistics, shoulders, camera,
the 4 pose-stratified candidate frames), with a random 2000 x 512 APC base for the manifold projection. The audio
is that clip's synthetic speech (``zoo.synth``, 16 kHz).

On CUDA (``--device auto`` when available, or ``cuda``) every size runs twice: fp32, and with the renderer under
bf16 autocast (everything else stays fp32); pushes are synchronised before timing.

Threads: ``torch.set_num_threads(--threads)`` (default: all cores). On a machine shared with other busy processes,
OpenMP's default active waiting makes multi-threaded runs collapse when a core is taken (each parallel region
waits for a descheduled thread: ~30x slower measured); run with ``OMP_WAIT_POLICY=PASSIVE`` there, or fewer
threads. On an idle machine the passive policy costs instead (128 px: 15 frames/s against 43 by default,
2026-12-06). The environment block records the wait policy and the load average at start and end.

Writes the JSON atomically and prints a table.
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lsp.geometry import draw_edge_maps
from lsp.manifold import ProjectionBase, manifold_projection
from lsp.model import LSP, LSPConfig
from lsp.networks.headpose import HeadposeSampler
from lsp.person import PersonProfile
from lsp.streaming import LSPStream
from zoo.bench.provenance import cpu_model
from zoo.io.atomic import write_json
from zoo.synth import SynthConfig, generate_clip

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "lsp_streaming.json"
FPS = 25.0
SAMPLE_RATE = 16000
APC_BASE_SIZE = 2000
PAPER_RENDERER = {"ngf": 64, "blocks_per_level": 2, "num_downs": 8, "input_skip": False}


# ------------------------------------------------------------------------------------------------ setup

def person_data(size: int, seconds: float) -> dict:
    """One synthetic clip of identity 0 at ``size``: tracks and audio of ``seconds`` (no frames rendered), and a
    short rendered clip of the same person for the candidate images."""
    clip = generate_clip(SynthConfig(size=size, seconds=max(1.0, seconds), fps=FPS, sample_rate=SAMPLE_RATE),
                         identity=0, style=0, intensity=0, clip_seed=0, render=False)
    short = generate_clip(SynthConfig(size=size, seconds=2.0, fps=FPS, sample_rate=SAMPLE_RATE),
                          identity=0, style=0, intensity=0, clip_seed=1)
    return {"clip": clip, "short": short}


@torch.no_grad()
def fill_profile(profile: PersonProfile, data: dict, seed: int = 0) -> None:
    """The person statistics of the in-memory clip (:meth:`PersonProfile.fit_arrays`), random APC base."""
    clip, short = data["clip"], data["short"]
    frames = short["frames"]                                                    # uint8 [T, S, S, 3]
    profile.fit_arrays(clip["landmarks3d"], [clip["pose"]], clip["shoulders3d"], clip["meta"]["intrinsics"], FPS,
                       SAMPLE_RATE, read_frame=lambda n: frames[n % len(frames)], identity=0)
    # candidates from the rendered short clip (its own mouth openings and poses)
    profile.candidates = torch.from_numpy(PersonProfile._candidates(
        lambda n: frames[n], np.asarray(short["landmarks3d"], np.float64), np.asarray(short["pose"], np.float64)))
    generator = torch.Generator().manual_seed(seed)
    profile.set_apc_base(torch.randn(APC_BASE_SIZE, profile_apc_dim(), generator=generator))


def profile_apc_dim() -> int:
    return LSPConfig().apc.hidden_size


class AutocastRenderer(nn.Module):
    """The renderer under autocast (e.g. bf16 on CUDA); returns float32 like the plain one."""

    def __init__(self, net: nn.Module, dtype: torch.dtype):
        super().__init__()
        self.net, self.dtype = net, dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, dtype=self.dtype):
            y = self.net(x)
        return y.float()


def renderer_settings(size: int, paper: bool = False) -> dict:
    if paper:
        return dict(PAPER_RENDERER)
    cfg = LSPConfig().renderer
    return {"ngf": cfg.ngf, "blocks_per_level": cfg.blocks_per_level, "num_downs": int(math.log2(size)) - 1,
            "input_skip": cfg.input_skip}


def build_model(size: int, data: dict, device: torch.device, renderer: dict, precision: str) -> LSP:
    """The default LSP architecture with the given renderer settings, random weights, a filled profile."""
    cfg = LSPConfig()
    for key, value in renderer.items():
        setattr(cfg.renderer, key, value)
    torch.manual_seed(0)
    model = LSP(cfg)
    fill_profile(model.profile, data)
    model = model.eval().to(device)
    if precision == "bf16":
        model.renderer = AutocastRenderer(model.renderer, torch.bfloat16)
    return model


# ------------------------------------------------------------------------------------------------ timing

def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def percentiles(values_ms: Sequence[float]) -> dict:
    if not len(values_ms):
        return {"count": 0}
    v = np.asarray(values_ms, np.float64)
    return {"count": len(v), "p50": round(float(np.percentile(v, 50)), 3),
            "p95": round(float(np.percentile(v, 95)), 3), "max": round(float(v.max()), 3),
            "mean": round(float(v.mean()), 3)}


def rate(fn: Callable[[], object], device: torch.device, items: int, min_seconds: float, min_calls: int = 1,
         warmup: int = 1) -> float:
    """Items per second of ``fn`` (``items`` per call): warm-up calls, then calls until both minimums are met."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    calls, start = 0, time.perf_counter()
    while calls < min_calls or time.perf_counter() - start < min_seconds:
        fn()
        synchronize(device)
        calls += 1
    return calls * items / (time.perf_counter() - start)


@torch.no_grad()
def measure_stream(model: LSP, audio: np.ndarray, warmup_audio: np.ndarray, device: torch.device) -> dict:
    """Push ``audio`` in one-frame chunks through a fresh stream (after a warm-up stream); time every push."""
    chunk = round(SAMPLE_RATE / FPS)                                       # 640 samples = 40 ms
    warm = LSPStream(model, seed=1)
    for start in range(0, len(warmup_audio), chunk):
        warm.push(warmup_audio[start:start + chunk])
    synchronize(device)

    stream = LSPStream(model, seed=0)
    push_ms, emitted = [], []
    total_start = time.perf_counter()
    for start in range(0, len(audio), chunk):
        t0 = time.perf_counter()
        out = stream.push(audio[start:start + chunk])
        synchronize(device)
        push_ms.append((time.perf_counter() - t0) * 1e3)
        emitted.append(len(out.frames))
    push_seconds = time.perf_counter() - total_start
    t0 = time.perf_counter()
    tail = stream.flush()
    synchronize(device)
    flush_seconds = time.perf_counter() - t0

    frames = int(sum(emitted))
    first = next((i for i, n in enumerate(emitted) if n), len(emitted))
    fps = frames / push_seconds if push_seconds > 0 else 0.0
    steady_ms = float(sum(push_ms[first:]))
    steady_fps = frames / steady_ms * 1e3 if steady_ms > 0 else 0.0
    counts = np.bincount(np.asarray(emitted, np.int64)) if emitted else np.zeros(1, np.int64)
    return {
        "chunk_samples": chunk, "pushes": len(push_ms), "frames": frames, "push_seconds": round(push_seconds, 4),
        "frames_per_s": round(fps, 3), "real_time_factor": round(fps / FPS, 4),
        "steady_frames_per_s": round(steady_fps, 3), "steady_real_time_factor": round(steady_fps / FPS, 4),
        "chunk_latency_ms": percentiles(push_ms[first:]),
        "chunk_latency_ms_all_pushes": percentiles(push_ms),
        "first_frame_push": int(first), "frames_per_push_histogram": {str(k): int(c) for k, c in enumerate(counts)},
        "algorithmic_latency_s": round(float(stream.latency_seconds), 4),
        "latency_frames": int(stream.engine.latency_frames),
        "flush": {"frames": len(tail.frames), "seconds": round(flush_seconds, 4)},
        "frames_total": frames + len(tail.frames),
    }


@torch.no_grad()
def measure_renderer(model: LSP, data: dict, device: torch.device, batch: int, min_seconds: float) -> dict:
    """``model.render_landmarks`` frames/s at batch 1 and ``batch`` through the BatchNorm-folded renderer the stream
    uses; the network alone, as trained and folded (side by side); the edge maps alone."""
    clip = data["clip"]
    size = int(model.profile.candidates.shape[-1])
    folded = model.inference_renderer()
    out: dict = {"batch": batch}
    for label, n in (("batch1", 1), (f"batch{batch}", batch)):
        landmarks = torch.from_numpy(np.asarray(clip["landmarks2d"][:n], np.float32))
        shoulders = torch.from_numpy(np.asarray(clip["shoulders2d"][:n], np.float32))
        render = partial(model.render_landmarks, landmarks, shoulders, folded)
        out[f"frames_per_s_{label}"] = round(rate(render, device, n, min_seconds), 3)
        if n == 1:
            condition = model.profile.renderer_input(landmarks, shoulders)
            for key, network in (("network_frames_per_s_batch1", model.renderer),
                                 ("network_folded_frames_per_s_batch1", folded)):
                out[key] = round(rate(partial(network, condition), device, 1, min_seconds), 3)
            edges = partial(draw_edge_maps, landmarks, shoulders, size)
            out["edge_maps_per_s"] = round(rate(edges, torch.device("cpu"), 1, min(min_seconds, 0.5), min_calls=5), 1)
    return out


@torch.no_grad()
def measure_front(model: LSP, device: torch.device, min_seconds: float) -> dict:
    """Per-frame steps/s of the stages before the renderer, on random inputs of the right shapes."""
    hidden = model.cfg.apc.hidden_size
    sampler = HeadposeSampler(model.headpose, 1, device=device)
    state = torch.zeros(1, model.headpose.state_dim, device=device)
    pair = torch.randn(1, 2 * hidden, device=device)
    sampler_rate = rate(lambda: sampler.step(state, pair), device, 1, min_seconds, min_calls=20, warmup=5)

    mel = torch.randn(1, 2, model.cfg.apc.mel_dim, device=device)
    carry: dict = {"apc": None, "mouth": None}
    base = ProjectionBase.of(model.profile.apc_base)      # prepared once per stream, as LSPEngine does

    def front_step() -> None:                # what one frame costs LSPEngine before the pose and the renderer
        features, carry["apc"] = model.speech(mel, carry["apc"])
        features = manifold_projection(features[0], base, model.cfg.lle_neighbours, model.cfg.lle_percent)
        _, carry["mouth"] = model.mouth(features.reshape(1, 1, -1), carry["mouth"])

    front_rate = rate(front_step, device, 1, min_seconds, min_calls=20, warmup=5)
    return {"headpose_sampler_steps_per_s": round(sampler_rate, 1),
            "headpose_receptive_field": int(model.headpose.receptive_field),
            "speech_front_end_frames_per_s": round(front_rate, 1)}


# ------------------------------------------------------------------------------------------------ driver

def model_devices(choice: str) -> list[str]:
    """The devices of ``--device auto|cpu|cuda``: ``auto`` is the CPU, and CUDA as well when there is one."""
    if choice == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: CUDA is not available")
    return {"auto": ["cpu"] + (["cuda"] if torch.cuda.is_available() else []), "cpu": ["cpu"],
            "cuda": ["cuda"]}[choice]


def environment(device_names: list[str]) -> dict:
    env = {
        "threads": torch.get_num_threads(), "interop_threads": torch.get_num_interop_threads(),
        "cpu_count": os.cpu_count(), "cpu_model": cpu_model(), "platform": platform.platform(),
        "python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "load_average_start": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "devices": device_names, "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    if torch.cuda.is_available():
        env["cuda"] = {"device_name": torch.cuda.get_device_name(0), "cuda_version": torch.version.cuda,
                       "cudnn": torch.backends.cudnn.version()}
    return env


def run_configs(sizes: Sequence[int], devices: Sequence[str], paper: bool) -> list[dict]:
    configs = []
    for device in devices:
        for precision in (("fp32", "bf16") if device == "cuda" else ("fp32",)):
            for size in sizes:
                configs.append({"device": device, "precision": precision, "size": size, "renderer_variant": "default",
                                "renderer": renderer_settings(size)})
            if paper and 512 in sizes:
                configs.append({"device": device, "precision": precision, "size": 512, "renderer_variant": "paper",
                                "renderer": renderer_settings(512, paper=True)})
    return configs


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256, 512])
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds of audio streamed per run")
    parser.add_argument("--paper-seconds", type=float, default=None,
                        help="seconds streamed for the paper-renderer row (default: --seconds on CUDA, 2 on CPU, "
                             "where it renders ~4x slower than the default 512 renderer)")
    parser.add_argument("--warmup-seconds", type=float, default=0.6, help="audio pushed through a warm-up stream")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="auto: CPU, and CUDA as well when available")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: all cores)")
    parser.add_argument("--render-batch", type=int, default=4, help="batch of the renderer-only measurement")
    parser.add_argument("--min-seconds", type=float, default=1.0, help="minimum time per separate measurement")
    parser.add_argument("--no-paper", action="store_true", help="skip the paper-renderer row at 512")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--quick", action="store_true", help="size 64, 1 s of audio, short measurements (tests)")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.seconds, args.warmup_seconds, args.min_seconds = [64], 1.0, 0.6, 0.05
        args.render_batch = 2
    return args


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    devices = model_devices(args.device)
    if "cuda" in devices:
        torch.backends.cudnn.benchmark = True
    env = environment(devices)

    data_cache: dict[int, dict] = {}
    runs, front = [], {}
    for config in run_configs(args.sizes, devices, paper=not args.no_paper and not args.quick):
        device, size = torch.device(config["device"]), config["size"]
        seconds = args.seconds
        if config["renderer_variant"] == "paper":
            seconds = args.paper_seconds or (args.seconds if device.type == "cuda" else min(args.seconds, 2.0))
        if size not in data_cache:
            data_cache[size] = person_data(size, args.warmup_seconds + max(args.seconds, seconds))
        data = data_cache[size]
        audio = np.asarray(data["clip"]["audio"], np.float32)
        warmup_samples = round(args.warmup_seconds * SAMPLE_RATE)
        warmup_audio = audio[:warmup_samples]
        workload = audio[warmup_samples:warmup_samples + round(seconds * SAMPLE_RATE)]

        model = build_model(size, data, device, config["renderer"], config["precision"])
        net = model.renderer.net if isinstance(model.renderer, AutocastRenderer) else model.renderer
        start = time.perf_counter()
        stream = measure_stream(model, workload, warmup_audio, device)
        renderer = measure_renderer(model, data, device, args.render_batch, args.min_seconds)
        if config["device"] not in front:
            front[config["device"]] = measure_front(model, device, args.min_seconds)
        run = {**config, "renderer_parameters_m": round(sum(p.numel() for p in net.parameters()) / 1e6, 3),
               "audio_seconds": round(len(workload) / SAMPLE_RATE, 3), "stream": stream, "renderer_only": renderer,
               "run_seconds": round(time.perf_counter() - start, 2)}
        runs.append(run)
        print(f"[lsp_streaming] {config['device']} {config['precision']} {size} {config['renderer_variant']}: "
              f"{stream['frames_per_s']:.2f} frames/s (x{stream['real_time_factor']:.3f} real time, steady "
              f"{stream['steady_frames_per_s']:.2f}), "
              f"p95 push {stream['chunk_latency_ms'].get('p95', float('nan')):.1f} ms, "
              f"renderer {renderer['frames_per_s_batch1']:.2f} frames/s", flush=True)
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()

    env["load_average_end"] = [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None
    cfg = LSPConfig()
    result = {
        "benchmark": "lsp_streaming",
        "environment": env,
        "workload": {"audio": "zoo.synth speech of identity 0 (generate_clip, style 0, clip_seed 0)",
                     "audio_seconds": args.seconds, "warmup_seconds": args.warmup_seconds, "fps": FPS,
                     "sample_rate": SAMPLE_RATE, "chunk_ms": 1000.0 / FPS, "quick": bool(args.quick),
                     "weights": "random (seeded); throughput depends on the architecture, not on weight values"},
        "architecture": {"apc": asdict(cfg.apc), "mouth": asdict(cfg.mouth), "headpose": asdict(cfg.headpose),
                         "apc_base_size": APC_BASE_SIZE, "lle_neighbours": cfg.lle_neighbours},
        "front_stages": front,
        "runs": runs,
    }
    write_json(args.out, result)
    print_table(result)
    return result


def print_table(result: dict) -> None:
    print(f"{'device':6} {'prec':5} {'size':>4} {'renderer':8} {'frames/s':>9} {'RTF':>7} {'steady/s':>9} "
          f"{'p50 ms':>8} {'p95 ms':>8} {'max ms':>8} {'render/s':>9} {'net/s':>8} {'folded/s':>8}")
    for run in result["runs"]:
        s, r = run["stream"], run["renderer_only"]
        lat = s["chunk_latency_ms"]
        print(f"{run['device']:6} {run['precision']:5} {run['size']:>4} {run['renderer_variant']:8} "
              f"{s['frames_per_s']:>9.2f} {s['real_time_factor']:>7.3f} {s['steady_frames_per_s']:>9.2f} "
              f"{lat.get('p50', float('nan')):>8.1f} "
              f"{lat.get('p95', float('nan')):>8.1f} {lat.get('max', float('nan')):>8.1f} "
              f"{r['frames_per_s_batch1']:>9.2f} {r['network_frames_per_s_batch1']:>8.2f} "
              f"{r['network_folded_frames_per_s_batch1']:>8.2f}")
    for device, front in result["front_stages"].items():
        print(f"{device}: head-pose sampler {front['headpose_sampler_steps_per_s']:.0f} steps/s, speech front end "
              f"{front['speech_front_end_frames_per_s']:.0f} frames/s")


if __name__ == "__main__":
    main()
