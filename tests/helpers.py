"""Small helpers shared by the test modules."""
from __future__ import annotations

from typing import Callable

import torch


def optimise(loss_fn: Callable[[], torch.Tensor], parameters, steps: int, lr: float) -> list[float]:
    """Run ``steps`` Adam steps on ``loss_fn()`` and return the loss before each step."""
    optimizer = torch.optim.Adam(list(parameters), lr=lr)
    losses = []
    for _ in range(steps):
        loss = loss_fn()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses
