"""``zoo bench`` on the tiny corpus with a tiny budget: the four files, resumption, reproducibility, bad input."""
from __future__ import annotations

import csv
import json
import shutil

import pytest

from zoo.bench.runner import MARKER
from zoo.cli import main

# LSP at test widths (the architecture is the default one); identity 0 only, every unseen identity.
TINY_BUDGET = """
description: tiny test budget
identities: [0]
unseen_identities: null
eval_window_seconds: 1.0
train_overrides: [trainer.progress_bar=none]
eval_overrides: [trainer.progress_bar=none]
models:
  lsp: [model.apc.hidden_size=32, model.mouth.hidden_size=32, model.headpose.residual_channels=16,
        model.headpose.dilation_channels=16, model.headpose.skip_channels=16, model.renderer.ngf=8,
        model.renderer.ndf=8, model.renderer.num_downs=4, renderer.trainer.max_epochs=1]
"""


def bench(tmp, runs, out, *extra, budget=None):
    return main(["bench", "--models", "lsp", "--budget", str(budget or tmp / "tiny.yaml"), "--out", str(out),
                 "experiment=smoke", "logger=csv", f"run.runs_dir={runs}", *extra])


@pytest.fixture(scope="module")
def first(tiny_corpus, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bench")
    (tmp / "tiny.yaml").write_text(TINY_BUDGET)
    assert bench(tmp, tmp / "runs", tmp / "out") == 0
    return tmp


def values(out):
    payload = json.loads((out / "leaderboard.json").read_text())
    return {(split, row["method"]): {k: m["value"] for k, m in row["metrics"].items()}
            for split, table in payload["tables"].items() for row in table["rows"]}


def test_writes_the_four_files_with_rows_columns_and_metadata(first):
    out = first / "out"
    payload = json.loads((out / "leaderboard.json").read_text())
    assert payload["dataset"]["name"] == "synth" and payload["budget"]["name"] == "tiny"
    assert payload["seed"] == 0 and payload["zoo_version"] and "git_commit" in payload
    assert "same windows" in payload["protocol"]
    test, unseen = payload["tables"]["test"], payload["tables"]["test_unseen"]
    assert [r["method"] for r in test["rows"]] == ["gt", "static", "lsp"]
    assert [r["method"] for r in unseen["rows"]] == ["gt", "static"]     # person-specific: seen identities only
    assert test["identities"] == [0] and unseen["identities"] == [2]
    lsp = test["rows"][2]
    assert lsp["protocol"] == "person-specific" and lsp["train_seconds"] > 0 and lsp["eval_seconds"] > 0
    assert set(lsp["train_config_hashes"]) == {"0"} and lsp["dataset"]["version"]
    m_lmd = lsp["metrics"]["M-LMD[synth-landmarks]"]
    assert m_lmd["higher_is_better"] is False and m_lmd["backbones"]["landmarks"] == "synth-landmarks"
    assert "mouth 48-67" in m_lmd["variant"] and m_lmd["dataset_level"] is False
    assert lsp["metrics"]["FID[synth-id]"]["dataset_level"] is True
    assert lsp["metrics"]["PSNR"]["higher_is_better"] is True
    gt = test["rows"][0]["metrics"]
    assert gt["PSNR"]["value"] == 100.0 and gt["M-LMD[synth-landmarks]"]["value"] == 0.0
    assert test["rows"][0]["num_clips"] == lsp["num_clips"] > 0

    rows = list(csv.DictReader((out / "leaderboard.csv").open()))
    assert [(r["table"], r["method"]) for r in rows] == [("test", "gt"), ("test", "static"), ("test", "lsp"),
                                                          ("test_unseen", "gt"), ("test_unseen", "static")]
    assert float(rows[2]["PSNR"]) == pytest.approx(lsp["metrics"]["PSNR"]["value"])
    assert {"train_seconds", "eval_seconds", "seed", "dataset_version", "git_commit", "train_config_hashes"} <= \
        set(rows[0])
    markdown = (out / "leaderboard.md").read_text()
    assert "| method | protocol | M-LMD[synth-landmarks] ↓" in markdown and "PSNR ↑" in markdown
    assert markdown.count("| lsp | person-specific |") == 1 and "## unseen identities" in markdown
    assert (out / "leaderboard.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_rerun_resumes_only_what_is_missing_and_logs_the_tables_to_wandb(first, capsys):
    from wandb_records import history_keys

    before = values(first / "out")
    cell = next((first / "runs" / "bench" / "bench-test" / "static").iterdir())
    shutil.rmtree(cell)                                           # as if interrupted while scoring static
    capsys.readouterr()
    assert bench(first, first / "runs", first / "out", "logger=wandb") == 0   # offline (tests' WANDB_MODE)
    log = capsys.readouterr().out
    assert "trained earlier" in log and "training in" not in log
    assert log.count("bench: scoring") == 1 and "scoring static on identity 0 (test)" in log
    assert values(first / "out") == before
    (records,) = (first / "runs" / "bench" / "wandb").glob("offline-run-*/run-*.wandb")
    keys = history_keys(records)
    assert {"test/leaderboard._type", "test_unseen/leaderboard._type",
            "test/M-LMD[synth-landmarks]_table._type"} <= keys       # the tables and one bar chart per metric


def test_same_seed_reproduces_the_numbers_from_scratch(first, tmp_path):
    assert bench(first, tmp_path / "runs", tmp_path / "out") == 0
    assert values(tmp_path / "out") == values(first / "out")


def test_rows_scored_on_different_windows_are_refused(first, tmp_path, capsys):
    shutil.copytree(first / "runs", tmp_path / "runs")
    (cell,) = (tmp_path / "runs" / "bench" / "bench-test" / "static").iterdir()
    results = cell / "results" / "test.json"
    record = json.loads(results.read_text())
    record["clips"] = record["clips"][1:]                         # as if static had skipped a window
    results.write_text(json.dumps(record))
    capsys.readouterr()
    assert bench(first, tmp_path / "runs", tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert err.startswith("error: leaderboard table 'test': rows were scored on different windows") and \
        err.count("\n") == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args, message", [
    (["--models", "nope"], "unknown method(s) nope in --models"),
    (["--budget", "nope"], "unknown budget 'nope'; valid budgets: full, small"),
])
def test_bad_arguments_are_one_line(tiny_corpus, tmp_path, capsys, args, message):
    assert main(["bench", *args, "experiment=smoke", f"run.runs_dir={tmp_path}", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


@pytest.mark.parametrize("identities, message", [
    ("[5]", "'identities' [5] has no clip in split 'test'"),
    ("[]", "'identities' is empty (leave it out for every identity of split 'test')"),
])
def test_budget_identity_missing_from_the_split_is_one_line(tiny_corpus, tmp_path, capsys, identities, message):
    (tmp_path / "b.yaml").write_text(TINY_BUDGET.replace("identities: [0]", f"identities: {identities}"))
    assert bench(tmp_path, tmp_path / "runs", tmp_path / "out", budget=tmp_path / "b.yaml") == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_config_hash_follows_every_setting_that_changes_a_result(tiny_corpus, tmp_path, monkeypatch):
    from zoo.bench.runner import Bench

    (tmp_path / "b.yaml").write_text(TINY_BUDGET)
    bench_ = Bench(["gt", "static", "lsp"], None, str(tmp_path / "b.yaml"), 0, tmp_path, ["experiment=smoke"])
    base = ["model.identity=0"]
    digest = bench_._hash("lsp", base, "v1")
    assert bench_._hash("lsp", base, "v1") == digest                                     # stable
    assert bench_._hash("lsp", [*base, "trainer.progress_bar=none", "logger=csv"], "v1") == digest   # cosmetic
    assert bench_._hash("lsp", [*base, "renderer.trainer.max_epochs=5"], "v1") != digest  # one stage's config
    assert bench_._hash("lsp", [*base, "model.mouth.lr=0.01"], "v1") != digest
    assert bench_._hash("lsp", ["model.identity=1"], "v1") != digest
    assert bench_._hash("lsp", base, "v2") != digest                                      # dataset version
    bench_._dataset_version = "synth-v1"
    scored = bench_.scoring_key(None)
    assert bench_.scoring_key({"config_hash": "abc"}) != scored                             # the checkpoint's run
    monkeypatch.setattr("zoo.evaluators.kit.KIT_VERSION", 99)
    assert bench_.scoring_key(None) != scored                                              # a new evaluator kit


def test_markers_name_checkpoints_inside_their_run_and_a_damaged_one_is_one_line(first, tmp_path, capsys):
    (marker,) = (first / "runs" / "bench" / "lsp").glob(f"bench-*/{MARKER}")
    recorded = json.loads(marker.read_text())["checkpoint"]
    assert recorded == "checkpoints/last.ckpt" and (marker.parent / recorded).is_file()    # movable runs_dir
    shutil.copytree(first / "runs", tmp_path / "runs")
    copied = tmp_path / "runs" / "bench" / "lsp" / marker.parent.name / MARKER
    copied.write_text('{"method": "lsp", "checkp')
    capsys.readouterr()
    assert bench(first, tmp_path / "runs", tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot parse {copied}: ") and err.endswith(
        f"(delete {copied.parent} to redo that run)\n") and err.count("\n") == 1, err
