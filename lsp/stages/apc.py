"""LSP stage 1: the APC speech representation, trained self-supervised on all training audio.

Speaker-independent: every identity's training clips contribute. The loss is the L1 distance between the mel
frame ``n = prediction_steps`` ahead and its prediction from the GRU state at the current frame.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional

import torch
import torch.nn.functional as F

from lsp.networks.apc import APC
from zoo.model import ZooModule


@dataclass
class APCConfig:
    mel_dim: int = 80             # the LSP log-mel's bands (zoo.data.features.MEL_BANDS), fixed by the data
    hidden_size: int = 512
    num_layers: int = 3
    prediction_steps: int = 3     # predict the log-mel n frames ahead (LSP: n = 3)
    lr: float = 1e-3
    weight_decay: float = 0.0

    bounds: ClassVar[dict[str, str]] = {
        "mel_dim": "[80, 80]", "hidden_size": "[1, inf)", "num_layers": "[1, inf)", "prediction_steps": "[1, inf)",
        "lr": "(0, inf)", "weight_decay": "[0, inf)"}


class APCStage(ZooModule):
    """Self-supervised APC training on batches of LSP log-mel windows (``batch["mel"]``: float [B, 2T, 80])."""

    data_fields = ("mel",)
    monitor = "val/loss"

    def __init__(self, cfg: APCConfig):
        super().__init__()
        self.save_hyperparameters(vars(cfg), logger=False)  # the logger gets the whole composed config
        self.cfg = cfg
        self.apc = APC(cfg.mel_dim, cfg.hidden_size, cfg.num_layers)

    def setup(self, stage: Optional[str] = None) -> None:
        # a window of T frames has 2T mel rows, of which 2T - n have a target
        self.require_windows_longer_than(self.cfg.prediction_steps // 2,
                                         f"model.prediction_steps={self.cfg.prediction_steps}")

    def _loss(self, mel: torch.Tensor) -> torch.Tensor:
        n = self.cfg.prediction_steps
        predicted = self.apc(mel[:, :-n])
        return F.l1_loss(predicted, mel[:, n:])

    def step(self, batch: dict, stage: str) -> torch.Tensor:
        loss = self._loss(batch["mel"])
        self.log(f"{stage}/loss", loss, prog_bar=stage != "test", sync_dist=stage != "train",
                 batch_size=batch["mel"].shape[0])
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)
