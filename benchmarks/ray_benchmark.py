"""Enrolment throughput on Ray (1 and 2 workers) against the single-process path, and a paper
estimate for a 130k-photo collection on N workers / GPUs.

    .venv/bin/python benchmarks/ray_benchmark.py [--data ../shared/datasets/shells-zhang8]

1. Single process: ``Collection.enroll_folder`` into a fresh store (what ``shellid enroll``
   does; the embedder uses every core of this machine).
2. Ray: ``enroll_on_ray`` (what ``shellid enroll --ray`` does) into a fresh store with 1 and
   2 workers of 1 CPU each, on one local Ray started once (its start time is printed apart:
   on a real cluster Ray is already running). Wall time includes the workers' start and
   model loading; the steady rate counts from the first batch back to the end.
3. Per core, in this process: the intake (read, decode, stored copy, thumbnail) and the
   embedding of one photo, so the estimate can say which one bounds a GPU worker.
4. The estimate for ``--photos`` photos (default 130,000): CPU workers at the measured
   per-worker steady rate, N of them on N dedicated cores scaling linearly (``--efficiency``;
   the 2-worker efficiency measured here is printed beside it, but on 2 cores shared with
   the driver and Ray's daemons it measures this machine more than Ray); GPU workers at
   ``--cpus-per-gpu`` cores of intake each (the GPU's own rate, ``--gpu-rate``, is an
   assumption: no GPU here); a second column for 12-MP phone photos, which cost
   ``NORMAL_PHOTO_MS`` more to decode than these 320x240 ones. Ray start and worker warm-up
   are added as measured; the driver's commits (one per species, ``--photos-per-species``)
   at the measured cost per commit overlap the embedding; the final calibration is not
   included.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

from index.config import IndexSettings

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "datasets" / "shells-zhang8"


def single_process(data: Path, work: Path) -> tuple[float, int]:
    """Seconds and photos of ``Collection.enroll_folder`` into a fresh store."""
    from index.workflows.collection import Collection

    collection = Collection.open(work / "single", settings=IndexSettings.load())
    collection.embedder  # noqa: B018 - the model loads before the clock starts, as on Ray
    started = time.perf_counter()
    reports = collection.enroll_folder(data, progress=False)
    return time.perf_counter() - started, sum(r.added for r in reports)


def on_ray(data: Path, work: Path, workers: int, address: str):
    """The :class:`RunTiming` of ``enroll_on_ray`` with ``workers`` 1-CPU workers."""
    from index.workflows.collection import Collection
    from index.workflows.ray.cluster import RayOptions, RunTiming
    from index.workflows.ray.enrol import enroll_on_ray, folder_jobs

    collection = Collection.open(work / f"ray{workers}", settings=IndexSettings.load())
    collection.embedder  # noqa: B018
    timing = RunTiming()
    options = RayOptions(address=address, workers=workers, cpus_per_worker=1)
    reports = enroll_on_ray(collection, folder_jobs(data), options, progress=False, timing=timing)
    assert sum(r.added for r in reports) == timing.embedded
    return timing


def per_core(data: Path, limit: int = 48) -> dict[str, float]:
    """Milliseconds per photo on one core: the intake and the embedding."""
    import torch

    from embedder import Embedder, load_model
    from index.workflows.imaging import prepare_image

    torch.set_num_threads(1)
    files = sorted(data.glob("*/*.jpg"))[:limit]
    blobs = [(f.name, f.read_bytes()) for f in files]
    started = time.perf_counter()
    prepared = [prepare_image(name, blob) for name, blob in blobs]
    intake = (time.perf_counter() - started) / len(blobs) * 1000
    embedder = Embedder(load_model(None), num_workers=0, threads=1)
    embedder.embed_images([p.image for p in prepared[:4]])  # warm-up (ONNX export, caches)
    started = time.perf_counter()
    embedder.embed_images([p.image for p in prepared])
    embed = (time.perf_counter() - started) / len(prepared) * 1000
    return {"intake_ms": intake, "embed_ms": embed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="DATA/<species>/*.jpg")
    parser.add_argument("--photos", type=int, default=130_000, help="collection to estimate")
    parser.add_argument(
        "--photos-per-species",
        type=int,
        default=20,
        help="photos per species in the estimated collection (one store commit each)",
    )
    parser.add_argument(
        "--efficiency",
        type=float,
        default=1.0,
        help="scaling efficiency of N workers on N dedicated cores (default: linear)",
    )
    parser.add_argument("--cpus-per-gpu", type=int, default=8, help="cores per GPU worker")
    parser.add_argument(
        "--gpu-rate",
        type=float,
        default=2000.0,
        help="assumed photos/s one GPU embeds (224 px, batch 32; not measured here)",
    )
    args = parser.parse_args()
    if not args.data.is_dir():
        raise SystemExit(f"{args.data}: no such folder (the real photos are in ../shared)")
    from embedder.intake import NORMAL_PHOTO_MS
    from embedder.runtime import usable_cores
    from index.workflows.ray.cluster import LOCAL_TEMP_DIR, RayOptions, RunTiming, ray_session

    print(
        f"machine: {usable_cores()} cores, {platform.processor() or platform.machine()}, "
        f"load average {os.getloadavg()[0]:.1f}; photos: {args.data}"
    )
    with tempfile.TemporaryDirectory(prefix="shellid-ray-bench-") as folder:
        work = Path(folder)
        seconds, photos = single_process(args.data, work)
        base = photos / seconds
        started = RunTiming()
        with ray_session(RayOptions(workers=2), started):
            import ray

            address = ray.get_runtime_context().gcs_address
            runs = {w: on_ray(args.data, work, w, address) for w in (1, 2)}
    core = per_core(args.data)

    print(f"\nlocal Ray started in {started.connect_s:.1f} s ({LOCAL_TEMP_DIR}; not in the rows)")
    print(f"{'path':<26}{'wall s':>8}{'photos/s':>10}{'ratio':>7}{'steady/s':>10}{'ratio':>7}")
    print(f"{'single process (baseline)':<26}{seconds:>8.1f}{base:>10.1f}{1:>7.2f}{'':>10}{'':>7}")
    for workers, run in runs.items():
        wall = run.total_s - run.connect_s
        rate = run.photos / wall
        print(
            f"{f'Ray, {workers} worker(s)':<26}{wall:>8.1f}{rate:>10.1f}{rate / base:>7.2f}"
            f"{run.steady_rate:>10.1f}{run.steady_rate / base:>7.2f}"
        )
    one, two = runs[1], runs[2]
    print(
        f"(Ray rows: wall = workers' start and model loading {one.warmup_s:.1f} s / "
        f"{two.warmup_s:.1f} s + the work; steady = photos / the span the workers worked; "
        f"store commits: {one.commits} taking {one.commit_s:.2f} s / {two.commits} taking "
        f"{two.commit_s:.2f} s, on the driver)"
    )
    print(
        f"per core: intake {core['intake_ms']:.1f} ms, embedding {core['embed_ms']:.1f} ms per "
        f"photo (these are 320x240 JPEGs; a 12-MP phone JPEG adds ≈ {NORMAL_PHOTO_MS:.0f} ms "
        "of decoding, embedder.intake.NORMAL_PHOTO_MS)"
    )

    # ------------------------------------------------------------------ paper estimate
    per_worker = one.steady_rate
    measured = two.steady_rate / (2 * per_worker)
    efficiency = args.efficiency
    fixed = started.connect_s + max(one.warmup_s, two.warmup_s)
    per_commit = (one.commit_s + two.commit_s) / (one.commits + two.commits)
    commits = -(-args.photos // args.photos_per_species) * per_commit
    print(
        f"\nestimate for {args.photos:,} photos (assumptions: {per_worker:.1f} photos/s per "
        f"worker, as measured with 1 worker; N workers on N dedicated cores at {efficiency:.0%} "
        f"scaling efficiency (--efficiency; measured here with 2 workers: {measured:.0%}, on "
        f"{usable_cores()} cores shared with the driver, Ray's daemons and other jobs); Ray "
        f"start and warm-up {fixed:.0f} s as here; one commit per species of "
        f"{args.photos_per_species} photos at {per_commit * 1000:.0f} ms each = "
        f"{_duration(commits)} on the driver, overlapping the embedding, so the time is the "
        "larger of the two; the final calibration not included):"
    )
    print(f"{'workers':<20}{'photos/s':>10}{'time':>9}{'phone photos/s':>16}{'time':>9}")
    rows: list[tuple[str, float, float]] = []
    for n in (1, 4, 16, 64):
        scale = n * (efficiency if n > 1 else 1.0)
        phone = scale * 1000 / (1000 / per_worker + NORMAL_PHOTO_MS)  # each photo decodes longer
        rows.append((f"{n} CPU worker(s)", scale * per_worker, phone))
    intake = args.cpus_per_gpu * 1000 / core["intake_ms"]
    phone_intake = args.cpus_per_gpu * 1000 / (core["intake_ms"] + NORMAL_PHOTO_MS)
    for gpus in (1, 4, 8):
        rows.append(
            (
                f"{gpus} GPU worker(s)",
                gpus * min(intake, args.gpu_rate),
                gpus * min(phone_intake, args.gpu_rate),
            )
        )
    for label, rate, phone in rows:
        print(
            f"{label:<20}{rate:>10.0f}{_duration(fixed + max(args.photos / rate, commits)):>9}"
            f"{phone:>16.0f}{_duration(fixed + max(args.photos / phone, commits)):>9}"
        )
    print(
        f"(a GPU worker = {args.cpus_per_gpu} cores of intake at {core['intake_ms']:.1f} ms/photo "
        f"({intake:.0f} photos/s; {phone_intake:.0f} for phone photos) feeding a GPU assumed "
        f"to embed {args.gpu_rate:.0f} photos/s: whichever is slower bounds it; more CPUs per "
        "GPU worker with --ray-cpus)"
    )


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


if __name__ == "__main__":
    main()
