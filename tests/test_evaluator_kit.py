"""The synthetic evaluator kit bundle: the SyncNet's own speakers, training a quick kit, loading it back."""
from __future__ import annotations

import json

import numpy as np
import pytest
from omegaconf import OmegaConf

from zoo.config import config_dir
from zoo.data.clip_format import open_dataset
from zoo.data.fake import write_fake_dataset
from zoo.errors import ConfigError
from zoo.evaluators.kit import (KIT_MODELS, KIT_VERSION, SPEAKERS, ensure_kit, kit_backbones, kit_path, load_kit_modules,
                                speakers_config, split_overrides)
from zoo.synth import SynthConfig, clip_plan
from zoo.synth.identity import make_identity
from helpers import one_line_error

# The smoke experiment's quick kit recipe (3 speakers with one clip per split)
SMOKE_KIT = list(OmegaConf.load(config_dir() / "experiment" / "smoke.yaml").eval.kit_overrides)


def test_split_overrides_takes_the_speakers_counts_out():
    speakers, training = split_overrides(["trainer.max_epochs=1", "speakers.identities=5"])
    assert speakers == {**SPEAKERS, "identities": 5} and training == ["trainer.max_epochs=1"]
    assert split_overrides([]) == (SPEAKERS, [])


@pytest.mark.parametrize("item", ["speakers.seed=3", "speakers.identities=many", "speakers.identities"])
def test_bad_speakers_override_is_one_line(item):
    one_line_error(lambda: split_overrides([item]), f"eval.kit_overrides: '{item}'", "identities, clips_per_identity",
                   error=ConfigError)


def test_speakers_are_the_corpus_settings_with_other_people(tiny_corpus):
    dataset = open_dataset(tiny_corpus)
    corpus = SynthConfig(**dataset.info["config"])
    cfg = speakers_config(dataset, {"identities": 4, "clips_per_identity": 3})
    assert (cfg.identities, cfg.clips_per_identity, cfg.unseen_identities) == (4, 3, 0)
    assert (cfg.size, cfg.fps, cfg.seconds, cfg.styles, cfg.sample_rate) == (
        corpus.size, corpus.fps, corpus.seconds, corpus.styles, corpus.sample_rate)
    # every speaker is a training identity, and none is a face of the evaluated corpus
    plan, splits = clip_plan(cfg)
    assert set(splits) == {"train", "val", "test"} and len(plan) == 12
    scored = [make_identity(corpus.seed, i).coeffs for i in range(corpus.identities + corpus.unseen_identities)]
    for i in range(cfg.identities):
        assert not any(np.allclose(make_identity(cfg.seed, i).coeffs, c) for c in scored)


def test_speakers_errors_are_one_line(tiny_corpus, tmp_path):
    dataset = open_dataset(tiny_corpus)
    one_line_error(lambda: speakers_config(dataset, {"identities": 4, "clips_per_identity": 2}),
                   "eval.kit_overrides: speakers.clips_per_identity must be in [3, inf), got 2", error=ConfigError)
    write_fake_dataset(tmp_path / "real", splits={"train": 1}, seconds=1.0)
    one_line_error(lambda: speakers_config(open_dataset(tmp_path / "real"), SPEAKERS),
                   f"evaluator kit: {tmp_path / 'real'} is not a zoo.synth corpus")


def test_bad_speakers_stop_the_kit_before_it_trains(tiny_corpus, tmp_path):
    overrides = [*SMOKE_KIT, "speakers.identities=0"]
    one_line_error(lambda: ensure_kit(tiny_corpus, tmp_path, overrides),
                   "eval.kit_overrides: speakers.identities must be in [1, inf), got 0", error=ConfigError)
    assert not kit_path(tiny_corpus, tmp_path, overrides).exists()


def test_quick_kit_trains_loads_and_refuses_a_tampered_file(tiny_corpus, tmp_path):
    target = ensure_kit(tiny_corpus, tmp_path, SMOKE_KIT)
    assert target == kit_path(tiny_corpus, tmp_path, SMOKE_KIT) != kit_path(tiny_corpus, tmp_path)
    info = json.loads((target / "kit.json").read_text())
    assert set(info["models"]) == set(KIT_MODELS) and info["overrides"] == SMOKE_KIT
    sync = info["models"]["syncnet"]
    assert (sync["speakers"]["identities"], sync["speakers"]["clips_per_identity"]) == (3, 3)
    assert sync["speakers"]["seed"] == open_dataset(tiny_corpus).info["config"]["seed"] + 1
    assert not (target / "speakers").exists()                         # regenerable: deleted once trained
    assert {"gt_lse_c", "unseen_gt_lse_c", "unseen_offset_accuracy"} <= set(sync["quality"])
    assert set(load_kit_modules(target)) == set(KIT_MODELS)
    backbones = kit_backbones(target)
    assert backbones.names["sync"] == "synth-syncnet" and backbones.syncnet is not None
    assert ensure_kit(tiny_corpus, tmp_path, SMOKE_KIT) == target     # reused, not retrained

    (target / sync["file"]).write_bytes(b"tampered")
    one_line_error(lambda: load_kit_modules(target), "syncnet.pt is missing or does not match its sha256",
                   "delete the kit directory to retrain it")
    info["kit_version"] = 1
    (target / "kit.json").write_text(json.dumps(info))
    one_line_error(lambda: load_kit_modules(target), "kit_version 1, expected")
    one_line_error(lambda: load_kit_modules(tmp_path), "kit.json missing")
    (target / "kit.json").write_text(json.dumps(info)[:30])
    one_line_error(lambda: load_kit_modules(target), f"cannot parse {target / 'kit.json'}: ",
                   "delete the kit directory to retrain it")
    info["kit_version"] = KIT_VERSION
    del info["models"]["landmark_detector"]
    (target / "kit.json").write_text(json.dumps(info))
    one_line_error(lambda: load_kit_modules(target), "models.landmark_detector is missing or malformed")
    (target / "kit.json").unlink()                                       # an interrupted kit: progress.json left
    (target / "progress.json").write_text("[1, 2]")
    one_line_error(lambda: ensure_kit(tiny_corpus, tmp_path, SMOKE_KIT), f"{target / 'progress.json'}: expected a "
                   "JSON object")
