"""Request and response models of the HTTP API (pydantic v2; they make the OpenAPI schema)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from index.results import Decision
from index.workflows.training import StoreTrainingReport


def _blank_is_none(value: Any) -> Any:
    """Missing taxonomy is null in every answer (the index keeps it as '')."""
    return None if value == "" else value


BlankIsNone = BeforeValidator(_blank_is_none)


class CandidateOut(BaseModel):
    """One ranked species hypothesis."""

    species: str
    genus: Annotated[str | None, BlankIsNone] = None
    family: Annotated[str | None, BlankIsNone] = None
    score: float = Field(
        description="Species score the candidates are ranked by (cosine to the species "
        "prototype in the collection's whitened space; compare it only between the candidates "
        "of one answer)."
    )
    probability: float | None = Field(
        None,
        description="Calibrated probability that this is the species (with none_probability, "
        "the probabilities sum to at most 1); null when the decision is unknown_species or "
        "out_of_domain: then the candidates are only the closest species.",
    )
    similarity: float | None = Field(
        None,
        description="Cosine similarity of the query to the species' closest enrolled photo: "
        "the scale of `similar[].score`, shown as 'similarity' on the page and in the CLI; "
        "it does not change when other species are enrolled.",
    )


class PlacementOut(BaseModel):
    """Where the specimen's species most likely sits in the tree, enrolled or not."""

    rank: Literal["genus", "family"]
    name: str
    probability: float = Field(
        description="Calibrated probability that the species belongs to this taxon (fitted by "
        "holding each enrolled species out in turn)."
    )


class SimilarOut(BaseModel):
    """An enrolled reference photo close to the query."""

    specimen_id: str
    species: str
    genus: Annotated[str | None, BlankIsNone] = None
    score: float = Field(
        description="Cosine similarity to the query (the scale of `candidates[].similarity`)."
    )
    image_url: str = Field(description="JPEG thumbnail of the reference photo.")


class IdentifyResponse(BaseModel):
    """The answer for the photos of one specimen."""

    decision: Decision = Field(
        description="species: confident; genus / family: species uncertain but the genus "
        "(family) is clear; uncertain: close to enrolled species but none is likely enough, "
        "read the candidates; unknown_species: like the collection, but no enrolled species; "
        "out_of_domain: not like anything enrolled."
    )
    summary: str = Field(description="The decision in plain words, e.g. 'Conus textile, 94 %'.")
    detail: str = Field(
        "",
        description="One sentence under the summary, consistent with the candidates shown, "
        "e.g. 'It looks most like Conus textile (similarity 0.54), but not closely enough to "
        "name it; ...'.",
    )
    candidates_heading: str = Field(
        "", description="Heading of the candidate list, e.g. 'Closest species (not a match)'."
    )
    similar_heading: str = Field("", description="Heading of the similar-photo gallery.")
    species: str | None = None
    genus: str | None = None
    family: str | None = None
    confidence: float = Field(0.0, description="Probability of the answer (species or genus).")
    none_probability: float | None = Field(
        None,
        description="Probability that the specimen is none of the enrolled species (shown as "
        "'None of these'); null when the index does not give it and on unknown_species / "
        "out_of_domain.",
    )
    candidates: list[CandidateOut]
    similar: list[SimilarOut]
    region: str | None = Field(None, description="Most likely region by a vote of neighbours.")
    region_votes: dict[str, float] = {}
    ood_score: float = Field(
        0.0,
        description="Higher = less like anything enrolled (`open_set_scores.ood`, kept for "
        "older clients).",
    )
    unknown_score: float = Field(
        0.0,
        description="Higher = more likely a species not enrolled (`open_set_scores.unknown`, "
        "kept for older clients).",
    )
    open_set_scores: dict[str, float] = Field(
        {},
        description="Every open-set score of the collection by name (ood, unknown, and any "
        "score registered since): higher = more likely rejected by it.",
    )
    placement: PlacementOut | None = Field(
        None,
        description="The genus (else family) the specimen's species most likely belongs to, "
        "enrolled or not, e.g. {rank: genus, name: Conus, probability: 0.8}: only on genus, "
        "family, uncertain and unknown_species answers whose placement clears the collection's "
        "stated precision (SHELLID_PLACEMENT_PRECISION); null otherwise or without taxonomy.",
    )
    timings_ms: dict[str, float] = Field(description="Where the time went (decode, embed, ...).")


