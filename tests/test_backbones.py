"""Frozen metric backbones: exact official key layouts, loading, and parity with the reference packages.

No real weights exist here; every network gets a generated state dict in its official layout.
"""
from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
import pytest
import torch

from zoo import weights
from zoo.errors import WeightsError
from zoo.metrics.backbones import BackboneRef, load_exact, random_state_dict, state_dict_layout

from helpers import one_line_error

# --- SyncNet: the layout of syncnet_v2.model (metrics.md §1.4-1.5), as data ----------------------------------------
# Conv/Linear layers: weight shape (a bias of shape[0] follows); BatchNorm layers: channel count.
SYNCNET_LAYERS = {
    "netcnnaud.0": (64, 1, 3, 3), "netcnnaud.1": 64, "netcnnaud.4": (192, 64, 3, 3), "netcnnaud.5": 192,
    "netcnnaud.8": (384, 192, 3, 3), "netcnnaud.9": 384, "netcnnaud.11": (256, 384, 3, 3), "netcnnaud.12": 256,
    "netcnnaud.14": (256, 256, 3, 3), "netcnnaud.15": 256, "netcnnaud.18": (512, 256, 5, 4), "netcnnaud.19": 512,
    "netfcaud.0": (512, 512), "netfcaud.1": 512, "netfcaud.3": (1024, 512),
    "netcnnlip.0": (96, 3, 5, 7, 7), "netcnnlip.1": 96, "netcnnlip.4": (256, 96, 1, 5, 5), "netcnnlip.5": 256,
    "netcnnlip.8": (256, 256, 1, 3, 3), "netcnnlip.9": 256, "netcnnlip.11": (256, 256, 1, 3, 3), "netcnnlip.12": 256,
    "netcnnlip.14": (256, 256, 1, 3, 3), "netcnnlip.15": 256, "netcnnlip.18": (512, 256, 1, 6, 6),
    "netcnnlip.19": 512, "netfclip.0": (512, 512), "netfclip.1": 512, "netfclip.3": (1024, 512),
}


def syncnet_official_layout() -> dict[str, tuple[int, ...]]:
    layout = {}
    for layer, spec in SYNCNET_LAYERS.items():
        if isinstance(spec, int):
            layout.update({f"{layer}.{k}": (spec,) for k in ("weight", "bias", "running_mean", "running_var")})
        else:
            layout.update({f"{layer}.weight": spec, f"{layer}.bias": (spec[0],)})
    return layout


def syncnet_official_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """A dict like syncnet_v2.model: 88 tensors, no num_batches_tracked."""
    from zoo.metrics.backbones.syncnet import SyncNet

    full = random_state_dict(SyncNet(), seed)
    return {k: v for k, v in full.items() if not k.endswith("num_batches_tracked")}


def test_syncnet_layout_matches_official_file():
    from zoo.metrics.backbones.syncnet import SyncNet

    net = SyncNet()
    layout = {k: v for k, v in state_dict_layout(net).items() if not k.endswith("num_batches_tracked")}
    assert len(layout) == 88
    assert layout == syncnet_official_layout()
    assert sum(p.numel() for p in net.parameters()) == 13_631_616


def test_syncnet_loads_official_dict_unchanged_and_forward_shapes():
    from zoo.metrics.backbones.syncnet import SyncNet

    state = syncnet_official_state_dict()
    net = SyncNet(state)
    for key, value in state.items():
        assert torch.equal(net.state_dict()[key], value)
    assert not any(p.requires_grad for p in net.parameters())
    net.train()                                     # a parent's .train() must not leave eval mode
    assert not net.training and not net.netcnnaud[1].training
    assert net.forward_aud(torch.randn(2, 1, 13, 20)).shape == (2, 1024)
    assert net.forward_lip(torch.rand(2, 3, 5, 224, 224) * 255).shape == (2, 1024)


def test_syncnet_rejects_wrong_layouts():
    from zoo.metrics.backbones.syncnet import SyncNet

    state = syncnet_official_state_dict()
    extra = dict(state, **{"netcnnaud.99.weight": torch.zeros(1)})
    with pytest.raises(WeightsError, match="unexpected keys.*netcnnaud.99.weight"):
        SyncNet(extra)
    missing = {k: v for k, v in state.items() if k != "netfclip.3.bias"}
    with pytest.raises(WeightsError, match="missing keys.*netfclip.3.bias"):
        SyncNet(missing)
    wrong = dict(state, **{"netfcaud.3.weight": torch.zeros(512, 512)})
    with pytest.raises(WeightsError, match=r"shape mismatch.*netfcaud.3.weight \(512, 512\) != \(1024, 512\)"):
        SyncNet(wrong)


