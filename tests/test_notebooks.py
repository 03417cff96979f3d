"""The notebooks: committed without outputs, and each runs top to bottom on the shared data
(executed with nbclient in a kernel of this interpreter)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nbformat
import pytest

from tests.browser import free_port

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
#: shared datasets each notebook reads (the test skips or fails like other real-data tests).
NEEDS = {
    "01_quickstart.ipynb": ["shells-zhang8"],
    "02_train_and_evaluate.ipynb": ["fish4k-23"],
}


KERNEL_NAME = "shellid-venv"


def venv_kernel(root: Path) -> Path:
    """A kernelspec running this interpreter (the venv's python, which has ipykernel), so the
    notebooks never pick up another Python's kernel; returns the folder for JUPYTER_PATH."""
    spec = root / "kernels" / KERNEL_NAME
    spec.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(
        json.dumps({"argv": argv, "display_name": "shellid (venv)", "language": "python"})
    )
    return root


def test_every_notebook_is_known():
    assert [p.name for p in NOTEBOOKS] == sorted(NEEDS)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_committed_without_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{path.name}: strip outputs before committing"
            assert cell.execution_count is None, f"{path.name}: strip execution counts"


@pytest.mark.slow
@pytest.mark.shared
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_top_to_bottom(path, shared, tmp_path, monkeypatch):
    from nbclient import NotebookClient

    for name in NEEDS[path.name]:
        shared(name)
    monkeypatch.setenv("SHELLID_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("JUPYTER_PATH", str(venv_kernel(tmp_path / "jupyter")))
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=900,
        kernel_name=KERNEL_NAME,
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute()
    errors = [
        output
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if output.get("output_type") == "error"
    ]
    assert not errors


def test_make_notebooks_serves_them_in_jupyterlab(tmp_path):
    """``make notebooks`` (JupyterLab from the dev extras) starts and lists both notebooks;
    skipped without JupyterLab unless CI or SHELLID_REQUIRE_SHARED=1 is set (then fails)."""
    import os
    import shutil
    import signal
    import subprocess
    import time

    import httpx

    jupyter = Path(sys.executable).parent / "jupyter"
    try:
        import jupyterlab  # noqa: F401
    except ImportError:
        if os.environ.get("CI") or os.environ.get("SHELLID_REQUIRE_SHARED") == "1":
            pytest.fail("jupyterlab is not installed: pip install -e '.[dev]'")
        pytest.skip("jupyterlab is not installed (pip install -e '.[dev]')")
    if not shutil.which("make") or not jupyter.exists():
        pytest.skip("make or the venv's jupyter is missing")
    port, token = free_port(), "notebooks-test"
    args = (
        f"--no-browser --port={port} --ServerApp.ip=127.0.0.1 --IdentityProvider.token={token} "
        "--ServerApp.open_browser=False"
    )
    env = {
        **os.environ,
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
        "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
    }
    # -o install: the venv is there already (the target's prerequisite would pip install).
    process = subprocess.Popen(
        [
            "make",
            "--no-print-directory",
            "-o",
            "install",
            "notebooks",
            f"VENV={Path(sys.executable).parent.parent}",
            f"NOTEBOOK_ARGS={args}",
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        headers = {"Authorization": f"token {token}"}
        deadline = time.monotonic() + 90
        contents = None
        while time.monotonic() < deadline and process.poll() is None:
            try:
                answer = httpx.get(f"http://127.0.0.1:{port}/api/contents", headers=headers)
                if answer.status_code == 200:
                    contents = answer.json()
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        if contents is None:
            process.terminate()
            log = process.communicate(timeout=20)[0].decode(errors="replace")
            pytest.fail(f"make notebooks did not serve JupyterLab:\n{log[-3000:]}")
        names = sorted(item["name"] for item in contents["content"])
        assert [p.name for p in NOTEBOOKS] == [n for n in names if n.endswith(".ipynb")]
        lab = httpx.get(f"http://127.0.0.1:{port}/lab", headers=headers)
        assert lab.status_code == 200 and "JupyterLab" in lab.text
        specs = httpx.get(f"http://127.0.0.1:{port}/api/kernelspecs", headers=headers).json()
        assert specs["default"] in specs["kernelspecs"]
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_text_is_true_to_the_code(path):
    """The prose cites files that exist, and every ``TrainingConfig`` setting it names
    (``name=value``) is the current default or what the notebook's own code passes."""
    import ast
    import re

    from embedder.training import TrainingConfig

    notebook = nbformat.read(path, as_version=4)
    prose = "\n".join(c.source for c in notebook.cells if c.cell_type == "markdown")
    code = "\n".join(c.source for c in notebook.cells if c.cell_type == "code")
    for cited in re.findall(r"\b((?:docs|embedder|index|api|benchmarks)/[\w/]+\.\w+)", prose):
        assert (REPO / cited).is_file(), f"{path.name} cites {cited}, which does not exist"
    assert "README's figures" not in prose, "the README has no figures; cite docs/*.md"
    passed: dict[str, set[str]] = {}
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "TrainingConfig":
            for keyword in node.keywords:
                passed.setdefault(keyword.arg, set()).add(ast.unparse(keyword.value))
    defaults = {name: f.default for name, f in TrainingConfig.model_fields.items()}
    for name, value in re.findall(r"`(\w+)=([\w.]+)`", prose):
        if name in defaults:
            allowed = {str(defaults[name]), *passed.get(name, set())}
            assert value in allowed, (
                f"{path.name} says {name}={value}; the default is {defaults[name]!r}"
                f"{' and the notebook passes ' + ', '.join(passed[name]) if name in passed else ''}"
            )
