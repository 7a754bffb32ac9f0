"""Speed (and agreement) of the zoo's metric implementations next to their references, on the same inputs.

    python benchmarks/metric_speed.py [--out benchmarks/results/metric_speed.json] [--fid-images 64] [--quick]

* CPBD at 256x256: ``zoo.metrics.functional.cpbd`` vs the ``cpbd`` 1.0.7 package (target: >= 20x faster, same
  values). skimage's Canny, which both call identically, is timed alone to show the floor it sets.
* SSIM on 256x256 RGB pairs, both variants: ours (one batched torch call) vs skimage ``structural_similarity``.
* Fréchet distance on 2048-d statistics: ours vs pytorch-fid's ``calculate_frechet_distance``.

Single-threaded (``OMP_NUM_THREADS=1`` unless set) so the numbers are comparable between runs on a shared machine;
times are the best of several repeats. Writes the JSON atomically and prints it.

``--quick`` (seconds, for tests): fewer repeats, the Fréchet distance on 256-d statistics, and no FID end to end
(its two 2048-d matrix square roots alone take ~25 s on one core; it is recorded as skipped).
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")                                      # before numpy/torch load BLAS

import argparse  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Callable  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from zoo.io.atomic import write_json  # noqa: E402
from zoo.metrics import functional as F  # noqa: E402
from zoo.metrics.cpbd import import_reference_cpbd  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "metric_speed.json"


def best_time(fn: Callable[[], object], repeats: int, number: int = 1) -> float:
    """Best wall time of ``repeats`` runs of ``number`` calls, per call, in seconds."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        best = min(best, (time.perf_counter() - start) / number)
    return best


def gray_frames(size: int = 256) -> np.ndarray:
    """uint8 [6, size, size] grayscale test frames: natural, blurred, JPEG'd and noisy content."""
    from PIL import Image
    from skimage import data, transform
    from skimage.color import rgb2gray
    from skimage.filters import gaussian

    def resized(image: np.ndarray) -> np.ndarray:
        return np.round(transform.resize(image, (size, size), preserve_range=True)).astype(np.uint8)

    def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
        return np.array(Image.open(buffer))

    camera = resized(data.camera())
    astronaut = resized(np.round(rgb2gray(data.astronaut()) * 255))
    noise = np.random.default_rng(0).normal(0, 3, (size, size))
    return np.stack([camera, astronaut, np.round(gaussian(camera, 1.5, preserve_range=True)).astype(np.uint8),
                     jpeg(camera, 30), jpeg(astronaut, 75),
                     np.clip(astronaut + noise, 0, 255).round().astype(np.uint8)])


def measure_cpbd(quick: bool = False) -> dict:
    """Per-frame time of ours vs the reference package at 256x256, and their largest difference."""
    from skimage.feature import canny

    reference = import_reference_cpbd()
    frames = gray_frames(256)
    ours_values = F.cpbd(torch.from_numpy(frames)).numpy()
    reference_values = np.array([reference.compute(frame) for frame in frames])
    repeats = 3 if quick else 10
    ours_frames = [best_time(lambda f=frame: F.cpbd(f), repeats, number=5) for frame in frames]
    ours_batch = best_time(lambda: F.cpbd(frames), repeats) / len(frames)
    canny_frames = [best_time(lambda f=frame: canny(f.astype(np.float64)), repeats, number=5) for frame in frames]
    reference_frames = [best_time(lambda f=frame: reference.compute(f), 1 if quick else 3) for frame in frames]
    ours_mean, reference_mean = float(np.mean(ours_frames)), float(np.mean(reference_frames))
    return {
        "size": 256, "frames": len(frames),
        "ours_ms_per_frame": round(ours_mean * 1e3, 3),
        "ours_batched_ms_per_frame": round(ours_batch * 1e3, 3),
        "reference_ms_per_frame": round(reference_mean * 1e3, 2),
        "speedup": round(reference_mean / ours_mean, 1),
        "speedup_batched": round(reference_mean / ours_batch, 1),
        "canny_ms_per_frame": round(float(np.mean(canny_frames)) * 1e3, 3),
        "speedup_bound_from_canny": round(reference_mean / float(np.mean(canny_frames)), 1),
        "max_abs_diff": float(np.max(np.abs(ours_values - reference_values))),
        "values": [round(float(v), 6) for v in reference_values],
    }


def measure_ssim(quick: bool = False) -> dict:
    """Time for 8 RGB 256x256 pairs: ours batched vs skimage image by image, both variants."""
    from skimage import data, transform
    from skimage.metrics import structural_similarity

    rng = np.random.default_rng(0)
    face = transform.resize(data.astronaut(), (256, 256), anti_aliasing=True)       # float64 [0, 1]
    target = np.stack([np.roll(face, k, axis=1) for k in range(8)])
    pred = np.clip(target + rng.normal(0, 0.05, target.shape), 0, 1)
    pred_t, target_t = (torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))) for x in (pred, target))
    settings = {"wang": dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False), "skimage-default": {}}
    results = {"pairs": len(pred), "size": 256}
    for variant, kwargs in settings.items():
        def skimage_all(kwargs=kwargs):
            return [structural_similarity(p, t, data_range=1.0, channel_axis=-1, **kwargs)
                    for p, t in zip(pred, target)]

        ours_values = F.ssim(pred_t, target_t, variant, 1.0).numpy()
        ours = best_time(lambda variant=variant: F.ssim(pred_t, target_t, variant, 1.0), 3 if quick else 7)
        reference = best_time(skimage_all, 2 if quick else 5)
        results[variant] = {"ours_ms_per_pair": round(ours / len(pred) * 1e3, 3),
                            "skimage_ms_per_pair": round(reference / len(pred) * 1e3, 3),
                            "speedup": round(reference / ours, 1),
                            "max_abs_diff": float(np.max(np.abs(ours_values - np.array(skimage_all()))))}
    return results


