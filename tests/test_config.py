"""Config composition: order, typed validation, one-line errors with exit code 2."""
from __future__ import annotations

import subprocess
import sys

import pytest

from zoo.bounds import in_interval
from zoo.cli import main
from zoo.config import LoggerConfig, RunConfig, TrainerConfig, compose, group_choices, merge_layer, schema_for
from zoo.data import DataConfig
from zoo.errors import ConfigError
from zoo.synth import SynthConfig

from helpers import assert_ranges_name_fields_and_hold_defaults


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_composition_order_overrides_win(tmp_path):
    extra = tmp_path / "extra.yaml"
    extra.write_text("trainer:\n  max_epochs: 7\ndata:\n  batch_size: 3\n")
    cfg = compose("lsp.apc", config_file=str(extra), overrides=["trainer=cpu", "data.batch_size=5"])
    assert cfg.trainer.accelerator == "cpu"            # trainer group
    assert cfg.trainer.max_epochs == 7                 # --config over the model file (20)
    assert cfg.data.batch_size == 5                    # key=value over --config
    assert cfg.data.fields == ["mel"]                  # model file over the data group
    assert cfg.model.prediction_steps == 3


def test_experiment_group_applies():
    cfg = compose("lsp.apc", overrides=["experiment=smoke"])
    assert cfg.run.name == "smoke" and cfg.data.synth.size == 64


@pytest.mark.parametrize("override, fragment", [
    (["trainer.max_epoch=3"], "unknown key 'trainer.max_epoch'"),
    (["model.hiden_size=3"], "unknown key 'model.hiden_size'"),
    (["trainer.max_epochs=many"], "wrong type for 'trainer.max_epochs'"),
    (["trainer=tpu"], "unknown trainer 'tpu'; valid trainer choices: cpu, ddp, default, gpu, slurm"),
    (["logger=tensorboard"], "unknown logger 'tensorboard'"),
    (["trainer.precision=8"], "invalid value '8' for 'trainer.precision'"),
    (["notakeyvalue"], "not of the form key=value"),
    (["model.lr=[1,"], "cannot parse override 'model.lr=[1,'"),
    (["data.synth=3"], "wrong type for 'data.synth' in override 'data.synth=3'"),
    (["data.fields={a: 1}"], "wrong type for 'data.fields' in override 'data.fields={a: 1}'"),
    (["trainer.max_epochs=${nope}"], "cannot resolve 'trainer.max_epochs': Interpolation key 'nope' not found"),
    (["run.model=static"], "run.model is 'static' but --model is 'lsp.apc'; set the model with --model only"),
    (["model.prediction_steps=0"], "model.prediction_steps must be in [1, inf), got 0"),
    (["trainer.max_epochs=-5"], "trainer.max_epochs must be in [-1, inf), got -5"),
    (["data.batch_size=0"], "data.batch_size must be in [1, inf), got 0"),
    (["data.synth.size=32"], "data.synth.size must be in [64, 512], got 32"),
    (["eval.metrics=[psnr,mlmd]"], "invalid metric 'mlmd' in 'eval.metrics'; valid choices: lmd, ssim, psnr"),
    (["run.save_videos=-7"], "run.save_videos must be in [-1, inf), got -7"),
    (["--data", "synth", "data=folder"], "--data synth and the override data=folder disagree"),
])
def test_bad_overrides_one_line(capsys, override, fragment):
    code, _, err = run_cli(capsys, "config", "--model", "lsp.apc", *override)
    assert code == 2
    assert fragment in err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err


def test_unknown_key_lists_valid_keys():
    with pytest.raises(ConfigError, match=r"valid keys here: .*max_epochs"):
        compose("lsp.apc", overrides=["trainer.max_epoch=3"])


def test_unknown_model_lists_models(capsys):
    code, _, err = run_cli(capsys, "config", "--model", "nope")
    assert code == 2 and "unknown model 'nope'; valid models:" in err and "static" in err and "gt" in err


def test_unknown_data_lists_choices(capsys):
    code, _, err = run_cli(capsys, "config", "--model", "static", "--data", "voxceleb9")
    assert code == 2 and "unknown data 'voxceleb9'; valid data choices: folder, synth" in err


def test_missing_config_file(capsys, tmp_path):
    code, _, err = run_cli(capsys, "config", "--model", "static", "--config", str(tmp_path / "nope.yaml"))
    assert code == 2 and "--config file not found" in err and "nope.yaml" in err


