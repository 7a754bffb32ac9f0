"""One error type for every input problem a user can cause.

A :class:`ZooError` carries a single-line message that names the offending file, field or key. The CLI prints
``error: <message>`` and exits with code 2 (no traceback unless ``--debug``); library callers can catch it.
"""
from __future__ import annotations


class ZooError(Exception):
    """A user-facing error with a one-line message (exit code 2 from the CLI)."""

    exit_code = 2

    def __init__(self, message: str):
        text = str(message)
        if "\nOriginal Traceback" in text:
            # re-raised from a DataLoader worker (torch's ExceptionWrapper passes the worker's whole traceback as
            # the message): the original one-line message is the traceback's last line, after its type
            text = text.rstrip().splitlines()[-1].split(": ", 1)[-1]
        super().__init__(" ".join(text.split()))  # always exactly one line


class ConfigError(ZooError):
    """Unknown key, wrong type, unknown model/data name in a composed config."""


class DataError(ZooError):
    """A dataset or clip on disk is missing, malformed or inconsistent."""


class WeightsError(ZooError):
    """A pretrained weight file is missing or does not match its expected hash."""
