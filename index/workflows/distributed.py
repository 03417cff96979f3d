"""Big collections on Ray: ``shellid enroll / embed / reindex --ray [ADDRESS]``.

What runs where (see docs/distributed.md):

* the driver (the ``shellid`` command) lists the photos, starts or joins Ray, and writes the
  store: :meth:`Collection.enroll_embedded` in large commits (the duplicate rules of the
  local path), :meth:`Collection.reindex_embedded` in one, thresholds calibrated once at
  the end; a tqdm bar counts the photos done;
* Ray Data streams the photo paths (or stored ids) in batches to a pool of actors, one per
  worker, each loading the model once (on a GPU when it was given one): an actor reads its
  photos, puts each through the one intake (:func:`index.workflows.imaging.prepare_image`,
  exactly as :meth:`Collection.enroll`) and embeds them, so the vectors are the local path's.

Resuming: every commit is atomic, and a photo whose SHA-256 the store already holds under the
same species is skipped before it is decoded (reported as a duplicate), so running a killed
enrolment again adds only what is missing, without duplicating rows.

Ray is an optional extra (``pip install 'shellid[ray]'``); it and torch are imported inside
functions, so importing this module costs nothing.
"""

from __future__ import annotations

import hashlib
import io
import logging
import re
import socket
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from embedder.intake import ImageIntakeError, IntakeLimits

from ..names import canonical_species
from ..results import EnrollReport
from .collection import Collection
from .imaging import PreparedImage, prepare_image, read_input
from .models import loaded, make_embedder

log = logging.getLogger(__name__)

#: photos per batch sent to an actor
DEFAULT_BATCH = 32
#: photos per store commit (per species: a species smaller than this is one commit)
DEFAULT_COMMIT = 2000
#: object store of a local Ray (the photos in flight; the default takes 30 % of the RAM)
LOCAL_OBJECT_STORE = 1 << 30
#: blocks the list of photos is cut into (Ray Data forms the actors' batches from them)
MAX_BLOCKS = 256
#: where a local Ray keeps its sockets and logs (a short path: sockets have a length limit)
LOCAL_TEMP_DIR = "/tmp/shellid-ray"

_ADDRESS = re.compile(r"^(local|auto|[\w.-]+:\d+)$")
#: why ``ray://`` addresses are refused
RAY_CLIENT_REFUSED = (
    "Ray Data does not run through Ray Client (ray://): run shellid on a node of the cluster "
    "with --ray auto or --ray HEAD:6379 (e.g. ray job submit -- shellid ... --ray auto)"
)


class RayUnavailableError(RuntimeError):
    """``--ray`` without Ray installed."""


class RayClusterError(RuntimeError):
    """The Ray cluster cannot be reached or cannot run the job as asked."""


def check_address(address: str) -> str:
    """``address`` when it names a Ray cluster (``local``, ``auto``, ``HOST:PORT`` of its
    head), else ValueError saying what is expected."""
    if address.strip().startswith(("ray://", "anyscale://")):
        raise ValueError(RAY_CLIENT_REFUSED)
    if not _ADDRESS.match(address.strip()):
        raise ValueError(
            f"{address!r} is not a Ray address (local, auto or HOST:6379); "
            "to run on a local Ray write --ray after the photos"
        )
    return address.strip()


def require_ray() -> ModuleType:
    """``import ray`` (with Ray Data), or a one-line :class:`RayUnavailableError`."""
    try:
        import ray
        import ray.data  # the extra is ray[data]
    except ImportError as exc:
        raise RayUnavailableError(
            f"--ray needs Ray ({exc}): pip install 'shellid[ray]' (or 'ray[data]')"
        ) from None
    return ray


