"""Options and helpers shared by the collection commands (enroll, identify, search, species,
remove, reindex): where the store is, which model embeds, and how answers are printed."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._options import add_model_options, option_name, options_from

if TYPE_CHECKING:
    from index.config import IndexSettings


def _settings_class() -> type[IndexSettings]:
    """:class:`index.config.IndexSettings`, imported when options are built or read (pydantic
    settings cost a few hundred ms that ``shellid --help`` does not pay)."""
    from index.config import IndexSettings

    return IndexSettings


class CollectionOptionError(ValueError):
    """A setting or option value the collection cannot use."""


def add_store_option(parser: argparse.ArgumentParser) -> None:
    add_model_options(parser, _settings_class(), ["store"])


def check_model_option(model: str | None) -> None:
    """Fail early, in one line and without importing torch, on a ``--model`` that is neither a
    packaged backbone or profile name nor a readable ``MODEL.pt`` (a torch zip archive)."""
    from embedder.settings import MODEL_NAMES

    if not model or model in MODEL_NAMES:
        return
    path = Path(model).expanduser()
    names = ", ".join(MODEL_NAMES)
    if not path.is_file():
        raise FileNotFoundError(f"--model {model}: no such file (or a packaged backbone: {names})")
    import zipfile

    if not zipfile.is_zipfile(path):
        raise CollectionOptionError(
            f"--model {model}: not a shellid model file (a MODEL.pt written by 'shellid train', "
            f"or a packaged backbone: {names})"
        )


def add_model_option(parser: argparse.ArgumentParser, help_text: str | None = None) -> None:
    add_model_options(
        parser,
        _settings_class(),
        ["model"],
        help={
            "model": help_text
            or "MODEL.pt the store was built with, or a packaged backbone name such as "
            "tf_efficientnet_lite2"
        },
    )


def add_top_k_option(parser: argparse.ArgumentParser) -> None:
    """``--top-k``: the answer's candidates (``SHELLID_TOP_K`` when not given)."""
    add_model_options(parser, _settings_class(), ["top_k"], help={"top_k": "candidates to show"})


def add_filter_options(parser: argparse.ArgumentParser) -> None:
    from ._models import FilterOptions

    group = parser.add_argument_group("candidate filters (case-insensitive)")
    add_model_options(group, FilterOptions)


def add_threshold_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "decision thresholds (default: calibrated on the enrolled data; also SHELLID_* variables)"
    )
    add_model_options(
        group,
        _settings_class(),
        ["target_recall", "unknown_threshold", "ood_threshold"],
        help={"target_recall": "share of known-species photos to accept when calibrating"},
    )


def add_decision_options(parser: argparse.ArgumentParser) -> None:
    """Every other identification option (:class:`index.config.DecisionOptions`: scoring,
    calibration, search), each also a ``SHELLID_*`` variable."""
    from index.config import DecisionOptions

    group = parser.add_argument_group(
        "identification (index.config.DecisionOptions; also SHELLID_* variables)"
    )
    thresholds = {"target_recall"}
    add_model_options(
        group, _settings_class(), [n for n in DecisionOptions.model_fields if n not in thresholds]
    )


def settings_from(args: argparse.Namespace, **extra: Any) -> IndexSettings:
    """:class:`index.config.IndexSettings` from the environment plus the given options (a bad
    value is one line naming the option or the variable)."""
    settings = _settings_class()
    given = {**options_from(args, settings), **extra}
    return settings.load(given, option_name(settings))


def open_collection(
    args: argparse.Namespace,
    *,
    need_model: bool = True,
    create: bool = False,
    check_model: bool = True,
    exported_model: bool = False,
):
    """Open the collection the options name (a missing store is an error unless ``create``).

    The model is checked here (a wrong ``--model`` fails before the store opens) but loaded
    only when the first photo is embedded; with ``exported_model`` from its cached ONNX
    export without PyTorch when it can (one-off answers: identify, search, enroll)."""
    settings = settings_from(args)
    if need_model:
        check_model_option(settings.model)
    store = str(settings.store)
    if not create and "://" not in store and not Path(store).expanduser().exists():
        raise CollectionOptionError(
            f"store {store} does not exist (enroll some species first: shellid enroll)"
        )
    from index.workflows.collection import Collection

    return Collection.open(
        settings.store,
        model=settings.model,
        create=create,
        settings=settings,
        need_model=need_model,
        check_model=check_model,
        exported_model=exported_model,
    )


def store_uri(args: argparse.Namespace) -> str:
    """The store the options name, without opening it."""
    return str(settings_from(args).store)


def taxonomy_value(value: Any) -> Any:
    """Missing taxonomy is ``None`` in JSON, CSV and tables alike (never ``""``)."""
    return None if value == "" else value


def table(rows: list[list[str]], header: list[str], right: set[int] | None = None) -> str:
    """A plain text table with aligned columns (``right``: right-aligned column indexes)."""
    right = right or set()
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(row: list[str]) -> str:
        cells = [
            str(c).rjust(widths[i]) if i in right else str(c).ljust(widths[i])
            for i, c in enumerate(row)
        ]
        return "  ".join(cells).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])
