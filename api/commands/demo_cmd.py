"""``shellid demo``: fill a store with a sample collection so the service has something to show.

The sample is the real shell photos in ``../shared/datasets/shells-zhang8`` (looked up beside
the repository and beside the current directory, or under ``$SHELLID_SHARED/datasets``), or
any class-folder tree given with ``--data``. Photos are enrolled by specimen (the views of one
shell count as one specimen, ``--group-regex specimen``) with the taxonomy of
``api/demo/taxonomy.csv`` (the sample's genera and families, sources in
``api/demo/SOURCES.md``), and one specimen of each species is kept back: not enrolled, but
recorded in the store and shown on the web page as "try these" (:mod:`api.try_these`).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

from api.commands._collection import add_model_option, add_store_option, check_model_option
from api.commands._options import add_model_options

HELP = "fill a store with the sample shell collection (for trying the service)"

SAMPLE_NAME = "shells-zhang8"
REPO_ROOT = Path(__file__).resolve().parents[2]
#: genus, family and region of the sample's species (see api/demo/SOURCES.md)
SAMPLE_TAXONOMY = Path(__file__).resolve().parents[1] / "demo" / "taxonomy.csv"


class SampleNotFoundError(RuntimeError):
    """Neither the sample collection nor a ``--data`` folder is available."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ._models import DemoOptions

    add_store_option(parser)
    add_model_option(parser, "MODEL.pt to embed with")
    add_model_options(
        parser,
        DemoOptions,
        help={"data": f"a folder per species to enroll instead of the sample ({SAMPLE_NAME})"},
    )


def sample_candidates(cwd: Path | None = None) -> list[Path]:
    """Where the sample collection is looked for, in order."""
    cwd = cwd or Path.cwd()
    places = []
    from api.settings import CommandLineSettings

    shared = CommandLineSettings.load().shared  # $SHELLID_SHARED
    if shared is not None:
        places.append(shared / "datasets" / SAMPLE_NAME)
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


def taxonomy_for(data: Path, given: Path | None) -> Path | None:
    """The taxonomy CSV to enrol ``data`` with (see ``--taxonomy``)."""
    if given is not None:
        if not given.is_file():
            raise SampleNotFoundError(f"--taxonomy {given}: no such file")
        return given
    if (data / "taxonomy.csv").is_file():
        return data / "taxonomy.csv"
    return SAMPLE_TAXONOMY if data.name == SAMPLE_NAME and SAMPLE_TAXONOMY.is_file() else None


def _natural(text: str) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def species_name(record) -> str:
    """The name a record is enrolled under: the taxonomy's ``accepted_name`` (its authority
    left out) when it gives one, else the folder's (``Aandara_consociata`` -> the source's
    ``Anadara_consociata``)."""
    from index.names import accepted_species

    accepted = record.taxonomy.get("accepted_name", "")
    return accepted_species(accepted) if accepted.strip() else record.species


def plan(records: list, hold_out: int) -> tuple[dict[str, list], list[dict]]:
    """``({species: records to enrol}, [kept-back specimen])``, species by
    :func:`species_name`: per species, the last ``hold_out`` specimens in natural order
    (specimen 10 after 9) are kept back, never all."""
    by_species: dict[str, dict[str, list]] = {}
    for record in records:
        name = species_name(record)
        by_species.setdefault(name, {}).setdefault(record.group, []).append(record)
    enrol: dict[str, list] = {}
    kept: list[dict] = []
    for species, groups in by_species.items():
        order = sorted(groups, key=_natural)
        n = min(max(hold_out, 0), len(order) - 1)
        back = order[len(order) - n :] if n else []
        enrol[species] = [r for g in order if g not in back for r in groups[g]]
        kept += [
            {
                "species": species,
                "specimen": group.split("/", 1)[-1],
                "files": [r.path for r in groups[group]],
            }
            for group in back
        ]
    return enrol, kept