class SearchResponse(BaseModel):
    """Nearest enrolled specimens, most similar first."""

    results: list[SimilarOut]
    timings_ms: dict[str, float]


class EnrollResponse(BaseModel):
    """What an enrollment added."""

    species: str
    added: int = Field(description="Photos added now.")
    duplicates: list[str] = Field(description="Photos already enrolled under this species.")
    errors: dict[str, str] = Field({}, description="Photos the store could not use, and why.")
    total: int = Field(description="Photos of this species in the store now.")
    specimen_ids: list[str] = Field([], description="Ids of the photos added now.")


class SpeciesOut(BaseModel):
    """An enrolled species."""

    species: str
    genus: str | None = None
    family: str | None = None
    region: str | None = None
    count: int = Field(description="Enrolled photos (all of them: see `photos_url`).")
    specimens: int = Field(
        0, description="Physical specimens those photos show (views of one shell share one)."
    )
    specimen_ids: list[str] = Field(
        description="Ids of its first photos, at most 5: a preview, not the whole list "
        "(`count` says how many there are; `photos_url` lists them all)."
    )
    thumbnail_url: str | None = None
    photos_url: str = Field("", description="Every photo of the species, a page at a time.")


class PhotoOut(BaseModel):
    """One enrolled photo and where it came from."""

    id: str = Field(description="Photo id (for DELETE /v1/specimens/{id}).")
    filename: str = Field(description="File name it was enrolled from ('' when unknown).")
    source: str = Field(description="Collection, author or folder it was enrolled from.")
    specimen: str = Field(description="The physical specimen it shows (views share it).")
    region: str | None = None
    width: int = Field(description="Of the original photo, pixels (0 when unknown).")
    height: int
    created: datetime | None = Field(None, description="When it was enrolled (UTC).")
    thumbnail_url: str = Field(description="JPEG thumbnail, longer side at most 160 px.")
    image_url: str = Field(description="The stored JPEG copy, longer side at most 512 px.")


class SpecimenCount(BaseModel):
    specimen: str
    photos: int


class SpeciesPhotoPage(BaseModel):
    """A page of one species' photos, ordered by specimen then file name, with its taxonomy
    and the counts over all its photos (``total`` = the species' ``count`` = the sum of
    ``by_specimen``)."""

    species: str
    genus: str | None = None
    family: str | None = None
    taxonomy: dict[str, str] = Field(
        description="Every taxonomy field it was enrolled with (genus, family, order, region, "
        "authority, ...)."
    )
    total: int = Field(description="Photos of the species, all pages.")
    specimens: int = Field(description="Physical specimens, all pages.")
    by_specimen: list[SpecimenCount] = Field(description="Photos per specimen, all pages.")
    offset: int
    limit: int
    next_offset: int | None = Field(description="Offset of the next page; null on the last.")
    photos: list[PhotoOut]


class SpeciesList(BaseModel):
    species: list[SpeciesOut]
    total_species: int
    total_specimens: int


class SpeciesRemoved(BaseModel):
    species: str
    removed: int = Field(description="Photos deleted.")


class SpecimenRemoved(BaseModel):
    specimen_id: str
    species: str


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    status: Literal["ready", "loading", "failed"]
    detail: str | None = None
    specimens: int | None = None


class Limits(BaseModel):
    """What an upload may be (docs/api.md, Limits)."""

    max_file_bytes: int
    max_query_files: int
    max_enroll_files: int
    max_pixels: int
    max_side: int = Field(description="Longest image side, pixels.")
    min_side: int = Field(description="Shortest image side, pixels.")
    max_aspect_ratio: float = Field(description="Longer side / shorter side.")
    max_image_cost: float = Field(
        description="Most estimated work of one image, in normal photos (12-MP phone JPEG)."
    )