@dataclass(frozen=True)
class RayOptions:
    """How a job runs on Ray. ``workers``: actors (default: one per GPU where the cluster has
    GPUs, else one per ``cpus_per_worker`` CPUs); ``gpus_per_worker``: default 1 where the
    cluster has GPUs, else 0; ``commit_photos``: photos per store commit; ``temp_dir``: the
    sockets and logs of a local Ray."""

    address: str = "local"
    workers: int | None = None
    cpus_per_worker: float = 1.0
    gpus_per_worker: float | None = None
    batch_size: int = DEFAULT_BATCH
    commit_photos: int = DEFAULT_COMMIT
    temp_dir: str = LOCAL_TEMP_DIR

    def __post_init__(self) -> None:
        check_address(self.address)
        if self.workers is not None and self.workers < 1:
            raise ValueError("Ray workers must be ≥ 1")
        if self.cpus_per_worker <= 0:
            raise ValueError("CPUs per Ray worker must be > 0")
        if self.gpus_per_worker is not None and self.gpus_per_worker < 0:
            raise ValueError("GPUs per Ray worker must be ≥ 0")
        if self.batch_size < 1 or self.commit_photos < 1:
            raise ValueError("the Ray batch size and photos per commit must be ≥ 1")


@dataclass
class RunTiming:
    """Where a Ray job's time went (filled in by the ``*_on_ray`` functions)."""

    workers: int = 0
    gpus_per_worker: float = 0.0
    connect_s: float = 0.0  # ray.init (starting a local Ray, or joining a cluster)
    total_s: float = 0.0  # the whole call
    commit_s: float = 0.0  # the driver writing the store
    commits: int = 0
    photos: int = 0  # photos through the pipeline (embedded, skipped or unreadable)
    embedded: int = 0
    started_at: float = 0.0  # wall clock when the call began
    work_began: float = float("inf")  # wall clock when a worker began its first batch
    work_ended: float = 0.0  # ... and when the last batch was done

    @property
    def warmup_s(self) -> float:
        """From connecting to the first batch begun (workers starting, models loading)."""
        return self.work_began - self.started_at - self.connect_s

    @property
    def steady_rate(self) -> float:
        """Photos per second while the workers worked (their start-up excluded)."""
        span = self.work_ended - self.work_began
        return self.photos / span if span > 0 else float("nan")

    def saw(self, batch: dict[str, np.ndarray]) -> int:
        """Count a batch back from the workers; returns its size."""
        self.work_began = min(self.work_began, float(batch["began"].min()))
        self.work_ended = max(self.work_ended, float(batch["ended"].max()))
        self.photos += len(batch["began"])
        return len(batch["began"])


def _stamped(result: dict[str, np.ndarray], began: float) -> dict[str, np.ndarray]:
    """A worker's output batch with when it began and ended (wall clock, for RunTiming)."""
    n = len(next(iter(result.values())))
    return result | {"began": np.full(n, began), "ended": np.full(n, time.time())}


@dataclass
class _Plan:
    workers: int
    cpus: float
    gpus: float


@contextmanager
def ray_session(options: RayOptions, timing: RunTiming | None = None) -> Iterator[_Plan]:
    """Start a local Ray (``local``) or join a cluster, yield how many actors with which
    resources to use, and disconnect (a Ray this process did not start is left running)."""
    ray = require_ray()
    started = time.perf_counter()
    owned = not ray.is_initialized()
    if owned:
        _connect(ray, options)
    if timing is not None:
        timing.connect_s = time.perf_counter() - started
    try:
        _quiet_ray_data()
        yield _plan(ray, options)
    finally:
        if owned:
            ray.shutdown()


def probe(address: str, timeout: float = 5.0) -> None:
    """Fail at once, in one line, when ``address`` names a host and port that accept no
    connection (Ray itself waits minutes for a cluster that is not there)."""
    found = re.match(r"^([\w.-]+):(\d+)$", address)
    if address in ("local", "auto") or found is None:
        return
    host, port = found.group(1), int(found.group(2))
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        why = exc.strerror or type(exc).__name__.replace("Error", " error").lower()
        raise RayClusterError(f"cannot reach Ray at {address}: {why}") from None


