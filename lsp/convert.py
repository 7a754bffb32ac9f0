"""Convert the official Live Speech Portraits checkpoints into state dicts of the zoo's LSP networks, strictly.

Files (``YuanxunLu/LiveSpeechPortraits``; Google Drive data) and what they become:

=================================  ==========  ==============================================================
file                               component   zoo network
=================================  ==========  ==============================================================
``data/APC_epoch_160.model``       ``apc``     :class:`lsp.networks.apc.APC` (mel 80, hidden 512, 3 layers)
``<id>/checkpoints/Audio2Feature.pkl``   ``mouth``   :class:`lsp.networks.audio2mouth.Audio2Mouth` (defaults)
``<id>/checkpoints/Audio2Headpose.pkl``  ``headpose``  :class:`lsp.networks.headpose.Audio2Headpose` (defaults)
``<id>/checkpoints/Feature2Face.pkl``    ``renderer``  :class:`lsp.networks.renderer.Feature2FaceGenerator`
=================================  ==========  ==============================================================

Key handling, the only changes made to a file's keys:

- ``module.`` (DataParallel; the three per-subject files have it on every key) is stripped where present. The
  official CPU loader strips ``key[7:]`` blindly and loads with ``strict=False``, so mismatches went unnoticed there.
- ``netG.`` (the ``Feature2Face_G`` wrapper around the generator) is stripped from renderer keys.
- APC: the file is an ``APCModel`` state dict (Chung et al.): ``rnns.{0,1,2}.*`` plus the prediction head
  ``postnet.layer.{weight,bias}``, a 1x1 ``Conv1d`` (weight [80, 512, 1]). LSP ignores the head; the zoo's
  ``APC.postnet`` is the equivalent ``Linear(512, 80)``, so the head maps onto it with the kernel axis squeezed
  (``postnet.{weight,bias}`` already in Linear form are accepted as well).
- No key is dropped. A BatchNorm ``*.num_batches_tracked`` missing from a file (torch < 0.4.1 checkpoints) is filled
  with 0, as ``load_state_dict`` itself does for old files; it is a counter unused at inference.

Everything else must match exactly: a missing key, an unexpected key or a shape mismatch raises
:class:`~zoo.errors.WeightsError` with one line naming the file and the first offending keys. Files are read with
``torch.load(weights_only=True)``; ``convert_official(sha256={component: hex})`` checks pinned hashes first (the
release publishes none).

:func:`official_layout_shapes` / :func:`official_layout_state_dict` enumerate the official layouts from the official
module structure (written out here independently of the zoo modules); they are test helpers that stand in for the
real files, which cannot be redistributed.
"""
from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Optional, Union

import torch
from torch import nn

from lsp.networks.apc import APC
from lsp.networks.audio2mouth import Audio2Mouth
from lsp.networks.headpose import Audio2Headpose
from lsp.networks.renderer import Feature2FaceGenerator
from zoo.errors import WeightsError
from zoo.weights import WeightFile, load_torch_file, verify

__all__ = ["OFFICIAL_FILES", "convert_official", "detect_renderer_config", "load_official_into",
           "official_layout_shapes", "official_layout_state_dict"]

PathLike = Union[str, "os.PathLike[str]"]
Shapes = dict[str, tuple[int, ...]]

OFFICIAL_FILES = {"apc": "APC_epoch_160.model", "mouth": "Audio2Feature.pkl", "headpose": "Audio2Headpose.pkl",
                  "renderer": "Feature2Face.pkl"}
OFFICIAL_SOURCE = "the LiveSpeechPortraits release (YuanxunLu/LiveSpeechPortraits, Google Drive data)"
# Prefixes the official files carry on every key (see the module docstring).
_FILE_PREFIX = {"apc": "", "mouth": "module.", "headpose": "module.", "renderer": "module.netG."}
_SHOWN = 3  # offending keys named in an error message


# ----------------------------------------------------------------------------------------------------------------
# Official layouts, written from the official module definitions (models/networks.py, audio2feature.py,
# audio2headpose.py, the APC repository's apc_model.py), without the file prefixes.
# ----------------------------------------------------------------------------------------------------------------

def _bn(out: Shapes, prefix: str, c: int) -> None:
    for name in ("weight", "bias", "running_mean", "running_var"):
        out[prefix + name] = (c,)
    out[prefix + "num_batches_tracked"] = ()


