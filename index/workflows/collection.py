"""A collection as users meet it: photos and folders in, answers out. It puts every photo
through the one intake (:mod:`index.workflows.imaging`), embeds it with the collection's model
(:mod:`index.workflows.models`) and hands the vectors to the engine
(:class:`index.specimens.SpecimenIndex`: the LanceDB store and the in-memory identifier).

Thread-safe as the engine is: identification and search go on while an enrollment is
embedded and written; writers are serialised.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from embedder.intake import ImageIntakeError, IntakeLimits, decode_image

from ..classifier import VectorIdentifier
from ..config import IdentifierConfig, IndexSettings
from ..errors import InvalidQueryError, ModelMismatchError, ModelNotLoadedError, StoreError
from ..names import canonical_species
from ..results import (
    EnrollReport,
    Identification,
    SimilarSpecimen,
    SpeciesPhotos,
    SpeciesSummary,
    Thresholds,
)
from ..specimens import SpecimenIndex
from ..store import SpecimenStore
from ..taxa import KnownTaxa, known_taxa
from .imaging import (
    AcceptedImage,
    ImageInput,
    PreparedImage,
    as_stored,
    check_decoded,
    normalise_size,
    prepare_accepted,
    prepare_image,
    read_input,
)
from .models import (
    ImageEmbedder,
    LazyEmbedder,
    check_fingerprint,
    loaded,
    make_embedder,
    model_record,
)

#: photos embedded per call when a progress bar is drawn
EMBED_CHUNK = 64


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
        self._embedder = embedder
        self._check_model = check_model
        self.settings = settings
        self._limits = settings.intake_limits()  # what a photo may cost (SHELLID_MAX_* settings)
        self.config = config
        self.model_path = model_path
        known = embedder is not None and not isinstance(embedder, LazyEmbedder)
        self.index = SpecimenIndex(
            store, settings, config, dim=int(embedder.dim) if known and embedder else None
        )

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
        exported_model: bool = False,
    ) -> Collection:
        """Open (or create) the collection at ``uri`` (default ``SHELLID_STORE`` or
        ``./shellid-data``) with ``model`` (default ``SHELLID_MODEL`` or the frozen backbone;
        ``exported_model``: run its cached ONNX export without PyTorch when there is one, see
        :class:`~index.workflows.models.LazyEmbedder`).

        Refuses a store whose vectors another model made (:class:`ModelMismatchError`) unless
        ``check_model=False`` (for ``reindex``). ``need_model=False`` skips loading the model
        (listing and removing work; enrolling and identifying images do not).
        """
        settings = settings or IndexSettings.load()
        store = SpecimenStore(
            uri if uri is not None else settings.store,
            create=create,
            keep_versions=timedelta(minutes=settings.keep_versions_minutes),
            compact_every=settings.compact_every,
        )
        embedder, path = (None, "")
        if need_model:
            embedder, path = make_embedder(
                model if model is not None else settings.model, exported=exported_model
            )
        if check_model and embedder is not None and not isinstance(embedder, LazyEmbedder):
            check_fingerprint(store, embedder)  # a lazy model is checked when it loads
        return cls(
            store,
            embedder,
            settings,
            config or settings.identifier_config(),
            path,
            check_model=check_model,
        )

    # ================================================================== the model
    @property
    def store(self) -> SpecimenStore:
        return self.index.store

    @property
    def embedder(self) -> ImageEmbedder:
        """The model, loaded (and checked against the store) on first use."""
        embedder = self._embedder
        if embedder is None:
            raise ModelNotLoadedError("this collection was opened without a model")
        if isinstance(embedder, LazyEmbedder):
            real = embedder.load()
            if self._check_model:
                check_fingerprint(self.store, real)
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

    def _embed(
        self, images: list[Image.Image], progress: bool = False, desc: str = "embedding"
    ) -> np.ndarray:
        embedder = self.embedder
        if not images:
            return np.zeros((0, int(embedder.dim)), np.float32)
        if len(images) <= EMBED_CHUNK or not progress:
            return np.asarray(embedder.embed_images(images), np.float32).reshape(len(images), -1)
        parts = []
        with tqdm(total=len(images), desc=desc, unit="img") as bar:
            for start in range(0, len(images), EMBED_CHUNK):
                parts.append(embedder.embed_images(images[start : start + EMBED_CHUNK]))
                bar.update(len(parts[-1]))
        return np.concatenate(parts).astype(np.float32)

    # ================================================================== enrollment
    def _prepare(
        self,
        images: Sequence[ImageInput | AcceptedImage],
        errors: dict[str, str],
        limits: IntakeLimits | None = None,
        strict: bool = False,
    ) -> list[PreparedImage | None]:
        """Every image through the one intake (:func:`index.workflows.imaging.accept_image`;
        images already accepted by it are not decoded again). Refused images are reported in
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
        return self.index.add_photos(
            species,
            photos,
            vectors,
            model_record(self.embedder, self.model_path),
            taxonomy=taxonomy,
            source=source,
            groups=groups,
            strict=strict,
            calibrate=calibrate,
            report=report,
        )

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
        root = Path(root)
        batches = folder_batches(root, species, group_pattern, taxonomy_csv, taxonomy)
        reports: list[EnrollReport] = []
        total = sum(len(b[1]) for b in batches)
        with tqdm(total=total, desc="enrolling", unit="img", disable=not progress) as bar:
            for name, files, groups, info in batches:
                bar.set_postfix_str(name[:40])
                origin = source if source is not None else enrolled_from(files)
                reports.append(
                    self.enroll(name, files, info, origin, groups=groups, calibrate=False)
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
        :func:`index.workflows.imaging.query_image`): the intake's size and shape checks
        first, so no photo costs more to resize and embed than an accepted one. Each is
        embedded from its would-be stored copy (:func:`as_stored`), as enrolled photos are:
        the calibration's held-out photos and the queries then see the same pixels."""
        if not images:
            raise InvalidQueryError("no image given")
        for image in images:
            check_decoded(image, limits or self._limits)
        return self._embed([as_stored(normalise_size(im.convert("RGB")))[0] for im in images])

    def identify(
        self,
        images: Sequence[Image.Image],
        top_k: int = 5,
        region: str | None = None,
        genus: str | None = None,
        family: str | None = None,
        limits: IntakeLimits | None = None,
        subset: Sequence[str] | None = None,
    ) -> Identification:
        """Identify one specimen from one or several photos of it (views are fused);
        ``limits``: the intake's (default: the settings'); ``subset``: species, genus or
        family names to choose among (:func:`index.decision.candidate_mask`)."""
        self.index.need_identifier()
        started = time.perf_counter()
        vectors = self._embed_queries(images, limits)
        embedded = time.perf_counter()
        result = self.index.identify(vectors, top_k, region, genus, family, subset)
        done = time.perf_counter()
        result.timings_ms["embed"] = round((embedded - started) * 1e3, 3)
        result.timings_ms["identify"] = round((done - embedded) * 1e3, 3)
        result.timings_ms["total"] = round((done - started) * 1e3, 3)
        return result

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
        self.index.need_identifier()
        vectors = self._embed_queries(images, limits)
        return self.index.search(vectors, k, region, genus, family)

    # ================================================================== the engine's answers
    # Listing and curation need no photo and no model: the engine answers them (and vectors
    # embedded elsewhere go straight to it: ``collection.index.identify(vectors)``).
    def refresh(self) -> bool:
        """Catch up with other processes' writes to the store; True when there were any."""
        return self.index.refresh()

    @property
    def identifier(self) -> VectorIdentifier | None:
        """The current in-memory identifier (None before anything was enrolled)."""
        return self.index.identifier

    def __len__(self) -> int:
        return len(self.index)

    @property
    def thresholds(self) -> Thresholds:
        return self.index.thresholds

    def species(self) -> list[SpeciesSummary]:
        """Every enrolled species with its image count (sorted by name)."""
        return self.index.species()

    def species_info(self, name: str) -> SpeciesSummary:
        return self.index.species_info(name)

    def taxa(self) -> KnownTaxa:
        """The regions, genera, families and species the filters can name."""
        identifier = self.index.identifier
        if identifier is None:
            return KnownTaxa()
        with self.index.lock:
            return known_taxa(identifier.rows)

    def species_photos(self, name: str, offset: int = 0, limit: int | None = None) -> SpeciesPhotos:
        """A page of a species' photos with their provenance (see the engine's)."""
        return self.index.species_photos(name, offset, limit)

    def enrolled_taxonomy(self, species: str | None = None) -> dict[str, dict[str, str]]:
        """Each enrolled species' taxonomy as enrolled (see the engine's)."""
        return self.index.enrolled_taxonomy(species)

    def photo_names(self) -> dict[str, str]:
        """Enrolled photo id -> the file name it was enrolled from ('' when unknown)."""
        return self.index.photo_names()

    def thumbnail(self, specimen_id: str) -> bytes:
        """JPEG thumbnail (longer side <= 160 px) of an enrolled image."""
        return self.index.thumbnail(specimen_id)

    def image(self, specimen_id: str) -> bytes:
        """The stored normalised JPEG copy of an enrolled image."""
        return self.index.image(specimen_id)

    def remove_species(self, name: str) -> int:
        """Delete every image of a species (one commit); returns how many went."""
        return self.index.remove_species(name)

    def remove_specimen(self, specimen_id: str) -> SimilarSpecimen:
        """Delete one enrolled image by id; returns what it was."""
        return self.index.remove_specimen(specimen_id)

    def calibrate(self, target_recall: float | None = None) -> Thresholds:
        """Refit the scorer and recalibrate the thresholds on the enrolled data."""
        return self.index.calibrate(target_recall)

    # ================================================================== a new model
    def reindex(self, model: str | Path | Any | None = None, progress: bool = True) -> int:
        """Re-embed every stored image with ``model`` (one commit) and adopt that model;
        returns the number of images re-embedded."""
        new_embedder, _ = make_embedder(model)
        new_embedder = loaded(new_embedder)
        with self.index.write_lock:
            ids: list[str] = []
            parts: list[np.ndarray] = []
            total = self.store.count()
            with tqdm(total=total, desc="re-embedding", unit="img", disable=not progress) as bar:
                for batch_ids, blobs in self.store.iter_images(EMBED_CHUNK):
                    images = [
                        stored_image(i, blob) for i, blob in zip(batch_ids, blobs, strict=True)
                    ]
                    parts.append(np.asarray(new_embedder.embed_images(images), np.float32))
                    ids += batch_ids
                    bar.update(len(batch_ids))
            vectors = (
                np.concatenate(parts) if parts else np.zeros((0, new_embedder.dim), np.float32)
            )
            return self.reindex_embedded(model, ids, vectors, embedder=new_embedder)

    def reindex_embedded(
        self,
        model: str | Path | Any | None,
        ids: list[str],
        vectors: np.ndarray,
        *,
        embedder: ImageEmbedder | None = None,
    ) -> int:
        """Adopt ``model`` with the vectors it made elsewhere of the stored images ``ids``
        (every stored image: :meth:`SpecimenStore.iter_images`' normalised copies) in one
        commit, and recalibrate; returns how many were replaced."""
        new_embedder, path = make_embedder(model)
        new_embedder = embedder or loaded(new_embedder)
        with self.index.write_lock:
            count = self.index.replace_vectors(ids, vectors, model_record(new_embedder, path))
            self._embedder, self.model_path = new_embedder, path
            return count


