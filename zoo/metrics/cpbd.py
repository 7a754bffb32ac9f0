"""CPBD sharpness: a vectorised re-implementation of the ``cpbd`` 1.0.7 package.

CPBD (cumulative probability of blur detection; Narvekar & Karam, IEEE TIP 2011) is the no-reference sharpness
score of the talking-head literature. The reference is the PyPI package ``cpbd`` 1.0.7, a Python port of the
authors' MATLAB code; it loops over pixels in Python (~0.1 s per 256x256 frame). This module computes the same
number with array operations. Apart from ``skimage.feature.canny`` (called exactly as the reference calls it) every
intermediate is an exact integer (or dyadic) quantity for uint8 input, so it is computed in integer arithmetic, and
the result is bit-identical to the package's.

Algorithm (reference behaviour, see README "Metric protocols"):

1. ``canny(image)`` with skimage defaults on the float64 image; used only to classify 64x64 blocks.
2. Octave-style Sobel of vertical edges, ``convolve(image, HSOBEL_WEIGHTS.T / 8) ** 2`` (reflect borders),
   thresholded at ``2 * sqrt(mean)`` and thinned (strictly greater than both horizontal or both vertical
   neighbours, zero outside the image).
3. Marziliano edge widths: gradient angle ``atan2(gy, gx)`` in degrees (0 where ``gx == 0``) quantised to
   multiples of 45 with round-half-even. At 0 degrees the width is the run of increasing intensity to the left
   plus the run to the right (each walk at most 101 steps, +1 each); at +-180 degrees the same with decreasing
   intensity; other angles get no width. Only pixels off the one-pixel image border are measured.
4. Full 64x64 blocks with more than ``0.002 * 4096`` Canny pixels are edge blocks; their just-noticeable width is
   5 if the block contrast ``int(max - min)`` is <= 50, else 3. Each non-zero width ``w`` gives
   ``P = 1 - exp(-|w / JNB| ** 3.6)``, histogrammed into bin ``round(100 P)`` (half-even).
5. CPBD = share of measured edges with ``P <= 0.63`` (bins 0..63); 0 when no edge was measured.
"""
from __future__ import annotations

import numpy as np
import torch
from skimage.feature import canny

BLOCK = 64                      # block side of the reference
EDGE_BLOCK_FRACTION = 0.002     # a block is an edge block with more than this share of Canny pixels
BETA = 3.6                      # psychometric slope of the blur-detection probability
MAX_STEPS = 100                 # the reference walks margins 0..100, so a side contributes at most 101
SHARP_BINS = 64                 # histogram bins 0..63 hold P(blur) <= 0.63
LOW_CONTRAST = 50               # contrast <= 50 -> JNB width 5, else 3 (the reference's WIDTH_JNB table)
CHUNK_PIXELS = 4 * 256 * 256    # images processed together


