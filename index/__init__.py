"""shellid index: vectors -> answers (specimen store, FAISS search, prototypes, calibrated
open-set decisions). See docs/index.md and docs/CONTRACTS.md."""

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

__all__ = [
    "DECISIONS",
    "BatchScores",
    "CalibrationStats",
    "Candidate",
    "Collection",
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


def __getattr__(name: str):
    """``index.Collection`` on first use (it imports the embedder, hence torch)."""
    if name == "Collection":
        from .collection import Collection

        return Collection
    raise AttributeError(f"module 'index' has no attribute {name!r}")
