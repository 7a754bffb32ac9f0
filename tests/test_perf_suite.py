"""The performance suite (``benchmarks/perf.py``): every benchmark's quick run in one JSON and one Markdown summary;
a failing benchmark is recorded, the others still run, and the suite's exit status is 1."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from zoo.errors import ConfigError

from conftest import clean_subprocess_env
from helpers import one_line_error

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
NAMES = {"data_pipeline", "metric_speed", "training_throughput", "lsp_streaming"}
STAGES = {"lsp.apc", "lsp.mouth", "lsp.headpose", "lsp.renderer", "syncnet", "landmark_detector", "identity_embedder"}


def load_perf():
    spec = importlib.util.spec_from_file_location("perf_suite", BENCHMARKS / "perf.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def quick_suite(tiny_corpus, tmp_path_factory) -> Path:
    """One quick run of the whole suite on one CPU thread; the training benchmark finds the tiny corpus (the
    ``experiment=smoke`` one) in the session's data directory instead of generating it."""
    out = tmp_path_factory.mktemp("perf")
    env = clean_subprocess_env(OMP_NUM_THREADS="1", WANDB_MODE="offline", ZOO_DATA_DIR=str(tiny_corpus.parent))
    proc = subprocess.run([sys.executable, str(BENCHMARKS / "perf.py"), "--quick", "--device", "cpu", "--threads",
                           "1", "--out-dir", str(out)], env=env, capture_output=True, text=True, timeout=500)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert proc.stderr.count(": ok in ") == len(NAMES)              # one progress line per finished benchmark
    return out


@pytest.mark.slow                      # the quick_suite fixture runs every benchmark (~60 s)
def test_quick_suite_collects_every_benchmark(quick_suite):
    suite = json.loads((quick_suite / "perf.json").read_text())
    assert suite["ok"] and suite["failed"] == [] and suite["quick"] and suite["device"] == "cpu"
    assert set(suite["benchmarks"]) == NAMES
    for name, record in suite["benchmarks"].items():
        assert record["returncode"] == 0 and record["wall_seconds"] > 0
        assert record["command"][1].endswith(f"{name}.py") and "--quick" in record["command"]
        # the benchmark's own JSON is kept next to perf.json, as the README's figures cite them
        assert json.loads((quick_suite / f"{name}.json").read_text()) == record["result"]
        assert (quick_suite / "logs" / f"{name}.log").is_file()
    results = {name: record["result"] for name, record in suite["benchmarks"].items()}

    data = results["data_pipeline"]
    assert data["corpus_generation"]["frames_per_second"] > 0
    assert data["corpus_generation_and_write"]["frames_per_second_with_write"] > 0
    assert data["datamodule"]["frames_per_s"] > 0 and data["datamodule"]["frame_size"] == 64

    metrics = results["metric_speed"]
    assert metrics["cpbd"]["speedup"] > 0 and metrics["cpbd"]["max_abs_diff"] < 1e-6
    assert all(metrics["ssim"][v]["speedup"] > 0 and metrics["ssim"][v]["max_abs_diff"] < 1e-6
               for v in ("wang", "skimage-default"))
    assert metrics["frechet_distance"]["speedup"] > 0 and metrics["frechet_distance"]["relative_diff"] < 1e-6
    assert "skipped" in metrics["fid_features_and_distance"]                       # --quick

    training = results["training_throughput"]
    assert training["environment"]["threads"] == 1 and training["workload"]["quick"]
    stages = {s["model"]: s for s in training["stages"]}
    assert set(stages) == STAGES                                     # the staged `lsp` itself is not trained
    for s in stages.values():
        assert s["device"] == "cpu" and s["frame_size"] == 64 and s["batch_size"] == 2 and s["timed_steps"] == 2
        assert s["steps_per_s"] > 0 and s["samples_per_s"] == pytest.approx(2 * s["steps_per_s"], rel=1e-3)
        assert 0 < s["compute_seconds_per_step_median"] <= s["seconds_per_step_median"] + 1e-3
    assert stages["lsp.renderer"]["window_seconds"] == 0.04         # the recipe's window where it fits the clips
    assert stages["lsp.mouth"]["parent"] == "lsp" and stages["lsp.mouth"]["stage"] == "mouth"

    (run,) = results["lsp_streaming"]["runs"]
    assert run["size"] == 64 and run["stream"]["frames_per_s"] > 0 and run["stream"]["real_time_factor"] > 0


@pytest.mark.slow                      # the quick_suite fixture runs every benchmark (~60 s)
def test_quick_suite_markdown_has_one_table_per_benchmark(quick_suite):
    text = (quick_suite / "perf.md").read_text()
    assert text.startswith("# Performance suite") and "quick settings" in text
    for name in NAMES:
        assert f"(`{name}`)" in text and f"| {name} | ok |" in text
    assert "| corpus generation, 64², audio included, 1 thread |" in text
    assert "| CPBD, 256² |" in text and "| FID end to end | skipped |" in text
    assert "| stage | device | precision | batch | window s | frame size | steps/s | samples/s |" in text
    assert all(f"| {stage} | cpu | 32 | 2 |" in text for stage in STAGES)
    assert "| cpu | fp32 | 64² | default |" in text
    separators = [line for line in text.splitlines() if line.startswith("|---|")]
    assert len(separators) == 1 + len(NAMES)                        # the status table and one per benchmark


