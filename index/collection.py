"""A collection: the LanceDB specimen store + the embedding model + the in-memory FAISS
indexes and identifier, kept in step on every enrollment and deletion.

Thread-safe: identification and search go on while an enrollment is embedded and written;
writers are serialised; the in-memory state switches only after the store commit succeeded
(and the commit is rolled back if that switch fails).
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from embedder.datasets import genus_of
from embedder.intake import ImageIntakeError, IntakeLimits, decode_image

from .classifier import VectorIdentifier
from .config import IdentifierConfig, IndexSettings
from .errors import (
    DuplicateImageError,
    EmptyCollectionError,
    InvalidQueryError,
    ModelMismatchError,
    ModelNotLoadedError,
    SpeciesNotFoundError,
    SpecimenNotFoundError,
    StoreError,
)
from .imaging import (
    AcceptedImage,
    ImageInput,
    PreparedImage,
    check_decoded,
    normalise_size,
    prepare_accepted,
    prepare_image,
    read_input,
)
from .names import canonical_species
from .results import (
    EnrollReport,
    Identification,
    PhotoRecord,
    SimilarSpecimen,
    SpeciesPhotos,
    SpeciesSummary,
    Thresholds,
)
from .store import SpecimenStore, sql_string
from .whitening import WithinSpeciesPrior

#: taxonomy keys stored in their own columns; any other key goes to the JSON ``extra`` column.
TAXONOMY_COLUMNS = ("genus", "family", "region")
#: what a species' photo list reads from the store (no vectors, no image bytes).
PHOTO_COLUMNS = [
    "id",
    "species",
    "specimen",
    "filename",
    "source",
    "region",
    "width",
    "height",
    "created",
]


def _utc(moment: datetime | None) -> datetime | None:
    """A stored timestamp (LanceDB keeps UTC without the zone) as an aware UTC datetime."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


def _natural(text: str | None) -> tuple[tuple[int, int | str], ...]:
    """Sort key that puts ``shell_2`` before ``shell_10``."""
    parts = re.split(r"(\d+)", text or "")
    return tuple((0, int(p)) if p.isdigit() else (1, p.lower()) for p in parts)


class ImageEmbedder(Protocol):
    """What a collection needs from a model (``embedder.Embedder`` fits)."""

    @property
    def dim(self) -> int: ...

    @property
    def fingerprint(self) -> str: ...

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray: ...


#: ``model_name`` recorded by stores that the first release's default (frozen) model built.
LEGACY_FROZEN_MODEL = "efficientnet_lite0/frozen"


def _model_name(embedder: Any) -> str:
    for owner in (embedder, getattr(embedder, "model", None)):
        name = getattr(owner, "name", None)
        if isinstance(name, str) and name:
            return name
    return type(embedder).__name__


class LazyEmbedder:
    """A model named by a path or backbone name, built on first use (torch, timm and the
    weights load only when something is embedded, or the fingerprint is asked for)."""

    def __init__(self, model: str | None) -> None:
        self.spec = model
        self._real: ImageEmbedder | None = None
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._real is not None

    def load(self) -> ImageEmbedder:
        with self._lock:
            if self._real is None:
                from embedder import load_model
                from embedder.embedding import Embedder

                self._real = Embedder(load_model(self.spec))
            return self._real

    @property
    def dim(self) -> int:
        return self.load().dim

    @property
    def fingerprint(self) -> str:
        return self.load().fingerprint

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        return self.load().embed_images(images)


def make_embedder(model: Any) -> tuple[ImageEmbedder, str]:
    """``(embedder, model path or '')`` from None (frozen default), a packaged backbone name
    (frozen), a MODEL.pt path, an ``EmbeddingModel`` or anything with ``embed_images`` /
    ``dim`` / ``fingerprint``. A name or path gives a :class:`LazyEmbedder`: nothing heavy is
    imported or loaded until the first embedding."""
    if model is not None and hasattr(model, "embed_images"):
        return model, ""
    if model is None:
        return LazyEmbedder(None), ""
    if isinstance(model, str | Path):
        file = Path(model).expanduser()
        if not file.is_file():  # a packaged backbone name (load_model says if it is not)
            return LazyEmbedder(str(model)), str(model)
        path = str(file.resolve())
        return LazyEmbedder(path), path
    from embedder import EmbeddingModel
    from embedder.embedding import Embedder

    if isinstance(model, EmbeddingModel):
        return Embedder(model), ""
    raise TypeError(f"not a model: {model!r}")


