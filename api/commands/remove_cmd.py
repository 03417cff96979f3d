"""``shellid remove``: delete a species or one enrolled photo from the store."""

from __future__ import annotations

import argparse
import sys

from index.names import display_name as species_display

from ._collection import add_store_option, open_collection, store_uri

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


def _declined(args: argparse.Namespace) -> bool:
    """Ask before removing a whole species, from the store's current listing when there is one
    (no store is opened to say no, or that the species is not enrolled); True when the answer
    is no."""
    from index.names import canonical_species

    from ._listing import read_listing

    listing = read_listing(store_uri(args))
    if listing is None:
        return False  # asked once the store is open
    name = canonical_species(args.species)
    entry = next((s for s in listing["species"] if s["species"] == name), None)
    if entry is None:  # the listing is current: the store holds no such species
        from index.errors import SpeciesNotFoundError

        raise SpeciesNotFoundError(f"species {args.species!r} is not enrolled")
    what = (
        f"{species_display(name)}: {entry['count']} photos of {entry['specimens']} specimens "
        f"from {listing['uri']}"
    )
    if confirm(f"remove {what}?"):
        args.yes = True
        return False
    print(
        f"shellid: not removed (would remove {what}); pass --yes to remove without asking",
        file=sys.stderr,
    )
    return True


def run(args: argparse.Namespace) -> int:
    from ._listing import write_listing

    if args.species and not args.yes and _declined(args):
        return 1
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
