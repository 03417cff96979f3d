"""shellid index: vectors -> answers (specimen store, FAISS search, prototypes, calibrated
open-set decisions). See docs/index.md and docs/CONTRACTS.md.

Names are imported on first use (PEP 562): ``import index.results`` does not load FAISS,
SciPy or LanceDB. Only the engine's names are here: the application layer (``Collection``,
reports, Ray jobs) is imported from its own module under :mod:`index.workflows`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .lance_startup import defer_namespace_client

defer_namespace_client()  # before anything imports LanceDB (see index.lance_startup)

if TYPE_CHECKING:  # the real names for type checkers and IDEs
    from .classifier import VectorIdentifier
    from .config import IdentifierConfig, IndexSettings
    from .errors import (
        CollectionError,
        DuplicateImageError,
        EmptyCollectionError,
        InvalidQueryError,
        ModelMismatchError,
        ModelNotLoadedError,
        SpeciesNotFoundError,
        SpecimenNotFoundError,
        StoreError,
    )
    from .results import (
        DECISIONS,
        BatchScores,
        CalibrationStats,
        Candidate,
        EnrollReport,
        Identification,
        SimilarSpecimen,
        SpeciesSummary,
        Thresholds,
    )
    from .search import VectorIndex

#: public name -> submodule that defines it
_EXPORTS: dict[str, str] = {
    "VectorIdentifier": "classifier",
    "IdentifierConfig": "config",
    "IndexSettings": "config",
    **{
        name: "errors"
        for name in (
            "CollectionError",
            "DuplicateImageError",
            "EmptyCollectionError",
            "InvalidQueryError",
            "ModelMismatchError",
            "ModelNotLoadedError",
            "SpeciesNotFoundError",
            "SpecimenNotFoundError",
            "StoreError",
        )
    },
    **{
        name: "results"
        for name in (
            "DECISIONS",
            "BatchScores",
            "CalibrationStats",
            "Candidate",
            "EnrollReport",
            "Identification",
            "SimilarSpecimen",
            "SpeciesSummary",
            "Thresholds",
        )
    },
    "VectorIndex": "search",
}

__all__ = [
    "DECISIONS",
    "BatchScores",
    "CalibrationStats",
    "Candidate",
    "CollectionError",
    "DuplicateImageError",
    "EmptyCollectionError",
    "EnrollReport",
    "Identification",
    "IdentifierConfig",
    "IndexSettings",
    "InvalidQueryError",
    "ModelMismatchError",
    "ModelNotLoadedError",
    "SimilarSpecimen",
    "SpeciesNotFoundError",
    "SpeciesSummary",
    "SpecimenNotFoundError",
    "StoreError",
    "Thresholds",
    "VectorIdentifier",
    "VectorIndex",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'index' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
