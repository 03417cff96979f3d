"""Service configuration, read from ``SHELLID_*`` environment variables (pydantic-settings).

The store, model, decision and image-limit settings are the index's
(:class:`index.config.IndexSettings`, shared with the command line); this adds keys, upload
sizes and batching. Every field can be set as ``SHELLID_<FIELD NAME IN CAPITALS>``, e.g.
``SHELLID_API_KEY``; docs/api.md lists them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from pydantic import Field, SecretStr, field_validator

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
    refresh_seconds: float = Field(
        default=1.0,
        ge=0,
        description="How often the service looks for writes other processes committed to the "
        "store (shellid enroll / remove on the same store) and reloads; 0 = never.",
    )
    subject: str = Field(
        default="shell",
        description="What the collection holds, in words for the web page "
        "('This does not look like a shell').",
    )

    @field_validator("api_key", "read_key")
    @classmethod
    def _no_empty_key(cls, value: SecretStr | None) -> SecretStr | None:
        """An empty key is a mistake (an unset variable in a deployment template), not a
        way to turn authentication off: unset the variable for that."""
        if value is not None and not value.get_secret_value().strip():
            raise ValueError(
                "is set but empty; give a key, or unset the variable to serve without one"
            )
        return value

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
        raise SettingsError(settings_problems(exc, given)) from None


def settings_problems(
    error: Any, given: Mapping[str, Any], option: Callable[[str], str] = str
) -> str:
    """One line naming each bad setting of a pydantic ``ValidationError``: ``option(field)``
    for the values in ``given`` (options), ``SHELLID_<FIELD>`` for the environment's."""
    problems = []
    for item in error.errors():
        field = ".".join(str(part) for part in item.get("loc", ()))
        where = option(field) if field in given else f"SHELLID_{field.upper()}"
        problems.append(f"{where}: {item.get('msg', 'invalid value')}")
    return "invalid setting " + "; ".join(problems)
