"""End-to-end harness: fit / test / resume / run directories / loggers, on the tiny synthetic corpus."""
from __future__ import annotations

import csv
import json
import logging
import os

import av
import pytest
import torch

from zoo.cli import main

SMOKE = ["experiment=smoke", "trainer.progress_bar=none"]


def zoo(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().err


@pytest.fixture
def runs(tmp_path) -> str:
    return f"run.runs_dir={tmp_path / 'runs'}"


def test_test_static_and_gt_write_videos_with_sound(capsys, tiny_corpus, runs, tmp_path):
    for model in ("static", "gt"):
        code, err = zoo(capsys, "test", "--model", model, *SMOKE, runs, "logger=none", "run.save_videos=2")
        assert code == 0, err
    results = {m: json.loads((tmp_path / "runs" / m / "smoke" / "results" / "test.json").read_text())
               for m in ("static", "gt")}
    gt, static = results["gt"], results["static"]
    assert gt["num_clips"] == static["num_clips"] > 0
    agg_gt, agg_static = gt["aggregate"], static["aggregate"]
    assert agg_gt["PSNR"] == pytest.approx(100.0)                    # capped infinity: identical frames
    assert agg_gt["SSIM[wang]"] == pytest.approx(1.0) and agg_static["SSIM[wang]"] < 0.99
    assert agg_gt["M-LMD[synth-landmarks]"] == 0.0 and agg_static["M-LMD[synth-landmarks]"] > 0
    assert agg_static["PSNR"] < 40
    assert set(agg_gt) == set(agg_static) >= {"FID[synth-id]", "CSIM[synth-id]", "Sync_conf[synth-syncnet]",
                                              "LSE-D[synth-syncnet]", "CPBD", "F-LMD[synth-landmarks]"}
    assert gt["metrics"]["FID[synth-id]"]["backbones"]["fid"] == "synth-id"
    assert gt["dataset"]["version"] and gt["seed"] == 0
    videos = sorted((tmp_path / "runs" / "static" / "smoke" / "media" / "test").glob("*.mp4"))
    assert len(videos) == 2
    with av.open(str(videos[0])) as container:
        kinds = {s.type for s in container.streams}
        codecs = {s.codec_context.name for s in container.streams}
    assert kinds == {"video", "audio"} and "h264" in codecs and "aac" in codecs
    assert (tmp_path / "runs" / "static" / "smoke" / "config.test.yaml").is_file()


def test_fit_checkpoints_config_csv_and_resume(capsys, tiny_corpus, runs, tmp_path, monkeypatch):
    import pytorch_lightning as pl

    args = ["fit", "--model", "lsp.apc", *SMOKE, runs, "logger=csv", "model.hidden_size=32", "trainer=cpu"]
    code, err = zoo(capsys, *args)
    assert code == 0, err
    run_dir = tmp_path / "runs" / "lsp.apc" / "smoke"
    ckpts = {p.name for p in (run_dir / "checkpoints").glob("*.ckpt")}
    assert "last.ckpt" in ckpts and any(n.startswith("best-") for n in ckpts)
    assert "hidden_size: 32" in (run_dir / "config.yaml").read_text()
    rows = list(csv.DictReader(open(run_dir / "logs" / "version_0" / "metrics.csv")))
    assert any(r.get("train/loss") for r in rows) and any(r.get("val/loss") for r in rows)
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["epoch"] == 0

    code, err = zoo(capsys, *args)                        # same run again without --resume: refused
    assert code == 2 and "already has checkpoints; pass --resume auto" in err

    code, err = zoo(capsys, *args, "--resume", "auto", "trainer.max_epochs=2")
    assert code == 0, err
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["epoch"] == 1

    code, err = zoo(capsys, "test", "--model", "lsp.apc", *SMOKE, runs, "logger=none", "model.hidden_size=32")
    assert code == 0, err
    tested = {}
    original_test = pl.Trainer.test

    def spy_on_the_tested_weights(trainer, model, *args, **kwargs):
        tested.update({k: v.clone() for k, v in model.state_dict().items()})
        return original_test(trainer, model, *args, **kwargs)

    monkeypatch.setattr(pl.Trainer, "test", spy_on_the_tested_weights)
    # the model's settings come from its checkpoint: no need to repeat model.hidden_size=32
    code, err = zoo(capsys, "test", "--model", "lsp.apc", "--ckpt", str(run_dir / "checkpoints" / "last.ckpt"),
                    *SMOKE, runs, "logger=none", "run.name=from-ckpt")
    assert code == 0, err
    saved = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    assert tested.keys() == saved.keys() and all(torch.equal(tested[k], saved[k]) for k in saved)
    assert "hidden_size: 32" in (tmp_path / "runs" / "lsp.apc" / "from-ckpt" / "config.test.yaml").read_text()

    last = run_dir / "checkpoints" / "last.ckpt"     # a config of other sizes: one line before anything runs
    for command in (["test", "--ckpt", str(last)], ["fit", "--resume", str(last)]):
        code, err = zoo(capsys, command[0], "--model", "lsp.apc", *command[1:], *SMOKE, runs, "logger=none",
                        "model.hidden_size=48")
        assert code == 2 and err.startswith(f"error: checkpoint {last} does not fit model 'lsp.apc' as configured "
                                            f"(another model's, or trained with other model.* settings?): size "
                                            f"mismatch for apc.") and err.count("\n") == 1, err
    foreign = tmp_path / "foreign.ckpt"       # another model's settings: one line naming the checkpoint's key
    torch.save({"state_dict": {}, "hyper_parameters": {"not_an_apc_key": 1}}, foreign)
    code, err = zoo(capsys, "test", "--model", "lsp.apc", "--ckpt", str(foreign), *SMOKE, runs, "logger=none")
    assert code == 2 and err.startswith(f"error: unknown key 'model.not_an_apc_key' in the hyper-parameters of "
                                        f"checkpoint {foreign} (another model's") and err.count("\n") == 1, err
    plain = tmp_path / "plain.pt"
    torch.save({"apc.weight": torch.zeros(1)}, plain)
    code, err = zoo(capsys, "test", "--model", "lsp.apc", "--ckpt", str(plain), *SMOKE, runs, "logger=none")
    assert code == 2 and err == f"error: {plain} is not a checkpoint: it has no state_dict\n", err


def test_fit_output_keeps_lightning_info_without_its_litlogger_tip(capsys, tiny_corpus, runs):
    seen = []
    handler = logging.Handler()
    handler.emit = seen.append
    lightning = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    lightning.addHandler(handler)
    try:
        code, err = zoo(capsys, "fit", "--model", "lsp.apc", *SMOKE, runs, "logger=none", "model.hidden_size=32",
                        "trainer=cpu")
    finally:
        lightning.removeHandler(handler)
    assert code == 0, err
    messages = [record.getMessage() for record in seen]
    assert any(m.startswith("GPU available") for m in messages), messages
    assert not any("litlogger" in m for m in messages), messages


def test_last_checkpoint_is_the_last_epoch_when_the_best_is_earlier(capsys, tiny_corpus, runs, tmp_path):
    # "best" = lowest epoch: epoch 0 stays best, so only the dedicated callback can move last.ckpt on
    code, err = zoo(capsys, "fit", "--model", "lsp.apc", *SMOKE, runs, "logger=none", "model.hidden_size=32",
                    "trainer=cpu", "trainer.max_epochs=2", "run.monitor=epoch", "run.monitor_mode=min")
    assert code == 0, err
    ckpts = tmp_path / "runs" / "lsp.apc" / "smoke" / "checkpoints"
    (best,) = ckpts.glob("best-*.ckpt")
    assert torch.load(best, weights_only=False)["epoch"] == 0
    assert torch.load(ckpts / "last.ckpt", weights_only=False)["epoch"] == 1


def test_resume_missing_checkpoint(capsys, runs, tmp_path):
    code, err = zoo(capsys, "fit", "--model", "lsp.apc", *SMOKE, runs, "--resume", str(tmp_path / "nope.ckpt"))
    assert code == 2 and err.strip() == f"error: --resume checkpoint not found: {tmp_path / 'nope.ckpt'}"


@pytest.mark.parametrize("argv, message", [
    (["fit", "--model", "lsp", "--resume", "auto"],
     "'lsp' trains in stages and resumes them by itself: rerun the same command without --resume (--force retrains)"),
    (["validate", "--model", "lsp.apc", "--ckpt", "{tmp}/nope.ckpt"], "--ckpt checkpoint not found: {tmp}/nope.ckpt"),
    (["test", "--model", "gt", "--data", "folder"], "data 'folder' needs data.root=<prepared dataset directory>"),
])
def test_run_resolution_errors_are_one_line(capsys, runs, tmp_path, argv, message):
    code, err = zoo(capsys, *[a.format(tmp=tmp_path) for a in argv], runs)
    assert code == 2 and err == f"error: {message.format(tmp=tmp_path)}\n"


def test_library_callers_get_the_errors_the_cli_parser_prevents():
    from zoo.errors import ConfigError
    from zoo.harness import prepare

    with pytest.raises(ConfigError, match=r"^unknown command 'train'; valid: fit, "):
        prepare("train", "static")
    with pytest.raises(ConfigError, match=r"^--resume only applies to `zoo fit`; use --ckpt PATH for `zoo test`$"):
        prepare("test", "lsp.apc", resume="auto")


def test_other_ranks_give_up_waiting_for_the_evaluator_kit(tiny_corpus, tmp_path, monkeypatch):
    # torchrun / srun start every rank at once; rank 0 trains the kit and the others wait for its kit.json
    from zoo.errors import DataError
    from zoo.harness import build_datamodule, prepare, prepare_evaluation

    run = prepare("test", "static", overrides=[*SMOKE, f"eval.kit_dir={tmp_path / 'kits'}"])
    clock = iter([0.0, 7 * 3600.0])
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setattr("zoo.harness.time.time", lambda: next(clock))
    monkeypatch.setattr("zoo.harness.time.sleep", lambda seconds: None)
    with pytest.raises(DataError, match=r"^timed out waiting for rank 0 to train the evaluator kit at .*kits"):
        prepare_evaluation(run.cfg, build_datamodule(run.cfg))


def test_evaluate_untrained_model_needs_checkpoint(capsys, runs):
    code, err = zoo(capsys, "test", "--model", "lsp.apc", *SMOKE, runs)
    assert code == 2 and "no checkpoint found for model 'lsp.apc'" in err


@pytest.mark.parametrize("stage, fields", [
    ("lsp.apc", ["mel"]),
    ("lsp.mouth", ["mel", "landmarks3d", "pose", "audio"]),
    ("lsp.headpose", ["mel", "pose", "landmarks3d", "audio"]),
    ("lsp.renderer", ["frames", "audio", "landmarks2d", "shoulders2d"]),
])
def test_stages_load_only_the_fields_they_use(runs, stage, fields):
    # the audio stages never read frames; loading them anyway cost the mouth stage a fifth of its time
    from zoo.harness import prepare

    assert prepare("fit", stage, overrides=[runs]).cfg.data.fields == fields


def test_fit_baseline_refused(capsys, runs):
    code, err = zoo(capsys, "fit", "--model", "static", *SMOKE, runs)
    assert code == 2 and "has nothing to train" in err


def test_missing_dataset_dir(capsys, runs, tmp_path):
    code, err = zoo(capsys, "test", "--model", "gt", "--data", "folder", f"data.root={tmp_path / 'absent'}", runs)
    assert code == 2 and "dataset directory not found" in err and "absent" in err


def test_wandb_offline_run_holds_config_losses_videos(capsys, tiny_corpus, runs, tmp_path):
    from wandb_records import config_values, history_keys

    code, err = zoo(capsys, "fit", "--model", "lsp.apc", *SMOKE, runs, "logger=wandb", "model.hidden_size=32")
    assert code == 0, err
    code, err = zoo(capsys, "test", "--model", "static", *SMOKE, runs, "logger=wandb", "run.save_videos=1")
    assert code == 0, err
    fit_run = next((tmp_path / "runs" / "lsp.apc" / "smoke" / "wandb").glob("offline-run-*"))
    log = next(fit_run.glob("*.wandb"))
    assert {"train/loss", "val/loss"} <= history_keys(log)
    assert config_values(log)["model"]["hidden_size"] == 32
    test_run = next((tmp_path / "runs" / "static" / "smoke" / "wandb").glob("offline-run-*"))
    assert list((test_run / "files" / "media" / "videos").rglob("*.mp4"))


def test_wandb_disabled_stays_disabled_for_every_run_of_the_process(capsys, tiny_corpus, runs, tmp_path,
                                                                    monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    for name in ("first", "second"):                 # e.g. the runs of one `zoo bench`
        code, err = zoo(capsys, "test", "--model", "static", *SMOKE, runs, "logger=wandb", "eval.metrics=[psnr]",
                        f"run.name={name}")
        assert code == 0, err
        assert os.environ["WANDB_MODE"] == "disabled"
    assert not list((tmp_path / "runs").rglob("offline-run-*"))


def test_validation_videos_every_n_epochs_and_the_last(tmp_path):
    from types import SimpleNamespace

    from zoo.evaluation import ValidationVideos

    videos = ValidationVideos(tmp_path, num_videos=1, every_n_epochs=4)
    due = [videos.due(SimpleNamespace(current_epoch=e, max_epochs=10)) for e in range(10)]
    assert [e for e, d in enumerate(due) if d] == [3, 7, 9]          # epochs 4, 8 and the last (10)
    assert all(ValidationVideos(tmp_path).due(SimpleNamespace(current_epoch=e, max_epochs=3)) for e in range(3))
    endless = [videos.due(SimpleNamespace(current_epoch=e, max_epochs=-1)) for e in range(8)]   # no last epoch
    assert [e for e, d in enumerate(endless) if d] == [3, 7]


def test_video_every_n_epochs_checked_and_kept_from_the_stage_config(capsys, tiny_corpus, runs):
    from zoo.config import compose

    # The LSP head-pose stage file sets it; the logger group merged after it must not reset it.
    assert compose("lsp.headpose", overrides=["logger=wandb"]).logger.video_every_n_epochs == 6
    code, err = zoo(capsys, "fit", "--model", "syncnet", *SMOKE, runs, "logger=csv", "logger.video_every_n_epochs=0")
    assert code == 2 and err.strip().endswith("logger.video_every_n_epochs must be in [1, inf), got 0")


@pytest.mark.parametrize("setting, fragment", [
    ("trainer.accelerator=banana", "invalid accelerator name"),
    ("trainer.strategy=foo", "invalid strategy name"),
    ("trainer.devices=0", "devices=0"),
    ("trainer.max_time=abc", "not a valid duration"),
])
def test_a_trainer_setting_lightning_refuses_is_one_line_before_anything_runs(capsys, tiny_corpus, runs, tmp_path,
                                                                             monkeypatch, setting, fragment):
    from zoo import harness

    monkeypatch.setattr(harness, "prepare_evaluation", lambda *a: pytest.fail("the kit came first"))
    code, err = zoo(capsys, "test", "--model", "gt", *SMOKE, runs, "logger=none", setting)
    assert code == 2 and err.startswith("error: invalid trainer.* setting: ") and fragment in err, err
    assert err.count("\n") == 1


def test_evaluating_a_training_run_keeps_its_config_and_never_pairs_old_results(capsys, tiny_corpus, runs, tmp_path,
                                                                               monkeypatch):
    import pytorch_lightning as pl

    from zoo.errors import ConfigError

    code, err = zoo(capsys, "fit", "--model", "lsp.apc", *SMOKE, runs, "logger=none", "model.hidden_size=32",
                    "trainer=cpu")
    assert code == 0, err
    run_dir = tmp_path / "runs" / "lsp.apc" / "smoke"
    trained_config = (run_dir / "config.yaml").read_bytes()
    evaluate = ["validate", "--model", "lsp.apc", "--ckpt", str(run_dir), *SMOKE, runs, "logger=none"]
    code, err = zoo(capsys, *evaluate)          # a run directory as --ckpt, evaluated into that run
    assert code == 0, err
    assert (run_dir / "config.yaml").read_bytes() == trained_config      # the evaluation has its own file
    assert (run_dir / "config.validate.yaml").is_file()
    (run_dir / "config.validate.yaml").unlink()
    code, err = zoo(capsys, *evaluate, "trainer.max_time=abc")           # refused by Lightning: nothing written
    assert code == 2 and "not a valid duration" in err
    assert not (run_dir / "config.validate.yaml").exists()
    stale = run_dir / "results" / "validate.json"
    stale.parent.mkdir(exist_ok=True)
    stale.write_text('{"from": "an earlier evaluation"}')

    def fail(*args, **kwargs):
        raise ConfigError("the evaluation failed")

    monkeypatch.setattr(pl.Trainer, "validate", fail)
    code, err = zoo(capsys, *evaluate)
    assert code == 2 and err == "error: the evaluation failed\n"
    assert (run_dir / "config.validate.yaml").is_file() and not stale.exists()   # no results it did not produce


def test_a_manually_optimised_model_refuses_clipping_and_accumulation_before_it_runs(capsys, runs, tmp_path):
    for setting in ("trainer.gradient_clip_val=1", "trainer.accumulate_grad_batches=2"):
        code, err = zoo(capsys, "fit", "--model", "lsp.renderer", *SMOKE, runs, "logger=none", setting)
        assert code == 2 and err.startswith("error: model 'lsp.renderer' steps its optimisers itself (manual "
                                            "optimisation), so Lightning cannot apply trainer.") and \
            err.count("\n") == 1, err
    assert not (tmp_path / "runs").exists()


def test_a_terminated_fit_exits_143_and_says_how_to_continue(tiny_corpus, tmp_path):
    import signal
    import subprocess
    import sys
    import time

    from conftest import clean_subprocess_env

    run_dir = tmp_path / "runs" / "lsp.apc" / "smoke"
    command = [sys.executable, "-m", "zoo.cli", "fit", "--model", "lsp.apc", *SMOKE, f"run.runs_dir={tmp_path / 'runs'}",
               "logger=none", "model.hidden_size=32", "trainer=cpu", "trainer.max_epochs=100000"]
    process = subprocess.Popen(command, env=clean_subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    try:
        deadline = time.time() + 240
        while not (run_dir / "checkpoints" / "last.ckpt").is_file():    # training, past its first epoch
            assert process.poll() is None and time.time() < deadline, process.communicate()
            time.sleep(0.2)
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 143, err
    assert (f"error: terminated (SIGTERM); run directory: {run_dir} (--resume auto with run.name=smoke continues "
            f"from {run_dir / 'checkpoints' / 'last.ckpt'})") in err


def test_a_terminated_bench_exits_143(monkeypatch, capsys):
    """The leaderboard's fits and tests are stopped by SIGTERM the same way (Lightning's SystemExit without a code)."""
    from pytorch_lightning.utilities.exceptions import SIGTERMException

    import zoo.bench

    def terminated(*args, **kwargs):
        raise SIGTERMException()

    monkeypatch.setattr(zoo.bench, "run_leaderboard", terminated)
    assert main(["bench"]) == 143
    assert capsys.readouterr().err == ("error: terminated (SIGTERM) (the same command again continues from what it "
                                       "finished)\n")


@pytest.mark.parametrize("world_size, rank", [(2, 0), (2, 1), (1, 0)])
def test_seed_per_rank_gives_ranks_their_own_noise_and_leaves_one_process_alone(world_size, rank):
    from types import SimpleNamespace

    from zoo.harness import SeedPerRank

    def draws_at_fit_start(callback=None) -> torch.Tensor:
        torch.manual_seed(7)                             # seed_everything(run.seed) on every rank
        torch.rand(3)                                    # model construction uses the generator
        if callback:
            callback.on_fit_start(SimpleNamespace(world_size=world_size, global_rank=rank), None)
        return torch.rand(4)                             # the first dropout mask

    drawn = draws_at_fit_start(SeedPerRank(7))
    if world_size == 1:
        assert torch.equal(drawn, draws_at_fit_start())
    else:
        assert torch.equal(drawn, torch.rand(4, generator=torch.Generator().manual_seed(7 + rank)))
