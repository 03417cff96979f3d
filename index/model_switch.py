"""The model switch (issue 23): a store re-embedded by a new model changes models in ONE
commit, whole, for every process and replica.

The truth is the rows: every ``specimens`` row carries the fingerprint of the model its vector
was made by, and a switch rewrites every row in one commit (:meth:`SpecimenStore.
rewrite_vectors`). ``store_info`` (model name, path, size) and the prior table are written
after that commit; a process killed in between leaves them naming the old model, and whoever
opens or refreshes the store next (or ``shellid doctor --repair``) settles them from the rows
and the held copy of the new model (:func:`settle_model`). A kill before the rows' commit
leaves the old model serving, whole (the new model's held copy is then pruned at the next
switch).

An install (:func:`switch_vectors`):

1. the new model is held in the store (:mod:`index.held_models`), so that replicas can load it;
2. rows other processes added while the photos were re-embedded are embedded too (``embed``),
   until the rows read are the rows rewritten; the rows' commit;
3. rows another process committed in the instant before that commit (lance's overwrite does not
   conflict with them, so they would be lost) are embedded by the new model and added again, rows
   it deleted are deleted again;
4. ``store_info`` and the prior; the held models but the new and the previous pruned.

Writers of the old model are refused after the switch (:class:`ModelSwitchedError`, checked by
:meth:`SpecimenIndex._commit` against the version it commits on; an append begun on a version
before the switch is refused by lance itself): no row of another model is ever added.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from .errors import ModelSwitchedError, Remedy, StoreChangedError, StoreError, StoreWriteError
from .held_models import HeldModel, ModelRecord
from .schema import SPECIMEN_COLUMNS, where_in
from .store import SpecimenStore
from .whitening import WithinSpeciesPrior

if TYPE_CHECKING:
    from .specimens import SpecimenIndex

log = logging.getLogger("shellid.index")

#: ``embed(ids, stored image bytes) -> vectors``: the new model on stored normalised copies
Embed = Callable[[list[str], list[bytes]], np.ndarray]
#: rewrites tried while other processes keep adding rows
SWITCH_TRIES = 5


def rows_model(store: SpecimenStore, version: int | None = None) -> str:
    """The fingerprint the rows carry at ``version`` (default: the version checked out); ''
    when there are no rows."""
    if store.table is None:
        return ""
    table = store.table  # the version checked out, unless another is asked for
    if version is not None and int(table.version) != version:
        table = store.at_version(version)[0]
    try:
        rows = table.search().select(["fingerprint"]).limit(1).to_arrow()
    except Exception as exc:
        raise store.read_failed(exc) from exc
    return str(rows["fingerprint"][0].as_py()) if rows.num_rows else ""


def vectors_model(store: SpecimenStore, version: int | None = None) -> str:
    """The fingerprint of the model whose vectors the store holds at ``version`` (default: the
    version checked out): the rows', else (no rows) ``store_info``'s."""
    return rows_model(store, version) or str(store.info().get("fingerprint") or "")


def record_model(store: SpecimenStore, model: ModelRecord, **info: object) -> None:
    """Record in ``store_info`` which model makes the vectors, with the model's prior (the
    prior first: a reader trusts the prior table only when ``store_info`` names the rows'
    model)."""
    store.write_prior(model.prior)
    store.write_info(
        fingerprint=model.fingerprint,
        model_name=model.name,
        model_path=model.path,
        dim=int(model.dim),
        **info,
    )


def stored_prior(store: SpecimenStore) -> WithinSpeciesPrior | None:
    """The model's within-species prior as ``store`` recorded it (None: it has none)."""
    return _prior(store.read_prior(), store)


def _prior(arrays: dict[str, np.ndarray] | None, store: SpecimenStore) -> WithinSpeciesPrior | None:
    if arrays is None:
        return None
    try:
        return WithinSpeciesPrior.from_arrays(arrays)
    except ValueError as exc:
        raise StoreError(
            f"store {store.uri}: {exc}", remedy=Remedy.REINDEX, store=store.uri
        ) from None


def settle_model(store: SpecimenStore) -> tuple[str, WithinSpeciesPrior | None]:
    """The model the store's vectors were made by (:func:`vectors_model`) and its prior; when
    ``store_info`` names another (a switch stopped between its commits), ``store_info`` and the
    prior are rewritten from the rows' model's held copy (or, where the store cannot be
    written, that prior is used as it is)."""
    truth = vectors_model(store)
    info = store.info()
    if not truth or truth == info.get("fingerprint"):
        return truth, stored_prior(store)
    held = store.models.get(truth, with_data=False)
    if held is None:  # switched without a held copy: doctor reports it
        log.warning(
            "store %s: its vectors are model %s's, which it does not hold", store.uri, truth
        )
        return truth, stored_prior(store)
    log.warning(
        "store %s: a switch to model %s stopped before recording it; recorded now",
        store.uri,
        truth,
    )
    try:
        record_model(store, held.record())
    except StoreWriteError as exc:
        log.warning("store %s: could not record model %s: %s", store.uri, truth, exc)
    return truth, _prior(held.prior, store)


