"""The notebooks: committed without outputs, and each runs top to bottom on the shared data
(executed with nbclient in a kernel of this interpreter)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nbformat
import pytest

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
