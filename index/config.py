"""Settings of the index in one place: identification options (:class:`IdentifierConfig`) and
the environment / CLI settings (:class:`IndexSettings`, ``SHELLID_*`` variables) that the
command line and the HTTP API share.

``IndexSettings`` is the index's layer of the settings tree: it extends the embedder's
(:class:`embedder.settings.EmbedderSettings`: runtime, cache folder) with the decision options
and the store, and ``api.settings.ServiceSettings`` extends it. Every field reads the
environment variable ``SHELLID_<FIELD>`` (for example ``SHELLID_STORE``, ``SHELLID_MODEL``,
``SHELLID_TARGET_RECALL``); a ``.env`` file in the working directory is read too.
docs/configuration.md lists every one.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from embedder.intake_limits import (
    DEFAULT_MAX_ASPECT_RATIO,
    DEFAULT_MAX_COST,
    DEFAULT_MAX_PIXELS,
    DEFAULT_MAX_SIDE,
    MIN_SIDE_PX,
    IntakeLimits,
)
from embedder.settings import EmbedderSettings, option_field

DEFAULT_STORE = "shellid-data"
#: Share of known-species photos the open-set thresholds accept by default: a product choice
#: (a curator would rather read "not sure" than a wrong name); docs/index.md has the figures.
DEFAULT_TARGET_RECALL = 0.90
#: The species scorers :data:`index.scorers.SCORERS` registers (``method``'s choices), listed
#: here so the settings and the command line import no FAISS (tests/test_registries.py keeps
#: the two equal).
Method = Literal["whitened", "prototype", "knn", "prototype+knn"]


class DecisionOptions(BaseModel):
    """The identification options a user sets (``SHELLID_*`` through :class:`IndexSettings`
    and the options of ``shellid identify`` and ``serve``, or in code through
    :class:`IdentifierConfig`): defined once, here."""

    method: Method = Field(
        default="whitened",
        description="species score: CL2N prototype similarity in the collection's "
        "within-species whitened space (whitened), plain prototype similarity, "
        "nearest-specimen similarity, or the mean of the last two",
    )
    prototypes_per_species: int = Field(
        default=1, ge=1, le=16, description="k-means prototypes per species (1 = the class mean)"
    )
    target_recall: float = Field(
        default=DEFAULT_TARGET_RECALL,
        gt=0.5,
        lt=1.0,
        description="share of known-species queries to accept",
    )
    species_probability: float = Field(
        default=0.5,
        gt=0.0,
        le=1.0,
        description="probability the best species needs for the answer to name it",
    )
    genus_probability: float = Field(
        default=0.5,
        gt=0.0,
        le=1.0,
        description="summed probability of its species the best genus needs when no species "
        "reaches species_probability",
    )
    family_probability: float = Field(
        default=0.5,
        gt=0.0,
        le=1.0,
        description="probability a family needs when no genus reaches genus_probability",
    )
    placement_precision: float = Field(
        default=0.8,
        gt=0.5,
        lt=1.0,
        description="share of placements (an answer's 'probably a new <genus>') that must be "
        "right on the collection's own species held out one at a time; the genus (else "
        "family) is named only above the probability that keeps it",
    )
    ann_threshold: int = Field(
        default=100_000, ge=1, description="specimens above which search uses an approximate index"
    )
    ann_factory: str | None = Field(
        default=None,
        description="FAISS index_factory string for the ANN index (None = IVF, auto nlist)",
    )
    ann_nprobe: int | None = Field(default=None, ge=1, description="IVF lists probed (None = auto)")
    use_gpu: bool | None = Field(
        default=None, description="FAISS on GPU (None = when one is present)"
    )
    faiss_threads: int = Field(
        default=1,
        ge=1,
        description="FAISS OpenMP threads (1: one query at a time is fastest on a small CPU)",
    )
    feature_power: float = Field(
        default=0.5,
        gt=0.0,
        le=1.0,
        description="power applied to every vector component (sign kept) before anything "
        "else: 0.5 is the Hellinger map of pooled CNN features, 1 leaves vectors as embedded; "
        "measured in docs/index.md",
    )
    centre: bool = Field(
        default=True, description="centre on the collection mean before prototypes (CL2N)"
    )
    centre_full_species: int = Field(
        default=10,
        ge=1,
        description="species from which the whole collection mean is subtracted; with S < "
        "this the mean is scaled by (S - 1) / (this - 1) (the mean of a few species is not a "
        "domain mean), so an enrolment moves every score a little instead of switching the "
        "centring on at once (measured in docs/index.md, 'Stability')",
    )
    min_specimens_per_prototype: int = Field(
        default=3,
        ge=1,
        description="a species gets k prototypes only with >= k * this many specimens",
    )
    knn_candidates: int = Field(
        default=64,
        ge=1,
        description="nearest specimens re-scored for the nearest-specimen similarity",
    )
    ood_k: int = Field(
        default=5, ge=1, description="k nearest specimens averaged for the OOD score"
    )
    region_k: int = Field(default=10, ge=1, description="nearest specimens voting for the region")
    ood_in_domain_share: float = Field(
        default=0.95,
        gt=0.5,
        lt=1.0,
        description="share of in-domain images of species not enrolled that the OOD filter "
        "lets through (to the unknown-species decision)",
    )
    ood_miss_share: float = Field(
        default=0.2,
        gt=0.0,
        lt=1.0,
        description="share of the allowed known-species rejections spent on the OOD filter",
    )
    ood_species_photos: int = Field(
        default=3,
        ge=2,
        description="held-out photos a species needs for an OOD threshold of its own (kept "
        "when wider than the collection's: a species photographed unlike the rest widens the "
        "domain around itself)",
    )
    calibration_queries: int = Field(
        default=3000, ge=10, description="most held-out images scored when calibrating"
    )
    fallback_temperature: float = Field(
        default=0.05,
        gt=0.0,
        description="temperature when the collection is too small to calibrate",
    )
    none_temperature: float = Field(
        default=0.01,
        gt=0.0,
        description="width, in score units, of the change from a species to 'none of these' "
        "around the unknown threshold (odds exp((threshold score - best) / this)); measured "
        "in docs/index.md",
    )
    fallback_ood_similarity: float = Field(
        default=0.55,
        ge=-1.0,
        le=1.0,
        description="mean cosine to the nearest specimens below which a query is off-domain "
        "when the collection is too small to calibrate; default frozen backbone's scale "
        "(feature_power 0.5): all birds-cub images of species left out of a 30-species store "
        "stay above it (lowest 0.551, 1 % quantile 0.62), 77 % of drawings and rocks fall below",
    )


class IdentifierConfig(DecisionOptions):
    """How :class:`index.VectorIdentifier` scores and decides (defaults chosen by measurement,
    see benchmarks/index_benchmark.py and docs/index.md): the :class:`DecisionOptions`, frozen,
    and the seed of the calibration's sampling."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    seed: int = 0


