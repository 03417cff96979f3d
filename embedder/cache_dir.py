"""Where shellid keeps regenerable files (exported models, embedding caches) when it is not
told: the embedder's functions take a ``cache_dir``; the command line and the service pass
their settings' (:meth:`embedder.settings.EmbedderSettings.cache_root`, ``SHELLID_CACHE_DIR``)."""

from __future__ import annotations

from pathlib import Path

from .settings import standard_cache_root


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/shellid``, else ``~/.cache/shellid``: the folder of a ``cache_dir``
    that is not given (the settings are not read here)."""
    return standard_cache_root()
