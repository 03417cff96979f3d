"""Service configuration, read from ``SHELLID_*`` environment variables (pydantic-settings).

The store, model and decision settings are the index's (:class:`index.config.IndexSettings`,
shared with the command line); this adds keys, upload limits and batching. Every field can be
set as ``SHELLID_<FIELD NAME IN CAPITALS>``, e.g. ``SHELLID_API_KEY``; docs/api.md lists them.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, SecretStr

from index.config import IndexSettings

MEBIBYTE = 1024 * 1024


class ServiceSettings(IndexSettings):
    """What the HTTP service serves and the limits it enforces (plus the index settings)."""

    api_key: SecretStr | None = Field(
        default=None,
        description="When set, enrolling and deleting need 'Authorization: Bearer <key>'.",
    )
    read_key: SecretStr | None = Field(
        default=None,
        description="When set, identify/search/list need 'Authorization: Bearer <key>' "
        "(the write key is accepted too).",
    )
    max_file_bytes: int = Field(
        default=10 * MEBIBYTE, gt=0, description="Largest accepted upload, bytes per file."
    )
    max_query_files: int = Field(
        default=5,
        ge=1,
        description="Most photos in one identify/search request (views of one specimen).",
    )
    max_enroll_files: int = Field(
        default=50, ge=1, description="Most photos in one enrollment request."
    )
    max_pixels: int = Field(
        default=50_000_000,
        gt=0,
        description="Largest accepted image, width x height pixels.",
    )
    batch_wait_ms: float = Field(
        default=3.0,
        ge=0,
        description="How long the embedding batcher waits for more concurrent photos before one "
        "forward pass (0 = only what is already queued).",
    )
    batch_max_images: int | None = Field(
        default=None,
        ge=1,
        description="Most photos embedded in one forward pass; unset = 32 on a GPU, 1 on a CPU "
        "(measured: on a CPU a photo costs more inside a batch than alone).",
    )
    embed_workers: int | None = Field(
        default=None,
        ge=1,
        description="Forward passes run side by side; unset = 1 on a GPU, one per CPU core "
        "(at most 4) on a CPU.",
    )
    torch_threads: int | None = Field(
        default=None,
        ge=1,
        description="CPU threads per forward pass (PyTorch's, and ONNX Runtime's on a CPU); "
        "unset = CPU cores divided by workers (1 on a 2-core CPU); torch's default on a GPU.",
    )
    subject: str = Field(
        default="shell",
        description="What the collection holds, in words for the web page "
        "('This does not look like a shell').",
    )

    def writes_need_key(self) -> bool:
        return bool(self.api_key and self.api_key.get_secret_value())

    def reads_need_key(self) -> bool:
        return bool(self.read_key and self.read_key.get_secret_value())


class SettingsError(ValueError):
    """An environment variable or option with a value the service cannot use."""


def load_settings(**overrides: Any) -> ServiceSettings:
    """Settings from the environment, with ``overrides`` (command-line options; None = unset)
    taking precedence. Raises :class:`SettingsError` with one line naming the bad variable."""
    from pydantic import ValidationError

    given = {key: value for key, value in overrides.items() if value is not None}
    try:
        return ServiceSettings(**given)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            field = ".".join(str(part) for part in error.get("loc", ()))
            where = field if field in given else f"SHELLID_{field.upper()}"
            problems.append(f"{where}: {error.get('msg', 'invalid value')}")
        raise SettingsError("invalid setting " + "; ".join(problems)) from None
