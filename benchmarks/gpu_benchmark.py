"""The GPU paths beside the CPU ones: embedding images/s and FAISS search latency.

    python benchmarks/gpu_benchmark.py --json /tmp/gpu-benchmark.json

Embedding: ``Embedder.embed_paths`` end to end from JPEG files (decoding in parallel), per
model (``--models``: backbone or profile names), on the CPU with ONNX Runtime (what shellid
uses there) and, when PyTorch sees a CUDA device, on the GPU with PyTorch (what shellid uses
there); ``× CPU`` is the GPU rate over the CPU rate measured in the same run.

Search: :class:`index.search.VectorIndex` over ``--vectors`` random unit vectors of each
model's size (exact below 10^5 vectors, IVF above, as the index builds them), median latency
of one query and of a batch of 32 (top 10), with ``use_gpu=False`` and, when FAISS sees a GPU
(a faiss-gpu build and a device), ``use_gpu=True``.

Without a CUDA device the GPU rows say so instead of a figure; nothing is estimated.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from embedder import Embedder, load_model  # noqa: E402
from embedder.vectors import l2_normalise  # noqa: E402
from index.search import VectorIndex  # noqa: E402

NO_CUDA = "no CUDA device: not measured"


def photo_paths(shared: Path, count: int) -> list[Path]:
    """``count`` JPEG photos of ``birds-cub-base100`` (every n-th, so many species)."""
    files = sorted((shared / "birds-cub-base100").rglob("*.jpg"))
    if not files:
        raise SystemExit(f"no photos under {shared / 'birds-cub-base100'} (see --shared)")
    return files[:: max(1, len(files) // count)][:count]


def embedding_rate(model_name: str, paths: list[Path], device: str) -> float:
    """Images/s of ``embed_paths`` on ``device`` (best of two passes after a warm-up)."""
    model = load_model(model_name, device=device)
    embedder = Embedder(model, runtime="onnx" if device == "cpu" else "torch")
    embedder.embed_paths(paths[: embedder.batch_size], progress=False)
    rates = []
    for _ in range(2):
        started = time.perf_counter()
        embedder.embed_paths(paths, progress=False)
        rates.append(len(paths) / (time.perf_counter() - started))
    return max(rates)


def search_latency(dim: int, count: int, use_gpu: bool, repeats: int = 50) -> dict[str, float]:
    """Median ms of one query and of 32 queries (top 10) over ``count`` random unit vectors."""
    rng = np.random.default_rng(0)
    vectors = l2_normalise(rng.standard_normal((count, dim), dtype=np.float32))
    index = VectorIndex(dim, use_gpu=use_gpu)
    index.add(vectors, np.arange(count, dtype=np.int64))
    queries = l2_normalise(rng.standard_normal((32, dim), dtype=np.float32))
    result = {}
    for label, batch in (("1 query ms", queries[:1]), ("32 queries ms", queries)):
        index.search(batch, 10)
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            index.search(batch, 10)
            times.append(1000 * (time.perf_counter() - started))
        result[label] = float(np.median(times))
    return result


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "datasets")
    parser.add_argument("--models", default="tf_efficientnet_lite0,lite02-ensemble")
    parser.add_argument("--photos", type=int, default=128)
    parser.add_argument("--vectors", type=int, default=50_000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    import faiss
    import torch

    cuda = torch.cuda.is_available()
    faiss_gpu = hasattr(faiss, "get_num_gpus") and faiss.get_num_gpus() > 0
    paths = photo_paths(args.shared, args.photos)
    report: dict = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "cuda": torch.cuda.get_device_name(0) if cuda else None,
        "faiss_gpu": faiss_gpu,
        "embedding": {},
        "search": {},
    }
    print(f"embedding {len(paths)} photos end to end (images/s)")
    print("| model | CPU (onnx) | GPU (torch) | × CPU |\n|---|---|---|---|")
    for name in args.models.split(","):
        cpu = embedding_rate(name, paths, "cpu")
        gpu = embedding_rate(name, paths, "cuda") if cuda else None
        report["embedding"][name] = {"cpu": cpu, "gpu": gpu}
        gpu_cells = f"{gpu:.1f} | {gpu / cpu:.1f}" if gpu else f"{NO_CUDA} | -"
        print(f"| {name} | {cpu:.1f} | {gpu_cells} |", flush=True)
    dims = sorted({load_model(n, device="cpu").dim for n in args.models.split(",")})
    print(f"\nFAISS search over {args.vectors:,} vectors (median ms, top 10)")
    print("| dim | CPU 1 query | CPU 32 queries | GPU 1 query | GPU 32 queries |")
    print("|---|---|---|---|---|")
    for dim in dims:
        cpu_ms = search_latency(dim, args.vectors, use_gpu=False)
        gpu_ms = search_latency(dim, args.vectors, use_gpu=True) if faiss_gpu else None
        report["search"][dim] = {"cpu": cpu_ms, "gpu": gpu_ms}
        gpu_cells = (
            f"{gpu_ms['1 query ms']:.2f} | {gpu_ms['32 queries ms']:.2f}"
            if gpu_ms
            else "no FAISS GPU (faiss-cpu build or no device): not measured | -"
        )
        print(
            f"| {dim} | {cpu_ms['1 query ms']:.2f} | {cpu_ms['32 queries ms']:.2f} | {gpu_cells} |"
        )
    if not cuda:
        print(f"\nGPU rows: {NO_CUDA} (torch.cuda.is_available() is False on this machine)")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
