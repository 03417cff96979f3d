"""``shellid remove``: delete a species or one enrolled photo from the store."""

from __future__ import annotations

import argparse
import sys

from index.names import display_name as species_display

from ._collection import add_store_option, open_collection, store_uri
from ._options import add_model_options
from ._output import counted

HELP = "remove a species (--species NAME) or one enrolled photo (--specimen ID)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ._models import RemoveOptions

    what = parser.add_mutually_exclusive_group(required=True)
    add_model_options(what, RemoveOptions, ["species", "specimen"])
    add_model_options(parser, RemoveOptions, ["yes"])
    add_store_option(parser)


def confirm(question: str) -> bool | None:
    """Ask on the terminal: True for yes, False for no; None when there is no terminal to
    ask on (a script: nothing is removed without --yes)."""
    if not sys.stdin.isatty():
        return None
    try:
        return input(f"{question} [y/N] ").strip().lower() in {"y", "yes"}
    except EOFError:
        return False


def species_removal(name: str, photos: int, specimens: int, uri: str) -> str:
    """``Conus textile: 1 photo of 1 specimen from STORE``."""
    return (
        f"{species_display(name)}: {counted(photos, 'photo')} of "
        f"{counted(specimens, 'specimen')} from {uri}"
    )


def ask_to_remove(what: str) -> bool:
    """Whether to remove ``what``: the user's answer; without a terminal, no, saying how to
    remove it from a script (no such advice after the user has said no)."""
    answer = confirm(f"remove {what}?")
    if answer:
        return True
    if answer is None:
        print(
            f"shellid: not removed (would remove {what}); there is no terminal to ask on: "
            "pass --yes to remove it",
            file=sys.stderr,
        )
    else:
        print("shellid: not removed", file=sys.stderr)
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
    what = species_removal(name, entry["count"], entry["specimens"], listing["uri"])
    if ask_to_remove(what):
        args.yes = True
        return False
    return True


def run(args: argparse.Namespace) -> int:
    from ._listing import write_listing

    if args.species and not args.yes and _declined(args):
        return 1
    collection = open_collection(args, need_model=False)
    if args.species:
        info = collection.catalogue.species_info(
            args.species
        )  # SpeciesNotFoundError when not enrolled
        what = species_removal(info.species, info.count, info.specimens, collection.store.uri)
        if not args.yes and not ask_to_remove(what):
            return 1
        removed = collection.index.remove_species(args.species)
        print(
            f"removed {species_display(info.species)}: {counted(removed, 'photo')} "
            f"({len(collection.catalogue)} left)"
        )
    else:
        record = collection.index.remove_specimen(args.specimen)
        left = len(collection.catalogue)
        name = species_display(record.species)
        print(f"removed photo {record.specimen_id} of {name} ({left} left)")
    write_listing(collection)
    return 0
