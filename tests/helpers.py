"""Small helpers shared by the test modules."""
from __future__ import annotations

from typing import Callable

import pytest
import torch

from zoo.errors import DataError


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


def one_line_error(fn: Callable[[], object], *fragments: str) -> None:
    """``fn()`` raises a one-line :class:`DataError` that names every fragment."""
    with pytest.raises(DataError) as info:
        fn()
    assert "\n" not in str(info.value)
    for fragment in fragments:
        assert fragment in str(info.value), str(info.value)
