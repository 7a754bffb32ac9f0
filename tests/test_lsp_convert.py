"""Official LSP checkpoint conversion: layouts, strict key/shape checks, prefixes, one-line errors."""
from __future__ import annotations

import pytest
import torch

from lsp.convert import (
    convert_official,
    detect_renderer_config,
    load_official_into,
    official_layout_shapes,
    official_layout_state_dict,
)
from lsp.networks.apc import APC
from lsp.networks.audio2mouth import Audio2Mouth
from lsp.networks.headpose import Audio2Headpose
from lsp.networks.renderer import Feature2FaceGenerator
from zoo.errors import WeightsError
from zoo.weights import sha256_of

from helpers import one_line_error

SMALL_RENDERER = {"num_downs": 5, "ngf": 4, "blocks_per_level": 1}


def _meta_shapes(factory):
    with torch.device("meta"):
        net = factory()
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}


def _unprefixed(shapes, prefix):
    assert all(k.startswith(prefix) for k in shapes)
    return {k[len(prefix):]: v for k, v in shapes.items()}


@pytest.fixture(scope="module")
def mouth_sd():
    return official_layout_state_dict("mouth", seed=1)


def _save(tmp_path, name, sd):
    path = tmp_path / name
    torch.save(sd, path)
    return path


# ------------------------------------------------------------------------------------------ official layouts

def test_official_layout_spot_checks():
    """Keys and shapes read off the official source, independent of both the zoo modules and the layout helper."""
    apc = official_layout_shapes("apc")
    assert apc["rnns.0.weight_ih_l0"] == (1536, 80) and apc["rnns.2.weight_hh_l0"] == (1536, 512)
    assert apc["postnet.layer.weight"] == (80, 512, 1)
    mouth = official_layout_shapes("mouth")
    assert mouth["module.downsample.0.weight"] == (512, 1024) and "module.downsample.1.running_var" in mouth
    assert mouth["module.LSTM.weight_ih_l2"] == (1024, 256) and mouth["module.fc.6.weight"] == (75, 512)
    hp = official_layout_shapes("headpose")
    assert hp["module.audio_downsample.3.weight"] == (512, 512)
    assert hp["module.WaveNet.residual_blocks.13.filter_conv.weight"] == (128, 128, 2)
    assert hp["module.WaveNet.residual_blocks.0.cond_gate_conv.weight"] == (128, 512, 1)
    assert hp["module.WaveNet.residual_blocks.6.skip_conv.weight"] == (256, 128, 1)
    assert hp["module.WaveNet.start_conv1.weight"] == (128, 12, 1) and hp["module.WaveNet.end_conv_2.bias"] == (25,)
    assert "module.WaveNet.residual_blocks.14.filter_conv.weight" not in hp
    ren = official_layout_shapes("renderer")
    assert ren["module.netG.model.model.0.weight"] == (64, 13, 3, 3)
    assert ren["module.netG.model.model.6.weight"] == (3, 128, 3, 3)  # outermost up conv after 2 blocks + sub
    assert ren["module.netG.model.model.4.model.1.running_mean"] == (128,)  # second level's down BatchNorm
    assert ren["module.netG.model.model.4.model.11.block.4.weight"] == (64,)  # its last up residual block


@pytest.mark.parametrize("component,cfg,factory,prefix", [
    ("apc", {}, APC, ""), ("mouth", {}, Audio2Mouth, "module."), ("headpose", {}, Audio2Headpose, "module."),
    ("renderer", {}, Feature2FaceGenerator, "module.netG."),  # large (May)
    ("renderer", {"blocks_per_level": 1}, lambda: Feature2FaceGenerator(blocks_per_level=1), "module.netG.")])
def test_zoo_networks_have_the_official_layout(component, cfg, factory, prefix):
    official = _unprefixed(official_layout_shapes(component, **cfg), prefix)
    if component == "apc":  # the Conv1d head becomes the zoo's Linear postnet
        official = {k.replace("postnet.layer.", "postnet."): v[:2] if k.endswith("weight") and len(v) == 3 else v
                    for k, v in official.items()}
    assert official == _meta_shapes(factory)


# --------------------------------------------------------------------------------------------- round trips