class IndexSettings(EmbedderSettings, DecisionOptions):
    """``SHELLID_*`` settings of the store, the model and the decisions (and, inherited, the
    embedder's); :meth:`load` reports a bad value in one line."""

    store: str = Field(
        default=DEFAULT_STORE, description="LanceDB directory or URI of the specimen store"
    )
    model: str | None = Field(
        default=None,
        description="MODEL.pt written by 'shellid train', or a packaged backbone name "
        "(tf_efficientnet_lite0/1/2), to embed with",
        json_schema_extra={"default_text": "the frozen default backbone"},
    )
    top_k: int = Field(default=5, ge=1, le=100, description="candidates in each answer")
    temperature: float | None = Field(
        default=None,
        gt=0.0,
        description="softmax temperature of the species probabilities",
        json_schema_extra={"default_text": "calibrated on the enrolled data"},
    )
    unknown_threshold: float | None = Field(
        default=None,
        description="unknown_score above which the answer is unknown_species",
        json_schema_extra={"default_text": "calibrated on the enrolled data"},
    )
    ood_threshold: float | None = Field(
        default=None,
        description="ood_score above which the answer is out_of_domain",
        json_schema_extra={"default_text": "calibrated on the enrolled data"},
    )
    keep_versions_minutes: float = Field(
        default=10.0,
        ge=0.0,
        description="retention of old store versions: kept this long (the grace for readers "
        "of an older version in flight, other replicas' included), then removed by the next "
        "compaction; the newest version is always kept",
    )
    compact_every: int = Field(
        default=20,
        ge=1,
        description="compact the store (merge small data files, remove versions past "
        "keep_versions_minutes) after this many writes, counted in the store by all replicas",
    )
    keep_snapshots_days: float = Field(
        default=7.0,
        ge=0.0,
        description="retention of snapshots of another model or config (the current one is "
        "rewritten in place): removed, with their FAISS files, when not written for this long",
    )
    max_pixels: int = Field(
        default=DEFAULT_MAX_PIXELS,
        gt=0,
        description="Largest accepted image, width x height pixels.",
    )
    max_side: int = Field(
        default=DEFAULT_MAX_SIDE, gt=0, description="Longest accepted image side, pixels."
    )
    min_side: int = Field(
        default=MIN_SIDE_PX, ge=1, description="Shortest accepted image side, pixels."
    )
    max_aspect_ratio: float = Field(
        default=DEFAULT_MAX_ASPECT_RATIO,
        ge=1.0,
        description="Most accepted ratio of an image's longer side to its shorter side.",
    )
    max_image_cost: float = Field(
        default=DEFAULT_MAX_COST,
        gt=0,
        description="Most estimated work (decoding, resizing, embedding) of one image, in "
        "normal photos (a 12-megapixel phone JPEG); estimated from the header before any "
        "pixel is decoded (embedder.intake.estimate_cost).",
    )

    def identifier_config(self) -> IdentifierConfig:
        """The :class:`IdentifierConfig` these settings describe."""
        return IdentifierConfig(**self.model_dump(include=set(DecisionOptions.model_fields)))

    def intake_limits(self) -> IntakeLimits:
        """The limits every photo is checked against, enrolled or asked about, from the
        command line or over HTTP (embedder.intake)."""
        return IntakeLimits(
            max_pixels=self.max_pixels,
            max_side=self.max_side,
            min_side=self.min_side,
            max_aspect_ratio=self.max_aspect_ratio,
            max_cost=self.max_image_cost,
        )

    def threshold_overrides(self) -> dict[str, float | None]:
        """Thresholds set by the user, replacing the calibrated values (None = calibrated)."""
        return {
            "temperature": self.temperature,
            "unknown": self.unknown_threshold,
            "ood": self.ood_threshold,
        }


