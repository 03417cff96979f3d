"""Start-up in seconds: the in-memory identifier saved beside the store (issue 11); the
snapshot file format and the files of one store.

A **snapshot** is everything a :class:`~index.classifier.VectorIdentifier` answers from
(rows, prototypes, whitening, calibrated thresholds, the FAISS index) plus the SHA-256 of every
row (the duplicate table, :mod:`index.duplicates`), written as ONE file beside the store:
``<store>/_snapshots/identifier-<hash>.snap`` (a local directory or an object-store prefix such
as ``s3://bucket/store``, through :mod:`pyarrow.fs`; LanceDB ignores the folder). ``<hash>``
names the model fingerprint, the :class:`IdentifierConfig` and the model's within-species
prior, so processes with other settings never read each other's file; the table version it
was made at is inside. It is written to a temporary name and renamed (local) or put as one
object (object stores), so a reader sees a whole file or the previous one. Every section
carries a CRC-32: a truncated or damaged file is refused with a warning and the identifier is
rebuilt from the store (never a crash, never a wrong answer). Bringing a snapshot up to the
store's version is :mod:`index.sync`.

**When to save** (:class:`Snapshots`): after a calibration when the last snapshot is
:data:`SAVE_EVERY_WRITES` or more commits old, or older than :data:`SAVE_EVERY_SECONDS` (see
:meth:`Snapshots.due`), and on clean shutdown; never for an identifier that is not
:attr:`~index.classifier.VectorIdentifier.settled` (whitening or thresholds behind the rows).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
import uuid
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs

from .classifier import VectorIdentifier
from .config import IdentifierConfig
from .duplicates import DuplicateTable
from .search import IndexFile
from .whitening import WithinSpeciesPrior

__all__ = ["Snapshot", "SnapshotError", "SnapshotKey", "Snapshots", "snapshot_place"]

log = logging.getLogger("shellid.index")

MAGIC = b"SHELLID-SNAPSHOT-1\n"
TAIL = b"SNAPEND1"
FOLDER = "_snapshots"
#: save after a calibration once the last snapshot is this many commits behind ...
SAVE_EVERY_WRITES = 50
#: ... or this old (seconds); and always on clean shutdown.
SAVE_EVERY_SECONDS = 600.0
#: bytes at each end of a separate FAISS file checked (CRC-32) when it is mapped at start-up.
FAISS_CHECKED_ENDS = 1 << 20
#: a temporary snapshot or FAISS file this old was left by a writer that died: deleted.
STALE_TEMPORARY_SECONDS = 3600.0


class SnapshotError(ValueError):
    """A snapshot file that cannot be used (truncated, damaged, or not a snapshot)."""


# ====================================================================== keys and places
def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


def prior_digest(prior: WithinSpeciesPrior | None) -> str:
    """A short hash of the model's within-species prior ('' without one)."""
    if prior is None:
        return ""
    h = hashlib.sha256()
    for array in (prior.basis, prior.variances):
        h.update(np.ascontiguousarray(array, np.float32).tobytes())
    h.update(f"{prior.rest!r}/{prior.dof}".encode())
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class SnapshotKey:
    """What a snapshot must match to be used: the model fingerprint, the vector size, the
    identifier config and the model's prior (the file name), and the table version it was
    made at (a snapshot of an older version is caught up, never used as is)."""

    fingerprint: str
    dim: int
    config: str  # _digest of IdentifierConfig.model_dump(mode="json")
    prior: str  # prior_digest
    version: int = 0

    @classmethod
    def of(
        cls,
        fingerprint: str,
        dim: int,
        config: IdentifierConfig,
        prior: WithinSpeciesPrior | None,
        version: int = 0,
    ) -> SnapshotKey:
        return cls(
            fingerprint,
            int(dim),
            _digest(config.model_dump(mode="json")),
            prior_digest(prior),
            int(version),
        )

    @property
    def name(self) -> str:
        """The file name: everything but the version."""
        return f"identifier-{_digest([self.fingerprint, self.dim, self.config, self.prior])}.snap"

    def same_kind(self, other: SnapshotKey) -> bool:
        return (self.fingerprint, self.dim, self.config, self.prior) == (
            other.fingerprint,
            other.dim,
            other.config,
            other.prior,
        )


