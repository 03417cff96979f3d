"""Load benchmark under attack (issue 12): 16 identify clients, with and without one more
client that sends the costly images of the issue, in one run.

Starts ``shellid serve`` (default settings, frozen default backbone) on a free loopback port
over a fresh store of the sample shells, then alternates rounds of

* **baseline**: 16 clients, each posting one sample photo to ``/v1/identify`` in a loop;
* **attack**: the same 16 clients plus one attacker posting, in turn, the issue's payloads
  (five 45000x32 PNGs, a 20000x40 PNG, five 7000x7000 PNGs, a grayscale TIFF with associated
  alpha, five 12-MP progressive JPEGs) and the costliest images the limits accept (five noise
  PNGs, WebPs and JPEGs at the cost limit), plus a chunked body that never ends,

and prints the normal clients' p50 / p95 latency and throughput in both, side by side with
their ratios, the errors, and what the attacker got. Goal: p95 under attack within 1.5x of the
baseline, 0 errors for the normal clients and no 5xx for the attacker.

    python benchmarks/load_benchmark.py [--rounds 3] [--seconds 20] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from service_benchmark import Server, build_store, percentile  # noqa: E402

CLIENTS = 16
GOAL_P95_RATIO = 1.5


def _encode(image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _costliest(fmt: str, seed: int) -> tuple[str, bytes]:
    """The largest square noise image of ``fmt`` the default limits accept."""
    from PIL import Image

    from embedder.intake import ImageHeader, ImageIntakeError, IntakeLimits, estimate_cost
    from index.workflows.imaging import accept_image, storage_size

    rng = np.random.default_rng(seed)
    limits = IntakeLimits()

    def make(side: int) -> bytes:
        pixels = rng.integers(0, 255, (side, side, 3), dtype=np.uint8)
        return _encode(Image.fromarray(pixels), fmt, **({"quality": 95} if fmt == "JPEG" else {}))

    per_pixel = len(make(256)) / 256**2
    side = 32
    while True:
        bigger = side + 16
        header = ImageHeader(fmt, bigger, bigger, int(bigger * bigger * per_pixel))
        if estimate_cost(header, storage_size(bigger, bigger)) > limits.max_cost:
            break
        side = bigger
    while True:
        data = make(side)
        try:
            accepted = accept_image("probe", data, limits)
            return f"{fmt} {side}x{side} noise (cost {accepted.cost:.2f})", data
        except ImageIntakeError:
            side = int(side * 0.97)


def _la_tiff() -> bytes:
    import struct

    from PIL import Image

    data = bytearray(_encode(Image.new("LA", (640, 480), (120, 200)), "TIFF"))
    offset = struct.unpack("<I", data[4:8])[0]
    for entry in range(struct.unpack("<H", data[offset : offset + 2])[0]):
        at = offset + 2 + 12 * entry
        if struct.unpack("<H", data[at : at + 2])[0] == 338:
            data[at + 8 : at + 10] = struct.pack("<H", 1)
    return bytes(data)


def attack_payloads() -> list[tuple[str, list[tuple[str, bytes]]]]:
    """(label, photos) the attacker cycles through."""
    from PIL import Image

    thin = _encode(Image.new("RGB", (45000, 32)), "PNG")
    long = _encode(Image.new("RGB", (20000, 40)), "PNG")
    big = _encode(Image.new("RGB", (7000, 7000)), "PNG")
    rng = np.random.default_rng(0)
    small = rng.integers(0, 255, (3024 // 16 + 1, 4032 // 16 + 1, 3), dtype=np.uint8)
    phone = Image.fromarray(small).resize((4032, 3024), Image.Resampling.BILINEAR)
    progressive = _encode(phone, "JPEG", quality=90, progressive=True)
    payloads = [
        ("5 x 45000x32 PNG", [("thin.png", thin)] * 5),
        ("20000x40 PNG", [("long.png", long)]),
        ("5 x 7000x7000 PNG", [("big.png", big)] * 5),
        ("grayscale TIFF, associated alpha", [("la.tif", _la_tiff())]),
        ("5 x 12-MP progressive JPEG", [("prog.jpg", progressive)] * 5),
    ]
    for seed, fmt in enumerate(("PNG", "WEBP", "JPEG")):
        label, data = _costliest(fmt, seed)
        payloads.append((f"5 x {label}", [(f"costly.{fmt.lower()}", data)] * 5))
    return payloads


async def endless_chunked_body(url: str) -> int:
    """Post a chunked body that never ends; returns the status the server answered."""

    async def chunks():
        head = (
            b'--b\r\nContent-Disposition: form-data; name="images"; filename="x.bin"\r\n'
            b"Content-Type: application/octet-stream\r\n\r\n"
        )
        yield head
        for _ in range(4096):  # 256 MB at most, if the server never stopped it
            yield b"\0" * 65_536

    headers = {"Content-Type": "multipart/form-data; boundary=b"}
    async with httpx.AsyncClient(base_url=url, timeout=120) as http:
        try:
            response = await http.post("/v1/identify", content=chunks(), headers=headers)
            return response.status_code
        except httpx.HTTPError:  # the server closed the connection after its 413
            return 413


async def run_round(url: str, photos: list[bytes], seconds: float, attack) -> dict:
    """``CLIENTS`` identify clients for ``seconds`` (and the attacker, when given)."""
    latencies: list[float] = []
    errors: Counter = Counter()
    attacker: list[tuple[str, int, float]] = []
    deadline = time.perf_counter() + seconds

    async def client(number: int, http: httpx.AsyncClient) -> None:
        index = number
        while time.perf_counter() < deadline:
            files = [("images", (f"q{index}.jpg", photos[index % len(photos)], "image/jpeg"))]
            index += CLIENTS
            started = time.perf_counter()
            try:
                response = await http.post("/v1/identify", files=files)
                status = response.status_code
            except httpx.HTTPError as exc:
                status = type(exc).__name__
            latencies.append((time.perf_counter() - started) * 1000)
            if status != 200:
                errors[str(status)] += 1

    async def attack_loop(http: httpx.AsyncClient) -> None:
        turn = 0
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            if turn % (len(attack) + 1) == len(attack):
                label, status = "endless chunked body", await endless_chunked_body(url)
            else:
                label, items = attack[turn % (len(attack) + 1)]
                files = [
                    ("images", (name, data, "application/octet-stream")) for name, data in items
                ]
                try:
                    status = (await http.post("/v1/identify", files=files)).status_code
                except httpx.HTTPError as exc:
                    status = type(exc).__name__
            attacker.append((label, status, (time.perf_counter() - started) * 1000))
            turn += 1

    limits = httpx.Limits(max_connections=CLIENTS + 1)
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as http:
        tasks = [client(n, http) for n in range(CLIENTS)]
        if attack:
            tasks.append(attack_loop(http))
        started = time.perf_counter()
        await asyncio.gather(*tasks)
        wall = time.perf_counter() - started
    return {"latencies": latencies, "errors": errors, "attacker": attacker, "wall": wall}


def summary(rounds: list[dict]) -> dict:
    latencies = [x for r in rounds for x in r["latencies"]]
    errors: Counter = Counter()
    for r in rounds:
        errors.update(r["errors"])
    return {
        "requests": len(latencies),
        "p50_ms": percentile(latencies, 0.5),
        "p95_ms": percentile(latencies, 0.95),
        "throughput_rps": len(latencies) / sum(r["wall"] for r in rounds),
        "errors": dict(errors),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, help="class-folder tree (default: the sample shells)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per setting")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of one round")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)

    from api.commands.demo_cmd import find_data

    data = find_data(args.data)
    attack = attack_payloads()
    with tempfile.TemporaryDirectory(prefix="shellid-load-") as tmp:
        store = Path(tmp) / "store"
        held_out, _ = build_store(store, Path(data), None)
        photos = sorted(p for p in Path(data).rglob("*.jpg") if p.parent.name != held_out)
        query_photos = [p.read_bytes() for p in photos[::7]]
        server = Server(store, None)
        try:
            server.wait_ready()
            asyncio.run(run_round(server.url, query_photos, 3.0, None))  # warm-up
            baseline, attacked = [], []
            for number in range(args.rounds):
                print(f"round {number + 1}/{args.rounds}: baseline, then under attack", flush=True)
                baseline.append(
                    asyncio.run(run_round(server.url, query_photos, args.seconds, None))
                )
                attacked.append(
                    asyncio.run(run_round(server.url, query_photos, args.seconds, attack))
                )
        finally:
            server.stop()

    base, under = summary(baseline), summary(attacked)
    ratio = {k: under[k] / base[k] for k in ("p50_ms", "p95_ms", "throughput_rps")}
    print()
    print(
        f"{CLIENTS} identify clients, {args.rounds} interleaved rounds of {args.seconds:.0f} s "
        f"per setting; normal photos: the sample shells ({len(query_photos)} JPEGs)"
    )
    print(f"{'normal clients':<28}{'baseline':>12}{'under attack':>14}{'ratio':>9}")
    print(f"{'requests':<28}{base['requests']:>12}{under['requests']:>14}")
    for key, label in [("p50_ms", "p50 ms"), ("p95_ms", "p95 ms"), ("throughput_rps", "req/s")]:
        print(f"{label:<28}{base[key]:>12.1f}{under[key]:>14.1f}{ratio[key]:>9.2f}")
    errors_base, errors_under = sum(base["errors"].values()), sum(under["errors"].values())
    print(f"{'errors (not 200)':<28}{errors_base:>12}{errors_under:>14}")

    print("\nattacker (one client, in turn):")
    by_label: dict[str, list[tuple[object, float]]] = {}
    for r in attacked:
        for label, status, ms in r["attacker"]:
            by_label.setdefault(label, []).append((status, ms))
    attacker_5xx = 0
    for label, results in by_label.items():
        statuses = Counter(str(s) for s, _ in results)
        attacker_5xx += sum(n for s, n in statuses.items() if s.startswith("5") or not s.isdigit())
        median = statistics.median(ms for _, ms in results)
        answers = ", ".join(f"{s} x{n}" for s, n in sorted(statuses.items()))
        print(f"  {label:<48} {answers:<14} median {median:8.1f} ms")

    ok = ratio["p95_ms"] <= GOAL_P95_RATIO and errors_base == errors_under == 0
    ok = ok and attacker_5xx == 0
    print(
        f"\ngoal: p95 under attack <= {GOAL_P95_RATIO}x baseline, 0 errors, no 5xx for the "
        f"attacker: {'met' if ok else 'NOT met'} (p95 ratio {ratio['p95_ms']:.2f})"
    )
    if args.json:
        figures = {
            "baseline": base,
            "under_attack": under,
            "ratios": ratio,
            "attacker": {k: [list(x) for x in v] for k, v in by_label.items()},
            "goal_met": ok,
        }
        args.json.write_text(json.dumps(figures, indent=2, default=str))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
