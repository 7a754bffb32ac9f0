"""2-process CPU DDP (gloo), each run as a subprocess with a cleaned environment (never in-process DDP in pytest)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import clean_subprocess_env

pytestmark = pytest.mark.ddp

DDP = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=32",
       "trainer.sync_batchnorm=false", "experiment=smoke", "trainer.progress_bar=none", "logger=csv"]


def zoo_subprocess(*argv: str, timeout: int = 420) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "zoo.cli", *argv], env=clean_subprocess_env(OMP_NUM_THREADS="1"),
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_ddp_fit_real_model(tiny_corpus, tmp_path):
    zoo_subprocess("fit", "--model", "lsp.apc", *DDP, f"run.runs_dir={tmp_path}", "model.hidden_size=32")
    run_dir = tmp_path / "lsp.apc" / "smoke"
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert "val/loss" in (run_dir / "logs" / "version_0" / "metrics.csv").read_text()


def test_ddp_test_equals_single_process(tiny_corpus, tmp_path):
    """Padding samples of the distributed sampler are not counted twice: same clips, same aggregate."""
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    common = ["experiment=smoke", "trainer.progress_bar=none", "logger=none", "data.max_clips=3"]
    zoo_subprocess("test", "--model", "static", *common, "trainer=cpu", f"run.runs_dir={single}")
    zoo_subprocess("test", "--model", "static", *DDP[:-1], *common[1:], f"run.runs_dir={ddp}")
    a = json.loads((single / "static" / "smoke" / "results" / "test.json").read_text())
    b = json.loads((ddp / "static" / "smoke" / "results" / "test.json").read_text())
    assert a["num_clips"] == b["num_clips"]
    assert [c["sample_index"] for c in a["clips"]] == [c["sample_index"] for c in b["clips"]]
    assert a["aggregate"] == pytest.approx(b["aggregate"], rel=1e-6)


@pytest.fixture(scope="module")
def small_apc(tiny_corpus, tmp_path_factory):
    """A small trained lsp.apc checkpoint the person stages start from."""
    runs = tmp_path_factory.mktemp("apc")
    zoo_subprocess("fit", "--model", "lsp.apc", "experiment=smoke", "trainer=cpu", "trainer.progress_bar=none",
                   "logger=none", f"run.runs_dir={runs}", "model.hidden_size=32")
    return runs / "lsp.apc" / "smoke" / "checkpoints" / "last.ckpt"


SMALL_STAGE = {"lsp.mouth": ["model.hidden_size=32"],
               "lsp.headpose": ["model.residual_channels=16", "model.dilation_channels=16", "model.skip_channels=16"],
               "lsp.renderer": ["model.ngf=8", "model.ndf=8", "model.num_downs=4"]}


@pytest.mark.parametrize("stage", sorted(SMALL_STAGE))
def test_ddp_fit_lsp_stage(stage, small_apc, tmp_path):
    apc = [f"model.apc_ckpt={small_apc}", "model.apc_hidden_size=32"] if stage != "lsp.renderer" else []
    zoo_subprocess("fit", "--model", stage, *DDP, f"run.runs_dir={tmp_path}", *SMALL_STAGE[stage], *apc)
    run_dir = tmp_path / stage / "smoke"
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    metrics = (run_dir / "logs" / "version_0" / "metrics.csv").read_text()
    assert ("val/psnr" if stage == "lsp.renderer" else "val/loss") in metrics
