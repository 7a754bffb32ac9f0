"""Frozen third-party networks used by the metrics (SyncNet, ArcFace, FID Inception, FAN).

Every backbone is a :class:`FrozenBackbone`: parameters do not require grad and the module stays in eval mode even
when a parent calls ``.train()`` (BatchNorm must use the published running statistics).

**Backbones never belong to a model.** A network registered as a submodule of a LightningModule ends up in its
``state_dict`` (so in every checkpoint: 13.6 M parameters for SyncNet, 65 M for ArcFace) and in ``.parameters()``
(so in optimisers). Evaluators therefore hold them outside LightningModules -- in evaluation callbacks or in the
metric classes of :mod:`zoo.metrics.sync` / :mod:`zoo.metrics.identity`, which keep them in a
:class:`BackboneRef` that ``nn.Module`` does not register.

Official checkpoints load through :func:`load_exact`, which checks every key and shape against the module and
raises :class:`~zoo.errors.WeightsError` in one line on any difference. :func:`random_state_dict` makes a
well-scaled random state dict in a module's layout, for tests and the synthetic evaluator kit (no real weights can
be downloaded there).
"""
from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import nn

from zoo.errors import WeightsError

__all__ = ["FrozenBackbone", "BackboneRef", "load_exact", "module_device", "random_state_dict",
           "state_dict_layout"]

# BatchNorm's step counter: absent from pre-0.4.1 checkpoints (syncnet_v2.model) and unused in eval mode.
_OPTIONAL_SUFFIX = "num_batches_tracked"


class FrozenBackbone(nn.Module):
    """Base class: a pretrained network used only for evaluation (or as a fixed loss network).

    Subclasses call :meth:`freeze` at the end of ``__init__``. ``name`` says which published network this is; the
    metrics record it next to their scores.
    """

    name: str = "backbone"

    def freeze(self) -> "FrozenBackbone":
        """No parameter requires grad; eval mode. Returns ``self``."""
        self.requires_grad_(False)
        return self.eval()

    def train(self, mode: bool = True) -> "FrozenBackbone":
        # A parent's .train() must not switch BatchNorm/Dropout to training behaviour: always stay in eval mode.
        return super().train(False)


class BackboneRef:
    """Holds a backbone so that the owning ``nn.Module`` (e.g. a torchmetrics ``Metric``) does not register it.

    ``nn.Module.__setattr__`` registers only Modules, Parameters and Tensors; this plain object hides the network
    from ``state_dict()``, ``parameters()`` and DDP's parameter broadcast. Because ``.to()`` on the owner does not
    reach it either, the owner calls :meth:`on` with its own device before each use.
    """

    __slots__ = ("module",)

    def __init__(self, module: nn.Module):
        self.module = module

    def on(self, device: torch.device) -> nn.Module:
        """The backbone, moved to ``device`` first if needed."""
        if module_device(self.module) != torch.device(device):
            self.module.to(device)
        return self.module


def module_device(module: nn.Module) -> torch.device:
    """Device of a module's first parameter or buffer (CPU for a module with neither)."""
    for tensor in module.parameters():
        return tensor.device
    for tensor in module.buffers():
        return tensor.device
    return torch.device("cpu")


def state_dict_layout(module: nn.Module) -> dict[str, tuple[int, ...]]:
    """``{key: shape}`` of a module's state dict (parameters and persistent buffers, in order)."""
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def load_exact(module: nn.Module, state_dict: Mapping[str, torch.Tensor], what: str) -> nn.Module:
    """Load an official state dict into ``module``, requiring the exact key set and shapes.

    ``num_batches_tracked`` entries are the only keys allowed on one side and not the other (old checkpoints lack
    them; they do not affect eval-mode outputs).

    Args:
        module: the network in the official layout.
        state_dict: ``{key: tensor}`` as saved by the network's authors.
        what: name for error messages, e.g. ``"syncnet_v2.model"``.

    Raises:
        WeightsError: missing/unexpected keys or shape mismatches (the first few are named).
    """
    if not isinstance(state_dict, Mapping):
        raise WeightsError(f"{what}: expected a state dict (mapping of tensors), got {type(state_dict).__name__}")
    own = module.state_dict()
    expected = {k for k in own if not k.endswith(_OPTIONAL_SUFFIX)}
    given = {k for k in state_dict if not k.endswith(_OPTIONAL_SUFFIX)}
    problems = []
    missing, unexpected = sorted(expected - given), sorted(given - set(own))
    if missing:
        problems.append(f"{len(missing)} missing keys ({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys "
                        f"({', '.join(unexpected[:3])}{', ...' if len(unexpected) > 3 else ''})")
    def shape(value) -> object:
        return tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__

    wrong = [f"{k} {shape(state_dict[k])} != {shape(own[k])}" for k in sorted(given & expected)
             if shape(state_dict[k]) != shape(own[k])]
    if wrong:
        problems.append(f"{len(wrong)} shape mismatches ({'; '.join(wrong[:2])}{'; ...' if len(wrong) > 2 else ''})")
    if problems:
        raise WeightsError(f"{what} does not match the {type(module).__name__} layout: {', '.join(problems)}")
    module.load_state_dict({k: v for k, v in state_dict.items() if k in own}, strict=False)
    return module


def random_state_dict(module: nn.Module, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random state dict in ``module``'s layout whose activations stay O(1) through deep networks.

    Conv/linear weights ~ N(0, 2 / fan_in) (He init), biases ~ N(0, 0.01); BatchNorm weight ~ U(0.8, 1.2), bias and
    running mean ~ N(0, 0.1), running variance ~ U(0.5, 1.5); PReLU slopes 0.25; ``num_batches_tracked`` 0.
    The values are drawn from a private generator, so the same ``seed`` gives the same dict for the same layout.
    Used by tests and the synthetic evaluator kit, which cannot download the real weights.
    """
    gen = torch.Generator().manual_seed(seed)
    norm_types = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
    kinds: dict[str, str] = {}
    for prefix, sub in module.named_modules():
        base = f"{prefix}." if prefix else ""
        if isinstance(sub, norm_types):
            kinds.update({f"{base}{k}": f"norm.{k}" for k in ("weight", "bias", "running_mean", "running_var")})
        elif isinstance(sub, nn.PReLU):
            kinds[f"{base}weight"] = "prelu"
    out = {}
    for key, ref in module.state_dict().items():
        kind = kinds.get(key, "")
        shape = ref.shape
        if key.endswith(_OPTIONAL_SUFFIX):
            value = torch.zeros_like(ref)
        elif kind == "norm.weight":
            value = torch.empty(shape).uniform_(0.8, 1.2, generator=gen)
        elif kind == "norm.running_var":
            value = torch.empty(shape).uniform_(0.5, 1.5, generator=gen)
        elif kind in ("norm.bias", "norm.running_mean"):
            value = torch.randn(shape, generator=gen) * 0.1
        elif kind == "prelu":
            value = torch.full(shape, 0.25)
        elif ref.dim() >= 2:
            fan_in = math.prod(shape[1:])
            value = torch.randn(shape, generator=gen) * math.sqrt(2.0 / fan_in)
        else:
            value = torch.randn(shape, generator=gen) * 0.01
        out[key] = value.to(ref.dtype)
    return out

