"""``shellid demo``: fill a store with a sample collection so the service has something to show.

The sample is the real shell photos in ``../shared/datasets/shells-zhang8`` (looked up beside
the repository and beside the current directory, or under ``$SHELLID_SHARED/datasets``), or
any class-folder tree given with ``--data``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from api.commands._collection import add_model_option, add_store_option

HELP = "fill a store with the sample shell collection (for trying the service)"

SAMPLE_NAME = "shells-zhang8"
REPO_ROOT = Path(__file__).resolve().parents[2]


class SampleNotFoundError(RuntimeError):
    """Neither the sample collection nor a ``--data`` folder is available."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_store_option(parser)
    add_model_option(
        parser, "MODEL.pt to embed with (default: $SHELLID_MODEL or the frozen backbone)"
    )
    parser.add_argument(
        "--data",
        type=Path,
        help=f"a folder per species to enroll instead of the sample ({SAMPLE_NAME})",
    )
    parser.add_argument(
        "--if-empty",
        action="store_true",
        help="do nothing when the store already holds photos; when no sample is found, "
        "say so and succeed (used by 'make serve')",
    )


def sample_candidates(cwd: Path | None = None) -> list[Path]:
    """Where the sample collection is looked for, in order."""
    cwd = cwd or Path.cwd()
    places = []
    if os.environ.get("SHELLID_SHARED"):
        places.append(Path(os.environ["SHELLID_SHARED"]) / "datasets" / SAMPLE_NAME)
    for base in (REPO_ROOT, cwd):
        places.append(base.parent / "shared" / "datasets" / SAMPLE_NAME)
    unique: list[Path] = []
    for place in places:
        if place.resolve() not in [p.resolve() for p in unique]:
            unique.append(place)
    return unique


def find_data(data: Path | None) -> Path:
    """The folder to enroll: ``--data`` when given, else the first sample folder that exists."""
    if data is not None:
        if not data.is_dir():
            raise SampleNotFoundError(f"--data {data}: no such folder")
        return data
    for place in sample_candidates():
        if place.is_dir():
            return place
    looked = ", ".join(str(p) for p in sample_candidates())
    raise SampleNotFoundError(
        f"no sample collection found (looked for {looked}); pass --data DIR, a folder with one "
        f"sub-folder of photos per species"
    )


def run(args: argparse.Namespace) -> int:
    from api.app import open_collection
    from api.settings import load_settings

    settings = load_settings(store=args.store, model=args.model)
    collection = None
    if args.if_empty:
        collection = open_collection(settings)
        if len(collection) > 0:
            print(
                f"shellid demo: {settings.store} already holds {len(collection)} photos; "
                "nothing to do"
            )
            return 0
    try:
        data = find_data(args.data)
    except SampleNotFoundError as exc:
        if args.if_empty and args.data is None:
            print(f"shellid demo: {exc}; the store stays empty", file=sys.stderr)
            return 0
        raise
    collection = collection or open_collection(settings)
    print(f"shellid demo: enrolling {data} into {settings.store}")
    reports = collection.enroll_folder(data, progress=True)
    added = sum(r.added for r in reports)
    duplicates = sum(len(r.duplicates) for r in reports)
    refused = sum(len(r.refused) for r in reports)
    errors = {name: why for r in reports for name, why in r.errors.items()}
    print(
        f"shellid demo: added {added} photos of {len(reports)} species "
        f"({duplicates} already there, {refused} refused as enrolled under another species, "
        f"{len(errors)} unreadable); the store holds {len(collection)} photos"
    )
    for name, why in list(errors.items())[:10]:
        print(f"  unreadable: {name}: {why}", file=sys.stderr)
    return 0
