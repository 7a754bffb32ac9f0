"""Experiment tracking: W&B (online with credentials, offline otherwise), CSV, or nothing.

W&B must never hang or fail for lack of a network: without credentials (or with ``WANDB_MODE=offline``) the run is
written offline under the run directory and can be uploaded later with ``wandb sync <run-dir>/wandb/offline-run-*``.
"""
from __future__ import annotations

import netrc
import os
import secrets
import string
from pathlib import Path
from typing import Optional

from omegaconf import DictConfig, OmegaConf

from zoo.io.atomic import atomic_path


def wandb_credentials_present() -> bool:
    """True when W&B could authenticate without prompting (API key in the environment or ~/.netrc)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        auth = netrc.netrc().authenticators(os.environ.get("WANDB_BASE_URL", "api.wandb.ai").split("//")[-1])
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False
    return auth is not None


def wandb_mode(requested: str) -> str:
    """Resolve ``logger.mode`` (auto|online|offline) against the environment to online/offline/disabled."""
    env_mode = os.environ.get("WANDB_MODE", "").lower()
    if env_mode in ("offline", "disabled", "dryrun"):
        return "disabled" if env_mode == "disabled" else "offline"
    if requested == "offline":
        return "offline"
    if requested == "online" or wandb_credentials_present():
        return "online" if wandb_credentials_present() else "offline"
    return "offline"


def _stable_run_id(run_dir: Path) -> str:
    """One W&B id per run directory, so a resumed fit continues the same W&B run."""
    id_file = run_dir / "wandb_id.txt"
    if id_file.is_file():
        return id_file.read_text().strip()
    alphabet = string.ascii_lowercase + string.digits
    run_id = "".join(secrets.choice(alphabet) for _ in range(8))  # W&B's own id format
    with atomic_path(id_file) as tmp:
        tmp.write_text(run_id)
    return run_id


def build_logger(cfg: DictConfig, run_dir: Path, job_type: str):
    """The Lightning logger for ``cfg.logger`` (``False`` for ``none``), with the composed config attached."""
    name = cfg.logger.name
    config = OmegaConf.to_container(cfg, resolve=True)
    if name == "none":
        return False
    if name == "csv":
        from pytorch_lightning.loggers import CSVLogger

        # One version directory per invocation (logs/version_N), so a resumed fit never overwrites earlier logs.
        logger = CSVLogger(save_dir=str(run_dir), name="logs")
        logger.log_hyperparams(config)
        return logger
    from pytorch_lightning.loggers import WandbLogger

    mode = wandb_mode(cfg.logger.mode)
    os.environ.setdefault("WANDB_DIR", str(run_dir))
    logger = WandbLogger(project=cfg.logger.project, entity=cfg.logger.entity, group=cfg.logger.group,
                         tags=list(cfg.logger.tags) or None, name=f"{cfg.run.model}/{run_dir.name}",
                         save_dir=str(run_dir), id=_stable_run_id(run_dir),
                         # offline=True makes Lightning set WANDB_MODE=dryrun for the whole process, which would
                         # turn a later run's "disabled" into offline runs
                         offline=mode == "offline", mode=mode, job_type=job_type, resume="allow")
    logger.log_hyperparams(config)
    return logger


def log_video_file(logger, key: str, path: Path, caption: Optional[str], step: int) -> None:
    """Send an mp4 (with its sound) to the logger; the file itself always stays in the run directory."""
    from pytorch_lightning.loggers import WandbLogger

    if isinstance(logger, WandbLogger):
        import wandb

        logger.experiment.log({key: wandb.Video(str(path), caption=caption, format="mp4"),
                               "trainer/global_step": step})
