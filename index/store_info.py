"""The small tables of a specimen store beside ``specimens``: ``store_info`` (key -> JSON
value: the embedder fingerprint, model name and path, vector size, calibrated thresholds,
the compacted version) and ``within_species_prior`` (the arrays of the model's prior)."""

from __future__ import annotations

import json
import threading
from typing import Any

import numpy as np
import pyarrow as pa

from .errors import StoreError, StoreWriteError
from .schema import INFO_TABLE, PRIOR_TABLE, STORE_FORMAT, InfoRow, PriorArrayRow
from .storage import open_if_made, retry_conflicts, storage_problem, table_names


class StoreRecords:
    """``store_info`` and ``within_species_prior`` of the store at ``uri`` (the LanceDB
    connection ``db``); ``table``: the ``store_info`` table when it is open already;
    ``lock``: the store's writer lock."""

    def __init__(self, db: Any, uri: str, lock: threading.RLock, table: Any) -> None:
        self._db, self.uri, self._lock = db, uri, lock
        self.table = table

    def _open_info(self) -> None:
        """Open ``store_info`` if another process has created it since this store opened."""
        if self.table is None:
            self.table = open_if_made(self._db, self.uri, INFO_TABLE)

    def info(self) -> dict[str, Any]:
        """The ``store_info`` entries (empty for a new store)."""
        self._open_info()
        if self.table is None:
            return {}
        self.table.checkout_latest()
        table = self.table.to_arrow()
        return {
            k: json.loads(v)
            for k, v in zip(table["key"].to_pylist(), table["value"].to_pylist(), strict=True)
        }

    def write_info(self, **updates: Any) -> dict[str, Any]:
        """Merge ``updates`` into ``store_info`` (one commit) and return the result."""
        with self._lock:
            try:
                return retry_conflicts(lambda: self._merge_info(updates))
            except Exception as exc:
                raise StoreWriteError(
                    f"cannot write store info to {self.uri}: {storage_problem(exc)}"
                ) from exc

    def _merge_info(self, updates: dict[str, Any]) -> dict[str, Any]:
        info = self.info()  # the latest entries, another process's included
        info.update(updates)
        info.setdefault("format", STORE_FORMAT)
        table = pa.Table.from_pylist(
            [{"key": k, "value": json.dumps(v)} for k, v in sorted(info.items())],
            schema=InfoRow.to_arrow_schema(),
        )
        if self.table is None:
            self.table = self._db.create_table(INFO_TABLE, data=table, schema=InfoRow)
        else:
            self.table.add(table, mode="overwrite")
        return info

    def read_prior(self) -> dict[str, np.ndarray] | None:
        """The arrays recorded by :meth:`write_prior` (None when the model carries none)."""
        if PRIOR_TABLE not in table_names(self._db):
            return None
        try:
            table = self._db.open_table(PRIOR_TABLE).to_arrow()
        except Exception as exc:
            raise StoreError(f"cannot read the model prior of {self.uri}: {exc}") from exc
        arrays = {
            name: np.asarray(values, np.float32).reshape(shape)
            for name, shape, values in zip(
                table["name"].to_pylist(),
                table["shape"].to_pylist(),
                table["values"].to_pylist(),
                strict=True,
            )
        }
        return arrays or None

    def write_prior(self, arrays: dict[str, np.ndarray] | None) -> None:
        """Record the model's prior arrays (``None``: it has none), replacing the last."""
        rows = [
            {"name": name, "shape": list(np.shape(a)), "values": np.ravel(a).tolist()}
            for name, a in sorted((arrays or {}).items())
        ]
        data = pa.Table.from_pylist(rows, schema=PriorArrayRow.to_arrow_schema())

        def write() -> None:
            if PRIOR_TABLE in table_names(self._db):
                self._db.open_table(PRIOR_TABLE).add(data, mode="overwrite")
            else:
                self._db.create_table(PRIOR_TABLE, data=data, schema=PriorArrayRow)

        with self._lock:
            try:
                retry_conflicts(write)
            except Exception as exc:
                raise StoreWriteError(
                    f"cannot write the model prior to {self.uri}: {storage_problem(exc)}"
                ) from exc