def test_round_trip_all_four(tmp_path):
    files = {"apc": official_layout_state_dict("apc", seed=0),
             "mouth": official_layout_state_dict("mouth", seed=1),
             "headpose": official_layout_state_dict("headpose", seed=2),
             "renderer": official_layout_state_dict("renderer", seed=3, **SMALL_RENDERER)}
    paths = {name: _save(tmp_path, f"{name}.pkl", sd) for name, sd in files.items()}
    converted = convert_official(apc=paths["apc"], audio2feature=paths["mouth"], audio2headpose=paths["headpose"],
                                 feature2face=paths["renderer"])
    assert set(converted) == {"apc", "mouth", "headpose", "renderer"}
    assert not any(k.startswith(("module.", "netG.")) for sd in converted.values() for k in sd)
    modules = {"apc": APC(), "mouth": Audio2Mouth(), "headpose": Audio2Headpose(),
               "renderer": Feature2FaceGenerator(**detect_renderer_config(converted["renderer"]))}
    assert load_official_into(modules, converted) == ["apc", "headpose", "mouth", "renderer"]
    assert torch.equal(modules["apc"].rnns[2].weight_hh_l0, files["apc"]["rnns.2.weight_hh_l0"])
    assert torch.equal(modules["apc"].postnet.weight, files["apc"]["postnet.layer.weight"][..., 0])
    assert torch.equal(modules["mouth"].fc[4].running_var, files["mouth"]["module.fc.4.running_var"])
    assert torch.equal(modules["headpose"].WaveNet.residual_blocks[13].cond_gate_conv.bias,
                       files["headpose"]["module.WaveNet.residual_blocks.13.cond_gate_conv.bias"])
    assert torch.equal(modules["renderer"].model.model[3].model[1].running_mean,
                       files["renderer"]["module.netG.model.model.3.model.1.running_mean"])
    # The converted APC predicts exactly what the official Conv1d head would.
    feats, _ = modules["apc"].encode(torch.randn(1, 5, 80))
    conv = torch.nn.functional.conv1d(feats.transpose(1, 2), files["apc"]["postnet.layer.weight"],
                                      files["apc"]["postnet.layer.bias"]).transpose(1, 2)
    torch.testing.assert_close(modules["apc"].postnet(feats), conv)


@pytest.mark.parametrize("blocks", [1, 2])
def test_detect_renderer_config(blocks):
    cfg = {"input_nc": 13, "output_nc": 3, "num_downs": 6, "ngf": 4, "blocks_per_level": blocks}
    sd = official_layout_state_dict("renderer", **cfg)
    assert detect_renderer_config(sd) == cfg
    assert detect_renderer_config({k.replace("module.netG.", ""): v for k, v in sd.items()}) == cfg
    with pytest.raises(WeightsError, match="my.pkl: not a Feature2Face"):
        detect_renderer_config(official_layout_state_dict("mouth"), source="my.pkl")
    flat = {"model.model.0.weight": torch.zeros(4, 13, 4, 4), "model.model.4.weight": torch.zeros(4, 3, 3, 3)}
    _one_line_error(lambda: detect_renderer_config(flat, source="my.pkl"),
                    "my.pkl: cannot find the residual blocks / inner levels of a Feature2Face generator")


def test_prefix_is_optional(tmp_path, mouth_sd):
    bare = {k[len("module."):]: v for k, v in mouth_sd.items()}
    converted = convert_official(audio2feature=_save(tmp_path, "bare.pkl", bare))["mouth"]
    assert list(converted) == list(_meta_shapes(Audio2Mouth))
    assert torch.equal(converted["LSTM.weight_ih_l0"], mouth_sd["module.LSTM.weight_ih_l0"])


def test_a_key_both_with_and_without_the_prefix_is_refused(tmp_path, mouth_sd):
    path = _save(tmp_path, "Audio2Feature.pkl", {**mouth_sd, "downsample.0.weight": torch.zeros(512, 1024)})
    _one_line_error(lambda: convert_official(audio2feature=path), str(path),
                    "holds both module.downsample.0.weight and downsample.0.weight")


def test_apc_head_in_linear_form_and_missing_counter(tmp_path):
    sd = official_layout_state_dict("apc")
    sd["postnet.weight"] = sd.pop("postnet.layer.weight")[..., 0]
    sd["postnet.bias"] = sd.pop("postnet.layer.bias")
    assert set(convert_official(apc=_save(tmp_path, "apc.model", sd))["apc"]) == set(_meta_shapes(APC))
    mouth = official_layout_state_dict("mouth")
    del mouth["module.fc.1.num_batches_tracked"]  # old checkpoints lack the counter: filled with 0
    assert convert_official(audio2feature=_save(tmp_path, "m.pkl", mouth))["mouth"]["fc.1.num_batches_tracked"] == 0


# ------------------------------------------------------------------------------------------------ negatives

def _one_line_error(call, *fragments):
    return one_line_error(call, *fragments, error=WeightsError)


def test_extra_key(tmp_path, mouth_sd):
    path = _save(tmp_path, "Audio2Feature.pkl", {**mouth_sd, "module.fc.9.weight": torch.zeros(1)})
    _one_line_error(lambda: convert_official(audio2feature=path), str(path), "unexpected keys fc.9.weight")