def cpbd(gray: np.ndarray | torch.Tensor) -> torch.Tensor:
    """CPBD sharpness of grayscale uint8 images (higher is sharper), identical to ``cpbd.compute``.

    Args:
        gray: uint8 [..., H, W] grayscale images on the 0..255 scale (numpy or torch). Float input is refused on
            purpose: the reference is defined on the 0..255 scale, and [0, 1] floats silently give wrong values.

    Returns:
        float64 [...] one score per image, in [0, 1].
    """
    array = gray.detach().cpu().numpy() if isinstance(gray, torch.Tensor) else np.asarray(gray)
    if array.dtype != np.uint8:
        raise TypeError(f"cpbd expects uint8 grayscale images on the 0..255 scale, got dtype {array.dtype}")
    if array.ndim < 2 or array.shape[-2] < 3 or array.shape[-1] < 3:
        raise ValueError(f"cpbd expects [..., H, W] with H, W >= 3, got shape {tuple(array.shape)}")
    images = np.ascontiguousarray(array.reshape(-1, *array.shape[-2:]))
    # Chunks of a few frames keep the working arrays in cache, and memory bounded for long videos.
    step = max(1, CHUNK_PIXELS // (images.shape[1] * images.shape[2]))
    scores = [_cpbd_batch(images[i:i + step]) for i in range(0, images.shape[0], step)]
    return torch.from_numpy(np.concatenate(scores) if scores else np.zeros(0)).reshape(array.shape[:-2])


def _cpbd_batch(images: np.ndarray) -> np.ndarray:
    """uint8 [N, H, W] -> float64 [N] CPBD scores."""
    n, height, width = images.shape
    rows, cols = height // BLOCK, width // BLOCK                            # only full blocks count
    scores = np.zeros(n)
    if rows == 0 or cols == 0:
        return scores
    flat_index, widths = measured_edge_widths(images.astype(np.int16))
    image, pixel = np.divmod(flat_index, height * width)
    row, col = np.divmod(pixel, width)
    in_block = (row < rows * BLOCK) & (col < cols * BLOCK)
    image, widths = image[in_block], widths[in_block]
    block_row, block_col = row[in_block] // BLOCK, col[in_block] // BLOCK

    for i in np.flatnonzero(np.bincount(image, minlength=n)):              # images with a measured edge
        mine = image == i if n > 1 else slice(None)
        # Canny is the reference's exact call on its float64 image, and only classifies blocks.
        edges = canny(images[i].astype(np.float64))[:rows * BLOCK, :cols * BLOCK]
        edge_count = edges.reshape(rows, BLOCK, cols * BLOCK).sum(1).reshape(rows, cols, BLOCK).sum(2)
        edge_block = edge_count > BLOCK * BLOCK * EDGE_BLOCK_FRACTION
        blocks = images[i, :rows * BLOCK, :cols * BLOCK].reshape(rows, BLOCK, cols, BLOCK)
        contrast = blocks.max(axis=(1, 3)).astype(np.int64) - blocks.min(axis=(1, 3))
        jnb_row = (contrast > LOW_CONTRAST).astype(np.int64)               # row of _BLUR_BIN: JNB 5 or 3

        where = block_row[mine], block_col[mine]
        counted = edge_block[where]
        if not counted.any():
            continue
        bins = _BLUR_BIN[jnb_row[where][counted], widths[mine][counted]]
        hist = np.bincount(bins, minlength=101).astype(np.float64)
        # Normalise first, then sum: the reference's order of operations, so the float result is identical.
        scores[i] = np.sum((hist / bins.size)[:SHARP_BINS])
    return scores


def _blur_bins() -> np.ndarray:
    """int64 [2, 203]: histogram bin ``round(100 P)`` of every possible (JNB 5 or 3, width 0..202).

    P depends only on the integer width and the JNB, so it is tabulated with the reference's expression, evaluated
    on contiguous float64 arrays as the reference evaluates it.
    """
    widths = np.arange(2 * (MAX_STEPS + 1) + 1, dtype=np.float64)
    table = []
    for jnb in (5.0, 3.0):
        probability = 1 - np.exp(-np.abs(widths / jnb) ** BETA)
        # Round half to even on the exact value, like the reference's Python round() on a float.
        table.append(np.rint(probability * 100).astype(np.int64))
    return np.stack(table)


_BLUR_BIN = _blur_bins()


def sobel_edges(images: np.ndarray) -> np.ndarray:
    """Thinned vertical-edge map of ``cpbd.octave.sobel``.

    The reference's strength is ``convolve(image, HSOBEL_WEIGHTS.T / 8) ** 2`` with scipy's 'reflect' border
    (= numpy 'symmetric'), i.e. ``(D / 8) ** 2`` for the integer ``D`` = column difference of [1, 2, 1]-smoothed
    rows. Everything here works on ``D ** 2``, which scales every comparison and the mean by exactly 64.

    Args:
        images: int16 [N, H, W] (values 0..255).

    Returns:
        bool [N, H, W] edge pixels; the one-pixel border is left False, as the reference never measures it.
    """
    n, height, width = images.shape
    # Rows smoothed with [1, 2, 1] under the reflected border (row -1 = row 0, row H = row H - 1); int16 holds
    # every intermediate (|D| <= 4 * 255), D ** 2 needs int32.
    smooth = np.empty((n, height, width + 2), dtype=np.int16)
    inner = smooth[:, :, 1:-1]
    np.multiply(images, 2, out=inner)
    inner[:, 1:] += images[:, :-1]
    inner[:, 0] += images[:, 0]
    inner[:, :-1] += images[:, 1:]
    inner[:, -1] += images[:, -1]
    smooth[:, :, 0], smooth[:, :, -1] = inner[:, :, 0], inner[:, :, -1]    # reflected columns
    strength = np.square(smooth[:, :, :-2] - smooth[:, :, 2:], dtype=np.int32)  # 64 x the reference's strength
    # thresh2 = 2 sqrt(mean): the exact integer sum and one rounding in the division, as in the reference's mean.
    mean = strength.sum(axis=(1, 2), dtype=np.int64) / (height * width)
    threshold = 2 * np.sqrt(mean / 64) * 64
    strength *= strength > threshold[:, None, None]

    centre = strength[:, 1:-1, 1:-1]
    edges = np.zeros(images.shape, dtype=bool)
    edges[:, 1:-1, 1:-1] = (((centre > strength[:, 1:-1, :-2]) & (centre > strength[:, 1:-1, 2:]))
                            | ((centre > strength[:, :-2, 1:-1]) & (centre > strength[:, 2:, 1:-1])))
    return edges


def measured_edge_widths(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Marziliano widths of ``cpbd.compute.marziliano_method``, at the edge pixels that get one.

    Args:
        images: int16 [N, H, W] (values 0..255).

    Returns:
        int64 [E] flat indices into ``images`` and int64 [E] widths (2..202) of the measured edge pixels; every
        other pixel has width 0 in the reference.
    """
    n, height, width = images.shape
    index = np.flatnonzero(sobel_edges(images))
    flat = images.reshape(-1)
    # np.gradient's central differences (interior pixels), evaluated only where they are needed.
    grad_x = (flat[index + 1] - flat[index - 1]) / 2
    grad_y = (flat[index + width] - flat[index - width]) / 2
    angle = _edge_angle(grad_y, grad_x)
    quantised = 45 * np.round(angle / 45)                                   # np.round is half-to-even
    # Gradient angle 0: intensity grows left to right (sign +1); +-180: it falls (sign -1); others: no width.
    sign = (quantised == 0).astype(np.int8) - (np.abs(quantised) == 180)
    keep = sign != 0
    # The reference measures nothing in an image whose angles are all 0 (`if np.any(edge_angles)`); an edge pixel
    # with a non-zero angle settles that, otherwise the whole image has to be checked.
    image = index // (height * width)
    has_angle = np.zeros(n, dtype=bool)
    has_angle[image[angle != 0]] = True
    if not has_angle.all():
        for i in np.flatnonzero(~has_angle):
            has_angle[i] = np.any(_edge_angle(*np.gradient(images[i].astype(np.float64))))
        keep &= has_angle[image]
    index, sign = index[keep], sign[keep]

    # Walking left from column c compares pixels (c-2-m, c-1-m) and continues while the step d[k] = I[k+1] - I[k]
    # at k = c-2-m has the edge's sign; walking right continues while d[c+1+m] has it. So each side's width is
    # (length of the same-sign run of d ending at c-2 / starting at c+1, capped at 100) + 1.
    line, col = np.divmod(index, width)                                     # line = image * H + row
    runs = _SignRuns(images.reshape(n * height, width))
    left = runs.length(line, col - 2, sign, towards_start=True)
    right = runs.length(line, col + 1, sign, towards_start=False)
    return index, np.minimum(left, MAX_STEPS) + np.minimum(right, MAX_STEPS) + 2


def _edge_angle(grad_y: np.ndarray, grad_x: np.ndarray) -> np.ndarray:
    """The reference's gradient angle in degrees: atan2 where gx != 0, else 0 (90 for the gy == pi/2 case)."""
    angle = np.arctan2(grad_y, grad_x) * (180 / np.pi)
    return np.where(grad_x != 0, angle, np.where(grad_y == np.pi / 2, 90.0, 0.0))


class _SignRuns:
    """Runs of equal-sign steps ``d[k] = I[k+1] - I[k]`` along the lines of an image, queried at a few places.

    Each line's steps are framed by a zero step on both sides, so k = -1 and k = L - 1 are valid queries (sign 0,
    like the reference's "outside the image" stop) and no signed run crosses lines. A cumulative count of run
    starts maps every step to its run, so a query costs a few gathers instead of a walk.
    """

    def __init__(self, lines: np.ndarray):
        rows, length = lines.shape
        self.stride = length + 1                                            # L - 1 steps + 2 framing zeros
        signs = np.zeros((rows, self.stride), dtype=np.int8)
        signs[:, 1:-1] = np.sign(np.diff(lines, axis=1))
        self.signs = signs.reshape(-1)
        starts = np.empty(self.signs.size, dtype=bool)
        starts[0] = True
        np.not_equal(self.signs[1:], self.signs[:-1], out=starts[1:])
        self.run = np.cumsum(starts, dtype=np.int32)                        # run number of each step, from 1
        # first step of run r at position r; run 0 is a placeholder, and a sentinel closes the last run
        self.first = np.concatenate(([0], np.flatnonzero(starts), [self.signs.size]))

    def length(self, line: np.ndarray, k: np.ndarray, sign: np.ndarray, towards_start: bool) -> np.ndarray:
        """int64 [E]: number of steps of the run holding step ``k`` of ``line``, from ``k`` to the run's start
        (``towards_start``) or end, inclusive; 0 where step ``k`` does not have the sign ``sign``."""
        flat = line * self.stride + k + 1
        run = self.run[flat]
        extent = flat - self.first[run] + 1 if towards_start else self.first[run + 1] - flat
        return np.where(self.signs[flat] == sign, extent, 0)


def import_reference_cpbd():
    """The ``cpbd`` package (the oracle), importable on current SciPy.

    ``cpbd/compute.py`` imports ``scipy.ndimage.imread`` (removed in SciPy 1.2) at import time; it is only used by
    the package's command line, so a placeholder attribute is enough.
    """
    import scipy.ndimage

    if not hasattr(scipy.ndimage, "imread"):
        scipy.ndimage.imread = None
    import cpbd as reference

    return reference
