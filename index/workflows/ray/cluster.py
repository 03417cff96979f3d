"""What every Ray job shares: the address and options, starting or joining a cluster
(:func:`ray_session`), the actor plan, an actor pool over a list of items
(:func:`run_on_actors`), and the model as it travels to the workers."""

from __future__ import annotations

import logging
import re
import socket
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Self

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from embedder.settings import EmbedderSettings

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


class RayOptions(BaseModel):
    """How a job runs on Ray. ``workers``: actors (default: one per GPU where the cluster has
    GPUs, else one per ``cpus_per_worker`` CPUs); ``gpus_per_worker``: default 1 where the
    cluster has GPUs, else 0; ``commit_photos``: photos per store commit; ``temp_dir``: the
    sockets and logs of a local Ray. A value that cannot work is a pydantic
    ``ValidationError`` (a ``ValueError``) with the one-line reason below."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    address: str = "local"
    workers: int | None = None
    cpus_per_worker: float = 1.0
    gpus_per_worker: float | None = None
    batch_size: int = DEFAULT_BATCH
    commit_photos: int = DEFAULT_COMMIT
    temp_dir: str = LOCAL_TEMP_DIR

    @model_validator(mode="after")
    def _usable(self) -> Self:
        check_address(self.address)
        if self.workers is not None and self.workers < 1:
            raise ValueError("Ray workers must be ≥ 1")
        if self.cpus_per_worker <= 0:
            raise ValueError("CPUs per Ray worker must be > 0")
        if self.gpus_per_worker is not None and self.gpus_per_worker < 0:
            raise ValueError("GPUs per Ray worker must be ≥ 0")
        if self.batch_size < 1 or self.commit_photos < 1:
            raise ValueError("the Ray batch size and photos per commit must be ≥ 1")
        return self


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


def stamped(result: dict[str, np.ndarray], began: float) -> dict[str, np.ndarray]:
    """A worker's output batch with when it began and ended (wall clock, for RunTiming)."""
    n = len(next(iter(result.values())))
    return result | {"began": np.full(n, began), "ended": np.full(n, time.time())}


@dataclass
class Plan:
    workers: int
    cpus: float
    gpus: float


@contextmanager
def ray_session(options: RayOptions, timing: RunTiming | None = None) -> Iterator[Plan]:
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


def _plan(ray: ModuleType, options: RayOptions) -> Plan:
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
    return Plan(workers=workers, cpus=options.cpus_per_worker, gpus=gpus)


def run_on_actors(
    items: list[dict[str, Any]], worker: type, plan: Plan, batch_size: int, **kwargs: Any
):
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


class ModelSource(BaseModel):
    """A model as it travels to the workers: a packaged backbone name (or None, the frozen
    default), or a MODEL.pt's bytes (so workers need no shared file system), with the runtime
    and cache folder of the settings the command loaded (``SHELLID_RUNTIME``,
    ``SHELLID_CACHE_DIR``), so a worker embeds as the driver would."""

    model_config = ConfigDict(frozen=True)

    name: str | None
    data: bytes | None = Field(default=None, repr=False)
    runtime: str = "auto"
    cache_dir: Path | None = None

    @classmethod
    def of(cls, spec: str | Path | None, settings: EmbedderSettings | None = None) -> ModelSource:
        """``spec`` (a MODEL.pt path is read into ``data``) with ``settings``' runtime and
        cache folder (None: ``auto`` and the standard folder)."""
        where = settings.embedder_options() if settings is not None else {}
        if spec is not None and Path(spec).expanduser().is_file():
            return cls(name=str(spec), data=Path(spec).expanduser().read_bytes(), **where)
        return cls(name=None if spec is None else str(spec), **where)


def worker_embedder(source: ModelSource, fingerprint: str, batch_size: int, cpus: float) -> Any:
    """The model on this worker (on its GPU when Ray gave it one), as an
    ``embedder.Embedder`` using ``cpus`` threads and the source's runtime and cache folder;
    refuses a model other than the driver's."""
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
    embedder = Embedder(
        model,
        batch_size=batch_size,
        num_workers=threads,
        threads=threads,
        runtime=source.runtime,
        cache_dir=source.cache_dir,
    )
    if embedder.fingerprint != fingerprint:
        raise RayClusterError(
            f"the worker's model {embedder.fingerprint} is not the driver's {fingerprint}"
        )
    return embedder
