"""The two image networks of the synthetic-domain evaluator kit: a 68-point landmark detector and an identity
embedder. Both are small CNNs sized to train in minutes on a CPU (see ``configs/model/landmark_detector.yaml`` and
``configs/model/identity_embedder.yaml``); the LightningModules around them live in
:mod:`zoo.evaluators.landmark_detector` and :mod:`zoo.evaluators.identity_embedder`.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["conv_bn_relu", "ResidualBlock", "LandmarkNet", "soft_argmax", "IdentityTrunk", "IdentityNet"]


def conv_bn_relu(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    """3x3 convolution (no bias: the BatchNorm has one) -> BatchNorm -> ReLU."""
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class ResidualBlock(nn.Module):
    """Basic residual block: conv3x3 (stride) -> BN -> ReLU -> conv3x3 -> BN, plus a (projected) shortcut, ReLU."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.body = nn.Sequential(conv_bn_relu(cin, cout, stride), nn.Conv2d(cout, cout, 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(cout))
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + self.shortcut(x), inplace=True)


def soft_argmax(logits: torch.Tensor) -> torch.Tensor:
    """Expected position under the spatial softmax of each heatmap (integral regression, Sun et al. ECCV 2018).

    Args:
        logits: float [N, K, h, w] unnormalised heatmaps.

    Returns:
        float [N, K, 2] (x, y) in normalised coordinates: -1 / +1 are the outer edges of the first / last cell
        (``align_corners=False``), so the mapping to any resolution is a pure scale and offset.
    """
    n, k, h, w = logits.shape
    prob = logits.flatten(2).float().softmax(-1).view(n, k, h, w)
    xs = (torch.arange(w, device=logits.device, dtype=prob.dtype) + 0.5) * (2.0 / w) - 1.0   # cell centres
    ys = (torch.arange(h, device=logits.device, dtype=prob.dtype) + 0.5) * (2.0 / h) - 1.0
    return torch.stack([(prob.sum(2) * xs).sum(-1), (prob.sum(3) * ys).sum(-1)], dim=-1)


class LandmarkNet(nn.Module):
    """68 heatmaps at 1/4 of the input resolution from a small encoder with a feature-pyramid decoder, read out by
    soft-argmax.

    Why heatmaps + soft-argmax rather than a fully connected coordinate regressor: convolutions are translation
    equivariant, so a face that sits elsewhere in a generated frame than in the training frames is still located,
    and the expectation over the softmax gives sub-cell (sub-pixel) positions that are trained end to end with a
    coordinate loss.

    Encoder: /2 (widths[0]) -> /4 (widths[1]) -> /8 (widths[2]) -> /16 (widths[3]). Decoder (FPN, Lin et al. 2017):
    1x1 lateral projections to ``decoder_width`` channels, top-down bilinear x2 + add, a 3x3 conv at /8 and at /4,
    then a 1x1 conv to K heatmaps. Additive lateral skips instead of concatenation keep the decoder convolutions
    narrow: the decoder costs less than the encoder, which matters on a CPU.

    Args:
        widths: encoder channels at /2, /4, /8, /16.
        decoder_width: decoder channels.
        num_points: K landmarks (68).

    Input float [N, 3, S, S] (S divisible by 16) in [-1, 1]; output float [N, K, 2] normalised (x, y) in [-1, 1]
    (see :func:`soft_argmax`).
    """

    def __init__(self, widths: Sequence[int] = (16, 32, 64, 128), decoder_width: int = 48, num_points: int = 68):
        super().__init__()
        c1, c2, c3, c4 = widths
        self.down4 = nn.Sequential(conv_bn_relu(3, c1, 2), conv_bn_relu(c1, c2, 2), conv_bn_relu(c2, c2))
        self.down8 = nn.Sequential(conv_bn_relu(c2, c3, 2), conv_bn_relu(c3, c3))
        self.down16 = nn.Sequential(conv_bn_relu(c3, c4, 2), conv_bn_relu(c4, c4))
        self.lateral4 = nn.Conv2d(c2, decoder_width, 1)
        self.lateral8 = nn.Conv2d(c3, decoder_width, 1)
        self.lateral16 = nn.Conv2d(c4, decoder_width, 1)
        self.smooth8 = conv_bn_relu(decoder_width, decoder_width)
        self.smooth4 = conv_bn_relu(decoder_width, decoder_width)
        self.heatmaps = nn.Conv2d(decoder_width, num_points, 1)

    def heatmap_logits(self, x: torch.Tensor) -> torch.Tensor:
        """float [N, 3, S, S] -> float [N, K, S/4, S/4] unnormalised heatmaps."""
        f4 = self.down4(x.contiguous())     # crops are strided views; see IdentityTrunk.forward on layouts
        f8 = self.down8(f4)
        f16 = self.down16(f8)
        up = lambda t, like: F.interpolate(t, size=like.shape[-2:], mode="bilinear", align_corners=False)  # noqa
        u8 = self.smooth8(self.lateral8(f8) + up(self.lateral16(f16), f8))
        u4 = self.smooth4(self.lateral4(f4) + up(u8, f4))
        return self.heatmaps(u4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return soft_argmax(self.heatmap_logits(x))


class IdentityTrunk(nn.Module):
    """Residual CNN on aligned faces, globally average-pooled: the identity features (and the FD features).

    112 -> 56 (stem, widths[0]) -> 28 -> 14 -> 7 (one residual block per stage, widths[1:]) -> global average pool.

    Input float [N, 3, 112, 112] aligned faces in [-1, 1] (other sizes work; pooling is global); output float
    [N, widths[-1]].
    """

    def __init__(self, widths: Sequence[int] = (16, 32, 64, 128)):
        super().__init__()
        stages = [conv_bn_relu(3, widths[0], 2)]
        stages += [ResidualBlock(cin, cout, 2) for cin, cout in zip(widths[:-1], widths[1:])]
        self.stages = nn.Sequential(*stages)
        self.num_features = int(widths[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Callers often pass permuted [N, H, W, 3] arrays (embed_faces, the FD update): a channels-last layout, which
        # sends CPU convolutions down other kernels (one crashed in backward with narrow layers, torch 2.15).
        return self.stages(x.contiguous()).mean(dim=(2, 3))


class IdentityNet(nn.Module):
    """Identity embedder: :class:`IdentityTrunk` features -> linear -> BatchNorm1d embedding (ArcFace's neck).

    Input float [N, 3, 112, 112] aligned faces in [-1, 1]; output float [N, embedding_dim] raw embeddings (compare
    them by cosine; the BatchNorm centres them, which spreads identities over the sphere).
    """

    def __init__(self, widths: Sequence[int] = (16, 32, 64, 128), embedding_dim: int = 512):
        super().__init__()
        self.trunk = IdentityTrunk(widths)
        self.neck = nn.Sequential(nn.Linear(self.trunk.num_features, embedding_dim, bias=False),
                                  nn.BatchNorm1d(embedding_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.neck(self.trunk(x))
