"""Result models of the index (pydantic v2): what identify, search, enroll and listing return.

They serialise to JSON as-is (``model.model_dump(mode="json")``), which is what the CLI's
``--json`` output and the HTTP API send.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    model_serializer,
    model_validator,
)

from .config import DEFAULT_TARGET_RECALL
from .open_set.base import OPEN_SET_SCORES

#: Every decision :meth:`index.VectorIdentifier.identify` can return, from most to least
#: specific. ``family`` and ``uncertain`` extend the original four (see docs/index.md).
Decision = Literal["species", "genus", "family", "uncertain", "unknown_species", "out_of_domain"]
DECISIONS: tuple[str, ...] = (
    "species",
    "genus",
    "family",
    "uncertain",
    "unknown_species",
    "out_of_domain",
)
#: Decisions that name no enrolled species: candidates are only the closest, by similarity.
REJECTIONS: frozenset[str] = frozenset({"unknown_species", "out_of_domain"})


class Candidate(BaseModel):
    """One enrolled species as an answer: similarity ``score`` and calibrated ``probability``
    (None when the decision rejects every species: then it is only the closest one)."""

    species: str
    genus: str = ""
    family: str = ""
    score: float = Field(
        description="species score the answer ranks by (cosine to the species' prototype in "
        "the collection's whitened space: comparable between the candidates of one answer only)"
    )
    probability: float | None = None
    similarity: float | None = Field(
        None,
        description="cosine similarity of the query to the species' closest enrolled photo "
        "(the scale of SimilarSpecimen.score; unaffected by other species being enrolled)",
    )


class Placement(BaseModel):
    """Where in the tree the photo's species most likely sits, enrolled or not: a genus (else
    a family) with its calibrated probability of being right (see index.placement)."""

    rank: Literal["genus", "family"]
    name: str
    probability: float


#: the ``source`` recorded for photos sent to the service without one (the command line
#: records the folder the photos were enrolled from: ``index.workflows.collection.enrolled_from``)
UPLOAD_SOURCE = "upload"


class SimilarSpecimen(BaseModel):
    """One enrolled image close to the query (cosine ``score`` of the identifier's mapped
    vectors, see ``IdentifierConfig.feature_power``)."""

    specimen_id: str
    species: str
    genus: str = ""
    score: float
    source: str = ""
    region: str = ""
    specimen: str = ""


#: open-set scores an answer also carries as a field of its own, ``<name>_score`` (the wire
#: format before ``Identification.open_set_scores``; kept for older clients)
KEPT_SCORE_FIELDS: tuple[str, ...] = ("ood", "unknown")


class Identification(BaseModel):
    """The answer for one query specimen (one or several views)."""

    decision: Decision
    species: str | None = None
    genus: str | None = None
    family: str | None = None
    confidence: float = Field(
        0.0, description="probability of the named taxon (species, genus or family); 0 if none"
    )
    none_probability: float | None = Field(
        None,
        description="probability that the specimen is none of the enrolled species (with the "
        "candidates' probabilities it sums to 1 over all species); None on unknown_species and "
        "out_of_domain, whose candidates carry similarities only",
    )
    candidates: list[Candidate] = Field(default_factory=list)
    similar: list[SimilarSpecimen] = Field(default_factory=list)
    region: str | None = None
    region_votes: dict[str, float] = Field(default_factory=dict)
    open_set_scores: dict[str, float] = Field(
        default_factory=dict,
        description="every registered open-set score (index.open_set) by name, higher = more "
        "likely rejected by it; ``ood`` and ``unknown`` are also sent as ``ood_score`` and "
        "``unknown_score``, kept for older clients",
    )
    placement: Placement | None = Field(
        None,
        description="the genus (else family) the specimen's species most likely belongs to, "
        "whether enrolled or not; only on genus, family, uncertain and unknown_species answers, "
        "and only when its calibrated probability clears the collection's placement threshold",
    )
    timings_ms: dict[str, float] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _gather_open_set_scores(cls, data: Any) -> Any:
        """An answer written as one field per score (``ood_score``, as older servers and
        stores did) -> ``open_set_scores``; the mapping wins where both are given."""
        if not isinstance(data, dict):
            return data
        names = {f"{name}_score": name for name in (*KEPT_SCORE_FIELDS, *OPEN_SET_SCORES)}
        given = {names[k]: v for k, v in data.items() if k in names}
        if not given:
            return data
        rest = {k: v for k, v in data.items() if k not in names}
        return {**rest, "open_set_scores": {**given, **data.get("open_set_scores", {})}}

    @model_serializer(mode="wrap")
    def _spread_kept_scores(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """``ood_score`` and ``unknown_score`` written before ``open_set_scores`` (where the
        wire format had them), from the mapping."""
        data = handler(self)
        if not isinstance(data, dict):
            return data
        kept = {f"{name}_score": self.open_set_score(name) for name in KEPT_SCORE_FIELDS}
        if "open_set_scores" not in data:
            return {**data, **kept}
        out: dict[str, Any] = {}
        for key, value in data.items():
            if key == "open_set_scores":
                out.update(kept)
            out[key] = value
        return out

    def open_set_score(self, name: str) -> float:
        """The open-set score ``name`` of this answer (0.0 when it has none)."""
        return float(self.open_set_scores.get(name, 0.0))

    @property
    def ood_score(self) -> float:
        """The ``ood`` score (index.open_set.out_of_domain): higher = less like anything
        enrolled."""
        return self.open_set_score("ood")

    @property
    def unknown_score(self) -> float:
        """The ``unknown`` score (index.open_set.unknown_species): higher = more likely a
        species not enrolled."""
        return self.open_set_score("unknown")


class EnrollReport(BaseModel):
    """What one enrollment call did (``total`` = images of the species after it)."""

    species: str
    added: int = 0
    duplicates: list[str] = Field(default_factory=list)
    refused: dict[str, str] = Field(default_factory=dict)
    errors: dict[str, str] = Field(default_factory=dict)
    total: int = 0
    specimen_ids: list[str] = Field(default_factory=list)


class SpeciesSummary(BaseModel):
    """One enrolled species: taxonomy, image count and a few specimen ids."""

    species: str
    genus: str = ""
    family: str = ""
    region: str = ""
    count: int = 0
    specimens: int = 0
    specimen_ids: list[str] = Field(default_factory=list)
    thumbnail_id: str | None = None


class PhotoRecord(BaseModel):
    """One enrolled photo with its provenance (no image bytes)."""

    specimen_id: str
    species: str
    specimen: str = Field(description="The physical specimen the photo shows (views share it).")
    filename: str = ""
    source: str = ""
    region: str = ""
    width: int = 0
    height: int = 0
    created: datetime | None = None


class SpeciesPhotos(BaseModel):
    """A page of one species' photos (ordered by specimen, file name, id) and the counts over
    all of them: ``total`` photos, ``by_specimen`` photos per specimen (summing to ``total``)."""

    species: str
    total: int
    by_specimen: dict[str, int]
    offset: int
    photos: list[PhotoRecord]


class CalibrationStats(BaseModel):
    """How the thresholds were obtained and what they achieve on the held-out enrolled data."""

    known_queries: int = 0
    unknown_queries: int = 0
    known_top1: float | None = None
    known_recall: float | None = None
    unknown_rejection: float | None = None
    unknown_auroc: float | None = None
    ece_before: float | None = None
    ece_after: float | None = None
    notes: list[str] = Field(default_factory=list)


class RankCalibration(BaseModel):
    """The fitted placement map of one rank and what it achieved on the held-out species."""

    model_config = ConfigDict(ser_json_inf_nan="strings")

    rank: Literal["genus", "family"]
    weights: list[float]  # logit of the summed probability, z-scored best score, log size, bias
    score_centre: float
    score_scale: float
    threshold: float  # calibrated probability at which a taxon is named (inf: never)
    samples: int = 0
    species: int = 0
    coverage: float | None = None  # held-out photos placed
    precision: float | None = None  # of those, placed in their own taxon
    nearest_right: float | None = None  # held-out photos whose most probable taxon is right
    ece: float | None = None


class PlacementCalibration(BaseModel):
    """Placement maps, most specific rank first (index.placement)."""

    model_config = ConfigDict(ser_json_inf_nan="strings")

    target_precision: float
    temperature: float
    ranks: list[RankCalibration] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)


def _unset_open_set() -> dict[str, float]:
    """Every registered open-set score at inf (never rejecting), in registration order."""
    return {name: float("inf") for name in OPEN_SET_SCORES}


class Thresholds(BaseModel):
    """Decision thresholds of an identifier (stored with the store, overridable).

    ``open_set``: score name -> threshold of every registered open-set score
    (:data:`index.open_set.OPEN_SET_SCORES`): a query whose score passes it gets that score's
    decision (``ood`` -> out_of_domain, ``unknown`` -> unknown_species); a missing entry never
    rejects. Each also reads as an attribute (``th.ood``) and is stored as a field of its own,
    as before the mapping (old stores read as they were). A species / genus / family is named
    when its probability reaches the matching ``*_probability``.
    """

    model_config = ConfigDict(ser_json_inf_nan="strings")

    temperature: float = 0.05
    open_set: dict[str, float] = Field(default_factory=lambda: _unset_open_set())
    species_probability: float = 0.5
    genus_probability: float = 0.5
    family_probability: float = 0.5
    target_recall: float = DEFAULT_TARGET_RECALL
    source: Literal["calibrated", "fallback", "default"] = "default"
    overridden: list[str] = Field(default_factory=list)
    stats: CalibrationStats = Field(default_factory=CalibrationStats)
    placement: PlacementCalibration | None = None
    #: species whose own held-out photos lie farther out than ``ood`` allows: their own OOD
    #: threshold, used for queries whose nearest photo is theirs (an enrolled species widens
    #: the domain around itself; index.open_set.out_of_domain)
    ood_by_species: dict[str, float] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _gather_open_set(cls, data: Any) -> Any:
        """The stored form (one field per score: ``ood``, ``unknown``) -> ``open_set``, every
        registered score in it (inf, never rejecting, where none is given)."""
        if not isinstance(data, dict):
            return data
        rest = {k: v for k, v in data.items() if k not in OPEN_SET_SCORES}
        given = {k: v for k, v in data.items() if k in OPEN_SET_SCORES}
        return {**rest, "open_set": {**_unset_open_set(), **given, **data.get("open_set", {})}}

    @model_serializer(mode="wrap")
    def _spread_open_set(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """``open_set`` stored as one field per score, after ``temperature`` (the stored form
        of old stores, byte for byte)."""
        data = handler(self)
        if not isinstance(data, dict) or "open_set" not in data:
            return data
        out: dict[str, Any] = {}
        for key, value in data.items():
            if key == "open_set":
                out.update(value)
            else:
                out[key] = value
        return out

    def __getattr__(self, name: str) -> float:
        """An open-set threshold by its score's name (``th.ood``; inf when not set)."""
        if not name.startswith("_"):
            open_set = self.__dict__.get("open_set", {})
            if name in open_set or name in OPEN_SET_SCORES:
                return float(open_set.get(name, float("inf")))
        return super().__getattr__(name)  # type: ignore[misc,no-any-return]

    def open_set_threshold(self, name: str) -> float:
        """The threshold of open-set score ``name`` (inf, never rejecting, when not set)."""
        return float(self.open_set.get(name, float("inf")))

    def with_overrides(self, **values: float | None) -> Thresholds:
        """A copy with the given (non-None) thresholds replaced and listed in ``overridden``:
        fields or open-set scores by name."""
        changes = {k: float(v) for k, v in values.items() if v is not None}
        scores = {k: v for k, v in changes.items() if k in OPEN_SET_SCORES}
        fields = {k: v for k, v in changes.items() if k not in scores}
        unknown = set(fields) - set(type(self).model_fields) | ({"open_set"} & set(fields))
        if unknown:
            raise ValueError(f"unknown threshold(s): {', '.join(sorted(unknown))}")
        overridden = sorted(set(self.overridden) | set(changes))
        return self.model_copy(
            update={
                **fields,
                "open_set": {**self.open_set, **scores},
                "overridden": overridden,
            }
        )


@dataclass
class BatchScores:
    """Scores of many single-vector queries at once (numpy level, for evaluation)."""

    species: list[str]
    similarities: np.ndarray
    probabilities: np.ndarray
    #: open-set score name -> (m,) scores as answers report them (also ``batch.<name>_score``)
    open_set: dict[str, np.ndarray]
    decisions: list[str] = field(default_factory=list)
    none_probability: np.ndarray | None = None
    #: placement of every query, whatever its decision (identify shows it only on some)
    placements: list[Placement | None] = field(default_factory=list)

    def __getattr__(self, name: str) -> np.ndarray:
        """``batch.ood_score``: the open-set score ``ood`` (any registered name)."""
        scores = self.__dict__.get("open_set", {})
        if name.endswith("_score") and name[: -len("_score")] in scores:
            return scores[name[: -len("_score")]]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def top(self, k: int = 1) -> list[list[str]]:
        """The ``k`` most probable species per query (ranked by similarity, which orders them
        the same way without ties where a rejection leaves every probability near 0)."""
        order = np.argsort(-self.similarities, axis=1, kind="stable")[:, :k]
        return [[self.species[j] for j in row] for row in order]
