"""The test suite's network guard, for the pytest process and every child process it starts.

``tests/conftest.py`` calls :func:`install` in the pytest process, and ``clean_subprocess_env()`` puts this
directory first on ``PYTHONPATH`` so that Python's ``site`` imports this file as ``sitecustomize`` at the start of
every child (``python -m zoo.cli``, the DDP workers Lightning launches, ``benchmarks/perf.py``, ...).

What it refuses, at once and with :class:`NetworkBlockedError` / :class:`LookupBlockedError` (so that a test can never
depend on the network nor hang on a black-holed one):

* ``socket.connect`` / ``connect_ex`` of an IPv4/IPv6 socket to anything but a loopback address or ``localhost``
  (``connect_ex`` raises instead of returning an errno: a silent errno could pass for a real refusal);
* name lookups (``getaddrinfo``, ``gethostbyname[_ex]``, ``gethostbyaddr``) of anything but loopback, ``localhost``
  or this machine's own name; numeric addresses pass ``getaddrinfo`` (nothing is looked up) and meet the connect
  guard;
* ``torch.hub.download_url_to_file`` and ``torch.hub.load_state_dict_from_url`` (patched when ``torch.hub`` is
  imported, so ``from torch.hub import ...`` done later gets the guarded functions; torch is not imported here).

Unix sockets (wandb-core) and loopback TCP (DDP's gloo rendezvous on 127.0.0.1/localhost) keep working.
Keep this directory free of other modules: it is first on every child's import path.
"""
from __future__ import annotations

import importlib.abc
import importlib.util
import ipaddress
import os
import socket
import sys

MESSAGE = "network access blocked in tests"
_MARK = "_zoo_test_guard"


class NetworkBlockedError(ConnectionRefusedError):
    """A connection the test sandbox refused (never a real network error)."""


class LookupBlockedError(socket.gaierror):
    """A host name lookup the test sandbox refused."""


def _is_loopback_ip(host: str) -> bool:
    """True for loopback / unspecified IP literals (incl. IPv4-mapped IPv6, scope ids); False for names."""
    try:
        ip = ipaddress.ip_address(str(host).split("%", 1)[0])
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    ip = mapped or ip
    return ip.is_loopback or ip.is_unspecified


def _is_localhost_name(host) -> bool:
    name = host.decode() if isinstance(host, bytes) else str(host)
    name = name.lower().rstrip(".")
    return name == "localhost" or name.endswith(".localhost")


def _local_lookup(host) -> bool:
    """Name lookups that stay on this machine."""
    if host is None or host in ("", b""):
        return True
    name = host.decode() if isinstance(host, bytes) else str(host)
    if _is_loopback_ip(name) or _is_localhost_name(name):
        return True
    try:
        own = _real["gethostname"]()
    except OSError:
        own = None
    return bool(own) and name.lower().rstrip(".") == own.lower()


def _allowed_peer(sock, address) -> bool:
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return True                                       # Unix sockets (wandb-core), netlink, ...
    host = address[0] if isinstance(address, tuple) and address else address
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    return _is_loopback_ip(str(host)) or _is_localhost_name(str(host))


_real: dict = {}


def _guarded_connect(self, address):
    if not _allowed_peer(self, address):
        raise NetworkBlockedError(f"{MESSAGE}: connect to {address!r}")
    return _real["connect"](self, address)


def _guarded_connect_ex(self, address):
    if not _allowed_peer(self, address):
        raise NetworkBlockedError(f"{MESSAGE}: connect_ex to {address!r}")
    return _real["connect_ex"](self, address)


def _guarded_getaddrinfo(host, *args, **kwargs):
    name = host.decode(errors="replace") if isinstance(host, bytes) else host
    if not (_local_lookup(name) or (name is not None and _is_ip_literal(name))):
        raise LookupBlockedError(socket.EAI_NONAME, f"{MESSAGE}: name lookup of {host!r}")
    return _real["getaddrinfo"](host, *args, **kwargs)


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(str(host).split("%", 1)[0])
    except ValueError:
        return False
    return True


def _lookup_guard(name: str):
    real = _real[name]

    def guarded(host, *args, **kwargs):
        if not _local_lookup(host):
            raise LookupBlockedError(socket.EAI_NONAME, f"{MESSAGE}: {name}({host!r})")
        return real(host, *args, **kwargs)

    guarded.__name__ = guarded.__qualname__ = name
    return guarded


def guard_torch_hub(hub) -> None:
    """Replace the download functions of the ``torch.hub`` module ``hub``."""
    if getattr(hub.download_url_to_file, _MARK, False):
        return
    for name in ("download_url_to_file", "load_state_dict_from_url"):
        def refuse(url, *args, _name=name, **kwargs):
            raise RuntimeError(f"download blocked in tests ({MESSAGE}): torch.hub.{_name}({url!r})")
        setattr(refuse, _MARK, True)
        refuse.__name__ = refuse.__qualname__ = name
        setattr(hub, name, refuse)


class _TorchHubFinder(importlib.abc.MetaPathFinder):
    """Guards ``torch.hub`` right after it is executed, whoever imports it."""

    def find_spec(self, fullname, path, target=None):
        if fullname != "torch.hub":
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        real_exec = loader.exec_module

        def exec_module(module):
            real_exec(module)
            guard_torch_hub(module)

        loader.exec_module = exec_module
        return spec


def install() -> None:
    """Install the guards in this process (idempotent)."""
    if getattr(socket.socket.connect, _MARK, False):
        return
    _real.update(connect=socket.socket.connect, connect_ex=socket.socket.connect_ex,
                 getaddrinfo=socket.getaddrinfo, gethostname=socket.gethostname,
                 gethostbyname=socket.gethostbyname, gethostbyname_ex=socket.gethostbyname_ex,
                 gethostbyaddr=socket.gethostbyaddr)
    for fn in (_guarded_connect, _guarded_connect_ex, _guarded_getaddrinfo):
        setattr(fn, _MARK, True)
    socket.socket.connect = _guarded_connect
    socket.socket.connect_ex = _guarded_connect_ex
    socket.getaddrinfo = _guarded_getaddrinfo
    for name in ("gethostbyname", "gethostbyname_ex", "gethostbyaddr"):
        setattr(socket, name, _lookup_guard(name))
    if "torch.hub" in sys.modules:
        guard_torch_hub(sys.modules["torch.hub"])
    else:
        sys.meta_path.insert(0, _TorchHubFinder())


def _chain_next_sitecustomize() -> None:
    """Run the ``sitecustomize`` this file shadows (if any further down ``sys.path``), as site would have."""
    here = os.path.dirname(os.path.abspath(__file__))
    for entry in sys.path:
        if not entry or os.path.abspath(entry) == here:
            continue
        candidate = os.path.join(entry, "sitecustomize.py")
        if os.path.isfile(candidate):
            spec = importlib.util.spec_from_file_location("_shadowed_sitecustomize", candidate)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            return


if __name__ == "sitecustomize":            # imported by site at a child's start-up (not when conftest loads it)
    install()
    _chain_next_sitecustomize()
