"""Soak: two ``shellid serve`` replicas over one store, identify / enrol / delete at a steady
mix for ``--minutes``, sampled every minute (issue 25).

Each minute: RSS and open files of each replica, the store's size on disk, versions kept
(specimens table), rows, and the p95 latency of each kind of request. After ``--warmup-minutes``
the growth of each figure is fitted (least squares) and reported per hour, RSS as a share of
its post-warm-up mean (the goal: at most 5 % per hour), beside the warm-up's own figures. At the
end every write the replicas acknowledged is checked against the store: enrolments answered
201 must be there, deletions answered 200 gone.

    python benchmarks/soak_benchmark.py --minutes 20 --rate 1.5 --json soak.json

Photos are generated (a pattern per species plus noise, so no two are alike); the model is
the packaged default unless ``--fake-embedder`` (the tests' stand-in, for a quick run).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from index.store import SpecimenStore  # noqa: E402

SPECIES = [f"Soakus_species{k}" for k in range(6)]
FAKE_REPLICA = (
    "import sys, api.app\n"
    "from index.workflows.collection import Collection\n"
    "from tests.fake_embedder import FakeEmbedder\n"
    "api.app.open_collection = lambda s: Collection.open(\n"
    "    s.store, model=FakeEmbedder(), create=True, settings=s)\n"
    "from api.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)
REAL_REPLICA = "import sys\nfrom api.cli import main\nsys.exit(main(sys.argv[1:]))\n"


def photo(species: int, rng: np.random.Generator, size: int = 96) -> bytes:
    """A PNG: the species' colour gradient plus fresh noise (distinct bytes every call)."""
    base = np.random.default_rng(species).random(3) * 200
    ramp = np.linspace(0, 55, size)[None, :, None]
    pixels = base[None, None, :] + ramp + rng.normal(0, 12, (size, size, 3))
    buffer = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype("uint8")).save(buffer, "PNG")
    return buffer.getvalue()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Replica:
    """One ``shellid serve`` process over the store."""

    def __init__(self, store: str, env: dict[str, str], log: Path, fake: bool) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        code = FAKE_REPLICA if fake else REAL_REPLICA
        args = ["serve", "--store", store, "--port", str(port), "--log-level", "warning"]
        self.process = subprocess.Popen(
            [sys.executable, "-c", code, *args],
            cwd=REPO,
            env=env,
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
        )
        self.log = log
        self.client = httpx.Client(base_url=self.url, timeout=120)
        self.ps = psutil.Process(self.process.pid)

    def wait_ready(self, seconds: float = 300) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"replica exited: {self.log.read_text()[-2000:]}")
            try:
                if self.client.get("/readyz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        raise SystemExit(f"replica not ready in {seconds:.0f} s: {self.log.read_text()[-2000:]}")

    def usage(self) -> tuple[float, int]:
        """(RSS in MiB, open file descriptors) of the server process."""
        return self.ps.memory_info().rss / 2**20, self.ps.num_fds()

    def stop(self) -> None:
        self.client.close()
        self.process.terminate()
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()


@dataclass
class Ledger:
    """Writes the replicas acknowledged, and every request's latency and outcome."""

    live: dict[str, int] = field(default_factory=dict)  # id -> species (acknowledged enrolled)
    deleted: set[str] = field(default_factory=set)  # acknowledged deleted
    enrolled: int = 0
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    outcomes: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take_latencies(self) -> dict[str, list[float]]:
        with self.lock:
            taken, self.latencies = self.latencies, defaultdict(list)
        return taken


def request(replica: Replica, ledger: Ledger, rng: np.random.Generator, mix: list[float]) -> None:
    """One request of a kind drawn from ``mix`` (identify, enrol, delete), recorded."""
    kind = str(rng.choice(["identify", "enrol", "delete"], p=mix))
    species = int(rng.integers(len(SPECIES)))
    victim = None
    if kind == "delete":
        with ledger.lock:
            if len(ledger.live) <= 3 * len(SPECIES):  # keep a collection to identify against
                kind = "enrol"
            else:
                victim = random.Random(int(rng.integers(1 << 30))).choice(sorted(ledger.live))
                del ledger.live[victim]  # no one else deletes it meanwhile
    started = time.perf_counter()
    try:
        if kind == "identify":
            files = [("images", ("q.png", photo(species, rng), "image/png"))]
            answer = replica.client.post("/v1/identify", files=files)
        elif kind == "enrol":
            files = [("images", ("e.png", photo(species, rng), "image/png"))]
            answer = replica.client.post(f"/v1/species/{SPECIES[species]}/images", files=files)
        else:
            answer = replica.client.delete(f"/v1/specimens/{victim}")
        status = answer.status_code
    except httpx.TransportError as exc:
        status, answer = 0, None
        print(f"  {kind}: {type(exc).__name__}: {exc}", file=sys.stderr)
    seconds = time.perf_counter() - started
    with ledger.lock:
        ledger.latencies[kind].append(seconds)
        ledger.outcomes[f"{kind} {status}"] += 1
        if kind == "enrol" and status == 201 and answer is not None:
            for specimen_id in answer.json()["specimen_ids"]:
                ledger.live[specimen_id] = species
                ledger.enrolled += 1
        elif kind == "delete" and victim is not None:
            if status == 200:
                ledger.deleted.add(victim)
            else:  # not acknowledged: it may still be there
                ledger.live[victim] = species


def drive(replica: Replica, ledger: Ledger, rate: float, stop: threading.Event, seed: int, mix):
    """Requests to one replica at ``rate`` per second (a fixed schedule; a slow answer
    delays the next, never piles them up)."""
    rng = np.random.default_rng(seed)
    next_at = time.monotonic()
    while not stop.is_set():
        request(replica, ledger, rng, mix)
        next_at += 1.0 / rate
        stop.wait(max(0.0, next_at - time.monotonic()))
        next_at = max(next_at, time.monotonic() - 1.0 / rate)


def disk_mib(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def p95(values: list[float]) -> float | None:
    return float(np.percentile(values, 95) * 1000) if values else None


def sample(minute: int, replicas: list[Replica], ledger: Ledger, store: Path) -> dict[str, Any]:
    usage = [r.usage() for r in replicas]
    stats = SpecimenStore(store, create=False).upkeep.stats()
    latencies = ledger.take_latencies()
    row: dict[str, Any] = {
        "minute": minute,
        "rss_mib": [round(u[0], 1) for u in usage],
        "fds": [u[1] for u in usage],
        "store_mib": round(disk_mib(store), 2),
        "versions": stats["versions"],
        "fragments": stats["fragments"],
        "rows": stats["rows"],
        "requests": sum(len(v) for v in latencies.values()),
    }
    for kind in ("identify", "enrol", "delete"):
        value = p95(latencies.get(kind, []))
        row[f"p95_{kind}_ms"] = None if value is None else round(value, 1)
    return row


def slope_per_hour(minutes: list[float], values: list[float]) -> float:
    if len(values) < 2:
        return 0.0
    return float(np.polyfit(np.asarray(minutes, float), np.asarray(values, float), 1)[0] * 60)


def growth(samples: list[dict[str, Any]], warmup: int) -> dict[str, Any]:
    """Per-hour growth of each figure over the samples after the warm-up."""
    after = [s for s in samples if s["minute"] > warmup] or samples[-2:]
    minutes = [s["minute"] for s in after]
    result: dict[str, Any] = {"fitted_minutes": [minutes[0], minutes[-1]] if minutes else []}
    for k in range(len(after[0]["rss_mib"]) if after else 0):
        rss = [s["rss_mib"][k] for s in after]
        per_hour = slope_per_hour(minutes, rss)
        result[f"replica{k + 1}_rss_mib_per_hour"] = round(per_hour, 1)
        result[f"replica{k + 1}_rss_pct_per_hour"] = round(100 * per_hour / np.mean(rss), 2)
        fds = [s["fds"][k] for s in after]
        result[f"replica{k + 1}_fds_per_hour"] = round(slope_per_hour(minutes, fds), 1)
    for name in ("store_mib", "versions", "rows"):
        values = [s[name] for s in after]
        result[f"{name}_per_hour"] = round(slope_per_hour(minutes, values), 2)
        result[f"{name}_max"] = max(values) if values else None
    return result


def final_check(store: Path, ledger: Ledger) -> dict[str, Any]:
    """Acknowledged writes against the rows in the store."""
    ids = set(SpecimenStore(store, create=False).select(["id"], "true")["id"].to_pylist())
    live = set(ledger.live)
    return {
        "enrolments_acknowledged": ledger.enrolled,
        "deletions_acknowledged": len(ledger.deleted),
        "rows_expected": len(live),
        "rows_found": len(ids),
        "acknowledged_enrolments_missing": len(live - ids),
        "acknowledged_deletions_still_there": len(ledger.deleted & ids),
        "rows_not_acknowledged": len(ids - live),
    }


def print_row(row: dict[str, Any]) -> None:
    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v:.0f}"

    print(
        f"{row['minute']:>4} | {' / '.join(f'{r:.0f}' for r in row['rss_mib']):>11} | "
        f"{' / '.join(map(str, row['fds'])):>9} | {row['store_mib']:>8.1f} | "
        f"{row['versions']:>5} | {row['rows']:>5} | {row['requests']:>5} | "
        f"{ms(row['p95_identify_ms']):>6} | {ms(row['p95_enrol_ms']):>6} | "
        f"{ms(row['p95_delete_ms']):>6}",
        flush=True,
    )


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="length of the soak")
    parser.add_argument("--warmup-minutes", type=float, default=5.0, help="not fitted")
    parser.add_argument("--rate", type=float, default=1.5, help="requests/s over both replicas")
    parser.add_argument("--mix", default="70,15,15", help="identify,enrol,delete shares (%%)")
    parser.add_argument("--store", type=Path, help="store folder (default: a new temporary one)")
    parser.add_argument("--keep-versions-minutes", type=float, default=3.0)
    parser.add_argument("--compact-every", type=int, default=20)
    parser.add_argument("--fake-embedder", action="store_true", help="the tests' stand-in model")
    parser.add_argument("--json", type=Path, help="write the samples and summary here")
    return parser.parse_args()


