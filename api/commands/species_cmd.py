"""``shellid species``: the enrolled species with their photo counts."""

from __future__ import annotations

import argparse
import json

from index.names import display_name as species_display

from ._collection import (
    add_store_option,
    open_collection,
    store_uri,
    table,
    taxonomy_value,
)
from ._options import add_model_options

HELP = "list the enrolled species with photo and specimen counts"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ._models import ListingOptions

    add_store_option(parser)
    add_model_options(parser, ListingOptions)


def run(args: argparse.Namespace) -> int:
    from ._listing import read_listing, store_token, write_listing

    uri = store_uri(args)
    listing = read_listing(uri)  # current copy: no LanceDB import (see _listing)
    if listing is None:
        token = store_token(uri)  # before reading: a commit meanwhile makes the copy stale
        listing = write_listing(open_collection(args, need_model=False), token)
    species = [{k: taxonomy_value(v) for k, v in s.items()} for s in listing["species"]]
    if args.json:
        print(json.dumps(species))
        return 0
    if not species:
        print(f"{listing['uri']}: no species enrolled yet (shellid enroll PHOTOS --species NAME)")
        return 0
    rows = [
        [
            species_display(s["species"]),
            s["genus"] or "-",
            s["family"] or "-",
            s["region"] or "-",
            str(s["count"]),
            str(s["specimens"]),
        ]
        for s in species
    ]
    print(table(rows, ["species", "genus", "family", "region", "photos", "specimens"], {4, 5}))
    print(
        f"{len(species)} species, {listing['photos']} photos in {listing['uri']} "
        f"(model {listing['model_name']} {listing['fingerprint']})"
    )
    return 0