def switch_vectors(
    index: SpecimenIndex,
    ids: list[str],
    vectors: np.ndarray,
    model: ModelRecord,
    *,
    held: HeldModel | None = None,
    embed: Embed | None = None,
) -> int:
    """Adopt ``model``: the vectors of ``ids`` (every stored photo) replaced by ``vectors`` in
    one commit (see the module doc), the thresholds recalibrated; returns how many rows the
    store holds after. ``held``: the model's copy to keep in the store; ``embed``: the new model
    for rows added meanwhile (None: :class:`StoreChangedError` when there are any)."""
    store = index.store
    with index.write_lock:
        index.dim = model.dim
        previous = vectors_model(store)
        if held is not None:
            store.models.put(held)
        if not ids and store.count() == 0:
            record_model(store, model)
            index.load()
            return 0
        known = dict(zip(ids, np.asarray(vectors, np.float32), strict=True))
        version, before = _rewrite(store, known, model, embed)
        if version != before + 1:
            _take_in_between(store, version, model.fingerprint, embed)
        record_model(store, model, thresholds=None, calibrated_version=None)
        if held is not None:
            for gone in store.models.prune({model.fingerprint, previous}):
                log.info("store %s: dropped held model %s", store.uri, gone)
        index.load()
        index.calibrate()
        return store.count()


def _images(store: SpecimenStore, version: int, ids: list[str], columns: list[str]) -> pa.Table:
    return store.read_version(columns, version, where_in("id", ids))


def _rewrite(
    store: SpecimenStore, known: dict[str, np.ndarray], model: ModelRecord, embed: Embed | None
) -> tuple[int, int]:
    """The rows' commit, after embedding rows other processes added since (``known``: id ->
    new vector, filled in); returns (version committed, version it was made from)."""
    for _ in range(SWITCH_TRIES):
        latest = store.latest_version()
        current = [str(i) for i in store.read_version(["id"], latest)["id"].to_pylist()]
        missing = [i for i in current if i not in known]
        if missing:
            if embed is None:
                raise StoreChangedError(
                    "the store changed during re-embedding",
                    remedy=Remedy.REINDEX_AGAIN,
                    store=store.uri,
                )
            table = _images(store, latest, missing, ["id", "image"])
            added = [str(i) for i in table["id"].to_pylist()]
            for i, vector in zip(added, embed(added, table["image"].to_pylist()), strict=True):
                known[i] = np.asarray(vector, np.float32)
            log.info("store %s: embedded %d rows added meanwhile", store.uri, len(added))
        matrix = np.zeros((len(current), model.dim), np.float32)
        for k, i in enumerate(current):
            matrix[k] = known[i]
        try:
            return store.rewrite_vectors(current, matrix, model.fingerprint)
        except StoreChangedError:
            continue
    raise StoreChangedError(
        "the store kept changing during re-embedding", remedy=Remedy.REINDEX_AGAIN, store=store.uri
    )


def _take_in_between(
    store: SpecimenStore, version: int, fingerprint: str, embed: Embed | None
) -> None:
    """Another process committed just before the rows' commit ``version`` (which was made from
    an earlier version and so dropped it): its added rows are embedded by the new model and
    added again, rows it deleted are deleted again."""
    last = store.read_version(["id"], version - 1)["id"].to_pylist()
    now = store.read_version(["id"], version)["id"].to_pylist()
    lost, back = sorted(set(last) - set(now)), sorted(set(now) - set(last))
    if back:
        store.delete_ids(back)
    if not lost:
        return
    if embed is None:
        raise StoreChangedError(
            f"{len(lost)} rows were added during re-embedding and are only in version "
            f"{version - 1}",
            remedy=Remedy.REINDEX_AGAIN,
            store=store.uri,
        )
    rows = _images(store, version - 1, lost, list(SPECIMEN_COLUMNS))
    ids = [str(i) for i in rows["id"].to_pylist()]
    vectors = np.asarray(embed(ids, rows["image"].to_pylist()), np.float32)
    columns = {c: rows[c].to_pylist() for c in SPECIMEN_COLUMNS if c != "vector"}
    columns["fingerprint"] = [fingerprint] * len(ids)
    store.add(store.make_rows(columns, vectors))
    log.warning("store %s: %d rows committed during the switch taken in again", store.uri, len(ids))


def check_writer(store: SpecimenStore, fingerprint: str, version: int | None = None) -> None:
    """:class:`ModelSwitchedError` when the store's vectors (at ``version``, default the one
    checked out) are another model's than ``fingerprint``, the writer's."""
    truth = rows_model(store, version)
    if truth and truth != fingerprint:
        raise ModelSwitchedError(
            f"store {store.uri} switched to model {truth} while photos embedded by model "
            f"{fingerprint} were being written; nothing was written",
            store=store.uri,
        )
