"""An exponential moving average of a model's weights, kept by Lightning's ``WeightAveraging`` callback.

GAN generators are evaluated on an EMA of their weights (ProGAN, StyleGAN, BigGAN): the last iterate of the
adversarial game oscillates, the average does not. Lightning's callback does the bookkeeping: it updates the average
after every optimizer step, swaps it in for validation, saves it as the checkpoint's ``state_dict`` (the raw weights
go to ``current_model_state``, so a resumed fit continues from them) and leaves it in the model when the fit ends.
"""
from __future__ import annotations

from typing import Any, Optional

import pytorch_lightning as pl
from pytorch_lightning.callbacks import WeightAveraging
from pytorch_lightning.trainer.states import TrainerFn
from torch.optim.swa_utils import get_ema_multi_avg_fn

__all__ = ["ExponentialMovingAverage"]


class ExponentialMovingAverage(WeightAveraging):
    """``average <- decay * average + (1 - decay) * weights`` after every training batch's optimizer steps, for every
    parameter and buffer (BatchNorm statistics included) of the LightningModule.

    Args:
        decay: per-update decay in [0, 1); the average's memory is about ``1 / (1 - decay)`` batches.
    """

    def __init__(self, decay: float):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        super().__init__(multi_avg_fn=get_ema_multi_avg_fn(decay))

    def should_update(self, step_idx: Optional[int] = None, epoch_idx: Optional[int] = None) -> bool:
        return step_idx is not None

    # Lightning copies the module in the callback's ``setup``, which runs before the module's own: a module whose
    # buffers are sized from the data there (LSP's person profile) would be copied empty. Copy it once it has set
    # itself up: before a checkpoint is restored into it, or when the fit starts.
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        pass

    def _create_average(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._average_model is None and trainer.state.fn == TrainerFn.FITTING:
            super().setup(trainer, pl_module, "fit")

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
                           ) -> None:
        self._create_average(trainer, pl_module)
        super().on_load_checkpoint(trainer, pl_module, checkpoint)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._create_average(trainer, pl_module)
        self._average_model.to(pl_module.device)     # a restored average was made before the module moved
