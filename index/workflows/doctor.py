"""``shellid doctor``: check a store, say what is damaged and what can be recovered, and repair
what is safe to repair (issue 25).

Checked, table by table (``specimens``, ``store_info``, ``within_species_prior``): the table
opens (its newest manifest is readable), the versions kept are listed (and a newest manifest
that went missing is named, from lance's ``latest_version_hint.json``), every data file of the
newest version is read; for the specimens table also: a vector on every row, of the size the
store records, finite; ids unique; every photo and thumbnail present and readable as an image;
the vectors' model the one ``store_info`` names. Then every snapshot file's CRC-32s
(:meth:`~index.snapshot.Snapshots.verify_file`) and stale temporary files.

Repairs (``repair=True``), each only when safe:

* a newest manifest that cannot be read is set aside (moved to ``<store>/_doctor/``, never
  deleted) until the table opens at the version before it — that commit is lost, it could not
  be read anyway;
* a table whose newest version needs a missing data file is restored to the newest version that
  reads whole (``Table.restore``: a new commit; the rows only the missing file held are lost,
  and are counted);
* a damaged snapshot is deleted (the next start rebuilds it from the store), and temporary
  files a dead writer left are deleted.

Rows whose photo is unreadable, vectors of the wrong size and a second model's vectors are
reported with a :class:`~index.errors.Remedy` (``api`` words the command to run); they are
never deleted here.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lancedb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from PIL import Image
from tqdm.auto import tqdm

from ..errors import CollectionError, Remedy
from ..model_switch import rows_model, settle_model
from ..schema import INFO_TABLE, MODELS_TABLE, PRIOR_TABLE, SPECIMENS_TABLE
from ..snapshot import STALE_TEMPORARY_SECONDS, Snapshots
from ..storage import storage_problem

__all__ = ["Checkup", "Finding", "check_store"]

#: lance names a version's manifest ``u64::MAX - version`` (newest first when sorted)
_U64_MAX = (1 << 64) - 1
_MISSING_FILE = re.compile(r"Not found: [^,]*?/?(data/[^,/\s]+\.lance)")


@dataclass
class Finding:
    """One problem: where, what, and what ``--repair`` does about it (None: nothing safe);
    ``remedy``: what the user can do instead, for the ``store`` it is about (``api`` words
    the command: ``api.commands.doctor_cmd``)."""

    where: str
    problem: str
    repair: str | None = None
    repaired: bool = False
    lost_rows: int = 0
    remedy: Remedy | None = None
    store: str = ""

    def line(self, remedy_words: str = "") -> str:
        """The report's line (``remedy_words``: the remedy as worded after the problem)."""
        problem = f"{self.problem}{remedy_words}"
        if self.repaired:
            return f"repaired  {self.where}: {problem}; {self.repair}"
        todo = f"; --repair will {self.repair}" if self.repair else ""
        return f"DAMAGED   {self.where}: {problem}{todo}"


@dataclass
class Checkup:
    """What :func:`check_store` found: problems, and facts about the healthy parts."""

    uri: str
    findings: list[Finding] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)
    passed: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        """Nothing damaged is left (every finding repaired, or none)."""
        return all(f.repaired for f in self.findings)

    def add(
        self, where: str, problem: str, repair: str | None = None, remedy: Remedy | None = None
    ) -> Finding:
        finding = Finding(where, problem, repair, remedy=remedy, store=self.uri if remedy else "")
        self.findings.append(finding)
        return finding


def _table_dir(uri: str, name: str) -> Path | None:
    """The folder of table ``name`` for a local store (None for an object store)."""
    if "://" in uri and not uri.startswith("file://"):
        return None
    return Path(uri.removeprefix("file://")) / f"{name}.lance"


def _manifests(table_dir: Path) -> list[tuple[int, Path]]:
    """``(version, manifest)`` of a local table, newest first."""
    found = []
    for path in (table_dir / "_versions").glob("*.manifest"):
        try:
            number = int(path.stem)
        except ValueError:
            continue
        version = _U64_MAX - number if number > _U64_MAX // 2 else number
        found.append((version, path))
    return sorted(found, reverse=True)


