"""Settings of the embedder that need no torch, and the base of every ``SHELLID_*`` settings
class: :class:`ShellidSettings` (the environment prefix, ``.env``, one-line errors),
:class:`EmbedderSettings` (runtime and cache folder), the packaged backbones, heads and losses,
and :class:`TrainingConfig`. The command line reads its options and defaults here, so
``shellid --help`` and ``shellid train --help`` never import torch.

The settings form one tree, each package adding its own layer to the one below:
``api.settings.ServiceSettings`` ⊃ ``index.config.IndexSettings`` ⊃ :class:`EmbedderSettings`.
Every field ``name`` of the tree is the environment variable ``SHELLID_<NAME>``;
docs/configuration.md lists them all (generated: ``python -m api.settings``).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from .heads import HEADS
from .losses import LOSSES

#: Every environment variable of shellid starts with this.
ENV_PREFIX = "SHELLID_"

#: Packaged backbones (``embedder.backbones.BACKBONES``), the default first.
BACKBONE_NAMES = (
    "tf_efficientnet_lite0",
    "tf_efficientnet_lite1",
    "tf_efficientnet_lite2",
    "efficientnet_lite0",
)
DEFAULT_BACKBONE = BACKBONE_NAMES[0]
#: The backbone the first release used by default (stores built with it need ``reindex``).
LEGACY_BACKBONE = "efficientnet_lite0"
#: Model profiles (``embedder.profiles.PROFILES``): frozen recipes over the packaged backbones.
PROFILE_NAMES = ("lite02-ensemble",)
#: Every name ``--model`` / ``SHELLID_MODEL`` takes besides a MODEL.pt path.
MODEL_NAMES = BACKBONE_NAMES + PROFILE_NAMES
#: The packaged heads and losses (their registries, :data:`embedder.heads.HEADS` and
#: :data:`embedder.losses.LOSSES`, are torch-free; a name registered later is a choice too).
HEAD_KINDS = tuple(HEADS)
LOSS_KINDS = tuple(LOSSES)
#: Runtime names accepted by ``embedder.runtime.resolve_runtime`` (and ``Embedder(runtime=)``).
RUNTIMES = ("auto", "torch", "onnx")
Runtime = Literal["auto", "torch", "onnx"]


class SettingsError(ValueError):
    """An environment variable or option with a value shellid cannot use (one line)."""


def env_name(field_name: str) -> str:
    """The environment variable of a settings field: ``SHELLID_<FIELD>``."""
    return f"{ENV_PREFIX}{field_name.upper()}"


def settings_problems(
    error: ValidationError, given: Mapping[str, Any], option: Callable[[str], str] = str
) -> str:
    """One line naming each bad setting of a pydantic ``ValidationError``: ``option(field)``
    for the values in ``given`` (options, arguments), ``SHELLID_<FIELD>`` for the
    environment's."""
    return "invalid setting " + problems(
        error, lambda name: option(name) if name in given else env_name(name)
    )


def problems(error: ValidationError, where: Callable[[str], str] = str) -> str:
    """Each problem of a pydantic ``ValidationError`` as ``where(field): message``, joined by
    ``; `` (a problem of the whole model is its message alone)."""
    found = []
    for item in error.errors():
        name = ".".join(str(part) for part in item.get("loc", ()))
        message = str(item.get("msg", "invalid value")).removeprefix("Value error, ")
        found.append(f"{where(name)}: {message}" if name else message)
    return "; ".join(found)


