"""``shellid remove``: delete a species or one enrolled photo from the store."""

from __future__ import annotations

import argparse

from ._collection import add_store_option, display, open_collection

HELP = "remove a species (--species NAME) or one enrolled photo (--specimen ID)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--species", metavar="NAME", help="remove every photo of this species")
    what.add_argument("--specimen", metavar="ID", help="remove one photo (id from identify/search)")
    add_store_option(parser)


def run(args: argparse.Namespace) -> int:
    collection = open_collection(args, need_model=False)
    if args.species:
        removed = collection.remove_species(args.species)
        print(f"removed {display(args.species)}: {removed} photos ({len(collection)} left)")
    else:
        record = collection.remove_specimen(args.specimen)
        left = len(collection)
        print(f"removed photo {record.specimen_id} of {display(record.species)} ({left} left)")
    return 0
