"""DDP synchronisation of the metric classes: 2 CPU processes (gloo) must give the single-process values.

The test runs this file as a script in a subprocess with a clean environment (DDP is never initialised inside the
pytest process). The script spawns two workers; each updates every metric with its (uneven) share of one fixed
dataset, computes the synced value, and compares it with the same metric updated on the whole dataset without
synchronisation. Any mismatch raises in the worker and fails the script.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from datetime import timedelta
from pathlib import Path

import pytest

WORLD_SIZE = 2
SHARES = (slice(0, 3), slice(3, 5))                                                # uneven: 3 + 2 items


@pytest.mark.ddp
def test_metric_classes_sync_across_two_processes(tmp_path):
    from conftest import clean_subprocess_env

    out = tmp_path / "ddp_metrics.json"
    proc = subprocess.run([sys.executable, __file__, str(out)], env=clean_subprocess_env(OMP_NUM_THREADS="1"),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    results = json.loads(out.read_text())
    assert set(results) == {"PSNR[per-image]", "SSIM[wang]", "SSIM[skimage-default]", "CPBD[cpbd-1.0.7]",
                            "M-LMD", "FID[pool16]", "LPIPS[alex-v0.1]"}
    for name, (synced, single) in results.items():
        assert synced == pytest.approx(single, rel=1e-6), name


# --- the script ---------------------------------------------------------------------------------------------------

def make_data():
    """The full dataset (identical in every process): 5 items of each input kind."""
    import torch

    generator = torch.Generator().manual_seed(0)
    target = torch.rand(5, 3, 32, 32, generator=generator)
    pred = (target + 0.1 * torch.randn(5, 3, 32, 32, generator=generator)).clamp(0, 1)
    gray = (torch.rand(5, 96, 80, generator=generator) * 255).to(torch.uint8)
    landmarks = torch.rand(5, 4, 68, 2, generator=generator, dtype=torch.float64) * 100
    landmarks_pred = landmarks + torch.randn(5, 4, 68, 2, generator=generator, dtype=torch.float64)
    landmarks_pred[1, 2] = float("nan")                                           # a skipped frame on rank 0
    landmarks_pred[4] = float("nan")                                              # an empty clip on rank 1
    return dict(pred=pred, target=target, gray=gray, landmarks_pred=landmarks_pred, landmarks=landmarks)


def make_metrics(**kwargs):
    """Fresh metric objects, with identical (seeded) networks in every process."""
    import lpips
    import torch
    from torch import nn

    from zoo.metrics.fid import FrechetDistance
    from zoo.metrics.image import CPBD, PSNR, SSIM
    from zoo.metrics.landmarks import LandmarkDistance
    from zoo.metrics.lpips import LPIPS

    torch.manual_seed(0)
    extractor = nn.Sequential(nn.Conv2d(3, 16, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    torch.manual_seed(0)
    with warnings.catch_warnings():                                                # torchvision's `pretrained=`
        warnings.simplefilter("ignore", UserWarning)
        lpips_net = lpips.LPIPS(net="alex", pnet_rand=True, verbose=False)
    return [PSNR(1.0, **kwargs), SSIM("wang", 1.0, **kwargs), SSIM("skimage-default", 1.0, **kwargs),
            CPBD(**kwargs), LandmarkDistance("mouth", **kwargs),
            FrechetDistance(extractor, 16, extractor_name="pool16", **kwargs),
            LPIPS(lpips_net, normalize=True, **kwargs)]


def update(metric, data, items: slice) -> None:
    """Feed ``data[items]`` to ``metric`` in two update() calls."""
    from zoo.metrics.fid import FrechetDistance
    from zoo.metrics.image import CPBD
    from zoo.metrics.landmarks import LandmarkDistance

    middle = (items.start + items.stop) // 2
    for part in (slice(items.start, middle), slice(middle, items.stop)):
        if isinstance(metric, CPBD):
            metric.update(data["gray"][part])
        elif isinstance(metric, LandmarkDistance):
            metric.update(data["landmarks_pred"][part], data["landmarks"][part])
        elif isinstance(metric, FrechetDistance):
            metric.update(data["target"][part], real=True)
            metric.update(data["pred"][part], real=False)
        else:
            metric.update(data["pred"][part], data["target"][part])


def worker(rank: int, store: str, out: str) -> None:
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    # A file rendezvous: no port to pick, so no race with other processes on a shared machine.
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD_SIZE,
                            timeout=timedelta(seconds=120))
    try:
        data = make_data()
        results = {}
        synced_metrics = make_metrics()
        for synced, single in zip(synced_metrics, make_metrics(sync_on_compute=False)):
            update(synced, data, SHARES[rank])
            update(single, data, slice(0, 5))
            synced_value, single_value = float(synced.compute()), float(single.compute())
            if abs(synced_value - single_value) > 1e-6 * abs(single_value):
                raise AssertionError(f"rank {rank} {synced.variant}: synced {synced_value} != single {single_value}")
            results[synced.variant] = (synced_value, single_value)
        if synced_metrics[5].sample_counts() != (5, 5):                            # FrechetDistance, all ranks
            raise AssertionError(f"rank {rank}: synced FID sample counts {synced_metrics[5].sample_counts()}")
        counts = synced_metrics[4].counts()                                        # LandmarkDistance
        if counts != {"clips": 4, "empty_clips": 1, "frames": 20, "skipped_frames": 5}:
            raise AssertionError(f"rank {rank}: synced landmark counts {counts}")
        if rank == 0:
            Path(out).write_text(json.dumps(results))
        dist.barrier()
    finally:
        dist.destroy_process_group()
    # Skip interpreter finalisation: about one run in 30, a torch/gloo thread still alive at exit aborts the process
    # ("terminate called without an active exception", SIGABRT/SIGBUS after atexit) although every check passed and
    # the process group was destroyed. Failures above still raise and reach mp.spawn with their traceback.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def main(out: str) -> None:
    import torch.multiprocessing as mp

    store = Path(out).with_name(f".{Path(out).name}.store")                        # must not exist yet
    store.unlink(missing_ok=True)
    mp.spawn(worker, args=(str(store), out), nprocs=WORLD_SIZE, join=True)


if __name__ == "__main__":
    main(sys.argv[1])
