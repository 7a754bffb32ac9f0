"""The model registry (timm-style): ``register_model``, ``create_model``, ``list_models``.

Every method package registers an entry point per model (or per training stage, named ``method.stage``)::

    @register_model("lsp.apc", config=APCConfig, help="LSP stage 1: APC speech representation")
    def lsp_apc(cfg: APCConfig) -> APCModule:
        return APCModule(cfg)

The config dataclass is the model's typed config schema: ``zoo config --model NAME`` shows it, ``model.<key>=value``
overrides are checked against it, and ``create_model(name, **overrides)`` builds it.
"""
from __future__ import annotations

import dataclasses
import fnmatch
import importlib
import typing
from dataclasses import dataclass
from typing import Any, Callable

from zoo.errors import ConfigError

# Packages whose import registers models. Importing them lazily keeps `import zoo` light.
METHOD_PACKAGES = ("zoo.baselines", "zoo.evaluators", "lsp", "rhythmic_head", "styletalk")


@dataclass(frozen=True)
class ModelEntry:
    """One registered model: its name, builder, the class it builds, typed config schema, one-line description."""

    name: str
    builder: Callable[[Any], Any]
    model_class: type
    config: type
    help: str
    module: str


_REGISTRY: dict[str, ModelEntry] = {}
_loaded = False


def register_model(name: str, *, config: type, help: str = "") -> Callable:
    """Decorator registering ``fn(cfg) -> LightningModule`` under ``name`` with the dataclass ``config``."""
    if not dataclasses.is_dataclass(config):
        raise TypeError(f"register_model({name!r}): config must be a dataclass, got {config!r}")

    def decorator(fn: Callable) -> Callable:
        if name in _REGISTRY and _REGISTRY[name].module != fn.__module__:
            raise ValueError(f"model {name!r} registered twice ({_REGISTRY[name].module} and {fn.__module__})")
        model_class = typing.get_type_hints(fn).get("return")
        if not isinstance(model_class, type):
            raise TypeError(f"register_model({name!r}): annotate the builder's return type with the module class")
        doc = help or ((fn.__doc__ or "").strip().splitlines() or [""])[0]
        _REGISTRY[name] = ModelEntry(name, fn, model_class, config, doc, fn.__module__)
        return fn

    return decorator


def _load_method_packages() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for package in METHOD_PACKAGES:
            importlib.import_module(package)


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a glob pattern, sorted."""
    _load_method_packages()
    return sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern))


def get_entry(name: str) -> ModelEntry:
    """The registry entry for ``name``; unknown names raise a one-line ConfigError listing the valid ones."""
    _load_method_packages()
    if name not in _REGISTRY:
        raise ConfigError(f"unknown model '{name}'; valid models: {', '.join(list_models())}")
    return _REGISTRY[name]


def is_model(name: str) -> bool:
    _load_method_packages()
    return name in _REGISTRY


def create_model(name: str, cfg: Any = None, **overrides: Any):
    """Build the registered model ``name`` from a config dataclass instance (or the defaults) plus overrides."""
    entry = get_entry(name)
    if cfg is None:
        cfg = entry.config()
    elif not isinstance(cfg, entry.config):
        cfg = entry.config(**dict(cfg))
    if overrides:
        cfg = dataclasses.replace(cfg, **overrides)
    return entry.builder(cfg)
