"""LSP end to end on the tiny corpus: staged fit (skip, force, stale stages), assembly, zoo test.

Prediction and streaming from the same trained model: test_lsp_inference.py."""
from __future__ import annotations

import copy
import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from lsp.model import LSP
from lsp.stages.renderer import RendererConfig, RendererStage
from zoo.cli import main
from zoo.harness import prepare
from zoo.errors import ConfigError, WeightsError

from helpers import LSP_SMALL as SMALL
from helpers import one_line_error


@pytest.fixture(scope="module")
def trained(lsp_run):
    return lsp_run


@pytest.fixture(scope="module")
def model(lsp_model):
    return lsp_model


def test_staged_fit_writes_every_stage_and_the_assembled_model(trained, model):
    for key in ("apc", "mouth", "headpose", "renderer"):
        record = json.loads((trained / key / "stage.json").read_text())
        assert record["model"] == f"lsp.{key}" and (trained / key / "config.yaml").is_file()
        assert (trained / key / "logs" / "version_0" / "metrics.csv").is_file()
    assert model.profile.fitted and int(model.profile.identity) == 0
    assert model.profile.candidates.shape == (4, 3, 64, 64) and model.profile.apc_base.shape[1] == 32
    renderer_metrics = (trained / "renderer" / "logs" / "version_0" / "metrics.csv").read_text()
    logged = set(renderer_metrics.split("\n")[0].split(","))
    assert {"train/g_mouth_l1", "train/g_mouth_gan", "train/g_mouth_feat"} <= logged
    # each person stage logged a validation video with sound
    assert list((trained / "renderer" / "media" / "val").glob("*.mp4"))


