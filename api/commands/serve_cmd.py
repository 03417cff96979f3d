"""``shellid serve``: the HTTP API and web page over a specimen store (uvicorn)."""

from __future__ import annotations

import argparse
import contextlib
import signal
import socket
import time
from collections.abc import Iterator

from api.commands._collection import (
    add_decision_options,
    add_model_option,
    add_store_option,
    add_threshold_options,
    check_model_option,
)
from api.commands._options import add_model_options, options_from

#: ServiceSettings fields that are options of ``shellid serve`` (the keys stay variables: a
#: command line is visible to every user of the machine)
SERVICE_OPTIONS = (
    "max_file_bytes",
    "max_query_files",
    "max_enroll_files",
    "batch_wait_ms",
    "batch_max_images",
    "embed_workers",
    "torch_threads",
    "refresh_seconds",
    "subject",
)

HELP = "serve the HTTP API and the web page (http://127.0.0.1:8000 by default)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_store_option(parser)
    add_model_option(parser, "MODEL.pt to embed with")
    from ._models import ServeOptions

    add_model_options(parser, ServeOptions)
    from api.settings import ServiceSettings

    add_model_options(
        parser.add_argument_group(
            "service (api.settings.ServiceSettings; also SHELLID_* variables)"
        ),
        ServiceSettings,
        SERVICE_OPTIONS,
    )
    add_threshold_options(parser)
    add_decision_options(parser)


class PortUnavailableError(RuntimeError):
    """The address cannot be listened on (in use, or not an address of this machine)."""


def check_port(host: str, port: int) -> None:
    """Fail early, in one line, when ``host:port`` cannot be bound."""
    if not 0 < port < 65536:
        raise PortUnavailableError(f"--port {port} is not a valid port (1-65535)")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise PortUnavailableError(f"cannot listen on {host}: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            raise PortUnavailableError(
                f"cannot listen on {host}:{port} ({exc.strerror}); is another server running "
                f"there? choose another --port"
            ) from None


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from api.app import create_app, open_collection
    from api.service import embedder_device, plan_inference
    from api.settings import ServiceSettings, load_settings

    settings = load_settings(**options_from(args, ServiceSettings))
    check_model_option(settings.model)
    check_port(args.host, args.port)
    started = time.perf_counter()
    print(f"shellid: opening store {settings.store} (model: {settings.model or 'frozen default'})")
    collection = open_collection(settings)
    app = create_app(settings, collection)
    shown_host = f"[{args.host}]" if ":" in args.host else args.host
    keys = []
    if settings.writes_need_key():
        keys.append("writes need SHELLID_API_KEY")
    if settings.reads_need_key():
        keys.append("reads need SHELLID_READ_KEY")
    plan = plan_inference(settings, embedder_device(collection.embedder))
    threads = f", {plan.torch_threads} thread(s) each" if plan.torch_threads else ""
    photos = len(collection.catalogue)
    print(
        f"shellid: {photos} photos loaded in {time.perf_counter() - started:.1f} s; "
        f"{plan.workers} embedding worker(s) on {plan.device}{threads}, up to "
        f"{plan.max_batch_images} photo(s) per pass"
    )
    print(
        f"shellid: serving http://{shown_host}:{args.port}/ (API docs at /docs"
        f"{'; ' + ', '.join(keys) if keys else ''}); Ctrl+C stops"
    )
    from ._server import announce, client_url, withdraw

    announced = announce(str(settings.store), client_url(args.host, args.port))
    try:
        with _sigterm_exits():
            uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    finally:  # a clean stop removes it; a killed server's file is ignored (its process is gone)
        withdraw(announced)
    return 0


@contextlib.contextmanager
def _sigterm_exits() -> Iterator[None]:
    """SIGTERM (service managers, ``docker stop``) ends the process through ``SystemExit``.

    uvicorn shuts down gracefully on SIGTERM and then raises the signal again under the handler
    it found; with the default handler that kills the process before ``finally`` blocks run, so
    the server file would be left behind."""
    try:
        previous = signal.signal(signal.SIGTERM, _raise_exit)
    except ValueError:  # not the main thread: signals are not ours to handle
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _raise_exit(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)
