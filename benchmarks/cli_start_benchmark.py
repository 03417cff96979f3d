"""Start time of ``shellid`` commands: this tree against an earlier commit, in one run.

Every command runs in a fresh interpreter, ``--repeats`` times, from this working tree and
from ``--baseline`` (default b1acf63, the last commit before issue 24's fast answers;
exported with ``git archive`` into a temporary folder and put first on ``PYTHONPATH``).
Printed: median wall seconds and CPU seconds (user + system: steadier on a busy machine), and
the baseline / now ratio of each.

* the light commands (``--help``, ``species``, ``remove``, a missing photo); target 1.5 s;
* one-off answers (issue 24) on a demo store each tree made itself (``shellid demo``, not
  timed, nor is one warm-up answer per tree: a cold process, a warm disk cache and the model's
  ONNX export already made, as for every command after the first):
  ``identify`` of one kept-back photo (target 2 s), the same with a running ``shellid serve`` of
  this tree on the store (the baseline has none: its figure is the same command; target
  0.5 s), and ``enroll`` refusing a text file named .jpg (target 1.5 s).

    .venv/bin/python benchmarks/cli_start_benchmark.py [--baseline COMMIT] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_BASELINE = "b1acf63"  # last commit before issue 24's fast one-off answers
SAMPLE = REPO.parent / "shared" / "datasets" / "shells-zhang8"
TARGET_S = 1.5
#: a photo ``shellid demo`` keeps back (not enrolled), asked about in the answer timings
QUERY = SAMPLE / "Alia_unifasciata" / "Alia_unifasciata_10_A.jpg"

COMMANDS: list[tuple[str, list[str]]] = [
    ("shellid --help", ["--help"]),
    ("shellid species", ["species", "--store", "{store}"]),
    ("shellid remove", ["remove"]),
    ("shellid identify missing.jpg", ["identify", "missing.jpg", "--store", "{store}"]),
]


#: the ``shellid`` executable of a tree: ``api.cli.entry`` where it exists, else ``main``
CLI = (
    "import sys, api.cli as c; f = getattr(c, 'entry', None); "
    "f() if f else sys.exit(c.main(sys.argv[1:]))"
)


def cli_env(tree: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHELLID_")}
    return {**env, "PYTHONPATH": str(tree), "SHELLID_DEBUG": "0"}


def run_cli(tree: Path, argv: list[str], cwd: Path, expect: int | None = None) -> float:
    """Wall seconds of ``shellid ARGV`` run from the sources in ``tree`` (fresh interpreter);
    with ``expect``, a different exit status stops the benchmark."""
    return run_timed(tree, argv, cwd, expect)[0]


def run_timed(
    tree: Path, argv: list[str], cwd: Path, expect: int | None = None
) -> tuple[float, float]:
    """``(wall seconds, CPU seconds)`` of ``shellid ARGV`` from ``tree``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", CLI, *argv],
        cwd=cwd,
        env=cli_env(tree),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if expect is not None and done.returncode != expect:
        raise SystemExit(
            f"shellid {' '.join(argv)} from {tree}: exit {done.returncode}\n{done.stderr}"
        )
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def which_tree(tree: Path, cwd: Path) -> str:
    """Where ``api`` is imported from with this ``PYTHONPATH`` (the benchmark's own check)."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run(
        [sys.executable, "-c", "import api; print(api.__file__)"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def export(commit: str, into: Path) -> Path:
    """``git archive COMMIT`` unpacked into ``into``."""
    archive = into / "baseline.tar"
    with archive.open("wb") as handle:
        subprocess.run(["git", "archive", commit], cwd=REPO, stdout=handle, check=True)
    tree = into / "baseline"
    with tarfile.open(archive) as tar:
        tar.extractall(tree, filter="data")
    return tree


def make_store(path: Path, cwd: Path) -> None:
    """A small real store: two photos of each of two sample species (embeds; not timed)."""
    if not SAMPLE.is_dir():
        raise SystemExit(f"no sample at {SAMPLE}; pass --store DIR (an existing store)")
    for species in sorted(p for p in SAMPLE.iterdir() if p.is_dir())[:2]:
        photos = sorted(species.glob("*_1_*.jpg"))
        code = "import sys; from api.cli import main; sys.exit(main(sys.argv[1:]))"
        subprocess.run(
            [
                *(sys.executable, "-c", code, "enroll", *map(str, photos)),
                *("--species", species.name, "--store", str(path), "--json"),
            ],
            cwd=cwd,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            check=True,
            stdout=subprocess.DEVNULL,
        )


def median_timed(
    tree: Path, argv: list[str], cwd: Path, repeats: int, expect: int | None
) -> tuple[float, float]:
    runs = [run_timed(tree, argv, cwd, expect) for _ in range(repeats)]
    return statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)


def make_demo_store(tree: Path, store: Path, cwd: Path) -> None:
    """``shellid demo --store STORE`` from ``tree`` (the sample shells; not timed)."""
    if not SAMPLE.is_dir():
        raise SystemExit(f"no sample at {SAMPLE}: the answer timings need the demo photos")
    run_cli(tree, ["demo", "--store", str(store), "--data", str(SAMPLE)], cwd, expect=0)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_server(tree: Path, store: Path, cwd: Path) -> subprocess.Popen:
    """``shellid serve`` from ``tree`` on ``store``, once it answers ``/readyz``."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-c", CLI, "serve", "--store", str(store), "--port", str(port)],
        cwd=cwd,
        env=cli_env(tree),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and server.poll() is None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as answer:
                if answer.status == 200:
                    return server
        except OSError:
            time.sleep(0.5)
    server.kill()
    raise SystemExit("shellid serve did not become ready")


