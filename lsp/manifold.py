"""LSP's manifold projection: speech features are replaced by their reconstruction from the target person's own.

At inference, each APC feature ``x`` is projected onto the locally linear manifold of the person's training APC
features (LLE, Roweis & Saul 2000): find its K = 10 nearest neighbours ``n_k`` in the base, solve for the weights
``w`` (summing to 1) minimising ``|x - sum_k w_k n_k|^2``, and use ``(1 - p) x + p sum_k w_k n_k`` with p = 1.
This moves a new speaker's features towards the target person's, which the mouth and pose nets were trained on.
"""
from __future__ import annotations

from typing import NamedTuple

import torch


def lle_weights(features: torch.Tensor, neighbours: torch.Tensor, regularisation: float = 1e-3) -> torch.Tensor:
    """Least-squares reconstruction weights summing to 1.

    Args:
        features: [N, D]; neighbours: [N, K, D].
        regularisation: added to the local Gram matrix's diagonal, relative to its trace (the standard LLE
            conditioner: with K <= D the system is exactly solvable, but near-duplicate neighbours make it singular).

    Returns:
        [N, K] weights, each row summing to 1.
    """
    local = neighbours - features[:, None, :]                                       # [N, K, D]
    gram = local @ local.transpose(1, 2)                                             # [N, K, K]
    k = gram.shape[-1]
    trace = gram.diagonal(dim1=1, dim2=2).sum(-1).clamp_min(1e-12)                   # [N]
    eye = torch.eye(k, dtype=gram.dtype, device=gram.device)
    gram = gram + (regularisation * trace)[:, None, None] * eye
    weights = torch.linalg.solve(gram, torch.ones(gram.shape[:-1], dtype=gram.dtype, device=gram.device))
    return weights / weights.sum(-1, keepdim=True)


class ProjectionBase(NamedTuple):
    """A person's APC features as the projection reads them: ``features`` float64 [M, D] and their squared norms
    [M], prepared once (:class:`~lsp.inference.LSPEngine` keeps one) rather than for every pushed row: copying and
    measuring the base anew took about a fifth of a 128² stream's time."""

    features: torch.Tensor
    squared_norms: torch.Tensor

    @classmethod
    def of(cls, base: torch.Tensor) -> ProjectionBase:
        features = base.double()
        return cls(features, (features * features).sum(-1))


def manifold_projection(features: torch.Tensor, base: torch.Tensor | ProjectionBase, k: int = 10,
                        percent: float = 1.0, chunk: int = 4096) -> torch.Tensor:
    """Project features [..., D] onto the manifold of ``base`` [M, D] (see the module docstring).

    ``percent`` blends the projection with the input (LSP's LLE_percent). Computed in float64 in chunks of
    ``chunk`` features to bound the [chunk, M] distance matrix; the nearest neighbours are those of the smallest
    ``|b|^2 - 2 x.b`` (the squared distance less ``|x|^2``, the same for every ``b``).
    """
    base = base if isinstance(base, ProjectionBase) else ProjectionBase.of(base)
    if percent == 0 or base.features.numel() == 0:
        return features
    if base.features.shape[0] < k:
        raise ValueError(f"manifold projection needs at least k={k} base features, got {base.features.shape[0]}")
    flat = features.reshape(-1, features.shape[-1]).double()
    out = torch.empty_like(flat)
    for start in range(0, len(flat), chunk):
        x = flat[start:start + chunk]
        ranking = torch.addmm(base.squared_norms, x, base.features.T, alpha=-2)              # [n, M]
        nearest = ranking.topk(k, dim=1, largest=False).indices                             # [n, K]
        neighbours = base.features[nearest]                                                 # [n, K, D]
        fused = (lle_weights(x, neighbours)[:, :, None] * neighbours).sum(1)
        out[start:start + chunk] = (1 - percent) * x + percent * fused
    return out.to(features.dtype).reshape(features.shape)