def main() -> int:
    args = parse()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the replicas on kill too
    work = Path(tempfile.mkdtemp(prefix="shellid-soak-"))
    store = (args.store or work / "store").resolve()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHELLID_")}
    env |= {
        "SHELLID_KEEP_VERSIONS_MINUTES": str(args.keep_versions_minutes),
        "SHELLID_COMPACT_EVERY": str(args.compact_every),
        "SHELLID_REFRESH_SECONDS": "1",
        "PYTHONPATH": str(REPO),
    }
    replicas = [Replica(str(store), env, work / "replica1.log", args.fake_embedder)]
    try:
        replicas[0].wait_ready()  # the first creates the store; the second opens it
        replicas.append(Replica(str(store), env, work / "replica2.log", args.fake_embedder))
        replicas[1].wait_ready()
        return soak(args, replicas, store)
    finally:
        for replica in replicas:
            replica.stop()


def seed(replica: Replica) -> Ledger:
    """Enrol the collection identify answers from (five photos per species)."""
    ledger = Ledger()
    rng = np.random.default_rng(0)
    for k, name in enumerate(SPECIES):
        files = [("images", (f"s{j}.png", photo(k, rng), "image/png")) for j in range(5)]
        answer = replica.client.post(f"/v1/species/{name}/images", files=files)
        answer.raise_for_status()
        for specimen_id in answer.json()["specimen_ids"]:
            ledger.live[specimen_id] = k
            ledger.enrolled += 1
    return ledger


