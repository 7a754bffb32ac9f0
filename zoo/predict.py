"""``zoo predict --audio``: any audio file in, an mp4 of the model speaking it (with that audio) out.

Models that support it implement ``load(path)`` (a classmethod building the model from its checkpoint alone),
``fps``, ``sample_rate`` and ``predict_audio_chunks(audio, seed, poses, progress)``, which refuses unusable audio
when called and then yields the video a piece at a time, each with ``frames`` float [n, 3, H, W] in [0, 1]. Each
piece is encoded as it comes (:func:`zoo.io.video.video_writer`), so audio of any length needs the memory of one
piece. The model runs where ``--device`` puts it (``.to(device)``; by default the GPU when there is one).
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from zoo.errors import ConfigError, DataError
from zoo.harness import compose_run, find_checkpoint
from zoo.model import head_poses
from zoo.registry import get_entry


def resolve_checkpoint(model: str, ckpt: Optional[str]) -> Path:
    """The checkpoint ``zoo predict --model MODEL --ckpt CKPT --audio ...`` uses: :func:`zoo.harness.find_checkpoint`
    under the model's default config (where its runs are, ``run.runs_dir``, and its default run, LSP's
    ``identity<k>``)."""
    return find_checkpoint(compose_run(model), ckpt)


def resolve_device(name: str) -> torch.device:
    """The torch device ``--device NAME`` names: ``auto`` (CUDA when available, else the CPU), ``cpu``, ``cuda`` or
    ``cuda:N``; one :class:`ConfigError` line for a name torch does not know, a device this machine does not have,
    or Apple's MPS, which has no float64 (LSP's manifold projection and motion smoothing compute in it)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    if device is not None and device.type == "mps":
        raise ConfigError(f"--device {name}: not supported: MPS has no float64, which the inference needs; use cpu")
    if device is None or device.type not in ("cpu", "cuda"):
        raise ConfigError(f"--device {name}: not a device (auto, cpu, cuda or cuda:N)")
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(f"--device {name}: this machine has no CUDA GPU that torch can use")
        if device.index is not None and device.index >= count:
            raise ConfigError(f"--device {name}: this machine has {count} CUDA GPU(s), numbered from 0")
    return device


def load_poses(path: str) -> torch.Tensor:
    """Head poses float [T, 6] (rotation xyz rad, translation xyz) from a .npy file."""
    try:
        poses = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise DataError(f"--pose {path}: cannot read a .npy array ({error})") from None
    if not isinstance(poses, np.ndarray):    # an .npz archive
        raise DataError(f"--pose {path}: expected a .npy array, got a {type(poses).__name__}")
    return head_poses(poses, f"--pose {path}")


def predict_audio_file(model: str, ckpt: Optional[str], audio_path: str, out: Optional[str], seed: int = 0,
                       pose_path: Optional[str] = None, overrides: Optional[list[str]] = None,
                       device: str = "auto") -> Path:
    from zoo.io.audio import load_audio
    from zoo.model import to_uint8_hwc
    from zoo.io.video import video_writer

    if out is None:
        raise ConfigError("--audio needs --out OUT.mp4")
    if Path(out).suffix.lower() != ".mp4":
        raise ConfigError(f"--out {out}: the video is written as an mp4 (H.264 and AAC); name it OUT.mp4")
    if overrides:
        raise ConfigError(f"--audio prediction takes no config overrides (got {' '.join(overrides)}); the model's "
                          f"config comes from its checkpoint")
    model_class = get_entry(model).model_class
    if not hasattr(model_class, "predict_audio_chunks"):
        raise ConfigError(f"model '{model}' does not predict from an audio file")
    if not Path(audio_path).is_file():
        raise DataError(f"--audio file not found: {audio_path}")
    poses = load_poses(pose_path) if pose_path else None
    target = resolve_device(device)
    net = model_class.load(resolve_checkpoint(model, ckpt)).to(target)
    audio = load_audio(audio_path, net.sample_rate)
    try:
        pieces = net.predict_audio_chunks(audio, seed=seed, poses=poses, progress=True)
    except DataError as error:       # the audio is too short or not audio: name the file it came from
        raise DataError(f"--audio {audio_path}: {error}") from None
    with video_writer(out, fps=net.fps, audio=audio, sample_rate=net.sample_rate) as video:
        for piece in pieces:
            video.write(to_uint8_hwc(piece.frames))
    frames = video.frames_written
    if poses is not None and len(poses) != frames:
        # a pose file of another length is usually a different frame rate or clip: say so rather than fail
        use = "its last pose is held for the rest" if len(poses) < frames else "the rest are unused"
        print(f"warning: --pose {pose_path} has {len(poses)} poses for {frames} frames of audio: {use}",
              file=sys.stderr)
    print(f"wrote {out}: {frames} frames at {net.fps:g} fps with {len(audio) / net.sample_rate:.2f} s of audio "
          f"(on {target})")
    return Path(out)