def _param(out: Shapes, prefix: str, weight: tuple[int, ...], bias: bool = True) -> None:
    out[prefix + "weight"] = weight
    if bias:
        out[prefix + "bias"] = (weight[0],)


def _downsample(out: Shapes, prefix: str, d_in: int, d_out: int) -> None:
    """Linear, BatchNorm1d, LeakyReLU, Linear at Sequential indices 0, 1, (2), 3."""
    _param(out, prefix + "0.", (d_out, d_in))
    _bn(out, prefix + "1.", d_out)
    _param(out, prefix + "3.", (d_out, d_out))


def _apc_layout(mel_dim: int = 80, hidden_size: int = 512, num_layers: int = 3) -> Shapes:
    out: Shapes = {}
    for i in range(num_layers):
        d_in = mel_dim if i == 0 else hidden_size
        out.update({f"rnns.{i}.weight_ih_l0": (3 * hidden_size, d_in), f"rnns.{i}.weight_hh_l0": (3 * hidden_size,
                    hidden_size), f"rnns.{i}.bias_ih_l0": (3 * hidden_size,), f"rnns.{i}.bias_hh_l0": (3 * hidden_size,)})
    _param(out, "postnet.layer.", (mel_dim, hidden_size, 1))
    return out


def _mouth_layout(apc_dim: int = 512, hidden_size: int = 256, num_layers: int = 3, num_points: int = 25,
                  fc_size: int = 512) -> Shapes:
    out: Shapes = {}
    _downsample(out, "downsample.", 2 * apc_dim, apc_dim)
    for k in range(num_layers):
        d_in = apc_dim if k == 0 else hidden_size
        out.update({f"LSTM.weight_ih_l{k}": (4 * hidden_size, d_in), f"LSTM.weight_hh_l{k}": (4 * hidden_size,
                    hidden_size), f"LSTM.bias_ih_l{k}": (4 * hidden_size,), f"LSTM.bias_hh_l{k}": (4 * hidden_size,)})
    _param(out, "fc.0.", (fc_size, hidden_size))
    _bn(out, "fc.1.", fc_size)
    _param(out, "fc.3.", (fc_size, fc_size))
    _bn(out, "fc.4.", fc_size)
    _param(out, "fc.6.", (3 * num_points, fc_size))
    return out


def _headpose_layout(apc_dim: int = 512, cond_channels: int = 512, input_channels: int = 12,
                     output_channels: int = 25, residual_layers: int = 7, residual_blocks: int = 2,
                     dilation_channels: int = 128, residual_channels: int = 128, skip_channels: int = 256,
                     kernel_size: int = 2, use_bias: bool = True) -> Shapes:
    out: Shapes = {}
    _downsample(out, "audio_downsample.", 2 * apc_dim, cond_channels)
    _param(out, "WaveNet.start_conv1.", (residual_channels, input_channels, 1))
    _param(out, "WaveNet.start_conv2.", (residual_channels, residual_channels, 1))
    for i in range(residual_layers * residual_blocks):
        p = f"WaveNet.residual_blocks.{i}."
        _param(out, p + "filter_conv.", (dilation_channels, residual_channels, kernel_size), use_bias)
        _param(out, p + "gate_conv.", (dilation_channels, residual_channels, kernel_size), use_bias)
        _param(out, p + "residual_conv.", (residual_channels, dilation_channels, 1), use_bias)
        _param(out, p + "skip_conv.", (skip_channels, dilation_channels, 1), use_bias)
        _param(out, p + "cond_filter_conv.", (dilation_channels, cond_channels, 1))
        _param(out, p + "cond_gate_conv.", (dilation_channels, cond_channels, 1))
    _param(out, "WaveNet.end_conv_1.", (output_channels, skip_channels, 1))
    _param(out, "WaveNet.end_conv_2.", (output_channels, output_channels, 1))
    return out