class ShellidSettings(BaseSettings):
    """Base of every settings layer: fields read ``SHELLID_<FIELD>`` (and a ``.env`` file in
    the working directory); :meth:`load` turns a bad value into one :class:`SettingsError`
    line."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_file=".env", extra="ignore", protected_namespaces=()
    )

    @classmethod
    def load(
        cls,
        overrides: Mapping[str, Any] | None = None,
        option: Callable[[str], str] = str,
    ) -> Self:
        """The settings from the environment, ``overrides`` (None values = not given) taking
        precedence. Raises :class:`SettingsError` naming each bad variable (or
        ``option(field)`` for a bad override)."""
        given = {key: value for key, value in (overrides or {}).items() if value is not None}
        try:
            return cls(**given)
        except ValidationError as exc:
            raise SettingsError(settings_problems(exc, given, option)) from None


def standard_cache_root() -> Path:
    """The cache folder when no ``cache_dir`` is given: ``$XDG_CACHE_HOME/shellid``, else
    ``~/.cache/shellid`` (the platform's convention; ``SHELLID_CACHE_DIR`` is read only by
    :class:`EmbedderSettings`, which the entry points load and pass down)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "shellid"


class EmbedderSettings(ShellidSettings):
    """How photos become vectors on this machine (``SHELLID_RUNTIME``, ``SHELLID_CACHE_DIR``)."""

    runtime: Runtime = Field(
        default="auto",
        description="where embedding runs: auto (ONNX Runtime on a CPU when installed, "
        "PyTorch on a GPU), onnx or torch",
    )
    cache_dir: Path | None = Field(
        default=None,
        description="the one folder of regenerable files: ONNX exports of models, embedding "
        "and training feature caches",
        json_schema_extra={"default_text": "$XDG_CACHE_HOME/shellid, else ~/.cache/shellid"},
    )
    cache: Path | None = Field(
        default=None,
        description="deprecated (the first releases' training feature cache folder itself): "
        "read only when SHELLID_CACHE_DIR is unset, with a warning; set SHELLID_CACHE_DIR",
    )

    @field_validator("runtime", mode="before")
    @classmethod
    def _known_runtime(cls, value: Any) -> Any:
        """Case and blanks do not matter; empty is ``auto``; anything else names the choices."""
        if isinstance(value, str):
            value = value.strip().lower() or "auto"
            if value not in RUNTIMES:
                raise ValueError(f"unknown runtime {value!r}; choose one of {', '.join(RUNTIMES)}")
        return value

    @field_validator("cache_dir", "cache", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    def cache_root(self) -> Path:
        """``cache_dir``, else ``$XDG_CACHE_HOME/shellid``, else ``~/.cache/shellid``."""
        return self.cache_dir if self.cache_dir is not None else standard_cache_root()

    def embedder_options(self) -> dict[str, Any]:
        """``runtime`` and ``cache_dir`` for :class:`embedder.Embedder` and the model loaders:
        the settings passed down instead of read again."""
        return {"runtime": self.runtime, "cache_dir": self.cache_root()}

    def features_dir(self) -> Path:
        """The training feature cache: ``<cache root>/features``; a set ``SHELLID_CACHE``
        still names the folder itself, with a :class:`FutureWarning`, unless
        ``SHELLID_CACHE_DIR`` is set too."""
        if self.cache is not None and self.cache_dir is None:
            warnings.warn(
                f"{env_name('cache')} is deprecated and will be ignored in a later release: "
                f"set {env_name('cache_dir')} instead (the feature cache is its features/ "
                "folder)",
                FutureWarning,
                stacklevel=3,
            )
            return self.cache
        return self.cache_root() / "features"


def option_field(default: Any, description: str, **extra: Any) -> Any:
    """A configuration field with its ``description``, bounds (``ge``, ``gt``, ``lt``, ``le``)
    and command-line extras (``choices``, ``option`` name, ``metavar``, ``default_text``) for
    ``api/commands/_options.py``."""
    bounds = {key: extra.pop(key) for key in ("ge", "gt", "lt", "le") if key in extra}
    return Field(default=default, description=description, json_schema_extra=extra, **bounds)


class TrainingError(ValueError):
    """Training data or settings that cannot work (too few classes, bad values)."""


class TrainingConfig(BaseModel):
    """Everything that defines a training run; saved into ``MODEL.pt``.

    ``embedding_dim=None`` keeps the backbone's feature size (required by the ``residual`` and
    ``identity`` heads; ``linear``/``mlp`` then default to 512). ``group_pattern`` (regex or
    preset, see :data:`embedder.datasets.GROUP_PRESETS`) keeps views of one specimen or frames
    of one track on one side of each validation episode. Each field gives ``shellid train``
    its option and help (``api/commands/_options.py``). A value that cannot work is a pydantic
    ``ValidationError`` (a ``ValueError``) naming the setting, raised when the config is made.
    """

    model_config = ConfigDict(validate_assignment=True)

    backbone: str = option_field(
        DEFAULT_BACKBONE,
        "pretrained backbone to start from: EfficientNet-Lite0/1/2 as trained "
        "(efficientnet_lite0: the first release's loading, for old models)",
        choices=BACKBONE_NAMES,
    )
    unfreeze: int = option_field(2, "last backbone stages to train; 0 trains the head only", ge=0)
    head: str = option_field("residual", "projection head", choices=HEADS.names)
    embedding_dim: int | None = option_field(
        None,
        "embedding size",
        ge=2,
        default_text="the backbone's feature size; 512 for linear/mlp heads",
    )
    loss: str = option_field("multisimilarity", "metric loss", choices=LOSSES.names)
    epochs: int = option_field(15, "most epochs", ge=1)
    lr: float = option_field(1e-4, "head learning rate", gt=0)
    tail_lr_scale: float = option_field(
        0.3, "learning rate of the unfrozen stages relative to --lr", ge=0
    )
    weight_decay: float = option_field(1e-4, "AdamW weight decay")
    views: int = option_field(
        4, "augmented views cached per training photo, besides the clean one", ge=0
    )
    m_per_class: int = option_field(
        4, "photos of each species per batch (pairs of one species are needed)", ge=2
    )
    batch_size: int = option_field(64, "photos per batch (at least two species)")
    train_batchnorm: bool = option_field(
        False, "update the batch-norm statistics of the unfrozen stages while training"
    )
    validation: Literal["species", "photos"] = option_field(
        "species",
        "what picks the best epoch: species = held-out species never trained on, scored by "
        "5-way 1-shot (unseen species); photos = held-out specimens of the trained species, "
        "scored by nearest-prototype top-1 among all trained species (seen species)",
    )
    val_fraction: float = option_field(
        0.15,
        "share held out to pick the best epoch: of the species (validation species, at least "
        "2) or of each species' specimens (validation photos, at least 1 of 3 or more); "
        "0 = none",
        ge=0,
        lt=1,
    )
    val_episodes: int = option_field(300, "few-shot episodes of each validation measure")
    patience: int = option_field(4, "stop after this many epochs without improvement", ge=1)
    seed: int = option_field(0, "seed of the splits, the sampling and the initialisation")
    normalize_shells: bool = option_field(
        False, "crop studio shell photos to the object on black before embedding"
    )
    group_pattern: str | None = option_field(
        None,
        "regex on file names whose (?P<group>...) names one specimen or track, or a preset: "
        "specimen, track, image",
        option="--group-regex",
        metavar="REGEX",
        default_text="every photo is its own specimen",
    )
    device: str = option_field("auto", "auto, cpu or cuda")

    @field_validator("head", "loss")
    @classmethod
    def _known_kind(cls, value: str, info: ValidationInfo) -> str:
        registry = HEADS if info.field_name == "head" else LOSSES
        if value not in registry:
            raise ValueError(registry.unknown_message(value))
        return value

    @model_validator(mode="after")
    def _two_species_per_batch(self) -> Self:
        if self.batch_size < 2 * self.m_per_class:
            raise ValueError("batch_size must hold at least two classes (2 x m_per_class)")
        return self

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainingConfig:
        """The config a ``MODEL.pt`` saved (keys of other versions ignored)."""
        return cls(**{k: v for k, v in data.items() if k in cls.model_fields})
