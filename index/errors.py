"""Errors the index raises for problems a user can fix; each carries a one-line message.

All derive from :class:`CollectionError` (so callers can catch the family) and from
``ValueError`` (bad input) or ``RuntimeError`` (state of the store). The message says what
happened; what to do about it is a :class:`Remedy`, which ``api`` words as the command to run
(``api.errors.user_message``). The index knows nothing of HTTP or of the command line:
``api/errors.py`` maps each class to its status and code, and each remedy to its words.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class Remedy(StrEnum):
    """What a user can do about an error, machine-readable (``api`` names the command)."""

    #: check the store, and repair what is safe
    DOCTOR = "doctor"
    #: re-embed the store (its prior or vectors no longer fit)
    REINDEX = "reindex"
    #: re-embed the store with the new model (its vectors have another size)
    REINDEX_NEW_MODEL = "reindex_new_model"
    #: open the store with the model it was built with, or re-embed it with the new one
    SAME_MODEL_OR_REINDEX = "same_model_or_reindex"
    #: re-embed a store of the first release's default with the corrected default
    REINDEX_CORRECTED_DEFAULT = "reindex_corrected_default"
    #: the store changed while it was re-embedded: re-embed it again
    REINDEX_AGAIN = "reindex_again"
    #: re-embed the store's rows that have no usable vector (``shellid doctor``)
    REINDEX_ROWS = "reindex_rows"
    #: re-embed the store, whose vectors come from several models (``shellid doctor``)
    REINDEX_STORE = "reindex_store"
    #: remove the rows whose photo is unreadable and enrol them again (``shellid doctor``)
    REMOVE_AND_ENROL = "remove_and_enrol"


class CollectionError(Exception):
    """Base class of every index error. ``remedy``: what the user can do (None: the message
    says it); ``store``: the store it is about ('' when not known), for the remedy's words."""

    def __init__(self, message: str = "", *, remedy: Remedy | None = None, store: str = "") -> None:
        super().__init__(message)
        self.remedy = remedy
        self.store = store

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled with its remedy and attributes (to another process and back)."""
        return _rebuilt, (type(self), self.args, self.__dict__)


def _rebuilt(cls: type[CollectionError], args: tuple[Any, ...], state: dict[str, Any]) -> Any:
    error = cls.__new__(cls)
    Exception.__init__(error, *args)
    error.__dict__.update(state)
    return error


class StoreError(CollectionError, RuntimeError):
    """The LanceDB store cannot be opened, read or written (path, permissions, damage)."""


class StoreWriteError(StoreError):
    """A write the storage refused or could not finish (disk full, object-store error or
    timeout): nothing of it is visible, and the same request can be sent again."""


class ModelMismatchError(CollectionError, RuntimeError):
    """The store's vectors were made by another embedding model than the one loaded."""

    def __init__(
        self,
        store_fingerprint: str,
        model_fingerprint: str,
        store_model: str = "",
        uri: str = "",
        legacy_default: bool = False,
    ) -> None:
        """``legacy_default``: the store was built with the first release's default backbone,
        whose weights were fed the wrong preprocessing (the remedy: re-embed it)."""
        self.store_fingerprint = store_fingerprint
        self.model_fingerprint = model_fingerprint
        made_by = f" ({store_model})" if store_model else ""
        where = f"store {uri}" if uri else "the store"
        if legacy_default:
            message = (
                f"{where} was built with the first release's default backbone{made_by}, whose "
                "weights were fed the wrong padding and normalisation"
            )
            remedy = Remedy.REINDEX_CORRECTED_DEFAULT
        else:
            message = (
                f"{where} was built with model {store_fingerprint}{made_by} but the loaded model "
                f"is {model_fingerprint}"
            )
            remedy = Remedy.SAME_MODEL_OR_REINDEX
        super().__init__(message, remedy=remedy, store=uri)


class StoreChangedError(StoreError):
    """Rows were added or removed by another process while every photo was re-embedded."""


class ModelSwitchedError(StoreWriteError):
    """The store switched to another model while vectors of the old one were being written:
    nothing was written; the same photos, embedded by the store's model, can be sent again."""


class SpeciesNotFoundError(CollectionError, ValueError):
    """A species name that is not enrolled."""


class SpecimenNotFoundError(CollectionError, ValueError):
    """A specimen (enrolled image) id that is not in the store."""


class DuplicateImageError(CollectionError, ValueError):
    """An image that is already enrolled under another species."""


class EmptyCollectionError(CollectionError, RuntimeError):
    """An operation that needs enrolled specimens (identify, search) on an empty collection."""


class InvalidQueryError(CollectionError, ValueError):
    """A query the index cannot answer as asked (wrong vector size, a filter matching nothing)."""


class ModelNotLoadedError(CollectionError, RuntimeError):
    """An operation that needs the embedding model on a collection opened without one."""