def write_script(path: Path, body: str) -> Path:
    path.write_text("import argparse, json, sys\nparser = argparse.ArgumentParser()\n"
                    "parser.add_argument('--out')\nparser.add_argument('--quick', action='store_true')\n"
                    "args = parser.parse_args()\n" + textwrap.dedent(body))
    return path


def test_failing_benchmark_is_recorded_and_fails_the_suite(tmp_path, monkeypatch, capsys):
    perf = load_perf()
    good = write_script(tmp_path / "good.py", "json.dump({'value': 1.5}, open(args.out, 'w'))\n")
    bad = write_script(tmp_path / "bad.py", "print('boom: out of memory', file=sys.stderr)\nsys.exit(3)\n")
    silent = write_script(tmp_path / "silent.py", "pass\n")                  # exits 0 without writing its JSON
    monkeypatch.setattr(perf, "BENCHMARKS", [perf.Benchmark("bad", bad, "Bad"), perf.Benchmark("good", good, "Good"),
                                             perf.Benchmark("silent", silent, "Silent")])
    out = tmp_path / "results"
    out.mkdir()
    (out / "bad.json").write_text('{"previous": true}')

    assert perf.cli(["--quick", "--out-dir", str(out)]) == 1
    suite = json.loads((out / "perf.json").read_text())
    assert not suite["ok"] and suite["failed"] == ["bad", "silent"]
    bad_record, good_record = suite["benchmarks"]["bad"], suite["benchmarks"]["good"]
    assert bad_record["returncode"] == 3 and "boom: out of memory" in bad_record["stderr_tail"]
    assert bad_record["result"] is None and bad_record["command"][-1] == "--quick"
    silent_record = suite["benchmarks"]["silent"]
    assert silent_record["returncode"] == 1 and "no valid JSON" in silent_record["error"]
    assert good_record["returncode"] == 0 and good_record["result"] == {"value": 1.5}       # the suite went on
    assert json.loads((out / "good.json").read_text()) == {"value": 1.5}
    assert json.loads((out / "bad.json").read_text()) == {"previous": True}       # a failure keeps the last figures
    text = (out / "perf.md").read_text()
    assert "| bad | **failed** (exit 3) |" in text and "boom: out of memory" in text
    assert "| good | ok |" in text and "No summary table" in text
    assert "failed: bad, silent" in capsys.readouterr().out


def test_unknown_benchmark_is_refused(capsys):
    with pytest.raises(SystemExit) as exit_info:
        load_perf().main(["--only", "training_throughput,nope"])
    assert exit_info.value.code == 2 and "unknown benchmark(s) nope" in capsys.readouterr().err


def test_a_subset_never_replaces_the_full_suites_summary():
    perf = load_perf()
    assert perf.parse_args([]).out_dir == perf.RESULTS
    assert perf.parse_args(["--only", "metric_speed"]).out_dir == perf.RESULTS / "partial"
    assert perf.parse_args(["--quick"]).out_dir == perf.RESULTS / "quick"


def test_zoo_bench_perf_runs_the_suite(tmp_path):
    from zoo.cli import main

    assert main(["bench", "perf", "--quick", "--only", "metric_speed", "--out-dir", str(tmp_path)]) == 0
    suite = json.loads((tmp_path / "perf.json").read_text())
    assert suite["ok"] and list(suite["benchmarks"]) == ["metric_speed"]
    assert (tmp_path / "perf.md").is_file() and (tmp_path / "metric_speed.json").is_file()


def test_training_throughput_subset_keeps_the_other_rows(tmp_path):
    """Timing some stages with --models replaces their rows and keeps the earlier rows of the others."""
    sys.path.insert(0, str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location("training_throughput", BENCHMARKS / "training_throughput.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    row = lambda model, rate, **extra: {"model": model, "device": "cpu", "precision": "32", "steps_per_s": rate,  # noqa
                                        **extra}
    out = tmp_path / "training_throughput.json"
    assert module.kept_rows(out, [row("syncnet", 1.0)]) == []                        # nothing written yet
    out.write_text(json.dumps({"benchmark": "training_throughput", "environment": {"time": "T0"},
                               "stages": [row("syncnet", 5.0), row("lsp.apc", 1.2, measured_at="T-1")]}))
    kept = module.kept_rows(out, [row("syncnet", 6.0, measured_at="T1")])
    assert kept == [row("lsp.apc", 1.2, measured_at="T-1")]                          # syncnet is re-measured
    assert module.kept_rows(out, [row("lsp.renderer", 2.0)]) == [row("syncnet", 5.0, measured_at="T0"),
                                                                  row("lsp.apc", 1.2, measured_at="T-1")]


def test_zoo_bench_perf_outside_a_clone_is_one_line(tmp_path, monkeypatch):
    import zoo.bench

    monkeypatch.setattr(zoo.bench, "__file__", str(tmp_path / "site-packages" / "zoo" / "bench" / "__init__.py"))
    one_line_error(lambda: zoo.bench.run_perf(["--quick"]), "the performance suite is not in this installation (",
                   "benchmarks/perf.py); run it from a clone", error=ConfigError)
