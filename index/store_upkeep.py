"""Housekeeping of a specimen store: compaction of its data files every ``compact_every``
writes (counted in the store, so shared by every process writing to it), the retention of
old versions (``keep_versions``), and the statistics that show both."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from .errors import StoreError

if TYPE_CHECKING:
    from .store import SpecimenStore

log = logging.getLogger("shellid.index")


class StoreUpkeep:
    """Compaction and statistics of ``store`` (its settings: ``keep_versions``,
    ``compact_every``)."""

    def __init__(self, store: SpecimenStore) -> None:
        self.store = store

    def writes_since_compaction(self) -> int:
        """Commits to the specimens table since the last compaction, read from the store (the
        table version against the one recorded by :meth:`compact`), so the count survives
        restarts and is shared by every process writing to the store."""
        if self.store.table is None:
            return 0
        last = int(self.store.info().get("compacted_version") or 1)  # version 1: the empty table
        return max(0, self.store.version - last)

    def after_write(self) -> None:
        """Compact when :meth:`writes_since_compaction` reaches the store's ``compact_every``."""
        if self.writes_since_compaction() >= self.store.compact_every:
            self.compact()

    def compact(self) -> None:
        """Merge small data files and drop versions older than ``keep_versions``; records
        the specimens table's version afterwards (``compacted_version`` in store_info)."""
        store = self.store
        with store.lock:
            done = True
            for table in (self.store.table, self.store.records.table):
                if table is None:
                    continue
                try:
                    table.optimize(cleanup_older_than=self.store.keep_versions)
                except Exception as exc:  # housekeeping: the write it follows has landed
                    done = False
                    log.warning("compacting store %s failed (will retry later): %s", store.uri, exc)
            if done and self.store.table is not None:
                try:
                    self.store.write_info(compacted_version=self.store.latest_version())
                except StoreError as exc:  # pragma: no cover - the next write retries
                    log.warning("recording the compaction of %s failed: %s", self.store.uri, exc)

    def stats(self) -> dict[str, Any]:
        """Rows, versions and data files of the specimens table."""
        if self.store.table is None:
            return {"rows": 0, "versions": 0, "fragments": 0}
        stats: Any = self.store.table.stats()
        return {
            "rows": int(stats["num_rows"]),
            "versions": len(self.store.table.list_versions()),
            "fragments": int(stats["fragment_stats"]["num_fragments"]),
        }
