"""VGG19 perceptual (and optional Gram style) loss on frozen ImageNet features, pix2pixHD/LSP slices.

Network: torchvision's ``vgg19().features[:30]`` -- conv1_1 ... relu5_1, the five pix2pixHD slices ending at
relu1_1, relu2_1, relu3_1, relu4_1 and relu5_1 (feature indices 1, 6, 11, 20, 29). Weights: torchvision's ImageNet
file ``vgg19-dcbb9e9d.pth`` read through :mod:`zoo.weights` (SHA256-prefix check, ``weights_only`` loading, a
one-line :class:`~zoo.errors.WeightsError` naming the file and its source when it is missing; nothing is ever
downloaded), or an explicit state dict in torchvision's full ``vgg19`` layout. The network is built on the meta
device and every tensor is assigned from that state dict, so it can never run on random weights.

Inputs are images in ``[-1, 1]``; they are mapped to ``[0, 1]`` and normalised with the ImageNet mean/std the
weights were trained with. (pix2pixHD and LSP feed ``[-1, 1]`` images to VGG unnormalised; loss magnitudes differ.)

State-dict choice: the loss is an ordinary submodule of its owner (a LightningModule), so ``.to()``, precision
plugins and ``.half()`` reach the VGG like any other layer, and its parameters (frozen, ``requires_grad=False``)
are visible as non-trainable in model summaries. But its 12.9 M published, verified parameters (52 MB) are kept OUT
of the owner's ``state_dict``: a state-dict post-hook drops the ``features.*`` keys, and a load pre-hook fills them
back in from the loaded network, so checkpoints stay small, ``load_state_dict(strict=True)`` works, and a
checkpoint can never replace the verified weights. Consequence: building the owner (e.g. ``load_from_checkpoint``)
needs the weights file; owners that must load without it should build this loss only for training.

Frozen: ``train()`` always leaves the module in eval mode. Optimisers built from ``owner.parameters()`` skip the VGG
tensors since they never get a gradient; prefer building them from the generator's parameters.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zoo import weights as zoo_weights
from zoo.errors import WeightsError

__all__ = ["VGG19_SLICE_ENDS", "VGG19_WEIGHTS_NAME", "VGG19PerceptualLoss"]

VGG19_WEIGHTS_NAME = "vgg19"                 # zoo.weights registry key of vgg19-dcbb9e9d.pth
VGG19_SLICE_ENDS = (1, 6, 11, 20, 29)        # torchvision features indices of relu1_1, relu2_1, ..., relu5_1
_VGG19_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512)  # up to conv5_1
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
_PREFIX = "features."


def _vgg19_trunk(device: Any = "meta") -> nn.Sequential:
    """torchvision ``vgg19().features[:30]`` with the same indices (so keys are ``{i}.weight``/``{i}.bias``)."""
    layers: list[nn.Module] = []
    channels = 3
    for item in _VGG19_CFG:
        if item == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(channels, item, kernel_size=3, padding=1, device=device), nn.ReLU(inplace=True)]
            channels = item
    return nn.Sequential(*layers)


def _check_vgg19_layout(state_dict: Mapping[str, Tensor], what: str) -> None:
    """Require torchvision's complete ``vgg19`` layout (``features.*`` and ``classifier.*``, all shapes)."""
    import torchvision

    if not isinstance(state_dict, Mapping):
        raise WeightsError(f"{what}: expected a state dict (mapping of tensors), got {type(state_dict).__name__}")
    with torch.device("meta"):   # the layout only: no 550 MB allocation, no random initialisation
        expected = {k: tuple(v.shape) for k, v in torchvision.models.vgg19(weights=None).state_dict().items()}
    problems = []
    missing, unexpected = sorted(set(expected) - set(state_dict)), sorted(set(state_dict) - set(expected))
    if missing:
        problems.append(f"{len(missing)} missing keys ({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys ({', '.join(unexpected[:3])}"
                        f"{', ...' if len(unexpected) > 3 else ''})")
    wrong = [f"{k} {tuple(getattr(state_dict[k], 'shape', ()))} != {expected[k]}" for k in sorted(expected)
             if k in state_dict and tuple(getattr(state_dict[k], "shape", ())) != expected[k]]
    if wrong:
        problems.append(f"{len(wrong)} shape mismatches ({'; '.join(wrong[:2])}{'; ...' if len(wrong) > 2 else ''})")
    if problems:
        raise WeightsError(f"{what} is not a torchvision vgg19 state dict: {', '.join(problems)}")