def test_syncnet_from_weights_file(tmp_path, monkeypatch):
    from zoo.metrics.backbones.syncnet import SyncNet

    state = syncnet_official_state_dict(seed=3)
    path = tmp_path / "syncnet_v2.model"
    torch.save(state, path)
    entry = weights.WEIGHTS["syncnet"]
    monkeypatch.setitem(weights.WEIGHTS, "syncnet", weights.WeightFile(
        entry.name, entry.filename, hashlib.sha256(path.read_bytes()).hexdigest(), entry.source, entry.used_by))
    net = SyncNet.from_weights(tmp_path)
    assert torch.equal(net.netcnnlip[0].weight, state["netcnnlip.0.weight"])


def test_syncnet_weights_file_that_is_not_a_state_dict_names_the_file(tmp_path, monkeypatch):
    from zoo.metrics.backbones.syncnet import SyncNet

    path = tmp_path / "syncnet_v2.model"
    torch.save([torch.zeros(1)], path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    monkeypatch.setitem(weights.WEIGHTS, "syncnet", dataclasses.replace(weights.WEIGHTS["syncnet"], sha256=digest))
    one_line_error(lambda: SyncNet.from_weights(tmp_path),
                   "syncnet_v2.model: expected a state dict (mapping of tensors), got list", error=WeightsError)


# --- ArcFace iresnet ----------------------------------------------------------------------------------------------
def iresnet_official_layout(blocks=(3, 13, 30, 3)) -> dict[str, tuple[int, ...]]:
    """The key/shape list of arcface_torch's iresnet backbone.pth, written out from the published structure."""
    def bn(name, c):
        return {f"{name}.weight": (c,), f"{name}.bias": (c,), f"{name}.running_mean": (c,),
                f"{name}.running_var": (c,), f"{name}.num_batches_tracked": ()}

    layout = {"conv1.weight": (64, 3, 3, 3), **bn("bn1", 64), "prelu.weight": (64,)}
    cin = 64
    for stage, (width, count) in enumerate(zip((64, 128, 256, 512), blocks), start=1):
        for i in range(count):
            p = f"layer{stage}.{i}"
            layout.update({**bn(f"{p}.bn1", cin), f"{p}.conv1.weight": (width, cin, 3, 3), **bn(f"{p}.bn2", width),
                           f"{p}.prelu.weight": (width,), f"{p}.conv2.weight": (width, width, 3, 3),
                           **bn(f"{p}.bn3", width)})
            if i == 0:
                layout.update({f"{p}.downsample.0.weight": (width, cin, 1, 1), **bn(f"{p}.downsample.1", width)})
            cin = width
    layout.update({**bn("bn2", 512), "fc.weight": (512, 25088), "fc.bias": (512,), **bn("features", 512)})
    return layout


def test_iresnet100_layout():
    from zoo.metrics.backbones.arcface import iresnet

    net = iresnet(100)
    layout = state_dict_layout(net)
    assert len(layout) == 925
    assert layout == iresnet_official_layout()
    assert sum(p.numel() for p in net.parameters()) == 65_156_160      # 65.16 M


def test_arcface_depths_and_forward():
    from zoo.metrics.backbones.arcface import IRESNET_LAYERS, ArcFace, iresnet

    assert IRESNET_LAYERS == {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 14, 3), 100: (3, 13, 30, 3)}
    assert state_dict_layout(iresnet(18)) == iresnet_official_layout((2, 2, 2, 2))
    model = ArcFace(18, state_dict=random_state_dict(iresnet(18), seed=1))
    assert model.name == "arcface_torch iresnet18" and not model.training
    emb = model(torch.rand(2, 3, 112, 112) * 2 - 1)
    assert emb.shape == (2, 512) and torch.isfinite(emb).all()
    with pytest.raises(ValueError, match="depth"):
        iresnet(101)


# --- FID Inception ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fid_inception_state() -> dict[str, torch.Tensor]:
    from zoo.metrics.backbones.inception import fid_inception_layout_module

    return random_state_dict(fid_inception_layout_module(), seed=0)


