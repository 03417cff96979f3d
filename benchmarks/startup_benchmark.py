"""Start-up benchmark (issue 11 part 3): how long until a store of synthetic vectors answers,
from a persisted snapshot against rebuilding everything, in one run.

For each size (default 10^5 and 10^6 specimen photos) a synthetic store is generated once and
cached under ``/tmp/shellid-startup/`` (keyed by size, dimension, species and seed): unit
vectors clustered into species, two views per specimen, tiny constant image bytes, thresholds
calibrated on a sample and recorded in ``store_info`` as ``Collection.calibrate`` does.

Measured per size, in fresh state each time (the page cache is warm for both):

* **rebuild**: what start-up did before snapshots: read every row, build the identifier and
  its FAISS index, refit the whitening (``index.sync.rebuild``);
* **snapshot**: save one (not timed as ready time), then load it and check it against the
  store (``index.sync.load_state``);
* **catch-up**: 1,000 rows written by "another process" after the snapshot, applied by
  difference (``index.sync.catch_up``), against a full reload of the grown store; then
  the whitening refit that follows it (off the query path in a service); then a second
  1,000 rows (the steady state).

Dimension: 1280 (the frozen default backbone, and a trained head by default) up to 2*10^5
vectors; 256 above (``--dim`` to force one): at 10^6 x 1280 the identifier's copies of the
vectors alone take about 15-20 GB, more than this shared 24 GB machine can give.

    python benchmarks/startup_benchmark.py [--sizes 100000,1000000] [--dim D] [--json FILE]
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from index.classifier import VectorIdentifier  # noqa: E402
from index.config import IdentifierConfig  # noqa: E402
from index.rows import SpecimenRows  # noqa: E402
from index.snapshot import SnapshotKey, Snapshots  # noqa: E402
from index.store import SpecimenStore  # noqa: E402
from index.sync import catch_up, load_state, rebuild, settle  # noqa: E402

CACHE = Path("/tmp/shellid-startup")
FINGERPRINT = "synthetic0000000"
VIEWS = 2
CHUNK = 50_000
GOAL_READY_S = 10.0


def default_dim(n: int) -> int:
    """1280-d (the default model's vectors) while the copies fit in memory, else 256-d."""
    return 1280 if n <= 200_000 else 256


def species_of(s: int) -> str:
    return f"Genus{s // 4:04d}_species{s:05d}"


def synthetic_rows(
    store: SpecimenStore, start: int, n: int, dim: int, n_species: int, seed: int
) -> object:
    """An arrow table of ``n`` synthetic rows numbered from ``start`` (deterministic)."""
    centres = np.random.default_rng(seed).normal(size=(n_species, dim)).astype(np.float32)
    rng = np.random.default_rng([seed, start])
    numbers = np.arange(start, start + n)
    specimen = numbers // VIEWS
    species = (specimen * 7919) % n_species
    specimen_offset = np.random.default_rng([seed, 1, int(specimen[0])]).normal(
        size=(int(specimen[-1] - specimen[0]) + 1, dim)
    )
    vectors = (
        centres[species]
        + 0.9 * specimen_offset[specimen - specimen[0]].astype(np.float32)
        + 0.3 * rng.normal(size=(n, dim)).astype(np.float32)
    )
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    names = [species_of(int(s)) for s in species]
    return store.make_rows(
        {
            "id": [f"{i:016x}" for i in numbers],
            "species": names,
            "genus": [name.split("_")[0] for name in names],
            "family": [f"Family{int(s) // 40:03d}" for s in species],
            "region": [""] * n,
            "extra": ["{}"] * n,
            "specimen": [f"s{int(p)}" for p in specimen],
            "source": ["synthetic"] * n,
            "filename": [f"{i}.jpg" for i in numbers],
            "sha256": [hashlib.sha256(str(i).encode()).hexdigest() for i in numbers],
            "fingerprint": [FINGERPRINT] * n,
            "thumbnail": [b"t"] * n,
            "image": [b"i"] * n,
            "width": [640] * n,
            "height": [480] * n,
        },
        vectors,
    )


def synthetic_store(n: int, dim: int, n_species: int | None = None, seed: int = 0) -> SpecimenStore:
    """The cached synthetic store of ``n`` rows (generated on first use)."""
    n_species = n_species or max(100, min(5000, n // 200))
    path = CACHE / f"store-n{n}-d{dim}-s{n_species}-seed{seed}"
    done = path / "READY"
    if not done.exists():
        shutil.rmtree(path, ignore_errors=True)
        started = time.perf_counter()
        store = SpecimenStore(path, compact_every=10**9)
        store.ensure_table(dim)
        for start in range(0, n, CHUNK):
            store.add(synthetic_rows(store, start, min(CHUNK, n - start), dim, n_species, seed))
        store.upkeep.compact()
        # thresholds as SpecimenIndex.calibrate records them (fitted on a sample: the values do
        # not change the start-up time)
        sample = store.select(["species", "id", "specimen", "vector"], "id < '0000000000004e20'")
        flat = sample["vector"].combine_chunks().flatten().to_numpy()
        vectors = np.asarray(flat).reshape(-1, dim)
        identifier = VectorIdentifier.fit(
            SpecimenRows(
                vectors,
                sample["species"].to_pylist(),
                ids=sample["id"].to_pylist(),
                groups=sample["specimen"].to_pylist(),
            )
        )
        store.write_info(
            fingerprint=FINGERPRINT,
            model_name="synthetic",
            model_path="",
            dim=dim,
            thresholds=json.loads(identifier.calibrated_thresholds.model_dump_json()),
            calibrated_version=store.latest_version(),
            calibration_config=IdentifierConfig().model_dump(mode="json"),
        )
        done.write_text(f"{time.perf_counter() - started:.1f} s\n")
        print(f"generated {path} in {time.perf_counter() - started:.0f} s", flush=True)
    return SpecimenStore(path, create=False, compact_every=10**9)


def _probes(store: SpecimenStore, dim: int, count: int = 40) -> np.ndarray:
    """Query vectors: stored rows nudged, and random directions."""
    table = store.select(["vector"], "id < '0000000000000100'")
    near = np.asarray(table["vector"].combine_chunks().flatten().to_numpy()).reshape(-1, dim)
    rng = np.random.default_rng(7)
    near = near[: count // 2] + 0.02 * rng.normal(size=(min(count // 2, len(near)), dim))
    far = rng.normal(size=(count // 2, dim))
    both = np.concatenate([near, far]).astype(np.float32)
    return both / np.linalg.norm(both, axis=1, keepdims=True)


def _agreement(a: VectorIdentifier, b: VectorIdentifier, probes: np.ndarray) -> str:
    """Same decision and top species on how many probes, and the largest score gap."""
    same, gap = 0, 0.0
    for q in probes:
        x, y = a.identify(q[None, :]), b.identify(q[None, :])
        same += (x.decision, x.species, x.candidates[0].species) == (
            y.decision,
            y.species,
            y.candidates[0].species,
        )
        gap = max(gap, abs(x.candidates[0].score - y.candidates[0].score))
        gap = max(gap, abs(x.ood_score - y.ood_score))
    return f"{same}/{len(probes)} same answers, max score gap {gap:.1e}"


def _fmt(seconds: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.2f}" for k, v in seconds.items())


def _ready_in_new_process(uri: str, dim: int) -> float:
    """Seconds from interpreter start to a loaded identifier, in a fresh process."""
    code = (
        "import time; t = time.perf_counter()\n"
        "import sys; sys.path.insert(0, sys.argv[1])\n"
        "from index.config import IdentifierConfig\n"
        "from index.snapshot import Snapshots\nfrom index.sync import load_state\n"
        "from index.store import SpecimenStore\n"
        "state = load_state(SpecimenStore(sys.argv[2], create=False), int(sys.argv[3]), "
        "sys.argv[4], IdentifierConfig(), None, Snapshots(sys.argv[2]))\n"
        "assert state.source == 'snapshot', state.source\n"
        "print(time.perf_counter() - t)\n"
    )
    args = [sys.executable, "-c", code, str(REPO), uri, str(dim), FINGERPRINT]
    return float(subprocess.run(args, check=True, capture_output=True, text=True).stdout)


def run_size(n: int, dim: int, added: int) -> dict[str, Any]:
    """All measurements for one store size (on a copy of the cached store)."""
    cached = synthetic_store(n, dim)
    config = IdentifierConfig()
    work = Path(tempfile.mkdtemp(prefix="shellid-startup-"))
    result: dict[str, Any] = {"n": n, "dim": dim}
    try:
        shutil.copytree(cached.uri, work / "store", ignore=shutil.ignore_patterns("_snapshots"))
        uri = str(work / "store")
        probes = _probes(cached, dim)

        # ---- before snapshots: every index rebuilt from the store
        gc.collect()
        started = time.perf_counter()
        phases: dict[str, float] = {}
        rebuilt, sha, version = rebuild(
            SpecimenStore(uri, create=False), dim, config, None, None, phases
        )
        result["rebuild_s"] = time.perf_counter() - started
        result["rebuild_phases"] = phases
        kind = rebuilt.rows.index.kind
        print(f"  rebuild: {result['rebuild_s']:.1f} s ({_fmt(phases)}); index {kind}", flush=True)

        # ---- the snapshot (written at clean shutdown or after a calibration)
        snapshots = Snapshots(uri)
        key = SnapshotKey.of(FINGERPRINT, dim, config, None, version)
        started = time.perf_counter()
        assert snapshots.save(rebuilt, key, sha)
        result["save_s"] = time.perf_counter() - started
        size = Path(snapshots.path(key)).stat().st_size
        result["snapshot_mb"] = size / 2**20
        print(f"  snapshot saved in {result['save_s']:.1f} s, {size / 2**20:.0f} MB", flush=True)

        # ---- ready from the snapshot in a new process (a server starting), imports included
        fresh = [_ready_in_new_process(uri, dim) for _ in range(2)]
        result["snapshot_new_process_s"] = min(fresh)
        print(f"  ready from snapshot in a new process: {' / '.join(f'{t:.2f}' for t in fresh)} s")

        # ---- ready from the snapshot (checked against the store's ids), in this process
        gc.collect()
        started = time.perf_counter()
        state = load_state(
            SpecimenStore(uri, create=False), dim, FINGERPRINT, config, None, Snapshots(uri)
        )
        result["snapshot_s"] = time.perf_counter() - started
        assert state.source == "snapshot", state.source
        first = time.perf_counter()
        state.identifier.identify(probes[:1])
        result["first_query_ms"] = (time.perf_counter() - first) * 1e3
        result["snapshot_phases"] = state.seconds
        result["agreement"] = _agreement(state.identifier, rebuilt, probes)
        print(
            f"  ready from snapshot: {result['snapshot_s']:.2f} s ({_fmt(state.seconds)}); "
            f"first query {result['first_query_ms']:.1f} ms; vs rebuild {result['agreement']}",
            flush=True,
        )
        del rebuilt
        gc.collect()

        # ---- another process writes `added` rows; catch up by difference vs a full reload
        writer = SpecimenStore(uri, create=False, compact_every=10**9)
        n_species = max(100, min(5000, n // 200))
        writer.add(synthetic_rows(writer, n, added, dim, n_species, 0))
        new_version = writer.latest_version()
        identifier = state.identifier
        started = time.perf_counter()
        difference = catch_up(identifier, SpecimenStore(uri, create=False))
        result["catch_up_s"] = time.perf_counter() - started
        result["catch_up_phases"] = difference.seconds
        assert len(difference.added_ids) == added and difference.to_version == new_version
        # the writer calibrates after its write and records the thresholds (as
        # SpecimenIndex.calibrate does); the reader then refits only its whitening
        writer.write_info(
            thresholds=json.loads(identifier.calibrated_thresholds.model_dump_json()),
            calibrated_version=new_version,
        )
        started = time.perf_counter()
        settle(identifier, SpecimenStore(uri, create=False), new_version)
        result["settle_s"] = time.perf_counter() - started
        print(
            f"  catch-up of {added} rows: {result['catch_up_s']:.2f} s "
            f"({_fmt(difference.seconds)}); whitening refit after it {result['settle_s']:.1f} s",
            flush=True,
        )
        # a second write: the steady state (the first catch-up after start-up also moved the
        # vectors into a buffer with room to grow)
        writer.add(synthetic_rows(writer, n + added, added, dim, n_species, 0))
        started = time.perf_counter()
        again = catch_up(identifier, SpecimenStore(uri, create=False))
        result["catch_up_again_s"] = time.perf_counter() - started
        print(
            f"  next catch-up of {added} rows: {result['catch_up_again_s']:.2f} s "
            f"({_fmt(again.seconds)})",
            flush=True,
        )
        writer.write_info(calibrated_version=writer.latest_version())  # as its writer would
        settle(identifier, SpecimenStore(uri, create=False), writer.latest_version())
        gc.collect()
        started = time.perf_counter()
        reloaded, _, _ = rebuild(SpecimenStore(uri, create=False), dim, config)
        result["reload_s"] = time.perf_counter() - started
        result["catch_up_agreement"] = _agreement(identifier, reloaded, probes)
        print(
            f"  full reload of the grown store: {result['reload_s']:.1f} s; caught-up vs "
            f"reloaded: {result['catch_up_agreement']}",
            flush=True,
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--dim", type=int, default=None, help="default: 1280, 256 above 2e5")
    parser.add_argument("--added", type=int, default=1000, help="rows for the catch-up")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    results = []
    for n in [int(float(x)) for x in args.sizes.split(",")]:
        dim = args.dim or default_dim(n)
        print(f"{n:,} specimen photos, {dim}-d:", flush=True)
        results.append(run_size(n, dim, args.added))
    print()
    print(
        "| photos | dim | rebuild s | snapshot s (new process incl. imports / in process) "
        "| ratio (in process) "
        "| catch-up 1k s (first / next) | full reload s | ratio (next) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['n']:,} | {r['dim']} | {r['rebuild_s']:.1f} | "
            f"{r['snapshot_new_process_s']:.2f} / {r['snapshot_s']:.2f} | "
            f"{r['rebuild_s'] / r['snapshot_s']:.0f}x | {r['catch_up_s']:.2f} / "
            f"{r['catch_up_again_s']:.2f} | {r['reload_s']:.1f} | "
            f"{r['reload_s'] / r['catch_up_again_s']:.0f}x |"
        )
    worst = max(r["snapshot_new_process_s"] for r in results)
    print(
        f"goal: ready in <= {GOAL_READY_S:.0f} s: {'met' if worst <= GOAL_READY_S else 'NOT met'} "
        f"(slowest {worst:.2f} s)"
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
