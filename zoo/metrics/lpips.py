"""LPIPS (Zhang et al. 2018) through the ``lpips`` 0.1.4 package, the reference implementation.

The network is an ``lpips.LPIPS`` instance passed in, so tests can use ``lpips.LPIPS(net='alex', pnet_rand=True)``
(random trunk, the package's real linear layers; no download). For real scores, :func:`build_lpips` assembles
the network offline from the torchvision trunk file (``alexnet-owt-7be5be79.pth`` for ``net="alex"``) that the
zoo's weights registry provides, plus the linear layers shipped inside the ``lpips`` wheel (v0.1).
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from zoo.metrics.functional import lpips
from zoo.metrics.image import MeanOfScores


def build_lpips(trunk_weights: str | Path, net: str = "alex") -> nn.Module:
    """An ``lpips.LPIPS`` network (v0.1) with its trunk loaded from a torchvision checkpoint file, offline.

    Args:
        trunk_weights: torchvision state dict of the trunk (keys ``features.<i>.weight/bias``), e.g.
            ``alexnet-owt-7be5be79.pth``; resolved by the weights registry.
        net: ``"alex"`` (the LPIPS default), ``"vgg"`` or ``"squeeze"``.

    Returns:
        the network in evaluation mode.
    """
    import lpips as lpips_package

    with warnings.catch_warnings():
        # lpips 0.1.4 builds its trunk with torchvision's deprecated `pretrained=False`; nothing is downloaded.
        warnings.filterwarnings("ignore", message=".*(pretrained|weight enum).*", category=UserWarning)
        model = lpips_package.LPIPS(net=net, version="0.1", pretrained=True, pnet_rand=True, verbose=False)
    state = torch.load(Path(trunk_weights), map_location="cpu", weights_only=True)
    # The package splits torchvision's `features` into slices that keep the layer indices as module names
    # (slice2.3 is features.3), so each trunk tensor's source key follows from its own name.
    trunk = {}
    for name in model.net.state_dict():
        _, index, parameter = name.split(".", 2)                           # squeeze: "slice2.3.squeeze.weight"
        source = f"features.{index}.{parameter}"
        if source not in state:
            raise KeyError(f"{trunk_weights}: no {source!r} for LPIPS[{net}] trunk tensor {name!r}")
        trunk[name] = state[source]
    model.net.load_state_dict(trunk, strict=True)
    return model.eval()


class LPIPS(MeanOfScores):
    """Mean LPIPS over image pairs.

    As input to ``update``: ``pred``, ``target`` float [N, 3, H, W] in [-1, 1] (or [0, 1] with ``normalize``).
    As output of ``compute``: float64 scalar, the mean of the per-pair distances.

    Args:
        net: the ``lpips.LPIPS`` network (see :func:`build_lpips`); kept in evaluation mode.
        normalize: inputs are in [0, 1].
        kwargs: torchmetrics ``Metric`` options.
    """

    is_differentiable = True
    higher_is_better = False
    full_state_update = False

    def __init__(self, net: nn.Module, normalize: bool = False, **kwargs: Any):
        super().__init__(**kwargs)
        if not isinstance(net, nn.Module):
            raise TypeError(f"net must be an nn.Module (an lpips.LPIPS instance), got {type(net).__name__}")
        self.net = net.eval()
        self.normalize = normalize
        self.variant = f"LPIPS[{getattr(net, 'pnet_type', type(net).__name__)}-v{getattr(net, 'version', '?')}]"

    def train(self, mode: bool = True) -> "LPIPS":
        """Switch the metric's mode but leave the network in evaluation mode (no dropout)."""
        super().train(mode)
        self.net.eval()
        return self

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        self.accumulate(lpips(pred, target, self.net, self.normalize))
