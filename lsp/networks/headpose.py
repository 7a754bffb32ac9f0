"""LSP's Audio2Headpose: an audio-conditioned autoregressive WaveNet over a 12-d head state, single-Gaussian output.

State per frame (12): rotation xyz and translation xyz, then their frame-to-frame velocities (LSP's are in
degrees; the zoo feeds radians, each dimension normalised by the person's statistics, :mod:`lsp.person`). Output per
frame (``2 * 12 + 1 = 25``): one mixture logit (meaningless with one component), 12 means, 12 values ``-log sigma``.

Official names, so ``Audio2Headpose.pkl`` loads key for key after :mod:`lsp.convert` strips ``module.``:
``audio_downsample.{0,1,3}`` (Linear 1024->512, BN1d, LeakyReLU 0.2, Linear 512->512) and ``WaveNet.*`` with
``start_conv1``, ``start_conv2`` (1x1, bias), ``residual_blocks.{0..13}.{filter_conv,gate_conv}`` (kernel 2,
dilations 1..64 twice), ``.residual_conv``, ``.skip_conv`` (1x1), ``.cond_filter_conv``, ``.cond_gate_conv``
(1x1, always with bias), ``end_conv_1``, ``end_conv_2`` (1x1, bias). ``drop_out2D`` has no parameters.

Frame alignment (``models/audio2headpose_model.py``, ``datasets/audiovisual_dataset.py``): the network reads the
history stream one frame behind its target. Teacher-forced, ``history[:, t] = state[t-1]`` (zero/initial pose for
``t = 0``) and ``params[:, t]`` is the distribution of ``state[t]``. The condition at ``t`` is the APC pair of
video frame ``t + frame_future`` (15, 250 ms look-ahead) at inference; the training dataset takes audio from
``history_start + frame_future`` with targets one frame later, i.e. one frame less look-ahead (14) -- an official
quirk we note but do not replicate. :meth:`Audio2Headpose.generate` follows the inference loop exactly.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


class WaveNetBlock(nn.Module):
    """Gated, dilated, causal residual block with a 1x1-projected condition (official ``residual_block``)."""

    def __init__(self, dilation: int, residual_channels: int, dilation_channels: int, skip_channels: int,
                 cond_channels: int, kernel_size: int, use_bias: bool):
        super().__init__()
        self.dilation, self.kernel_size = dilation, kernel_size
        self.lookback = (kernel_size - 1) * dilation  # past frames this block reads
        self.filter_conv = nn.Conv1d(residual_channels, dilation_channels, kernel_size, dilation=dilation,
                                     bias=use_bias)
        self.gate_conv = nn.Conv1d(residual_channels, dilation_channels, kernel_size, dilation=dilation,
                                   bias=use_bias)
        self.residual_conv = nn.Conv1d(dilation_channels, residual_channels, 1, bias=use_bias)
        self.skip_conv = nn.Conv1d(dilation_channels, skip_channels, 1, bias=use_bias)
        self.cond_filter_conv = nn.Conv1d(cond_channels, dilation_channels, 1)
        self.cond_gate_conv = nn.Conv1d(cond_channels, dilation_channels, 1)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x float [B, residual, T], cond [B, cond, T] -> (next input [B, residual, T], skip [B, skip, T]).

        :class:`HeadposeSampler` computes the same one frame at a time from fused copies of these weights."""
        padded = F.pad(x, (self.lookback, 0))  # zero history on the left keeps the block causal
        z = (torch.tanh(self.filter_conv(padded) + self.cond_filter_conv(cond))
             * torch.sigmoid(self.gate_conv(padded) + self.cond_gate_conv(cond)))
        return self.residual_conv(z) + x, self.skip_conv(z)


