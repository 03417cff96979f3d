"""Errors the index raises for problems a user can fix; each carries a one-line message.

All derive from :class:`CollectionError` (so callers can catch the family) and from
``ValueError`` (bad input) or ``RuntimeError`` (state of the store). The index knows nothing
of HTTP: ``api/errors.py`` maps each class to its status and code.
"""

from __future__ import annotations


class CollectionError(Exception):
    """Base class of every index error."""


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
        whose weights were fed the wrong preprocessing; the message then says to reindex."""
        self.store_fingerprint = store_fingerprint
        self.model_fingerprint = model_fingerprint
        made_by = f" ({store_model})" if store_model else ""
        where = f"store {uri}" if uri else "the store"
        if legacy_default:
            message = (
                f"{where} was built with the first release's default backbone{made_by}, whose "
                "weights were fed the wrong padding and normalisation; re-embed it with the "
                "corrected default (much better answers): shellid reindex"
                + (f" --store {uri}" if uri else "")
                + " (or keep the old vectors with --model efficientnet_lite0)"
            )
        else:
            message = (
                f"{where} was built with model {store_fingerprint}{made_by} but the loaded model "
                f"is {model_fingerprint}; open it with the model it was built with (--model / "
                f"SHELLID_MODEL), or re-embed it with: shellid reindex --model NEW"
            )
        super().__init__(message)


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
