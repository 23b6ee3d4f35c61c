"""Writing a trained model's directory so that a reader (the web app starting, `training.evaluate`)
never sees half of it: everything is written into a sibling temporary directory, which then takes the
model directory's place by rename (`replace_directory`)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def replace_directory(staging: Path, target: Path) -> None:
    """Put the complete directory `staging` in `target`'s place, on the same file system.

    The old directory is renamed aside and the new one renamed in, two renames with nothing written
    between them: a reader finds the old model, the new one, or (for that instant) none, which loading
    reports as a missing model; never a mix of files of two models. The old directory, with whatever
    else it held (the run's checkpoint, a report of the old model), is then removed."""
    if not target.exists():
        os.replace(staging, target)
        return
    aside = Path(tempfile.mkdtemp(prefix=f".{target.name}-old-", dir=target.parent))
    os.replace(target, aside / target.name)
    os.replace(staging, target)
    shutil.rmtree(aside)


def write_model_directory(target: Path, write: Callable[[Path], T]) -> T:
    """Call `write(directory)` on an empty sibling of `target`, then let it replace `target`; returns what
    `write` returned. If `write` raises, `target` is left as it was and the sibling removed."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-new-", dir=target.parent))
    # mkdtemp makes it private (0700); the model directory keeps the mode it had, or gets the umask's.
    staging.chmod(target.stat().st_mode & 0o7777 if target.exists() else 0o777 & ~_umask())
    try:
        result = write(staging)
        replace_directory(staging, target)
        return result
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
