"""``shellid enroll``: add species to the specimen store from folder trees, or photos of one
species (files, folders and patterns) with ``--species``."""

from __future__ import annotations

import argparse
import json
import sys

from index.names import display_name as species_display

from ._collection import add_model_option, add_store_option, open_collection
from ._options import add_model_options
from ._output import counted
from ._ray import add_ray_options

HELP = "enroll species from photos (folders with a folder per species, or --species NAME PHOTOS)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ._models import EnrollOptions, EnrollTaxonomy

    add_model_options(parser, EnrollOptions, ["data", "species"])
    add_store_option(parser)
    add_model_option(parser, "MODEL.pt to embed with")
    add_model_options(parser, EnrollOptions, ["taxonomy", "group_regex"])
    tax = parser.add_argument_group("taxonomy of --species (override the CSV)")
    add_model_options(tax, EnrollTaxonomy)
    add_model_options(parser, EnrollOptions, ["source", "subject", "json_"])
    add_ray_options(parser, commit=True)


def run(args: argparse.Namespace) -> int:
    photos = check_inputs(args)
    ray = None
    if args.ray:
        from ._ray import ray_options

        ray = ray_options(args)  # no Ray installed: one line, before anything is read
    taxonomy = taxonomy_given(args)
    subject_word = None
    if args.subject is not None:
        from ..subject import clean

        subject_word = clean(args.subject)  # a bad word fails before anything is read
    collection = open_collection(args, create=True, exported_model=True)
    if subject_word is not None:
        from ..subject import record

        record(collection.store, subject_word)
    progress = sys.stderr.isatty() or not args.json
    if photos is not None:
        reports = _enroll_photos(args, collection, photos, taxonomy, ray, progress)
    elif ray is not None:
        reports = _enroll_folders_on_ray(args, collection, ray, progress)
    else:
        reports = []
        for root in args.data:
            reports += collection.enroll_folder(
                root,
                progress=progress,
                group_pattern=args.group_regex,
                taxonomy_csv=args.taxonomy,
                source=args.source,
            )
    print_reports(reports, collection, args.json)
    from ._listing import write_listing

    write_listing(collection)  # keeps 'shellid species' fast
    failed = all(r.added == 0 and not r.duplicates for r in reports)
    return 1 if failed else 0


def check_inputs(args: argparse.Namespace) -> list | None:
    """The photos of ``--species`` (None for folder trees), refused in one line when none can
    be read; a missing path or a single photo without ``--species`` fails at once."""
    from pathlib import Path

    from ._inputs import expand_photos

    if args.species:
        photos, _ = expand_photos(args.data)  # a missing path fails here, at once
        refuse_unreadable(photos, args)
        return photos
    for item in args.data:
        path = Path(item)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such file or folder")
        if not path.is_dir():
            raise ValueError(
                f"{path} is a single photo: say which species it shows with --species NAME"
            )
    return None


def taxonomy_given(args: argparse.Namespace) -> dict[str, str]:
    """The taxonomy of ``--species`` from ``--genus/--family/--region`` over its
    ``--taxonomy`` row (a folder tree reads the CSV itself)."""
    from pathlib import Path

    if args.taxonomy and not Path(args.taxonomy).is_file():
        raise FileNotFoundError(f"--taxonomy {args.taxonomy}: no such file")
    taxonomy = {k: getattr(args, k) for k in ("genus", "family", "region") if getattr(args, k)}
    if taxonomy and not args.species:
        raise ValueError(
            "--genus/--family/--region describe --species; for a folder tree use --taxonomy CSV"
        )
    if args.species and args.taxonomy:
        from embedder.datasets import load_taxonomy

        row = load_taxonomy(Path(args.taxonomy)).get(args.species.strip().replace(" ", "_"), {})
        taxonomy = row | taxonomy
    return taxonomy


def _enroll_photos(
    args: argparse.Namespace, collection, photos: list, taxonomy: dict, ray, progress: bool
) -> list:
    """Enrol the photos of one ``--species`` (grouped into specimens by ``--group-regex``)."""
    from index.workflows.collection import enrolled_from

    from ._inputs import group_photos

    groups = {p: name for name, files in group_photos(photos, args.group_regex) for p in files}
    source = args.source or enrolled_from(photos)
    if ray is not None:
        from index.workflows.ray.enrol import EnrolJob, enroll_on_ray

        job = EnrolJob(args.species, photos, [groups[p] for p in photos], taxonomy, source)
        return enroll_on_ray(collection, [job], ray, progress=progress)
    return [
        collection.enroll(
            args.species,
            photos,
            taxonomy,
            source,
            groups=[groups[p] for p in photos],
            progress=progress,
        )
    ]


def print_reports(reports: list, collection, as_json: bool) -> None:
    """One line per species (or one JSON object), refused and unreadable photos on stderr,
    then the store's totals."""
    for report in reports:
        if as_json:
            print(json.dumps(report.model_dump(mode="json", exclude={"specimen_ids"})))
            continue
        notes = []
        if report.duplicates:
            notes.append(f"{len(report.duplicates)} already enrolled")
        if report.refused:
            notes.append(f"{len(report.refused)} refused")
        if report.errors:
            notes.append(f"{len(report.errors)} unreadable")
        extra = f" ({', '.join(notes)})" if notes else ""
        print(
            f"{species_display(report.species)}: +{counted(report.added, 'photo')}{extra}, "
            f"{report.total} in the store"
        )
        for name, why in {**report.refused, **report.errors}.items():
            print(f"  {name}: {why}", file=sys.stderr)
    if not as_json:
        th = collection.catalogue.thresholds
        added = sum(r.added for r in reports)
        species = sum(1 for r in reports if r.added)
        print(
            f"enrolled {counted(added, 'photo')} of {counted(species, 'species')} into "
            f"{collection.store.uri} ({counted(len(collection.catalogue), 'photo')}, "
            f"{counted(len(collection.catalogue.species()), 'species')} in all; "
            f"thresholds {th.source})"
        )


def refuse_unreadable(photos: list, args: argparse.Namespace) -> None:
    """When no photo given can be read (a text file named .jpg), say so before the store or
    the model is opened: one line per photo. Some unreadable among good ones are reported
    with the enrolment, as before."""
    from ._collection import settings_from
    from ._inputs import unreadable_photos

    refused = unreadable_photos(photos, settings_from(args).intake_limits())
    if len(refused) < len(photos):
        return
    if len(photos) == 1:
        raise refused[photos[0]]
    for reason in refused.values():
        print(f"shellid: error: {reason}", file=sys.stderr)
    raise ValueError(f"none of the {len(photos)} photos can be read; nothing was enrolled")


def _enroll_folders_on_ray(args: argparse.Namespace, collection, options, progress: bool):
    """``enroll_folder`` of every DATA tree, as one job on Ray (one report per species)."""
    from index.workflows.ray.enrol import enroll_on_ray, folder_jobs

    jobs = [
        job
        for root in args.data
        for job in folder_jobs(
            root, group_pattern=args.group_regex, taxonomy_csv=args.taxonomy, source=args.source
        )
    ]
    return enroll_on_ray(collection, jobs, options, progress=progress)
