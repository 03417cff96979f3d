"""A running ``shellid serve`` answering the command line: found, asked, and announced.

``shellid serve`` over a local store writes :data:`SERVER_FILE` into the store folder (its
URL and process id) and removes it on a clean shutdown. ``shellid identify`` then sends its
photos there instead of loading the store and the model itself (an answer in a few tenths
of a second instead of seconds), and prints the answers exactly as it would have made them:
the server returns the index's own answer with the taxonomy and file names the command
line shows. A file whose process is gone, or a server that does not answer, is ignored
(the command answers by itself). ``--server URL`` asks a given server, ``--server none``
never asks one. Only the standard library is imported here.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import mimetypes
import os
import socket
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: the file a server writes into the local store folder it serves
SERVER_FILE = ".shellid-server.json"
#: the server route that answers the command line (not part of the documented API)
IDENTIFY_ROUTE = "/v1/cli/identify"
#: seconds to wait for an answer (a photo's embedding on a busy server)
ANSWER_TIMEOUT_S = 120.0
#: options whose values a server started with its own settings would not honour
LOCAL_ONLY_OPTIONS = ("model", "target_recall", "unknown_threshold", "ood_threshold")


class ServerUnavailable(ConnectionError):
    """The server cannot be reached, or is not ready yet."""


class ServerRefusal(ValueError):
    """The server refused the request (its JSON error: ``code`` and ``message``)."""

    def __init__(self, code: str, message: str, status: int) -> None:
        self.code = code
        self.status = status
        super().__init__(message)


def add_server_option(parser: argparse.ArgumentParser) -> None:
    from ._models import ServerOption
    from ._options import add_model_options

    add_model_options(parser, ServerOption)


def server_file(store: str) -> Path | None:
    """Where a server of ``store`` announces itself (None for a store that is no folder)."""
    if "://" in store:
        return None
    return Path(store).expanduser() / SERVER_FILE


def client_url(host: str, port: int) -> str:
    """The URL a local client reaches a server listening on ``host:port`` by."""
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"http://{f'[{host}]' if ':' in host else host}:{port}"


def announce(store: str, url: str) -> Path | None:
    """Write :data:`SERVER_FILE` for a server of ``store`` at ``url`` (None when the store is
    no local folder or the file cannot be written: the server works, it is just not found)."""
    path = server_file(store)
    if path is None or not path.parent.is_dir():
        return None
    record = {"url": url, "pid": os.getpid(), "host": socket.gethostname()}
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        tmp.write_text(json.dumps(record), encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        return None
    return path


def withdraw(path: Path | None) -> None:
    """Remove the file :func:`announce` wrote, unless another server has replaced it."""
    if path is None:
        return
    with contextlib.suppress(OSError, ValueError):
        if json.loads(path.read_text(encoding="utf-8")).get("pid") == os.getpid():
            path.unlink()


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs (POSIX; elsewhere no server is looked for: Windows'
    ``os.kill`` would stop it)."""
    if os.name != "posix":
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        return True
    return True


def announced_url(store: str) -> str | None:
    """The URL in the store's :data:`SERVER_FILE` when its server process still runs on this
    machine (a stale file is ignored)."""
    path = server_file(store)
    if path is None:
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        url, pid, host = str(record["url"]), int(record["pid"]), record.get("host")
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if host != socket.gethostname() or not _alive(pid):
        return None
    return url


@dataclass(frozen=True)
class Server:
    """A server to ask; ``found``: discovered from the store (fall back to answering here
    when it does not answer) rather than named with ``--server``."""

    url: str
    found: bool


def chosen_server(args: argparse.Namespace, store: str) -> Server | None:
    """The server the options ask for, else the one serving ``store``, else None (answer
    here). A server is not looked for when an option it would not honour is given."""
    wanted = (getattr(args, "server", None) or "auto").strip()
    if wanted.lower() == "none":
        return None
    local_only = [n for n in LOCAL_ONLY_OPTIONS if getattr(args, n, None) not in (None, "")]
    if wanted.lower() != "auto":
        if local_only:
            option = "--" + local_only[0].replace("_", "-")
            raise ValueError(
                f"--server answers with the server's own model and thresholds: drop {option}, "
                "or drop --server to answer here"
            )
        parsed = urllib.parse.urlparse(wanted if "://" in wanted else f"http://{wanted}")
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"--server {wanted}: not an http(s) URL (or auto, none)")
        return Server(parsed.geturl().rstrip("/"), found=False)
    if local_only:
        return None
    url = announced_url(store)
    return Server(url, found=True) if url else None


