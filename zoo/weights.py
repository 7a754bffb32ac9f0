"""One registry and one directory for every third-party weight file the metric suite and losses read.

All files live flat (or in the sub-folder their official archive uses) in one *weights directory*:

1. the ``weights_dir`` argument of a function, else
2. the ``ZOO_WEIGHTS_DIR`` environment variable, else
3. ``$TORCH_HOME/hub/checkpoints`` (``torch.hub.get_dir()/checkpoints``; TORCH_HOME defaults to
   ``~/.cache/torch``) -- the directory torch.hub, torchvision, pytorch-fid and face-alignment already use, so
   files downloaded by those libraries are found without copying.

Nothing is ever downloaded here. A missing or mismatching file raises :class:`~zoo.errors.WeightsError` with one
line naming the file, its expected SHA256 and where to get it. Hashes are computed in 1 MiB chunks and cached per
``(path, size, mtime)``, so loading the same file again in one process does not read it twice.

``zoo weights`` prints :func:`format_weights_table`.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import torch

from zoo.errors import WeightsError

__all__ = ["WeightFile", "WEIGHTS", "register", "get_weights_dir", "resolve", "verify", "load_state_dict",
           "load_torch_file", "load_checkpoint", "load_checkpoint_state_dict", "load_strict", "sha256_of",
           "weights_status", "format_weights_table"]

PathLike = Union[str, "os.PathLike[str]"]


@dataclass(frozen=True)
class WeightFile:
    """One known weight file.

    Attributes:
        name: registry key (``resolve(name)``).
        filename: path relative to the weights directory (the official file name, or the official archive's
            sub-path where the file name alone is ambiguous, e.g. ``ms1mv3_arcface_r100_fp16/backbone.pth``).
        sha256: the full expected SHA256 (hex), or ``None`` where no full hash is published.
        sha256_prefix: for files without a published full hash whose name embeds the first hex digits of their
            SHA256 (torchvision and face-alignment name files this way): that prefix. Ignored when ``sha256`` is set.
        source: where users obtain the file (URL or page, as text).
        used_by: what in the zoo reads it.
    """

    name: str
    filename: str
    sha256: Optional[str]
    source: str
    used_by: str
    sha256_prefix: Optional[str] = None

    @property
    def verification(self) -> str:
        """``"sha256"``, ``"sha256 prefix"`` or ``"unverified"`` (no hash known: presence only)."""
        if self.sha256:
            return "sha256"
        return "sha256 prefix" if self.sha256_prefix else "unverified"

    @property
    def expected(self) -> str:
        """The expected hash as text for messages and tables."""
        if self.sha256:
            return self.sha256
        if self.sha256_prefix:
            return f"{self.sha256_prefix}... (prefix from the file name)"
        return "unknown (not verified)"

    def matches(self, digest: str) -> bool:
        """Whether a file with SHA256 ``digest`` is this file (always True for unverified entries)."""
        if self.sha256:
            return digest == self.sha256.lower()
        if self.sha256_prefix:
            return digest.startswith(self.sha256_prefix.lower())
        return True


WEIGHTS: dict[str, WeightFile] = {}


def register(entry: WeightFile) -> WeightFile:
    """Add ``entry`` to the registry (replacing an entry of the same name) and return it."""
    WEIGHTS[entry.name] = entry
    return entry


# The known files. Full hashes are the published ones (two mirrors agree for syncnet and
# s3fd). Where no full hash is published, torchvision's and face-alignment's convention of naming a file after the
# first hex digits of its SHA256 (torch.hub's HASH_REGEX) is checked instead: s3fd-619a316812.pth, whose full hash
# is known, confirms face-alignment follows it.
register(WeightFile(
    name="syncnet", filename="syncnet_v2.model",
    sha256="961e8696f888fce4f3f3a6c3d5b3267cf5b343100b238e79b2659bff2c605442",
    source="http://www.robots.ox.ac.uk/~vgg/software/lipsync/data/syncnet_v2.model (syncnet_python download_model.sh;"
           " mirror: huggingface.co/ByteDance/LatentSync-1.5 auxiliary/syncnet_v2.model)",
    used_by="LSE-C / LSE-D (zoo.metrics.sync)"))
register(WeightFile(
    name="fid_inception", filename="pt_inception-2015-12-05-6726825d.pth",
    sha256="6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2",
    source="https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth",
    used_by="FID (zoo.metrics.backbones.inception)"))
register(WeightFile(
    name="s3fd", filename="s3fd-619a316812.pth",
    sha256="619a31681264d3f7f7fc7a16a42cbbe8b23f31a256f75a366e5a1bcd59b33543",
    source="https://www.adrianbulat.com/downloads/python-fan/s3fd-619a316812.pth",
    used_by="face detection for FAN landmarks (zoo.metrics.backbones.fan)"))
register(WeightFile(
    name="fan2d", filename="2DFAN4-11f355bf06.pth.tar", sha256=None, sha256_prefix="11f355bf06",
    source="https://www.adrianbulat.com/downloads/python-fan/2DFAN4-11f355bf06.pth.tar (face-alignment 1.5)",
    used_by="68-point landmarks: LMD, CSIM alignment (zoo.metrics.backbones.fan)"))
register(WeightFile(
    name="arcface_r100", filename="ms1mv3_arcface_r100_fp16/backbone.pth",
    sha256="a566a62357f0c55b679d9ff2f022a294486568be0c00665d39029d0e46a8109b",
    source="insightface arcface_torch model zoo, ms1mv3_arcface_r100_fp16 (OneDrive/Baidu links in "
           "github.com/deepinsight/insightface/tree/master/recognition/arcface_torch; non-commercial research only)",
    used_by="CSIM identity embeddings (zoo.metrics.backbones.arcface)"))
register(WeightFile(
    name="alexnet", filename="alexnet-owt-7be5be79.pth", sha256=None, sha256_prefix="7be5be79",
    source="https://download.pytorch.org/models/alexnet-owt-7be5be79.pth (torchvision)",
    used_by="LPIPS trunk (lpips net='alex')"))
register(WeightFile(
    name="vgg19", filename="vgg19-dcbb9e9d.pth", sha256=None, sha256_prefix="dcbb9e9d",
    source="https://download.pytorch.org/models/vgg19-dcbb9e9d.pth (torchvision)",
    used_by="LSP renderer perceptual loss (zoo.gan.perceptual)"))


def get_weights_dir(weights_dir: Optional[PathLike] = None) -> Path:
    """The weights directory: ``weights_dir`` if given, else ``$ZOO_WEIGHTS_DIR``, else torch.hub's checkpoints."""
    if weights_dir is not None:
        return Path(weights_dir).expanduser()
    env = os.environ.get("ZOO_WEIGHTS_DIR")
    if env:
        return Path(env).expanduser()
    return Path(torch.hub.get_dir()) / "checkpoints"


