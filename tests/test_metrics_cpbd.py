"""CPBD against the ``cpbd`` 1.0.7 package (imported with the SciPy shim) on varied images."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data
from skimage.color import rgb2gray
from skimage.filters import gaussian

from zoo.metrics.cpbd import cpbd, import_reference_cpbd

from helpers import one_line_error


@pytest.fixture(scope="module")
def reference():
    return import_reference_cpbd()


def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return np.array(Image.open(buffer))


def blurred(image: np.ndarray, sigma: float) -> np.ndarray:
    return np.round(gaussian(image, sigma=sigma, preserve_range=True)).astype(np.uint8)


CAMERA = data.camera()                                                             # 512 x 512
ASTRONAUT = np.round(rgb2gray(data.astronaut()) * 255).astype(np.uint8)

IMAGES = {
    "camera": CAMERA,
    "astronaut-256": ASTRONAUT[96:352, 128:384],
    "blurred-1": blurred(CAMERA[:256, 128:384], 1.0),
    "blurred-3": blurred(ASTRONAUT[:256, :256], 3.0),
    "jpeg-q30": jpeg(CAMERA[128:384, 64:320], 30),
    "jpeg-q75": jpeg(ASTRONAUT[:256, 256:], 75),
    "not-multiple-of-64": ASTRONAUT[7:300, 11:244],                                # 293 x 233: partial blocks
    "coins": data.coins(),                                                         # 303 x 384
    "noise": np.random.default_rng(0).integers(0, 256, (130, 200), dtype=np.uint8),
    "low-contrast": (CAMERA[256:, 256:] // 8 + 100).astype(np.uint8),            # JNB 5 blocks
    "flat": np.full((128, 128), 77, dtype=np.uint8),
    "smaller-than-a-block": CAMERA[:50, :70],
}


@pytest.mark.parametrize("name", list(IMAGES))
def test_cpbd_matches_package(reference, name):
    image = IMAGES[name]
    expected = reference.compute(image)
    ours = cpbd(image)
    assert ours.dtype == torch.float64 and ours.shape == ()
    # Same arithmetic on exact integer intermediates: equal to the last bit, well inside the 1e-3 requirement.
    assert float(ours) == pytest.approx(expected, abs=1e-12)


def test_cpbd_reference_values_are_not_degenerate(reference):
    """The oracle cases span the range, so a broken implementation cannot pass by returning a constant."""
    values = {name: reference.compute(image) for name, image in IMAGES.items() if name in ("camera", "blurred-3")}
    assert values["camera"] > 0.5 and values["blurred-3"] < 0.1
    assert reference.compute(IMAGES["flat"]) == 0.0


def test_cpbd_no_width_when_every_angle_is_zero(reference):
    """The reference measures nothing when every gradient angle is 0 (`if np.any(edge_angles)`) and something once
    a single pixel elsewhere has a non-zero angle."""
    step = np.zeros((128, 128), dtype=np.uint8)
    step[:, 63], step[:, 64:] = 100, 200                                           # only rising edges: angle 0
    bump = step.copy()
    bump[100, 20] = 3                                                              # non-zero angles far from the edge
    for image in (step, bump):
        assert float(cpbd(image)) == pytest.approx(reference.compute(image), abs=1e-12)
    assert reference.compute(step) == 0.0 and reference.compute(bump) > 0.0


def test_cpbd_batched_and_torch_input(reference):
    frames = np.stack([IMAGES["astronaut-256"], IMAGES["blurred-1"], IMAGES["jpeg-q30"],
                       IMAGES["astronaut-256"][::-1], IMAGES["blurred-3"]]).reshape(5, 256, 256)
    batch = cpbd(torch.from_numpy(frames).reshape(5, 1, 256, 256))
    assert batch.shape == (5, 1)
    expected = [reference.compute(frame) for frame in frames]
    np.testing.assert_allclose(batch.flatten().numpy(), expected, rtol=0, atol=1e-12)


def test_cpbd_rejects_float_input():
    with pytest.raises(TypeError, match="uint8"):
        cpbd(IMAGES["flat"].astype(np.float64) / 255)                              # the [0, 1] pitfall


@pytest.mark.parametrize("shape", [(64,), (2, 64), (64, 2), (4, 2, 2)])          # 1-D, H < 3, W < 3, batch of 2x2
def test_cpbd_rejects_images_without_two_dims_of_at_least_3(shape):
    one_line_error(lambda: cpbd(np.zeros(shape, dtype=np.uint8)),
                   f"cpbd expects [..., H, W] with H, W >= 3, got shape {shape}", error=ValueError)
    one_line_error(lambda: cpbd(torch.zeros(shape, dtype=torch.uint8)), f"got shape {shape}", error=ValueError)
