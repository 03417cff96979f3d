"""``shellid remove``: delete a species or one enrolled photo from the store."""

from __future__ import annotations

import argparse
import sys

from embedder.datasets import species_display

from ._collection import add_store_option, open_collection

HELP = "remove a species (--species NAME) or one enrolled photo (--specimen ID)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--species", metavar="NAME", help="remove every photo of this species")
    what.add_argument("--specimen", metavar="ID", help="remove one photo (id from identify/search)")
    parser.add_argument(
        "--yes", "-y", action="store_true", help="do not ask before removing a whole species"
    )
    add_store_option(parser)


def confirm(question: str) -> bool:
    """Ask on the terminal; a non-interactive run (no terminal) answers no."""
    if not sys.stdin.isatty():
        return False
    try:
        return input(f"{question} [y/N] ").strip().lower() in {"y", "yes"}
    except EOFError:
        return False


def run(args: argparse.Namespace) -> int:
    from ._listing import write_listing

    collection = open_collection(args, need_model=False)
    if args.species:
        info = collection.species_info(args.species)  # SpeciesNotFoundError when not enrolled
        what = (
            f"{species_display(info.species)}: {info.count} photos of {info.specimens} specimens "
            f"from {collection.store.uri}"
        )
        if not args.yes and not confirm(f"remove {what}?"):
            print(
                f"shellid: not removed (would remove {what}); pass --yes to remove without asking",
                file=sys.stderr,
            )
            return 1
        removed = collection.remove_species(args.species)
        print(f"removed {species_display(info.species)}: {removed} photos ({len(collection)} left)")
    else:
        record = collection.remove_specimen(args.specimen)
        left = len(collection)
        name = species_display(record.species)
        print(f"removed photo {record.specimen_id} of {name} ({left} left)")
    write_listing(collection)
    return 0
