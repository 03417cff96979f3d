"""``shellid search``: the enrolled photos most similar to a photo."""

from __future__ import annotations

import argparse
import json

from index.names import display_name as species_display

from ._collection import (
    add_filter_options,
    add_model_option,
    add_store_option,
    open_collection,
    settings_from,
    table,
    taxonomy_value,
)
from ._options import add_model_options

HELP = "find the enrolled photos most similar to a photo (several photos = views of one specimen)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ._models import SearchOptions

    add_model_options(parser, SearchOptions)
    add_filter_options(parser)
    add_store_option(parser)
    add_model_option(parser)


def run(args: argparse.Namespace) -> int:
    from index.workflows.imaging import query_image

    from ._inputs import expand_photos

    if args.k < 1:
        raise ValueError("--k must be at least 1")
    photos, _ = expand_photos(args.images)
    limits = settings_from(args).intake_limits()
    images = [query_image(f, limits) for f in photos]
    collection = open_collection(args, exported_model=True)
    found = collection.search(
        images, k=args.k, region=args.region, genus=args.genus, family=args.family
    )
    names = collection.catalogue.photo_names()
    if args.json:
        listed = []
        for s in found:
            row = s.model_dump(mode="json")
            row["filename"] = names.get(s.specimen_id, "")
            listed.append({k: taxonomy_value(v) for k, v in row.items()})
        print(json.dumps(listed))
        return 0
    from .identify_cmd import photo_label

    rows = [
        [
            str(i),
            f"{s.score:.3f}",
            species_display(s.species),
            photo_label(s, names),
            s.specimen,
            s.region or "-",
            s.specimen_id,
        ]
        for i, s in enumerate(found, 1)
    ]
    header = ["#", "similarity", "species", "photo", "specimen", "region", "id"]
    print(table(rows, header, {1}))
    return 0
