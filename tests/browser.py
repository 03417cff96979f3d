"""What the browser tests share: Debian's Chromium driven by playwright (skipped without it
unless CI or SHELLID_REQUIRE_SHARED=1, then failed) and the real app served under uvicorn."""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


def require_browser() -> Path:
    """Chromium's path; skips (fails under CI / SHELLID_REQUIRE_SHARED=1) when it or
    playwright is missing."""
    must = os.environ.get("CI") or os.environ.get("SHELLID_REQUIRE_SHARED") == "1"
    missing = None
    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        missing = f"{CHROMIUM} not installed (apt-get install chromium, or make browser)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            missing = "the playwright package is not installed"
    if missing:
        if must:
            pytest.fail(missing + " (required under CI / SHELLID_REQUIRE_SHARED=1)")
        pytest.skip(missing)
    return Path(CHROMIUM) if Path(CHROMIUM).exists() else Path(str(shutil.which("chromium")))


def launch_chromium() -> Iterator:
    """A headless Chromium for a module's tests (a fixture body: yields the browser)."""
    executable = require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(executable), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def screenshot_folder(tmp_path_factory) -> Path:
    """``$SHELLID_SCREENSHOTS`` when set, else a temporary folder."""
    folder = os.environ.get("SHELLID_SCREENSHOTS")
    path = Path(folder) if folder else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


def free_port() -> int:
    """A loopback port nobody listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def serve(app) -> Iterator[str]:
    """Serve ``app`` under uvicorn on a free loopback port; yields its base URL."""
    import uvicorn

    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    uvicorn_server = uvicorn.Server(config)
    thread = threading.Thread(target=uvicorn_server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not uvicorn_server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("the test server did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    uvicorn_server.should_exit = True
    thread.join(10)