def test_assembled_renderer_is_the_weight_average(trained, model):
    stage = torch.load(trained / "renderer" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    average, raw = stage["state_dict"], stage["current_model_state"]    # zoo.gan.ExponentialMovingAverage
    key = next(k for k in average if k.startswith("generator.") and k.endswith("weight"))
    assert not torch.equal(average[key], raw[key])
    torch.testing.assert_close(model.renderer.state_dict()[key.removeprefix("generator.")], average[key])
    # both discriminators are trained and checkpointed with the stage, and left out of the assembled model
    assert any(k.startswith("mouth_discriminator.") for k in average)
    assert not any("discriminator" in k for k in model.state_dict())


def test_the_mouth_discriminator_is_optional():
    """LSP's own recipe (``lambda_mouth_gan=0``) builds the one full-frame discriminator only."""
    assert RendererStage(RendererConfig(lambda_mouth_gan=0)).mouth_discriminator is None
    mouth = RendererStage(RendererConfig()).mouth_discriminator
    assert mouth.num_scales == 1 and mouth.discriminators[0].model0[0].in_channels == 4    # edge map + RGB crop


def test_rerun_skips_finished_stages_and_force_retrains(trained, tmp_path, capsys):
    shutil.copytree(trained.parent, tmp_path / "lsp")        # the session's run stays as the other tests load it
    runs, trained = tmp_path, tmp_path / "lsp" / trained.name
    before = (trained / "mouth" / "stage.json").stat().st_mtime
    assert main(["fit", "--model", "lsp", *SMALL, f"run.runs_dir={runs}"]) == 0
    out = capsys.readouterr().out
    assert out.count("finished earlier") == 4
    assert (trained / "mouth" / "stage.json").stat().st_mtime == before
    # the assembled config records what the stages were trained with, as when they trained in the same run
    assembled = (trained / "config.yaml").read_text()
    apc = trained / "apc" / json.loads((trained / "apc" / "stage.json").read_text())["checkpoint"]
    assert assembled.count(f"apc_ckpt: {apc}") == 2 and assembled.count("apc_hidden_size: 32") == 2
    assert main(["fit", "--model", "lsp", *SMALL, f"run.runs_dir={runs}", "--force"]) == 0
    assert "finished earlier" not in capsys.readouterr().out
    assert (trained / "mouth" / "stage.json").stat().st_mtime > before
    assert LSP.load(trained / "checkpoints" / "last.ckpt").profile.fitted


def test_force_under_ddp_retrains_every_stage_on_every_rank(trained, monkeypatch):
    # A rank other than 0 deletes nothing, so it must not skip or resume from the files rank 0 is deleting
    import zoo.harness
    from zoo.pipeline import fit_staged

    started = []
    monkeypatch.setattr(zoo.harness, "is_rank_zero_process", lambda: False)
    monkeypatch.setattr(zoo.harness, "execute", lambda run: started.append((run.run_dir.name, run.ckpt_path)))
    run = prepare("fit", "lsp", overrides=[*SMALL, f"run.runs_dir={trained.parents[1]}"], force=True)
    assert fit_staged(run, *run.sources, force=True) == {}
    assert started == [(key, None) for key in ("apc", "mouth", "headpose", "renderer")]


def test_a_finished_stage_trained_otherwise_is_refused_before_anything_trains(trained, tmp_path, capsys):
    shutil.copytree(trained.parent, tmp_path / "lsp")
    run = tmp_path / "lsp" / "smoke"
    markers = {key: (run / key / "stage.json").read_bytes() for key in ("apc", "mouth", "headpose", "renderer")}
    fit = ["fit", "--model", "lsp", *SMALL, f"run.runs_dir={tmp_path}"]
    for change in ("model.mouth.lr=0.5", "mouth.trainer.max_epochs=3", "data.batch_size=3", "run.seed=1"):
        assert main([*fit, change]) == 2
        err = capsys.readouterr().err
        stage = "mouth" if "mouth" in change else "apc"        # the first stage the change reaches
        assert err.startswith(f"error: stage {stage} finished earlier ({run / stage / 'stage.json'}) but it was "
                              f"trained with other settings") and "--force retrains every stage" in err, err
        assert err.count("\n") == 1
    # a stage that read the checkpoint of an earlier stage which trains again now
    shutil.rmtree(run / "apc")
    assert main(fit) == 2
    assert capsys.readouterr().err == (f"error: stage mouth finished earlier ({run / 'mouth' / 'stage.json'}) with "
                                       f"the checkpoint of stage apc, which is not finished and trains again now; "
                                       f"refused rather than retraining mouth (nothing is lost): --force retrains "
                                       f"every stage\n")
    # a marker of a zoo that recorded no hash
    shutil.copytree(trained / "apc", run / "apc")
    record = json.loads(markers["mouth"])
    del record["config_hash"]
    (run / "mouth" / "stage.json").write_text(json.dumps(record))
    assert main(fit) == 2
    assert "but its marker records no config hash (an older zoo's)" in capsys.readouterr().err
    assert {key: (run / key / "stage.json").read_bytes() for key in ("apc", "headpose", "renderer")} == \
        {key: markers[key] for key in ("apc", "headpose", "renderer")}        # nothing was retrained


def test_a_stage_hash_follows_the_prepared_dataset_not_its_path(tiny_corpus, tmp_path):
    from zoo.pipeline import stage_hash

    def hash_with(root: Path) -> str:
        return stage_hash(prepare("fit", "lsp.apc", "folder", overrides=[f"data.root={root}"]).cfg, {})

    header = json.loads((tiny_corpus / "dataset.json").read_text())
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "dataset.json").write_text(json.dumps(header))
    assert hash_with(tmp_path / "a") == hash_with(tmp_path / "b")        # the same dataset in another place
    (tmp_path / "b" / "dataset.json").write_text(json.dumps({**header, "version": "other"}))
    assert hash_with(tmp_path / "a") != hash_with(tmp_path / "b")
    one_line_error(lambda: hash_with(tmp_path / "c"), f"cannot parse {tmp_path / 'c' / 'dataset.json'}: ",
                   "(the dataset data.root names)")


def test_a_moved_run_directory_is_reused_from_anywhere(trained, tmp_path, monkeypatch, capsys):
    shutil.copytree(trained.parent, tmp_path / "moved" / "lsp")
    monkeypatch.chdir(tmp_path)
    for key in ("apc", "mouth", "headpose", "renderer"):
        recorded = json.loads((tmp_path / "moved" / "lsp" / "smoke" / key / "stage.json").read_text())["checkpoint"]
        assert not Path(recorded).is_absolute() and recorded.startswith("checkpoints")   # the stage directory's
    assert main(["fit", "--model", "lsp", *SMALL, "run.runs_dir=moved"]) == 0
    out = capsys.readouterr().out
    assert out.count("finished earlier, moved/lsp/smoke/") == 4, out


def test_force_unmarks_every_stage_before_the_first_trains(trained, tmp_path, monkeypatch):
    import zoo.harness
    from zoo.errors import ZooError
    from zoo.pipeline import fit_staged

    shutil.copytree(trained.parent, tmp_path / "lsp")

    def interrupted(run):
        raise ZooError("interrupted")

    monkeypatch.setattr(zoo.harness, "execute", interrupted)
    run = prepare("fit", "lsp", overrides=[*SMALL, f"run.runs_dir={tmp_path}"], force=True)
    with pytest.raises(ZooError):
        fit_staged(run, *run.sources, force=True)
    assert not list((tmp_path / "lsp" / "smoke").glob("*/stage.json"))     # a rerun retrains them all


