"""Build a model directory once: the cache that the tiny model and GGUF imports share."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def build_once(target: Path, build: Callable[[Path], object]) -> Path:
    """`target` if it holds a model already, else `build(dir)` into a private temp dir beside it, renamed into
    place. Safe when several processes race: each builds privately and the first rename wins."""
    if (target / "config.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".building-", dir=target.parent))
    try:
        build(staging / "model")
        try:
            os.rename(staging / "model", target)
        except OSError:
            if not (target / "config.json").exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
