"""``shellid species``: the enrolled species with their photo counts."""

from __future__ import annotations

import argparse
import json

from ._collection import add_store_option, display, open_collection, table

HELP = "list the enrolled species with photo and specimen counts"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_store_option(parser)
    parser.add_argument("--json", action="store_true", help="print a JSON list")


def run(args: argparse.Namespace) -> int:
    collection = open_collection(args, need_model=False)
    species = collection.species()
    if args.json:
        print(json.dumps([s.model_dump(mode="json") for s in species]))
        return 0
    if not species:
        print(f"{collection.store.uri}: no species enrolled yet (shellid enroll DATA)")
        return 0
    rows = [
        [
            display(s.species),
            s.genus or "-",
            s.family or "-",
            s.region or "-",
            str(s.count),
            str(s.specimens),
        ]
        for s in species
    ]
    print(table(rows, ["species", "genus", "family", "region", "photos", "specimens"], {4, 5}))
    info = collection.store.info()
    print(
        f"{len(species)} species, {len(collection)} photos in {collection.store.uri} "
        f"(model {info.get('model_name', '?')} {info.get('fingerprint', '?')})"
    )
    return 0