def _gram(features: Tensor) -> Tensor:
    """Per-sample Gram matrix ``F F^T / (C H W)``: ``[B, C, H, W] -> [B, C, C]``, in float32.

    Autocast is disabled because half-precision products summed over ``H W`` positions can overflow.
    """
    b, c, h, w = features.shape
    with torch.autocast(device_type=features.device.type, enabled=False):
        flat = features.float().reshape(b, c, h * w)
        return torch.bmm(flat, flat.transpose(1, 2)) / (c * h * w)


class VGG19PerceptualLoss(nn.Module):
    """``sum_i w_i L1(phi_i(fake), phi_i(real))`` over VGG19 relu{1..5}_1, plus an optional Gram style term.

    Args:
        weights_dir: directory holding ``vgg19-dcbb9e9d.pth`` (default: :func:`zoo.weights.get_weights_dir`).
            Ignored when ``state_dict`` is given.
        layer_weights: ``w_1 .. w_5`` for relu1_1 ... relu5_1 (LSP uses 1 each, pix2pixHD 1/32, 1/16, 1/8, 1/4,
            1). Trailing zero weights stop the forward pass early when ``style_weight`` is 0.
        style_weight: weight of the style term ``sum_i MSE(G_i(fake), G_i(real))`` over all five layers, with
            per-sample Gram matrices ``G = F F^T / (C H W)``. LSP's style loss is ``3e7 * MSE`` of a Gram matrix
            normalised by ``B C H W`` and mixing the batch; for batch size 1 both agree with ``style_weight=3e7``.
        state_dict: an explicit state dict in torchvision's full ``vgg19`` layout (tests, custom weights) instead
            of the file. See also :meth:`from_state_dict`.

    ``forward(fake, real) -> Tensor`` (scalar): ``fake``, ``real`` are ``[B, 3, H, W]`` images in ``[-1, 1]``,
    ``H, W >= 16``. Gradients flow into ``fake`` only (the real features are computed without autograd).
    :meth:`loss_terms` returns the perceptual and style parts separately for logging.

    Raises:
        WeightsError: the weights file is missing or mismatching, or the state dict is not in vgg19 layout.
    """

    def __init__(self, weights_dir: zoo_weights.PathLike | None = None,
                 layer_weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0, 1.0), style_weight: float = 0.0, *,
                 state_dict: Mapping[str, Tensor] | None = None):
        super().__init__()
        if len(layer_weights) != len(VGG19_SLICE_ENDS):
            raise ValueError(f"layer_weights needs {len(VGG19_SLICE_ENDS)} values (relu1_1 ... relu5_1), "
                             f"got {len(layer_weights)}")
        if style_weight < 0:
            raise ValueError(f"style_weight must be >= 0, got {style_weight}")
        self.layer_weights = tuple(float(w) for w in layer_weights)
        self.style_weight = float(style_weight)
        if state_dict is None:
            what = f"{zoo_weights.WEIGHTS[VGG19_WEIGHTS_NAME].filename} ({VGG19_WEIGHTS_NAME})"
            state_dict = zoo_weights.load_state_dict(VGG19_WEIGHTS_NAME, weights_dir)
        else:
            what = "the given VGG19 state dict"
        _check_vgg19_layout(state_dict, what)
        trunk = _vgg19_trunk("meta")
        own = {k: state_dict[_PREFIX + k].detach().to("cpu", torch.float32).clone() for k in trunk.state_dict()}
        trunk.load_state_dict(own, strict=True, assign=True)   # meta -> real: every tensor comes from the dict
        self.features = trunk
        self.features.requires_grad_(False)
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        # Deepest slice needed: the style term uses all five; otherwise stop after the last non-zero weight.
        used = [i for i, w in enumerate(self.layer_weights) if w != 0.0]
        self._num_slices = len(VGG19_SLICE_ENDS) if self.style_weight > 0 or not used else used[-1] + 1
        post_hook = getattr(self, "register_state_dict_post_hook", None) or self._register_state_dict_hook
        post_hook(_drop_vgg_keys)
        if hasattr(self, "register_load_state_dict_pre_hook"):
            self.register_load_state_dict_pre_hook(_fill_vgg_keys)
        else:   # torch < 2.5
            self._register_load_state_dict_pre_hook(_fill_vgg_keys, with_module=True)
        self.eval()

    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, Tensor], **kwargs: Any) -> VGG19PerceptualLoss:
        """Build from an explicit torchvision-``vgg19``-layout state dict (no file read)."""
        return cls(state_dict=state_dict, **kwargs)

    def train(self, mode: bool = True) -> VGG19PerceptualLoss:
        # A fixed loss network: a parent's .train() must not change it (no dropout/BN here today, but the
        # contract "always eval" is what owners and tests rely on).
        return super().train(False)

    def extra_repr(self) -> str:
        return f"layer_weights={self.layer_weights}, style_weight={self.style_weight}"

    def extract(self, images: Tensor) -> list[Tensor]:
        """VGG features of ``[B, 3, H, W]`` images in ``[-1, 1]``: relu1_1 ``[B, 64, H, W]``, relu2_1
        ``[B, 128, H/2, W/2]``, relu3_1 ``[B, 256, H/4, W/4]``, relu4_1 ``[B, 512, H/8, W/8]``, relu5_1
        ``[B, 512, H/16, W/16]`` (the first ``n`` slices actually needed by the weights)."""
        x = ((images + 1.0) * 0.5 - self.mean) / self.std
        ends = VGG19_SLICE_ENDS[:self._num_slices]
        out = []
        for i, layer in enumerate(self.features[:ends[-1] + 1]):
            x = layer(x)
            if i in ends:
                out.append(x)
        return out

    def _check(self, fake: Tensor, real: Tensor) -> None:
        if fake.shape != real.shape or fake.dim() != 4 or fake.shape[1] != 3:
            raise ValueError(f"VGG19PerceptualLoss expects fake and real of the same shape [B, 3, H, W], got "
                             f"{tuple(fake.shape)} and {tuple(real.shape)}")
        if min(fake.shape[-2:]) < 16:
            raise ValueError(f"VGG19PerceptualLoss needs images of at least 16x16 (four 2x poolings before "
                             f"relu5_1), got {fake.shape[-2]}x{fake.shape[-1]}")

    def loss_terms(self, fake: Tensor, real: Tensor) -> tuple[Tensor, Tensor]:
        """``(perceptual, style)`` scalars, already weighted; ``style`` is 0 when ``style_weight`` is 0."""
        self._check(fake, real)
        fake_features = self.extract(fake)
        with torch.no_grad():   # targets only: no graph through the real branch (half the activation memory)
            real_features = self.extract(real)
        perceptual = fake.new_zeros(())
        for w, f, r in zip(self.layer_weights, fake_features, real_features):
            if w != 0.0:
                perceptual = perceptual + w * F.l1_loss(f, r)
        style = fake.new_zeros(())
        if self.style_weight > 0:
            for f, r in zip(fake_features, real_features):
                style = style + F.mse_loss(_gram(f), _gram(r))
            style = self.style_weight * style
        return perceptual, style

    def forward(self, fake: Tensor, real: Tensor) -> Tensor:
        perceptual, style = self.loss_terms(fake, real)
        return perceptual + style


def _drop_vgg_keys(module: nn.Module, state_dict: dict, prefix: str, local_metadata: Any) -> None:
    """State-dict post-hook: remove the VGG weights (published, verified, 52 MB) from the owner's state dict."""
    for key in [k for k in state_dict if k.startswith(prefix + _PREFIX)]:
        del state_dict[key]


def _fill_vgg_keys(module: nn.Module, state_dict: dict, prefix: str, *args: Any) -> None:
    """Load pre-hook: supply the VGG weights from the loaded network, so strict loading of a checkpoint without
    them succeeds and a checkpoint that has them cannot replace the verified weights."""
    for key, value in module.features.state_dict().items():
        state_dict[prefix + _PREFIX + key] = value