def stored_image(specimen_id: str, blob: bytes) -> Image.Image:
    """A stored normalised copy decoded: exactly the pixels enrollment embedded."""
    try:
        return decode_image(blob, label=specimen_id)
    except ImageIntakeError as exc:  # pragma: no cover - store damage
        raise StoreError(f"stored image {specimen_id} cannot be decoded ({exc.reason})") from None


def enrolled_from(files: Sequence[str | Path]) -> str:
    """The ``source`` recorded for photos enrolled from ``files`` when none is given: the
    folder holding them (absolute; their common folder when several), so that the source and
    a photo's file name give its path (photos sent to the service: ``UPLOAD_SOURCE`` of
    :mod:`index.results`)."""
    import os

    if not files:
        return ""
    return os.path.commonpath([str(Path(f).resolve().parent) for f in files])


def folder_batches(
    root: Path,
    species: str | None,
    group_pattern: str | None,
    taxonomy_csv: str | Path | None,
    taxonomy: Mapping[str, Any] | None,
) -> list[tuple[str, list[Path], list[str], dict[str, str]]]:
    """``(species, files, specimen per file, taxonomy)`` for each species under ``root``
    (or every image under ``root`` as ``species``)."""
    from embedder.datasets import compile_group_pattern, group_of, images_in, scan_collection

    if species is not None:
        if not root.exists():
            raise InvalidQueryError(f"{root}: no such file or folder")
        files = images_in([root])
        if not files:
            raise InvalidQueryError(f"{root}: no images found")
        regex = compile_group_pattern(group_pattern)
        return [(species, files, [group_of(f.stem, regex) for f in files], dict(taxonomy or {}))]
    by_species: dict[str, list] = defaultdict(list)
    for record in scan_collection(root, group_pattern=group_pattern, taxonomy_csv=taxonomy_csv):
        by_species[record.species].append(record)
    return [
        (
            name,
            [r.path for r in records],
            [r.group.split("/", 1)[-1] for r in records],
            dict(records[0].taxonomy) | dict(taxonomy or {}),
        )
        for name, records in by_species.items()
    ]