def soak(args: argparse.Namespace, replicas: list[Replica], store: Path) -> int:
    """Seed the collection, drive both replicas, sample each minute, report."""
    shares = np.asarray([float(x) for x in args.mix.split(",")], float)
    mix = list(shares / shares.sum())
    ledger = seed(replicas[0])
    print(
        f"soak: {args.minutes:g} min, {args.rate:g} requests/s over 2 replicas, mix "
        f"identify/enrol/delete {args.mix}, keep versions {args.keep_versions_minutes:g} min, "
        f"compact every {args.compact_every} writes; store {store}",
        flush=True,
    )
    print(
        "min  | RSS MiB 1/2 | fds 1/2   | disk MiB | vers  | rows  | reqs  | p95 id | p95 en"
        " | p95 de"
    )
    stop = threading.Event()
    threads = [
        threading.Thread(target=drive, args=(r, ledger, args.rate / 2, stop, 10 + k, mix))
        for k, r in enumerate(replicas)
    ]
    samples: list[dict[str, Any]] = []
    started = time.monotonic()
    for thread in threads:
        thread.start()
    try:
        for minute in range(1, round(args.minutes) + 1):
            time.sleep(max(0.0, started + 60 * minute - time.monotonic()))
            samples.append(sample(minute, replicas, ledger, store))
            print_row(samples[-1])
    finally:
        stop.set()
        for thread in threads:
            thread.join(180)
    time.sleep(3)  # replicas take in each other's last commits
    check = final_check(store, ledger)
    summary = {"growth_after_warmup": growth(samples, int(args.warmup_minutes)), "writes": check}
    summary["outcomes"] = dict(sorted(ledger.outcomes.items()))
    first_after = next((s for s in samples if s["minute"] > args.warmup_minutes), samples[0])
    print("\nwarm-up's end (baseline):", json.dumps({k: first_after[k] for k in first_after}))
    print("growth per hour after warm-up:", json.dumps(summary["growth_after_warmup"]))
    print("writes:", json.dumps(check))
    print("outcomes:", json.dumps(summary["outcomes"]))
    if args.json:
        args.json.write_text(
            json.dumps(
                {"args": vars(args) | {"store": str(store)}, "samples": samples, **summary},
                default=str,
                indent=1,
            )
        )
    lost = check["acknowledged_enrolments_missing"] + check["acknowledged_deletions_still_there"]
    return 1 if lost else 0


if __name__ == "__main__":
    sys.exit(main())