def snapshot_place(
    uri: str, filesystem: pafs.FileSystem | None = None
) -> tuple[pafs.FileSystem, str]:
    """``(filesystem, folder)`` of the snapshots of the store at ``uri``: ``<uri>/_snapshots``
    on the local disk or the object store named by the URI's scheme (``s3://``, ``gs://``,
    ...; credentials and endpoint as pyarrow reads them), or on ``filesystem`` when given."""
    if filesystem is not None:
        path = uri.split("://", 1)[-1]
        return filesystem, f"{path.rstrip('/')}/{FOLDER}"
    if "://" not in uri or uri.startswith("file://"):
        local = Path(uri.removeprefix("file://")).expanduser().resolve()
        return pafs.LocalFileSystem(), str(local / FOLDER)
    fs, path = pafs.FileSystem.from_uri(uri)
    return fs, f"{path.rstrip('/')}/{FOLDER}"


# ====================================================================== the file format
def _strings_to_arrays(values: np.ndarray) -> dict[str, np.ndarray]:
    """An object array of strings as three numeric arrays (dictionary-encoded UTF-8)."""
    encoded = pc.dictionary_encode(pa.array(values.tolist(), pa.large_string()))
    words = encoded.dictionary.cast(pa.large_string())
    offsets = np.frombuffer(words.buffers()[1], np.int64)[: len(words) + 1]
    data = np.frombuffer(words.buffers()[2] or b"", np.uint8)[
        : int(offsets[-1]) if len(offsets) else 0
    ]
    indices = np.asarray(encoded.indices.to_numpy(zero_copy_only=False), np.int32)
    return {"indices": indices, "offsets": offsets - offsets[0], "data": data}


PARTS = ("indices", "offsets", "data")


def _arrays_to_strings(indices: np.ndarray, offsets: np.ndarray, data: np.ndarray) -> np.ndarray:
    words = pa.LargeStringArray.from_buffers(
        len(offsets) - 1, pa.py_buffer(offsets), pa.py_buffer(data)
    )
    words.validate(full=True)
    table = np.asarray(words.to_numpy(zero_copy_only=False), dtype=object)
    if indices.size and (indices.min() < 0 or indices.max() >= table.size):
        raise SnapshotError("string indices out of range")
    return table[indices] if indices.size else np.zeros(0, dtype=object)


