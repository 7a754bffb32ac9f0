"""LSP's mouth stage learning from every speaker: each window measured in its own speaker's mouth units."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lsp.geometry import MOUTH_INDICES
from lsp.person import PersonProfile, person_clip_ids, speaker_mouth_units
from lsp.stages.mouth import MouthConfig, MouthStage
from zoo.data import open_dataset
from zoo.data.datamodule import DataConfig
from zoo.data.fake import write_fake_dataset

from helpers import one_line_error


@pytest.fixture(scope="module")
def corpus(tiny_corpus):
    return open_dataset(tiny_corpus)


def landmarks(dataset, clip_id: str, frames: int = 10) -> torch.Tensor:
    return torch.from_numpy(np.array(dataset.clip(clip_id).track("landmarks3d")[:frames], dtype=np.float32))


def test_other_speakers_train_on_every_identity_and_validate_on_the_target():
    for other_speakers in (True, False):
        data = DataConfig()
        MouthStage.configure_data(data, MouthConfig(identity=1, other_speakers=other_speakers))
        assert data.identities == [1] and data.train_on_all_identities is other_speakers


def test_speaker_units_are_what_each_speakers_profile_holds(corpus):
    units = speaker_mouth_units(corpus, "train")
    assert sorted(units) == [0, 1]
    for identity, (mean, scale) in units.items():
        profile = PersonProfile().fit(corpus, person_clip_ids(corpus, "train", identity), identity)
        assert mean.shape == (25, 3) and scale.shape == ()
        torch.testing.assert_close(mean, profile.mean_shape[MOUTH_INDICES].float())
        torch.testing.assert_close(scale, profile.mouth_scale.float())
    assert not torch.allclose(units[0][0], units[1][0])          # different faces: different units


def test_each_window_is_measured_in_its_own_speakers_units(corpus):
    stage = MouthStage(MouthConfig(identity=0, hidden_size=8, apc_hidden_size=8))
    stage.profile.fit(corpus, person_clip_ids(corpus, "train", 0), 0)
    stage._speakers = speaker_mouth_units(corpus, "train")
    own, other = person_clip_ids(corpus, "train", 0)[0], person_clip_ids(corpus, "train", 1)[0]
    faces = torch.stack([landmarks(corpus, own), landmarks(corpus, other)])               # [2, 10, 68, 3]
    targets = stage.mouth_target({"landmarks3d": faces, "identity": torch.tensor([0, 1])})
    torch.testing.assert_close(targets[0], stage.profile.mouth_target(faces[0]))
    mean, scale = stage._speakers[1]
    torch.testing.assert_close(targets[1], ((faces[1][:, MOUTH_INDICES] - mean) / scale).flatten(-2))
    # measured in the target's units instead, the other speaker's mouth would be off by its face's difference
    assert not torch.allclose(targets[1], stage.profile.mouth_target(faces[1]))


def test_a_speaker_outside_the_train_split_is_one_line(corpus):
    stage = MouthStage(MouthConfig(identity=0, hidden_size=8, apc_hidden_size=8))
    stage.profile.fit(corpus, person_clip_ids(corpus, "train", 0), 0)
    stage._speakers = speaker_mouth_units(corpus, "train")
    faces = landmarks(corpus, person_clip_ids(corpus, "train", 0)[0])[None].expand(2, -1, -1, -1)
    one_line_error(lambda: stage.mouth_target({"landmarks3d": faces, "identity": torch.tensor([0, 7])}),
                   "identity 7 has no clip in the train split")


@pytest.mark.parametrize("use, name", [
    (lambda profile: profile.face_from_mouth(torch.zeros(1, 2, 75)), "face_from_mouth"),
    (lambda profile: profile.landmarks_and_shoulders(torch.zeros(1, 2, 68, 3), torch.zeros(1, 2, 6)), "projection"),
    (lambda profile: profile.renderer_input(torch.zeros(2, 68, 2), torch.zeros(2, 18, 2)), "renderer_input"),
])
def test_an_unfitted_profile_says_so(use, name):
    with pytest.raises(RuntimeError) as info:
        use(PersonProfile())
    assert str(info.value) == (f"PersonProfile: {name} needs a fitted profile (fit it from the training clips, or "
                               "load a checkpoint that has one)")


def test_the_profile_needs_the_persons_clips_and_their_3d_tracks(corpus, tmp_path):
    one_line_error(lambda: PersonProfile().fit(corpus, [], 3),
                   f"dataset '{corpus.name}' has no training clip of identity 3 (model.identity / data.identities)")
    bare = open_dataset(write_fake_dataset(tmp_path / "bare", splits={"train": 1}, seconds=1.0, size=16,
                                           tracks=["pose"]))
    (clip_id,) = bare.splits["train"]
    one_line_error(lambda: PersonProfile().fit(bare, [clip_id], 0),
                   f"clip '{clip_id}' field track 'landmarks3d': LSP needs landmarks3d, pose, shoulders3d")
