"""LanceDB table schemas of the specimen store (pydantic ``LanceModel``), and the filters
over them.

``specimens``: one row per enrolled image (taxonomy, provenance, the vector, a thumbnail and
the normalised copy of the image that ``reindex`` re-embeds). ``store_info``: key/value rows
(JSON values) recording which embedder made the vectors and the calibrated thresholds.

The ``specimens`` row model is the one list of the table's columns: each field says which
reads take it (``read_by``), and :data:`INDEX_COLUMNS` / :data:`PHOTO_COLUMNS` are derived
from it; :func:`where_in` builds every filter on its columns.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from functools import cache
from typing import Any

from lancedb.pydantic import LanceModel, Vector
from pydantic import Field

SPECIMENS_TABLE = "specimens"
INFO_TABLE = "store_info"
PRIOR_TABLE = "within_species_prior"
MODELS_TABLE = "models"
#: bumped when the layout changes incompatibly.
STORE_FORMAT = "shellid-store/1"
#: what reads a column: start-up / catch-up (``index``), a species' photo list (``photos``).
INDEX, PHOTOS = "index", "photos"
#: taxonomy keys stored in their own columns; any other key goes to the JSON ``extra`` column.
TAXONOMY_COLUMNS = ("genus", "family", "region")


def _column(*read_by: str, default: Any = ...) -> Any:
    """A ``specimens`` field read by ``read_by`` (metadata only: the Arrow type is the
    annotation's)."""
    return Field(default, json_schema_extra={"read_by": list(read_by)})


@cache
def specimen_model(dim: int) -> type[LanceModel]:
    """The ``specimens`` row model for vectors of size ``dim``."""

    class SpecimenRow(LanceModel):
        id: str = _column(INDEX, PHOTOS)  # 16 hex characters, unique
        species: str = _column(INDEX, PHOTOS)  # canonical Genus_species
        genus: str = _column(INDEX, default="")
        family: str = _column(INDEX, default="")
        region: str = _column(INDEX, PHOTOS, default="")
        extra: str = "{}"  # JSON object: further taxonomy / metadata fields
        specimen: str = _column(INDEX, PHOTOS)  # physical specimen (group) the image shows
        source: str = _column(INDEX, PHOTOS, default="")  # who or what enrolled it
        filename: str = _column(INDEX, PHOTOS, default="")
        sha256: str = _column(INDEX)  # of the original image bytes, for duplicate detection
        fingerprint: str  # embedder that made `vector`
        vector: Vector(dim) = _column(INDEX)  # type: ignore[valid-type]
        thumbnail: bytes  # JPEG, longer side <= 160 px
        image: bytes  # JPEG q90 normalised copy that reindex re-embeds
        width: int = _column(PHOTOS, default=0)  # of the original image
        height: int = _column(PHOTOS, default=0)
        created: datetime = _column(PHOTOS)

    SpecimenRow.__name__ = f"SpecimenRow{dim}"
    return SpecimenRow


def _columns_read_by(read: str | None) -> list[str]:
    """The ``specimens`` columns (in table order) a read takes; every one for ``None``."""
    columns = []
    for name, info in specimen_model(1).model_fields.items():
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        read_by = extra.get("read_by")
        if read is None or (isinstance(read_by, list) and read in read_by):
            columns.append(name)
    return columns


#: every column of ``specimens``, in table order.
SPECIMEN_COLUMNS = _columns_read_by(None)
#: columns read at start-up and catch-up (everything but the image bytes).
INDEX_COLUMNS = _columns_read_by(INDEX)
#: what a species' photo list reads (no vectors, no image bytes).
PHOTO_COLUMNS = _columns_read_by(PHOTOS)


def where_in(column: str, values: str | Iterable[str]) -> str:
    """A LanceDB filter on one ``specimens`` column: ``column = 'v'`` for one value,
    ``column IN ('a', 'b', ...)`` for several; single quotes are doubled. ValueError for a
    column the table does not have, or no value."""
    if column not in SPECIMEN_COLUMNS:
        raise ValueError(f"the specimens table has no column {column!r}")
    if isinstance(values, str):
        return f"{column} = {_literal(values)}"
    literals = [_literal(v) for v in values]
    if not literals:
        raise ValueError(f"a filter on {column} needs at least one value")
    return f"{column} IN ({', '.join(literals)})"


def _literal(value: str) -> str:
    """A SQL string literal (single quotes doubled)."""
    return "'" + str(value).replace("'", "''") + "'"


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


class ModelRow(LanceModel):
    """One model the store holds (``index.held_models``): the model its vectors were made by,
    and the one before, so that every process opening the store can load it."""

    fingerprint: str  # the model's (16 hex characters)
    name: str  # as store_info records it (``tf_efficientnet_lite0/trained``)
    kind: str  # how ``data`` loads: ``MODEL.pt`` (its bytes), ``name`` (a packaged name)
    source: str  # where it came from: the MODEL.pt path, the name, or '' (an object)
    dim: int
    created: datetime
    sha256: str  # of ``data``
    data: bytes
    prior: bytes  # the within-species prior's arrays (numpy ``.npz``; empty: none)
