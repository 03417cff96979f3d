"""``shellid serve`` and ``shellid demo``: they start, fill a store, and fail in one line."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from api.cli import main
from api.commands import demo_cmd
from tests.conftest import GENERATED_SPECIES, make_collection

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def fast_open(monkeypatch, frozen_model):
    """Open stores with the session's already-loaded frozen model."""
    import api.app
    from index.workflows.collection import Collection

    monkeypatch.setattr(
        api.app,
        "open_collection",
        lambda settings: Collection.open(
            settings.store, model=frozen_model, create=True, settings=settings
        ),
    )


@pytest.fixture
def no_sample(monkeypatch, tmp_path):
    monkeypatch.setattr(demo_cmd, "sample_candidates", lambda cwd=None: [tmp_path / "nowhere"])


def one_line_error(captured) -> str:
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1, captured.err
    assert "Traceback" not in captured.err
    return lines[0]


def test_demo_enrolls_a_data_folder_and_if_empty_then_does_nothing(tmp_path, fast_open, capsys):
    species = {k: GENERATED_SPECIES[k] for k in ("Conus_alpha", "Murex_epsilon")}
    data = make_collection(tmp_path / "photos", species, specimens=2, views=1)
    store = str(tmp_path / "store")
    assert main(["demo", "--store", store, "--data", str(data)]) == 0
    out = capsys.readouterr().out  # one specimen of each species kept back to try
    assert "added 2 photos of 2 species" in out and "kept back 2 specimens" in out
    assert main(["demo", "--store", store, "--if-empty"]) == 0
    assert "already holds 2 photos; nothing to do" in capsys.readouterr().out


def test_demo_if_empty_without_a_sample_says_so_and_succeeds(
    tmp_path, fast_open, no_sample, capsys
):
    assert main(["demo", "--store", str(tmp_path / "store"), "--if-empty"]) == 0
    assert "no sample collection found" in capsys.readouterr().err


def test_demo_without_a_sample_or_data_fails_in_one_line(tmp_path, no_sample, capsys):
    assert main(["demo", "--store", str(tmp_path / "store")]) == 2
    line = one_line_error(capsys.readouterr())
    assert "no sample collection found" in line and "--data DIR" in line


def test_demo_with_a_missing_data_folder_fails_in_one_line(tmp_path, capsys):
    missing = tmp_path / "missing"
    assert main(["demo", "--store", str(tmp_path / "s"), "--data", str(missing)]) == 2
    assert f"--data {missing}: no such folder" in one_line_error(capsys.readouterr())


def test_demo_finds_the_sample_beside_the_repository_or_under_shellid_shared(tmp_path, monkeypatch):
    monkeypatch.setenv("SHELLID_SHARED", str(tmp_path / "shared"))
    places = demo_cmd.sample_candidates(cwd=tmp_path / "work")
    assert places[0] == tmp_path / "shared" / "datasets" / "shells-zhang8"
    assert REPO.parent / "shared" / "datasets" / "shells-zhang8" in places
    assert tmp_path / "shared" / "datasets" / "shells-zhang8" in places


def test_serve_refuses_a_busy_port_in_one_line(tmp_path, capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code = main(["serve", "--store", str(tmp_path / "store"), "--port", str(port)])
    assert code == 2
    line = one_line_error(capsys.readouterr())
    assert f"cannot listen on 127.0.0.1:{port}" in line and "--port" in line


def test_a_bad_setting_in_the_environment_is_named_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SHELLID_MAX_FILE_BYTES", "lots")
    assert main(["serve", "--store", str(tmp_path / "store")]) == 2
    assert "SHELLID_MAX_FILE_BYTES" in one_line_error(capsys.readouterr())


def test_serve_starts_and_answers_on_loopback(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHELLID_")}
    command = [sys.executable, "-m", "api.cli", "serve", "--store", str(tmp_path / "store")]
    process = subprocess.Popen(
        [*command, "--port", str(port), "--log-level", "warning"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, process.stdout.read()
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "shellid serve did not become ready"
            time.sleep(0.2)
        assert "shellid" in httpx.get(url).text
        assert httpx.get(f"{url}/v1/info").json()["specimens"] == 0
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=30)
    assert f"serving http://127.0.0.1:{port}/" in output
