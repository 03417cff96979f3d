"""Where shellid keeps regenerable files (exported models, embedding caches)."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "SHELLID_CACHE_DIR"


def default_cache_dir() -> Path:
    """``$SHELLID_CACHE_DIR``, else ``$XDG_CACHE_HOME/shellid``, else ``~/.cache/shellid``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "shellid"