def _connect(ray: ModuleType, options: RayOptions) -> None:
    probe(options.address)
    common: dict[str, Any] = {
        "logging_level": logging.ERROR,
        "log_to_driver": False,  # actor output stays in the session's logs
        "configure_logging": True,
    }
    with warnings.catch_warnings():  # Ray's daemons are fork+exec'd: no LanceDB state is used
        warnings.filterwarnings("ignore", message="lancedb fork support is experimental")
        _init(ray, options, common)


def _init(ray: ModuleType, options: RayOptions, common: dict[str, Any]) -> None:
    try:
        if options.address == "local":
            from embedder.runtime import usable_cores

            cpus = usable_cores()
            if options.workers:
                cpus = max(cpus, int(np.ceil(options.workers * options.cpus_per_worker)))
            ray.init(
                address="local",
                num_cpus=cpus,
                include_dashboard=False,
                object_store_memory=LOCAL_OBJECT_STORE,
                _temp_dir=options.temp_dir,
                **common,
            )
        else:
            ray.init(address=options.address, **common)
    except Exception as exc:  # ConnectionError, ValueError, RuntimeError ... from ray.init
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        where = (
            "start a local Ray" if options.address == "local" else f"reach Ray at {options.address}"
        )
        raise RayClusterError(f"cannot {where}: {first}") from None


def _quiet_ray_data() -> None:
    """No Ray Data progress bars or start-up lines: the driver draws its own bar."""
    import ray.data

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    context.execution_options.preserve_order = True  # commits follow the species order
    logging.getLogger("ray.data").setLevel(logging.ERROR)


