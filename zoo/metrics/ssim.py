"""SSIM (Wang et al. 2004) in the two variants talking-head papers report, batched in torch.

Both variants reproduce ``skimage.metrics.structural_similarity`` (scikit-image 0.26) to ~1e-12 in float64:

* ``"wang"``: the paper's definition. 11x11 Gaussian window (sigma 1.5, scipy's kernel truncated at 3.5 sigma),
  population covariance. Equals ``structural_similarity(gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False, data_range=..., channel_axis=...)``.
* ``"skimage-default"``: skimage's defaults, which ATVGnet's ``evaluation_matrix.py`` and EAMM/EAT's
  ``test_psnr_ssim.py`` ran (``compare_ssim(multichannel=True)``): 7x7 uniform window, sample covariance
  (x 49/48).

In both, K1 = 0.01, K2 = 0.03, C = (K * data_range) ** 2, the SSIM map is averaged over the *valid* region only
(skimage filters with reflected borders, then crops (win - 1) // 2 pixels, so the border never enters the mean;
a valid convolution gives the same pixels), then over channels. torchmetrics' SSIM differs: since 1.5 its mean
includes the padded border (README "Metric protocols").
"""
from __future__ import annotations

import numpy as np
import torch

K1, K2 = 0.01, 0.03
SSIM_VARIANTS = ("wang", "skimage-default")
CPU_CHUNK_PIXELS = 256 * 256        # pixels of the image planes filtered together on CPU (cache-sized)


def ssim(pred: torch.Tensor, target: torch.Tensor, variant: str, data_range: float) -> torch.Tensor:
    """SSIM per image, averaged over the valid region and the channels.

    Args:
        pred, target: [..., C, H, W] images (any real dtype; computed in float64), H and W at least the window
            size (11 for ``"wang"``, 7 for ``"skimage-default"``).
        variant: ``"wang"`` or ``"skimage-default"`` (see the module docstring).
        data_range: the value range of the images (1.0 for [0, 1] floats, 255 for uint8 scale); always explicit,
            because inferring it from the data changes the constants C1, C2 batch by batch.

    Returns:
        float64 [...] one SSIM per image (differentiable w.r.t. ``pred`` and ``target``).
    """
    if pred.shape != target.shape:
        raise ValueError(f"ssim: pred and target shapes differ: {tuple(pred.shape)} vs {tuple(target.shape)}")
    if pred.ndim < 3:
        raise ValueError(f"ssim expects [..., C, H, W], got shape {tuple(pred.shape)}")
    if not data_range > 0:
        raise ValueError(f"ssim: data_range must be positive, got {data_range}")
    window, cov_norm = _window(variant)
    size = window.numel()
    *lead, channels, height, width = pred.shape
    if height < size or width < size:
        raise ValueError(f"ssim[{variant}]: images of {height}x{width} are smaller than the {size}x{size} window")

    planes_x = pred.reshape(-1, height, width)
    planes_y = target.reshape(-1, height, width)
    # A few planes at a time: the moment maps of a whole batch overflow the CPU caches (3x slower).
    step = max(1, (CPU_CHUNK_PIXELS if pred.device.type == "cpu" else 64 * CPU_CHUNK_PIXELS) // (height * width))
    per_plane = [_ssim_planes(planes_x[i:i + step].double(), planes_y[i:i + step].double(), window, cov_norm,
                              data_range) for i in range(0, planes_x.shape[0], step)]
    return torch.cat(per_plane).reshape(*lead, channels).mean(-1)


def _ssim_planes(x: torch.Tensor, y: torch.Tensor, window: torch.Tensor, cov_norm: float,
                 data_range: float) -> torch.Tensor:
    """float64 [P, H, W] planes -> float64 [P] mean SSIM over each plane's valid region."""
    # One separable valid filtering of the five moment maps at once.
    maps = torch.cat([x, y, x * x, y * y, x * y])                          # [5P, H, W]
    maps = _filter_valid(_filter_valid(maps, window, dim=-2), window, dim=-1)  # [5P, H', W']
    mu_x, mu_y, mu_xx, mu_yy, mu_xy = maps.chunk(5)
    var_x = cov_norm * (mu_xx - mu_x * mu_x)
    var_y = cov_norm * (mu_yy - mu_y * mu_y)
    cov_xy = cov_norm * (mu_xy - mu_x * mu_y)

    c1, c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
    numerator = (2 * mu_x * mu_y + c1) * (2 * cov_xy + c2)
    denominator = (mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2)
    return (numerator / denominator).flatten(1).mean(1)


def _filter_valid(images: torch.Tensor, window: torch.Tensor, dim: int) -> torch.Tensor:
    """Correlate ``images`` with a 1-D ``window`` along ``dim``, keeping only fully covered positions.

    A sum of shifted slices: on CPU this is ~15x faster than ``conv2d`` in float64 (which has no fast kernel for
    a single-channel 11x1 filter) and keeps the arithmetic in float64.
    """
    size = window.numel()
    length = images.shape[dim] - size + 1
    out = images.narrow(dim, 0, length) * float(window[0])
    for offset in range(1, size):
        out.add_(images.narrow(dim, offset, length), alpha=float(window[offset]))
    return out


def _window(variant: str) -> tuple[torch.Tensor, float]:
    """The 1-D window (float64, sums to 1) and covariance normalisation of a variant."""
    if variant == "wang":
        # scipy.ndimage.gaussian_filter's kernel: radius int(truncate * sigma + 0.5) = 5 for truncate 3.5 (skimage).
        sigma, radius = 1.5, int(3.5 * 1.5 + 0.5)
        offsets = np.arange(-radius, radius + 1)
        weights = np.exp(-0.5 / sigma ** 2 * offsets ** 2)
        return torch.from_numpy(weights / weights.sum()), 1.0
    if variant == "skimage-default":
        size = 7
        # skimage rescales the window mean's variance by NP / (NP - 1), NP = 7 * 7 pixels (sample covariance).
        return torch.full((size,), 1.0 / size, dtype=torch.float64), size ** 2 / (size ** 2 - 1)
    raise ValueError(f"unknown SSIM variant {variant!r}; expected one of {SSIM_VARIANTS}")