def _check_fingerprint(store: SpecimenStore, embedder: ImageEmbedder) -> None:
    """Refuse a model other than the one whose vectors the store holds."""
    info = store.info()
    if (
        store.count() > 0
        and info.get("fingerprint")
        and info["fingerprint"] != embedder.fingerprint
    ):
        made_by = info.get("model_path") or info.get("model_name", "")
        raise ModelMismatchError(
            info["fingerprint"],
            embedder.fingerprint,
            made_by,
            store.uri,
            legacy_default=info.get("model_name") == LEGACY_FROZEN_MODEL,
        )


def _loaded(embedder: ImageEmbedder) -> ImageEmbedder:
    """The real embedder behind a :class:`LazyEmbedder` (loading it), else ``embedder``."""
    return embedder.load() if isinstance(embedder, LazyEmbedder) else embedder


@dataclass
class _Enrolment:
    """The photos of one species accepted for one store commit."""

    name: str
    images: list[PreparedImage]
    vectors: np.ndarray
    ids: list[str]
    groups: list[str | None]  # the specimen each photo shows (None: its own)
    taxonomy: dict[str, str]  # genus, family, region and any other field
    source: str

    @property
    def specimens(self) -> list[str]:
        return [g if g is not None else i for g, i in zip(self.groups, self.ids, strict=True)]

    @property
    def genus(self) -> str:
        return self.taxonomy.get("genus") or genus_of(self.name)

    @property
    def species_taxonomy(self) -> dict[str, str]:
        """The species' taxonomy columns (genus filled in from the name when not given)."""
        fields = {k: v for k, v in self.taxonomy.items() if k in TAXONOMY_COLUMNS}
        return fields | {"genus": self.genus}

    def columns(self, fingerprint: str) -> dict[str, list[Any]]:
        """The ``specimens`` table columns of these photos (all but the vectors)."""
        n = len(self.ids)
        extra = json.dumps(
            {k: v for k, v in self.taxonomy.items() if k not in TAXONOMY_COLUMNS}, sort_keys=True
        )
        return {
            "id": self.ids,
            "species": [self.name] * n,
            "genus": [self.genus] * n,
            "family": [self.taxonomy.get("family", "")] * n,
            "region": [self.taxonomy.get("region", "")] * n,
            "extra": [extra] * n,
            "specimen": self.specimens,
            "source": [self.source] * n,
            "filename": [p.name for p in self.images],
            "sha256": [p.sha256 for p in self.images],
            "fingerprint": [fingerprint] * n,
            "thumbnail": [p.thumbnail for p in self.images],
            "image": [p.stored for p in self.images],
            "width": [p.width for p in self.images],
            "height": [p.height for p in self.images],
            "created": [datetime.now(UTC)] * n,
        }