def test_every_stage_is_checked_before_the_first_trains(tiny_corpus, tmp_path, capsys):
    fit = ["fit", "--model", "lsp", *SMALL, f"run.runs_dir={tmp_path}"]
    for setting, message in [
            ("renderer.trainer.max_epoch=1", "unknown key 'trainer.max_epoch' in override "
                                             "'renderer.trainer.max_epoch=1'"),
            ("renderer.trainer.limit_train_batches=2.5", "trainer.limit_train_batches must be an int >= 0"),
            ("trainer.accumulate_grad_batches=2", "stage renderer (lsp.renderer) steps its optimisers itself "
                                                  "(manual optimisation), so Lightning cannot apply "
                                                  "trainer.accumulate_grad_batches=2")]:
        assert main([*fit, setting]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {message}") and err.count("\n") == 1, err
        assert not (tmp_path / "lsp").exists()                               # no stage trained first


def test_a_stage_model_setting_goes_under_model(capsys):
    assert main(["fit", "--model", "lsp", "renderer.model.ngf=32"]) == 2
    assert capsys.readouterr().err == ("error: renderer.model.ngf=32: set a stage's model settings as "
                                       "model.renderer.ngf=32 (they belong to the assembled model's config)\n")


def test_a_broken_finished_stage_is_one_line(trained, tmp_path, capsys):
    # a copy of the run whose finished mouth stage lost its checkpoint, then its marker
    shutil.copytree(trained.parent, tmp_path / "lsp")
    marker = tmp_path / "lsp" / "smoke" / "mouth" / "stage.json"
    record = json.loads(marker.read_text())
    record["checkpoint"] = str(tmp_path / "gone.ckpt")
    marker.write_text(json.dumps(record))
    fit = ["fit", "--model", "lsp", *SMALL, f"run.runs_dir={tmp_path}"]
    assert main(fit) == 2
    assert capsys.readouterr().err.endswith(f"error: {marker}: the finished stage's checkpoint "
                                            f"{tmp_path / 'gone.ckpt'} is missing (--force retrains mouth)\n")
    marker.write_text('{"model": "lsp.mouth", "checkp')
    assert main(fit) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot parse {marker}: ") and err.endswith(
        "(the marker of finished stage mouth; --force retrains the stages)\n") and err.count("\n") == 1, err


def test_stage_needs_trained_apc(tiny_corpus, tmp_path, capsys):
    assert main(["fit", "--model", "lsp.mouth", *SMALL[:3], f"run.runs_dir={tmp_path}"]) == 2
    assert "model.apc_ckpt is not set" in capsys.readouterr().err
    absent, other = tmp_path / "absent.ckpt", tmp_path / "other.ckpt"
    torch.save({"state_dict": {"fc.weight": torch.zeros(2, 2)}}, other)
    for apc, message in [(absent, f"APC checkpoint not found: {absent} (model.apc_ckpt)"),
                         (other, f"{other} is not an lsp.apc checkpoint of this APC's sizes (model.apc_ckpt): "
                                 f"Missing key(s) in state_dict")]:
        code = main(["fit", "--model", "lsp.mouth", *SMALL[:3], f"run.runs_dir={tmp_path}", f"model.apc_ckpt={apc}"])
        assert code == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {message}") and err.count("\n") == 1, err


def test_a_renderer_too_deep_for_the_frames_is_one_line(tiny_corpus, tmp_path, capsys):
    code = main(["fit", "--model", "lsp.renderer", *SMALL[:3], f"run.runs_dir={tmp_path}", "model.num_downs=7"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the renderer's 7 levels need frames divisible by 128, the data has 64 px; set "
                          "model.num_downs (model.renderer.num_downs") and err.count("\n") == 1, err


def test_the_assembled_model_is_not_trained_directly(model):
    with pytest.raises(RuntimeError, match="`zoo fit --model lsp` trains its stages"):
        model.training_step({}, 0)


def test_only_an_assembled_lsp_checkpoint_loads(trained, tmp_path):
    stage = trained / "mouth" / "checkpoints" / "last.ckpt"
    one_line_error(lambda: LSP.load(stage), f"{stage} is not an assembled LSP checkpoint", "'apc_ckpt'",
                   error=WeightsError)
    plain = tmp_path / "plain.pt"
    torch.save({"weight": torch.zeros(1)}, plain)
    one_line_error(lambda: LSP.load(plain), f"{plain} is not an assembled LSP checkpoint", error=WeightsError)
    checkpoint = torch.load(trained / "checkpoints" / "last.ckpt", weights_only=True)
    dropped = next(k for k in checkpoint["state_dict"] if k.startswith("mouth."))
    del checkpoint["state_dict"][dropped]
    older = tmp_path / "older.ckpt"
    torch.save(checkpoint, older)
    one_line_error(lambda: LSP.load(older), f"{older} does not match this version's LSP", dropped,
                   error=WeightsError)
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"not a checkpoint" * 8)
    one_line_error(lambda: LSP.load(junk), f"cannot load LSP checkpoint {junk} with weights_only=True",
                   error=WeightsError)


