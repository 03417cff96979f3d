"""On-disk cache of image embeddings, so repeated evaluations and audits skip the backbone.

One SQLite file per embedder fingerprint (``<cache_dir>/embeddings-<fingerprint>.sqlite``);
a row per image keyed by its resolved path, modification time and size, so an edited or
replaced photo is embedded again. Unreadable images are remembered with their reason.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from embedder import Embedder, EmbeddingResult
from embedder.cache_dir import default_cache_dir


def file_key(path: Path) -> str | None:
    """Cache key of an image file (path + mtime + size); ``None`` when it cannot be stat'ed."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return f"{path.resolve()}|{stat.st_mtime_ns}|{stat.st_size}"


class EmbeddingCache:
    """Embeddings of image files by one embedder, persisted in SQLite."""

    def __init__(self, embedder: Embedder, cache_dir: str | Path | None = None) -> None:
        self.embedder = embedder
        self.directory = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.directory.mkdir(parents=True, exist_ok=True)
        self.path = self.directory / f"embeddings-{embedder.fingerprint}.sqlite"
        with self._connect() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS embeddings "
                "(key TEXT PRIMARY KEY, vector BLOB, error TEXT)"
            )

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=60)

    def _lookup(self, keys: Sequence[str]) -> dict[str, tuple[bytes | None, str | None]]:
        found: dict[str, tuple[bytes | None, str | None]] = {}
        with self._connect() as db:
            for start in range(0, len(keys), 500):
                chunk = list(keys[start : start + 500])
                marks = ",".join("?" * len(chunk))
                rows = db.execute(
                    f"SELECT key, vector, error FROM embeddings WHERE key IN ({marks})", chunk
                )
                for key, vector, error in rows:
                    found[key] = (vector, error)
        return found

    def embed_paths(
        self, paths: Sequence[str | Path], progress: bool = True, desc: str = "embedding"
    ) -> EmbeddingResult:
        """Like :meth:`embedder.Embedder.embed_paths`, reading and filling the cache.

        Returns the embeddings of the readable files in input order; unreadable ones are
        listed in ``errors`` (path -> reason).
        """
        files = [Path(p) for p in paths]
        keys = [file_key(p) for p in files]
        cached = self._lookup([k for k in keys if k is not None])
        missing = [p for p, k in zip(files, keys, strict=True) if k is None or k not in cached]
        gone: dict[str, str] = {}  # files that cannot be stat'ed: reported, never cached
        if missing:
            fresh = self.embedder.embed_paths(missing, progress=progress, desc=desc)
            rows: list[tuple[str, bytes | None, str | None]] = []
            for path, vector in zip(fresh.paths, fresh.embeddings, strict=True):
                key = file_key(Path(path))
                if key is not None:
                    rows.append((key, vector.astype(np.float32).tobytes(), None))
            for name, reason in fresh.errors.items():
                key = file_key(Path(name))
                if key is None:
                    gone[name] = reason
                else:
                    rows.append((key, None, reason))
            with self._connect() as db:
                db.executemany("INSERT OR REPLACE INTO embeddings VALUES (?, ?, ?)", rows)
            cached.update({key: (vector, error) for key, vector, error in rows})
        vectors: list[np.ndarray] = []
        kept: list[Path] = []
        errors: dict[str, str] = {}
        for path, key in zip(files, keys, strict=True):
            vector, error = cached.get(key, (None, None)) if key is not None else (None, None)
            if vector is None:
                errors[str(path)] = error or gone.get(str(path), "file not found")
                continue
            vectors.append(np.frombuffer(vector, dtype=np.float32))
            kept.append(path)
        dim = self.embedder.dim
        embeddings = np.stack(vectors) if vectors else np.zeros((0, dim), np.float32)
        return EmbeddingResult(embeddings.astype(np.float32), kept, errors)