def _plan(ray: ModuleType, options: RayOptions) -> _Plan:
    resources = ray.cluster_resources()
    cluster_gpus = float(resources.get("GPU", 0.0))
    cluster_cpus = float(resources.get("CPU", 0.0))
    gpus = options.gpus_per_worker
    if gpus is None:
        gpus = 1.0 if cluster_gpus >= 1 else 0.0
    if gpus > cluster_gpus:
        raise RayClusterError(
            f"{gpus:g} GPU(s) per worker asked for, but the Ray cluster has {cluster_gpus:g}"
        )
    if options.cpus_per_worker > cluster_cpus:
        raise RayClusterError(
            f"{options.cpus_per_worker:g} CPUs per worker asked for, but the Ray cluster has "
            f"{cluster_cpus:g}"
        )
    workers = options.workers
    if workers is None:
        by_cpu = int(cluster_cpus // options.cpus_per_worker)
        workers = max(1, min(by_cpu, int(cluster_gpus // gpus)) if gpus else by_cpu)
    return _Plan(workers=workers, cpus=options.cpus_per_worker, gpus=gpus)


# ====================================================================== the model on workers
@dataclass(frozen=True)
class ModelSource:
    """A model as it travels to the workers: a packaged backbone name (or None, the frozen
    default), or a MODEL.pt's bytes (so workers need no shared file system)."""

    name: str | None
    data: bytes | None = field(default=None, repr=False)

    @classmethod
    def of(cls, spec: str | Path | None) -> ModelSource:
        if spec is not None and Path(spec).expanduser().is_file():
            return cls(str(spec), Path(spec).expanduser().read_bytes())
        return cls(None if spec is None else str(spec))


def _worker_embedder(source: ModelSource, fingerprint: str, batch_size: int, cpus: float) -> Any:
    """The model on this worker (on its GPU when Ray gave it one), as an
    ``embedder.Embedder`` using ``cpus`` threads; refuses a model other than the driver's."""
    import torch

    from embedder import load_model
    from embedder.embedding import Embedder

    threads = max(1, int(cpus))
    torch.set_num_threads(threads)
    if source.data is not None:
        with tempfile.TemporaryDirectory(prefix="shellid-model-") as folder:
            path = Path(folder) / "MODEL.pt"
            path.write_bytes(source.data)
            model = load_model(path)
    else:
        model = load_model(source.name)
    embedder = Embedder(model, batch_size=batch_size, num_workers=threads, threads=threads)
    if embedder.fingerprint != fingerprint:
        raise RayClusterError(
            f"the worker's model {embedder.fingerprint} is not the driver's {fingerprint}"
        )
    return embedder


class _EnrolWorker:
    """Actor: photo paths -> the intake's stored copies and their vectors. A photo whose
    SHA-256 is already enrolled under the same species is not decoded (``skipped``)."""

    def __init__(
        self,
        model: ModelSource,
        fingerprint: str,
        limits: IntakeLimits,
        known: dict[str, str],
        batch_size: int,
        cpus: float,
    ) -> None:
        self.embedder = _worker_embedder(model, fingerprint, batch_size, cpus)
        self.limits = limits
        self.known = known
        self.pool = ThreadPoolExecutor(max(1, int(cpus)), thread_name_prefix="shellid-intake")

    def _intake(self, path: str, species: str) -> tuple[str, str, PreparedImage | None]:
        """``(status, sha256 or error, prepared photo)``; status is ok, skipped or error."""
        try:
            name, data = read_input(Path(path))
            sha = hashlib.sha256(data).hexdigest()
            if self.known.get(sha) == species:
                return "skipped", sha, None
            return "ok", sha, prepare_image(name, data, self.limits)
        except ImageIntakeError as exc:
            return "error", exc.reason, None

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        began = time.time()
        done = list(self.pool.map(self._intake, batch["path"], batch["species"]))
        photos = [p for _, _, p in done if p is not None]
        vectors = np.zeros((len(done), int(self.embedder.dim)), np.float32)
        if photos:
            rows = [k for k, (_, _, p) in enumerate(done) if p is not None]
            vectors[rows] = self.embedder.embed_images([p.image for p in photos])
        return _stamped(
            {
                "row": batch["row"],
                "status": np.array([s for s, _, _ in done], dtype=object),
                "detail": np.array([d for _, d, _ in done], dtype=object),
                "stored": np.array([p.stored if p else b"" for _, _, p in done], dtype=object),
                "thumbnail": np.array(
                    [p.thumbnail if p else b"" for _, _, p in done], dtype=object
                ),
                "width": np.array([p.width if p else 0 for _, _, p in done], dtype=np.int64),
                "height": np.array([p.height if p else 0 for _, _, p in done], dtype=np.int64),
                "vector": vectors,
            },
            began,
        )


class _PathWorker:
    """Actor: photo paths -> vectors exactly as ``Embedder.embed_paths`` (``shellid embed``)."""

    def __init__(self, model: ModelSource, fingerprint: str, batch_size: int, cpus: float):
        self.embedder = _worker_embedder(model, fingerprint, batch_size, cpus)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        began = time.time()
        paths = [str(p) for p in batch["path"]]
        result = self.embedder.embed_paths(paths, progress=False)
        vectors = np.zeros((len(paths), int(self.embedder.dim)), np.float32)
        position = {p: k for k, p in enumerate(paths)}
        for vector, path in zip(result.embeddings, result.paths, strict=True):
            vectors[position[str(path)]] = vector
        errors = np.array([result.errors.get(p, "") for p in paths], dtype=object)
        return _stamped({"row": batch["row"], "error": errors, "vector": vectors}, began)


class _StoredWorker:
    """Actor: stored specimen ids -> vectors of their normalised copies (``reindex``)."""

    def __init__(
        self, uri: str, model: ModelSource, fingerprint: str, batch_size: int, cpus: float
    ):
        from ..store import SpecimenStore

        self.store = SpecimenStore(uri, create=False)
        self.embedder = _worker_embedder(model, fingerprint, batch_size, cpus)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from ..store import sql_string
        from .collection import stored_image

        began = time.time()
        ids = [str(i) for i in batch["id"]]
        table = self.store.select(["id", "image"], f"id IN ({', '.join(map(sql_string, ids))})")
        blobs = dict(zip(table["id"].to_pylist(), table["image"].to_pylist(), strict=True))
        missing = [i for i in ids if i not in blobs]
        if missing:
            raise RayClusterError(
                f"stored image {missing[0]} vanished during re-embedding; run reindex again"
            )
        images = [stored_image(i, blobs[i]) for i in ids]
        return _stamped({"id": batch["id"], "vector": self.embedder.embed_images(images)}, began)


def _map(items: list[dict[str, Any]], worker: type, plan: _Plan, batch_size: int, **kwargs: Any):
    """``items`` through a pool of ``plan.workers`` actors of ``worker``, in order (a
    ``ray.data.Dataset`` of the actors' output batches)."""
    import ray.data

    batches = -(-len(items) // batch_size)
    workers = max(1, min(plan.workers, batches))  # no worker starts for want of a batch
    blocks = max(workers, min(MAX_BLOCKS, batches))
    dataset = ray.data.from_items(items, override_num_blocks=blocks)
    with warnings.catch_warnings():  # max_restarts has no named parameter yet
        warnings.filterwarnings("ignore", message=".*ray_remote_args.*is deprecated")
        return dataset.map_batches(
            worker,
            batch_size=batch_size,
            batch_format="numpy",
            fn_constructor_kwargs={"batch_size": batch_size, "cpus": plan.cpus, **kwargs},
            compute=ray.data.ActorPoolStrategy(size=workers),
            num_cpus=plan.cpus,
            num_gpus=plan.gpus,
            max_restarts=0,  # a worker that dies fails the job; running it again resumes
        )


# ====================================================================== enrolment
@dataclass
class EnrolJob:
    """The photos of one species to enrol (one report; commits of at most ``commit_photos``).
    ``groups``: the specimen each photo shows (None: each photo its own)."""

    species: str
    files: list[Path]
    groups: list[str] | None = None
    taxonomy: dict[str, str] = field(default_factory=dict)
    source: str = ""


def folder_jobs(
    root: str | Path,
    *,
    group_pattern: str | None = None,
    taxonomy_csv: str | Path | None = None,
    source: str | None = None,
) -> list[EnrolJob]:
    """The species of a class-folder tree ``root/<Genus_species>/*.jpg`` as
    :meth:`Collection.enroll_folder` reads them (the same groups, taxonomy and source)."""
    from .collection import enrolled_from, folder_batches

    root = Path(root)
    return [
        EnrolJob(name, files, groups, info, source if source is not None else enrolled_from(files))
        for name, files, groups, info in folder_batches(
            root, None, group_pattern, taxonomy_csv, None
        )
    ]


@dataclass
class _Pending:
    """A job's photos back from the workers and not committed yet."""

    photos: list[PreparedImage] = field(default_factory=list)
    vectors: list[np.ndarray] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    left: int = 0  # photos still to come back


def _known_photos(collection: Collection) -> dict[str, str]:
    """SHA-256 -> species of every stored photo (the store's ``sha256`` column)."""
    table = collection.store.load_index(["sha256", "species"])
    if not table.num_rows:
        return {}
    return dict(zip(table["sha256"].to_pylist(), table["species"].to_pylist(), strict=True))


def _take(
    out: dict[str, np.ndarray], n: int, name: str, batch: _Pending, report: EnrollReport
) -> bool:
    """Row ``n`` of a worker's output into the job's report (skipped: a duplicate; unusable:
    an error) or its pending commit; True for a photo to commit."""
    status = str(out["status"][n])
    if status == "skipped":
        report.duplicates.append(name)
        return False
    if status == "error":
        key = name if name not in report.errors else f"{name} ({len(report.errors) + 1})"
        report.errors[key] = str(out["detail"][n])
        return False
    stored = bytes(out["stored"][n])
    batch.photos.append(
        PreparedImage(
            name=name,
            sha256=str(out["detail"][n]),
            image=Image.open(io.BytesIO(stored)),  # lazy: enroll_embedded reads no pixels
            stored=stored,
            thumbnail=bytes(out["thumbnail"][n]),
            width=int(out["width"][n]),
            height=int(out["height"][n]),
        )
    )
    batch.vectors.append(out["vector"][n])
    return True


def enroll_on_ray(
    collection: Collection,
    jobs: Sequence[EnrolJob],
    options: RayOptions,
    *,
    progress: bool = True,
    timing: RunTiming | None = None,
) -> list[EnrollReport]:
    """Enrol ``jobs`` on Ray (one report per job, as :meth:`Collection.enroll_folder`): the
    workers read, take in and embed the photos; the driver commits them in commits of at most
    ``options.commit_photos`` photos of one species, and calibrates once at the end. Photos
    already enrolled under the same species are skipped unread (``duplicates``)."""
    timing = timing if timing is not None else RunTiming()
    started = time.perf_counter()
    timing.started_at = time.time()
    embedder = collection.embedder  # the model, checked against the store, before Ray starts
    names = [canonical_species(job.species) for job in jobs]
    reports = [EnrollReport(species=name) for name in names]
    pending = [_Pending(left=len(job.files)) for job in jobs]
    where = [(j, k) for j, job in enumerate(jobs) for k in range(len(job.files))]
    items = [
        {"row": r, "path": str(jobs[j].files[k].expanduser().resolve()), "species": names[j]}
        for r, (j, k) in enumerate(where)
    ]

    def commit(j: int) -> None:
        batch = pending[j]
        if not batch.photos:
            return
        job, began = jobs[j], time.perf_counter()
        part = collection.enroll_embedded(
            names[j],
            batch.photos,
            np.stack(batch.vectors),
            taxonomy=job.taxonomy,
            source=job.source,
            groups=batch.groups if job.groups is not None else None,
            calibrate=False,
        )
        timing.commit_s += time.perf_counter() - began
        timing.commits += 1
        report = reports[j]
        report.added += part.added
        report.specimen_ids += part.specimen_ids
        report.duplicates += part.duplicates
        report.refused.update(part.refused)
        batch.photos, batch.vectors, batch.groups = [], [], []

    if items:
        with (
            ray_session(options, timing) as plan,
            tqdm(
                total=len(items), desc="enrolling on Ray", unit="img", disable=not progress
            ) as bar,
        ):
            timing.workers, timing.gpus_per_worker = plan.workers, plan.gpus
            results = _map(
                items,
                _EnrolWorker,
                plan,
                batch_size=options.batch_size,
                model=ModelSource.of(collection.model_path or None),
                fingerprint=embedder.fingerprint,
                limits=collection.settings.intake_limits(),
                known=_known_photos(collection),
            )
            for out in results.iter_batches(batch_size=None, batch_format="numpy"):
                touched: set[int] = set()
                for n, row in enumerate(out["row"]):
                    j, k = where[int(row)]
                    job = jobs[j]
                    if _take(out, n, job.files[k].name, pending[j], reports[j]):
                        pending[j].groups.append(job.groups[k] if job.groups is not None else "")
                        timing.embedded += 1
                    pending[j].left -= 1
                    touched.add(j)
                for j in sorted(touched):
                    if pending[j].left == 0 or len(pending[j].photos) >= options.commit_photos:
                        commit(j)
                bar.update(timing.saw(out))
    lost = sum(p.left for p in pending)
    if lost:  # Ray Data returns every row; this would be a bug, not a photo's fault
        raise RayClusterError(f"{lost} photo(s) did not come back from the workers; run again")
    info = collection.store.info()
    if any(r.added for r in reports) or (
        len(collection) and info.get("calibrated_version") != collection.store.version
    ):  # once for the whole job (also when a killed run committed but never calibrated)
        collection.calibrate()
    identifier = collection.identifier
    counts = identifier.counts() if identifier is not None else {}
    for name, report in zip(names, reports, strict=True):
        report.total = counts.get(name, 0)
    timing.total_s = time.perf_counter() - started
    return reports


# ====================================================================== embed and reindex
def embed_on_ray(
    paths: Sequence[Path],
    model: str | Path | None,
    fingerprint: str,
    options: RayOptions,
    *,
    progress: bool = True,
    timing: RunTiming | None = None,
) -> tuple[np.ndarray, list[Path], dict[str, str]]:
    """``shellid embed`` on Ray: ``(vectors of the readable photos, their paths, errors by
    path)`` in the order of ``paths``, as ``Embedder.embed_paths`` gives them."""
    timing = timing if timing is not None else RunTiming()
    started = time.perf_counter()
    timing.started_at = time.time()
    vectors: dict[int, np.ndarray] = {}
    errors: dict[str, str] = {}
    items = [{"row": r, "path": str(Path(p).expanduser().resolve())} for r, p in enumerate(paths)]
    with (
        ray_session(options, timing) as plan,
        tqdm(total=len(items), desc="embedding on Ray", unit="img", disable=not progress) as bar,
    ):
        timing.workers, timing.gpus_per_worker = plan.workers, plan.gpus
        results = _map(
            items,
            _PathWorker,
            plan,
            batch_size=options.batch_size,
            model=ModelSource.of(model),
            fingerprint=fingerprint,
        )
        for out in results.iter_batches(batch_size=None, batch_format="numpy"):
            for n, row in enumerate(out["row"]):
                r = int(row)
                if out["error"][n]:
                    errors[str(paths[r])] = str(out["error"][n])
                else:
                    vectors[r] = out["vector"][n]
            bar.update(timing.saw(out))
    kept = sorted(vectors)
    timing.embedded = len(kept)
    timing.total_s = time.perf_counter() - started
    matrix = np.stack([vectors[r] for r in kept]) if kept else np.zeros((0, 0), np.float32)
    return matrix.astype(np.float32), [Path(paths[r]) for r in kept], errors


def reindex_on_ray(
    collection: Collection,
    model: str | Path | None,
    options: RayOptions,
    *,
    progress: bool = True,
    timing: RunTiming | None = None,
) -> int:
    """``shellid reindex`` on Ray: the workers read the stored normalised copies straight
    from the store (its URI must be reachable from every worker) and embed them with
    ``model``; the driver rewrites the vectors in one commit
    (:meth:`Collection.reindex_embedded`). Returns the number of photos re-embedded."""
    timing = timing if timing is not None else RunTiming()
    started = time.perf_counter()
    timing.started_at = time.time()
    new_embedder = loaded(make_embedder(model)[0])
    ids = [str(i) for i in collection.store.load_index(["id"])["id"].to_pylist()]
    vectors = np.zeros((len(ids), int(new_embedder.dim)), np.float32)
    if ids:
        position = {i: k for k, i in enumerate(ids)}
        uri = collection.store.uri
        if "://" not in uri:
            uri = str(Path(uri).expanduser().resolve())
        with (
            ray_session(options, timing) as plan,
            tqdm(
                total=len(ids), desc="re-embedding on Ray", unit="img", disable=not progress
            ) as bar,
        ):
            timing.workers, timing.gpus_per_worker = plan.workers, plan.gpus
            results = _map(
                [{"id": i} for i in ids],
                _StoredWorker,
                plan,
                batch_size=options.batch_size,
                uri=uri,
                model=ModelSource.of(model),
                fingerprint=new_embedder.fingerprint,
            )
            for out in results.iter_batches(batch_size=None, batch_format="numpy"):
                vectors[[position[str(i)] for i in out["id"]]] = out["vector"]
                bar.update(timing.saw(out))
    timing.embedded = timing.photos
    began = time.perf_counter()
    count = collection.reindex_embedded(model, ids, vectors, embedder=new_embedder)
    timing.commit_s, timing.commits = time.perf_counter() - began, 1
    timing.total_s = time.perf_counter() - started
    return count
