"""Where shellid keeps regenerable files (exported models, embedding caches)."""

from __future__ import annotations

from pathlib import Path

from .settings import EmbedderSettings, env_name

#: The one cache variable (:class:`embedder.settings.EmbedderSettings` ``cache_dir``).
CACHE_ENV = env_name("cache_dir")


def default_cache_dir() -> Path:
    """``$SHELLID_CACHE_DIR``, else ``$XDG_CACHE_HOME/shellid``, else ``~/.cache/shellid``."""
    return EmbedderSettings.load().cache_root()
