"""The LSP streaming benchmark script runs end to end (``--quick``: 64 px, 1 s) and writes its JSON."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from lsp.stages.renderer import RendererConfig

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "lsp_streaming.py"


def load_script():
    spec = importlib.util.spec_from_file_location("lsp_streaming_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quick_run_writes_results(tmp_path):
    out = tmp_path / "lsp_streaming.json"
    returned = load_script().main(["--quick", "--device", "cpu", "--threads", "1", "--out", str(out)])
    result = json.loads(out.read_text())
    assert result == json.loads(json.dumps(returned))
    assert result["benchmark"] == "lsp_streaming"
    assert {"threads", "torch", "cpu_model", "devices"} <= set(result["environment"])
    assert result["environment"]["threads"] == 1
    (run,) = result["runs"]
    assert (run["device"], run["precision"], run["size"]) == ("cpu", "fp32", 64)
    assert run["renderer"]["num_downs"] == 5 and run["renderer"]["ngf"] == RendererConfig().ngf   # the default
    stream = run["stream"]
    assert stream["frames"] > 0 and stream["frames_per_s"] > 0
    # both are rounded in the JSON (fps to 3 decimals), so compare within that rounding
    assert stream["real_time_factor"] == pytest.approx(stream["frames_per_s"] / 25, abs=2e-4)
    assert stream["frames_total"] == 25                            # 1 s at 25 fps, pushes + flush
    assert stream["algorithmic_latency_s"] > 0
    assert {"p50", "p95", "max"} <= set(stream["chunk_latency_ms"])
    assert run["renderer_only"]["frames_per_s_batch1"] > 0
    assert run["renderer_only"]["network_folded_frames_per_s_batch1"] > 0
    assert result["front_stages"]["cpu"]["headpose_sampler_steps_per_s"] > 0


def test_device_choice():
    script = load_script()
    assert script.model_devices("cpu") == ["cpu"]
    assert script.model_devices("auto")[0] == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit, match="--device cuda: CUDA is not available"):
            script.model_devices("cuda")
