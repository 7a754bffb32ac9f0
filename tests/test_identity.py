"""CSIM: 5-point similarity alignment (oracle: skimage + cv2.warpAffine), cosine scoring, the metric class."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from skimage.transform import SimilarityTransform

from zoo.errors import DataError
from zoo.metrics.identity import (ARCFACE_TEMPLATE, IdentitySimilarity, align_faces, csim, five_points,
                                  similarity_transforms)

from helpers import one_line_error


def _faces(n=3, seed=0, height=120, width=100):
    """Random images and 68-point landmark sets placed by random similarity transforms (with jitter)."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, height, width, 3), dtype=np.uint8)
    base = rng.uniform(20, 90, (68, 2))
    landmarks = []
    for _ in range(n):
        angle, scale = rng.uniform(-0.4, 0.4), rng.uniform(0.6, 1.2)
        rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        landmarks.append(base @ rot.T + rng.uniform(-5, 5, 2) + rng.normal(0, 1.5, (68, 2)))
    return images, np.stack(landmarks)


def _skimage_matrix(points):
    tform = SimilarityTransform.from_estimate(points, ARCFACE_TEMPLATE)
    return tform.params[:2]


def test_five_points():
    lm = np.arange(68 * 2, dtype=np.float64).reshape(68, 2)
    pts = five_points(lm)
    np.testing.assert_array_equal(pts[0], lm[36:42].mean(0))
    np.testing.assert_array_equal(pts[1], lm[42:48].mean(0))
    np.testing.assert_array_equal(pts[2:], lm[[30, 48, 54]])
    with pytest.raises(DataError, match=r"expected 68 landmarks \[\.\.\., 68, 2\], got shape \(5, 2\)"):
        five_points(np.zeros((5, 2)))


def test_align_faces_matches_skimage_and_cv2():
    images, landmarks = _faces()
    aligned = align_faces(images, landmarks)
    assert aligned.shape == (3, 112, 112, 3) and aligned.dtype == np.uint8
    for img, lm, got in zip(images, landmarks, aligned):
        matrix = _skimage_matrix(five_points(lm))
        np.testing.assert_allclose(similarity_transforms(five_points(lm)[None])[0], matrix, rtol=0, atol=1e-9)
        expected = cv2.warpAffine(img, matrix, (112, 112), borderValue=0.0)
        np.testing.assert_array_equal(got, expected)


def test_similarity_transform_special_cases_match_skimage():
    rng = np.random.default_rng(3)
    mirrored = ARCFACE_TEMPLATE * [-1, 1] + [200, 0] + rng.normal(0, 0.5, (5, 2))   # det(A) < 0: no reflection
    collinear = np.stack([np.linspace(0, 40, 5), np.linspace(10, 30, 5)], axis=1)    # rank 1
    exact = ARCFACE_TEMPLATE * 2.0 + [5, 7]
    for points in (mirrored, collinear, exact):
        np.testing.assert_allclose(similarity_transforms(points[None])[0], _skimage_matrix(points), atol=1e-9)
    assert np.isnan(similarity_transforms(np.ones((1, 5, 2)))).all()                 # all points coincide


class ToyEmbedder(torch.nn.Module):
    """Fixed random projection of the [-1, 1] input; records what it was given."""

    def __init__(self):
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.proj = torch.nn.Parameter(torch.randn(3 * 112 * 112, 8, generator=gen), requires_grad=False)
        self.inputs = []

    def forward(self, x):
        self.inputs.append(x)
        return x.flatten(1) @ self.proj


