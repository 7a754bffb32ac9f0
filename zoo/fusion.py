"""Inference-time folding of BatchNorm into the layer before it.

In eval mode a BatchNorm is a fixed affine map per channel, so a convolution (or linear layer) followed directly by
one computes the same function as a single convolution with rescaled weights and a bias. The folded copy skips a
whole pass over every activation it would have normalised: 5-10 % of LSP's renderer time on a 2-core CPU at
128-512 px (``benchmarks/lsp_streaming.py`` times both in one run). Outputs agree with the unfolded network to
float rounding (about 1e-6 relative).

The arithmetic is torch's (:func:`torch.nn.utils.fusion.fuse_conv_bn_weights` and ``fuse_linear_bn_weights``); this
module finds the pairs and keeps a folded copy up to date.
"""
from __future__ import annotations

import copy
from itertools import chain
from typing import Optional

from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights, fuse_linear_bn_weights

_NORM_AFTER = {nn.Conv1d: nn.BatchNorm1d, nn.Conv2d: nn.BatchNorm2d, nn.Conv3d: nn.BatchNorm3d,
               nn.Linear: nn.BatchNorm1d}


def _foldable(layer: nn.Module, norm: nn.Module) -> bool:
    expected = _NORM_AFTER.get(type(layer))
    return (expected is not None and type(norm) is expected and norm.running_mean is not None
            and norm.num_features == (layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels))


def _require_eval(module: nn.Module) -> None:
    """Every submodule in eval mode: a BatchNorm left in training mode normalises by batch statistics, so a copy
    folded from its running statistics would compute something else."""
    training = next((name or "the module itself" for name, m in module.named_modules() if m.training), None)
    if training is not None:
        raise RuntimeError(f"fold_batchnorm needs {type(module).__name__} in eval mode (call .eval() first; "
                           f"{training} is in training mode): in training mode BatchNorm uses batch statistics, "
                           f"which cannot be folded")


def fold_batchnorm(module: nn.Module) -> nn.Module:
    """An inference copy of ``module`` with every BatchNorm that directly follows a convolution or linear layer in
    the same :class:`~torch.nn.Sequential` folded into that layer (the BatchNorm becomes :class:`~torch.nn.Identity`).

    ``module`` itself is not changed. The copy is for inference only: it has no BatchNorm statistics to train and
    its state dict no longer has the original keys (save and load the original). BatchNorms elsewhere (not right
    after such a layer in a Sequential, or without running statistics) are kept as they are.

    Args:
        module: a network in eval mode.

    Returns:
        the folded copy, in eval mode, on the module's device and dtype.

    Raises:
        RuntimeError: ``module`` is in training mode (its BatchNorms use batch statistics, which cannot be folded).
    """
    _require_eval(module)
    return _folded_copy(module)


def _folded_copy(module: nn.Module) -> nn.Module:
    """:func:`fold_batchnorm` once ``module`` is known to be in eval mode."""
    folded = copy.deepcopy(module)
    for sequential in [m for m in folded.modules() if isinstance(m, nn.Sequential)]:
        names = list(sequential._modules)
        for first, second in zip(names, names[1:]):
            layer, norm = sequential._modules[first], sequential._modules[second]
            if _foldable(layer, norm):
                fuse = fuse_linear_bn_weights if isinstance(layer, nn.Linear) else fuse_conv_bn_weights
                layer.weight, layer.bias = fuse(layer.weight, layer.bias, norm.running_mean, norm.running_var,
                                                norm.eps, norm.weight, norm.bias)
                sequential._modules[second] = nn.Identity()
    return folded


class FoldedBatchNorm:
    """:func:`fold_batchnorm` of a module, made again only when the module has changed since: another module, or
    any of its parameters or buffers trained, loaded or moved (tensor versions and storage). Inference asks for it
    once per clip or stream, and a copy of a 100 M-parameter renderer takes about two seconds on a CPU."""

    def __init__(self):
        self._module: Optional[nn.Module] = None
        self._key: tuple = ()
        self._folded: Optional[nn.Module] = None

    @staticmethod
    def _state(module: nn.Module) -> tuple:
        return tuple((t.data_ptr(), t._version, t.device, t.dtype) for t in chain(module.parameters(),
                                                                                  module.buffers()))

    def __call__(self, module: nn.Module) -> nn.Module:
        """The folded copy of ``module`` (which must be in eval mode)."""
        _require_eval(module)
        key = self._state(module)
        if module is not self._module or key != self._key:
            self._folded = _folded_copy(module)
            self._module, self._key = module, key
        return self._folded