def test_bad_key_inside_config_file_names_the_file(capsys, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  batchsize: 4\n")
    code, _, err = run_cli(capsys, "config", "--model", "static", "--config", str(bad))
    assert code == 2 and "unknown key 'data.batchsize'" in err and "bad.yaml" in err


@pytest.mark.parametrize("text, fragment", [
    ("- a\n- b\n", "must hold a mapping at the top level"),
    ("trainer: [\n", "cannot parse"),
    ("trainer:\n  max_epochs: ${oops\n", "cannot parse"),
    ("model:\n  lr: ${trainer.nope}\n", "cannot resolve 'model.lr': Interpolation key 'trainer.nope' not found"),
    ("trainer: [1, 2]\n", "wrong type for 'trainer' in"),
])
def test_bad_config_file_one_line(capsys, tmp_path, text, fragment):
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    code, _, err = run_cli(capsys, "config", "--model", "lsp.apc", "--config", str(bad))
    assert code == 2 and fragment in err and err.count("\n") == 1
    assert "bad.yaml" in err or "cannot resolve" in err      # the merged config no longer knows the file


def test_ranges_of_nested_stage_configs_name_the_full_key(capsys):
    code, _, err = run_cli(capsys, "config", "--model", "lsp", "model.renderer.ema_decay=1.0")
    assert code == 2 and err == "error: model.renderer.ema_decay must be in [0, 1), got 1.0\n"
    code, _, err = run_cli(capsys, "config", "--model", "lsp", "model.lle_percent=1.5")
    assert code == 2 and err == "error: model.lle_percent must be in [0, 1], got 1.5\n"
    assert compose("lsp", overrides=["model.renderer.ema_decay=0", "trainer.max_steps=-1"]).model.renderer.ema_decay == 0


@pytest.mark.parametrize("section", [RunConfig, TrainerConfig, LoggerConfig, DataConfig, SynthConfig])
def test_section_ranges_name_fields_and_hold_defaults(section):
    assert_ranges_name_fields_and_hold_defaults(section)


def test_intervals_are_read_as_in_mathematics():
    assert in_interval(0, "[0, 1)") and not in_interval(1, "[0, 1)") and in_interval(1, "[0, 1]")
    assert not in_interval(0, "(0, inf)") and in_interval(1e9, "(0, inf)") and in_interval(-3, "[-inf, 0]")
    with pytest.raises(ValueError, match="not an interval"):
        in_interval(0, "0..1")


def test_other_omegaconf_errors_name_the_source():
    with pytest.raises(ConfigError, match=r"^invalid config in budget.yaml: no viable alternative at input"):
        merge_layer(schema_for("lsp.apc"), {"model": {"lr": "${"}}, "budget.yaml")


def test_interpolations_resolve_at_composition():
    assert compose("lsp.apc", overrides=["trainer.max_epochs=${run.seed}", "run.seed=4"]).trainer.max_epochs == 4


def test_groups_exist():
    assert group_choices("trainer") == ["cpu", "ddp", "default", "gpu", "slurm"]
    assert group_choices("logger") == ["csv", "none", "wandb"]


def test_config_command_prints_model_fields(capsys):
    code, out, _ = run_cli(capsys, "config", "--model", "static")
    assert code == 0 and "model: static" in out and "landmarks2d" in out


def test_debug_shows_traceback():
    with pytest.raises(ConfigError):
        main(["--debug", "config", "--model", "nope"])


def test_console_script_exit_code():
    from conftest import clean_subprocess_env

    proc = subprocess.run([sys.executable, "-m", "zoo.cli", "config", "--model", "static", "trainer.max_epoch=1"],
                          capture_output=True, text=True, timeout=120, env=clean_subprocess_env())
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: unknown key 'trainer.max_epoch'")
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_staged_model_takes_stage_only_overrides(capsys):
    """`<stage>.*` overrides belong to one stage of a staged model (zoo.pipeline); `zoo config` accepts them as
    `zoo fit` does, while an unknown top-level key still fails."""
    code, out, _ = run_cli(capsys, "config", "--model", "lsp", "renderer.trainer.max_epochs=2")
    assert code == 0 and "model: lsp" in out
    code, _, err = run_cli(capsys, "config", "--model", "lsp", "nonsense.trainer.max_epochs=2")
    assert code == 2 and "unknown key 'nonsense'" in err


def test_limit_batches_keep_ints_as_batches_and_floats_as_fractions(capsys):
    cfg = compose("static", overrides=["trainer.limit_train_batches=1", "trainer.limit_val_batches=1.0",
                                       "trainer.limit_test_batches=0", "trainer.limit_predict_batches=0.25"])
    limits = [cfg.trainer[f"limit_{s}_batches"] for s in ("train", "val", "test", "predict")]
    assert limits == [1, 1.0, 0, 0.25] and [type(v) for v in limits] == [int, float, int, float]
    for value in ("1.5", "-1", "abc", "true"):
        code, _, err = run_cli(capsys, "config", "--model", "static", f"trainer.limit_val_batches={value}")
        assert code == 2 and err.startswith("error: trainer.limit_val_batches must be an int >= 0 (batches) or a "
                                            "float in [0, 1] (a fraction of them), got ") and err.count("\n") == 1


def test_every_stage_override_is_checked_by_zoo_config(capsys):
    code, _, err = run_cli(capsys, "config", "--model", "lsp", "renderer.trainer.bogus=1")
    assert code == 2 and err.startswith("error: unknown key 'trainer.bogus' in override 'renderer.trainer.bogus=1'")
    code, _, err = run_cli(capsys, "config", "--model", "lsp", "renderer.trainer=nope")
    assert code == 2 and err.startswith("error: unknown trainer 'nope'")
    code, _, err = run_cli(capsys, "config", "--model", "lsp", "trainer.gradient_clip_val=0.5")
    assert code == 2 and err == ("error: stage renderer (lsp.renderer) steps its optimisers itself (manual "
                                 "optimisation), so Lightning cannot apply trainer.gradient_clip_val=0.5: leave it "
                                 "unset for this stage (the other stages take <stage>.trainer.<key>=... of their "
                                 "own)\n")
    code, _, err = run_cli(capsys, "config", "--model", "lsp", "mouth.trainer.gradient_clip_val=0.5",
                           "mouth.trainer.accumulate_grad_batches=2")
    assert code == 0, err
