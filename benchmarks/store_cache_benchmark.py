"""RSS of a process writing to a store for a long time: LanceDB's default caches (1 GB of
table metadata, 6 GB of indices per session) beside the bounded session the store uses
(:data:`index.storage.CACHE_BYTES` per cache), each in a fresh process (issue 25).

Each write cycle appends one row (an 8 KB photo, a 256-d vector), reads the new version back
pinned (as a replica's catch-up does) and deletes the row added 20 cycles before; versions
older than 20 s are cleaned every 20 writes. The cache keeps the manifests of every version it
read, so with the default it grows with the writes.

    python benchmarks/store_cache_benchmark.py --writes 2000
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

WORKER = """
import json, sys, tempfile
from datetime import timedelta
import lancedb, numpy as np, psutil
sys.path.insert(0, {repo!r})
import index.storage as store_module
from index.store import SpecimenStore
from tests.conftest import store_row
if {default!r}:
    store_module._SESSION = lancedb.Session.default()
s = SpecimenStore(tempfile.mkdtemp(), keep_versions=timedelta(seconds=20), compact_every=20)
s.ensure_table(256)
rng, process = np.random.default_rng(0), psutil.Process()
for i in range({writes} + 1):
    row = store_row(i)
    row["image"] = [rng.bytes(8000)]
    s.add(s.make_rows(row, rng.random((1, 256), np.float32)))
    s.read_version(["id"], s.version)
    if i >= 20:
        s.delete_ids([f"{{i - 20:016x}}"])
    if i % {every} == 0:
        cache = store_module.session().size_bytes
        print(json.dumps([i, process.memory_info().rss / 2**20, cache / 2**20]), flush=True)
"""


def run(writes: int, every: int, default: bool) -> list[list[float]]:
    code = WORKER.format(repo=str(REPO), default=default, writes=writes, every=every)
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    )
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("[")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--writes", type=int, default=2000)
    parser.add_argument("--every", type=int, default=250, help="sample every N writes")
    args = parser.parse_args()
    default = run(args.writes, args.every, True)
    bounded = run(args.writes, args.every, False)
    print("writes | RSS MiB default | cache MiB default | RSS MiB bounded | cache MiB bounded")
    for d, b in zip(default, bounded, strict=True):
        print(f"{d[0]:>6.0f} | {d[1]:>15.0f} | {d[2]:>17.1f} | {b[1]:>15.0f} | {b[2]:>17.1f}")
    half = len(default) // 2
    for name, rows in (("default", default), ("bounded", bounded)):
        per_k = (rows[-1][1] - rows[half][1]) / max(1.0, rows[-1][0] - rows[half][0]) * 1000
        print(f"{name}: RSS growth over the second half {per_k:+.1f} MiB per 1,000 writes")
    ratio = (default[-1][1] - default[0][1]) / max(1e-9, bounded[-1][1] - bounded[0][1])
    print(f"RSS growth at {args.writes} writes, default / bounded: {ratio:.1f}x")


if __name__ == "__main__":
    main()
