"""``shellid search``: the enrolled photos most similar to a photo."""

from __future__ import annotations

import argparse
import json

from ._collection import (
    add_filter_options,
    add_model_option,
    add_store_option,
    display,
    open_collection,
    table,
)

HELP = "find the enrolled photos most similar to a photo (several photos = views of one specimen)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="photo file(s) of one specimen")
    parser.add_argument("--k", type=int, default=10, help="how many photos to list (default: 10)")
    parser.add_argument("--json", action="store_true", help="print a JSON list")
    add_filter_options(parser)
    add_store_option(parser)
    add_model_option(parser)


def run(args: argparse.Namespace) -> int:
    from embedder.intake import load_image

    if args.k < 1:
        raise ValueError("--k must be at least 1")
    images = [load_image(f) for f in args.images]
    collection = open_collection(args)
    found = collection.search(
        images, k=args.k, region=args.region, genus=args.genus, family=args.family
    )
    if args.json:
        print(json.dumps([s.model_dump(mode="json") for s in found]))
        return 0
    rows = [
        [
            str(i),
            f"{s.score:.3f}",
            display(s.species),
            s.specimen_id,
            s.specimen,
            s.region or "-",
            s.source or "-",
        ]
        for i, s in enumerate(found, 1)
    ]
    print(table(rows, ["#", "similarity", "species", "id", "specimen", "region", "source"], {1}))
    return 0