class Collection:
    """Enroll, identify, search and curate one specimen collection (see module doc)."""

    def __init__(
        self,
        store: SpecimenStore,
        embedder: ImageEmbedder | None,
        settings: IndexSettings,
        config: IdentifierConfig,
        model_path: str = "",
        *,
        check_model: bool = True,
    ) -> None:
        self.store = store
        self._embedder = embedder
        self._check_model = check_model
        self.settings = settings
        self._limits = settings.intake_limits()  # what a photo may cost (SHELLID_MAX_* settings)
        self.config = config
        self.model_path = model_path
        self._lock = threading.RLock()  # in-memory state
        self._write_lock = threading.RLock()  # one writer at a time
        self._identifier: VectorIdentifier | None = None
        self._sha: dict[str, tuple[str, str]] = {}
        self._loaded_version = -1
        self._load()

    # ================================================================== opening
    @classmethod
    def open(
        cls,
        uri: str | Path | None = None,
        model: str | Path | Any | None = None,
        create: bool = True,
        *,
        settings: IndexSettings | None = None,
        config: IdentifierConfig | None = None,
        need_model: bool = True,
        check_model: bool = True,
    ) -> Collection:
        """Open (or create) the collection at ``uri`` (default ``SHELLID_STORE`` or
        ``./shellid-data``) with ``model`` (default ``SHELLID_MODEL`` or the frozen backbone).

        Refuses a store whose vectors another model made (:class:`ModelMismatchError`) unless
        ``check_model=False`` (for ``reindex``). ``need_model=False`` skips loading the model
        (listing and removing work; enrolling and identifying images do not).
        """
        settings = settings or IndexSettings()
        store = SpecimenStore(
            uri if uri is not None else settings.store,
            create=create,
            keep_versions=timedelta(minutes=settings.keep_versions_minutes),
            compact_every=settings.compact_every,
        )
        embedder, path = (None, "")
        if need_model:
            embedder, path = make_embedder(model if model is not None else settings.model)
        if check_model and embedder is not None and not isinstance(embedder, LazyEmbedder):
            _check_fingerprint(store, embedder)  # a lazy model is checked when it loads
        return cls(
            store,
            embedder,
            settings,
            config or settings.identifier_config(),
            path,
            check_model=check_model,
        )

    def _load(self) -> None:
        """(Re)build the in-memory identifier from the store."""
        table = self.store.load_index()
        version = self.store.version
        known = self._embedder is not None and not isinstance(self._embedder, LazyEmbedder)
        dim = self.store.dim or (self.embedder.dim if known else None)
        identifier = None
        sha: dict[str, tuple[str, str]] = {}
        if dim is not None:
            identifier = VectorIdentifier(dim, self.config, self._prior())
            if table.num_rows:
                vectors = table["vector"].combine_chunks().flatten().to_numpy().reshape(-1, dim)
                columns = {c: table[c].to_pylist() for c in table.column_names if c != "vector"}
                taxonomy: dict[str, dict[str, str]] = defaultdict(dict)
                for i, species in enumerate(columns["species"]):
                    for key in TAXONOMY_COLUMNS:
                        if columns[key][i]:
                            taxonomy[species].setdefault(key, columns[key][i])
                identifier.add(
                    vectors,
                    columns["species"],
                    taxonomy,
                    columns["id"],
                    columns["specimen"],
                    sources=columns["source"],
                    regions=columns["region"],
                    calibrate=False,
                )
                sha = {
                    h: (s, i)
                    for h, s, i in zip(
                        columns["sha256"], columns["species"], columns["id"], strict=True
                    )
                }
            info = self.store.info()
            stored = info.get("thresholds")
            if (
                stored
                and info.get("calibrated_version") == version
                and info.get("calibration_config") == self.config.model_dump(mode="json")
            ):  # the scorer is refitted (deterministic), the thresholds fitted with it reused
                identifier.apply_refit(identifier.prepare_refit(calibrate=False))
                identifier.thresholds = Thresholds.model_validate(stored)
            else:
                identifier.calibrate()
            identifier.set_overrides(**self.settings.threshold_overrides())
        with self._lock:
            self._identifier = identifier
            self._sha = sha
            self._loaded_version = version

    def refresh(self) -> bool:
        """Reload from the store if another process wrote to it; True when it did."""
        with self._write_lock:
            if self.store.latest_version() == self._loaded_version:
                return False
            self._load()
            return True

    # ================================================================== properties
    @property
    def embedder(self) -> ImageEmbedder:
        """The model, loaded (and checked against the store) on first use."""
        embedder = self._embedder
        if embedder is None:
            raise ModelNotLoadedError("this collection was opened without a model")
        if isinstance(embedder, LazyEmbedder):
            real = embedder.load()
            if self._check_model:
                _check_fingerprint(self.store, real)
            if self._embedder is embedder:
                self._embedder = real
            return real
        return embedder

    def use_embedder(self, embedder: ImageEmbedder) -> None:
        """Embed with ``embedder`` from now on: the same model behind another front (a
        service's micro-batcher), so every photo still takes this class's path. Refuses a
        model with another fingerprint (:class:`ModelMismatchError`)."""
        current = self.embedder
        if embedder.fingerprint != current.fingerprint:
            raise ModelMismatchError(current.fingerprint, embedder.fingerprint, uri=self.store.uri)
        self._embedder = embedder

    @property
    def fingerprint(self) -> str:
        """Fingerprint of the model whose vectors the store holds (or will hold)."""
        if self._embedder is not None:
            return self.embedder.fingerprint
        return str(self.store.info().get("fingerprint", ""))

    @property
    def identifier(self) -> VectorIdentifier | None:
        """The current in-memory identifier (None before anything was enrolled)."""
        return self._identifier

    def __len__(self) -> int:
        identifier = self._identifier
        return 0 if identifier is None else len(identifier)

    @property
    def thresholds(self) -> Thresholds:
        identifier = self._identifier
        return identifier.thresholds if identifier is not None else Thresholds()

    def _need_identifier(self) -> VectorIdentifier:
        identifier = self._identifier
        if identifier is None or len(identifier) == 0:
            raise EmptyCollectionError("the collection is empty: enroll some species first")
        return identifier

    # ================================================================== enrollment
    def _prepare(
        self,
        images: Sequence[ImageInput | AcceptedImage],
        errors: dict[str, str],
        limits: IntakeLimits | None = None,
        strict: bool = False,
    ) -> list[PreparedImage | None]:
        """Every image through the one intake (:func:`index.imaging.accept_image`; images
        already accepted by it are not decoded again). Refused images are reported in
        ``errors``, or with ``strict`` the first one raises its ImageIntakeError."""
        prepared: list[PreparedImage | None] = []
        for item in images:
            if isinstance(item, AcceptedImage):
                prepared.append(prepare_accepted(item))
                continue
            name = item[0] if isinstance(item, tuple) else Path(item).name
            try:
                prepared.append(prepare_image(*read_input(item), limits or self._limits))
            except ImageIntakeError as exc:
                if strict:
                    raise
                key = name if name not in errors else f"{name} ({len(errors) + 1})"
                errors[key] = exc.reason
                prepared.append(None)
        return prepared

    def _embed(
        self, images: list[Image.Image], progress: bool = False, desc: str = "embedding"
    ) -> np.ndarray:
        embedder = self.embedder
        chunk = 64
        if not images:
            return np.zeros((0, int(embedder.dim)), np.float32)
        if len(images) <= chunk or not progress:
            return np.asarray(embedder.embed_images(images), np.float32).reshape(len(images), -1)
        parts = []
        with tqdm(total=len(images), desc=desc, unit="img") as bar:
            for start in range(0, len(images), chunk):
                parts.append(embedder.embed_images(images[start : start + chunk]))
                bar.update(len(parts[-1]))
        return np.concatenate(parts).astype(np.float32)

    def enroll(
        self,
        species: str,
        images: Sequence[ImageInput | AcceptedImage],
        taxonomy: Mapping[str, Any] | None = None,
        source: str = "",
        *,
        groups: Sequence[str] | None = None,
        strict: bool = False,
        calibrate: bool = True,
        progress: bool = False,
        limits: IntakeLimits | None = None,
    ) -> EnrollReport:
        """Add images of one species in ONE store commit (all or nothing).

        ``images``: paths, ``(file name, bytes)`` pairs or images :func:`accept_image`
        accepted already; ``taxonomy``: genus, family, region and any other fields (kept as
        JSON); ``groups``: per image, the physical specimen it shows (views of one shell share
        one; default each image its own); ``limits``: the intake limits (default: the
        settings'). Unusable images are reported in ``errors``; an image already
        enrolled under this species is skipped (``duplicates``); one enrolled under another
        species is refused (``refused``). With ``strict=True`` nothing is written when any
        image is unusable (its :class:`ImageIntakeError` is raised) or enrolled under another
        species (:class:`DuplicateImageError`).
        """
        name = canonical_species(species)
        if groups is not None and len(groups) != len(images):
            raise InvalidQueryError(f"{len(images)} images but {len(groups)} groups")
        self.embedder  # noqa: B018 - the model (and its check against the store) before decoding
        report = EnrollReport(species=name)
        prepared = self._prepare(images, report.errors, limits, strict)
        candidates = [(i, p) for i, p in enumerate(prepared) if p is not None]
        vectors = self._embed([p.image for _, p in candidates], progress, desc=f"embedding {name}")
        return self.enroll_embedded(
            name,
            [p for _, p in candidates],
            vectors,
            taxonomy=taxonomy,
            source=source,
            groups=None if groups is None else [groups[i] for i, _ in candidates],
            strict=strict,
            calibrate=calibrate,
            report=report,
        )

    def enroll_embedded(
        self,
        species: str,
        photos: Sequence[PreparedImage],
        vectors: np.ndarray,
        *,
        taxonomy: Mapping[str, Any] | None = None,
        source: str = "",
        groups: Sequence[str] | None = None,
        strict: bool = False,
        calibrate: bool = True,
        report: EnrollReport | None = None,
    ) -> EnrollReport:
        """:meth:`enroll` for photos already through the intake (:func:`prepare_image`) and
        embedded by this collection's model elsewhere (``vectors`` row i is ``photos[i]``):
        the duplicate rules, then ONE store commit."""
        name = canonical_species(species)
        if len(vectors) != len(photos) or (groups is not None and len(groups) != len(photos)):
            raise InvalidQueryError(f"{len(photos)} photos, {len(vectors)} vectors")
        taxonomy = {
            str(k).strip().lower(): str(v).strip()
            for k, v in (taxonomy or {}).items()
            if v not in (None, "")
        }
        embedder = self.embedder
        report = report or EnrollReport(species=name)
        with self._write_lock:
            self.refresh()  # judge duplicates against what other processes committed too
            keep = self._new_images(name, list(photos), report, strict)
            if keep:
                batch = _Enrolment(
                    name=name,
                    images=[photos[k] for k in keep],
                    vectors=np.asarray(vectors, np.float32)[keep],
                    ids=[uuid.uuid4().hex[:16] for _ in keep],
                    groups=[None if groups is None else str(groups[k]) for k in keep],
                    taxonomy=taxonomy,
                    source=source,
                )
                self._commit(batch, embedder)
                report.added, report.specimen_ids = len(batch.ids), batch.ids
                if calibrate:
                    self.calibrate()
            identifier = self._identifier
            report.total = identifier.counts().get(name, 0) if identifier is not None else 0
        return report

    def _new_images(
        self, name: str, images: list[PreparedImage], report: EnrollReport, strict: bool
    ) -> list[int]:
        """Positions of the ``images`` not enrolled yet. An image enrolled under ``name`` (or
        twice in this batch) is a duplicate, skipped; one under another species is refused
        (with ``strict``: :class:`DuplicateImageError`, nothing enrolled)."""
        keep: list[int] = []
        seen: set[str] = set()
        for k, image in enumerate(images):
            owner = self._sha.get(image.sha256)
            if image.sha256 in seen or (owner and owner[0] == name):
                report.duplicates.append(image.name)
            elif owner:
                report.refused[image.name] = f"already enrolled as {owner[0]} (specimen {owner[1]})"
            else:
                keep.append(k)
            seen.add(image.sha256)
        if strict and report.refused:
            first, why = next(iter(report.refused.items()))
            raise DuplicateImageError(f"{first}: {why}; nothing was enrolled")
        return keep

    def _commit(self, batch: _Enrolment, embedder: ImageEmbedder) -> None:
        """Write ``batch`` to the store (one commit), then to the in-memory identifier and
        duplicate table; a failure there rolls the store back."""
        self.store.ensure_table(embedder.dim)
        if not self.store.info().get("fingerprint") or self.store.count() == 0:
            self._record_model(embedder, self.model_path)
        before = self.store.latest_version()
        self.store.add(self.store.make_rows(batch.columns(embedder.fingerprint), batch.vectors))
        try:
            with self._lock:
                identifier = self._identifier
                if identifier is None or len(identifier) == 0:  # the model's size and prior
                    identifier = VectorIdentifier(embedder.dim, self.config, self._prior())
                identifier.add(
                    batch.vectors,
                    [batch.name] * len(batch.ids),
                    {batch.name: batch.species_taxonomy},
                    batch.ids,
                    batch.specimens,
                    sources=[batch.source] * len(batch.ids),
                    regions=[batch.taxonomy.get("region", "")] * len(batch.ids),
                    calibrate=False,
                )
                if identifier is not self._identifier:
                    identifier.set_overrides(**self.settings.threshold_overrides())
                    self._identifier = identifier
                for image, specimen_id in zip(batch.images, batch.ids, strict=True):
                    self._sha[image.sha256] = (batch.name, specimen_id)
                self._loaded_version = self.store.version
        except Exception:
            self.store.rollback(before)
            self._load()
            raise

    def enroll_folder(
        self,
        root: str | Path,
        species: str | None = None,
        progress: bool = True,
        *,
        group_pattern: str | None = None,
        taxonomy_csv: str | Path | None = None,
        taxonomy: Mapping[str, Any] | None = None,
        source: str | None = None,
    ) -> list[EnrollReport]:
        """Enroll a class-folder tree ``root/<Genus_species>/*.jpg`` (one commit per species),
        or, with ``species``, every image under ``root`` (or the single file ``root``) as that
        species. ``group_pattern``: regex or preset naming the specimen in file names (see
        ``embedder.datasets.GROUP_PRESETS``). Thresholds are recalibrated once at the end."""
        from embedder.datasets import compile_group_pattern, group_of, images_in, scan_collection

        root = Path(root)
        source = source if source is not None else root.name
        regex = compile_group_pattern(group_pattern)
        batches: list[tuple[str, list[Path], list[str], dict[str, str]]] = []
        if species is not None:
            if not root.exists():
                raise InvalidQueryError(f"{root}: no such file or folder")
            files = images_in([root])
            if not files:
                raise InvalidQueryError(f"{root}: no images found")
            batches.append(
                (species, files, [group_of(f.stem, regex) for f in files], dict(taxonomy or {}))
            )
        else:
            by_species: dict[str, list] = defaultdict(list)
            for record in scan_collection(
                root, group_pattern=group_pattern, taxonomy_csv=taxonomy_csv
            ):
                by_species[record.species].append(record)
            for name, records in by_species.items():
                info = dict(records[0].taxonomy) | dict(taxonomy or {})
                batches.append(
                    (
                        name,
                        [r.path for r in records],
                        [r.group.split("/", 1)[-1] for r in records],
                        info,
                    )
                )
        reports: list[EnrollReport] = []
        total = sum(len(b[1]) for b in batches)
        with tqdm(total=total, desc="enrolling", unit="img", disable=not progress) as bar:
            for name, files, groups, info in batches:
                bar.set_postfix_str(name[:40])
                reports.append(
                    self.enroll(name, files, info, source, groups=groups, calibrate=False)
                )
                bar.update(len(files))
        if any(r.added for r in reports):
            self.calibrate()
        return reports

    # ================================================================== queries
    def _embed_queries(
        self, images: Sequence[Image.Image], limits: IntakeLimits | None = None
    ) -> np.ndarray:
        """Vectors of query photos decoded by the caller (paths and bytes go through
        :func:`index.imaging.query_image`): the intake's size and shape checks first, so no
        photo costs more to resize and embed than an accepted one."""
        if not images:
            raise InvalidQueryError("no image given")
        for image in images:
            check_decoded(image, limits or self._limits)
        return self._embed([normalise_size(im.convert("RGB")) for im in images])

    def identify(
        self,
        images: Sequence[Image.Image],
        top_k: int = 5,
        region: str | None = None,
        genus: str | None = None,
        family: str | None = None,
        limits: IntakeLimits | None = None,
    ) -> Identification:
        """Identify one specimen from one or several photos of it (views are fused);
        ``limits``: the intake's (default: the settings')."""
        self._need_identifier()
        started = time.perf_counter()
        vectors = self._embed_queries(images, limits)
        embedded = time.perf_counter()
        result = self.identify_embeddings(vectors, top_k, region, genus, family)
        done = time.perf_counter()
        result.timings_ms["embed"] = round((embedded - started) * 1e3, 3)
        result.timings_ms["identify"] = round((done - embedded) * 1e3, 3)
        result.timings_ms["total"] = round((done - started) * 1e3, 3)
        return result

    def identify_embeddings(
        self,
        vectors: np.ndarray,
        top_k: int = 5,
        region: str | None = None,
        genus: str | None = None,
        family: str | None = None,
    ) -> Identification:
        """:meth:`identify` for embeddings ``(v, d)`` of the views of one specimen."""
        identifier = self._need_identifier()
        with self._lock:
            return identifier.identify(
                vectors, top_k=top_k, region=region, genus=genus, family=family
            )

    def search(
        self,
        images: Sequence[Image.Image],
        k: int = 10,
        region: str | None = None,
        genus: str | None = None,
        family: str | None = None,
        limits: IntakeLimits | None = None,
    ) -> list[SimilarSpecimen]:
        """The ``k`` enrolled images most similar to the photo(s) of one specimen."""
        self._need_identifier()
        vectors = self._embed_queries(images, limits)
        return self.search_embeddings(vectors, k, region, genus, family)

    def search_embeddings(
        self,
        vectors: np.ndarray,
        k: int = 10,
        region: str | None = None,
        genus: str | None = None,
        family: str | None = None,
    ) -> list[SimilarSpecimen]:
        identifier = self._need_identifier()
        with self._lock:
            return identifier.search(vectors, k=k, region=region, genus=genus, family=family)

    # ================================================================== listing
    def _summaries(self) -> dict[str, SpeciesSummary]:
        identifier = self._identifier
        if identifier is None or len(identifier) == 0:
            return {}
        with self._lock:
            ids = identifier.specimen_ids
            labels = identifier.labels
            counts = identifier.counts()
            specimens = identifier.specimen_counts()
            first: dict[str, list[str]] = defaultdict(list)
            for i, s in zip(ids, labels, strict=True):
                if len(first[s]) < 5:
                    first[s].append(i)
            out = {}
            for name in identifier.species:
                genus, family = identifier.taxon_of(name)
                out[name] = SpeciesSummary(
                    species=name,
                    genus=genus,
                    family=family,
                    region=identifier.taxonomy.get(name, {}).get("region", ""),
                    count=counts[name],
                    specimens=specimens[name],
                    specimen_ids=first[name],
                    thumbnail_id=first[name][0] if first[name] else None,
                )
            return out

    def species(self) -> list[SpeciesSummary]:
        """Every enrolled species with its image count (sorted by name)."""
        return list(self._summaries().values())

    def species_info(self, name: str) -> SpeciesSummary:
        summaries = self._summaries()
        key = canonical_species(name)
        if key not in summaries:
            raise SpeciesNotFoundError(f"species {name!r} is not enrolled")
        return summaries[key]

    def species_photos(self, name: str, offset: int = 0, limit: int | None = None) -> SpeciesPhotos:
        """A page of the photos of species ``name`` with their provenance, read from the
        store: ``limit`` photos (all when None) from ``offset``, ordered by specimen, file
        name and id (numbers in names in numeric order), and the counts over all of them.
        SpeciesNotFoundError when nothing of ``name`` is enrolled."""
        key = canonical_species(name)
        table = self.store.select(PHOTO_COLUMNS, f"species = {sql_string(key)}")
        if table.num_rows == 0:
            raise SpeciesNotFoundError(f"species {name!r} is not enrolled")
        rows = table.to_pylist()
        rows.sort(key=lambda r: (_natural(r["specimen"]), _natural(r["filename"]), r["id"]))
        by_specimen: dict[str, int] = {}
        for row in rows:
            by_specimen[row["specimen"]] = by_specimen.get(row["specimen"], 0) + 1
        offset = max(0, int(offset))
        end = None if limit is None else offset + max(0, int(limit))
        photos = [
            PhotoRecord(
                specimen_id=row["id"],
                species=row["species"],
                specimen=row["specimen"],
                filename=row["filename"] or "",
                source=row["source"] or "",
                region=row["region"] or "",
                width=int(row["width"] or 0),
                height=int(row["height"] or 0),
                created=_utc(row["created"]),
            )
            for row in rows[offset:end]
        ]
        return SpeciesPhotos(
            species=key, total=len(rows), by_specimen=by_specimen, offset=offset, photos=photos
        )

    def enrolled_taxonomy(self, species: str | None = None) -> dict[str, dict[str, str]]:
        """Each enrolled species' taxonomy as enrolled: genus, family, region and any other
        field (order, authority, ... from taxonomy.csv or the enroll form); no empty values.
        With ``species`` (canonical), only that species' rows are read."""
        columns = ["species", *TAXONOMY_COLUMNS, "extra"]
        if species is None:
            table = self.store.load_index(columns)
        else:
            table = self.store.select(columns, f"species = {sql_string(species)}")
        out: dict[str, dict[str, str]] = defaultdict(dict)
        rows = zip(*(table[c].to_pylist() for c in table.column_names), strict=True)
        for species, *values, extra in rows:
            fields = dict(zip(TAXONOMY_COLUMNS, values, strict=True))
            with contextlib.suppress(ValueError, AttributeError):  # store damage
                fields |= {str(k): str(v) for k, v in json.loads(extra or "{}").items()}
            for key, value in fields.items():
                if value:
                    out[species].setdefault(key, value)
        return dict(out)

    def photo_names(self) -> dict[str, str]:
        """Enrolled photo id -> the file name it was enrolled from ('' when unknown)."""
        table = self.store.load_index(["id", "filename"])
        return dict(zip(table["id"].to_pylist(), table["filename"].to_pylist(), strict=True))

    def thumbnail(self, specimen_id: str) -> bytes:
        """JPEG thumbnail (longer side <= 160 px) of an enrolled image."""
        return self.store.read_blob(specimen_id, "thumbnail")

    def image(self, specimen_id: str) -> bytes:
        """The stored normalised JPEG copy of an enrolled image."""
        return self.store.read_blob(specimen_id, "image")

    # ================================================================== curation
    def remove_species(self, name: str) -> int:
        """Delete every image of a species (one commit); returns how many went."""
        key = canonical_species(name)
        with self._write_lock:
            self.refresh()  # a species another process enrolled can be removed here too
            identifier = self._identifier
            if identifier is None or key not in identifier.species:
                raise SpeciesNotFoundError(f"species {name!r} is not enrolled")
            removed = self.store.delete_species(key)
            with self._lock:
                identifier.remove_species(key, calibrate=False)
                self._sha = {h: v for h, v in self._sha.items() if v[0] != key}
                self._loaded_version = self.store.version
            self.calibrate()
            return removed

    def remove_specimen(self, specimen_id: str) -> SimilarSpecimen:
        """Delete one enrolled image by id; returns what it was."""
        with self._write_lock:
            self.refresh()
            identifier = self._identifier
            ids = identifier.specimen_ids if identifier is not None else []
            if identifier is None or specimen_id not in ids:
                raise SpecimenNotFoundError(f"no enrolled specimen with id {specimen_id!r}")
            row = ids.index(specimen_id)
            species = identifier.labels[row]
            record = SimilarSpecimen(
                specimen_id=specimen_id,
                species=species,
                genus=identifier.taxon_of(species)[0],
                score=1.0,
            )
            self.store.delete_ids([specimen_id])
            with self._lock:
                identifier.remove([specimen_id], calibrate=False)
                self._sha = {h: v for h, v in self._sha.items() if v[1] != specimen_id}
                self._loaded_version = self.store.version
            self.calibrate()
            return record

    def calibrate(self, target_recall: float | None = None) -> Thresholds:
        """Refit the scorer and recalibrate the thresholds on the enrolled data, and store
        them with the store. The work runs outside the query lock (writers are held off by
        the write lock, so the rows cannot change meanwhile); queries keep being answered
        with the previous fit until the new one is swapped in."""
        with self._write_lock:
            identifier = self._identifier
            if identifier is None:
                return Thresholds()
            refit = identifier.prepare_refit(target_recall)
            with self._lock:
                thresholds = identifier.apply_refit(refit)
            self.store.write_info(
                thresholds=json.loads(identifier.calibrated_thresholds.model_dump_json()),
                calibrated_version=self.store.version,
                calibration_config=self.config.model_dump(mode="json"),
            )
            return thresholds

    def _record_model(self, embedder: ImageEmbedder, path: str, **info: Any) -> None:
        """Record in the store which model makes its vectors, with the model's prior."""
        self.store.write_prior(getattr(embedder, "within_species_prior", None))
        self.store.write_info(
            fingerprint=embedder.fingerprint,
            model_name=_model_name(embedder),
            model_path=path,
            dim=int(embedder.dim),
            **info,
        )

    def _prior(self) -> WithinSpeciesPrior | None:
        """The model's within-species prior as the store recorded it (None: it has none)."""
        arrays = self.store.read_prior()
        if arrays is None:
            return None
        try:
            return WithinSpeciesPrior.from_arrays(arrays)
        except ValueError as exc:
            raise StoreError(f"store {self.store.uri}: {exc}; run shellid reindex") from None

    def reindex(self, model: str | Path | Any | None = None, progress: bool = True) -> int:
        """Re-embed every stored image with ``model`` (one commit) and adopt that model;
        returns the number of images re-embedded."""
        new_embedder, path = make_embedder(model)
        new_embedder = _loaded(new_embedder)
        with self._write_lock:
            total = self.store.count()
            ids: list[str] = []
            parts: list[np.ndarray] = []
            with tqdm(total=total, desc="re-embedding", unit="img", disable=not progress) as bar:
                for batch_ids, blobs in self.store.iter_images(64):
                    images = []
                    for i, blob in zip(batch_ids, blobs, strict=True):
                        try:  # exactly the pixels enrollment embedded
                            images.append(decode_image(blob, label=i))
                        except ImageIntakeError as exc:  # pragma: no cover - store damage
                            raise StoreError(
                                f"stored image {i} cannot be decoded ({exc.reason})"
                            ) from None
                    parts.append(np.asarray(new_embedder.embed_images(images), np.float32))
                    ids += batch_ids
                    bar.update(len(batch_ids))
            if not ids:
                self._record_model(new_embedder, path)
                self._embedder, self.model_path = new_embedder, path
                self._load()
                return 0
            vectors = np.concatenate(parts)
            before = self.store.latest_version()
            old_info, old_prior = self.store.info(), self.store.read_prior()
            self.store.rewrite_vectors(ids, vectors, new_embedder.fingerprint)
            try:
                self._record_model(new_embedder, path, thresholds=None, calibrated_version=None)
                self._embedder, self.model_path = new_embedder, path
                self._load()
            except Exception:
                self.store.rollback(before)
                self.store.write_info(**old_info)
                self.store.write_prior(old_prior)
                raise
            self.calibrate()
            return len(ids)
