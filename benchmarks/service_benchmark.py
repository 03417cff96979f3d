"""Service benchmark: identify latency and throughput over HTTP against the bare embedding time.

Starts ``shellid serve`` on a free loopback port over a fresh store filled with the sample
shells (all species but one), then measures, in the same run:

* the bare in-process time to decode and embed one photo (the baseline);
* ``POST /v1/identify`` with one photo: p50 / p95 latency and throughput at 1, 4 and 16
  concurrent clients (the p50 / baseline ratio is the service overhead), and the mean number of
  photos per forward pass the micro-batcher formed (from ``/metrics``);
* at the highest concurrency, the default server against one worker forming batches of up to
  32 photos (classic micro-batching), in interleaved rounds, to show which pays on this machine;
* enrolling 5 photos of the held-out species end to end (``POST /v1/species/{name}/images``),
  against 5 bare embeddings.

    python benchmarks/service_benchmark.py [--data DIR] [--json FILE]

Goal: p50 identify <= 150 ms for one client on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import httpx

from index.config import IndexSettings

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

GOAL_P50_MS = 150.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    position = (len(ordered) - 1) * q
    low, high = int(position), min(int(position) + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def build_store(store: Path, data: Path, model: str | None) -> tuple[str, list[Path]]:
    """Enroll every species of ``data`` but one; returns the held-out species and its photos."""
    from embedder import scan_collection
    from index.workflows.collection import Collection

    records = scan_collection(data)
    by_species: dict[str, list] = defaultdict(list)
    for record in records:
        by_species[record.species].append(record)
    names = sorted(by_species)
    if len(names) < 2:
        raise SystemExit(f"{data}: need at least 2 species, found {len(names)}")
    held_out = names[-1]
    collection = Collection.open(
        str(store), model=model, create=True, settings=IndexSettings.load()
    )
    for name in names[:-1]:
        group = by_species[name]
        taxonomy = {k: v for k, v in (group[0].taxonomy or {}).items() if v}
        collection.enroll(name, [r.path for r in group], taxonomy=taxonomy or None)
    photos = len(collection.catalogue)
    print(f"store: {photos} photos of {len(names) - 1} species (held out: {held_out})")
    del collection
    return held_out, [r.path for r in by_species[held_out]]


class BareEmbedding:
    """Decode and embed one photo in this process: the baseline the service is compared with."""

    def __init__(self, photo: bytes, model: str | None) -> None:
        from embedder import Embedder, decode_image, load_model
        from index.workflows.imaging import normalise_size

        self.photo = photo
        self.prepare = lambda data: normalise_size(decode_image(data))
        self.embedder = Embedder(load_model(model, device="cpu"))
        self.embedder.embed_images([self.prepare(photo)])  # warm-up
        self.times_ms: list[float] = []

    def measure(self, repeats: int = 10) -> float:
        """Time ``repeats`` more runs; returns their median in ms."""
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            self.embedder.embed_images([self.prepare(self.photo)])
            times.append((time.perf_counter() - started) * 1000)
        self.times_ms += times
        return statistics.median(times)


class Server:
    """``shellid serve`` in a subprocess on a free loopback port."""

    def __init__(self, store: Path, model: str | None, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "api.cli", "serve", "--store", str(store)]
        command += ["--port", str(self.port), "--log-level", "warning"]
        if model:
            command += ["--model", model]
        environment = {k: v for k, v in os.environ.items() if not k.startswith("SHELLID_")}
        environment.update(env or {})
        handle, name = tempfile.mkstemp(prefix="shellid-serve-", suffix=".log")
        os.close(handle)
        self.log = Path(name)
        with self.log.open("w") as log:  # the child keeps its own copy of the descriptor
            self.process = subprocess.Popen(
                command, cwd=REPO, env=environment, stdout=log, stderr=subprocess.STDOUT
            )

    def wait_ready(self, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"server exited early:\n{self.log.read_text()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.25)
        raise SystemExit(f"server not ready after {timeout:.0f} s")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.unlink(missing_ok=True)


def batch_counters(url: str) -> tuple[float, float]:
    """(photos embedded, forward passes) so far, from the server's /metrics."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    total = re.search(r"^shellid_embedding_batch_images_sum ([0-9.e+]+)$", text, re.M)
    count = re.search(r"^shellid_embedding_batch_images_count ([0-9.e+]+)$", text, re.M)
    return (float(total.group(1)) if total else 0.0, float(count.group(1)) if count else 0.0)