_HASH_CACHE: dict[tuple[str, int, int], str] = {}
_CHUNK = 1 << 20


def sha256_of(path: PathLike) -> str:
    """SHA256 (hex) of a file, read in 1 MiB chunks; cached per ``(resolved path, size, mtime_ns)``."""
    path = Path(path).resolve()
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    digest = _HASH_CACHE.get(key)
    if digest is None:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(_CHUNK), b""):
                h.update(chunk)
        digest = _HASH_CACHE[key] = h.hexdigest()
    return digest


def _entry(name: str) -> WeightFile:
    try:
        return WEIGHTS[name]
    except KeyError:
        raise WeightsError(f"unknown weights name {name!r}; known: {', '.join(sorted(WEIGHTS))}") from None


def resolve(name: str, weights_dir: Optional[PathLike] = None) -> Path:
    """Path of the verified weight file ``name``.

    Raises:
        WeightsError: unknown name, file missing, or hash mismatch (one line: file, expected hash, source).
    """
    entry = _entry(name)
    directory = get_weights_dir(weights_dir)
    path = directory / entry.filename
    if not path.is_file():
        raise WeightsError(f"weights file {entry.filename} ({name}) not found in {directory}: expected sha256 "
                           f"{entry.expected}; get it from {entry.source} and save it as {path} "
                           f"(or point ZOO_WEIGHTS_DIR at the directory that holds it)")
    verify(path, entry)
    return path


