"""LSP networks: mouth LSTM, head-pose WaveNet (teacher-forced, incremental, sampling), Feature2Face renderer."""
from __future__ import annotations

import math

import pytest
import torch

from lsp.networks.audio2mouth import Audio2Mouth, pair_frames
from lsp.networks.headpose import Audio2Headpose, HeadposeSampler, gaussian_nll, sample
from lsp.networks.renderer import Feature2FaceGenerator, ResUNetLevel

from helpers import one_line_error

# Small head-pose net: receptive field 1 + 2 * (1 + 2 + 4) = 15 frames.
SMALL_HP = {"apc_dim": 4, "cond_channels": 8, "input_channels": 3, "output_channels": 7, "residual_layers": 3,
            "residual_blocks": 2, "dilation_channels": 8, "residual_channels": 8, "skip_channels": 16}


def _eval(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Randomise BatchNorm statistics too, so eval-mode equivalences are not trivially about identity norms."""
    torch.manual_seed(seed)
    for m in module.modules():
        if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_(0, 0.1)
    return module.eval()


# --------------------------------------------------------------------------------------------------- mouth

def test_pair_frames():
    x = torch.arange(2 * 6 * 3, dtype=torch.float32).reshape(2, 6, 3)
    y = pair_frames(x)
    assert y.shape == (2, 3, 6)
    assert torch.equal(y[1, 2], torch.cat([x[1, 4], x[1, 5]]))
    with pytest.raises(ValueError, match="even"):
        pair_frames(x[:, :5])


def test_mouth_shapes_and_official_defaults():
    net = Audio2Mouth(apc_dim=8, hidden_size=6, num_layers=3, num_points=5, fc_size=10)
    out, (h, c) = net(torch.randn(2, 7, 16))
    assert out.shape == (2, 7, 15) and h.shape == c.shape == (3, 2, 6)
    with pytest.raises(ValueError, match="16 input channels"):
        net(torch.randn(2, 7, 8))
    official = Audio2Mouth()
    assert official.LSTM.input_size == 512 and official.LSTM.hidden_size == 256
    assert official.fc[-1].out_features == 75 and official.downsample[0].in_features == 1024


def test_mouth_chunked_equals_whole_in_eval():
    net = _eval(Audio2Mouth(apc_dim=8, hidden_size=6, fc_size=10))
    x = torch.randn(2, 11, 16)
    with torch.no_grad():
        whole, whole_state = net(x)
        outs, state = [], None
        for a, b in ((0, 4), (4, 5), (5, 11)):
            y, state = net(x[:, a:b], state)
            outs.append(y)
    torch.testing.assert_close(torch.cat(outs, 1), whole, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(state[0], whole_state[0], atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------------------------------------ headpose

def test_headpose_shapes_and_receptive_field():
    net = Audio2Headpose(**SMALL_HP)
    assert net.receptive_field == 15
    params = net(torch.randn(2, 9, 3), torch.randn(2, 9, 8))
    assert params.shape == (2, 9, 7)
    assert Audio2Headpose().receptive_field == 255
    with pytest.raises(ValueError, match="2\\*input_channels\\+1"):
        Audio2Headpose(input_channels=12, output_channels=24)


def test_headpose_is_causal():
    net = _eval(Audio2Headpose(**SMALL_HP))
    hist, cond = torch.randn(1, 30, 3), torch.randn(1, 30, 8)
    k = 17
    hist2, cond2 = hist.clone(), cond.clone()
    hist2[:, k:] += torch.randn(1, 30 - k, 3)
    cond2[:, k:] += torch.randn(1, 30 - k, 8)
    with torch.no_grad():
        a, b = net(hist, cond), net(hist2, cond2)
    torch.testing.assert_close(a[:, :k], b[:, :k], atol=0, rtol=0)
    assert (a[:, k] - b[:, k]).abs().max() > 1e-4


@pytest.mark.parametrize("kernel_size, use_bias", [(2, True), (3, True), (2, False)])
def test_incremental_sampler_equals_teacher_forced(kernel_size, use_bias):
    """The sampler's fused weights (filter and gate taps, every block's condition and skip projections) compute
    the teacher-forced pass, frame by frame."""
    net = _eval(Audio2Headpose(**SMALL_HP, kernel_size=kernel_size, use_bias=use_bias))
    t = 2 * net.receptive_field + 5  # long enough for every ring buffer to wrap around
    hist, cond = torch.randn(2, t, 3), torch.randn(2, t, 8)
    with torch.no_grad():
        full = net(hist, cond)
    sampler = HeadposeSampler(net, batch_size=2)
    steps = torch.stack([sampler.step(hist[:, i], cond[:, i]) for i in range(t)], dim=1)
    torch.testing.assert_close(steps, full, atol=1e-5, rtol=1e-5)
    sampler.reset()
    again = sampler.step(hist[:, 0], net.condition(cond[:, :1])[:, 0], downsampled=True)
    torch.testing.assert_close(again, full[:, 0], atol=1e-5, rtol=1e-5)


def test_sampler_needs_eval_mode():
    with pytest.raises(RuntimeError, match="eval"):
        HeadposeSampler(Audio2Headpose(**SMALL_HP).train(), batch_size=1)


def test_gaussian_nll_matches_hand_computation():
    params = torch.tensor([[[0.7, 1.0, -2.0, 0.5, 5.0]]])  # logit, mu (2), -log sigma (2); 5.0 > -log 0.03
    target = torch.tensor([[[1.5, -1.0]]])
    s1, s2 = 0.5, min(5.0, -math.log(0.03))
    terms = [0.5 * math.log(2 * math.pi) - s + 0.5 * ((x - m) * math.exp(s)) ** 2
             for s, x, m in ((s1, 1.5, 1.0), (s2, -1.0, -2.0))]
    assert gaussian_nll(params, target).item() == pytest.approx(sum(terms) / 2, rel=1e-6)
    no_floor = 0.5 * math.log(2 * math.pi) - 5.0 + 0.5 * math.exp(5.0) ** 2
    assert gaussian_nll(params, target, sigma_min=1e-6).item() == pytest.approx((terms[0] + no_floor) / 2, rel=1e-6)


def test_sample_semantics():
    params = torch.randn(4, 6, 25)
    mu = params[..., 1:13]
    assert torch.equal(sample(params, 0.0, torch.Generator().manual_seed(1)), mu)
    a = sample(params, 0.3, torch.Generator().manual_seed(3))
    b = sample(params, 0.3, torch.Generator().manual_seed(3))
    c = sample(params, 0.3, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    # sigma = exp(-(-log sigma)) scaled by sigma_scale; checked on many draws of one frame.
    one = torch.cat([torch.zeros(1), torch.full((12,), 2.0), torch.full((12,), math.log(4.0))])  # sigma 0.25
    draws = sample(one.expand(20000, 25), 0.5, torch.Generator().manual_seed(0))
    assert draws.mean().item() == pytest.approx(2.0, abs=0.01)
    assert draws.std().item() == pytest.approx(0.125, rel=0.03)
    floored = sample(one.expand(20000, 25), 1.0, torch.Generator().manual_seed(0), sigma_min=0.5)
    assert floored.std().item() == pytest.approx(0.5, rel=0.03)


def test_generate_without_warmup_follows_teacher_forcing():
    net = _eval(Audio2Headpose(**SMALL_HP))
    cond = torch.randn(2, 20, 8)
    states = net.generate(cond, sigma_scale=0.0, warmup=False)
    assert states.shape == (2, 20, 3)
    history = torch.cat([torch.zeros(2, 1, 3), states[:, :-1]], dim=1)  # history[t] = state[t-1], zero first
    with torch.no_grad():
        params = net(history, cond)
    torch.testing.assert_close(params[..., 1:4], states, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("sigma_scale", [0.0, 0.3])
def test_generate_matches_official_sliding_window_loop(sigma_scale):
    """The official loop: a receptive-field window of history (initial pose repeated, then samples) and of audio
    (first frame repeated, then frames up to t + frame_future); the last output of each window is sampled."""
    net = _eval(Audio2Headpose(**SMALL_HP)).train()  # generate must switch to eval itself and restore
    cond, ff, init = torch.randn(1, 12, 8), 2, torch.randn(3)
    out = net.generate(cond, sigma_scale, torch.Generator().manual_seed(5), initial_history=init, frame_future=ff)
    assert net.training and out.shape == (1, 10, 3)
    net.eval()
    r = net.receptive_field
    padded = torch.cat([cond[:, :1].expand(1, r - 1, 8), cond], dim=1)
    hist, gen, ref = init.expand(1, r, 3), torch.Generator().manual_seed(5), []
    with torch.no_grad():
        for i in range(cond.shape[1] - ff):
            params = net(hist, padded[:, i + ff:i + ff + r])[:, -1]
            ref.append(sample(params, sigma_scale, gen))
            hist = torch.cat([hist[:, 1:], ref[-1][:, None]], dim=1)
    torch.testing.assert_close(out, torch.stack(ref, dim=1), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("warmup", [True, False])
@pytest.mark.parametrize("frame_future", [0, 3])
def test_forward_from_start_is_generate_teacher_forced(warmup, frame_future):
    """Training scores each state with the params generate() computes for it: fed the states generate sampled
    at sigma 0 (its means), the teacher-forced pass gives back those means."""
    net = _eval(Audio2Headpose(**SMALL_HP))
    cond = torch.randn(2, 20, 8)
    means = net.generate(cond, sigma_scale=0.0, frame_future=frame_future, warmup=warmup)
    states = torch.cat([means, torch.randn(2, frame_future, 3)], dim=1)    # frames without look-ahead audio
    with torch.no_grad():
        params = net.forward_from_start(states, cond, frame_future, warmup)
    assert params.shape == (2, 20 - frame_future, 7)
    torch.testing.assert_close(params[..., 1:4], means, atol=1e-5, rtol=1e-5)


def test_forward_from_start_needs_a_frame_with_its_look_ahead():
    net = Audio2Headpose(**SMALL_HP)
    one_line_error(lambda: net.forward_from_start(torch.zeros(1, 3, 3), torch.zeros(1, 3, 8), frame_future=3),
                   "forward_from_start needs more than frame_future=3 frames, got 3", error=ValueError)


# ------------------------------------------------------------------------------------------------ renderer

@pytest.mark.parametrize("size,num_downs,blocks", [(64, 5, 1), (128, 6, 2)])
def test_renderer_shapes_and_range(size, num_downs, blocks):
    torch.manual_seed(0)
    net = Feature2FaceGenerator(num_downs=num_downs, ngf=4, blocks_per_level=blocks)
    x = torch.rand(2, 13, size, size) * 2 - 1
    y = net(x)  # training mode, batch 2: BatchNorm sees 2x2x2 values at the bottom
    assert y.shape == (2, 3, size, size) and y.abs().max() <= 1
    y.mean().backward()
    assert net.model.model[0].weight.grad is not None
    with torch.no_grad():
        assert net.eval()(x[:1]).shape == (1, 3, size, size)


def test_renderer_rejects_bad_input():
    net = Feature2FaceGenerator(num_downs=5, ngf=4, blocks_per_level=1)
    with pytest.raises(ValueError, match="divisible by 32"):
        net(torch.zeros(1, 13, 48, 64))
    with pytest.raises(ValueError, match="13"):
        net(torch.zeros(1, 4, 64, 64))


@pytest.mark.parametrize("call, fragment", [
    (lambda: Audio2Mouth(apc_dim=4, hidden_size=8)(torch.zeros(1, 3, 5)), "Audio2Mouth expects 8 input channels"),
    (lambda: Audio2Headpose(**SMALL_HP).condition(torch.zeros(1, 3, 5)), "Audio2Headpose expects 8 condition"),
    (lambda: Audio2Headpose(**{**SMALL_HP, "output_channels": 6}), "output_channels must be 2*input_channels+1 = 7"),
    (lambda: Audio2Headpose(**{**SMALL_HP, "kernel_size": 1}), "WaveNet kernel_size must be >= 2, got 1"),
    (lambda: Audio2Headpose(**SMALL_HP).generate(torch.zeros(1, 4, 8), frame_future=4),
     "generate needs more than frame_future=4 condition frames, got 4"),
    (lambda: gaussian_nll(torch.zeros(1, 2, 6), torch.zeros(1, 2, 3)), "need 2*D+1 channels, got 6"),
    (lambda: gaussian_nll(torch.zeros(1, 2, 7), torch.zeros(1, 2, 2)), "gaussian_nll: means (1, 2, 3) vs target"),
    (lambda: Feature2FaceGenerator(num_downs=1), "needs num_downs >= 2, got 1"),
    (lambda: Feature2FaceGenerator(num_downs=3, blocks_per_level=0), "blocks_per_level must be >= 1, got 0"),
    (lambda: Feature2FaceGenerator(num_downs=3, ngf=4)(torch.zeros(13, 16, 16)), "expects [B, 13, H, W], got"),
])
def test_networks_name_their_bad_arguments(call, fragment):
    one_line_error(call, fragment, error=ValueError)


def test_renderer_official_channels():
    with torch.device("meta"):
        net = Feature2FaceGenerator()
    level, inner = net.model, []
    while True:
        inner.append(level.model[0].out_channels)
        subs = [m for m in level.model if type(m) is type(level)]
        if not subs:
            break
        level = subs[0]
    assert inner == [64, 128, 256, 512, 512, 512, 512, 512]
    assert net.model.model[0].in_channels == 13 and net.model.model[-1].out_channels == 3


def test_renderer_input_skip_adds_a_conv_of_the_input_to_the_output():
    torch.manual_seed(0)
    net = Feature2FaceGenerator(num_downs=5, ngf=4, blocks_per_level=1, input_skip=True).eval()
    official = Feature2FaceGenerator(num_downs=5, ngf=4, blocks_per_level=1).state_dict()
    keys = net.state_dict()
    assert set(keys) - set(official) == {"model.input_conv.weight"} and set(official) <= set(keys)
    assert keys["model.input_conv.weight"].shape == (3, 13, 3, 3)
    # silence the U-Net's last conv, keep the centre tap on the edge-map channel: the frame is tanh(edge map)
    with torch.no_grad():
        net.model.model[-1].weight.zero_()
        net.model.input_conv.weight.zero_()
        net.model.input_conv.weight[:, 0, 1, 1] = 1
    x = torch.rand(1, 13, 64, 64) * 2 - 1
    torch.testing.assert_close(net(x), torch.tanh(x[:, :1]).expand(-1, 3, -1, -1))


def test_renderer_input_skip_is_outermost_only():
    with pytest.raises(ValueError, match="outermost"):
        ResUNetLevel(4, 8, input_skip=True)


def test_input_skip_reaches_the_stage_and_the_assembled_model():
    from lsp.model import LSP, LSPConfig
    from lsp.stages.renderer import RendererConfig, RendererStage
    stage = RendererStage(RendererConfig(input_skip=True, ngf=4, num_downs=5))
    cfg = LSPConfig(renderer=RendererConfig(input_skip=True, ngf=4, num_downs=5))
    assembled = LSP(cfg).renderer.state_dict()
    trained = {k[len("generator."):]: v for k, v in stage.state_dict().items() if k.startswith("generator.")}
    assert "model.input_conv.weight" in trained and trained.keys() == assembled.keys()
    assert "model.input_conv.weight" not in LSP(LSPConfig()).renderer.state_dict()     # LSP's layout by default