async def identify_load(url: str, photos: list[bytes], clients: int, requests: int) -> dict:
    """``requests`` identify calls spread over ``clients`` concurrent connections."""
    latencies: list[float] = []
    failures: dict[int, int] = defaultdict(int)
    counter = iter(range(requests))

    async def client(http: httpx.AsyncClient) -> None:
        for index in counter:
            files = [("images", (f"query{index}.jpg", photos[index % len(photos)], "image/jpeg"))]
            started = time.perf_counter()
            response = await http.post("/v1/identify", files=files)
            latencies.append((time.perf_counter() - started) * 1000)
            if response.status_code != 200:
                failures[response.status_code] += 1

    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http:
        before = batch_counters(url)
        started = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        wall = time.perf_counter() - started
        after = batch_counters(url)
    return {
        "clients": clients,
        "requests": requests,
        "latencies_ms": latencies,
        "wall_s": wall,
        "photos": after[0] - before[0],
        "passes": after[1] - before[1],
        "failures": dict(failures),
    }


def enroll_timings(url: str, species: str, photos: list[Path], repeats: int) -> list[float]:
    """Seconds to enroll 5 photos of ``species`` end to end (deleted again after each try)."""
    files = [("images", (p.name, p.read_bytes(), "image/jpeg")) for p in photos[:5]]
    times = []
    with httpx.Client(base_url=url, timeout=300) as http:
        for _ in range(repeats):
            started = time.perf_counter()
            response = http.post(f"/v1/species/{species}/images", files=files)
            times.append((time.perf_counter() - started) * 1000)
            if response.status_code != 201 or response.json()["added"] != len(files):
                raise SystemExit(f"enrollment failed: {response.status_code} {response.text}")
            http.delete(f"/v1/species/{species}").raise_for_status()
    return times


#: Server configurations compared with the default at the highest concurrency, in
#: interleaved rounds (so a change in the machine's load hits them alike).
ALTERNATIVES: dict[str, dict[str, str]] = {
    "1 worker, batches <= 32": {"SHELLID_EMBED_WORKERS": "1", "SHELLID_BATCH_MAX_IMAGES": "32"},
}


def merge_runs(parts: list[dict]) -> dict:
    """One figure set from several rounds of the same load."""
    latencies = [x for part in parts for x in part["latencies_ms"]]
    photos = sum(p["photos"] for p in parts)
    passes = sum(p["passes"] for p in parts)
    failures: dict[int, int] = defaultdict(int)
    for part in parts:
        for status, count in part["failures"].items():
            failures[status] += count
    return {
        "clients": parts[0]["clients"],
        "requests": sum(p["requests"] for p in parts),
        "p50_ms": percentile(latencies, 0.5),
        "p95_ms": percentile(latencies, 0.95),
        "throughput_rps": sum(p["requests"] for p in parts) / sum(p["wall_s"] for p in parts),
        "mean_batch_photos": photos / passes if passes else None,
        "failures": dict(failures),
    }


