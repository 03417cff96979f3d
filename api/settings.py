"""Service configuration, read from ``SHELLID_*`` environment variables (pydantic-settings).

The top of the settings tree: :class:`ServiceSettings` ⊃ :class:`index.config.IndexSettings`
(store, model, decisions, image limits; shared with the command line) ⊃
:class:`embedder.settings.EmbedderSettings` (runtime, cache folder); this layer adds keys,
upload sizes and batching. :class:`CommandLineSettings` holds the few variables only the
``shellid`` command reads. Every field is ``SHELLID_<FIELD NAME IN CAPITALS>``, e.g.
``SHELLID_API_KEY``; docs/configuration.md lists them all, generated from these classes by
``python -m api.settings > docs/configuration.md``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, SecretStr, field_validator

from embedder.settings import (
    EmbedderSettings,
    SettingsError,
    ShellidSettings,
    TrainingConfig,
    env_name,
    settings_problems,
)
from index.config import DecisionOptions, IndexSettings

__all__ = [
    "CommandLineSettings",
    "ServiceSettings",
    "SettingsError",
    "field_bound",
    "load_settings",
    "reference",
    "settings_problems",
]

MEBIBYTE = 1024 * 1024


class ServiceSettings(IndexSettings):
    """What the HTTP service serves and the limits it enforces (plus the index settings)."""

    api_key: SecretStr | None = Field(
        default=None,
        description="When set, enrolling, deleting and training need "
        "'Authorization: Bearer <key>'.",
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
    subject: str | None = Field(
        default=None,
        description="What the collection holds, one noun for the page and the command line "
        "('This does not look like a fish'); overrides the store's own (set by shellid demo, "
        "shellid enroll --subject or PUT /v1/subject).",
        json_schema_extra={"default_text": "the store's, else shell"},
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


class CommandLineSettings(ShellidSettings):
    """Variables only the ``shellid`` command reads."""

    debug: bool = Field(
        default=False,
        description="show the full traceback of an error instead of one line (as --debug)",
    )
    shared: Path | None = Field(
        default=None,
        description="folder holding datasets/ with the sample collection 'shellid demo' enrols "
        "(also looked for in ../shared next to the code and the working directory)",
    )

    @field_validator("debug", "shared", mode="before")
    @classmethod
    def _empty_is_default(cls, value: Any, info: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            return False if info.field_name == "debug" else None
        return value


def field_bound(model: type[BaseModel], name: str, bound: str) -> Any:
    """The ``bound`` (``ge``, ``gt``, ``le`` or ``lt``) of a settings field, for an HTTP
    parameter that must accept exactly what the setting does (``top_k``)."""
    for item in model.model_fields[name].metadata:
        if hasattr(item, bound):
            return getattr(item, bound)
    raise KeyError(f"{model.__name__}.{name} has no {bound} bound")


def load_settings(**overrides: Any) -> ServiceSettings:
    """Settings from the environment, with ``overrides`` (command-line options; None = unset)
    taking precedence. Raises :class:`SettingsError` with one line naming the bad variable
    (or ``--option`` for a bad override)."""
    return ServiceSettings.load(overrides, lambda name: "--" + name.replace("_", "-"))


#: The layers of the settings tree, bottom up: (title, class, fields it adds).
def _layers() -> list[tuple[str, type[BaseModel], list[str]]]:
    own = {
        cls: [name for name in cls.model_fields if name not in base.model_fields]
        for cls, base in (
            (IndexSettings, EmbedderSettings),
            (ServiceSettings, IndexSettings),
        )
    }
    decisions = list(DecisionOptions.model_fields)
    return [
        (
            "Embedder (`embedder.settings.EmbedderSettings`)",
            EmbedderSettings,
            list(EmbedderSettings.model_fields),
        ),
        (
            "Decisions (`index.config.DecisionOptions`, also `IdentifierConfig` in code)",
            IndexSettings,
            decisions,
        ),
        (
            "Store, answers and image limits (`index.config.IndexSettings`)",
            IndexSettings,
            [name for name in own[IndexSettings] if name not in decisions],
        ),
        ("HTTP service (`api.settings.ServiceSettings`)", ServiceSettings, own[ServiceSettings]),
        (
            "Command line only (`api.settings.CommandLineSettings`)",
            CommandLineSettings,
            list(CommandLineSettings.model_fields),
        ),
    ]


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _default_cell(spec: Any) -> str:
    """A default value in code type, its meaning (when unset) in words."""
    if spec.extra.get("default_text") or spec.default is None:
        return _cell(spec.default_text())
    return f"`{spec.default_text()}`"


def _values_cell(spec: Any) -> str:
    """The values a setting takes: its choices, else its type, and its bounds."""
    kind = " / ".join(f"`{c}`" for c in spec.choices) if spec.choices else spec.kind.__name__
    return _cell(" ".join(part for part in (kind, spec.bounds_text()) if part))


INTRODUCTION = [
    "# Configuration reference",
    "",
    "<!-- generated by `python -m api.settings > docs/configuration.md` from the settings "
    "classes; tests/test_config.py fails when this file differs -->",
    "",
    "Every setting is an environment variable `SHELLID_<NAME>` (a `.env` file in the working "
    "directory is read too). The settings form one tree: the service's "
    "(`api.settings.ServiceSettings`) extends the index's (`index.config.IndexSettings`, "
    "which the command line reads too), which extends the embedder's "
    "(`embedder.settings.EmbedderSettings`). A command-line option, where a command has one "
    "(`--store`, `--model`, `--target-recall`, ...), takes precedence over the variable. A "
    "value that cannot be used stops the command or the service at start-up with one line "
    "naming the variable (`invalid setting SHELLID_TOP_K: Input should be greater than or "
    "equal to 1`).",
    "",
]


def _settings_table(title: str, model: type[BaseModel], names: list[str]) -> list[str]:
    """One layer of the settings tree: variable, default, values, meaning."""
    from .commands._options import option_specs

    specs = option_specs(model)
    lines = [f"## {title}", "", "| Variable | Default | Values | Meaning |", "|---|---|---|---|"]
    for name in names:
        spec = specs[name]
        lines.append(
            f"| `{env_name(name)}` | {_default_cell(spec)} | {_values_cell(spec)} | "
            f"{_cell(spec.description)} |"
        )
    return [*lines, ""]


def _training_table() -> list[str]:
    """The options of ``shellid train`` (not variables: saved into the model)."""
    from .commands._options import option_specs

    lines = [
        "## `shellid train` options (`embedder.settings.TrainingConfig`)",
        "",
        "Not environment variables: what one training run does, saved into the model it "
        "writes. A value the field refuses is an error naming the option.",
        "",
        "| Option | Default | Values | Meaning |",
        "|---|---|---|---|",
    ]
    for spec in option_specs(TrainingConfig).values():
        option = f"`{spec.option}`" + (" (flag)" if spec.kind is bool else "")
        lines.append(
            f"| {option} | {_default_cell(spec)} | {_values_cell(spec)} | "
            f"{_cell(spec.description)} |"
        )
    return lines


def reference() -> str:
    """docs/configuration.md: every setting with its variable, default, values and meaning,
    and the options of ``shellid train`` (tests/test_config.py keeps the file equal to this)."""
    lines = list(INTRODUCTION)
    for title, model, names in _layers():
        lines += _settings_table(title, model, names)
    return "\n".join(lines + _training_table()) + "\n"


if __name__ == "__main__":  # pragma: no cover - python -m api.settings > docs/configuration.md
    print(reference(), end="")
