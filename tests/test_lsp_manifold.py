"""LSP's manifold projection against scikit-learn's LLE pieces (nearest neighbours, barycenter weights)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lsp.manifold import ProjectionBase, manifold_projection


def test_projection_is_scikit_learns_lle_reconstruction():
    from sklearn.manifold._locally_linear import barycenter_weights
    from sklearn.neighbors import NearestNeighbors

    generator = torch.Generator().manual_seed(0)
    base = torch.randn(300, 16, generator=generator)
    features = torch.randn(2, 20, 16, generator=generator, dtype=torch.float64)
    k, flat = 10, features.reshape(-1, 16).numpy()
    nearest = NearestNeighbors(n_neighbors=k).fit(base.numpy()).kneighbors(flat, return_distance=False)
    weights = barycenter_weights(flat, base.double().numpy(), nearest, reg=1e-3)        # the same conditioner
    expected = np.einsum("nk,nkd->nd", weights, base.double().numpy()[nearest]).reshape(2, 20, 16)
    projected = manifold_projection(features, base, k)
    np.testing.assert_allclose(projected.numpy(), expected, rtol=0, atol=1e-10)
    # a prepared base (what the engine keeps) and small chunks give the same; percent blends with the input
    torch.testing.assert_close(manifold_projection(features, ProjectionBase.of(base), k, chunk=7), projected,
                               rtol=0, atol=1e-12)
    torch.testing.assert_close(manifold_projection(features, base, k, percent=0.5), 0.5 * features + 0.5 * projected)
    assert manifold_projection(features, base, k, percent=0.0) is features
    assert manifold_projection(features.float(), base, k).dtype == torch.float32


def test_projection_needs_k_base_features():
    with pytest.raises(ValueError, match="needs at least k=10 base features, got 9"):
        manifold_projection(torch.randn(3, 4), torch.randn(9, 4), 10)