def _renderer_layout(input_nc: int = 13, output_nc: int = 3, num_downs: int = 8, ngf: int = 64,
                     blocks_per_level: int = 2) -> Shapes:
    out: Shapes = {}

    def res(prefix: str, c: int) -> None:  # ResidualBlock: block.{0 conv, 1 BN, 2 ReLU, 3 conv, 4 BN}
        _param(out, prefix + "block.0.", (c, c, 3, 3), bias=False)
        _bn(out, prefix + "block.1.", c)
        _param(out, prefix + "block.3.", (c, c, 3, 3), bias=False)
        _bn(out, prefix + "block.4.", c)

    inner = [ngf * min(2 ** i, 8) for i in range(num_downs)]
    prefix = "model.model."
    for level in range(num_downs):
        outermost, innermost = level == 0, level == num_downs - 1
        outer = output_nc if outermost else inner[level - 1]
        _param(out, prefix + "0.", (inner[level], input_nc if outermost else outer, 3, 3), bias=False)
        idx = 1
        if not (outermost or innermost):
            _bn(out, prefix + "1.", inner[level])
            idx = 2
        idx += 1  # ReLU
        for _ in range(blocks_per_level):
            res(f"{prefix}{idx}.", inner[level])
            idx += 1
        sub = idx
        idx += 1 if innermost else 2  # [submodule], Upsample
        _param(out, f"{prefix}{idx}.", (outer, inner[level] * (1 if innermost else 2), 3, 3), bias=False)
        if not outermost:
            _bn(out, f"{prefix}{idx + 1}.", outer)
            for j in range(blocks_per_level):  # after BN and ReLU
                res(f"{prefix}{idx + 3 + j}.", outer)
        prefix = f"{prefix}{sub}.model."
    return out


_LAYOUTS: dict[str, Callable[..., Shapes]] = {"apc": _apc_layout, "mouth": _mouth_layout,
                                               "headpose": _headpose_layout, "renderer": _renderer_layout}


def official_layout_shapes(component: str, **cfg: Any) -> Shapes:
    """Keys and shapes of an official file, with its prefixes (test helper).

    Args:
        component: ``"apc"``, ``"mouth"``, ``"headpose"`` or ``"renderer"``.
        cfg: the zoo network's constructor arguments (same names; official defaults).
    """
    if component not in _LAYOUTS:
        raise ValueError(f"unknown LSP component {component!r}; known: {', '.join(_LAYOUTS)}")
    return {_FILE_PREFIX[component] + k: v for k, v in _LAYOUTS[component](**cfg).items()}


def official_layout_state_dict(component: str, seed: int = 0, **cfg: Any) -> dict[str, torch.Tensor]:
    """A random state dict in the official file layout (test helper standing in for the real files).

    Floats are N(0, 1/fan_in) (BatchNorm variances positive); ``num_batches_tracked`` is an int64 scalar.
    """
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key, shape in official_layout_shapes(component, **cfg).items():
        if key.endswith("num_batches_tracked"):
            out[key] = torch.tensor(7, dtype=torch.long)
        elif key.endswith("running_var"):
            out[key] = torch.rand(shape, generator=gen) + 0.5
        else:
            fan_in = math.prod(shape[1:]) if len(shape) > 1 else 1
            out[key] = torch.randn(shape, generator=gen) / math.sqrt(fan_in)
    return out


# ----------------------------------------------------------------------------------------------------------------
# Conversion
# ----------------------------------------------------------------------------------------------------------------

def _load(path: PathLike, component: str, sha256: Optional[str] = None) -> tuple[Path, dict[str, torch.Tensor]]:
    path = Path(path)
    label = f"official LSP {component} weights file {path}"
    if not path.is_file():
        raise WeightsError(f"{label} not found (expected the official {OFFICIAL_FILES[component]})")
    if sha256 is not None:
        digest = str(sha256).strip().lower()
        if not re.fullmatch(r"[0-9a-f]{64}", digest):    # an empty pin would silently verify nothing
            raise WeightsError(f"sha256 of the official LSP {component} weights: expected 64 hex digits, "
                               f"got {sha256!r}")
        verify(path, WeightFile(name=f"official LSP {component}", filename=OFFICIAL_FILES[component],
                                sha256=digest, source=OFFICIAL_SOURCE, used_by="lsp.convert"))
    obj = load_torch_file(path, label)
    if not isinstance(obj, Mapping):
        raise WeightsError(f"{label} is not a state dict (got {type(obj).__name__})")
    bad = [str(k) for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise WeightsError(f"{label} has non-tensor entries: {', '.join(bad[:_SHOWN])}")
    return path, dict(obj)


def _strip(state_dict: Mapping[str, torch.Tensor], prefix: str, source: str) -> dict[str, torch.Tensor]:
    """``state_dict`` with ``prefix`` (a DataParallel or wrapper name) removed from its keys; a key it holds both
    with and without the prefix is refused, since either tensor could be the one meant."""
    stripped: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        name = key.removeprefix(prefix)
        if name in stripped:
            raise WeightsError(f"{source} holds both {prefix}{name} and {name}: cannot tell which one to load")
        stripped[name] = value
    return stripped


def _shapes_of(factory: Callable[[], nn.Module]) -> Shapes:
    """Expected keys/shapes of a zoo network, built on the meta device (no memory, no init cost)."""
    with torch.device("meta"):
        net = factory()
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}


