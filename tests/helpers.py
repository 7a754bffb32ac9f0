"""Small helpers shared by the test modules."""
from __future__ import annotations

import dataclasses
from typing import Callable

import pytest
import torch

from zoo.bounds import in_interval, out_of_bounds
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


def one_line_error(fn: Callable[[], object], *fragments: str, error: type[Exception] = DataError) -> str:
    """``fn()`` raises a one-line ``error`` that names every fragment; returns its message."""
    with pytest.raises(error) as info:
        fn()
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message
    return message


def assert_ranges_name_fields_and_hold_defaults(config_class: type) -> None:
    """Every interval in ``config_class.bounds`` (zoo.bounds) belongs to a field and holds its default."""
    names = {f.name for f in dataclasses.fields(config_class)}
    for name, interval in getattr(config_class, "bounds", {}).items():
        assert name in names, name
        in_interval(0, interval)                          # parses
    assert out_of_bounds(config_class()) is None


# Small widths keep the whole LSP pipeline to seconds; the architecture is the same.
LSP_SMALL = ["experiment=smoke", "logger=csv", "trainer.progress_bar=none", "model.apc.hidden_size=32",
             "model.mouth.hidden_size=32", "model.headpose.residual_channels=16",
             "model.headpose.dilation_channels=16", "model.headpose.skip_channels=16", "model.renderer.ngf=8",
             "model.renderer.ndf=8", "model.renderer.num_downs=4"]
