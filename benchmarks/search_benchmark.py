"""Search latency and recall of the specimen index (index.search.VectorIndex) at 10^4, 10^5 and
10^6 vectors: the approximate index it switches to above ``ann_threshold`` versus exact
search, on this machine, in the same run.

    .venv/bin/python benchmarks/search_benchmark.py [--sizes 10000,100000,1000000] [--dim 256]

Vectors are synthetic clustered unit vectors (``--clusters`` Gaussian clusters on the sphere),
queries are fresh draws from the same clusters. Latency is per single query (batch of one, as
the service searches), p50 and p99 over ``--queries`` queries; recall@10 is the share of the
exact top 10 the approximate index returns. Memory: the index keeps its own float32 copy of the
vectors besides FAISS's (2 x n x dim x 4 bytes; 2 GB at 10^6 x 256).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from index.search import VectorIndex, default_nlist, default_nprobe


def clustered_unit_vectors(
    n: int,
    dim: int,
    clusters: int,
    rng: np.random.Generator,
    centres: np.ndarray | None = None,
    noise: float = 0.9,
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` unit vectors around ``clusters`` random centres (spread ~ inter-centre distance)."""
    if centres is None:
        centres = rng.standard_normal((clusters, dim)).astype(np.float32)
        centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    out = np.empty((n, dim), np.float32)
    for start in range(0, n, 100_000):
        m = min(100_000, n - start)
        block = centres[rng.integers(len(centres), size=m)]
        block += rng.standard_normal((m, dim)).astype(np.float32) * (noise / np.sqrt(dim))
        out[start : start + m] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out, centres


def latencies(index: VectorIndex, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-query latency (ms) and the ids found, one query at a time."""
    times = np.empty(len(queries))
    found = np.empty((len(queries), k), np.int64)
    index.search(queries[:1], k)  # warm-up
    for i, q in enumerate(queries):
        start = time.perf_counter()
        _, ids = index.search(q[None, :], k)
        times[i] = (time.perf_counter() - start) * 1e3
        found[i] = ids[0]
    return times, found


def row(
    n: int,
    label: str,
    index: VectorIndex,
    build: float,
    queries: np.ndarray,
    truth: np.ndarray,
    p50_exact: float,
    k: int,
) -> None:
    """Measure ``index`` and print its line of the table."""
    ms, found = latencies(index, queries, k)
    p50 = np.percentile(ms, 50)
    print(
        f"{n:>9,} {label:<36} {build:>8.1f} {p50:>8.2f} {np.percentile(ms, 99):>8.2f} "
        f"{p50_exact / p50:>12.1f}x {recall_at(found, truth):>10.3f}"
    )


def recall_at(found: np.ndarray, truth: np.ndarray) -> float:
    return float(
        np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth, strict=True)])
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument(
        "--dim",
        type=int,
        default=256,
        help="vector size (default 256; the "
        "frozen EfficientNet-Lite0 gives 1280, trained heads less)",
    )
    parser.add_argument("--clusters", type=int, default=1000)
    parser.add_argument(
        "--noise",
        type=float,
        default=0.9,
        help="spread around the cluster centres (norm of the noise; higher = harder)",
    )
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument(
        "--hnsw-max",
        type=int,
        default=100_000,
        help="largest size to also build HNSW32 for (slow to build)",
    )
    parser.add_argument(
        "--nprobe",
        default="0.25,1",
        help="also measure IVF with nprobe fixed at these multiples of nlist/16 (min 32)",
    )
    args = parser.parse_args(argv)

    rng = np.random.default_rng(0)
    print(
        f"dim {args.dim}, {args.clusters} clusters (noise {args.noise}), {args.queries} single "
        f"queries, top-{args.k}; "
        f"exact = IndexFlatIP (IDMap2), baseline of every ratio"
    )
    header = (
        f"{'vectors':>9} {'index':<36} {'build s':>8} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'speed-up p50':>13} {'recall@10':>10}"
    )
    print(header)
    print("-" * len(header))
    for n in (int(s) for s in args.sizes.split(",")):
        vectors, centres = clustered_unit_vectors(n, args.dim, args.clusters, rng, noise=args.noise)
        queries, _ = clustered_unit_vectors(
            args.queries, args.dim, args.clusters, rng, centres, noise=args.noise
        )
        ids = np.arange(n, dtype=np.int64)

        start = time.perf_counter()
        exact = VectorIndex(args.dim, ann_threshold=n + 1)
        exact.add(vectors, ids)
        build = time.perf_counter() - start
        exact_ms, truth = latencies(exact, queries, args.k)
        p50_exact = np.percentile(exact_ms, 50)
        print(
            f"{n:>9,} {'exact (flat)':<36} {build:>8.1f} {p50_exact:>8.2f} "
            f"{np.percentile(exact_ms, 99):>8.2f} {'1.00x':>13} {1.0:>10.3f}"
        )
        del exact

        # the default: IVF with its search breadth tuned to recall 0.95 at build time
        start = time.perf_counter()
        ivf = VectorIndex(args.dim, ann_threshold=1)
        ivf.add(vectors, ids)
        build = time.perf_counter() - start
        tuned = ivf.search_breadth["nprobe"]
        row(
            n,
            f"{ivf.kind} nprobe={tuned} (default, tuned)",
            ivf,
            build,
            queries,
            truth,
            p50_exact,
            args.k,
        )
        for scale in (float(x) for x in args.nprobe.split(",") if x):
            probe = max(1, int(scale * default_nprobe(default_nlist(n))))
            if probe == tuned:
                continue
            ivf.set_nprobe(probe)
            row(n, f"{ivf.kind} nprobe={probe}", ivf, 0.0, queries, truth, p50_exact, args.k)
        del ivf
        if n <= args.hnsw_max:
            start = time.perf_counter()
            hnsw = VectorIndex(args.dim, ann_threshold=1, factory="HNSW32,Flat")
            hnsw.add(vectors, ids)
            build = time.perf_counter() - start
            label = f"HNSW32,Flat efSearch={hnsw.search_breadth['efSearch']} (tuned)"
            row(n, label, hnsw, build, queries, truth, p50_exact, args.k)
            del hnsw
        del vectors
    return 0


if __name__ == "__main__":
    sys.exit(main())
