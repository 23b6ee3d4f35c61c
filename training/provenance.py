"""Where a model came from: the exact command and the git commit it was trained at, for the card."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def command_line(module: str, argv: list[str] | None) -> str:
    """The command that reproduces this run, as a shell would take it."""
    return shlex.join(["python", "-m", module, *(sys.argv[1:] if argv is None else argv)])


def git_state() -> dict[str, str | bool | None]:
    """{"commit": the checked-out commit, "dirty": whether tracked files differ from it}; None where
    this is not a git checkout (an installed copy), so the card says so instead of guessing."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        changes = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": bool(changes)}
