"""Stores damaged on purpose, the way a disk, an operator or a crash damages them (shared by
tests/faults and tests/test_doctor.py)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from index.config import IndexSettings
from index.workflows.collection import Collection
from tests.fake_embedder import FakeEmbedder

U64_MAX = (1 << 64) - 1


def photo(i: int, size: int = 64) -> tuple[str, bytes]:
    """A distinct PNG photo (file name, bytes)."""
    pixels = (np.random.default_rng(i).random((size, size, 3)) * 255).astype("uint8")
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return f"p{i}.png", buffer.getvalue()


def enrolled_store(path: Path, commits: int = 4, per_commit: int = 2) -> dict[str, set[str]]:
    """A store with ``commits`` enrolments (one commit each) through the fake embedder;
    returns species -> ids acknowledged."""
    collection = Collection.open(
        str(path), model=FakeEmbedder(), create=True, settings=IndexSettings.load()
    )
    acknowledged: dict[str, set[str]] = {}
    for c in range(commits):
        name = f"Genus_species{c}"
        photos = [photo(100 * c + k) for k in range(per_commit)]
        report = collection.enroll(name, photos, calibrate=c == commits - 1)
        acknowledged[name] = set(report.specimen_ids)
    collection.index.save_snapshot(force=True)
    return acknowledged


def table_dir(store: Path, name: str = "specimens") -> Path:
    return store / f"{name}.lance"


def manifest(store: Path, version: int, name: str = "specimens") -> Path:
    """The manifest file of ``version`` (lance names it u64::MAX - version)."""
    return table_dir(store, name) / "_versions" / f"{U64_MAX - version}.manifest"


def newest_version(store: Path, name: str = "specimens") -> int:
    numbers = [int(p.stem) for p in (table_dir(store, name) / "_versions").glob("*.manifest")]
    return max(U64_MAX - n for n in numbers)


def data_files(store: Path, name: str = "specimens") -> list[Path]:
    """The table's data files, oldest first."""
    return sorted(
        (table_dir(store, name) / "data").glob("*.lance"), key=lambda p: p.stat().st_mtime
    )


def snapshot_files(store: Path) -> list[Path]:
    return sorted((store / "_snapshots").glob("*.snap"))


def flip_bytes(path: Path, at: int = 200, count: int = 16) -> None:
    """Damage ``count`` bytes in the middle of a file (bit rot)."""
    data = bytearray(path.read_bytes())
    at = min(at, max(0, len(data) - count - 32))
    for k in range(at, at + count):
        data[k] ^= 0xFF
    path.write_bytes(bytes(data))


def stored_ids(store: Path) -> set[str]:
    """Ids of the rows in the store, read by a fresh process-like open."""
    collection = Collection.open(
        str(store), model=FakeEmbedder(), create=False, settings=IndexSettings.load()
    )
    return set(collection.store.select(["id"], "true")["id"].to_pylist())