def _first(keys: list[str]) -> str:
    more = f" (+{len(keys) - _SHOWN} more)" if len(keys) > _SHOWN else ""
    return ", ".join(keys[:_SHOWN]) + more


def _match(state_dict: dict[str, torch.Tensor], expected: Shapes, label: str) -> dict[str, torch.Tensor]:
    """``state_dict`` in ``expected``'s key order, after the strict key/shape check (raises WeightsError)."""
    sd = dict(state_dict)
    for key in expected:
        if key.endswith(".num_batches_tracked") and key not in sd:
            sd[key] = torch.tensor(0, dtype=torch.long)
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    wrong = [f"{k} {tuple(sd[k].shape)} vs {expected[k]}" for k in expected
             if k in sd and tuple(sd[k].shape) != expected[k]]
    problems = [f"{what} {_first(keys)}" for what, keys in
                (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatch", wrong)) if keys]
    if problems:
        raise WeightsError(f"{label}: {'; '.join(problems)}")
    return {k: sd[k] for k in expected}


def _convert_apc(path: PathLike, sha256: Optional[str]) -> dict[str, torch.Tensor]:
    path, sd = _load(path, "apc", sha256)
    sd = _strip(sd, "module.", str(path))
    for name in ("weight", "bias"):
        if f"postnet.layer.{name}" in sd:
            if f"postnet.{name}" in sd:
                raise WeightsError(f"{path} has both postnet.layer.{name} and postnet.{name}")
            value = sd.pop(f"postnet.layer.{name}")
            # Conv1d(kernel 1) weight [out, in, 1] is the Linear weight [out, in]; other shapes fail the check.
            sd[f"postnet.{name}"] = value[..., 0] if value.dim() == 3 and value.shape[-1] == 1 else value
    return _match(sd, _shapes_of(APC), f"{path} (APC)")


def detect_renderer_config(state_dict: Mapping[str, torch.Tensor], source: str = "state dict") -> dict[str, int]:
    """Generator configuration of a Feature2Face state dict (official or converted; prefixes are ignored).

    Returns:
        ``{"input_nc", "output_nc", "num_downs", "ngf", "blocks_per_level"}`` for
        :class:`~lsp.networks.renderer.Feature2FaceGenerator`; ``blocks_per_level`` 2 is the official ``large``
        generator, 1 the ``normal`` one.

    Raises:
        WeightsError: the keys do not describe a residual U-Net (``source`` names it in the message).
    """
    sd = _strip(_strip(state_dict, "module.", source), "netG.", source)
    try:
        ngf, input_nc = sd["model.model.0.weight"].shape[:2]
        blocks = 0
        while f"model.model.{2 + blocks}.block.0.weight" in sd:
            blocks += 1
        prefix, sub, levels = "model.model.", 2 + blocks, 1
        while f"{prefix}{sub}.model.0.weight" in sd:  # descend into the nested levels
            prefix, sub, levels = f"{prefix}{sub}.model.", 3 + blocks, levels + 1
        output_nc = sd[f"model.model.{4 + blocks}.weight"].shape[0]
    except (KeyError, ValueError):
        raise WeightsError(f"{source}: not a Feature2Face residual U-Net state dict "
                           f"(no model.model.0.weight / outermost up conv)") from None
    if blocks == 0 or levels < 2:
        raise WeightsError(f"{source}: cannot find the residual blocks / inner levels of a Feature2Face generator")
    return {"input_nc": int(input_nc), "output_nc": int(output_nc), "num_downs": levels, "ngf": int(ngf),
            "blocks_per_level": blocks}


def _convert_simple(path: PathLike, component: str, factory: Callable[[], nn.Module], what: str,
                    sha256: Optional[str]) -> dict[str, torch.Tensor]:
    path, sd = _load(path, component, sha256)
    return _match(_strip(sd, "module.", str(path)), _shapes_of(factory), f"{path} ({what})")


def _convert_renderer(path: PathLike, sha256: Optional[str]) -> dict[str, torch.Tensor]:
    path, sd = _load(path, "renderer", sha256)
    sd = _strip(_strip(sd, "module.", str(path)), "netG.", str(path))
    cfg = detect_renderer_config(sd, source=str(path))
    return _match(sd, _shapes_of(lambda: Feature2FaceGenerator(**cfg)), f"{path} (Feature2Face {cfg})")


def convert_official(apc: PathLike | None = None, audio2feature: PathLike | None = None,
                     audio2headpose: PathLike | None = None, feature2face: PathLike | None = None,
                     sha256: Mapping[str, str] | None = None) -> dict[str, dict[str, torch.Tensor]]:
    """Load and strictly convert any subset of the official files.

    Args:
        apc: ``APC_epoch_160.model``.
        audio2feature: ``Audio2Feature.pkl`` (LSTM mouth decoder).
        audio2headpose: ``Audio2Headpose.pkl``.
        feature2face: ``Feature2Face.pkl`` (``large`` or ``normal``; see :func:`detect_renderer_config`).
        sha256: expected SHA256 (hex) per component (``"apc"``, ``"mouth"``, ``"headpose"``, ``"renderer"``),
            checked before a file is unpickled. The release publishes no hashes (the files are per subject, on
            Google Drive), so pin the ones you have verified (``zoo.weights.sha256_of``) and a later run refuses a
            corrupt or swapped file; components left out are not hashed.

    Returns:
        ``{"apc" | "mouth" | "headpose" | "renderer": state_dict}`` for the files given, each ready for
        ``load_state_dict(strict=True)`` on the zoo network (official defaults; the renderer's configuration comes
        from :func:`detect_renderer_config`).

    Raises:
        WeightsError: a file is missing, unreadable with ``weights_only=True``, or does not match key for key.
    """
    hashes = dict(sha256 or {})
    unknown = sorted(set(hashes) - set(OFFICIAL_FILES))
    if unknown:
        raise WeightsError(f"sha256 given for unknown LSP component(s) {', '.join(unknown)}; known: "
                           f"{', '.join(OFFICIAL_FILES)}")
    out: dict[str, dict[str, torch.Tensor]] = {}
    if apc is not None:
        out["apc"] = _convert_apc(apc, hashes.get("apc"))
    if audio2feature is not None:
        out["mouth"] = _convert_simple(audio2feature, "mouth", Audio2Mouth, "Audio2Feature LSTM decoder",
                                       hashes.get("mouth"))
    if audio2headpose is not None:
        out["headpose"] = _convert_simple(audio2headpose, "headpose", Audio2Headpose, "Audio2Headpose",
                                          hashes.get("headpose"))
    if feature2face is not None:
        out["renderer"] = _convert_renderer(feature2face, hashes.get("renderer"))
    return out


def load_official_into(model_components: Mapping[str, nn.Module],
                       converted: Mapping[str, Mapping[str, torch.Tensor]]) -> list[str]:
    """``load_state_dict(strict=True)`` every converted component that has a module in ``model_components``.

    Returns:
        the names loaded, sorted. Components present in only one of the two mappings are left alone.

    Raises:
        WeightsError: a module's configuration does not match its converted weights (one line, first keys).
    """
    loaded = []
    for name in sorted(set(model_components) & set(converted)):
        module = model_components[name]
        if isinstance(module, Feature2FaceGenerator) and module.input_skip:
            raise WeightsError(f"converted LSP {name} weights: the official Feature2Face has no input skip; build "
                               "the renderer with input_skip=False (model.renderer.input_skip=false)")
        expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
        sd = _match(dict(converted[name]), expected, f"converted LSP {name} weights vs {type(module).__name__}")
        module.load_state_dict(sd, strict=True)
        loaded.append(name)
    return loaded