def test_csim_matches_manual_computation_and_skips_missing_faces():
    pred, pred_lm = _faces(n=3, seed=1)
    ref, ref_lm = _faces(n=1, seed=2)
    pred_lm[1] = np.nan                                   # no face detected in frame 1
    embedder = ToyEmbedder()
    sims = csim(pred, ref, embedder, pred_lm, ref_lm)
    assert sims.shape == (3,) and torch.isnan(sims[1]) and torch.isfinite(sims[[0, 2]]).all()
    assert embedder.inputs[0].min() >= -1 and embedder.inputs[0].max() <= 1

    def embed(images, landmarks):
        x = torch.from_numpy(align_faces(images, landmarks)).permute(0, 3, 1, 2).float()
        return ToyEmbedder()((x / 255.0 - 0.5) / 0.5)

    ref_emb = embed(ref, ref_lm)
    for i in (0, 2):
        expected = torch.nn.functional.cosine_similarity(embed(pred[i:i + 1], pred_lm[i:i + 1]), ref_emb)
        assert sims[i].item() == pytest.approx(expected.item(), abs=1e-5)
    # Paired references: one per frame; a reference without a face makes that frame NaN. Same tolerance as above:
    # float32 dot products over 3*112*112 inputs, batched 3 vs 1, take other BLAS paths (1.7e-6 apart seen with
    # OMP_NUM_THREADS=1).
    paired_lm = np.repeat(ref_lm, 3, axis=0)
    paired_lm[2] = np.nan
    paired = csim(pred, np.repeat(ref, 3, axis=0), embedder, pred_lm, paired_lm)
    assert torch.isnan(paired[[1, 2]]).all() and paired[0].item() == pytest.approx(sims[0].item(), abs=1e-5)


def test_csim_needs_one_reference_or_one_per_frame():
    pred, pred_lm = _faces(n=3, seed=1)
    ref, ref_lm = _faces(n=2, seed=2)
    one_line_error(lambda: csim(pred, ref, ToyEmbedder(), pred_lm, ref_lm),
                   "csim: 2 reference frames for 3 generated frames (need 1 or 3)")


def test_csim_detects_missing_landmarks_with_a_landmarker():
    pred, pred_lm = _faces(n=2, seed=6)
    ref, ref_lm = _faces(n=1, seed=7)

    class KnownLandmarks(torch.nn.Module):        # stands in for FANLandmarks: [N, H, W, 3] -> [N, 68, 2]
        def forward(self, images):
            return torch.from_numpy(pred_lm if len(images) == 2 else ref_lm).float()

    embedder = ToyEmbedder()
    detected = csim(pred, ref, embedder, landmarker=KnownLandmarks())
    given = csim(pred, ref, embedder, pred_lm.astype(np.float32), ref_lm.astype(np.float32))
    torch.testing.assert_close(detected, given)


def test_csim_without_landmarks_or_a_detector_names_the_missing_side():
    pred, pred_lm = _faces(n=2, seed=6)
    ref, _ = _faces(n=1, seed=7)
    one_line_error(lambda: csim(pred, ref, ToyEmbedder()),
                   "csim: no generated-frame landmarks and no landmark detector given")
    one_line_error(lambda: csim(pred, ref, ToyEmbedder(), pred_landmarks=pred_lm),
                   "csim: no reference landmarks and no landmark detector given")


def test_identity_similarity_metric_with_arcface():
    from zoo.metrics.backbones import random_state_dict
    from zoo.metrics.backbones.arcface import ArcFace, iresnet

    arcface = ArcFace(18, state_dict=random_state_dict(iresnet(18), seed=0))
    pred, pred_lm = _faces(n=2, seed=4)
    ref, ref_lm = _faces(n=1, seed=5)
    pred_lm[0] = np.nan
    metric = IdentitySimilarity(arcface)
    metric.update(pred, ref, pred_lm, ref_lm)
    metric.update(pred[1:], ref, pred_lm[1:], ref_lm)
    expected = csim(pred[1:], ref, arcface, pred_lm[1:], ref_lm)[0].item()
    assert metric.frames.item() == 2
    assert metric.compute().item() == pytest.approx(expected, abs=1e-5)
    assert metric.backbone == "arcface_torch iresnet18"

    owner = torch.nn.Module()
    owner.csim = metric
    assert list(owner.parameters()) == [] and not any(k.startswith("csim.net") for k in owner.state_dict())


def test_align_faces_refuses_missing_landmarks():
    images, landmarks = _faces()
    landmarks = np.array(landmarks, dtype=np.float64)
    landmarks[1] = np.nan                                   # a frame where the detector found no face
    one_line_error(lambda: align_faces(images, landmarks),
                   "align_faces: landmarks contain NaN/inf (frames without a detected face)")
