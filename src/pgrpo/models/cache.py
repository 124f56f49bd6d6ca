"""Where built policies live, and how a directory is written so that readers never see half of it."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def default_cache_dir() -> Path:
    """``$PGRPO_CACHE`` if set, else ``~/.cache/pgrpo/models``."""
    return Path(os.environ.get("PGRPO_CACHE") or Path.home() / ".cache" / "pgrpo" / "models")


def fingerprint(payload: Any) -> str:
    """16 hex digits of the SHA-256 of ``payload`` as canonical JSON (non-JSON values through ``str``)."""
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def build_once(target: Path, build: Callable[[Path], None]) -> Path:
    """Return ``target``, first running ``build(tmp)`` in a sibling temporary directory and renaming it there.

    A concurrent builder that finishes first wins; the loser's directory is discarded.
    """
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        build(tmp)
        os.rename(tmp, target)
    except OSError:
        if not target.is_dir():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