class EvaluationConfig(BaseModel):
    """Options of ``index.workflows.evaluation.evaluate_collection``; ``shellid evaluate``'s
    options are generated from these fields (``api/commands/evaluate_cmd.py``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    shots: tuple[Annotated[int, Field(ge=1)], ...] = option_field(
        (1, 5), "K for K-shot", min_length=1, separator=",", metavar="K,K"
    )
    episodes: int = option_field(600, "few-shot episodes per K", ge=1)
    n_way: int = option_field(5, "N of N-way episodes", ge=1)
    n_query: int = option_field(15, "queries per species in each few-shot episode", ge=1)
    allway_repeats: int = option_field(
        5, "repeats of the every-species-at-once measure, each on a new draw of shots", ge=1
    )
    test_fraction: float = option_field(
        0.3, "share of each species' groups held out as test queries", gt=0, lt=1
    )
    unknown_fraction: float = option_field(
        0.3, "share of species never enrolled, for the open-set figures", gt=0, lt=1
    )
    target_recall: float = option_field(
        DEFAULT_TARGET_RECALL,
        "known-species recall the open-set thresholds are calibrated for",
        gt=0.5,
        lt=1,
    )
    group_pattern: str | None = option_field(
        None,
        "regex on file names whose (?P<group>...) names one specimen or track, or a preset "
        "(specimen, track, image); no group is split across train and test",
        option="--group-regex",
        metavar="REGEX",
        default_text="each image is its own group",
    )
    classes: str = option_field(
        "all",
        "species to evaluate: all, novel / base (not / only those the model was trained or "
        "validated on), NAME,NAME,... or @FILE",
        metavar="WHICH",
    )
    ood_dirs: tuple[str, ...] = option_field(
        (),
        "folders of off-domain photos (drawings, rocks, ...) scored as queries",
        option="--ood",
        metavar="DIR",
        default_text="none",
    )
    max_ood_images: int = option_field(500, "photos sampled from each --ood folder", ge=1)
    bootstrap_resamples: int = option_field(1000, "bootstrap resamples", ge=1, option="--bootstrap")
    bootstrap_max_per_species: int = option_field(
        200, "test photos of a species kept for the bootstrap (larger ones subsampled)", ge=1
    )
    seed: int = option_field(0, "seed of every split")

    def to_dict(self) -> dict:
        return self.model_dump(mode="json")


class AuditConfig(BaseModel):
    """Thresholds of ``index.workflows.audit.audit_collection`` (defaults suit photo
    collections of a few to 10,000 images); ``shellid audit``'s threshold options are these
    fields (``api/commands/_models.py`` ``AuditOptions``)."""

    model_config = ConfigDict(extra="forbid")

    near_duplicate_cosine: float = option_field(
        0.97, "embedding cosine from which two photos are near duplicates", ge=0.5, le=1.0
    )
    near_duplicate_hash_bits: int = option_field(
        9,
        "dHash bits (of 256) that may differ for a copy whose embedding cosine is also "
        "near_duplicate_hash_cosine",
    )
    near_duplicate_hash_cosine: float = option_field(
        0.85, "embedding cosine of a copy found by its dHash"
    )
    neighbours: int = option_field(5, "k for the mislabel and off-domain checks")
    off_domain_z: float = option_field(
        4.0,
        "robust z-score of neighbour similarity below -Z marks off-domain images",
        ge=1.0,
        le=50.0,
        default_text="4",
    )
    outlier_percentile: float = option_field(
        99.0,
        "distance-to-species-centre percentile for outliers",
        ge=50.0,
        le=100.0,
        default_text="99",
    )
    outlier_min_z: float = option_field(
        3.0, "robust SDs above the median an outlier's distance is at least"
    )
    min_side: int = option_field(64, "flag images with a shorter side in px")
    min_images: int = option_field(5, "flag species with fewer images")
    min_groups: int = option_field(2, "flag species with fewer specimens (groups)")
    group_pattern: str | None = option_field(
        None, "regex or preset (see embedder.datasets.GROUP_PRESETS) naming one specimen"
    )