def test_assembly_refuses_a_finished_stage_of_other_sizes(trained, model):
    checkpoints = {key: trained / key / "checkpoints" / "last.ckpt" for key in ("apc", "mouth", "headpose", "renderer")}
    cfg = copy.deepcopy(model.cfg)
    cfg.mouth.hidden_size *= 2
    one_line_error(lambda: LSP.assemble(cfg, checkpoints, datamodule=None),
                   f"stage 'mouth' ({checkpoints['mouth']}) does not fit model.mouth as now configured (--force "
                   f"retrains the stages): ", "size mismatch", error=WeightsError)


def test_assembly_refuses_a_stage_trained_on_another_apc(trained, model, tmp_path):
    checkpoints = {key: trained / key / "checkpoints" / "last.ckpt" for key in ("apc", "mouth", "headpose", "renderer")}
    checkpoint = torch.load(checkpoints["apc"], weights_only=True)
    checkpoint["state_dict"] = {k: v + 0.01 if k.startswith("apc.") else v for k, v in checkpoint["state_dict"].items()}
    checkpoints["apc"] = tmp_path / "other_apc.ckpt"        # e.g. the APC stage retrained in a hand-edited run
    torch.save(checkpoint, checkpoints["apc"])
    one_line_error(lambda: LSP.assemble(copy.deepcopy(model.cfg), checkpoints, datamodule=None),
                   f"stage 'mouth' ({checkpoints['mouth']}) was trained on the features of another APC than stage "
                   f"'apc' ({checkpoints['apc']}); --force retrains the stages", error=ConfigError)


@pytest.mark.parametrize("buffer, scale, message", [
    ("identity", None, "stage 'mouth' was trained on identity 1, the renderer on 0"),
    ("mouth_scale", 10.0, "stage 'mouth' ({mouth}) was fitted on other data than stage 'renderer' (its person "
                          "profile's mouth_scale differs); --force retrains the stages"),
])
def test_assembly_refuses_a_stage_fitted_on_another_person_or_data(trained, model, tmp_path, buffer, scale, message):
    """The mouth net's outputs are in its own profile's units; the assembled model converts with the renderer's."""
    checkpoints = {key: trained / key / "checkpoints" / "last.ckpt" for key in ("apc", "mouth", "headpose", "renderer")}
    checkpoint = torch.load(checkpoints["mouth"], weights_only=True)
    state = checkpoint["state_dict"]
    state[f"profile.{buffer}"] = state[f"profile.{buffer}"] * scale if scale else torch.tensor(1)
    checkpoints["mouth"] = tmp_path / "other_mouth.ckpt"   # e.g. a mouth stage kept from a fit on other data
    torch.save(checkpoint, checkpoints["mouth"])
    one_line_error(lambda: LSP.assemble(copy.deepcopy(model.cfg), checkpoints, datamodule=None),
                   message.format(mouth=checkpoints["mouth"]), error=ConfigError)


def test_a_renderer_too_deep_for_the_frames_stops_before_any_stage(tiny_corpus, tmp_path, capsys):
    message = ("error: the renderer's 7 levels need frames divisible by 128, the data has 64 px; set model.num_downs "
               "(model.renderer.num_downs under `zoo fit --model lsp`)\n")
    assert main(["fit", "--model", "lsp", *SMALL, f"run.runs_dir={tmp_path}", "model.renderer.num_downs=7"]) == 2
    assert capsys.readouterr().err == message and not (tmp_path / "lsp" / "smoke" / "apc").exists()
    assert main(["fit", "--model", "lsp.renderer", "experiment=smoke", "logger=none", "trainer.progress_bar=none",
                 f"run.runs_dir={tmp_path}", "model.num_downs=7", "model.ngf=8", "model.ndf=8"]) == 2
    assert capsys.readouterr().err == message                       # the stage alone checks it when it starts


