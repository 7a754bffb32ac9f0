"""Test harness: no network, W&B offline into a temp dir, caches in a temp HOME.

Every test runs with downloads blocked (``torch.hub`` and non-loopback sockets raise) so a test can never
depend on a pretrained file or hang on a black-holed network.
"""
from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path

import pytest

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

_real_connect = socket.socket.connect


def _guarded_connect(self, address):
    """Allow Unix sockets (wandb-core) and loopback; refuse everything else immediately."""
    if self.family == socket.AF_UNIX:
        return _real_connect(self, address)
    host = address[0] if isinstance(address, tuple) else address
    if host in ("127.0.0.1", "localhost", "::1") or str(host).startswith("127."):
        return _real_connect(self, address)
    raise ConnectionRefusedError(f"network access blocked in tests: {address!r}")


socket.socket.connect = _guarded_connect


@pytest.fixture(autouse=True)
def _block_downloads(monkeypatch):
    import torch.hub

    def _refuse(url, *args, **kwargs):
        raise RuntimeError(f"download blocked in tests: {url}")

    monkeypatch.setattr(torch.hub, "download_url_to_file", _refuse)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", _refuse)


@pytest.fixture(scope="session")
def sandbox() -> Path:
    """The session's temp root (HOME, caches and W&B live below it)."""
    return _SANDBOX


def clean_subprocess_env(**extra: str) -> dict[str, str]:
    """Environment for a child process: no inherited DDP/Lightning/Torchelastic variables."""
    drop = {"LOCAL_RANK", "RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "NODE_RANK", "GROUP_RANK",
            "MASTER_ADDR", "MASTER_PORT"}
    env = {k: v for k, v in os.environ.items()
           if k not in drop and not k.startswith(("PL_", "TORCHELASTIC_", "PYTEST_"))}
    env.update(extra)
    return env


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
