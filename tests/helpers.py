"""Small helpers shared by the test modules."""
from __future__ import annotations

from typing import Callable

import pytest
import torch

from zoo.errors import DataError, ZooError


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


def one_line_error(fn: Callable[[], object], *fragments: str, error: type[ZooError] = DataError) -> str:
    """``fn()`` raises a one-line ``error`` that names every fragment; returns its message."""
    with pytest.raises(error) as info:
        fn()
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message
    return message
