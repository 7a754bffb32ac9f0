"""ArcFace identity embedder: insightface ``arcface_torch`` IResNet (Deng et al.; Duta et al. "improved ResNet").

Re-implemented from the published architecture with the exact key layout of ``ms1mv3_arcface_r100_fp16/
backbone.pth`` (925 keys with ``num_batches_tracked``, 65.16 M parameters for r100):

``conv1.weight``, ``bn1.*``, ``prelu.weight``,
``layer{1..4}.N.{bn1, conv1, bn2, prelu, conv2, bn3}.*`` (+ ``downsample.{0,1}.*`` in each stage's first block),
``bn2.*``, ``fc.weight/bias`` (512, 25088), ``features.*`` (BatchNorm1d(512)).

Input: aligned RGB faces, 112x112, normalised ``(x / 255 - 0.5) / 0.5`` (i.e. [-1, 1]); output: raw 512-d
embedding (CSIM takes the cosine of raw outputs). Faces are aligned by :func:`zoo.metrics.identity.align_faces`.
The upstream ``fp16`` autocast option is not reproduced: the released weights are fp32 and evaluation runs fp32.
"""
from __future__ import annotations

import os
from typing import Optional, Union

import torch
from torch import nn

from zoo.metrics.backbones import FrozenBackbone, load_exact

__all__ = ["IResNet", "ArcFace", "IRESNET_LAYERS", "iresnet"]

# Blocks per stage for each published depth.
IRESNET_LAYERS: dict[int, tuple[int, int, int, int]] = {
    18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 14, 3), 100: (3, 13, 30, 3)}

_BN_EPS = 1e-5


class IBasicBlock(nn.Module):
    """Pre-activation-style residual block: BN -> conv3x3 -> BN -> PReLU -> conv3x3 (stride) -> BN, + shortcut.

    The stride sits in the second convolution; the shortcut is a strided 1x1 conv + BN where shapes change.
    """

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin, eps=_BN_EPS)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout, eps=_BN_EPS)
        self.prelu = nn.PReLU(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride=stride, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout, eps=_BN_EPS)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False),
                                            nn.BatchNorm2d(cout, eps=_BN_EPS))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        shortcut = x if self.downsample is None else self.downsample(x)
        return out + shortcut


class IResNet(nn.Module):
    """arcface_torch IResNet backbone in the official layout (trainable; see :class:`ArcFace` for the frozen one).

    Args:
        layers: blocks per stage, e.g. ``IRESNET_LAYERS[100]``.
        num_features: embedding size (512 for the released models).
    """

    def __init__(self, layers: tuple[int, int, int, int] = IRESNET_LAYERS[100], num_features: int = 512):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64, eps=_BN_EPS)
        self.prelu = nn.PReLU(64)
        widths, cin = (64, 128, 256, 512), 64
        for i, (width, blocks) in enumerate(zip(widths, layers), start=1):
            # Every stage halves the resolution in its first block: 112 -> 56 -> 28 -> 14 -> 7.
            stage = [IBasicBlock(cin, width, stride=2)] + [IBasicBlock(width, width) for _ in range(blocks - 1)]
            self.add_module(f"layer{i}", nn.Sequential(*stage))
            cin = width
        self.bn2 = nn.BatchNorm2d(512, eps=_BN_EPS)
        self.dropout = nn.Dropout(p=0.0)
        self.fc = nn.Linear(512 * 7 * 7, num_features)
        self.features = nn.BatchNorm1d(num_features, eps=_BN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Embeddings of normalised faces.

        Args:
            x: float [B, 3, 112, 112], RGB in [-1, 1].

        Returns:
            float [B, num_features] (not L2-normalised).
        """
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.dropout(self.bn2(x).flatten(1))
        return self.features(self.fc(x))


def iresnet(depth: int = 100, num_features: int = 512) -> IResNet:
    """IResNet-``depth`` (18, 34, 50 or 100) with random weights."""
    if depth not in IRESNET_LAYERS:
        raise ValueError(f"iresnet depth must be one of {sorted(IRESNET_LAYERS)}, got {depth}")
    return IResNet(IRESNET_LAYERS[depth], num_features)


class ArcFace(FrozenBackbone):
    """Frozen IResNet identity embedder; the IResNet is ``self.net`` (its state dict is the official layout).

    Args:
        depth: 18, 34, 50 or 100 (the CSIM weights file is r100).
        state_dict: official-layout state dict to load (random weights when ``None``).
    """

    def __init__(self, depth: int = 100, state_dict: Optional[dict] = None):
        super().__init__()
        self.name = f"arcface_torch iresnet{depth}"
        self.net = iresnet(depth)
        if state_dict is not None:
            load_exact(self.net, state_dict, f"iresnet{depth} state dict")
        self.freeze()

    @classmethod
    def from_weights(cls, weights_dir: Optional[Union[str, os.PathLike]] = None) -> "ArcFace":
        """iresnet100 with the verified ``ms1mv3_arcface_r100_fp16/backbone.pth`` (name ``arcface_r100``)."""
        from zoo import weights

        model = cls(100)
        model.name = "arcface_torch iresnet100 (ms1mv3_arcface_r100_fp16)"
        load_exact(model.net, weights.load_state_dict("arcface_r100", weights_dir),
                   weights.WEIGHTS["arcface_r100"].filename)
        return model

    def forward(self, faces: torch.Tensor) -> torch.Tensor:
        """Embeddings of aligned faces.

        Args:
            faces: float [B, 3, 112, 112], RGB in [-1, 1] (``(u8 / 255 - 0.5) / 0.5``).

        Returns:
            float [B, 512].
        """
        return self.net(faces)