def test_missing_key(tmp_path, mouth_sd):
    sd = dict(mouth_sd)
    del sd["module.LSTM.bias_hh_l1"]
    path = _save(tmp_path, "Audio2Feature.pkl", sd)
    _one_line_error(lambda: convert_official(audio2feature=path), str(path), "missing keys LSTM.bias_hh_l1")


def test_wrong_shape(tmp_path, mouth_sd):
    path = _save(tmp_path, "Audio2Feature.pkl", {**mouth_sd, "module.fc.6.weight": torch.zeros(72, 512)})
    _one_line_error(lambda: convert_official(audio2feature=path), str(path), "shape mismatch fc.6.weight (72, 512)")


def test_renderer_and_headpose_mismatch(tmp_path):
    sd = official_layout_state_dict("renderer", **SMALL_RENDERER)
    sd["module.netG.model.model.3.model.0.weight"] = torch.zeros(8, 4, 3, 1)
    path = _save(tmp_path, "Feature2Face.pkl", sd)
    _one_line_error(lambda: convert_official(feature2face=path), str(path), "model.model.3.model.0.weight")
    small = official_layout_state_dict("headpose", residual_layers=3)  # not the official 7 layers
    path = _save(tmp_path, "Audio2Headpose.pkl", small)
    _one_line_error(lambda: convert_official(audio2headpose=path), str(path), "missing keys WaveNet.residual_blocks")


def test_missing_and_unreadable_files(tmp_path):
    _one_line_error(lambda: convert_official(apc=tmp_path / "APC_epoch_160.model"), "APC_epoch_160.model",
                    "not found")
    garbage = tmp_path / "Feature2Face.pkl"
    garbage.write_bytes(b"not a checkpoint")
    _one_line_error(lambda: convert_official(feature2face=garbage), str(garbage), "weights_only")
    listed = _save(tmp_path, "Audio2Headpose.pkl", [torch.zeros(1)])
    _one_line_error(lambda: convert_official(audio2headpose=listed), str(listed), "not a state dict")


def test_pinned_sha256(tmp_path, mouth_sd):
    path = _save(tmp_path, "Audio2Feature.pkl", mouth_sd)
    digest = sha256_of(path)
    assert set(convert_official(audio2feature=path, sha256={"mouth": digest.upper()})) == {"mouth"}
    wrong = "0" * 64
    _one_line_error(lambda: convert_official(audio2feature=path, sha256={"mouth": wrong}), str(path),
                    f"has sha256 {digest}, expected {wrong}", "corrupt or a different file")
    _one_line_error(lambda: convert_official(audio2feature=path, sha256={"Audio2Feature": digest}),
                    "unknown LSP component(s) Audio2Feature", "known: apc, mouth, headpose, renderer")
    for blank in ("", "  ", digest[:12]):      # a pin that verifies nothing is refused, not ignored
        _one_line_error(lambda: convert_official(audio2feature=path, sha256={"mouth": blank}),
                        "sha256 of the official LSP mouth weights: expected 64 hex digits, got '")
    # A pin for a component whose file is not given is unused, not an error.
    assert set(convert_official(audio2feature=path, sha256={"mouth": digest, "apc": wrong})) == {"mouth"}


def test_file_contents_that_are_not_weights(tmp_path, mouth_sd):
    mixed = _save(tmp_path, "Audio2Feature.pkl", {**mouth_sd, "module.epoch": 160})
    _one_line_error(lambda: convert_official(audio2feature=mixed), str(mixed), "has non-tensor entries: module.epoch")
    apc = official_layout_state_dict("apc")
    apc["postnet.weight"] = apc["postnet.layer.weight"][..., 0]
    both = _save(tmp_path, "APC_epoch_160.model", apc)
    _one_line_error(lambda: convert_official(apc=both), f"{both} has both postnet.layer.weight and postnet.weight")


def test_load_official_into_checks_the_module(tmp_path, mouth_sd):
    converted = convert_official(audio2feature=_save(tmp_path, "a.pkl", mouth_sd))
    _one_line_error(lambda: load_official_into({"mouth": Audio2Mouth(num_points=20)}, converted),
                    "converted LSP mouth", "shape mismatch fc.6.weight")
    assert load_official_into({"renderer": Feature2FaceGenerator(**SMALL_RENDERER)}, converted) == []


def test_official_renderer_needs_the_lsp_output_layer(tmp_path):
    converted = {"renderer": Feature2FaceGenerator(**SMALL_RENDERER).state_dict()}
    skip = Feature2FaceGenerator(**SMALL_RENDERER, input_skip=True)
    _one_line_error(lambda: load_official_into({"renderer": skip}, converted), "converted LSP renderer",
                    "model.renderer.input_skip=false")
    assert load_official_into({"renderer": Feature2FaceGenerator(**SMALL_RENDERER)}, converted) == ["renderer"]
