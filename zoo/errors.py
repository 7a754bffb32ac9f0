"""One error type for every input problem a user can cause.

A :class:`ZooError` carries a single-line message that names the offending file, field or key. The CLI prints
``error: <message>`` and exits with code 2 (no traceback unless ``--debug``); library callers can catch it.
"""
from __future__ import annotations


class ZooError(Exception):
    """A user-facing error with a one-line message (exit code 2 from the CLI)."""

    exit_code = 2

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))  # always exactly one line


class ConfigError(ZooError):
    """Unknown key, wrong type, unknown model/data name in a composed config."""


class DataError(ZooError):
    """A dataset or clip on disk is missing, malformed or inconsistent."""


class WeightsError(ZooError):
    """A pretrained weight file is missing or does not match its expected hash."""