class Inference(BaseModel):
    """How the server runs forward passes."""

    device: str
    workers: int = Field(description="Forward passes run side by side.")
    torch_threads: int | None = Field(description="CPU threads per pass (None = torch's).")
    max_batch_images: int = Field(description="Most photos per forward pass.")


class ServiceInfo(BaseModel):
    """What this server holds and what it needs from clients."""

    version: str
    model: str
    fingerprint: str
    embedding_dim: int
    specimens: int
    writes_need_key: bool
    reads_need_key: bool
    subject: str
    limits: Limits
    inference: Inference


class TryPhoto(BaseModel):
    name: str = Field(description="File name of the photo.")
    url: str = Field(description="Where the photo is served (GET).")


class TrySpecimen(BaseModel):
    """A specimen kept back from the collection by ``shellid demo``, for trying."""

    species: str = Field(description="What it is (its species is enrolled; this shell is not).")
    specimen: str
    genus: str | None = None
    family: str | None = None
    enrolled: bool = Field(description="Whether its species is in the collection now.")
    photos: list[TryPhoto]


class TryTheseList(BaseModel):
    items: list[TrySpecimen] = Field(description="Empty unless the store was filled by the demo.")


class TaxonSpecies(BaseModel):
    """An enrolled species as the filters know it."""

    species: str = Field(description="As stored, e.g. 'Conus_textile'.")
    name: str = Field(description="As shown, e.g. 'Conus textile', 'Bellamya sp.'.")
    genus: Annotated[str | None, BlankIsNone] = None
    family: Annotated[str | None, BlankIsNone] = None
    regions: list[str] = []


class TaxaList(BaseModel):
    """What the identify filters (region, genus, family, subset) can name, each sorted."""

    regions: list[str]
    genera: list[str]
    families: list[str]
    species: list[TaxonSpecies]


class SubjectIn(BaseModel):
    subject: str = Field(description="One noun for what the collection holds: shell, fish...")


class SubjectOut(BaseModel):
    subject: str = Field(
        description="The word in use ($SHELLID_SUBJECT overrides the store's, if set)."
    )


def _training_help(name: str) -> str:
    from embedder.settings import TrainingConfig

    return str(TrainingConfig.model_fields[name].description or name)


class TrainRequest(BaseModel):
    """What a curator may change of the store-training recipe (``POST /v1/train``; every field
    optional, unset = the recipe's value; other fields are refused)."""

    model_config = ConfigDict(extra="forbid")

    epochs: int | None = Field(None, ge=1, le=200, description=_training_help("epochs"))
    unfreeze: int | None = Field(
        None,
        ge=0,
        le=7,
        description=_training_help("unfreeze") + " (EfficientNet-Lite has 7 stages)",
    )
    seed: int | None = Field(None, ge=0, description=_training_help("seed"))


class TrainingJobOut(BaseModel):
    """A training job: where it is, and how it ended."""

    id: str = Field(description="The job's id: GET /v1/train/{id}.")
    state: Literal["queued", "running", "installed", "not_installed", "failed"] = Field(
        description="installed: the service now answers with the new model; not_installed: it "
        "was not better on validation (report.reason says why) and the old model serves on; "
        "failed: error says why, and the old model serves on."
    )
    stage: str = Field(description="What it is doing: 'epoch 3/15', 're-embedding the store'...")
    fraction: float = Field(ge=0, le=1, description="Share of the whole job done (never falls).")
    elapsed_seconds: float
    eta_seconds: float | None = Field(
        description="Seconds left, estimated from the fraction (null before any progress)."
    )
    created: datetime = Field(description="When the job was asked for (UTC).")
    settings: dict[str, Any] = Field(description="The training fields the request changed.")
    report: StoreTrainingReport | None = Field(
        description="When finished (not on failure): the figures and the one-line reason."
    )
    error: str | None = Field(description="One line, when the job failed.")
    log: list[str] = Field(description="The trainer's last lines.")
