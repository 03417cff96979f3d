"""The models a store holds (issue 23): the ``models`` table beside ``specimens``, one row per
model (fingerprint, name, how it loads, its bytes and its within-species prior), so that every
process opening the store, and every replica following a switch, can load the model the
vectors were made by, from the store itself (a folder or an object-store URI alike).

A re-embedding (:mod:`index.model_switch`) writes the new model here first, then switches the
vectors in one commit; the table keeps the current model and the previous one (older rows are
pruned after a switch). The engine only stores bytes: turning them into a model is
:mod:`index.workflows.models`' (torch).
"""

from __future__ import annotations

import hashlib
import io
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa

from .errors import StoreError, StoreWriteError
from .schema import MODELS_TABLE, ModelRow, where_in
from .storage import open_if_made, retry_conflicts, storage_problem

#: the columns of a listing (no bytes)
_LISTED = ["fingerprint", "name", "kind", "source", "dim", "created", "sha256"]


@dataclass(frozen=True)
class ModelRecord:
    """What the store records of the model that makes its vectors."""

    fingerprint: str
    name: str
    path: str
    dim: int
    prior: dict[str, np.ndarray] | None = None


@dataclass(frozen=True)
class HeldModel:
    """One model as the store holds it. ``kind``: how ``data`` loads (``MODEL.pt``: the file's
    bytes; ``name``: a packaged backbone or profile name, '' for the default; other kinds are
    registered by :mod:`index.workflows.models`); ``source``: where it came from."""

    fingerprint: str
    name: str
    kind: str
    source: str
    dim: int
    data: bytes = b""
    prior: dict[str, np.ndarray] | None = None
    created: datetime = field(default_factory=lambda: datetime.now(UTC))
    sha256: str = ""

    def record(self) -> ModelRecord:
        """What ``store_info`` records of this model."""
        return ModelRecord(self.fingerprint, self.name, self.source, self.dim, self.prior)

    def digest(self) -> str:
        """SHA-256 of the bytes (as recorded when held; computed when not)."""
        return self.sha256 or hashlib.sha256(self.data).hexdigest()


def prior_bytes(prior: dict[str, np.ndarray] | None) -> bytes:
    """A prior's arrays as ``.npz`` bytes (empty: none)."""
    if not prior:
        return b""
    buffer = io.BytesIO()
    np.savez(buffer, **{k: np.asarray(v) for k, v in prior.items()})  # type: ignore[arg-type]
    return buffer.getvalue()


def prior_arrays(data: bytes) -> dict[str, np.ndarray] | None:
    """The arrays :func:`prior_bytes` wrote (None: none)."""
    if not data:
        return None
    with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
        return {k: np.asarray(arrays[k]) for k in arrays.files}


class HeldModels:
    """The ``models`` table of the store at ``uri`` (LanceDB connection ``db``; ``lock``: the
    store's writer lock)."""

    def __init__(self, db: Any, uri: str, lock: threading.RLock) -> None:
        self._db, self.uri, self._lock = db, uri, lock
        self._table: Any = None

    def _open(self) -> Any:
        if self._table is None:
            self._table = open_if_made(self._db, self.uri, MODELS_TABLE)
        if self._table is not None:
            self._table.checkout_latest()
        return self._table

    def _rows(self, columns: list[str], where: str | None = None) -> list[dict[str, Any]]:
        table = self._open()
        if table is None:
            return []
        try:
            query = table.search().select(columns).limit(None)
            return (query.where(where) if where else query).to_arrow().to_pylist()
        except Exception as exc:
            raise StoreError(
                f"cannot read the models of store {self.uri}: {storage_problem(exc)}"
            ) from exc

    def listing(self) -> list[HeldModel]:
        """Every held model, newest first, without its bytes."""
        rows = sorted(self._rows(_LISTED), key=lambda r: r["created"], reverse=True)
        return [HeldModel(**row) for row in rows]

    def fingerprints(self) -> set[str]:
        return {m.fingerprint for m in self.listing()}

    def get(self, fingerprint: str, *, with_data: bool = True) -> HeldModel | None:
        """The model ``fingerprint`` with its prior, and its bytes unless ``with_data`` is
        False (None: the store holds none)."""
        if not fingerprint:
            return None
        columns = [*_LISTED, "prior", *(["data"] if with_data else [])]
        rows = self._rows(columns, where_in("fingerprint", fingerprint))
        if not rows:
            return None
        row = rows[0]
        row["prior"] = prior_arrays(row["prior"] or b"")
        row["data"] = bytes(row.get("data") or b"")
        return HeldModel(**row)

    def put(self, model: HeldModel) -> None:
        """Hold ``model`` (one commit; nothing when a model of that fingerprint is held)."""
        row = {
            "fingerprint": model.fingerprint,
            "name": model.name,
            "kind": model.kind,
            "source": model.source,
            "dim": int(model.dim),
            "created": model.created,
            "sha256": model.digest(),
            "data": model.data,
            "prior": prior_bytes(model.prior),
        }
        data = pa.Table.from_pylist([row], schema=ModelRow.to_arrow_schema())

        def write() -> None:
            table = self._open()
            if table is None:
                self._table = self._db.create_table(MODELS_TABLE, data=data, schema=ModelRow)
            elif not table.count_rows(where_in("fingerprint", model.fingerprint)):
                table.add(data)

        self._write(write, f"cannot hold model {model.fingerprint} in")

    def prune(self, keep: set[str]) -> list[str]:
        """Drop every held model but ``keep`` (one commit); returns the fingerprints dropped."""
        drop = sorted(self.fingerprints() - set(keep))
        if drop:
            self._write(
                lambda: self._open().delete(where_in("fingerprint", drop)),
                "cannot prune the models of",
            )
        return drop

    def _write(self, write: Any, failed: str) -> None:
        with self._lock:
            try:
                retry_conflicts(write)
            except Exception as exc:
                raise StoreWriteError(f"{failed} store {self.uri}: {storage_problem(exc)}") from exc
