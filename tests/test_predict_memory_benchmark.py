"""benchmarks/predict_memory.py runs both ways of predicting from audio in child processes and writes its JSON."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "predict_memory.py"


@pytest.fixture(scope="module")
def benchmark():
    spec = importlib.util.spec_from_file_location("predict_memory_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quick_run_measures_both_ways(benchmark, lsp_run, tmp_path):
    out = tmp_path / "predict_memory.json"
    returned = benchmark.main(["--quick", "--run", str(lsp_run), "--out", str(out)])
    result = json.loads(out.read_text())
    assert result == json.loads(json.dumps(returned)) and result["benchmark"] == "predict_memory"
    assert [run["mode"] for run in result["runs"]] == ["zoo_predict", "whole_video"]
    for run in result["runs"]:
        assert run["audio_seconds"] == 2.0 and run["frames"] == 50            # 2 s at 25 fps, every frame written
        assert run["peak_rss_mb"] > 50 and run["wall_seconds"] > 0             # a child that imported torch


def test_a_failed_child_is_one_line(benchmark, lsp_run, tmp_path):
    (tmp_path / "noise.wav").write_bytes(b"not a wav")
    with pytest.raises(RuntimeError) as failed:
        benchmark.measure("zoo_predict", str(lsp_run), tmp_path / "noise.wav", tmp_path / "out.mp4")
    message = str(failed.value)
    assert message.startswith("zoo_predict on noise.wav failed (exit 2): error: cannot read audio file ")
    assert "\n" not in message                                  # the child's own error line, passed on
