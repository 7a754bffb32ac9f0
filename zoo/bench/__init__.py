"""``zoo bench``: the leaderboard (:mod:`zoo.bench.runner`, :mod:`zoo.bench.report`, budgets in
:mod:`zoo.bench.budget`) and ``zoo bench perf``, the performance suite (``benchmarks/perf.py``)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Optional

from zoo.errors import ConfigError

__all__ = ["run_leaderboard", "run_perf"]


def run_leaderboard(models: str = "all", data: Optional[str] = None, budget: str = "small", seed: int = 0,
                    out_dir: Optional[str] = None, overrides: Optional[list[str]] = None) -> dict:
    """Train/reuse and score every selected method; writes the leaderboard files and logs them to W&B.

    Returns the leaderboard payload (what ``leaderboard.json`` holds)."""
    from zoo import __version__
    from zoo.bench.report import log_to_wandb, protocol_text, write_files
    from zoo.bench.provenance import git_commit
    from zoo.bench.runner import Bench, rows_of, select_methods
    from zoo.harness import prepare

    overrides = list(overrides or [])
    base = prepare("test", "gt", data, None, overrides).cfg       # data, runs_dir and logger settings
    bench = Bench(select_methods(models), data, budget, seed, Path(base.run.runs_dir) / "bench", overrides)
    records, tables = bench.run()
    dataset = records[0]["results"]["dataset"]
    payload = {"dataset": {k: dataset[k] for k in ("name", "version")}, "budget": bench.budget_record,
               "seed": seed, "methods": bench.methods, "zoo_version": __version__, "git_commit": git_commit(),
               "tables": {}}
    for split, identities in tables.items():
        rows = rows_of(records, split, bench.methods)
        windows = {tuple(map(tuple, row.pop("windows"))) for row in rows}
        if len(windows) != 1:
            raise ConfigError(f"leaderboard table '{split}': rows were scored on different windows; every method "
                              f"must evaluate the same clips (check the methods' data.* settings)")
        payload["tables"][split] = {"identities": identities, "num_windows": len(next(iter(windows))),
                                    "rows": rows}
    payload["protocol"] = protocol_text(payload)
    target = Path(out_dir) if out_dir else Path("benchmarks") / "results" / str(base.data.name)
    paths = write_files(payload, target)
    if base.logger.name == "wandb":
        log_to_wandb(payload, bench.runs_dir, base.logger.project, base.logger.mode)
    print("\n".join(["", *(f"wrote {p}" for p in paths)]))
    return payload


def run_perf(argv: list[str]) -> int:
    """``zoo bench perf [--quick] [--device ...] [--only ...]``: ``benchmarks/perf.py`` of this checkout."""
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "perf.py"
    if not script.is_file():
        raise ConfigError(f"the performance suite is not in this installation ({script}); run it from a clone")
    spec = importlib.util.spec_from_file_location("zoo_perf_suite", script)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module.cli(argv)      # 1 when any benchmark failed
