"""Test harness: no network, W&B offline into a temp dir, caches in a temp HOME.

Every test, and every child process started with :func:`clean_subprocess_env`, runs with the network guard of
``tests/sandbox/sitecustomize.py``: ``torch.hub`` downloads, name lookups of other hosts and non-loopback socket
connections raise at once, so a test can never depend on a pretrained file or hang on a black-holed network. The
session's temp root (HOME, caches, W&B, the data cache) is removed when the session ends (set
``ZOO_KEEP_TEST_SANDBOX=1`` to keep it for a post-mortem).
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

GUARD_DIR = Path(__file__).resolve().parent / "sandbox"


def _load_network_guard():
    """The guard module: the one ``site`` already ran when this process was itself started with
    ``clean_subprocess_env()`` (a nested pytest), else a fresh copy (the error classes must be the installed ones)."""
    running = sys.modules.get("sitecustomize")
    if running is not None and Path(getattr(running, "__file__", "") or "").resolve().parent == GUARD_DIR:
        return running
    spec = importlib.util.spec_from_file_location("zoo_test_network_guard", GUARD_DIR / "sitecustomize.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


network_guard = _load_network_guard()
network_guard.install()

_SANDBOX = Path(tempfile.mkdtemp(prefix="zoo-tests-"))
for _name, _sub in {"HOME": "home", "TORCH_HOME": "torch", "XDG_CACHE_HOME": "cache", "WANDB_DIR": "wandb",
                    "WANDB_CACHE_DIR": "wandb-cache", "WANDB_CONFIG_DIR": "wandb-config",
                    "ZOO_DATA_DIR": "data"}.items():
    (_SANDBOX / _sub).mkdir(parents=True, exist_ok=True)
    os.environ[_name] = str(_SANDBOX / _sub)
os.environ["WANDB_MODE"] = "offline"
os.environ["WANDB_SILENT"] = "true"
os.environ.pop("WANDB_API_KEY", None)
os.environ.setdefault("OMP_NUM_THREADS", "1")
for _var in ("LOCAL_RANK", "RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "NODE_RANK", "GROUP_RANK",
             "MASTER_ADDR", "MASTER_PORT"):
    os.environ.pop(_var, None)


@pytest.fixture(scope="session")
def sandbox() -> Path:
    """The session's temp root (HOME, caches and W&B live below it)."""
    return _SANDBOX


def clean_subprocess_env(**extra: str) -> dict[str, str]:
    """Environment for a child process: no inherited DDP/Lightning/Torchelastic variables, and the network guard
    (``tests/sandbox`` first on ``PYTHONPATH``, so Python imports its ``sitecustomize`` at start-up; the children's
    own children inherit it)."""
    drop = {"LOCAL_RANK", "RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "NODE_RANK", "GROUP_RANK",
            "MASTER_ADDR", "MASTER_PORT"}
    env = {k: v for k, v in os.environ.items()
           if k not in drop and not k.startswith(("PL_", "TORCHELASTIC_", "PYTEST_"))}
    env.update(extra)
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and Path(p).resolve() != GUARD_DIR]
    env["PYTHONPATH"] = os.pathsep.join([str(GUARD_DIR), *paths])
    return env


def pytest_sessionfinish(session, exitstatus):
    """Remove the session's temp root (~40 MB: the synthetic corpora, W&B's offline runs, caches). Child processes
    (DDP runs, the perf suite) have all been waited for by then. Each process that imported this file (an xdist
    worker too) removes its own root."""
    if not os.environ.get("ZOO_KEEP_TEST_SANDBOX"):
        shutil.rmtree(_SANDBOX, ignore_errors=True)


# The tiny corpus every harness test uses; identical to configs/experiment/smoke.yaml's data.synth so that
# `experiment=smoke` runs find it in the cache instead of generating it again.
TINY_SYNTH = dict(seed=0, identities=2, unseen_identities=1, styles=2, intensities=2, clips_per_identity=4,
                  seconds=2.0, size=64)


@pytest.fixture(scope="session")
def tiny_corpus() -> Path:
    """Build (once per session) the tiny synthetic corpus in the data cache; returns its root."""
    from zoo.synth import SynthConfig, build_corpus, default_root

    cfg = SynthConfig(**TINY_SYNTH)
    root = default_root(cfg)
    if not (root / "dataset.json").is_file():
        build_corpus(cfg, root, progress=False)
    return root


@pytest.fixture(autouse=True)
def _fresh_run_name(monkeypatch):
    monkeypatch.delenv("ZOO_RUN_NAME", raising=False)


@pytest.fixture(scope="session")
def lsp_run(tiny_corpus, tmp_path_factory) -> Path:
    """A staged LSP fit of the tiny corpus at small widths (helpers.LSP_SMALL), once per session; its run directory."""
    from helpers import LSP_SMALL
    from zoo.cli import main

    runs = tmp_path_factory.mktemp("lsp_runs")
    assert main(["fit", "--model", "lsp", *LSP_SMALL, f"run.runs_dir={runs}"]) == 0
    return runs / "lsp" / "smoke"


@pytest.fixture(scope="session")
def lsp_model(lsp_run):
    """The assembled model of :func:`lsp_run`, in eval mode (a test that changes it restores it)."""
    from lsp.model import LSP

    return LSP.load(lsp_run / "checkpoints" / "last.ckpt")
