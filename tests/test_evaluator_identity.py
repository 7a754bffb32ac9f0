"""The ``identity_embedder`` evaluator: shapes, CosFace, verification arithmetic, training, quality, save/load, CLI."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import zoo.evaluators.identity_embedder as ie  # registers the model
from zoo.cli import main
from zoo.data.clip_format import open_dataset
from zoo.data.fake import write_fake_dataset
from zoo.metrics.fid import FrechetDistance
from zoo.metrics.identity import csim, embed_faces
from zoo.registry import create_model
from helpers import one_line_error, optimise

SMALL = dict(widths=[8, 16, 16, 32], embedding_dim=64, num_identities=3)


def _batch(root, frames: int = 4):
    """A datamodule-style batch: ``frames`` frames of the first train clip of each identity, [I, T, ...]."""
    dataset = open_dataset(root)
    firsts = {}
    for clip_id in dataset.clip_ids("train"):
        firsts.setdefault(dataset.clip(clip_id).meta["identity"], dataset.clip(clip_id))
    clips = [firsts[k] for k in sorted(firsts)]
    images = torch.stack([torch.from_numpy(c.read_frames(0, frames)).permute(0, 3, 1, 2) for c in clips])
    landmarks = torch.stack([torch.from_numpy(np.array(c.track("landmarks2d")[:frames], np.float32)) for c in clips])
    return {"frames": images, "landmarks2d": landmarks, "identity": torch.tensor(sorted(firsts))}


def test_shapes_and_kit_interfaces():
    model = ie.IdentityEmbedder(ie.IdentityEmbedderConfig(**SMALL)).eval()
    faces = torch.rand(3, 3, 112, 112) * 2 - 1
    with torch.no_grad():
        assert model(faces).shape == (3, 64)
        assert model.features(faces).shape == (3, 32) and model.num_features == 32
        torch.testing.assert_close(model.embedder(faces), model(faces))
        torch.testing.assert_close(model.feature_extractor(faces), model.features(faces))
    aligned = np.random.default_rng(0).integers(0, 256, (5, 112, 112, 3), dtype=np.uint8)
    assert embed_faces(aligned, model.embedder, batch_size=2).shape == (5, 64)
    fd = FrechetDistance(model.feature_extractor, model.num_features)
    fd.update(faces, real=True)
    fd.update(faces.flip(-1), real=False)
    assert fd.real_count == 3


def test_csim_pipeline_with_the_embedder(tiny_corpus):
    model = ie.IdentityEmbedder(ie.IdentityEmbedderConfig(**SMALL)).eval()
    clip = open_dataset(tiny_corpus).clip(open_dataset(tiny_corpus).clip_ids("test")[0])
    frames, landmarks = clip.read_frames(0, 4), np.asarray(clip.track("landmarks2d")[:4])
    sims = csim(frames, frames[:1], model.embedder, pred_landmarks=landmarks, ref_landmarks=landmarks[:1])
    assert sims.shape == (4,) and float(sims[0]) == pytest.approx(1.0, abs=1e-5)


def test_cosface_margin_only_on_the_true_class():
    head = ie.CosFaceHead(4, 3, scale=10.0, margin=0.5)
    emb = torch.randn(2, 4)
    labels = torch.tensor([0, 2])
    plain, margined = head(emb), head(emb, labels)
    diff = (plain - margined) / 10.0
    torch.testing.assert_close(diff, torch.tensor([[0.5, 0.0, 0.0], [0.0, 0.0, 0.5]]))
    assert plain.abs().max() <= 10.0 + 1e-5                                   # scaled cosines


def test_jitter_landmarks():
    torch.manual_seed(0)
    lm = torch.rand(16, 68, 2) * 20 + 40
    lm[:, 45, 0] = lm[:, 36, 0] + 30.0                                       # inter-ocular distance ~30
    assert ie.jitter_landmarks(lm, 0.0) is lm
    moved = ie.jitter_landmarks(lm, 0.03)
    shift = (moved - lm).norm(dim=-1).mean()
    assert 0.1 < float(shift) < 5.0


def test_verification_helpers():
    emb = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9], [1.0, 0.05]])
    identity = torch.tensor([0, 0, 1, 1, 0])
    clip = torch.tensor([0, 1, 2, 3, 0])
    scores, same = ie.verification_pairs(emb, identity, clip)
    assert len(scores) == 10 - 1                                              # pair (0, 4) shares clip 0
    threshold, accuracy = ie.best_threshold(scores, same)
    assert accuracy == 1.0 and ie.balanced_accuracy(scores, same, threshold) == 1.0
    assert ie.balanced_accuracy(scores, same, 2.0) == 0.5                    # rejects everything
    assert ie.balanced_accuracy(scores, same, -2.0) == 0.5                   # accepts everything
    assert ie._auc(scores, same) == 1.0
    tied, tied_same = torch.tensor([0.5, 0.5, 0.2, 0.9]), torch.tensor([False, True, False, True])
    threshold, accuracy = ie.best_threshold(tied, tied_same)          # 0.5 and 0.5 cannot be told apart
    assert accuracy == ie.balanced_accuracy(tied, tied_same, threshold) == 0.75
    assert ie._auc(tied, tied_same) == 0.875                           # the tied pair counts one half
    only_negative = torch.zeros(3, dtype=torch.bool)
    assert all(math.isnan(v) for v in ie.best_threshold(torch.rand(3), only_negative))
    # balanced: 1 of 2 positives and 3 of 3 negatives right -> (0.5 + 1) / 2
    s = torch.tensor([0.9, 0.2, 0.1, 0.3, 0.0], dtype=torch.float64)
    y = torch.tensor([True, True, False, False, False])
    assert ie.balanced_accuracy(s, y, 0.5) == pytest.approx(0.75)


def test_training_steps_reduce_the_loss(tiny_corpus):
    torch.manual_seed(0)
    model = ie.IdentityEmbedder(ie.IdentityEmbedderConfig(**SMALL, align_jitter=0.0, flip=False, photometric=0.0,
                                                          blur_prob=0.0, noise_std=0.0))
    model.log = lambda *args, **kwargs: None       # no trainer attached
    batch = _batch(tiny_corpus)
    losses = optimise(lambda: model.training_step(batch, 0), model.parameters(), steps=12, lr=3e-3)
    assert math.isfinite(losses[0]) and losses[-1] < 0.5 * losses[0]
    augmented = ie.IdentityEmbedder(ie.IdentityEmbedderConfig(**SMALL, blur_prob=1.0))
    augmented.log = lambda *args, **kwargs: None
    assert math.isfinite(augmented.training_step(batch, 0).item())


def test_label_outside_the_head_is_a_config_error(tiny_corpus):
    model = ie.IdentityEmbedder(ie.IdentityEmbedderConfig(**{**SMALL, "num_identities": 1}))
    model.log = lambda *args, **kwargs: None
    with pytest.raises(ie.ConfigError, match="model.num_identities"):
        model.training_step(_batch(tiny_corpus, 2), 0)


def test_evaluate_quality(tiny_corpus):
    model = ie.IdentityEmbedder(ie.IdentityEmbedderConfig(**SMALL)).train()
    dataset = open_dataset(tiny_corpus)
    # the tiny corpus' train split is the only one with several clips per identity (positive pairs)
    result = ie.evaluate_quality(model, dataset, "train", threshold_split="train", frames_per_clip=3)
    assert model.training                                                    # mode restored
    assert 0.5 <= result["verification_accuracy"] <= 1.0 and 0.0 <= result["auc"] <= 1.0
    assert result["verification_accuracy"] <= result["threshold_accuracy"] + 1e-9   # same pairs: optimum is max
    assert result["pairs_positive"] > 0 and result["pairs_negative"] > 0 and result["bar"] == 0.95
    assert "unseen_verification_accuracy" in result                          # tiny corpus: 1 unseen identity
    assert math.isnan(result["unseen_verification_accuracy"]) and result["unseen_pairs_negative"] == 0
    # faces aligned by a landmark detector instead of the ground truth (the kit's CSIM pipeline)
    from zoo.evaluators.landmark_detector import LandmarkDetector, LandmarkDetectorConfig

    detector = LandmarkDetector(LandmarkDetectorConfig(input_size=32, widths=[8, 8, 16, 16], decoder_width=8))
    detected = ie.evaluate_quality(model, dataset, "train", threshold_split="train", frames_per_clip=2,
                                   unseen_split=None, landmarker=detector.detect)
    assert 0.5 <= detected["verification_accuracy"] <= 1.0
    # val has one clip per identity: no positive pairs, so no threshold; reported as NaN, not an error
    default = ie.evaluate_quality(model, dataset, frames_per_clip=2, unseen_split=None)
    assert math.isnan(default["threshold"]) and default["passed"] is False and "unseen_auc" not in default


def test_clips_without_an_identity_or_a_split_without_clips_are_one_line(tmp_path):
    model = ie.IdentityEmbedder(ie.IdentityEmbedderConfig(**SMALL)).eval()
    root = write_fake_dataset(tmp_path / "fake", splits={"train": 2, "val": 1}, seconds=1.0, size=64)
    (clip_id,) = open_dataset(root).clip_ids("val")
    record = json.loads((root / "clips" / clip_id / "clip.json").read_text())
    del record["meta"]["identity"]
    (root / "clips" / clip_id / "clip.json").write_text(json.dumps(record))
    dataset = open_dataset(root)
    quality = dict(frames_per_clip=1, unseen_split=None)
    one_line_error(lambda: ie.evaluate_quality(model, dataset, "val", threshold_split="val", **quality),
                   f"clip '{clip_id}' has no meta.identity (needed for verification pairs)")
    dataset.splits["train"] = []                          # in memory only: a prepared split always lists clips
    one_line_error(lambda: ie.evaluate_quality(model, dataset, "train", threshold_split="train", **quality),
                   "split 'train' of dataset 'fake' has no clips")


def test_create_model_state_dict_round_trip():
    cfg = ie.IdentityEmbedderConfig(**SMALL)
    model = create_model("identity_embedder", cfg).eval()
    clone = create_model("identity_embedder", dict(vars(cfg))).eval()
    clone.load_state_dict(model.state_dict())
    faces = torch.rand(2, 3, 112, 112) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(clone(faces), model(faces), rtol=0, atol=0)
        torch.testing.assert_close(clone.features(faces), model.features(faces), rtol=0, atol=0)


def test_cli_fit_smoke(tiny_corpus, tmp_path, capsys):
    code = main(["fit", "--model", "identity_embedder", "experiment=smoke", "logger=none", "trainer.progress_bar=none",
                 f"run.runs_dir={tmp_path}", "model.widths=[8,16,16,32]", "model.embedding_dim=64",
                 "trainer.limit_train_batches=2", "trainer.limit_val_batches=1"])
    assert code == 0, capsys.readouterr().err
    assert (tmp_path / "identity_embedder" / "smoke" / "checkpoints" / "last.ckpt").is_file()


def test_a_batch_without_identities_is_one_line():
    model = ie.IdentityEmbedder(ie.IdentityEmbedderConfig(**SMALL))
    batch = {"frames": torch.zeros(1, 2, 3, 64, 64, dtype=torch.uint8), "landmarks2d": torch.zeros(1, 2, 68, 2)}
    one_line_error(lambda: model.step(batch, "train"),
                   "identity_embedder: the batches carry no 'identity' (every clip needs meta.identity)")
