"""The FID Inception network of pytorch-fid, reading the verified weights file from the zoo's weights directory.

The network itself is pytorch-fid's (``pytorch_fid.inception.InceptionV3([3])``: torchvision Inception3 with the
TF-graph ``FIDInception*`` blocks, 2048-d pool3 output), so preprocessing and architecture are exactly
pytorch-fid 0.3.0's: bilinear resize to 299x299 (``align_corners=False``, no antialias), ``2x - 1`` normalisation
of inputs in [0, 1] (metrics.md §2.1). pytorch-fid fetches its weights through
``pytorch_fid.inception.load_state_dict_from_url`` (a download); :func:`build_fid_inception` swaps that loader
for one that returns our state dict while the network is built, so nothing is downloaded and the file's SHA256
is checked first (:mod:`zoo.weights`).

Weights: ``pt_inception-2015-12-05-6726825d.pth`` -- a torchvision-Inception3 state dict with the FID blocks,
566 keys (``Conv2d_1a_3x3.conv.weight`` ... ``fc.weight`` (1008, 2048)), loaded strictly by pytorch-fid.
"""
from __future__ import annotations

import os
import threading
from typing import Optional, Union

import torch
import torchvision
from pytorch_fid import inception as pfi
from torch import nn

from zoo.errors import DataError
from zoo.metrics.backbones import FrozenBackbone, load_exact

__all__ = ["FIDInception", "build_fid_inception", "fid_inception_layout_module", "FID_FEATURE_DIM"]

FID_FEATURE_DIM = 2048
_LOADER_LOCK = threading.Lock()   # the loader swap patches a module global: one build at a time


def fid_inception_layout_module() -> nn.Module:
    """A random-init torchvision Inception3 with pytorch-fid's FID blocks: the 566-key layout of the weights file.

    Built from pytorch-fid's own classes exactly as ``pytorch_fid.inception.fid_inception_v3`` builds them, minus
    the weight download; used to check a state dict's layout and to make random state dicts.
    """
    net = torchvision.models.inception_v3(weights=None, aux_logits=False, num_classes=1008, init_weights=False)
    net.Mixed_5b = pfi.FIDInceptionA(192, pool_features=32)
    net.Mixed_5c = pfi.FIDInceptionA(256, pool_features=64)
    net.Mixed_5d = pfi.FIDInceptionA(288, pool_features=64)
    net.Mixed_6b = pfi.FIDInceptionC(768, channels_7x7=128)
    net.Mixed_6c = pfi.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6d = pfi.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6e = pfi.FIDInceptionC(768, channels_7x7=192)
    net.Mixed_7b = pfi.FIDInceptionE_1(1280)
    net.Mixed_7c = pfi.FIDInceptionE_2(2048)
    return net


def build_fid_inception(state_dict: dict) -> nn.Module:
    """``pytorch_fid.inception.InceptionV3([3])`` with ``state_dict`` as its weights (nothing is downloaded).

    Raises:
        WeightsError: the state dict is not in the 566-key FID Inception layout.
    """
    def _from_memory(url, *args, **kwargs):
        return state_dict

    with _LOADER_LOCK:
        original = pfi.load_state_dict_from_url
        pfi.load_state_dict_from_url = _from_memory
        try:
            return pfi.InceptionV3([pfi.InceptionV3.BLOCK_INDEX_BY_DIM[FID_FEATURE_DIM]], resize_input=True,
                                   normalize_input=True, requires_grad=False, use_fid_inception=True)
        except (RuntimeError, TypeError, AttributeError):
            # pytorch-fid's strict load failed: name the first differences in one line instead of its dump.
            load_exact(fid_inception_layout_module(), state_dict, "FID Inception state dict")
            raise
        finally:
            pfi.load_state_dict_from_url = original


class FIDInception(FrozenBackbone):
    """2048-d pool3 features of the FID Inception (pytorch-fid 0.3.0 preprocessing).

    Args:
        state_dict: the official-layout state dict (566 keys). Required: a random FID network is only meaningful
            in tests, which pass :func:`zoo.metrics.backbones.random_state_dict` of
            :func:`fid_inception_layout_module` explicitly.
    """

    name = "pytorch-fid InceptionV3 pool3 (pt_inception-2015-12-05)"

    def __init__(self, state_dict: dict):
        super().__init__()
        self.net = build_fid_inception(state_dict)
        self.freeze()

    @classmethod
    def from_weights(cls, weights_dir: Optional[Union[str, os.PathLike]] = None) -> "FIDInception":
        """FID Inception with the verified ``pt_inception-2015-12-05-6726825d.pth`` (name ``fid_inception``)."""
        from zoo import weights

        return cls(weights.load_state_dict("fid_inception", weights_dir))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Pool3 features.

        Args:
            images: [N, 3, H, W] RGB, either uint8 0..255 or float in [0, 1] (as pytorch-fid's ``ToTensor()``
                gives). Any H, W: resized to 299x299 bilinearly inside the network.

        Returns:
            float32 [N, 2048].
        """
        if images.dim() != 4 or images.shape[1] != 3:
            raise DataError(f"FID Inception: expected images [N, 3, H, W], got shape {tuple(images.shape)}")
        if images.dtype == torch.uint8:
            images = images.float() / 255.0    # = torchvision ToTensor on PIL images, as pytorch-fid reads files
        x = images.to(dtype=torch.float32)
        return self.net(x)[0].flatten(1)

