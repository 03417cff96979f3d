"""LanceDB table schemas of the specimen store (pydantic ``LanceModel``).

``specimens``: one row per enrolled image (taxonomy, provenance, the vector, a thumbnail and
the normalised copy of the image that ``reindex`` re-embeds). ``store_info``: key/value rows
(JSON values) recording which embedder made the vectors and the calibrated thresholds.
"""

from __future__ import annotations

from datetime import datetime
from functools import cache

from lancedb.pydantic import LanceModel, Vector

SPECIMENS_TABLE = "specimens"
INFO_TABLE = "store_info"
PRIOR_TABLE = "within_species_prior"
#: bumped when the layout changes incompatibly.
STORE_FORMAT = "shellid-store/1"

#: columns read at start-up (everything but the image bytes).
INDEX_COLUMNS = [
    "id",
    "species",
    "genus",
    "family",
    "region",
    "specimen",
    "source",
    "filename",
    "sha256",
    "vector",
]


@cache
def specimen_model(dim: int) -> type[LanceModel]:
    """The ``specimens`` row model for vectors of size ``dim``."""

    class SpecimenRow(LanceModel):
        id: str  # 16 hex characters, unique
        species: str  # canonical Genus_species
        genus: str = ""
        family: str = ""
        region: str = ""
        extra: str = "{}"  # JSON object: further taxonomy / metadata fields
        specimen: str  # physical specimen (group) the image shows; views share it
        source: str = ""  # who or what enrolled it (collection, user, file tree)
        filename: str = ""
        sha256: str  # of the original image bytes, for duplicate detection
        fingerprint: str  # embedder that made `vector`
        vector: Vector(dim)  # type: ignore[valid-type]
        thumbnail: bytes  # JPEG, longer side <= 160 px
        image: bytes  # JPEG q90 normalised copy that reindex re-embeds
        width: int = 0  # of the original image
        height: int = 0
        created: datetime

    SpecimenRow.__name__ = f"SpecimenRow{dim}"
    return SpecimenRow


class InfoRow(LanceModel):
    """One ``store_info`` entry."""

    key: str
    value: str  # JSON


class PriorArrayRow(LanceModel):
    """One array of the model's within-species prior (``index.whitening.WithinSpeciesPrior``),
    recorded with the model so every process scores with it, torch or not."""

    name: str
    shape: list[int]
    values: list[float]