def measure_frechet(dims: int = 2048, repeats: int = 2) -> dict:
    """The Fréchet distance between random 2048-d statistics: ours vs pytorch-fid (dominated by sqrtm); a first
    call each (the values compared) warms up, then the best of ``repeats``."""
    from pytorch_fid.fid_score import calculate_frechet_distance

    rng = np.random.default_rng(0)
    stats = []
    for shift in (0.0, 0.3):
        factor = rng.normal(size=(dims, dims + 256)) / np.sqrt(dims)               # full-rank covariance
        stats += [rng.normal(size=dims) + shift, factor @ factor.T]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                                             # pytorch-fid's sqrtm(disp=)
        ours, reference = F.frechet_distance(*stats), float(calculate_frechet_distance(*stats))
        ours_s = best_time(lambda: F.frechet_distance(*stats), repeats)
        reference_s = best_time(lambda: calculate_frechet_distance(*stats), repeats)
    return {"dims": dims, "ours_s": round(ours_s, 3), "pytorch_fid_s": round(reference_s, 3),
            "speedup": round(reference_s / ours_s, 2), "value": ours,
            "relative_diff": abs(ours - reference) / abs(reference)}


def measure_fid(images: int = 64, size: int = 256, repeats: int = 2) -> dict:
    """FID end to end on the same uint8 frames and the same random Inception weights (no real weights offline):
    ours (FIDInception + FrechetDistance with summed statistics) vs pytorch-fid (InceptionV3([3]) +
    calculate_frechet_distance). Random weights wash out numeric differences, so this measures speed and plumbing.
    A first call each (the values compared) warms up, then the best of ``repeats``."""
    import pytorch_fid.inception as pfi
    from pytorch_fid.fid_score import calculate_frechet_distance

    from zoo.metrics.backbones import random_state_dict
    from zoo.metrics.backbones.inception import FIDInception, fid_inception_layout_module
    from zoo.metrics.fid import FrechetDistance

    state = random_state_dict(fid_inception_layout_module(), seed=0)
    ours_net = FIDInception(state)
    loader = pfi.load_state_dict_from_url
    pfi.load_state_dict_from_url = lambda *args, **kwargs: state       # the reference reads the same weights
    try:
        reference_net = pfi.InceptionV3([3]).eval()
    finally:
        pfi.load_state_dict_from_url = loader
    rng = np.random.default_rng(0)
    real = torch.from_numpy(rng.integers(0, 256, (images, 3, size, size), dtype=np.uint8))
    fake = (real.float() * 0.8 + 20).round().to(torch.uint8)

    def ours() -> float:
        metric = FrechetDistance(ours_net, 2048)
        for batch in real.split(16):
            metric.update(batch, real=True)
        for batch in fake.split(16):
            metric.update(batch, real=False)
        return float(metric.compute())

    def reference() -> float:
        with torch.no_grad():
            feats = [np.concatenate([reference_net(b.float() / 255)[0].squeeze(-1).squeeze(-1).numpy()
                                     for b in x.split(16)]) for x in (real, fake)]
        stats = [(f.mean(0), np.cov(f, rowvar=False)) for f in feats]
        return float(calculate_frechet_distance(*stats[0], *stats[1]))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours_value, reference_value = ours(), reference()
        ours_s, reference_s = best_time(ours, repeats), best_time(reference, repeats)
    return {"images_per_side": images, "size": size, "ours_s": round(ours_s, 3),
            "pytorch_fid_s": round(reference_s, 3), "speedup": round(reference_s / ours_s, 2),
            "ours_value": ours_value, "pytorch_fid_value": reference_value,
            "relative_diff": abs(ours_value - reference_value) / abs(reference_value)}


def measure(quick: bool = False, fid_images: int = 64) -> dict:
    """All measurements, with the environment they ran in."""
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    fid = ({"skipped": "--quick: the two 2048-d matrix square roots alone take ~25 s on one core"} if quick
           else measure_fid(fid_images))
    return {
        "cpbd": measure_cpbd(quick),
        "ssim": measure_ssim(quick),
        "frechet_distance": measure_frechet(256, repeats=1) if quick else measure_frechet(2048),
        "fid_features_and_distance": fid,
        "environment": {"threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
                        "python": platform.python_version(), "torch": torch.__version__,
                        "numpy": np.__version__, "time": time.strftime("%Y-%m-%dT%H:%M:%S")},
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--fid-images", type=int, default=64, help="images per side of the FID end to end")
    parser.add_argument("--quick", action="store_true",
                        help="seconds: fewer repeats, 256-d Fréchet distance, FID end to end skipped")
    args = parser.parse_args(argv)
    results = measure(args.quick, args.fid_images)
    write_json(args.out, results)
    print(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
