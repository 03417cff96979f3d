"""What a collection holds, in one word for people: "shell", "fish", "bird"...

The page and the command line say "This does not look like a shell" with it. The word is kept
in the store (``store_info`` key :data:`INFO_KEY`), set by ``shellid demo`` ("shell"),
``shellid enroll --subject`` or ``PUT /v1/subject``; ``SHELLID_SUBJECT`` overrides it, and
"shell" is the default of a store that names none.
"""

from __future__ import annotations

import re
from typing import Any

from index.errors import InvalidQueryError

INFO_KEY = "subject"
DEFAULT = "shell"
MAX_LENGTH = 40
_WORD = re.compile(r"^[^\W\d_](?:[^\W\d_]|[ '-])*$")


def clean(word: str) -> str:
    """The noun as kept: trimmed, inner spaces collapsed; InvalidQueryError (one line) for
    one that is empty, too long or not letters, spaces, hyphens and apostrophes."""
    text = " ".join(str(word).split())
    if not text or len(text) > MAX_LENGTH or not _WORD.match(text):
        raise InvalidQueryError(
            f"subject {word!r} is not usable: one noun such as 'shell', 'fish' or 'bird' "
            f"(letters, spaces, hyphens; at most {MAX_LENGTH} characters)"
        )
    return text


def record(store: Any, word: str) -> str:
    """Keep ``word`` as the subject of the collection in ``store`` (a SpecimenStore)."""
    noun = clean(word)
    store.write_info(**{INFO_KEY: noun})
    return noun


def recorded(store: Any) -> str | None:
    """The subject kept in ``store``, or None when it names none (or an unusable one)."""
    value = store.info().get(INFO_KEY)
    try:
        return clean(value) if isinstance(value, str) else None
    except InvalidQueryError:
        return None


def resolve(override: str | None, store: Any | None) -> str:
    """The word to use: ``override`` ($SHELLID_SUBJECT) when set, else the store's, else
    "shell". A store that cannot be read falls back quietly: the word is never worth an
    error."""
    if override and override.strip():
        return override.strip()
    if store is not None:
        try:
            return recorded(store) or DEFAULT
        except Exception:
            return DEFAULT
    return DEFAULT