def verify(path: PathLike, entry: WeightFile) -> None:
    """Raise a one-line :class:`WeightsError` when the file at ``path`` does not have ``entry``'s hash (no-op for an
    unverified entry)."""
    if entry.verification == "unverified":
        return
    digest = sha256_of(path)
    if not entry.matches(digest):
        raise WeightsError(f"weights file {path} ({entry.name}) has sha256 {digest}, expected {entry.expected}; "
                           f"it is corrupt or a different file: get it again from {entry.source}")


def load_torch_file(path: PathLike, what: str, map_location: str = "cpu") -> Any:
    """``torch.load(path, weights_only=True)``; any failure is one :class:`WeightsError` line naming ``what``.

    ``weights_only=True`` restricts unpickling to tensors and plain containers, so a tampered file cannot run
    code; pickle and zip errors come in many types, and the user only needs to know the file is unusable.
    """
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WeightsError(f"cannot load {what} with weights_only=True: {first}") from None


def load_checkpoint(path: PathLike, what: str) -> dict[str, Any]:
    """A Lightning checkpoint (loaded by :func:`load_torch_file`); one :class:`WeightsError` line naming ``what``
    when the file has no ``state_dict``."""
    checkpoint = load_torch_file(path, what)
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise WeightsError(f"{what} is not a checkpoint: it has no state_dict")
    return checkpoint


def load_checkpoint_state_dict(path: PathLike, what: str) -> dict[str, Any]:
    """The ``state_dict`` of :func:`load_checkpoint`."""
    return load_checkpoint(path, what)["state_dict"]


def load_strict(module: torch.nn.Module, state_dict: dict[str, Any], what: str) -> None:
    """``module.load_state_dict(state_dict, strict=True)``; missing, unexpected or mis-shaped keys are one
    :class:`WeightsError` line, ``"{what}: <the first of them>"``."""
    try:
        module.load_state_dict(state_dict, strict=True)
    except RuntimeError as error:   # torch's first line only names the module; the keys follow it
        detail = " ".join(str(error).split("\n", 1)[-1].split())
        raise WeightsError(f"{what}: {detail[:300]}{'...' if len(detail) > 300 else ''}") from None


def load_state_dict(name: str, weights_dir: Optional[PathLike] = None) -> dict[str, Any]:
    """Verify ``name`` (see :func:`resolve`) and load it with :func:`load_torch_file`."""
    path = resolve(name, weights_dir)
    return load_torch_file(path, f"weights file {path} ({name})")


def weights_status(weights_dir: Optional[PathLike] = None) -> list[dict[str, Any]]:
    """One dict per registered file: ``name, file, path, status, expected_sha256, sha256, verification, source,
    used_by``. ``status`` is ``"ok"``, ``"missing"``, ``"hash mismatch"`` or ``"present (unverified)"``;
    ``sha256`` is the actual hash of a present file (``None`` when missing)."""
    directory = get_weights_dir(weights_dir)
    rows = []
    for entry in WEIGHTS.values():
        path = directory / entry.filename
        digest = sha256_of(path) if path.is_file() else None
        if digest is None:
            status = "missing"
        elif entry.verification == "unverified":
            status = "present (unverified)"
        else:
            status = "ok" if entry.matches(digest) else "hash mismatch"
        rows.append({"name": entry.name, "file": entry.filename, "path": str(path), "status": status,
                     "expected_sha256": entry.sha256 or entry.sha256_prefix, "sha256": digest,
                     "verification": entry.verification, "source": entry.source, "used_by": entry.used_by})
    return rows


def format_weights_table(weights_dir: Optional[PathLike] = None) -> str:
    """The text ``zoo weights`` prints: the directory, then name / status / file / expected hash per file, then
    where to get every file that is missing or mismatching."""
    directory = get_weights_dir(weights_dir)
    rows = weights_status(directory)
    header = ("name", "status", "file", "sha256 (expected)")
    table = [header] + [(r["name"], r["status"], r["file"], WEIGHTS[r["name"]].expected) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(3)]
    lines = [f"weights directory: {directory}  (change with ZOO_WEIGHTS_DIR)", ""]
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(row[:3], widths)) + "  " + row[3] for row in table]
    todo = [r for r in rows if r["status"] in ("missing", "hash mismatch")]
    if todo:
        lines.append("")
        lines += [f"{r['name']}: {r['status']}; get it from {r['source']}" for r in todo]
    return "\n".join(lines)
