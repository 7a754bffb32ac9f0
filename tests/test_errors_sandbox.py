"""The test sandbox's network guard (tests/sandbox/sitecustomize.py): refused at once with its own error, in the
pytest process and in a child started with clean_subprocess_env(); loopback (DDP's gloo rendezvous) still works.

192.0.2.1 is TEST-NET-1 (RFC 5737, never routed) and the ``.invalid`` TLD never resolves (RFC 2606): were the guard
missing, these tests would fail (timeout, unreachable, no such host), never succeed by reaching a real host.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conftest import clean_subprocess_env, network_guard

TESTS = Path(__file__).resolve().parent
UNROUTABLE = ("192.0.2.1", 80)
MESSAGE = "network access blocked in tests"


@pytest.fixture
def listener():
    """A loopback TCP server socket; yields its port."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    yield server.getsockname()[1]
    server.close()


@pytest.mark.parametrize("method", ["connect", "connect_ex"])
def test_non_loopback_connect_is_refused_at_once(method):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(3.0)
        start = time.monotonic()
        with pytest.raises(network_guard.NetworkBlockedError, match=f"{MESSAGE}: {method} to "):
            getattr(sock, method)(UNROUTABLE)
        assert time.monotonic() - start < 1.0                 # our refusal, not the 3 s connect timeout


def test_foreign_name_lookups_are_refused():
    for lookup in (lambda: socket.getaddrinfo("zoo-tests.invalid", 443),
                   lambda: socket.gethostbyname("zoo-tests.invalid"),
                   lambda: socket.create_connection(("zoo-tests.invalid", 443), timeout=3)):
        with pytest.raises(network_guard.LookupBlockedError, match=MESSAGE):
            lookup()


def test_torch_hub_downloads_are_refused(tmp_path):
    import torch.hub
    from torch.hub import load_state_dict_from_url          # a reference taken after the guard: guarded too

    for fn in (torch.hub.load_state_dict_from_url, load_state_dict_from_url):
        with pytest.raises(RuntimeError, match="download blocked in tests"):
            fn("https://zoo-tests.invalid/weights.pth", model_dir=str(tmp_path))
    with pytest.raises(RuntimeError, match="download blocked in tests"):
        torch.hub.download_url_to_file("https://zoo-tests.invalid/weights.pth", str(tmp_path / "w.pth"))


def test_loopback_and_unix_sockets_still_work(listener, tmp_path):
    for host in ("127.0.0.1", "localhost"):
        with socket.create_connection((host, listener), timeout=5):
            pass
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            assert sock.connect_ex((host, listener)) == 0
    assert socket.getaddrinfo("localhost", listener)
    try:                                                    # this machine's own name (torch.distributed asks it)
        socket.getaddrinfo(socket.gethostname(), None)
    except socket.gaierror as err:                          # unresolvable here, maybe; but never refused by us
        assert not isinstance(err, network_guard.LookupBlockedError)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(tmp_path / "s"))
    server.listen(1)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(str(tmp_path / "s"))
    server.close()


CHILD = textwrap.dedent("""
    import json, socket, sys, time

    def attempt(fn):
        start = time.monotonic()
        try:
            fn()
        except Exception as err:
            return {"type": type(err).__name__, "module": type(err).__module__, "message": str(err),
                    "seconds": time.monotonic() - start}
        return {"type": None, "seconds": time.monotonic() - start}

    def connect(method):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.settimeout(3.0)
        return lambda: getattr(sock, method)(("192.0.2.1", 80))

    def hub():
        import torch.hub
        torch.hub.load_state_dict_from_url("https://zoo-tests.invalid/weights.pth")

    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    loopback = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    loopback.settimeout(5)
    results = {"connect": attempt(connect("connect")), "connect_ex": attempt(connect("connect_ex")),
               "getaddrinfo": attempt(lambda: socket.getaddrinfo("zoo-tests.invalid", 443)),
               "torch.hub": attempt(hub),
               "loopback": attempt(lambda: loopback.connect(("localhost", server.getsockname()[1])))}
    print(json.dumps(results))
""")


def test_child_started_with_clean_env_is_guarded():
    proc = subprocess.run([sys.executable, "-c", CHILD], env=clean_subprocess_env(), capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    for what in ("connect", "connect_ex"):
        got = results[what]
        assert (got["type"], got["module"]) == ("NetworkBlockedError", "sitecustomize"), got
        assert got["message"].startswith(f"{MESSAGE}: {what} to ('192.0.2.1', 80)") and got["seconds"] < 1.0, got
    assert (results["getaddrinfo"]["type"], results["getaddrinfo"]["module"]) == ("LookupBlockedError",
                                                                                  "sitecustomize")
    assert results["torch.hub"]["type"] == "RuntimeError" and "download blocked in tests" in \
        results["torch.hub"]["message"]
    assert results["loopback"]["type"] is None, results["loopback"]


def test_session_temp_root_is_removed_at_session_end(tmp_path):
    """A pytest session (run here as a child, with its own TMPDIR) leaves no zoo-tests-* directory behind, also when
    one of its tests started a child process that wrote into the sandbox."""
    probe = tmp_path / "test_probe.py"
    probe.write_text(textwrap.dedent("""
        import os, socket, subprocess, sys
        import pytest
        from conftest import clean_subprocess_env, network_guard

        def test_the_guard_site_installed_is_the_one_conftest_exposes():
            with socket.socket() as sock, pytest.raises(network_guard.NetworkBlockedError):
                sock.connect_ex(("192.0.2.1", 80))

        def test_child_writes_into_the_sandbox(sandbox):
            target = sandbox / "home" / "child.txt"
            subprocess.run([sys.executable, "-c", f"open({str(target)!r}, 'w').write('x')"],
                           env=clean_subprocess_env(), check=True, timeout=60)
            assert target.read_text() == "x" and os.environ["HOME"].startswith(str(sandbox))
            # the root that must be gone afterwards is this session's, in the TMPDIR the parent watches
            assert sandbox.name.startswith("zoo-tests-")
            assert os.path.samefile(sandbox.parent, os.environ["ZOO_PROBE_SCRATCH"])
    """))
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = clean_subprocess_env(TMPDIR=str(scratch))
    env["PYTHONPATH"] += os.pathsep + str(TESTS)                    # `-p conftest` loads tests/conftest.py
    env.pop("ZOO_KEEP_TEST_SANDBOX", None)
    env["ZOO_PROBE_SCRATCH"] = str(scratch)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "conftest",
                           "--rootdir", str(tmp_path), str(probe)],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "2 passed" in proc.stdout
    assert list(scratch.glob("zoo-tests-*")) == []
