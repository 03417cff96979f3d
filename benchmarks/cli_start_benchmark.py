"""Start time of the light ``shellid`` commands: this tree against an earlier commit.

The commands that embed nothing (``--help``, ``species``, ``remove`` without arguments, and
``identify`` of a missing file) are run in fresh interpreters, each ``--repeats`` times, from
this working tree and from ``--baseline`` (default: the commit before the lazy imports,
exported with ``git archive`` into a temporary folder and put first on ``PYTHONPATH``). Both
list the same store (made here by enrolling four sample photos unless ``--store`` is given).
Printed: median wall seconds, the baseline / now ratio, and for scale the time of
``import torch, timm`` alone. Target (issue 13): every light command at most 1.5 s here.

    .venv/bin/python benchmarks/cli_start_benchmark.py [--baseline COMMIT] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_BASELINE = "ad2adae"  # last commit before the lazy imports (issue 13)
SAMPLE = REPO.parent / "shared" / "datasets" / "shells-zhang8"
TARGET_S = 1.5

COMMANDS: list[tuple[str, list[str]]] = [
    ("shellid --help", ["--help"]),
    ("shellid species", ["species", "--store", "{store}"]),
    ("shellid remove", ["remove"]),
    ("shellid identify missing.jpg", ["identify", "missing.jpg", "--store", "{store}"]),
]


def run_cli(tree: Path, argv: list[str], cwd: Path) -> float:
    """Wall seconds of ``shellid ARGV`` run from the sources in ``tree`` (fresh interpreter)."""
    code = "import sys; from api.cli import main; sys.exit(main(sys.argv[1:]))"
    env = {**os.environ, "PYTHONPATH": str(tree), "SHELLID_DEBUG": "0"}
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", code, *argv],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=False,
    )
    return time.perf_counter() - started


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


def median_time(tree: Path, argv: list[str], cwd: Path, repeats: int) -> float:
    return statistics.median(run_cli(tree, argv, cwd) for _ in range(repeats))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default=DEFAULT_BASELINE, help="commit to compare with")
    parser.add_argument("--repeats", type=int, default=3, help="runs per command (median)")
    parser.add_argument("--store", type=Path, help="an existing store to list")
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
        print(f"# reference: python -c 'import torch, timm' = {torch_s:.2f} s (median)")
        print(f"# {args.repeats} runs each, median wall seconds; machine: {os.cpu_count()} CPUs")
        print()
        header = f"{'command':<34} {'baseline':>9} {'now':>7} {'ratio':>7}  target ≤ {TARGET_S} s"
        print(header)
        print("-" * len(header))
        for label, argv in COMMANDS:
            argv = [a.format(store=store) for a in argv]
            before = median_time(baseline, argv, cwd, args.repeats)
            now = median_time(REPO, argv, cwd, args.repeats)
            verdict = "ok" if now <= TARGET_S else "OVER"
            print(f"{label:<34} {before:>8.2f}s {now:>6.2f}s {before / now:>6.1f}×  {verdict}")
        cache = Path(store) / ".shellid-species.json"
        if cache.exists():  # the listing when its cached copy is stale: LanceDB is imported
            argv = ["species", "--store", str(store)]
            cold = []
            for _ in range(args.repeats):
                cache.unlink(missing_ok=True)
                cold.append(run_cli(REPO, argv, cwd))
            print(
                f"{'shellid species (copy stale)':<34} {'':>9} {statistics.median(cold):>6.2f}s"
                "           (opens the store: LanceDB, FAISS, SciPy)"
            )
        shutil.rmtree(baseline, ignore_errors=True)
    return 0


def run_cli_import(statement: str, cwd: Path) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", statement], cwd=cwd, check=True)
    return time.perf_counter() - started


if __name__ == "__main__":
    sys.exit(main())
