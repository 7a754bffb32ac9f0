"""zoo.gan.ExponentialMovingAverage: the average by hand, one update per batch under manual optimisation with two
optimizers (a GAN step), a module whose buffers are sized in its own ``setup``, checkpoints and resume."""
from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from zoo.gan import ExponentialMovingAverage

DECAY = 0.5


class TwoOptimizerModule(pl.LightningModule):
    """A GAN-shaped module: manual optimisation, a "generator" and a "discriminator" stepped once per batch each, and
    a buffer sized from the data in ``setup`` (as LSP's person profile). Records its weights after every batch."""

    def __init__(self):
        super().__init__()
        self.automatic_optimization = False
        self.generator = nn.Linear(3, 2)
        self.discriminator = nn.Linear(2, 1)
        self.register_buffer("profile", torch.zeros(0))
        self.history: list[torch.Tensor] = []

    def setup(self, stage: str) -> None:
        self.profile = torch.arange(3.0)

    def training_step(self, batch, batch_idx):
        (x,) = batch
        opt_g, opt_d = self.optimizers()
        loss_d = self.discriminator(self.generator(x).detach()).pow(2).mean()
        opt_d.zero_grad()
        self.manual_backward(loss_d)
        opt_d.step()
        loss_g = (self.generator(x) - 1).pow(2).mean()
        opt_g.zero_grad()
        self.manual_backward(loss_g)
        opt_g.step()
        self.history.append(self.generator.weight.detach().clone())

    def configure_optimizers(self):
        return [torch.optim.SGD(self.generator.parameters(), lr=0.1),
                torch.optim.SGD(self.discriminator.parameters(), lr=0.1)]


def _trainer(tmp_path, max_epochs: int, **kwargs) -> pl.Trainer:
    return pl.Trainer(default_root_dir=tmp_path, max_epochs=max_epochs, accelerator="cpu", logger=False,
                      enable_progress_bar=False, enable_model_summary=False,
                      callbacks=[ExponentialMovingAverage(DECAY)], **kwargs)


def _loader() -> DataLoader:
    return DataLoader(TensorDataset(torch.randn(8, 3, generator=torch.Generator().manual_seed(0))), batch_size=2)


def _average(history: list[torch.Tensor]) -> torch.Tensor:
    average = history[0]           # AveragedModel starts from the weights at its first update
    for weights in history[1:]:
        average = DECAY * average + (1 - DECAY) * weights
    return average


def test_average_by_hand_one_update_per_gan_step_and_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = TwoOptimizerModule()
    trainer = _trainer(tmp_path, max_epochs=1)
    trainer.fit(model, _loader())
    assert len(model.history) == 4                               # 4 batches, 2 optimizer steps each
    expected = _average(model.history)
    assert not torch.allclose(expected, model.history[-1])
    torch.testing.assert_close(model.generator.weight, expected)  # the average is left in the model
    torch.testing.assert_close(model.profile, torch.arange(3.0))  # copied after the module's setup

    path = tmp_path / "ema.ckpt"
    trainer.save_checkpoint(path)
    saved = torch.load(path, map_location="cpu", weights_only=False)
    torch.testing.assert_close(saved["state_dict"]["generator.weight"], expected)


def test_resume_continues_the_raw_weights_and_the_average(tmp_path):
    torch.manual_seed(0)
    straight = TwoOptimizerModule()
    _trainer(tmp_path / "straight", max_epochs=2).fit(straight, _loader())

    torch.manual_seed(0)
    first = TwoOptimizerModule()
    trainer = _trainer(tmp_path / "first", max_epochs=1)
    trainer.fit(first, _loader())
    # the average was swapped into the model at the end; the checkpoint made during the fit keeps the raw weights
    (checkpoint,) = (tmp_path / "first").rglob("*.ckpt")
    saved = torch.load(checkpoint, map_location="cpu", weights_only=False)
    torch.testing.assert_close(saved["current_model_state"]["generator.weight"], first.history[-1])

    resumed = TwoOptimizerModule()
    _trainer(tmp_path / "resumed", max_epochs=2).fit(resumed, _loader(), ckpt_path=str(checkpoint))
    torch.testing.assert_close(resumed.history[-1], straight.history[-1])
    torch.testing.assert_close(resumed.generator.weight, straight.generator.weight)


@pytest.mark.parametrize("decay", [-0.1, 1.0])
def test_decay_out_of_range(decay):
    with pytest.raises(ValueError, match="EMA decay must be in"):
        ExponentialMovingAverage(decay)
