"""What each command takes besides the settings: its photos, files and output choices, as
pydantic models whose fields give the options (``api/commands/_options.py`` generates them).

The ``SHELLID_*`` settings (store, model, decisions, service limits) and the configurations
(``TrainingConfig``, ``EvaluationConfig``) have their own models; these are the rest. A field's
``json_schema_extra`` may make it ``positional``, give it a ``short`` alias (``-o``), a
``metavar``, an ``option`` name or its ``default_text``; a trailing ``_`` keeps a field off
pydantic's names (``json_`` is ``--json``, ``args.json``). Imported only by the command being
run (pydantic costs ``shellid --help`` nothing).
"""

from __future__ import annotations

from copy import copy
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from index.config import AuditConfig

#: ``shellid identify``'s output formats
Format = Literal["text", "json", "jsonl", "csv"]


def option(default: Any, description: str = "", **extra: Any) -> Any:
    """A command-line field: its default, help text and option extras."""
    return Field(default=default, description=description, json_schema_extra=extra)


def config_field(config: type[BaseModel], name: str) -> Any:
    """The field ``name`` of ``config`` (its default, bounds and help) as an option of another
    name: one definition of each threshold."""
    return copy(config.model_fields[name])


def argument(description: str, metavar: str) -> Any:
    """A positional, required field (``DATA``, ``PHOTO``...)."""
    return Field(
        description=description, json_schema_extra={"positional": True, "metavar": metavar}
    )


class FilterOptions(BaseModel):
    """Candidate filters of ``identify`` and ``search`` (case-insensitive)."""

    region: str | None = option(None, "only species enrolled with this region")
    genus: str | None = option(None, "only species of this genus")
    family: str | None = option(None, "only species of this family")


class IdentifyOptions(BaseModel):
    """``shellid identify``: the photos, how they group into specimens, where answers go."""

    images: tuple[str, ...] = argument(
        "photo files, folders (searched recursively) or quoted patterns such as 'shells/*.jpg'",
        "PHOTO",
    )
    each: bool = option(
        False,
        "one answer per photo (the default when a folder or pattern is given; otherwise the "
        "photos are views of one specimen)",
    )
    group_regex: str | None = option(
        None,
        "one answer per specimen: photos whose file names give the same specimen under this "
        "regex, or a preset (specimen: Genus_species_<n>_<view>), are its views",
        metavar="REGEX",
    )
    format: Format | None = option(
        None,
        "text (default), json (one list), jsonl (one object per specimen) or csv (one row per "
        "candidate)",
    )
    json_: bool = option(False, "the same as --format jsonl")
    output: str | None = option(
        None,
        "write the answers to FILE instead of stdout; its suffix (.csv, .json, .jsonl, .txt) "
        "gives the format when --format is not given",
        metavar="FILE",
        short="-o",
    )
    subset: Path | None = option(
        None,
        "only the taxa listed in FILE, one per line: species, genus or family names (# starts "
        "a comment); an unknown name is answered with the closest known ones",
        metavar="FILE",
    )


class SearchOptions(BaseModel):
    """``shellid search``."""

    images: tuple[str, ...] = argument("photo file(s) of one specimen", "IMAGE")
    k: int = option(10, "how many photos to list")
    json_: bool = option(False, "print a JSON list")


class ListingOptions(BaseModel):
    """``shellid species``."""

    json_: bool = option(False, "print a JSON list")


class RemoveOptions(BaseModel):
    """``shellid remove``: one of ``species`` and ``specimen``."""

    species: str | None = option(None, "remove every photo of this species", metavar="NAME")
    specimen: str | None = option(None, "remove one photo (id from identify/search)", metavar="ID")
    yes: bool = option(False, "do not ask before removing a whole species", short="-y")


class DoctorOptions(BaseModel):
    """``shellid doctor``."""

    repair: bool = option(
        False,
        "repair what is safe: set unreadable manifests aside, restore the newest version that "
        "reads whole, delete damaged snapshots (rebuilt at the next start)",
    )
    json_: bool = option(False, "print the findings as JSON")