def withdraw(collection, kept: list[dict]) -> int:
    """Remove from the store the photos of kept-back specimens that an earlier demo enrolled
    (same species and file name); returns how many went."""
    identifier = collection.index.identifier
    if identifier is None or not kept:
        return 0
    wanted = {(k["species"], Path(f).name) for k in kept for f in k["files"]}
    names = collection.catalogue.photo_names()
    ids = [
        i
        for i, species in zip(identifier.specimen_ids, identifier.labels, strict=True)
        if (species, names.get(i, "")) in wanted
    ]
    for specimen_id in ids:
        collection.index.remove_specimen(specimen_id)
    return len(ids)


def run(args: argparse.Namespace) -> int:
    from api.app import open_collection
    from api.settings import load_settings

    if args.hold_out < 0:
        raise ValueError("--hold-out must be 0 or more")
    if args.subject is not None:
        from api.subject import clean

        args.subject = clean(args.subject)  # a bad word fails before anything is enrolled
    settings = load_settings(store=args.store, model=args.model)
    check_model_option(settings.model)
    collection = None
    if args.if_empty:
        collection = open_collection(settings)
        if len(collection.catalogue) > 0:
            print(
                f"shellid demo: {settings.store} already holds {len(collection.catalogue)} photos; "
                "nothing to do"
            )
            return 0
    try:
        data = find_data(args.data)
        taxonomy_csv = taxonomy_for(data, args.taxonomy)
    except SampleNotFoundError as exc:
        if args.if_empty and args.data is None:
            print(f"shellid demo: {exc}; the store stays empty", file=sys.stderr)
            return 0
        raise
    from api import subject, try_these
    from embedder.datasets import scan_collection

    records = scan_collection(data, group_pattern=args.group_regex, taxonomy_csv=taxonomy_csv)
    enrol, kept = plan(records, args.hold_out)
    collection = collection or open_collection(settings)
    taxonomy_note = f" with {taxonomy_csv}" if taxonomy_csv else ""
    print(f"shellid demo: enrolling {data}{taxonomy_note} into {settings.store}")
    reports = enrol_sample(collection, enrol, data.name)
    unseen = withdraw(collection, kept)  # a store filled before: the kept-back must be unseen
    try_these.record(collection, kept)
    word = args.subject or (None if args.data is not None else "shell")
    if word:
        subject.record(collection.store, word)
    if unseen:
        print(f"shellid demo: removed {unseen} photos of kept-back specimens enrolled before")
    print_summary(collection, reports, kept)
    from ._listing import write_listing

    write_listing(collection)
    return 0


def enrol_sample(collection: Any, enrol: dict[str, list[Any]], source: str) -> list[Any]:
    """Enrol each species' chosen photos (one progress bar), then calibrate once."""
    from tqdm import tqdm

    reports = []
    total = sum(len(r) for r in enrol.values())
    with tqdm(total=total, desc="enrolling", unit="img", file=sys.stderr) as bar:
        for species, chosen in enrol.items():
            bar.set_postfix_str(species[:40])
            reports.append(
                collection.enroll(
                    species,
                    [r.path for r in chosen],
                    dict(chosen[0].taxonomy),
                    source,
                    groups=[r.group.split("/", 1)[-1] for r in chosen],
                    calibrate=False,
                )
            )
            bar.update(len(chosen))
    if any(r.added for r in reports):
        collection.index.calibrate()
    return reports


def print_summary(collection: Any, reports: list[Any], kept: list[dict[str, Any]]) -> None:
    """What was added, skipped and kept back to try; the first unreadable photos on stderr."""
    added = sum(r.added for r in reports)
    duplicates = sum(len(r.duplicates) for r in reports)
    refused = sum(len(r.refused) for r in reports)
    errors = {name: why for r in reports for name, why in r.errors.items()}
    print(
        f"shellid demo: added {added} photos of {len(reports)} species "
        f"({duplicates} already there, {refused} refused as enrolled under another species, "
        f"{len(errors)} unreadable); the store holds {len(collection.catalogue)} photos"
    )
    if kept:
        print(
            f"shellid demo: kept back {len(kept)} specimens "
            f"({sum(len(k['files']) for k in kept)} photos) to try: "
            + ", ".join(f"{k['specimen']}" for k in kept)
        )
    for name, why in list(errors.items())[:10]:
        print(f"  unreadable: {name}: {why}", file=sys.stderr)
