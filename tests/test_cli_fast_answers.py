"""One-off answers from the command line: the model run from its cached ONNX export without
PyTorch, a running ``shellid serve`` asked instead of loading anything, and unreadable photos
refused before any model or store is opened. A small random-weight model (64 px input, quick
to export) stands in for the real one; every process gets its own cache folder."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import draw_specimen, make_collection

REPO = Path(__file__).resolve().parents[1]
SPECIES = "Conus_alpha"


def small_model():
    """Random-weight Lite0 at 64 px input (quick to export)."""
    from embedder.backbones import create_backbone
    from embedder.model import EmbeddingModel
    from embedder.transforms import PreprocessConfig

    backbone = create_backbone("efficientnet_lite0", weights=None)
    backbone.preprocess = PreprocessConfig(**{**backbone.preprocess.to_dict(), "input_size": 64})
    return EmbeddingModel(backbone).eval()


def shellid(env: dict[str, str], *argv: str, modules: bool = False) -> subprocess.CompletedProcess:
    """``shellid ARGV`` in a new interpreter; with ``modules`` its last stderr line is JSON
    saying whether torch, timm and lancedb were imported."""
    code = "import sys; from api.cli import main; rc = main(sys.argv[1:])\n"
    if modules:
        code += (
            "import json; print(json.dumps({m: m in sys.modules for m in "
            "('torch', 'timm', 'lancedb')}), file=sys.stderr)\n"
        )
    code += "sys.exit(rc)"
    return subprocess.run(
        [sys.executable, "-c", code, *argv],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=600,
        check=False,
    )


def imported(run: subprocess.CompletedProcess) -> dict[str, bool]:
    return json.loads(run.stderr.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict:
    """A store enrolled with the small model (which leaves its export and records in the
    cache), the photos, and the environment of every command."""
    root = tmp_path_factory.mktemp("fast")
    photos = make_collection(root / "photos", specimens=3, views=2, size=96)
    model = root / "small.pt"
    small_model().save(model)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHELLID_")}
    env.update(SHELLID_CACHE_DIR=str(root / "cache"), PYTHONPATH=str(REPO))
    store = root / "store"
    run = shellid(env, "enroll", str(photos), "--store", str(store), "--model", str(model))
    assert run.returncode == 0, run.stderr
    query = photos / SPECIES / f"{SPECIES}_3_A.png"
    return {"root": root, "env": env, "store": str(store), "model": str(model), "query": query}


def test_exported_embedder_gives_the_vectors_of_the_pytorch_embedder(tmp_path):
    from embedder.embedding import Embedder
    from embedder.onnx_session import ExportedEmbedder, open_cached, remember

    real = Embedder(small_model(), cache_dir=tmp_path, num_workers=0)
    assert remember("small", real, cache_dir=tmp_path)
    exported = open_cached("small", cache_dir=tmp_path)
    assert isinstance(exported, ExportedEmbedder)
    assert (exported.fingerprint, exported.dim) == (real.fingerprint, real.dim)
    images = [draw_specimen("star", (60, 140, 200), seed, 90 + 13 * seed) for seed in range(4)]
    images += [images[0].resize((150, 70)), images[1].resize((71, 133))]  # either orientation
    ours, theirs = exported.embed_images(images), real.embed_images(images)
    assert ours.shape == theirs.shape
    assert np.abs(ours - theirs).max() < 1e-5


def test_a_changed_model_file_or_code_makes_the_records_stale(tmp_path, monkeypatch):
    from embedder import onnx_session
    from embedder.embedding import Embedder

    model = small_model()
    path = model.save(tmp_path / "m.pt")
    real = Embedder(model, cache_dir=tmp_path, num_workers=0)
    assert onnx_session.remember(str(path), real, cache_dir=tmp_path)
    assert onnx_session.open_cached(str(path), cache_dir=tmp_path) is not None
    os.utime(path, ns=(1, 1))  # another file under the same name
    assert onnx_session.open_cached(str(path), cache_dir=tmp_path) is None
    assert onnx_session.remember("by-name", real, cache_dir=tmp_path)
    monkeypatch.setattr(onnx_session, "code_stamp", lambda: "other code")
    assert onnx_session.open_cached("by-name", cache_dir=tmp_path) is None
    monkeypatch.undo()
    assert onnx_session.open_cached("by-name", cache_dir=tmp_path) is not None
    # the settings' runtime (SHELLID_RUNTIME=torch, passed down) wants PyTorch: no export
    assert onnx_session.open_cached("by-name", cache_dir=tmp_path, runtime="torch") is None


def test_cold_identify_imports_no_torch_and_answers_as_the_pytorch_path(setup):
    env, store, model, query = setup["env"], setup["store"], setup["model"], str(setup["query"])
    argv = ("identify", query, "--store", store, "--model", model, "--format", "json")
    fast = shellid(env, *argv, modules=True)
    assert fast.returncode == 0, fast.stderr
    assert imported(fast) == {"torch": False, "timm": False, "lancedb": True}
    sources = Path(env["SHELLID_CACHE_DIR"]) / "onnx" / "sources"
    for record in sources.glob("*.json"):
        record.unlink()  # no record: the model loads with PyTorch (and leaves them again)
    slow = shellid(env, *argv, modules=True)
    assert slow.returncode == 0, slow.stderr
    assert imported(slow)["torch"] is True
    assert json.loads(slow.stdout) == json.loads(fast.stdout)
    assert json.loads(fast.stdout)[0]["candidates"][0]["species"] == SPECIES
    assert list(sources.glob("*.json"))


def test_unreadable_photo_is_refused_in_one_line_before_anything_loads(setup, tmp_path):
    env = setup["env"]
    text = tmp_path / "notes.jpg"
    text.write_text("not a photo\n")
    started = time.perf_counter()
    run = shellid(env, "identify", str(text), "--store", setup["store"], modules=True)
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert (
        lines[0]
        == f"shellid: error: {text}: not an image file (or a format that cannot be decoded)"
    )
    assert len(lines) == 2  # the error, then the modules line
    assert imported(run) == {"torch": False, "timm": False, "lancedb": False}
    new_store = tmp_path / "new-store"
    run = shellid(
        env, "enroll", str(text), "--species", "A_b", "--store", str(new_store), modules=True
    )
    assert run.returncode == 2 and "not an image file" in run.stderr.splitlines()[0]
    assert imported(run) == {"torch": False, "timm": False, "lancedb": False}
    assert not new_store.exists()
    assert time.perf_counter() - started < 30  # two interpreters, not two model loads


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_ready(url: str, server: subprocess.Popen, seconds: float = 240) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert server.poll() is None, server.stdout.read() if server.stdout else ""
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"{url} not ready in {seconds} s")


def test_a_running_server_answers_exactly_as_the_command_itself(setup):
    env, store, model, query = setup["env"], setup["store"], setup["model"], str(setup["query"])
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "api.cli", "serve", "--store", store, "--model", model,
         "--port", str(port), "--log-level", "warning"],
        env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    announced = Path(store) / ".shellid-server.json"
    try:
        _wait_ready(f"http://127.0.0.1:{port}", server)
        assert json.loads(announced.read_text())["url"] == f"http://127.0.0.1:{port}"
        other = str(setup["query"].with_name(f"{SPECIES}_1_B.png"))
        for fmt in ("text", "json", "csv"):
            asked = shellid(env, "identify", query, other, "--each", "--store", store,
                            "--format", fmt, modules=True)  # fmt: skip
            here = shellid(env, "identify", query, other, "--each", "--store", store,
                           "--model", model, "--format", fmt)  # fmt: skip
            assert asked.returncode == here.returncode == 0, asked.stderr + here.stderr
            assert imported(asked) == {"torch": False, "timm": False, "lancedb": False}
            assert asked.stdout == here.stdout
        named = shellid(env, "identify", query, "--store", store, "--server",
                        f"http://127.0.0.1:{port}", "--genus", "Nope")  # fmt: skip
        assert named.returncode == 2
        assert named.stderr.startswith("shellid: error: unknown genus 'Nope'")
    finally:
        server.send_signal(signal.SIGTERM)  # as a service manager stops it (Ctrl+C is SIGINT)
        server.wait(timeout=60)
    assert not announced.exists()  # a clean stop takes its file away


def test_a_stale_server_file_is_ignored(tmp_path):
    import argparse

    from api.commands._server import SERVER_FILE, chosen_server

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    (tmp_path / SERVER_FILE).write_text(
        json.dumps({"url": "http://127.0.0.1:9", "pid": gone.pid, "host": socket.gethostname()})
    )
    args = argparse.Namespace(server="auto", model=None)
    assert chosen_server(args, str(tmp_path)) is None
    (tmp_path / SERVER_FILE).write_text(
        json.dumps({"url": "http://127.0.0.1:9", "pid": os.getpid(), "host": socket.gethostname()})
    )
    assert chosen_server(args, str(tmp_path)).url == "http://127.0.0.1:9"
    assert chosen_server(argparse.Namespace(server="none"), str(tmp_path)) is None
    assert chosen_server(argparse.Namespace(server="auto", model="x.pt"), str(tmp_path)) is None
    with pytest.raises(ValueError, match="not an http"):
        chosen_server(argparse.Namespace(server="ftp://x"), str(tmp_path))
    with pytest.raises(ValueError, match="drop --target-recall"):
        chosen_server(argparse.Namespace(server="http://h:1", target_recall=0.8), str(tmp_path))


def test_lancedb_imports_without_building_its_rest_client_until_it_is_used():
    code = (
        "import sys, index, lancedb\n"
        "client = 'lance_namespace_urllib3_client'\n"
        "deferred = client + '.api' not in sys.modules\n"
        "from lance_namespace_urllib3_client import ApiClient, Configuration\n"
        "print(deferred, client + '.api' in sys.modules, ApiClient.__name__)\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert run.stdout.split() == ["True", "True", "ApiClient"], run.stderr


def test_the_executable_ends_a_one_off_answer_quickly_with_every_line_written(setup, tmp_path):
    env, store, model, query = setup["env"], setup["store"], setup["model"], str(setup["query"])
    argv = ["identify", query, "--store", store, "--model", model, "--format", "jsonl"]
    executable = [sys.executable, "-m", "api.cli"]
    run = subprocess.run(
        [*executable, *argv], env=env, cwd=REPO, capture_output=True, text=True, check=False
    )
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["candidates"][0]["species"] == SPECIES
    assert run.stdout == shellid(env, *argv).stdout
    text = tmp_path / "notes.jpg"
    text.write_text("not a photo\n")
    run = subprocess.run(
        [*executable, "identify", str(text), "--store", store],
        env=env, cwd=REPO, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert run.returncode == 2 and "not an image file" in run.stderr