class EnrollOptions(BaseModel):
    """``shellid enroll``."""

    data: tuple[str, ...] = argument(
        "folder trees DATA/<Genus_species>/*.jpg, or (with --species) photos, folders and "
        "quoted patterns such as 'new/*.jpg'",
        "DATA",
    )
    species: str | None = option(None, "enroll every photo given as this species")
    taxonomy: str | None = option(
        None,
        "taxonomy CSV (species,genus,family,region,...; default DATA/taxonomy.csv if present)",
        metavar="CSV",
    )
    group_regex: str | None = option(
        None,
        "regex on file names naming the specimen a photo shows, so views of one shell count as "
        "one specimen; or a preset: specimen (Genus_species_<n>_<view>), track, image",
        metavar="REGEX",
        default_text="each photo its own specimen",
    )
    source: str | None = option(
        None,
        "provenance recorded with each photo",
        default_text="the folder the photos are in, so that the source and file name give each "
        "photo's path",
    )
    subject: str | None = option(
        None,
        "what the collection holds, one noun for the page's words (shell, fish, bird); kept in "
        "the store",
        metavar="WORD",
    )
    json_: bool = option(False, "print one JSON report per species")


class EnrollTaxonomy(BaseModel):
    """The taxonomy of ``shellid enroll --species`` (overrides the CSV's row)."""

    genus: str | None = option(None)
    family: str | None = option(None)
    region: str | None = option(None)


class DemoOptions(BaseModel):
    """``shellid demo`` (``data``'s help names the sample; see ``demo_cmd``)."""

    data: Path | None = option(None, "a folder per species to enroll instead of the sample")
    taxonomy: Path | None = option(
        None,
        "species,genus,family,region,...",
        metavar="CSV",
        default_text="DATA/taxonomy.csv, or for the sample the packaged api/demo/taxonomy.csv",
    )
    group_regex: str = option(
        "specimen",
        "regex or preset naming the specimen in file names",
        metavar="REGEX",
        default_text="specimen, Genus_species_<n>_<view>: views of one shell are one specimen",
    )
    hold_out: int = option(
        1,
        "specimens of each species to keep back for trying",
        metavar="N",
        default_text="1; 0 enrols all; a species keeps at least one enrolled specimen",
    )
    subject: str | None = option(
        None,
        "what the collection holds, for the page's words",
        metavar="WORD",
        default_text="shell for the sample; a --data collection keeps the store's",
    )
    if_empty: bool = option(
        False,
        "do nothing when the store already holds photos; when no sample is found, say so and "
        "succeed (used by 'make serve')",
    )


class EmbedOptions(BaseModel):
    """``shellid embed``."""

    data: tuple[str, ...] = argument(
        "a folder with one sub-folder per species (labels = folder names), a folder of photos, "
        "or photo files (photos outside species folders get the label '')",
        "DATA",
    )
    model: str | None = option(
        None, "trained model", metavar="MODEL.pt", default_text="the frozen backbone"
    )
    out: str = Field(
        description="where to write the embeddings", json_schema_extra={"metavar": "FILE.npz"}
    )
    group_regex: str | None = option(
        None,
        "regex on file names whose (?P<group>...) names one specimen or track, or a preset: "
        "specimen, track, image; stored as 'groups'",
        metavar="REGEX",
        default_text="the file name",
    )
    batch_size: int = option(32, "photos per batch")
    quiet: bool = option(False, "no progress bar")


class PriorOptions(BaseModel):
    """``shellid prior``."""

    data: str = argument(
        "a folder with one sub-folder per species (DATA/<Genus_species>/*.jpg), at least some "
        "species with two or more specimens",
        "DATA",
    )
    model: str | None = option(
        None,
        "the model to extend: a MODEL.pt or a packaged backbone",
        metavar="MODEL.pt",
        default_text="the frozen one",
    )
    out: str = Field(
        description="where to write the model with its prior",
        json_schema_extra={"metavar": "MODEL.pt"},
    )
    group_regex: str | None = option(
        None,
        "regex on file names whose (?P<group>...) names one specimen or track, or a preset: "
        "specimen, track, image",
        metavar="REGEX",
        default_text="each photo its own specimen",
    )
    components: int | None = option(
        None, "principal directions kept", default_text="index.whitening.PRIOR_COMPONENTS"
    )
    batch_size: int = option(32, "photos per batch")
    quiet: bool = option(False, "no progress bar")