class WaveNet(nn.Module):
    """Official ``WaveNet`` with a condition, returning every frame (the official one keeps the last
    ``output_length``; slicing is the caller's business here).

    Receptive field: ``1 + (kernel_size - 1) * residual_blocks * (2**residual_layers - 1)`` = 255 frames by default.
    """

    def __init__(self, residual_layers: int = 7, residual_blocks: int = 2, dilation_channels: int = 128,
                 residual_channels: int = 128, skip_channels: int = 256, kernel_size: int = 2,
                 use_bias: bool = True, input_channels: int = 12, output_channels: int = 25,
                 cond_channels: int = 512):
        super().__init__()
        if kernel_size < 2:
            raise ValueError(f"WaveNet kernel_size must be >= 2, got {kernel_size}")
        self.start_conv1 = nn.Conv1d(input_channels, residual_channels, 1)
        self.start_conv2 = nn.Conv1d(residual_channels, residual_channels, 1)
        self.activation = nn.LeakyReLU(0.2)
        # Official nn.Dropout2d on a [B, C, T] tensor: in torch 1.7 that zeroed whole channels per sample, which is
        # what Dropout1d does today (newer Dropout2d would treat the 3-D input as unbatched).
        self.drop_out2D = nn.Dropout1d(0.5)
        self.residual_blocks = nn.ModuleList(
            WaveNetBlock(2 ** i, residual_channels, dilation_channels, skip_channels, cond_channels, kernel_size,
                         use_bias)
            for _ in range(residual_blocks) for i in range(residual_layers))
        self.end_conv_1 = nn.Conv1d(skip_channels, output_channels, 1)
        self.end_conv_2 = nn.Conv1d(output_channels, output_channels, 1)
        self.receptive_field = 1 + sum(block.lookback for block in self.residual_blocks)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Input projection: float [B, input, T] -> [B, residual, T]."""
        return self.activation(self.start_conv2(self.activation(self.start_conv1(x))))

    def head(self, skip: torch.Tensor) -> torch.Tensor:
        """Output projection of the summed skips: float [B, skip, T] -> [B, output, T]."""
        return self.end_conv_2(self.activation(self.end_conv_1(self.activation(skip))))

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Teacher-forced pass: x float [B, input, T], cond [B, cond, T] -> [B, output, T] (causal)."""
        x = self.embed(self.drop_out2D(x))
        skip = 0
        for block in self.residual_blocks:
            x, s = block(x, cond)
            skip = skip + s
        return self.head(skip)