class _Writer:
    """Sections appended to an output stream, with offsets and CRC-32s for the footer."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.offset = 0
        self.sections: list[dict[str, Any]] = []
        self._write(MAGIC)

    def _write(self, data: bytes | memoryview) -> None:
        self.stream.write(data)
        self.offset += len(data)

    def array(self, name: str, array: np.ndarray) -> None:
        array = np.ascontiguousarray(array)
        view = memoryview(array.reshape(-1).view(np.uint8).data) if array.size else memoryview(b"")
        self.sections.append(
            {
                "name": name,
                "dtype": array.dtype.str,
                "shape": list(array.shape),
                "offset": self.offset,
                "length": len(view),
                "crc": zlib.crc32(view),
            }
        )
        self._write(view)

    def stream_section(self, name: str, produce: Callable[[Callable[[bytes], Any]], bool]) -> None:
        start, crc = self.offset, 0

        def write(data: bytes) -> int:
            nonlocal crc
            crc = zlib.crc32(data, crc)
            self._write(data)
            return len(data)

        if produce(write):
            self.sections.append(
                {
                    "name": name,
                    "dtype": "|u1",
                    "shape": [self.offset - start],
                    "offset": start,
                    "length": self.offset - start,
                    "crc": crc,
                }
            )

    def finish(self, header: dict[str, Any]) -> None:
        footer = json.dumps({**header, "sections": self.sections}).encode()
        self._write(footer)
        self._write(len(footer).to_bytes(8, "little"))
        self._write(TAIL)


def _read(file: Any, length: int, offset: int) -> pa.Buffer:
    """``length`` bytes at ``offset`` of a pyarrow input file, as a buffer (no copy)."""
    file.seek(offset)
    buffer: pa.Buffer = file.read_buffer(length)
    return buffer


class _Reader:
    """Sections of a snapshot file (footer first), each checked against its CRC-32."""

    def __init__(self, file: Any) -> None:
        self.file = file
        size = file.size()
        if size < len(MAGIC) + 16 or _read(file, len(MAGIC), 0).to_pybytes() != MAGIC:
            raise SnapshotError("not a snapshot file")
        end = _read(file, 16, size - 16).to_pybytes()
        if end[8:] != TAIL:
            raise SnapshotError("truncated (no end marker)")
        length = int.from_bytes(end[:8], "little")
        if length <= 0 or length > size - 16 - len(MAGIC):
            raise SnapshotError("damaged footer")
        try:
            self.header = json.loads(_read(file, length, size - 16 - length).to_pybytes())
        except ValueError as exc:
            raise SnapshotError(f"damaged footer ({exc})") from None
        self.limit = size - 16 - length
        self.sections = {s["name"]: s for s in self.header["sections"]}
        for s in self.sections.values():
            if s["offset"] < len(MAGIC) or s["offset"] + s["length"] > self.limit:
                raise SnapshotError(f"section {s['name']} outside the file")

    def has(self, name: str) -> bool:
        return name in self.sections

    def array(self, name: str) -> np.ndarray:
        s = self.sections.get(name)
        if s is None:
            raise SnapshotError(f"no section {name}")
        buffer = _read(self.file, s["length"], s["offset"]) if s["length"] else pa.py_buffer(b"")
        if len(buffer) != s["length"] or zlib.crc32(memoryview(buffer)) != s["crc"]:
            raise SnapshotError(f"section {name} is damaged")
        dtype = np.dtype(s["dtype"])
        return np.frombuffer(buffer, dtype).reshape(s["shape"])

    def strings(self, name: str) -> np.ndarray:
        return _arrays_to_strings(
            self.array(f"{name}.indices"), self.array(f"{name}.offsets"), self.array(f"{name}.data")
        )

    def stream(self, name: str) -> Callable[[int], bytes]:
        """A ``read(n)`` over one section; the CRC is checked when its last byte is read."""
        s = self.sections.get(name)
        if s is None:
            raise SnapshotError(f"no section {name}")
        position, end, crc = s["offset"], s["offset"] + s["length"], 0

        def read(n: int) -> bytes:
            nonlocal position, crc
            n = min(int(n), end - position)
            data = _read(self.file, n, position).to_pybytes() if n > 0 else b""
            position += len(data)
            crc = zlib.crc32(data, crc)
            if position == end and crc != s["crc"]:
                raise SnapshotError(f"section {name} is damaged")
            return data

        return read


def _sha_builder(
    indices: np.ndarray, offsets: np.ndarray, data: np.ndarray, labels: np.ndarray, ids: np.ndarray
) -> Callable[[], dict[str, tuple[str, str]]]:
    """Builds the duplicate table of a snapshot's rows (``labels`` / ``ids``: its rows' species
    and ids as loaded; arrays are replaced, never written to, so holding them is safe)."""

    def build() -> dict[str, tuple[str, str]]:
        sha256 = _arrays_to_strings(indices, offsets, data)
        return {
            h: (s, i)
            for h, s, i in zip(sha256.tolist(), labels.tolist(), ids.tolist(), strict=True)
            if h
        }

    return build


def _faiss_name(key: SnapshotKey, token: str) -> str:
    return f"{key.name.removesuffix('.snap')}.{token}.faiss"


@dataclass
class Snapshot:
    """A loaded snapshot: the identifier, the duplicate table, and the key it was made at."""

    identifier: VectorIdentifier
    sha: DuplicateTable
    key: SnapshotKey
    saved_at: float


class Snapshots:
    """The snapshot files of one store (see the module doc for where and when)."""

    def __init__(
        self,
        uri: str,
        *,
        filesystem: pafs.FileSystem | None = None,
        every_writes: int = SAVE_EVERY_WRITES,
        every_seconds: float = SAVE_EVERY_SECONDS,
    ) -> None:
        self.uri = str(uri)
        self.fs, self.folder = snapshot_place(self.uri, filesystem)
        self.every_writes = max(1, int(every_writes))
        self.every_seconds = float(every_seconds)
        self.saved_version: int | None = None  # of the last snapshot this process read or wrote
        self.saved_at = 0.0

    def path(self, key: SnapshotKey) -> str:
        return f"{self.folder}/{key.name}"

    def due(self, version: int, now: float | None = None) -> bool:
        """Whether a snapshot at ``version`` is worth writing: the last one is
        :attr:`every_writes` commits behind, or older than :attr:`every_seconds` and behind."""
        if self.saved_version is None:
            return True
        if version == self.saved_version:
            return False
        now = time.time() if now is None else now
        return (
            abs(version - self.saved_version) >= self.every_writes
            or now - self.saved_at >= self.every_seconds
        )

    def save(
        self,
        identifier: VectorIdentifier,
        key: SnapshotKey,
        sha: Mapping[str, tuple[str, str]] | None = None,
    ) -> bool:
        """Write ``identifier`` (settled, at ``key.version``) with the duplicate table ``sha``
        (SHA-256 -> (species, id)); False, writing nothing, when it is not settled. The caller
        holds the identifier still (a writer lock) while this runs."""
        if not identifier.settled:
            return False
        arrays, meta = identifier.export_state()
        by_id = {i: h for h, (_, i) in (sha or {}).items()}
        arrays["rows.sha256"] = np.asarray(
            [by_id.get(i, "") for i in identifier.rows.ids.tolist()], dtype=object
        )
        now = time.time()
        final = self.path(key)
        local = isinstance(self.fs, pafs.LocalFileSystem)
        token = uuid.uuid4().hex[:8]
        target = f"{final}.{token}.tmp" if local else final
        self.fs.create_dir(self.folder, recursive=True)
        faiss_file: dict[str, Any] | None = None
        faiss_path = f"{self.folder}/{_faiss_name(key, token)}"
        try:
            if local:  # the FAISS index in a file of its own, memory-mapped when read
                faiss_file = self._save_faiss(identifier, faiss_path)
            with self.fs.open_output_stream(target) as stream:
                writer = _Writer(stream)
                for name, array in arrays.items():
                    if array.dtype == object:
                        for part, values in _strings_to_arrays(array).items():
                            writer.array(f"{name}.{part}", values)
                    else:
                        writer.array(name, array)
                if not local:
                    writer.stream_section("faiss", identifier.rows.index.write_index)
                writer.finish(
                    {
                        "key": key.__dict__,
                        "saved_at": now,
                        "faiss_file": faiss_file,
                        "strings": [n for n, a in arrays.items() if a.dtype == object],
                        "identifier": meta,
                    }
                )
            if local:
                self.fs.move(target, final)
        except BaseException:
            if local:
                for path in (target, faiss_path):
                    with contextlib.suppress(OSError):
                        self.fs.delete_file(path)
            raise
        if local:
            self._drop_old_faiss(key, faiss_path if faiss_file else None)
        self.saved_version, self.saved_at = key.version, now
        return True

    def _save_faiss(self, identifier: VectorIdentifier, path: str) -> dict[str, Any] | None:
        """Write the FAISS index to ``path`` (a temporary name, then renamed); what the
        snapshot records of it (name, size, CRC-32 of all of it and of each end), or None for
        an exact index (nothing written)."""
        crc, size, head = 0, 0, bytearray()

        def write(data: bytes) -> int:
            nonlocal crc, size
            crc = zlib.crc32(data, crc)
            size += len(data)
            if len(head) < FAISS_CHECKED_ENDS:
                head.extend(data[: FAISS_CHECKED_ENDS - len(head)])
            stream.write(data)
            return len(data)

        temporary = f"{path}.tmp"
        try:
            with self.fs.open_output_stream(temporary) as stream:
                written = identifier.rows.index.write_index(write)
            if not written:
                self.fs.delete_file(temporary)
                return None
            with pa.memory_map(temporary) as file:
                tail = _read(
                    file, min(size, FAISS_CHECKED_ENDS), size - min(size, FAISS_CHECKED_ENDS)
                )
                tail_crc = zlib.crc32(memoryview(tail))
            self.fs.move(temporary, path)
        except BaseException:
            with contextlib.suppress(OSError):
                self.fs.delete_file(temporary)
            raise
        return {
            "name": path.rsplit("/", 1)[-1],
            "size": size,
            "crc": crc,
            "head_crc": zlib.crc32(bytes(head)),
            "tail_crc": tail_crc,
        }

    def _drop_old_faiss(self, key: SnapshotKey, current: str | None) -> None:
        """Delete this kind's FAISS files but ``current`` (a process still mapping one keeps
        reading it: the file lives on until it is unmapped)."""
        stem = key.name.removesuffix(".snap") + "."
        try:
            infos = self.fs.get_file_info(pafs.FileSelector(self.folder))
        except OSError:  # pragma: no cover - the folder was just written
            return
        for info in infos:
            name = info.base_name
            if name.startswith(stem) and ".faiss" in name and info.path != current:
                if (
                    name.endswith(".tmp")
                    and time.time() - (info.mtime.timestamp() if info.mtime else 0)
                    < STALE_TEMPORARY_SECONDS
                ):
                    continue  # another process writing its snapshot right now
                with contextlib.suppress(OSError):
                    self.fs.delete_file(info.path)

    def _faiss_file(self, record: Mapping[str, Any]) -> IndexFile:
        """The separate FAISS file a snapshot names, checked cheaply (size, and the CRC-32 of
        its first and last :data:`FAISS_CHECKED_ENDS` bytes: the index header, the trained
        quantizer and the end of the lists; the whole file's CRC is recorded too, checked by
        :meth:`verify`). A file replaced or truncated meanwhile is refused."""
        path = f"{self.folder}/{record['name']}"
        size = int(record["size"])
        with pa.memory_map(path) as file:
            if file.size() != size:
                raise SnapshotError("FAISS file has the wrong size")
            ends = min(size, FAISS_CHECKED_ENDS)
            if (
                zlib.crc32(memoryview(_read(file, ends, 0))) != record["head_crc"]
                or zlib.crc32(memoryview(_read(file, ends, size - ends))) != record["tail_crc"]
            ):
                raise SnapshotError("FAISS file is damaged")
        return IndexFile(path)

    def verify(self, key: SnapshotKey) -> bool:
        """Whether the snapshot of ``key``'s kind is whole: every section's CRC-32 and, for a
        separate FAISS file, the CRC-32 of all of it (start-up checks only its ends)."""
        return self.verify_file(key.name)

    def verify_file(self, name: str) -> bool:
        """:meth:`verify` for the snapshot file ``name`` in the folder (any kind)."""
        try:
            local = isinstance(self.fs, pafs.LocalFileSystem)
            path = f"{self.folder}/{name}"
            with pa.memory_map(path) if local else self.fs.open_input_file(path) as file:
                reader = _Reader(file)
                for name in reader.sections:
                    if name == "faiss":
                        read = reader.stream(name)
                        while read(1 << 24):
                            pass
                    else:
                        reader.array(name)
                record = reader.header.get("faiss_file")
            if record:
                self._faiss_file(record)
                crc = 0
                with pa.memory_map(f"{self.folder}/{record['name']}") as faiss_file:
                    for offset in range(0, int(record["size"]), 1 << 24):
                        size = min(1 << 24, int(record["size"]) - offset)
                        crc = zlib.crc32(memoryview(_read(faiss_file, size, offset)), crc)
                if crc != record["crc"]:
                    return False
        except (SnapshotError, OSError, ValueError, KeyError):
            return False
        return True

    # ------------------------------------------------------------------ housekeeping
    def listing(self) -> list[pafs.FileInfo]:
        """The files in the snapshot folder (none when it does not exist yet)."""
        try:
            found = self.fs.get_file_info(pafs.FileSelector(self.folder, allow_not_found=True))
        except OSError:
            return []
        return [info for info in found if info.type == pafs.FileType.File]

    def drop(self, name: str) -> None:
        """Delete the snapshot file ``name`` and the FAISS files of its kind (it is rebuilt
        from the store at the next start)."""
        stem = name.removesuffix(".snap") + "."
        for info in self.listing():
            if info.base_name == name or (
                info.base_name.startswith(stem) and ".faiss" in info.base_name
            ):
                with contextlib.suppress(OSError):
                    self.fs.delete_file(info.path)

    def clean(self, keep: str, older_than: float, now: float | None = None) -> list[str]:
        """Retention: delete the snapshots of other kinds (another model, config or prior)
        not written for ``older_than`` seconds, with their FAISS files, and temporary files
        left by a writer that died, an hour old or more. ``keep`` (the name of this process's
        kind) is never deleted. Returns the names deleted."""
        now = time.time() if now is None else now
        gone: list[str] = []
        for info in self.listing():
            name, age = info.base_name, now - (info.mtime.timestamp() if info.mtime else now)
            stale_tmp = name.endswith(".tmp") and age >= STALE_TEMPORARY_SECONDS
            stale_kind = name.endswith(".snap") and name != keep and age >= older_than
            if stale_kind:
                self.drop(name)
                gone.append(name)
            elif stale_tmp:
                with contextlib.suppress(OSError):
                    self.fs.delete_file(info.path)
                    gone.append(name)
        return gone

    def load(
        self,
        key: SnapshotKey,
        config: IdentifierConfig | None = None,
        prior: WithinSpeciesPrior | None = None,
    ) -> Snapshot | None:
        """The snapshot of ``key``'s kind (any version: see :func:`catch_up`); None when there
        is none, or it is damaged or foreign (logged as a warning)."""
        path = self.path(key)
        try:
            info = self.fs.get_file_info(path)
            if info.type != pafs.FileType.File:
                return None
            local = isinstance(self.fs, pafs.LocalFileSystem)  # mapped: no copy of the arrays
            with pa.memory_map(path) if local else self.fs.open_input_file(path) as file:
                reader = _Reader(file)
                saved = SnapshotKey(**reader.header["key"])
                if not saved.same_kind(key):
                    log.warning("snapshot %s belongs to another model or config; ignored", path)
                    return None
                strings = set(reader.header["strings"]) - {"rows.sha256"}  # decoded when used
                arrays = {
                    name: reader.array(name)
                    for name in reader.sections
                    if name != "faiss" and name.rsplit(".", 1)[0] not in strings
                }
                for name in strings:
                    arrays[name] = reader.strings(name)
                sha_parts = [arrays.pop(f"rows.sha256.{part}") for part in PARTS]
                read: Callable[[int], bytes] | None = None
                if reader.header.get("faiss_file"):
                    read = self._faiss_file(reader.header["faiss_file"])
                elif reader.has("faiss"):
                    read = reader.stream("faiss")
                identifier = VectorIdentifier.from_state(
                    arrays, reader.header["identifier"], config, prior, read
                )
        except (SnapshotError, ValueError, KeyError, TypeError, OSError, RuntimeError) as exc:
            log.warning("snapshot %s cannot be used (%s); rebuilding from the store", path, exc)
            return None
        if len(sha_parts[0]) != len(identifier):
            log.warning("snapshot %s: duplicate table does not fit; rebuilding", path)
            return None
        rows = identifier.rows
        indices, offsets, data = sha_parts
        sha = DuplicateTable(build=_sha_builder(indices, offsets, data, rows.labels, rows.ids))
        self.saved_version, self.saved_at = saved.version, float(reader.header["saved_at"])
        return Snapshot(identifier, sha, saved, self.saved_at)
