"""``shellid enroll --ray``: photos read, taken in and embedded on a pool of Ray actors;
the driver commits them per species with the local path's duplicate rules."""

from __future__ import annotations

import hashlib
import io
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from embedder.intake import ImageIntakeError, IntakeLimits

from ...names import canonical_species
from ...results import EnrollReport
from ..collection import Collection
from ..imaging import PreparedImage, prepare_image, read_input
from .cluster import (
    ModelSource,
    RayClusterError,
    RayOptions,
    RunTiming,
    ray_session,
    run_on_actors,
    stamped,
    worker_embedder,
)


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
        self.embedder = worker_embedder(model, fingerprint, batch_size, cpus)
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
        return stamped(
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
    from ..collection import enrolled_from, folder_batches

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


class _Enrolment:
    """One run of :func:`enroll_on_ray`: the jobs' rows, their reports, and what came back
    from the workers and waits for a commit."""

    def __init__(self, collection: Collection, jobs: Sequence[EnrolJob], timing: RunTiming):
        self.collection, self.jobs, self.timing = collection, jobs, timing
        self.names = [canonical_species(job.species) for job in jobs]
        self.reports = [EnrollReport(species=name) for name in self.names]
        self.pending = [_Pending(left=len(job.files)) for job in jobs]
        self.where = [(j, k) for j, job in enumerate(jobs) for k in range(len(job.files))]

    def items(self) -> list[dict[str, Any]]:
        """What the workers are given: a row number, a resolved path and its species."""
        return [
            {
                "row": r,
                "path": str(self.jobs[j].files[k].expanduser().resolve()),
                "species": self.names[j],
            }
            for r, (j, k) in enumerate(self.where)
        ]

    def take(self, out: dict[str, np.ndarray], commit_photos: int) -> None:
        """A batch of the workers' output into the reports and pending commits; a job is
        committed once all its photos are back or ``commit_photos`` wait."""
        touched: set[int] = set()
        for n, row in enumerate(out["row"]):
            j, k = self.where[int(row)]
            job, pending = self.jobs[j], self.pending[j]
            if _take(out, n, job.files[k].name, pending, self.reports[j]):
                pending.groups.append(job.groups[k] if job.groups is not None else "")
                self.timing.embedded += 1
            pending.left -= 1
            touched.add(j)
        for j in sorted(touched):
            if self.pending[j].left == 0 or len(self.pending[j].photos) >= commit_photos:
                self.commit(j)

    def commit(self, j: int) -> None:
        """Job ``j``'s pending photos into the store (not calibrated: that is done once)."""
        batch, job, began = self.pending[j], self.jobs[j], time.perf_counter()
        if not batch.photos:
            return
        part = self.collection.enroll_embedded(
            self.names[j],
            batch.photos,
            np.stack(batch.vectors),
            taxonomy=job.taxonomy,
            source=job.source,
            groups=batch.groups if job.groups is not None else None,
            calibrate=False,
        )
        self.timing.commit_s += time.perf_counter() - began
        self.timing.commits += 1
        report = self.reports[j]
        report.added += part.added
        report.specimen_ids += part.specimen_ids
        report.duplicates += part.duplicates
        report.refused.update(part.refused)
        batch.photos, batch.vectors, batch.groups = [], [], []

    def finish(self) -> list[EnrollReport]:
        """Calibrate once for the whole run (also when a killed run committed but never
        calibrated) and total each report."""
        lost = sum(p.left for p in self.pending)
        if lost:  # Ray Data returns every row; this would be a bug, not a photo's fault
            raise RayClusterError(f"{lost} photo(s) did not come back from the workers; run again")
        collection = self.collection
        info = collection.store.info()
        if any(r.added for r in self.reports) or (
            len(collection.catalogue) and info.get("calibrated_version") != collection.store.version
        ):
            collection.index.calibrate()
        identifier = collection.index.identifier
        counts = identifier.counts() if identifier is not None else {}
        for name, report in zip(self.names, self.reports, strict=True):
            report.total = counts.get(name, 0)
        return self.reports


def enroll_on_ray(
    collection: Collection,
    jobs: Sequence[EnrolJob],
    options: RayOptions,
    *,
    progress: bool = True,
    timing: RunTiming | None = None,
) -> list[EnrollReport]:
    """Enrol ``jobs`` on Ray (one report per job, as :meth:`Collection.enroll_folder`): the
    workers read, take in and embed the photos (with the runtime and cache folder of the
    collection's settings); the driver commits them in commits of at most
    ``options.commit_photos`` photos of one species, and calibrates once at the end. Photos
    already enrolled under the same species are skipped unread (``duplicates``)."""
    timing = timing if timing is not None else RunTiming()
    started = time.perf_counter()
    timing.started_at = time.time()
    embedder = collection.embedder  # the model, checked against the store, before Ray starts
    run = _Enrolment(collection, jobs, timing)
    items = run.items()
    if items:
        with (
            ray_session(options, timing) as plan,
            tqdm(
                total=len(items), desc="enrolling on Ray", unit="img", disable=not progress
            ) as bar,
        ):
            timing.workers, timing.gpus_per_worker = plan.workers, plan.gpus
            results = run_on_actors(
                items,
                _EnrolWorker,
                plan,
                batch_size=options.batch_size,
                model=ModelSource.of(collection.model_path or None, collection.settings),
                fingerprint=embedder.fingerprint,
                limits=collection.settings.intake_limits(),
                known=_known_photos(collection),
            )
            for out in results.iter_batches(batch_size=None, batch_format="numpy"):
                run.take(out, options.commit_photos)
                bar.update(timing.saw(out))
    reports = run.finish()
    timing.total_s = time.perf_counter() - started
    return reports
