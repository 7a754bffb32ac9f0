"""Leaderboard budgets: how long every method trains and which clips every row is scored on.

A budget is a YAML file, ``configs/bench/<name>.yaml`` (``--budget NAME``) or any path (``--budget FILE``), typed by
:class:`Budget`. ``small`` (the default) trains each method for minutes on a 2-core CPU machine; ``full`` is
paper-length training on GPUs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

from omegaconf import OmegaConf

from zoo.config import config_dir, group_choices, merge_layer, to_dataclass
from zoo.errors import ConfigError


@dataclass
class Budget:
    """One leaderboard budget.

    Attributes:
        description: one line for the table's protocol statement.
        identities: seen identities whose ``test`` clips form the evaluation set (None: every seen identity).
        unseen_identities: identities of ``test_unseen`` for one-shot / few-shot methods (None: all of them).
        train_overrides: ``key=value`` for every training run (e.g. ``trainer=cpu``).
        eval_window_seconds: the evaluated windows' length for every row (None: whole clips).
        eval_overrides: ``key=value`` for every evaluation run (every row gets the same ones).
        models: per-method training overrides, ``{method: [key=value, ...]}`` (staged models accept
            ``<stage>.trainer.max_epochs=...``).
    """

    description: str = ""
    identities: Optional[List[int]] = None
    unseen_identities: Optional[List[int]] = None
    train_overrides: List[str] = field(default_factory=list)
    eval_window_seconds: Optional[float] = 2.0
    eval_overrides: List[str] = field(default_factory=list)
    models: Dict[str, List[str]] = field(default_factory=dict)


def budget_path(name: str) -> Path:
    """``configs/bench/<name>.yaml`` for a name, else ``name`` as a path; one error line when neither exists."""
    path = config_dir() / "bench" / f"{name}.yaml"
    if path.is_file():
        return path
    if name.endswith((".yaml", ".yml")) and Path(name).is_file():
        return Path(name)
    raise ConfigError(f"unknown budget '{name}'; valid budgets: {', '.join(group_choices('bench'))} "
                      f"(or a path to a budget YAML)")


def load_budget(name: str) -> tuple[Budget, dict]:
    """The typed budget and its plain-dict form (recorded in the leaderboard)."""
    path = budget_path(name)
    try:
        loaded = OmegaConf.load(path)
    except Exception as err:  # yaml errors: one line naming the file
        raise ConfigError(f"cannot parse {path}: {str(err).splitlines()[0]}") from None
    cfg = merge_layer(OmegaConf.structured(Budget), loaded, str(path))
    budget = to_dataclass(cfg, Budget)
    return budget, {"name": path.stem, "file": str(path), **OmegaConf.to_container(cfg, resolve=True)}
