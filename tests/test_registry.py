"""The model registry, and smoke tests parametrised over every registered model (timm style)."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from zoo.model import GeneratedClip, ZooModule
from zoo.pipeline import is_staged
from zoo.registry import create_model, get_entry, list_models, register_model
from helpers import assert_ranges_name_fields_and_hold_defaults, optimise


def test_baselines_registered():
    assert {"static", "gt", "lsp.apc"} <= set(list_models())
    assert list_models("lsp.*") == [n for n in list_models() if n.startswith("lsp.")]


@pytest.mark.parametrize("name", list_models())
def test_create_every_model(name):
    entry = get_entry(name)
    model = create_model(name)
    assert isinstance(model, entry.model_class) and isinstance(model, ZooModule)
    assert dataclasses.is_dataclass(entry.config) and entry.help
    if is_staged(entry.model_class):   # trained stage by stage: every stage is a registered trainable model
        assert all(get_entry(stage).model_class.trainable for _, stage in entry.model_class.stages)
    elif entry.model_class.trainable:
        assert sum(p.numel() for p in model.parameters() if p.requires_grad) > 0
        assert model.monitor is None or model.monitor.startswith("val/")   # None: last.ckpt only (a GAN)


@pytest.mark.parametrize("name", list_models())
def test_every_declared_range_is_a_field_and_holds_its_default(name):
    assert_ranges_name_fields_and_hold_defaults(get_entry(name).config)


def test_create_model_overrides():
    model = create_model("lsp.apc", hidden_size=32, num_layers=2)
    assert len(model.apc.rnns) == 2 and model.apc.rnns[1].hidden_size == 32


def test_apc_layout_matches_lsp_encoder():
    """LSP's APC_encoder keys: rnns.{0,1,2}.{weight_ih_l0,weight_hh_l0,bias_ih_l0,bias_hh_l0} (+ postnet)."""
    model = create_model("lsp.apc")
    keys = {k: tuple(v.shape) for k, v in model.apc.state_dict().items()}
    assert keys["rnns.0.weight_ih_l0"] == (3 * 512, 80)
    assert keys["rnns.2.weight_hh_l0"] == (3 * 512, 512)
    assert keys["postnet.weight"] == (80, 512)
    assert len([k for k in keys if k.startswith("rnns.")]) == 12


def test_apc_learns_to_predict_ahead():
    torch.manual_seed(0)
    model = create_model("lsp.apc", hidden_size=64, num_layers=2, lr=1e-2)
    t = torch.arange(120).float()
    mel = torch.stack([torch.sin(t * (0.1 + 0.02 * b) + b) for b in range(8)])[..., None].repeat(1, 1, 80)
    first = model._loss(mel).item()
    optimise(lambda: model._loss(mel), model.parameters(), steps=60, lr=1e-2)
    assert model._loss(mel).item() < 0.3 * first


def test_a_generated_clip_checks_its_frames():
    with pytest.raises(ValueError, match=r"GeneratedClip.frames must be \[B, T, 3, H, W\], got \(2, 3, 8, 8\)"):
        GeneratedClip(frames=torch.zeros(2, 3, 8, 8))


def test_a_module_without_a_step_says_so():
    class NoStep(ZooModule):
        pass

    with pytest.raises(NotImplementedError, match="NoStep implements neither step\\(\\) nor its \\*_step methods"):
        NoStep().training_step({}, 0)


def test_register_model_checks_its_arguments():
    with pytest.raises(TypeError, match="register_model\\('x'\\): config must be a dataclass, got <class 'dict'>"):
        register_model("x", config=dict)

    @dataclasses.dataclass
    class Config:
        width: int = 1

    with pytest.raises(TypeError, match="annotate the builder's return type with the module class"):
        @register_model("test.unannotated", config=Config)
        def build(cfg):
            return ZooModule()
    assert "test.unannotated" not in list_models()