def _hinted_version(table_dir: Path) -> int | None:
    try:
        return int(
            json.loads((table_dir / "_versions" / "latest_version_hint.json").read_text())[
                "version"
            ]
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _set_aside(store: Path, table_dir: Path, manifests: list[Path]) -> Path:
    """Move ``manifests`` out of the table into ``<store>/_doctor/<time>/`` (kept, not
    deleted: a person may still want them)."""
    folder = store / "_doctor" / time.strftime("%Y%m%d-%H%M%S") / table_dir.name
    folder.mkdir(parents=True, exist_ok=True)
    for path in manifests:
        shutil.move(str(path), folder / path.name)
    return folder


def _open(db: Any, name: str, checkup: Checkup, repair: bool) -> Any:
    """Table ``name`` (None when it cannot be opened and was not repaired)."""
    try:
        return db.open_table(name)
    except Exception as exc:
        problem = f"cannot be opened ({storage_problem(exc)})"
    table_dir = _table_dir(checkup.uri, name)
    if table_dir is None:
        checkup.add(f"table {name}", problem)
        return None
    finding = checkup.add(
        f"table {name}",
        problem,
        "set its unreadable newest manifests aside (into _doctor/) until it opens at the "
        "version before them; the commits they recorded are lost",
    )
    if not repair:
        return None
    moved: list[Path] = []
    for _, manifest in _manifests(table_dir)[:-1]:  # never the very first
        moved.append(manifest)
        _set_aside(Path(checkup.uri.removeprefix("file://")), table_dir, [manifest])
        try:
            table = db.open_table(name)
            table.count_rows()
        except Exception:
            continue
        finding.repaired = True
        finding.repair = f"set {len(moved)} manifest(s) aside; it opens at version {table.version}"
        return table
    finding.repair = "no manifest of it can be read: restore the store from a backup"
    return None


def _scan(table: Any, columns: list[str] | None = None) -> Iterator[pa.RecordBatch]:
    query = table.search().limit(None)
    if columns is not None:
        query = query.select(columns)
    yield from query.to_batches(256)


def _reads_whole(table: Any) -> str | None:
    """None when every data file of the table's checked-out version reads, else why not."""
    try:
        for _ in _scan(table):
            pass
    except Exception as exc:
        missing = _MISSING_FILE.search(str(exc))
        return f"data file {missing.group(1)} is missing" if missing else storage_problem(exc)
    return None


def _check_data(db: Any, name: str, table: Any, checkup: Checkup, repair: bool) -> Any:
    """Every data file of the newest version reads; else the newest version that reads whole
    (restored with ``repair``)."""
    problem = _reads_whole(table)
    if problem is None:
        return table
    versions = sorted((int(v["version"]) for v in table.list_versions()), reverse=True)
    latest_rows = table.count_rows()
    good = None
    for version in versions[1:]:
        candidate = db.open_table(name)
        candidate.checkout(version)
        if _reads_whole(candidate) is None:
            good = (version, candidate.count_rows())
            break
    if good is None:
        checkup.add(
            f"table {name}",
            f"{problem}, and no version kept reads whole",
            None,
        ).lost_rows = latest_rows
        return None
    version, rows = good
    finding = checkup.add(
        f"table {name}",
        f"{problem} (needed by its newest version {versions[0]}, {latest_rows} rows)",
        f"restore version {version}, the newest that reads whole ({rows} rows; the "
        f"{max(0, latest_rows - rows)} rows of later commits are lost unless re-enrolled)",
    )
    finding.lost_rows = max(0, latest_rows - rows)
    if repair:
        table = db.open_table(name)
        table.restore(version)
        finding.repaired = True
        return table
    return None


def _check_versions(name: str, table: Any, checkup: Checkup, repair: bool) -> None:
    versions = table.list_versions()
    checkup.facts.setdefault("versions kept", {})[name] = len(versions)
    stamps = [v["timestamp"] for v in versions if v.get("timestamp") is not None]
    if stamps and name == SPECIMENS_TABLE:
        checkup.facts["oldest version"] = str(min(stamps))[:19]
    table_dir = _table_dir(checkup.uri, name)
    hinted = _hinted_version(table_dir) if table_dir is not None else None
    if table_dir is None or hinted is None or hinted <= int(table.version):
        return
    table.checkout_latest()  # a commit landing right now writes the hint after its manifest
    version = int(table.version)
    if hinted <= version or any(f.where == f"table {name}" for f in checkup.findings):
        return  # in step, or a repair above already set its newest manifests aside
    finding = checkup.add(
        f"table {name}",
        f"the manifest of its newest version {hinted} is missing (it reads as of version "
        f"{version}): the commit(s) after version {version} are lost; enrol those photos again",
        f"record version {version} as the newest (the lost commit cannot be read back)",
    )
    if repair:
        hint = table_dir / "_versions" / "latest_version_hint.json"
        hint.write_text(json.dumps({"version": version}))
        finding.repaired = True


def _image_ok(data: bytes | None) -> bool:
    if not data:
        return False
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.verify()
    except Exception:
        return False
    return True


def _check_rows(table: Any, info: dict[str, Any], checkup: Checkup, bar: bool) -> None:
    """Vectors, ids, photos and thumbnails of the specimens table (``bar``: a progress bar)."""
    dim = int(table.schema.field("vector").type.list_size)
    rows, ids = 0, []
    bad_vectors, bad_photos = [], []
    fingerprints: set[str] = set()
    columns = ["id", "vector", "image", "thumbnail", "fingerprint"]
    meter = tqdm(total=table.count_rows(), desc="checking rows", unit="row", disable=not bar)
    for batch in _scan(table, columns):
        meter.update(batch.num_rows)
        rows += batch.num_rows
        batch_ids = [str(i) for i in batch.column("id").to_pylist()]
        ids += batch_ids
        vectors = batch.column("vector")
        flat = np.asarray(pc.list_flatten(vectors).to_numpy(zero_copy_only=False), np.float32)
        finite = np.asarray(np.isfinite(flat.reshape(-1, dim)).all(axis=1), bool).reshape(-1)
        nulls = np.asarray(vectors.is_null().to_numpy(zero_copy_only=False), bool)
        k = 0
        for i, row_id in enumerate(batch_ids):
            if nulls[i]:
                bad_vectors.append(row_id)
            else:
                if not finite[k]:
                    bad_vectors.append(row_id)
                k += 1
        for row_id, image, thumb in zip(
            batch_ids,
            batch.column("image").to_pylist(),
            batch.column("thumbnail").to_pylist(),
            strict=True,
        ):
            if not (_image_ok(image) and _image_ok(thumb)):
                bad_photos.append(row_id)
        fingerprints.update(str(f) for f in batch.column("fingerprint").to_pylist())
    meter.close()
    checkup.facts["rows"] = rows
    _report_rows(checkup, dim, info, ids, bad_vectors, bad_photos, fingerprints)


def _report_rows(
    checkup: Checkup,
    dim: int,
    info: dict[str, Any],
    ids: list[str],
    bad_vectors: list[str],
    bad_photos: list[str],
    fingerprints: set[str],
) -> None:
    rows = len(ids)
    if bad_vectors:
        checkup.add(
            "specimens",
            f"{len(bad_vectors)} of {rows} rows have no usable vector (first: {bad_vectors[0]})",
            remedy=Remedy.REINDEX_ROWS,
        )
    else:
        checkup.passed.append(f"vectors: {rows} of {rows} rows, {dim}-d, finite")
    if info.get("dim") not in (None, dim):
        checkup.add("specimens", f"vectors are {dim}-d, store_info says {info['dim']}-d")
    if len(set(ids)) != rows:
        checkup.add("specimens", f"{rows - len(set(ids))} ids appear twice")
    if bad_photos:
        checkup.add(
            "specimens",
            f"{len(bad_photos)} rows have an unreadable photo or thumbnail (first: "
            f"{bad_photos[0]})",
            remedy=Remedy.REMOVE_AND_ENROL,
        )
    else:
        checkup.passed.append(f"photos: {rows} photos and thumbnails readable")
    expected = info.get("fingerprint")
    others = fingerprints - {str(expected)} if expected else set()
    if rows and others:
        checkup.add(
            "specimens",
            f"vectors of {len(others)} other model(s) than store_info's {expected}",
            remedy=Remedy.REINDEX_STORE,
        )


def _check_switch(checkup: Checkup, info: dict[str, Any], repair: bool) -> dict[str, Any]:
    """A model switch stopped between the rows' commit and ``store_info``'s: the rows name a
    model the store holds and ``store_info`` the one before (repair: record the rows' model,
    as opening the store does). Returns the info the rows are then checked against."""
    from ..store import SpecimenStore

    try:
        store = SpecimenStore(checkup.uri, create=False)
        store.latest_version()
        truth = rows_model(store)
        held = store.models.get(truth, with_data=False) if truth else None
        listed = store.models.listing()
    except CollectionError:
        return info  # what cannot be read is reported by the other checks
    if listed:
        checkup.facts["models held"] = ", ".join(f"{m.fingerprint} ({m.name})" for m in listed)
    if held is None or truth == info.get("fingerprint"):
        return info
    finding = checkup.add(
        "store_info",
        f"names model {info.get('fingerprint')} but the vectors are model {truth}'s (a switch "
        "stopped before recording it)",
        f"record model {truth} ({held.name}, held by the store)",
    )
    if repair:
        settle_model(store)
        finding.repaired = True
    return {**info, "fingerprint": truth, "dim": held.dim}


def _read_info(table: Any) -> dict[str, Any]:
    data = table.to_arrow()
    return {
        k: json.loads(v)
        for k, v in zip(data["key"].to_pylist(), data["value"].to_pylist(), strict=True)
    }


def _check_snapshots(checkup: Checkup, repair: bool, now: float) -> None:
    try:
        snapshots = Snapshots(checkup.uri)
    except (OSError, ValueError) as exc:
        checkup.passed.append(f"snapshots: not reachable here ({exc})")
        return
    files = snapshots.listing()
    kept = [f for f in files if f.base_name.endswith(".snap")]
    checkup.facts["snapshots"] = len(kept)
    for info in files:
        name = info.base_name
        if name.endswith(".snap") and not snapshots.verify_file(name):
            finding = checkup.add(
                f"snapshot {name}",
                "damaged (CRC-32 check failed, or truncated)",
                "delete it (the next start rebuilds it from the store)",
            )
            if repair:
                snapshots.drop(name)
                finding.repaired = True
        elif name.endswith(".tmp"):
            age = now - (info.mtime.timestamp() if info.mtime else now)
            if age >= STALE_TEMPORARY_SECONDS:
                finding = checkup.add(
                    f"snapshot folder file {name}",
                    f"left by a writer that stopped {age / 3600:.1f} h ago",
                    "delete it",
                )
                if repair:
                    snapshots.fs.delete_file(info.path)
                    finding.repaired = True
    if kept and not any(f.where.startswith("snapshot ") for f in checkup.findings):
        checkup.passed.append(f"snapshots: {len(kept)} whole (CRC-32 of every section)")


def check_store(
    uri: str,
    repair: bool = False,
    progress: Callable[[str], None] | None = None,
    bar: bool = False,
) -> Checkup:
    """Check (and with ``repair`` repair) the store at ``uri``; see the module doc.
    ``progress`` is told each step, ``bar`` draws a progress bar over the rows."""
    say = progress or (lambda _text: None)
    checkup = Checkup(str(uri))
    local = _table_dir(checkup.uri, SPECIMENS_TABLE)
    if local is not None and not local.parent.is_dir():
        checkup.add("store", f"{uri} is not a directory")
        return checkup
    try:
        db = lancedb.connect(checkup.uri)
        names = set(db.table_names())
    except Exception as exc:
        checkup.add("store", f"cannot be opened ({storage_problem(exc)})")
        return checkup
    if local is not None:  # a table whose listing hides it (no readable manifest) is still one
        names |= {p.stem for p in local.parent.glob("*.lance") if (p / "_versions").is_dir()}
    info: dict[str, Any] = {}
    for name in (INFO_TABLE, PRIOR_TABLE, MODELS_TABLE, SPECIMENS_TABLE):
        if name not in names:
            continue
        say(f"checking table {name}")
        table = _open(db, name, checkup, repair)
        if table is None:
            continue
        table = _check_data(db, name, table, checkup, repair)
        if table is None:
            continue
        _check_versions(name, table, checkup, repair)
        if name == INFO_TABLE:
            info = _read_info(table)
        elif name == SPECIMENS_TABLE:
            info = _check_switch(checkup, info, repair)
            say("reading every row (vectors, photos, thumbnails)")
            _check_rows(table, info, checkup, bar)
    if SPECIMENS_TABLE not in names:
        checkup.passed.append("no specimens table yet (nothing enrolled)")
    say("checking snapshots")
    _check_snapshots(checkup, repair, time.time())
    if local is not None:
        checkup.facts["MiB on disk"] = round(
            sum(f.stat().st_size for f in local.parent.rglob("*") if f.is_file()) / 2**20, 2
        )
    return checkup