@pytest.fixture(scope="module")
def fid_inception(fid_inception_state):
    """Built once per module: building the network takes over a second."""
    from pytorch_fid import inception as pfi

    from zoo.metrics.backbones.inception import FIDInception

    loader = pfi.load_state_dict_from_url
    ours = FIDInception(fid_inception_state)
    assert pfi.load_state_dict_from_url is loader                                   # the loader swap is undone
    return ours


def test_fid_inception_matches_pytorch_fid(monkeypatch, fid_inception_state, fid_inception):
    from pytorch_fid import inception as pfi

    from zoo.metrics.backbones.inception import fid_inception_layout_module

    layout = state_dict_layout(fid_inception_layout_module())
    assert len(layout) == 566
    assert layout["Conv2d_1a_3x3.conv.weight"] == (32, 3, 3, 3) and layout["fc.weight"] == (1008, 2048)
    state, ours = fid_inception_state, fid_inception
    assert not ours.training
    # The reference: pytorch-fid's own InceptionV3([3]) fed the same dict through its (patched) URL loader.
    monkeypatch.setattr(pfi, "load_state_dict_from_url", lambda *a, **k: state)
    reference = pfi.InceptionV3([3]).eval()

    images = torch.randint(0, 256, (1, 3, 256, 256), dtype=torch.uint8)    # 256 -> 299 exercises the resize
    with torch.no_grad():
        expected = reference(images.float() / 255.0)[0].flatten(1)
        got = ours(images)
    assert got.shape == (1, 2048)
    assert ((got - expected).norm() / expected.norm()).item() <= 1e-5


def test_fid_inception_rejects_other_layouts():
    from zoo.metrics.backbones.inception import FIDInception

    with pytest.raises(WeightsError, match="FID Inception state dict does not match.*missing keys"):
        FIDInception({"fc.weight": torch.zeros(1008, 2048)})


@pytest.mark.parametrize("shape", [(3, 32, 32), (2, 1, 32, 32), (2, 32, 32, 3)])  # no batch dim, grey, channels-last
def test_fid_inception_rejects_images_not_n_3_h_w(fid_inception, shape):
    one_line_error(lambda: fid_inception(torch.zeros(shape, dtype=torch.uint8)),
                   f"FID Inception: expected images [N, 3, H, W], got shape {shape}")


# --- FAN landmarks ------------------------------------------------------------------------------------------------
def test_heatmap_peak_to_landmark_math():
    from zoo.metrics.backbones.fan import box_center_scale, heatmaps_to_landmarks

    # A box with w + h = 195 * 1.28 -> the crop spans 256 px, i.e. 4 image px per heatmap cell.
    box = np.array([[100.0, 100.0, 224.8, 224.8]])
    centers, scales = box_center_scale(box)
    np.testing.assert_allclose(centers, [[162.4, 162.4 - 0.12 * 124.8]])
    np.testing.assert_allclose(scales, [1.28])
    hm = torch.zeros(1, 68, 64, 64)
    hm[0, :, 20, 30] = 1.0            # peak at cell (x=30, y=20)
    hm[0, 0, 20, 31] = 0.5            # right neighbour larger  -> x + 0.25
    hm[0, 0, 21, 30] = 0.5            # lower neighbour larger  -> y + 0.25
    hm[0, 1, 20, 29] = 0.5            # left neighbour larger   -> x - 0.25
    hm[0, 2, :, :] = 0.0
    hm[0, 2, 0, 10] = 1.0             # border row: no refinement
    lm = heatmaps_to_landmarks(hm, torch.from_numpy(centers), torch.from_numpy(scales)).numpy()

    def expected(u, v):               # inverse crop transform: 4 px per cell, crop origin = centre - 128
        return np.trunc([u * 4 + centers[0, 0] - 128, v * 4 + centers[0, 1] - 128])

    np.testing.assert_array_equal(lm[0, 0], expected(30.75, 20.75))
    np.testing.assert_array_equal(lm[0, 1], expected(30.25, 20.5))
    np.testing.assert_array_equal(lm[0, 2], expected(10.5, 0.5))
    np.testing.assert_array_equal(lm[0, 3], expected(30.5, 20.5))


@pytest.fixture
def fa_utils_without_numba(monkeypatch):
    """face-alignment's post-processing as plain Python (same code; skips ~13 s of numba compilation)."""
    import face_alignment.utils as fa_utils

    monkeypatch.setattr(fa_utils, "transform_np", fa_utils.transform_np.py_func)
    monkeypatch.setattr(fa_utils, "_get_preds_fromhm", fa_utils._get_preds_fromhm.py_func)
    return fa_utils