def test_unknown_identity_is_one_line(tiny_corpus, tmp_path, capsys):
    assert main(["fit", "--model", "lsp", *SMALL, "model.identity=7", f"run.runs_dir={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "identities [7]" in err and err.count("\n") == 1


def test_a_stage_that_trains_nothing_stops_the_pipeline(tiny_corpus, tmp_path, capsys):
    assert main(["fit", "--model", "lsp", *SMALL, f"run.runs_dir={tmp_path}", "apc.trainer.max_epochs=0"]) == 2
    stage = tmp_path / "lsp" / "smoke" / "apc"
    assert capsys.readouterr().err == (f"error: stage apc: its run {stage} finished without a checkpoint (did it "
                                       f"train? see apc.trainer.max_epochs / max_steps)\n")
    assert not (stage / "stage.json").exists() and not (stage.parent / "mouth").exists()


def test_zoo_test_scores_the_person(trained, capsys):
    runs = trained.parents[1]
    not_model = [item for item in SMALL if not item.startswith("model.")]   # the sizes come from the checkpoint
    assert main(["test", "--model", "lsp", *not_model, f"run.runs_dir={runs}", "run.name=smoke-test",
                 f"--ckpt={trained / 'checkpoints' / 'last.ckpt'}"]) == 0
    results = json.loads((runs / "lsp" / "smoke-test" / "results" / "test.json").read_text())
    assert {"PSNR", "M-LMD[synth-landmarks]", "Sync_conf[synth-syncnet]"} <= set(results["aggregate"])
    assert all(clip["clip_id"].startswith("id00") for clip in results["clips"])   # identity 0 only


def test_evaluation_takes_the_settings_the_checkpoint_was_trained_with(trained, tmp_path):
    checkpoint = torch.load(trained / "checkpoints" / "last.ckpt", weights_only=True)
    checkpoint["hyper_parameters"].update(identity=1, mouth_amplitude=1.5)
    tuned = tmp_path / "tuned.ckpt"
    torch.save(checkpoint, tuned)
    base = ["experiment=smoke", f"run.runs_dir={tmp_path}"]
    run = prepare("test", "lsp", overrides=base, ckpt=str(tuned))
    assert (run.cfg.model.identity, run.cfg.model.mouth_amplitude, run.cfg.model.renderer.ngf) == (1, 1.5, 8)
    assert list(run.cfg.data.identities) == [1]                              # the checkpoint's person's clips
    run = prepare("test", "lsp", overrides=[*base, "model.mouth_amplitude=1.2"], ckpt=str(tuned))
    assert run.cfg.model.mouth_amplitude == 1.2                              # an override still wins


def test_scoring_another_persons_clips_is_refused(trained, capsys):
    runs = trained.parents[1]
    assert main(["test", "--model", "lsp", *SMALL, f"run.runs_dir={runs}", "run.name=smoke-other",
                 "model.identity=1", f"--ckpt={trained / 'checkpoints' / 'last.ckpt'}"]) == 2
    err = capsys.readouterr().err
    assert "trained on identity 0 but model.identity is 1" in err and err.count("\n") == 1


def test_zoo_test_takes_the_run_of_model_identity(trained, tmp_path):
    runs = tmp_path / "runs"
    for age, name in enumerate(("identity1", "identity0", "identity2")):     # identity1 the newest run
        (runs / "lsp" / name / "checkpoints").mkdir(parents=True)
        if name != "identity2":
            copied = shutil.copy(trained / "checkpoints" / "last.ckpt", runs / "lsp" / name / "checkpoints")
            os.utime(copied, (2e9 - age, 2e9 - age))
    for identity, expected in ((0, "identity0"), (1, "identity1"), (2, "identity1")):   # no run: the newest
        run = prepare("test", "lsp", overrides=[f"run.runs_dir={runs}", f"model.identity={identity}"])
        assert Path(run.ckpt_path) == runs / "lsp" / expected / "checkpoints" / "last.ckpt"


def test_the_person_stages_take_the_apc_sizes(capsys):
    from lsp.model import LSPConfig
    from lsp.networks.apc import APC
    from lsp.stages.headpose import HeadposeStage
    from lsp.stages.mouth import MouthStage

    cfg = LSPConfig()
    cfg.apc.hidden_size, cfg.apc.num_layers = 32, 2
    expected = {k: v.shape for k, v in APC(80, 32, 2).state_dict().items()}
    for key, stage_class in (("mouth", MouthStage), ("headpose", HeadposeStage)):
        stage = stage_class(LSP.stage_model_config(copy.deepcopy(cfg), key, {"apc": Path("apc.ckpt")}))
        assert {k: v.shape for k, v in stage.speech.apc.state_dict().items()} == expected
    assert main(["config", "--model", "lsp", "model.apc.mel_dim=64"]) == 2   # the data's log-mel has 80 bands
    assert capsys.readouterr().err == "error: model.apc.mel_dim must be in [80, 80], got 64\n"
