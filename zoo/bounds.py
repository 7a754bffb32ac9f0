"""Value ranges of config fields, in one notation.

A config dataclass lists the intervals its numeric fields must lie in, written as in mathematics::

    bounds: ClassVar[dict[str, str]] = {"batch_size": "[1, inf)", "ema_decay": "[0, 1)"}

:func:`out_of_bounds` finds the first field outside its interval (``None`` values are optional settings left
unset); :func:`require_in_bounds` raises it as one line, for the config composer (:mod:`zoo.config`), the
datamodule, the synthetic corpus and the evaluator kit's speakers.
"""
from __future__ import annotations

import re
from typing import Any, Optional

from zoo.errors import ConfigError, ZooError

_INTERVAL = re.compile(r"^([\[(])\s*(-inf|[-+.0-9e]+)\s*,\s*(inf|[-+.0-9e]+)\s*([\])])$")


def in_interval(value: float, interval: str) -> bool:
    """Whether ``value`` lies in ``interval``: ``"[0, 1)"``, ``"(0, inf)"``, ``"[64, 512]"``."""
    match = _INTERVAL.match(interval)
    if match is None:
        raise ValueError(f"not an interval: {interval!r}")
    opening, low, high, closing = match.groups()
    low, high = float(low), float(high)
    above = value >= low if opening == "[" else value > low
    below = value <= high if closing == "]" else value < high
    return above and below


def out_of_bounds(config: Any, cls: Optional[type] = None) -> Optional[str]:
    """``"<field> must be in <interval>, got <value>"`` for the first field of ``config`` (a dataclass instance or
    an OmegaConf node of ``cls``) outside ``cls.bounds``; ``None`` when every field is in range."""
    for name, interval in getattr(cls or type(config), "bounds", {}).items():
        value = getattr(config, name)
        if value is not None and not in_interval(value, interval):
            return f"{name} must be in {interval}, got {value!r}"
    return None


def require_in_bounds(config: Any, prefix: str, cls: Optional[type] = None,
                      error: type[ZooError] = ConfigError) -> None:
    """Raise ``error("<prefix>.<field> must be in <interval>, got <value>")`` for the first field out of range."""
    problem = out_of_bounds(config, cls)
    if problem:
        raise error(f"{prefix}.{problem}")