def test_heatmap_math_matches_face_alignment(fa_utils_without_numba):
    from zoo.metrics.backbones.fan import box_center_scale, heatmaps_to_landmarks

    rng = np.random.default_rng(0)
    boxes = np.stack([rng.uniform(0, 80, 4) + [0, 0, 60, 60] for _ in range(3)])
    centers, scales = box_center_scale(boxes)
    hm = rng.random((3, 68, 64, 64)).astype(np.float32)
    hm[:, 0, 0, 7] = 2.0                                        # peaks on the border skip the refinement
    ours = heatmaps_to_landmarks(torch.from_numpy(hm), torch.from_numpy(centers), torch.from_numpy(scales)).numpy()
    for i in range(3):
        _, ref, _ = fa_utils_without_numba.get_preds_fromhm(hm[i:i + 1], centers[i], scales[i])
        np.testing.assert_array_equal(ours[i], ref.reshape(68, 2))


@pytest.fixture(scope="module")
def fan_states():
    from face_alignment.detection.sfd.net_s3fd import s3fd
    from face_alignment.models import FAN

    return random_state_dict(FAN(4), seed=0), random_state_dict(s3fd(), seed=1)


def test_fan_wrapper_matches_face_alignment(tmp_path, monkeypatch, fan_states, fa_utils_without_numba):
    import face_alignment

    from zoo.metrics.backbones.fan import FANLandmarks

    fan_state, s3fd_state = fan_states
    ours = FANLandmarks(fan_state, s3fd_state)
    assert len(ours.fan.state_dict()) == 1129
    assert state_dict_layout(ours.fan) == state_dict_layout(face_alignment.models.FAN(4))

    # The reference: FaceAlignment itself, offline, reading the same random weights from torch.hub's directory.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    ckpt = tmp_path / "hub" / "checkpoints"
    ckpt.mkdir(parents=True)
    torch.save(fan_state, ckpt / "2DFAN4-11f355bf06.pth.tar")
    torch.save(s3fd_state, ckpt / "s3fd.pth")
    reference = face_alignment.FaceAlignment(face_alignment.LandmarksType.TWO_D, device="cpu", flip_input=False,
                                             compile=False, face_detector_kwargs={"path_to_detector":
                                                                                  str(ckpt / "s3fd.pth")})
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (2, 160, 192, 3), dtype=np.uint8)
    box = np.array([30.5, 20.25, 150.0, 140.5, 0.99])      # reaches past the frame: padded crop
    expected = reference.get_landmarks_from_image(frames[1], detected_faces=[box])[0]
    got = ours(frames, boxes=[None, box])
    assert got.shape == (2, 68, 2)
    assert torch.isnan(got[0]).all()                                       # no face -> NaN
    np.testing.assert_array_equal(got[1].numpy(), expected)


def test_fan_detection_path(fan_states, monkeypatch):
    from zoo.metrics.backbones.fan import FANLandmarks

    model = FANLandmarks(*fan_states, batch_size=2)
    frames = np.zeros((3, 64, 64, 3), dtype=np.uint8)
    found = model.detect(frames)               # random S3FD: only the output format is meaningful
    assert len(found) == 3 and all(b.ndim == 2 and b.shape[1] == 5 and (b[:, 4] > 0.5).all() for b in found)

    # forward() takes the best (first) detection per frame; frames without one get NaN.
    best, other = np.array([[8.0, 8.0, 56.0, 56.0, 0.9], [0.0, 0.0, 20.0, 20.0, 0.6]]), np.zeros((0, 5))
    monkeypatch.setattr(model, "detect", lambda images: [best, other])
    got = model(frames[:2])
    assert torch.isnan(got[1]).all() and torch.isfinite(got[0]).all()
    assert torch.equal(got[0], model(frames[:1], boxes=[best[0]])[0])


def test_backbone_ref_hides_module_from_owner():
    owner = torch.nn.Module()
    owner.ref = BackboneRef(torch.nn.Linear(2, 2))
    assert list(owner.state_dict()) == [] and list(owner.parameters()) == []


def test_load_exact_accepts_missing_num_batches_tracked():
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 1), torch.nn.BatchNorm2d(2))
    state = {k: v for k, v in random_state_dict(net).items() if "num_batches" not in k}
    load_exact(net, state, "toy")
    assert torch.equal(net[1].running_var, state["1.running_var"])
    with pytest.raises(WeightsError, match=r"^toy: expected a state dict \(mapping of tensors\), got list$"):
        load_exact(net, list(state.values()), "toy")