def answer_timings(
    baseline: Path, work: Path, cwd: Path, repeats: int
) -> list[tuple[str, tuple[float, float], tuple[float, float], float]]:
    """``[(label, baseline (wall, cpu), now (wall, cpu), target)]`` of the one-off answers."""
    stores = {tree: work / f"demo-{name}" for tree, name in ((baseline, "baseline"), (REPO, "now"))}
    text = cwd / "notes.jpg"
    text.write_text("not a photo\n")
    rows = []
    for tree, store in stores.items():
        make_demo_store(tree, store, cwd)
        run_cli(tree, ["identify", str(QUERY), "--store", str(store)], cwd, expect=0)  # warm-up

    def identify(tree: Path, *extra: str) -> tuple[float, float]:
        argv = ["identify", str(QUERY), "--store", str(stores[tree]), *extra]
        return median_timed(tree, argv, cwd, repeats, expect=0)

    cold = {
        tree: identify(tree, *(["--server", "none"] if tree == REPO else [])) for tree in stores
    }
    rows.append(("shellid identify one.jpg (cold)", cold[baseline], cold[REPO], 2.0))
    server = start_server(REPO, stores[REPO], cwd)
    try:
        identify(REPO)  # the first request warms the server's worker threads
        served = identify(REPO)
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=60)
    rows.append(("  ... with shellid serve running", cold[baseline], served, 0.5))
    refusals = {}
    for tree in stores:
        argv = ["enroll", str(text), "--species", "Text_file", "--store", str(work / "none")]
        # the refusal's exit status is 2 since issue 24 (1 before it, as at b1acf63)
        refusals[tree] = median_timed(tree, argv, cwd, repeats, expect=2 if tree == REPO else None)
    rows.append(("shellid enroll notes.jpg (a text file)", refusals[baseline], refusals[REPO], 1.5))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default=DEFAULT_BASELINE, help="commit to compare with")
    parser.add_argument("--repeats", type=int, default=3, help="runs per command (median)")
    parser.add_argument("--store", type=Path, help="an existing store to list")
    parser.add_argument(
        "--light-only", action="store_true", help="only the light commands (no demo stores)"
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="shellid-start-") as tmp:
        work = Path(tmp)
        cwd = work / "cwd"
        cwd.mkdir()
        store = args.store or work / "store"
        if args.store is None:
            make_store(store, cwd)
        baseline = export(args.baseline, work)
        for tree in (REPO, baseline):
            print(f"# {tree.name if tree == baseline else 'now'}: api from {which_tree(tree, cwd)}")
        torch_s = statistics.median(
            run_cli_import("import torch, timm", cwd) for _ in range(args.repeats)
        )
        print(f"# baseline: {args.baseline}; reference: python -c 'import torch, timm' = "
              f"{torch_s:.2f} s (median)")  # fmt: skip
        print(f"# {args.repeats} runs each, median seconds; machine: {os.cpu_count()} CPUs, "
              f"load average {os.getloadavg()[0]:.1f}")  # fmt: skip
        print()
        header = (
            f"{'command':<34} {'baseline':>15} {'now':>15} {'ratio':>13}  target ≤ {TARGET_S} s"
        )
        print(header)
        print(f"{'':<34} {'wall':>7} {'cpu':>7} {'wall':>7} {'cpu':>7} {'wall':>6} {'cpu':>6}")
        print("-" * len(header))
        for label, argv in COMMANDS:
            argv = [a.format(store=store) for a in argv]
            bw, bc = median_timed(baseline, argv, cwd, args.repeats, expect=None)
            nw, nc = median_timed(REPO, argv, cwd, args.repeats, expect=None)
            verdict = "ok" if nw <= TARGET_S else "OVER"
            print(
                f"{label:<34} {bw:>6.2f}s {bc:>6.2f}s {nw:>6.2f}s {nc:>6.2f}s "
                f"{bw / nw:>5.1f}× {bc / nc:>5.1f}×  {verdict}"
            )
        if not args.light_only:
            print()
            head = (
                f"{'one-off answer (demo store)':<40} {'baseline':>15} {'now':>15} "
                f"{'ratio':>13}  target"
            )
            print(head)
            print(f"{'':<40} {'wall':>7} {'cpu':>7} {'wall':>7} {'cpu':>7} {'wall':>6} {'cpu':>6}")
            print("-" * len(head))
            for label, (bw, bc), (nw, nc), target in answer_timings(
                baseline, work, cwd, args.repeats
            ):
                verdict = "ok" if nw <= target else "OVER"
                print(
                    f"{label:<40} {bw:>6.2f}s {bc:>6.2f}s {nw:>6.2f}s {nc:>6.2f}s "
                    f"{bw / nw:>5.1f}× {bc / nc:>5.1f}×  ≤ {target} s wall: {verdict}"
                )
        shutil.rmtree(baseline, ignore_errors=True)
    return 0


def run_cli_import(statement: str, cwd: Path) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", statement], cwd=cwd, check=True)
    return time.perf_counter() - started


if __name__ == "__main__":
    sys.exit(main())
