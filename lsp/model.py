"""The assembled Live Speech Portraits model: audio in, video out, for one person.

``zoo fit --model lsp`` trains the stages in order (:data:`LSP.stages`) and then :meth:`LSP.assemble` puts their
networks together with the person's profile and the APC base of the manifold projection into one checkpoint,
which ``zoo test``/``zoo predict`` and the streaming API load. Inference itself lives in :mod:`lsp.inference`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import ClassVar, Iterator

import numpy as np
import torch
from torch import nn

from lsp.inference import EngineOutput, LSPEngine
from lsp.person import PersonProfile, person_clip_ids
from lsp.speech import FrozenAPC
from lsp.stages.apc import APCConfig
from lsp.stages.headpose import HeadposeConfig, headpose_network
from lsp.stages.mouth import MouthConfig, mouth_network
from lsp.stages.renderer import RendererConfig, check_renderer_depth, renderer_generator
from zoo.data.features import log_mel
from zoo.errors import ConfigError, DataError, WeightsError
from zoo.fusion import FoldedBatchNorm
from zoo.io.audio import mono_float_audio
from zoo.model import GeneratedClip, TalkingHeadModel
from zoo.weights import load_checkpoint_state_dict, load_strict, load_torch_file


@dataclass
class LSPConfig:
    identity: int = 0                       # the target person; every person-specific stage trains on it
    apc: APCConfig = field(default_factory=APCConfig)
    mouth: MouthConfig = field(default_factory=MouthConfig)
    headpose: HeadposeConfig = field(default_factory=HeadposeConfig)
    renderer: RendererConfig = field(default_factory=RendererConfig)
    # inference (LSP's demo.py and per-person config)
    lle_neighbours: int = 10                # manifold projection K
    lle_percent: float = 1.0                # blend of the projection (1 = replace the feature)
    mouth_smooth_sigma: float = 1.0         # frames; LSP: 1-1.5 at 60 fps
    mouth_amplitude: float = 1.0            # LSP's AMP (1.5-2 for its subjects); 1 keeps the trained amplitude
    pose_smooth_sigma: float = 1.0          # frames; LSP: 2-10 at 60 fps
    seed: int = 0                           # head-motion sampling seed (per clip: seed + dataset index)

    bounds: ClassVar[dict[str, str]] = {"lle_neighbours": "[1, inf)", "lle_percent": "[0, 1]",
                                        "mouth_smooth_sigma": "[0, inf)", "mouth_amplitude": "[0, inf)",
                                        "pose_smooth_sigma": "[0, inf)"}


class LSP(TalkingHeadModel):
    """All of LSP's inference networks + the person's profile. ``generate`` needs ``batch["mel"]`` [B, 2T, 80]."""

    # (key in LSPConfig, registered stage model); trained in this order by `zoo fit --model lsp`
    stages: ClassVar[tuple[tuple[str, str], ...]] = (
        ("apc", "lsp.apc"), ("mouth", "lsp.mouth"), ("headpose", "lsp.headpose"), ("renderer", "lsp.renderer"))
    data_fields = ("mel",)
    protocol = "person-specific"
    monitor = None

    def __init__(self, cfg: LSPConfig):
        super().__init__()
        self.save_hyperparameters(asdict(cfg), logger=False)
        self.cfg = cfg
        self.speech = FrozenAPC(cfg.apc.mel_dim, cfg.apc.hidden_size, cfg.apc.num_layers)
        self.mouth = mouth_network(cfg.mouth, cfg.apc.hidden_size)
        self.headpose = headpose_network(cfg.headpose, cfg.apc.hidden_size)
        self.renderer = renderer_generator(cfg.renderer)
        self.profile = PersonProfile()
        self.requires_grad_(False)
        self._folded_renderer = FoldedBatchNorm()

    @classmethod
    def configure_data(cls, data_cfg, model_cfg) -> None:
        data_cfg.identities = [int(model_cfg.identity)]

    @classmethod
    def default_run_name(cls, model_cfg) -> str:
        return f"identity{int(model_cfg.identity)}"

    def check_loaded(self) -> None:
        """Scoring one person's model on another person's clips would give meaningless numbers: refuse."""
        if self.profile.fitted and int(self.profile.identity) != int(self.cfg.identity):
            raise ConfigError(f"this LSP checkpoint was trained on identity {int(self.profile.identity)} but "
                              f"model.identity is {self.cfg.identity}; pass model.identity="
                              f"{int(self.profile.identity)}")

    def on_validation_start(self) -> None:     # also for callers that load the weights themselves
        self.check_loaded()

    def on_test_start(self) -> None:
        self.check_loaded()

    def on_predict_start(self) -> None:
        self.check_loaded()

    def training_step(self, batch: dict, batch_idx: int):
        raise RuntimeError("the assembled LSP is not trained directly; `zoo fit --model lsp` trains its stages")

    def configure_optimizers(self):
        return None

    # ------------------------------------------------------------------------------------------ inference

    def render_landmarks(self, landmarks2d: torch.Tensor, shoulders2d: torch.Tensor,
                         renderer: nn.Module | None = None) -> torch.Tensor:
        """Frames float [N, 3, H, W] in [0, 1] from image landmarks [N, 68, 2] and shoulders [N, 18, 2], through
        ``renderer`` (default: :attr:`renderer`; :class:`~lsp.inference.LSPEngine` passes
        :meth:`inference_renderer`)."""
        renderer = self.renderer if renderer is None else renderer
        condition = self.profile.renderer_input(landmarks2d, shoulders2d)
        return torch.cat([renderer(chunk).add(1).div(2).clamp(0, 1) for chunk in condition.split(32)])

    def inference_renderer(self) -> nn.Module:
        """:attr:`renderer` with its BatchNorms folded into its convolutions (:mod:`zoo.fusion`): the same frames, one
        pass less per BatchNorm. Kept between calls, made again once the renderer's weights change. Eval mode."""
        return self._folded_renderer(self.renderer)

    def engine(self, fps: float, seed: int = 0, poses: torch.Tensor | None = None) -> LSPEngine:
        return LSPEngine(self, fps, seed, poses)

    @torch.no_grad()
    def generate(self, batch: dict) -> GeneratedClip:
        """Each clip from its own audio (``mel``), head motion sampled with seed ``cfg.seed + sample_index``."""
        fps = float(self.profile.fps)
        outputs = []
        for i, mel in enumerate(batch["mel"]):
            index = int(batch["sample_index"][i]) if "sample_index" in batch else i
            engine = self.engine(fps, self.cfg.seed + index)
            outputs.append(EngineOutput.concat([engine.push_mel(mel), engine.finish()]))
        return GeneratedClip(frames=torch.stack([o.frames for o in outputs]),
                             landmarks2d=torch.stack([o.landmarks2d for o in outputs]),
                             pose=torch.stack([o.pose for o in outputs]))

    @property
    def fps(self) -> float:
        return float(self.profile.fps)

    @property
    def sample_rate(self) -> int:
        return int(self.profile.sample_rate)

    def predict_audio(self, audio: np.ndarray, seed: int = 0, poses: torch.Tensor | None = None,
                      progress: bool = False) -> EngineOutput:
        """A video for float mono audio [N] at :attr:`sample_rate` (at least half a frame): one frame per 1/fps s,
        all in memory (:meth:`predict_audio_chunks` gives them 2 s at a time).

        ``poses`` (float [T, 6]) drives the head instead of the sampled motion; ``progress`` shows a bar."""
        return EngineOutput.concat(list(self.predict_audio_chunks(audio, seed, poses, progress)))

    def predict_audio_chunks(self, audio: np.ndarray, seed: int = 0, poses: torch.Tensor | None = None,
                             progress: bool = False) -> Iterator[EngineOutput]:
        """:meth:`predict_audio`'s frames as they are made, about 2 s of video per item, so that audio of any
        length needs the memory of one item (``zoo predict`` writes each to the video as it comes). Audio too short
        for a frame is refused here, before the first item."""
        audio = mono_float_audio(audio, "LSP.predict_audio")
        try:
            mel = torch.from_numpy(log_mel(audio, self.sample_rate, self.fps))
        except ValueError as error:      # too short for one frame's analysis window
            raise DataError(f"LSP.predict_audio: {error}") from None
        if len(mel) < 2:                 # a frame needs two mel rows
            raise DataError(f"LSP.predict_audio: {len(audio)} samples are less than half a video frame at "
                            f"{self.fps:g} fps: no frame to make")
        return self._engine_chunks(self.engine(self.fps, seed, poses), mel, progress)

    @torch.no_grad()
    def _engine_chunks(self, engine: LSPEngine, mel: torch.Tensor, progress: bool) -> Iterator[EngineOutput]:
        from tqdm.auto import tqdm

        chunk = 2 * int(round(2 * self.fps))          # 2 s of mel rows per item (and step of the progress bar)
        with tqdm(total=len(mel) // 2, unit="frame", disable=not progress, desc="lsp") as bar:
            for start in range(0, len(mel), chunk):
                output = engine.push_mel(mel[start:start + chunk])
                bar.update(len(output.frames))
                yield output
            output = engine.finish()
            bar.update(len(output.frames))
            yield output

    @classmethod
    def load(cls, path: str | Path, map_location: str = "cpu") -> LSP:
        """The assembled model saved by ``zoo fit --model lsp`` (its config comes from the checkpoint)."""
        from omegaconf import OmegaConf
        from omegaconf.errors import OmegaConfBaseException

        from zoo.config import to_dataclass

        checkpoint = load_torch_file(path, f"LSP checkpoint {path}", map_location)
        not_lsp = f"{path} is not an assembled LSP checkpoint (`zoo fit --model lsp` writes one)"
        if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint or "hyper_parameters" not in checkpoint:
            raise WeightsError(not_lsp)
        try:   # a stage's checkpoint (lsp.mouth, ...) has its own hyper-parameters
            cfg = to_dataclass(OmegaConf.merge(OmegaConf.structured(LSPConfig), checkpoint["hyper_parameters"]),
                               LSPConfig)
        except OmegaConfBaseException as error:
            raise WeightsError(f"{not_lsp}: {str(error).splitlines()[0]}") from None
        model = cls(cfg)
        load_strict(model, checkpoint["state_dict"], f"{path} does not match this version's LSP")
        return model.eval()

    # ------------------------------------------------------------------------------------------ assembly

    @classmethod
    def check_frame_size(cls, cfg: LSPConfig, frame_size: int) -> None:
        """Before any stage trains: the renderer (the last stage) must fit the frames."""
        check_renderer_depth(cfg.renderer.num_downs, frame_size)

    @classmethod
    def stage_model_config(cls, cfg: LSPConfig, key: str, checkpoints: dict[str, Path]):
        """The model config of stage ``key`` inside the pipeline: the LSP's section, with the shared identity
        and the trained APC."""
        stage_cfg = getattr(cfg, key)
        if hasattr(stage_cfg, "identity"):
            stage_cfg.identity = cfg.identity
        if hasattr(stage_cfg, "apc_ckpt"):
            stage_cfg.apc_ckpt = str(checkpoints["apc"])
            stage_cfg.apc_hidden_size, stage_cfg.apc_num_layers = cfg.apc.hidden_size, cfg.apc.num_layers
        return stage_cfg

    @classmethod
    @torch.no_grad()
    def assemble(cls, cfg: LSPConfig, checkpoints: dict[str, Path], datamodule) -> LSP:
        """One LSP from the stage checkpoints; the APC base is encoded from the person's training audio."""
        model = cls(cfg)
        states = {key: load_checkpoint_state_dict(path, f"stage '{key}' checkpoint {path}")
                  for key, path in checkpoints.items()}

        def part(key: str, prefix: str) -> dict:
            return {k[len(prefix):]: v for k, v in states[key].items() if k.startswith(prefix)}

        def load(module: torch.nn.Module, key: str, prefix: str) -> None:
            # a finished stage is reused as it is, so a size changed since it trained shows up here
            load_strict(module, part(key, prefix), f"stage '{key}' ({checkpoints[key]}) does not fit model.{key} "
                                                   f"as now configured (--force retrains the stages)")

        load(model.speech.apc, "apc", "apc.")
        load(model.mouth, "mouth", "net.")
        load(model.headpose, "headpose", "net.")
        load(model.renderer, "renderer", "generator.")
        load(model.profile, "renderer", "profile.")
        apc = part("apc", "apc.")
        for key in ("mouth", "headpose"):   # every person stage must have been fitted on the same person and APC
            other = part(key, "profile.")
            if int(other["identity"]) != int(model.profile.identity):
                raise ConfigError(f"stage '{key}' was trained on identity {int(other['identity'])}, the renderer "
                                  f"on {int(model.profile.identity)}")
            # its net's outputs are in the units of its own profile; the assembled model converts with the renderer's
            for name in PersonProfile.STATISTICS:
                mine, theirs = other[name], getattr(model.profile, name)
                if mine.shape != theirs.shape or not torch.allclose(mine.double(), theirs.double().cpu(), rtol=1e-6):
                    raise ConfigError(f"stage '{key}' ({checkpoints[key]}) was fitted on other data than stage "
                                      f"'renderer' (its person profile's {name} differs); --force retrains the stages")
            heard = part(key, "speech.apc.")
            if heard.keys() != apc.keys() or not all(torch.equal(heard[k], apc[k]) for k in apc):
                raise ConfigError(f"stage '{key}' ({checkpoints[key]}) was trained on the features of another APC "
                                  f"than stage 'apc' ({checkpoints['apc']}); --force retrains the stages")
        model.eval()
        datamodule.setup("fit")
        dataset = datamodule.dataset
        cache = datamodule.feature_cache("mel")
        clips = person_clip_ids(dataset, datamodule.cfg.train_split, cfg.identity)
        features = [model.speech(torch.from_numpy(np.array(cache.get(c)))[None])[0][0] for c in clips]
        model.profile.set_apc_base(torch.cat(features))
        return model

    def save(self, path: Path) -> None:
        """A checkpoint ``zoo test`` / ``zoo predict`` / :meth:`load` read (written atomically)."""
        import pytorch_lightning as pl

        from zoo.io.atomic import atomic_path

        payload = {"state_dict": self.state_dict(), "hyper_parameters": asdict(self.cfg),
                   "pytorch-lightning_version": pl.__version__}
        with atomic_path(path) as tmp:
            torch.save(payload, tmp)


__all__ = ["LSP", "LSPConfig"]
