"""Taxon names, the one home of their helpers: the spelling the store keeps
(:func:`canonical_species`), how a name is shown (:func:`display_name`), the stored spelling of
an accepted name (:func:`accepted_species`) and the genus a binomial names (:func:`genus_of`,
which the embedder's dataset reader shares; it cannot import the index). Light: no numpy, no
LanceDB, so the command line and the API can check or compare a name without opening a store.
"""

from __future__ import annotations

import re
import unicodedata

from embedder.datasets import genus_of

from .errors import InvalidQueryError

__all__ = [
    "MAX_SPECIES_NAME",
    "accepted_species",
    "canonical_species",
    "display_name",
    "genus_of",
]

MAX_SPECIES_NAME = 200
_BAD_NAME = re.compile(r"[/\\]")


def canonical_species(name: str) -> str:
    """The one spelling of a species name: ``"Conus  textile "`` -> ``"Conus_textile"``.

    Unicode NFC; invisible format characters (zero-width spaces and joiners, bidi marks and
    embeddings, soft hyphens, BOM) removed, so names that look the same are the same; runs of
    whitespace become one underscore. :class:`InvalidQueryError` for an empty name, one over
    :data:`MAX_SPECIES_NAME` characters, control or unassigned characters, slashes, or a
    path segment such as ``.`` or ``..``.
    """
    text = unicodedata.normalize("NFC", str(name))
    text = "".join(c for c in text if unicodedata.category(c) != "Cf")
    text = re.sub(r"\s+", "_", text.strip())
    if not text or not text.strip("_"):
        raise InvalidQueryError("species name is empty")
    bad = next((c for c in text if unicodedata.category(c) in ("Cc", "Cs", "Co", "Cn")), None)
    if len(text) > MAX_SPECIES_NAME or bad is not None or _BAD_NAME.search(text):
        raise InvalidQueryError(
            f"species name {name!r} is not usable (at most {MAX_SPECIES_NAME} characters, "
            "no slashes, control or unassigned characters)"
        )
    if not text.strip("."):
        raise InvalidQueryError(f"species name {name!r} is not usable (a path segment)")
    return text


#: second words that stand for "species not named": ``Bellamya_species`` -> ``Bellamya sp.``
_PLACEHOLDERS = {"species", "sp", "sp.", "spp", "spp.", "indet", "indet.", "unknown"}


def display_name(name: str | None) -> str:
    """How a taxon name is shown, the one place for it (web page via ``/v1/taxa``, API words
    and the command line): ``Conus_textile`` -> ``Conus textile``; a genus with a placeholder
    for its species (``Bellamya_species``, ``Bellamya spp``) -> ``Bellamya sp.``; ``''`` for
    None."""
    words = re.sub(r"[_\s]+", " ", name or "").strip().split(" ")
    if len(words) == 2 and words[0][:1].isupper() and words[1].lower() in _PLACEHOLDERS:
        words[1] = "sp."
    return " ".join(words)


def accepted_species(accepted_name: str) -> str:
    """The stored spelling of an accepted name, its authority left out:
    ``"Anadara consociata (E.A. Smith 1885)"`` -> ``"Anadara_consociata"``,
    ``"Bellamya sp."`` -> ``"Bellamya_sp."`` (InvalidQueryError as canonical_species)."""
    words = str(accepted_name).split()
    kept = words[:1]
    for word in words[1:]:
        if word[:1] in "([" or word[:1].isupper() or any(c.isdigit() for c in word):
            break  # the authority begins: (Linnaeus 1758), Habe 1952
        kept.append(word)
    return canonical_species(" ".join(kept))
