"""The words of an index remedy: the ``shellid`` command that fixes it. The index says what
happened and names a :class:`~index.errors.Remedy`; the HTTP answers (``api/errors.py``) and
the command line (``api/cli.py``) show :func:`user_message`, ``shellid doctor`` its findings
with :func:`remedy_words`. Light:
the standard library and ``index.errors`` only, so the CLI's error path stays fast."""

from __future__ import annotations

from index.errors import Remedy

#: what the user runs about an index error, by its remedy (``{store}``: the store it is about)
REMEDY_WORDS: dict[Remedy, str] = {
    Remedy.DOCTOR: "; check it with: shellid doctor --store {store}",
    Remedy.REINDEX: "; run shellid reindex",
    Remedy.REINDEX_NEW_MODEL: "; re-embed with: shellid reindex --model NEW",
    Remedy.SAME_MODEL_OR_REINDEX: "; open it with the model it was built with (--model / "
    "SHELLID_MODEL), or re-embed it with: shellid reindex --model NEW",
    Remedy.REINDEX_CORRECTED_DEFAULT: "; re-embed it with the corrected default (much better "
    "answers): shellid reindex{store_option} (or keep the old vectors with --model "
    "efficientnet_lite0)",
    Remedy.REINDEX_AGAIN: "; run reindex again",
    Remedy.REINDEX_ROWS: "; re-embed them with: shellid reindex --store {store}",
    Remedy.REINDEX_STORE: "; re-embed with: shellid reindex --store {store}",
    Remedy.REMOVE_AND_ENROL: "; remove and enrol them again: shellid remove --specimen ID",
}


def remedy_words(remedy: Remedy | None, store: str = "") -> str:
    """What the user runs about ``remedy`` for ``store``, as written after the problem
    ('' for no remedy)."""
    if remedy is None:
        return ""
    return REMEDY_WORDS[remedy].format(
        store=store, store_option=f" --store {store}" if store else ""
    )


def user_message(exc: BaseException) -> str:
    """The one line a user reads about ``exc``: its message, and for an index error with a
    :class:`~index.errors.Remedy` the command that fixes it (HTTP answers and the CLI alike)."""
    remedy = getattr(exc, "remedy", None)
    if not isinstance(remedy, Remedy):
        return str(exc)
    return f"{exc}{remedy_words(remedy, str(getattr(exc, 'store', '') or ''))}"
