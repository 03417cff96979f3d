"""Species names: the one spelling the store keeps (light: no numpy, no LanceDB), so the
command line and the API can check or compare a name without opening a store."""

from __future__ import annotations

import re
import unicodedata

from .errors import InvalidQueryError

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