def row(label: str, run: dict, bare_ms: float) -> str:
    return (
        f"{label:<36}{run['p50_ms']:>9.1f}{run['p95_ms']:>9.1f}{run['throughput_rps']:>8.1f}"
        f"{run['mean_batch_photos'] or 0:>13.2f}{run['p50_ms'] / bare_ms:>12.2f}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, help="class-folder tree (default: the sample shells)")
    parser.add_argument("--model", help="MODEL.pt (default: the frozen backbone)")
    parser.add_argument("--clients", default="1,4,16", help="concurrency levels (default 1,4,16)")
    parser.add_argument(
        "--requests", type=int, default=8, help="identify requests per client per level (8)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="interleaved comparison rounds")
    parser.add_argument("--enroll-repeats", type=int, default=3)
    parser.add_argument(
        "--no-alternatives", action="store_true", help="skip the comparison servers"
    )
    parser.add_argument(
        "--torch-threads",
        type=int,
        help="CPU threads per forward pass (SHELLID_TORCH_THREADS) for every server and the "
        "baseline (default: the server's plan, see docs/api.md)",
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)

    import torch

    from api.commands.demo_cmd import find_data
    from api.service import plan_inference
    from api.settings import ServiceSettings

    data = find_data(args.data)
    common_env = {"SHELLID_TORCH_THREADS": str(args.torch_threads)} if args.torch_threads else {}
    plan = plan_inference(ServiceSettings(torch_threads=args.torch_threads), "cpu")
    if plan.torch_threads:  # the baseline runs a pass like one of the default server's workers
        torch.set_num_threads(plan.torch_threads)
    levels = [int(c) for c in args.clients.split(",") if c.strip()]
    top = max(levels)
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="shellid-bench-") as tmp:
        store = Path(tmp) / "store"
        held_out, held_photos = build_store(store, data, args.model)
        query_photos = [p.read_bytes() for p in sorted(data.rglob("*.jpg"))[::7]][:24]
        bare = BareEmbedding(query_photos[0], args.model)
        bare_before = bare.measure()
        print(f"bare decode + embed of one photo in process: {bare_before:.1f} ms")

        servers = {"default": Server(store, args.model, common_env)}
        if not args.no_alternatives:
            for name, env in ALTERNATIVES.items():
                servers[name] = Server(store, args.model, {**common_env, **env})
        try:
            for server in servers.values():
                server.wait_ready()
                asyncio.run(identify_load(server.url, query_photos, 1, 5))  # warm-up
            default = servers["default"]
            runs = []
            for clients in levels:
                run = merge_runs(
                    [
                        asyncio.run(
                            identify_load(
                                default.url, query_photos, clients, clients * args.requests
                            )
                        )
                    ]
                )
                runs.append(run)
                print(
                    f"  {clients:>2} clients: p50 {run['p50_ms']:.0f} ms, "
                    f"{run['throughput_rps']:.1f} req/s",
                    flush=True,
                )
            enroll_ms = enroll_timings(default.url, held_out, held_photos, args.enroll_repeats)
            rounds: dict[str, list[dict]] = defaultdict(list)
            per_round = max(top, top * args.requests // max(1, args.rounds))
            if len(servers) > 1:
                for _ in range(args.rounds):
                    for name, server in servers.items():
                        rounds[name].append(
                            asyncio.run(identify_load(server.url, query_photos, top, per_round))
                        )
            compared = {name: merge_runs(parts) for name, parts in rounds.items()}
        finally:
            for server in servers.values():
                server.stop()
        bare_after = bare.measure()  # again, in case the machine's load changed meanwhile
        bare_ms = statistics.median(bare.times_ms)
        print(f"bare decode + embed again: {bare_after:.1f} ms (baseline: median of both)")
    load_after = os.getloadavg()[0]

    enroll_p50 = statistics.median(enroll_ms)
    print()
    print(
        f"{'measure':<36}{'p50 ms':>9}{'p95 ms':>9}{'req/s':>8}{'photos/pass':>13}"
        f"{'p50 / bare':>12}"
    )
    print(
        f"{'bare decode+embed, 1 photo':<36}{bare_ms:>9.1f}{'':>9}{1000 / bare_ms:>8.1f}"
        f"{1:>13.2f}{1.0:>12.2f}"
    )
    for run in runs:
        label = f"identify, {run['clients']} client{'s' if run['clients'] > 1 else ''}"
        print(row(label, run, bare_ms))
    print(
        f"{'enroll 5 photos (end to end)':<36}{enroll_p50:>9.1f}{max(enroll_ms):>9.1f}"
        f"{'':>8}{'':>13}{enroll_p50 / (5 * bare_ms):>12.2f}  (vs 5 bare embeddings)"
    )
    if compared:
        print(f"\n{top} clients, {args.rounds} interleaved rounds of {per_round} requests each:")
        for name, run in compared.items():
            print(row(f"  {name}", run, bare_ms))
        base = compared["default"]
        for name, run in compared.items():
            if name != "default":
                print(
                    f"  default vs {name}: throughput x"
                    f"{base['throughput_rps'] / run['throughput_rps']:.2f}, p50 x"
                    f"{base['p50_ms'] / run['p50_ms']:.2f}"
                )
    single = next((r for r in runs if r["clients"] == 1), None)
    if single:
        verdict = "met" if single["p50_ms"] <= GOAL_P50_MS else "NOT met"
        print(
            f"goal p50 identify <= {GOAL_P50_MS:.0f} ms (1 client): {single['p50_ms']:.1f} ms, "
            f"{verdict}"
        )
    failures = {r["clients"]: r["failures"] for r in runs if r["failures"]}
    failures.update({name: r["failures"] for name, r in compared.items() if r["failures"]})
    if failures:
        print(f"FAILED REQUESTS: {failures}")
    threads = plan.torch_threads or torch.get_num_threads()
    print(
        f"default server: {plan.workers} workers x {threads} torch thread(s), "
        f"{plan.max_batch_images} photo(s) per pass; baseline: {torch.get_num_threads()} thread(s)"
    )
    print(
        f"CPU: {os.cpu_count()} cores; 1-min load average {load_before:.1f} before, "
        f"{load_after:.1f} after (other work on the machine inflates every figure)"
    )

    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "data": str(data),
            "model": args.model or "frozen default",
            "plan": {
                "workers": plan.workers,
                "torch_threads": threads,
                "max_batch_images": plan.max_batch_images,
            },
            "bare_embed_ms": bare_ms,
            "bare_embed_ms_before_after": [bare_before, bare_after],
            "identify": runs,
            "compared_at_top_concurrency": compared,
            "enroll_5_photos_ms": {"p50": enroll_p50, "all": enroll_ms},
            "goal_p50_ms": GOAL_P50_MS,
            "cpu_count": os.cpu_count(),
            "load_average": {"before": load_before, "after": load_after},
        }
        args.json.write_text(json.dumps(payload, indent=2))
        print(f"wrote {args.json}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