def _split(params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, -log sigma) of single-Gaussian params [..., 2*D+1]; index 0 is the unused mixture logit."""
    size = params.shape[-1]
    if size % 2 != 1 or size < 3:
        raise ValueError(f"single-Gaussian params need 2*D+1 channels, got {size}")
    dim = (size - 1) // 2
    return params[..., 1:1 + dim], params[..., 1 + dim:]


def gaussian_nll(params: torch.Tensor, target: torch.Tensor, sigma_min: float = 0.03) -> torch.Tensor:
    """Official ``GMMLogLoss`` with one component: mean over every element of
    ``0.5 log(2 pi) - s + 0.5 ((target - mu) e^s)^2`` where ``s = min(-log sigma, -log sigma_min)``.

    Args:
        params: float [B, T, 2*D+1] network output.
        target: float [B, T, D] states.
        sigma_min: the floor on sigma (applied by clamping ``-log sigma`` from above).

    Returns:
        scalar tensor.
    """
    mu, neg_log_sigma = _split(params)
    if mu.shape != target.shape:
        raise ValueError(f"gaussian_nll: means {tuple(mu.shape)} vs target {tuple(target.shape)}")
    s = neg_log_sigma.clamp(max=-math.log(sigma_min))
    return (_HALF_LOG_2PI - s + 0.5 * ((target - mu) * torch.exp(s)) ** 2).mean()


def sample(params: torch.Tensor, sigma_scale: float, generator: torch.Generator | None = None,
           sigma_min: float | None = None) -> torch.Tensor:
    """Official ``Sample_GMM`` with one component: ``mu + noise * exp(-(-log sigma)) * sigma_scale``.

    Args:
        params: float [..., 2*D+1].
        sigma_scale: noise scale (official demo: 0.3; 0 returns the mean exactly).
        generator: optional ``torch.Generator`` on ``params.device`` for reproducible noise.
        sigma_min: optional floor on sigma before scaling. The official sampler has none (``None``, default);
            pass 0.03 to sample from the same floored distribution the loss trains.

    Returns:
        float [..., D]. Noise is always drawn, so the generator advances identically whatever ``sigma_scale``.
    """
    mu, neg_log_sigma = _split(params)
    sigma = torch.exp(-neg_log_sigma)
    if sigma_min is not None:
        sigma = sigma.clamp(min=sigma_min)
    noise = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
    return mu + noise * sigma * sigma_scale


class Audio2Headpose(nn.Module):
    """APC pairs + previous states -> next-state Gaussian parameters (official ``Audio2Headpose``).

    Args:
        apc_dim: APC width; the condition input has ``2 * apc_dim`` channels (1024).
        cond_channels: width of ``audio_downsample`` and of the WaveNet condition (512).
        input_channels: state size D (12); ``output_channels`` must be ``2 * D + 1`` (one Gaussian).
        others: the WaveNet's, official defaults.
    """

    def __init__(self, apc_dim: int = 512, cond_channels: int = 512, input_channels: int = 12,
                 output_channels: int = 25, residual_layers: int = 7, residual_blocks: int = 2,
                 dilation_channels: int = 128, residual_channels: int = 128, skip_channels: int = 256,
                 kernel_size: int = 2, use_bias: bool = True):
        super().__init__()
        if output_channels != 2 * input_channels + 1:
            raise ValueError(f"output_channels must be 2*input_channels+1 = {2 * input_channels + 1} "
                             f"(one Gaussian), got {output_channels}")
        self.apc_dim, self.cond_channels, self.state_dim = apc_dim, cond_channels, input_channels
        self.audio_downsample = nn.Sequential(
            nn.Linear(2 * apc_dim, cond_channels), nn.BatchNorm1d(cond_channels), nn.LeakyReLU(0.2),
            nn.Linear(cond_channels, cond_channels))
        self.WaveNet = WaveNet(residual_layers, residual_blocks, dilation_channels, residual_channels, skip_channels,
                               kernel_size, use_bias, input_channels, output_channels, cond_channels)

    @property
    def receptive_field(self) -> int:
        """Frames one output depends on (255 by default)."""
        return self.WaveNet.receptive_field

    def condition(self, cond_apc_pairs: torch.Tensor) -> torch.Tensor:
        """float [B, T, 2*apc_dim] -> [B, T, cond_channels]; BatchNorm over the flattened [B*T, C]."""
        b, t, c = cond_apc_pairs.shape
        if c != 2 * self.apc_dim:
            raise ValueError(f"Audio2Headpose expects {2 * self.apc_dim} condition channels (APC pairs), got {c}")
        return self.audio_downsample(cond_apc_pairs.reshape(b * t, c)).reshape(b, t, self.cond_channels)

    def forward(self, history: torch.Tensor, cond_apc_pairs: torch.Tensor) -> torch.Tensor:
        """Teacher-forced pass.

        Args:
            history: float [B, T, D]; ``history[:, t]`` is the state of the frame before the one predicted at ``t``.
            cond_apc_pairs: float [B, T, 2*apc_dim] audio condition of the predicted frames.

        Returns:
            params float [B, T, 2*D+1]; ``params[:, t]`` depends on ``history[:, :t+1]`` and ``cond[:, :t+1]`` only.
        """
        cond = self.condition(cond_apc_pairs).transpose(1, 2)
        return self.WaveNet(history.transpose(1, 2), cond).transpose(1, 2)

    def warmed_up_condition(self, cond_apc_pairs: torch.Tensor, warmup: bool) -> tuple[torch.Tensor, int]:
        """The downsampled condition [B, offset + T, cond_channels] of a sequence starting at frame 0, and
        ``offset``: with ``warmup``, ``receptive_field - 1`` copies of frame 0 come first (the official sliding
        window at frame 0), else none (zero padding)."""
        cond = self.condition(cond_apc_pairs)
        offset = self.receptive_field - 1 if warmup else 0
        if offset:
            cond = torch.cat([cond[:, :1].expand(-1, offset, -1), cond], dim=1)
        return cond, offset

    def forward_from_start(self, states: torch.Tensor, cond_apc_pairs: torch.Tensor, frame_future: int = 0,
                           warmup: bool = True) -> torch.Tensor:
        """Teacher-forced twin of :meth:`generate`: the params :meth:`generate` computes at each frame when the
        states it samples are ``states``, so training sees the context inference runs in (the warm-up, and a
        zero history before frame 0) instead of the WaveNet's zero padding.

        Args:
            states: float [B, T, D], the states of frames ``0..T-1`` (the targets).
            cond_apc_pairs: float [B, T, 2*apc_dim] of the same frames, not shifted.
            frame_future: audio look-ahead in frames; the last ``frame_future`` frames, whose look-ahead audio is
                past the sequence, get no params.

        Returns:
            params float [B, T - frame_future, 2*D+1]; ``params[:, t]`` predicts ``states[:, t]``.
        """
        b, t, d = states.shape
        n_out = t - frame_future
        if n_out <= 0:
            raise ValueError(f"forward_from_start needs more than frame_future={frame_future} frames, got {t}")
        cond, offset = self.warmed_up_condition(cond_apc_pairs, warmup)
        history = torch.cat([states.new_zeros(b, offset + 1, d), states[:, :n_out - 1]], dim=1)
        cond = cond[:, frame_future:frame_future + offset + n_out]
        return self.WaveNet(history.transpose(1, 2), cond.transpose(1, 2)).transpose(1, 2)[:, offset:]

    @torch.no_grad()
    def generate(self, cond_apc_pairs: torch.Tensor, sigma_scale: float = 0.3,
                 generator: torch.Generator | None = None, initial_history: torch.Tensor | None = None,
                 frame_future: int = 0, warmup: bool = True, sigma_min: float | None = None) -> torch.Tensor:
        """Autoregressive sampling with the official loop (``Audio2HeadposeModel.generate_sequences``).

        Frame ``t`` is sampled from the params computed with history ``state[t-1]`` (``initial_history``, default
        zeros, for ``t = 0``) and condition ``cond[t + frame_future]``. With ``warmup`` the network first consumes
        ``receptive_field - 1`` frames of history ``initial_history`` and condition ``cond[0]`` repeated, then the
        stream continues as the official sliding window sees it (its window at frame 0 holds those copies and
        ``cond[:frame_future]``); outputs of the warm-up are not sampled. Without ``warmup`` the WaveNet starts from
        zero padding, like :meth:`forward` on a sequence starting at frame 0.

        Args:
            cond_apc_pairs: float [B, T, 2*apc_dim], not shifted (the look-ahead is applied here).
            sigma_scale, generator, sigma_min: see :func:`sample`.
            initial_history: float [B, D] or [D]; default zeros (official ``pre_headpose``).
            frame_future: audio look-ahead in frames (official 15); the last ``frame_future`` frames get no output.

        Returns:
            states float [B, T - frame_future, D]. Runs in eval mode (restored afterwards).
        """
        b, t, _ = cond_apc_pairs.shape
        n_out = t - frame_future
        if n_out <= 0:
            raise ValueError(f"generate needs more than frame_future={frame_future} condition frames, got {t}")
        was_training = self.training
        self.eval()
        try:
            cond, offset = self.warmed_up_condition(cond_apc_pairs, warmup)
            prev = torch.zeros(b, self.state_dim, device=cond.device, dtype=cond.dtype)
            if initial_history is not None:
                prev = prev + initial_history.to(prev)  # broadcasts [D] or [B, D]
            stepper = HeadposeSampler(self, b, device=cond.device, dtype=cond.dtype)
            states = []
            for p in range(offset + n_out):
                params = stepper.step(prev, cond[:, p + frame_future], downsampled=True)
                if p >= offset:
                    prev = sample(params, sigma_scale, generator, sigma_min)
                    states.append(prev)
            return torch.stack(states, dim=1)
        finally:
            self.train(was_training)


class HeadposeSampler:
    """Frame-by-frame WaveNet evaluation with per-block ring buffers of past block inputs (fast WaveNet
    generation): constant cost per frame, the same params as :meth:`Audio2Headpose.forward` on the whole sequence.

    A step is a handful of small matrix products, so what costs is the number of operations, not their size: the
    sampler reads the weights once (when made or reset) into fused matrices -- each block's filter and gate taps as
    one, every block's two condition projections (with the filter and gate biases) as one for all blocks, and every
    block's skip projection as one over the blocks' gated outputs -- which takes a step from about 16 operations per
    block to 8 (2.2x the steps per second on a 2-core CPU, ``benchmarks/lsp_streaming.py``).

    Args:
        model: an :class:`Audio2Headpose` in eval mode (BatchNorm and dropout act per batch in training mode).
        batch_size: B.
        device, dtype: of the buffers (default: the model's parameters').
    """

    def __init__(self, model: Audio2Headpose, batch_size: int, device: torch.device | None = None,
                 dtype: torch.dtype | None = None):
        if model.training:
            raise RuntimeError("HeadposeSampler needs the model in eval mode (call model.eval() first)")
        ref = next(model.parameters())
        self.model, self.batch_size = model, batch_size
        self.device, self.dtype = device or ref.device, dtype or ref.dtype
        self.reset()

    def reset(self) -> None:
        """Forget the past (every buffer holds zeros, the left padding of the teacher-forced pass) and read the
        model's weights again."""
        blocks = self.model.WaveNet.residual_blocks
        self.frame = 0
        # buffers[i] [lookback, B, residual]: slot (frame % lookback) holds block i's input of frame - lookback
        self.buffers = [torch.zeros(block.lookback, self.batch_size, block.filter_conv.in_channels,
                                    device=self.device, dtype=self.dtype) for block in blocks]
        self._fuse_weights(blocks)

    @torch.no_grad()
    def _fuse_weights(self, blocks: nn.ModuleList) -> None:
        """The matrices :meth:`step` multiplies by, copied from ``blocks`` (shapes in the comments)."""
        def bias(conv: nn.Conv1d) -> torch.Tensor:
            return conv.bias if conv.bias is not None else conv.weight.new_zeros(conv.out_channels)

        def prepared(t: torch.Tensor) -> torch.Tensor:
            return t.to(self.device, self.dtype).contiguous()

        # filter and gate over the taps [B, kernel_size * residual] (oldest tap first): [k * residual, 2 * dilation]
        self.tap_weights = [prepared(torch.cat([b.filter_conv.weight, b.gate_conv.weight]).permute(2, 1, 0)
                                     .flatten(0, 1)) for b in blocks]
        # all blocks' condition projections and filter / gate biases: [cond, blocks * 2 * dilation]
        self.cond_weight = prepared(torch.cat([torch.cat([b.cond_filter_conv.weight, b.cond_gate_conv.weight])[..., 0]
                                               for b in blocks]).T)
        self.cond_bias = prepared(torch.cat([torch.cat([b.cond_filter_conv.bias + bias(b.filter_conv),
                                                        b.cond_gate_conv.bias + bias(b.gate_conv)]) for b in blocks]))
        self.residual_weights = [prepared(b.residual_conv.weight[..., 0].T) for b in blocks]   # [dilation, residual]
        self.residual_biases = [prepared(bias(b.residual_conv)) for b in blocks]
        # the summed skips as one product over the blocks' gated outputs: [blocks * dilation, skip]
        self.skip_weight = prepared(torch.cat([b.skip_conv.weight[..., 0].T for b in blocks]))
        self.skip_bias = prepared(sum(bias(b.skip_conv) for b in blocks))

    @torch.no_grad()
    def step(self, prev_state: torch.Tensor, cond_frame: torch.Tensor, downsampled: bool = False) -> torch.Tensor:
        """Params of the next frame.

        Args:
            prev_state: float [B, D], the history entry of this frame (the previous state).
            cond_frame: float [B, 2*apc_dim] APC pair, or [B, cond_channels] already passed through
                ``audio_downsample`` when ``downsampled``.

        Returns:
            params float [B, 2*D+1].
        """
        net = self.model.WaveNet
        if self.model.training:
            raise RuntimeError("HeadposeSampler needs the model in eval mode")
        if not downsampled:
            cond_frame = self.model.condition(cond_frame[:, None])[:, 0]
        gate_inputs = torch.addmm(self.cond_bias, cond_frame, self.cond_weight).chunk(len(self.buffers), dim=1)
        x = net.embed(prev_state[..., None])[..., 0]  # [B, residual]; dropout is the identity in eval mode
        gated = []
        for block, buf, tap_weight, gate_input, residual_weight, residual_bias in zip(
                net.residual_blocks, self.buffers, self.tap_weights, gate_inputs, self.residual_weights,
                self.residual_biases):
            length = buf.shape[0]
            # Ring buffer: slot (frame % length) holds the input of frame - length, the oldest tap; later taps sit
            # one dilation apart. Read every tap before this frame's input overwrites the oldest.
            taps = torch.cat([buf[(self.frame + j * block.dilation) % length] for j in range(block.kernel_size - 1)]
                             + [x], dim=1)
            buf[self.frame % length] = x
            filt, gate = torch.addmm(gate_input, taps, tap_weight).chunk(2, dim=1)
            z = torch.tanh(filt) * torch.sigmoid(gate)
            gated.append(z)
            x = torch.addmm(x, z, residual_weight) + residual_bias
        self.frame += 1
        skip = torch.addmm(self.skip_bias, torch.cat(gated, dim=1), self.skip_weight)
        return net.head(skip[..., None])[..., 0]