def _multipart(files: list[tuple[str, bytes]]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = []
    for name, data in files:
        kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
        quoted = name.replace('"', "%22").replace("\r", " ").replace("\n", " ")
        parts.append(
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="images"; '
                f'filename="{quoted}"\r\nContent-Type: {kind}\r\n\r\n'
            ).encode()
            + data
            + b"\r\n"
        )
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), boundary


def ask(server: Server, files: list[tuple[str, bytes]], params: dict[str, Any]) -> dict:
    """POST ``files`` (name, bytes) to the server's identify route; its JSON answer.

    Raises :class:`ServerUnavailable` (no connection, or not ready: 503) and
    :class:`ServerRefusal` (any other error answer, with the server's message)."""
    query = urllib.parse.urlencode(
        [(k, v) for k, v in params.items() if v is not None and not isinstance(v, list)]
        + [(k, item) for k, v in params.items() if isinstance(v, list) for item in v]
    )
    body, boundary = _multipart(files)
    request = urllib.request.Request(
        f"{server.url}{IDENTIFY_ROUTE}?{query}",
        data=body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        method="POST",
    )
    key = _read_key()
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with _opener(server).open(request, timeout=ANSWER_TIMEOUT_S) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            error = json.loads(exc.read())
        except ValueError:
            error = {}
        if exc.code == 503:
            raise ServerUnavailable(f"{server.url} is not ready ({exc.code})") from None
        if exc.code == 404 and error.get("code") in (None, "not_found"):
            raise ServerUnavailable(f"{server.url} does not answer the command line") from None
        raise ServerRefusal(
            str(error.get("code", "http_error")), str(error.get("detail") or exc), exc.code
        ) from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ServerUnavailable(f"cannot reach {server.url} ({reason})") from None


def _read_key() -> str:
    """The key this machine's settings give for reading (``SHELLID_READ_KEY``, else the
    write key ``SHELLID_API_KEY``; '' when neither is set or the settings do not load)."""
    from ..settings import ServiceSettings

    try:
        settings = ServiceSettings()
    except Exception:  # a bad unrelated setting: ask without a key (the server says if needed)
        return ""
    for key in (settings.read_key, settings.api_key):
        if key is not None and key.get_secret_value():
            return key.get_secret_value()
    return ""


def _opener(server: Server) -> urllib.request.OpenerDirector:
    """No proxy for a server on this machine (a proxy setting must not send it elsewhere)."""
    host = urllib.parse.urlparse(server.url).hostname or ""
    if host in ("127.0.0.1", "::1", "localhost"):
        return urllib.request.build_opener(urllib.request.ProxyHandler({}))
    return urllib.request.build_opener()


def ready(server: Server, timeout: float = 1.0) -> bool:
    """Whether the server answers ``/readyz`` with 200 within ``timeout`` seconds."""
    try:
        with _opener(server).open(f"{server.url}/readyz", timeout=timeout) as response:
            return int(response.status) == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


class RemoteAnswers:
    """Identification by a running server, with what the command line formats answers
    from: ``subject``, ``taxonomy`` (species -> fields) and ``names`` (photo id -> file
    name), gathered from the answers so far."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.subject = "shell"
        self.taxonomy: dict[str, dict[str, str]] = {}
        self.names: dict[str, str] = {}

    @classmethod
    def start(cls, args: argparse.Namespace, store: str) -> RemoteAnswers | None:
        """The server to ask (see :func:`chosen_server`) when it is ready; None to answer
        here. A server named with ``--server`` that is not ready is an error."""
        server = chosen_server(args, store)
        if server is None:
            return None
        if not ready(server, timeout=1.0 if server.found else 10.0):
            if server.found:
                return None
            raise ServerUnavailable(f"--server {server.url}: no shellid server is ready there")
        return cls(server)

    @staticmethod
    def load(photos: list[Path]) -> list[tuple[str, bytes]]:
        """The photos as the server receives them: name and bytes."""
        return [(photo.name, photo.read_bytes()) for photo in photos]

    def identify(self, files: list[tuple[str, bytes]], **options: Any) -> Any:
        """The server's answer as :class:`index.results.Identification` (ImageIntakeError
        for a photo it refused, ValueError with its message for any other refusal)."""
        from embedder.intake import ImageIntakeError
        from index.results import Identification

        params = {k: v for k, v in options.items() if v is not None}
        try:
            reply = ask(self.server, files, params)
        except ServerRefusal as exc:
            if exc.status in (413, 422) and exc.code not in ("invalid_request",):
                raise ImageIntakeError(exc.code, str(exc)) from None
            raise
        self.subject = str(reply.get("subject") or self.subject)
        self.taxonomy.update(reply.get("taxonomy") or {})
        self.names.update(reply.get("names") or {})
        return Identification.model_validate(reply["answer"])
