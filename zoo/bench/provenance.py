"""Where a figure came from: the commit of the code and the CPU it ran on (leaderboard and benchmarks)."""
from __future__ import annotations

import platform
import subprocess
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parents[2]


def git_commit() -> Optional[str]:
    """The checked-out commit (``+dirty`` with uncommitted changes to tracked files), or None outside git."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                                check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, check=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
