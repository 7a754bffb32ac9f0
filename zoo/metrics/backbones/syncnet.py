"""SyncNet (Chung & Zisserman 2016), the network behind LSE-C / LSE-D.

Re-implemented from the architecture of syncnet_python's ``SyncNetModel.S`` (``num_layers_in_fc_layers=1024``;
metrics.md §1.4) with the exact key layout of the published ``syncnet_v2.model``:

- ``netcnnaud.{0,1,4,5,8,9,11,12,14,15,18,19}.*`` / ``netcnnlip.{same}.*`` (conv + BatchNorm pairs),
- ``netfcaud.{0,1,3}.*`` / ``netfclip.{0,1,3}.*`` (Linear, BatchNorm1d, Linear),

88 keys without ``num_batches_tracked`` (the file predates PyTorch 0.4.1), 13,631,616 parameters. The file loads
unchanged; the module's own ``num_batches_tracked`` buffers are the only extra keys.

Inputs follow syncnet_python: audio = 13 MFCCs x 20 frames (0.2 s at 100 frames/s) of int16-scale 16 kHz audio;
video = 5 frames of 224x224 **BGR 0..255 float** (no mean subtraction). Outputs are raw 1024-d embeddings (no L2
normalisation); distances between them are the sync scores (:mod:`zoo.metrics.sync`).
"""
from __future__ import annotations

import os
from typing import Optional, Union

import torch
from torch import nn

from zoo.metrics.backbones import FrozenBackbone, load_exact

__all__ = ["SyncNet"]


def _conv_bn_relu2d(cin: int, cout: int, kernel, padding) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, kernel_size=kernel, stride=1, padding=padding), nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True)]


def _conv_bn_relu3d(cin: int, cout: int, kernel, stride=1, padding=0) -> list[nn.Module]:
    return [nn.Conv3d(cin, cout, kernel_size=kernel, stride=stride, padding=padding), nn.BatchNorm3d(cout),
            nn.ReLU(inplace=True)]


def _fc(dim: int) -> nn.Sequential:
    """Linear(512, 512) + BN1d + ReLU + Linear(512, dim): keys 0, 1, 3."""
    return nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(inplace=True), nn.Linear(512, dim))


class SyncNet(FrozenBackbone):
    """Audio and lip embedding towers of SyncNet, frozen and in eval mode.

    Build with random weights (``SyncNet()``), from a state dict (``SyncNet(state_dict)``) or from the verified
    weights file (:meth:`from_weights`).
    """

    name = "syncnet_v2 (syncnet_python SyncNetModel.S)"

    def __init__(self, state_dict: Optional[dict] = None, embedding_dim: int = 1024):
        super().__init__()
        # Sequential indices must match the official file: ReLU / MaxPool layers occupy the skipped indices.
        self.netcnnaud = nn.Sequential(
            *_conv_bn_relu2d(1, 64, 3, 1),                                   # 0 1 2
            nn.MaxPool2d(kernel_size=(1, 1), stride=(1, 1)),                 # 3
            *_conv_bn_relu2d(64, 192, 3, 1),                                 # 4 5 6
            nn.MaxPool2d(kernel_size=(3, 3), stride=(1, 2)),                 # 7: 13x20 -> 11x9
            *_conv_bn_relu2d(192, 384, 3, 1),                                # 8 9 10
            *_conv_bn_relu2d(384, 256, 3, 1),                                # 11 12 13
            *_conv_bn_relu2d(256, 256, 3, 1),                                # 14 15 16
            nn.MaxPool2d(kernel_size=(3, 3), stride=(2, 2)),                 # 17: -> 5x4
            *_conv_bn_relu2d(256, 512, (5, 4), (0, 0)),                      # 18 19 20: -> 1x1
        )
        self.netfcaud = _fc(embedding_dim)
        self.netcnnlip = nn.Sequential(
            *_conv_bn_relu3d(3, 96, (5, 7, 7), (1, 2, 2), 0),                # 0 1 2: 5x224x224 -> 1x109x109
            nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2)),           # 3: -> 54x54
            *_conv_bn_relu3d(96, 256, (1, 5, 5), (1, 2, 2), (0, 1, 1)),      # 4 5 6: -> 26x26
            nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),  # 7: -> 13x13
            *_conv_bn_relu3d(256, 256, (1, 3, 3), 1, (0, 1, 1)),             # 8 9 10
            *_conv_bn_relu3d(256, 256, (1, 3, 3), 1, (0, 1, 1)),             # 11 12 13
            *_conv_bn_relu3d(256, 256, (1, 3, 3), 1, (0, 1, 1)),             # 14 15 16
            nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2)),           # 17: -> 6x6
            *_conv_bn_relu3d(256, 512, (1, 6, 6), 1, 0),                     # 18 19 20: -> 1x1
        )
        self.netfclip = _fc(embedding_dim)
        if state_dict is not None:
            load_exact(self, state_dict, "SyncNet state dict")
        self.freeze()

    @classmethod
    def from_weights(cls, weights_dir: Optional[Union[str, os.PathLike]] = None) -> "SyncNet":
        """SyncNet with the verified ``syncnet_v2.model`` from the weights directory (:mod:`zoo.weights`)."""
        from zoo import weights

        state = weights.load_state_dict("syncnet", weights_dir)
        net = cls()
        load_exact(net, state, weights.WEIGHTS["syncnet"].filename)
        return net

    def forward_aud(self, mfcc: torch.Tensor) -> torch.Tensor:
        """Audio embedding.

        Args:
            mfcc: float [B, 1, 13, 20] -- 13 MFCCs (c0 = log energy) x 20 frames of int16-scale audio.

        Returns:
            float [B, 1024].
        """
        return self.netfcaud(self.netcnnaud(mfcc).flatten(1))

    def forward_lip(self, video: torch.Tensor) -> torch.Tensor:
        """Lip embedding.

        Args:
            video: float [B, 3, 5, 224, 224] -- 5 consecutive BGR frames, values 0..255.

        Returns:
            float [B, 1024].
        """
        return self.netfclip(self.netcnnlip(video).flatten(1))

    def forward(self, video: torch.Tensor, mfcc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(forward_lip(video), forward_aud(mfcc))``."""
        return self.forward_lip(video), self.forward_aud(mfcc)