class TrainOptions(BaseModel):
    """``shellid train``'s files (what the run does is ``TrainingConfig``)."""

    data: str | None = Field(
        None,
        description="folder with one sub-folder of photos per species (or --store instead)",
        json_schema_extra={"positional": True, "metavar": "DATA"},
    )
    out: str | None = option(
        None, "where to write the model trained on DATA (required with DATA)", metavar="MODEL.pt"
    )
    overwrite: bool = option(False, "replace --out if it exists")
    store: str | None = option(
        None,
        "train on the photos this store holds instead of DATA: whole specimens held out, and "
        "the new model installed in the store only when it names more of them right than the "
        "current one (exit status 1 when not installed)",
        metavar="DIR",
    )
    cache_dir: Path | None = option(
        None,
        "feature cache folder",
        default_text="$SHELLID_CACHE_DIR/features, else ~/.cache/shellid/features",
    )
    prior: bool = option(
        True,
        "do not store the training data's within-species prior in the model (see shellid "
        "prior; with --store the model always carries it)",
    )
    quiet: bool = option(False, "no progress bars")


class EvaluateOptions(BaseModel):
    """``shellid evaluate``'s files (what it measures is ``EvaluationConfig``)."""

    data: str = argument("folder with one sub-folder of photos per species", "DATA")
    model: str | None = option(
        None, "trained model to measure", metavar="MODEL.pt", default_text="the frozen backbone"
    )
    json_: str | None = option(
        None, "write every figure as JSON (keys: docs/evaluation.md)", metavar="FILE"
    )
    report: str | None = option(None, "write an HTML report with plots into DIR", metavar="DIR")
    quiet: bool = option(False, "no progress bars")


class AuditOptions(BaseModel):
    """``shellid audit``; its thresholds are ``index.config.AuditConfig``'s fields (and
    become that config)."""

    data: str = argument("folder with one sub-folder of photos per species", "DATA")
    report: str | None = option(None, "write an HTML page with thumbnails into DIR", metavar="DIR")
    csv: str | None = option(None, "write one row per finding to FILE (CSV)", metavar="FILE")
    model: str | None = option(
        None, "model for the embedding checks", metavar="MODEL.pt", default_text="frozen backbone"
    )
    group_regex: str | None = option(
        None,
        "regex on file names whose (?P<group>...) names one specimen or track, or a preset "
        "(specimen, track, image): views or frames of one object are not near-duplicate findings",
        metavar="REGEX",
    )
    duplicate_cosine: float = config_field(AuditConfig, "near_duplicate_cosine")
    off_domain_z: float = config_field(AuditConfig, "off_domain_z")
    outlier_percentile: float = config_field(AuditConfig, "outlier_percentile")
    min_images: int = config_field(AuditConfig, "min_images")
    min_side: int = config_field(AuditConfig, "min_side")
    quiet: bool = option(False, "no progress bars")


class ServeOptions(BaseModel):
    """``shellid serve``'s address (what it serves is ``ServiceSettings``)."""

    host: str = option("127.0.0.1", "address to listen on")
    port: int = option(8000, "port to listen on")
    log_level: Literal["critical", "error", "warning", "info", "debug"] = option(
        "info", "server log detail"
    )


class ServerOption(BaseModel):
    """``--server`` of ``shellid identify``."""

    server: str = option(
        "auto",
        "ask this running 'shellid serve' (e.g. http://127.0.0.1:8000) instead of loading the "
        "store and model here; 'auto' (default): the server serving --store, if one runs on this "
        "machine; 'none': never",
        metavar="URL",
        default_said=True,
    )


def _ray_address(text: str) -> str:
    from ._ray import ray_address

    return ray_address(text)


class RayJobOptions(BaseModel):
    """``--ray [ADDRESS]`` and how the job runs there (``enroll``, ``embed``, ``reindex``)."""

    ray: str | None = option(
        None,
        "run on Ray: auto (the cluster this machine is part of) or HEAD:6379; without ADDRESS a "
        "local Ray on this machine",
        metavar="ADDRESS",
        const="local",
        parse=_ray_address,
    )
    ray_workers: int | None = option(
        None,
        "embedding workers",
        metavar="N",
        default_text="one per GPU of the cluster, else one per --ray-cpus CPUs",
    )
    ray_cpus: float = option(
        1.0, "CPUs per worker (threads that decode and embed)", metavar="C", default_text="1"
    )
    ray_gpus: float | None = option(
        None,
        "GPUs per worker",
        metavar="G",
        default_text="1 where the cluster has GPUs, else 0",
    )
    ray_batch_size: int = option(32, "photos per batch sent to a worker", metavar="N")
    ray_commit: int = option(
        2000,
        "photos per store commit",
        metavar="N",
        default_text="2000; a species is never split below this",
    )
