"""LSP's training stages: the features, schedules and losses they train with, and the settings they refuse."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

import lsp.stages.renderer as renderer_module
from lsp.networks.audio2mouth import pair_frames
from lsp.person import person_clip_ids
from lsp.stages.mouth import MouthConfig, MouthStage
from lsp.stages.renderer import RendererConfig, RendererStage
from zoo.cli import main
from zoo.data import open_dataset
from zoo.data.features import FeatureCache
from zoo.errors import ConfigError
from zoo.model import frames_to_float

from helpers import one_line_error

SMOKE = ["experiment=smoke", "logger=none", "trainer.progress_bar=none"]


def stub_trainer(batches: float, max_steps: int = -1) -> SimpleNamespace:
    """What the schedules read of a Trainer: Lightning's estimate, and max_steps."""
    return SimpleNamespace(estimated_stepping_batches=batches, max_steps=max_steps)


def test_a_window_is_cut_from_its_whole_clips_apc_features(tiny_corpus):
    """Inference runs the APC over the whole stream; a window encoded on its own would start cold."""
    dataset = open_dataset(tiny_corpus)
    stage = MouthStage(MouthConfig(hidden_size=8, apc_hidden_size=8)).eval()
    cache = FeatureCache(dataset, "mel")
    stage._mel = cache
    clip_id = person_clip_ids(dataset, "train", 0)[0]
    window = torch.from_numpy(cache.window(clip_id, 10, 20))[None]                       # [1, 40, 80]
    features = stage.audio_features(window, {"clip_id": [clip_id], "start": torch.tensor([10])})
    whole = pair_frames(stage.speech(torch.from_numpy(np.array(cache.get(clip_id)))[None])[0])[0]
    torch.testing.assert_close(features[0], whole[10:30])
    assert not torch.allclose(features, stage.audio_features(window), atol=1e-4)        # what a cold start gives


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)`")
def test_the_step_decay_happens_once():
    stage = MouthStage(MouthConfig(hidden_size=8, apc_hidden_size=8, lr=1.0, lr_gamma=0.5, lr_step_fraction=0.25))
    stage.trainer = stub_trainer(100)
    scheduler = stage.configure_optimizers()["lr_scheduler"]["scheduler"]
    rates = []
    for _ in range(100):
        rates.append(scheduler.get_last_lr()[0])
        scheduler.step()
    assert rates[24] == 1.0 and rates[25] == rates[99] == 0.5


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)`")
def test_a_gan_schedule_counts_batches_not_optimiser_steps():
    """G and D each step once a batch: max_steps=8 is 4 batches, and the LR must reach 0 after them."""
    stage = RendererStage(RendererConfig(ngf=4, ndf=4, num_downs=2, decay_fraction=0.5))
    stage.trainer = stub_trainer(8, max_steps=8)
    assert stage.scheduled_batches(optimizer_steps_per_batch=2) == 4
    _, schedulers = stage.configure_optimizers()
    for _ in range(4):
        schedulers[0].step()
    assert schedulers[0].get_last_lr()[0] == 0.0
    stage.trainer = stub_trainer(6, max_steps=20)                  # the epochs end first
    assert stage.scheduled_batches(optimizer_steps_per_batch=2) == 6


def test_an_unbounded_run_has_no_schedule():
    stage = MouthStage(MouthConfig(hidden_size=8, apc_hidden_size=8))
    stage.trainer = stub_trainer(float("inf"))
    one_line_error(stage.configure_optimizers, "MouthStage's learning-rate schedule needs a bounded run: set "
                   "trainer.max_epochs or trainer.max_steps", error=ConfigError)


def test_feature_matching_compares_under_the_same_discriminator(tiny_corpus, tmp_path, monkeypatch):
    """A generator that outputs the real frames has nothing left to match, although D stepped in between."""
    values = []

    def recording(fake_outputs, real_outputs):
        loss = feature_matching_loss(fake_outputs, real_outputs)
        values.append(float(loss.detach()))
        return loss

    def training_step(self, batch, batch_idx):
        real = frames_to_float(batch["frames"].flatten(0, 1)).mul(2).sub(1)
        keep_graph = sum(p.sum() for p in self.generator.parameters()) * 0
        self.generator.forward = lambda condition: real + keep_graph
        return original(self, batch, batch_idx)

    feature_matching_loss, original = renderer_module.feature_matching_loss, RendererStage.training_step
    monkeypatch.setattr(renderer_module, "feature_matching_loss", recording)
    monkeypatch.setattr(RendererStage, "training_step", training_step)
    assert main(["fit", "--model", "lsp.renderer", *SMOKE, "model.ngf=4", "model.ndf=4", "model.num_downs=3",
                 "model.ema_decay=0", "data.window_seconds=0.08", "trainer.limit_train_batches=3",
                 "trainer.limit_val_batches=0", f"run.runs_dir={tmp_path}"]) == 0
    assert len(values) == 6 and max(values) < 1e-6                 # 3 steps x (whole frame, lips)


@pytest.mark.parametrize("model, overrides, message", [
    ("lsp.apc", ["model.hidden_size=8", "model.prediction_steps=50"],
     "model.prediction_steps=50 needs windows of more than 25 frames, data.window_seconds gives 25 at 25 fps"),
    ("lsp.mouth", ["model.look_ahead_seconds=1.0", "model.apc_ckpt=unused.ckpt"],
     "model.look_ahead_seconds=1.0 needs windows of more than 25 frames, data.window_seconds gives 25 at 25 fps"),
    ("lsp.headpose", ["model.look_ahead_seconds=0.2", "data.val_window_seconds=0.2", "model.apc_ckpt=unused.ckpt"],
     "model.look_ahead_seconds=0.2 needs windows of more than 5 frames, data.val_window_seconds gives 5 at 25 fps"),
])
def test_a_window_too_short_for_the_stage_is_one_line(tiny_corpus, tmp_path, capsys, model, overrides, message):
    assert main(["fit", "--model", model, *SMOKE, *overrides, f"run.runs_dir={tmp_path}"]) == 2
    assert capsys.readouterr().err.strip() == f"error: {message}"
