"""The photo-in operations of one collection: every photo goes through the one intake
(:mod:`index.workflows.imaging`), is embedded by the model the collection was built with
(:mod:`index.workflows.models`; a service builds its collection with its micro-batcher in
front of that model) and its vectors go to the engine (:class:`index.specimens.SpecimenIndex`:
the LanceDB store and the in-memory identifier).

Thread-safe as the engine is: identification and search go on while an enrollment is
embedded and written; writers are serialised.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from embedder.intake import ImageIntakeError, IntakeLimits

from ...catalogue import Catalogue
from ...config import IdentifierConfig, IndexSettings
from ...errors import InvalidQueryError, ModelNotLoadedError
from ...names import canonical_species
from ...results import EnrollReport, Identification, SimilarSpecimen
from ...specimens import SpecimenIndex
from ...store import SpecimenStore
from ..imaging import (
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
from ..models import (
    ImageEmbedder,
    LazyEmbedder,
    check_fingerprint,
    loaded,
    make_embedder,
    model_record,
)
from .embedding import embed_photos, embed_stored
from .folders import enrolled_from, folder_batches


class Collection:
    """Enroll photos of species, and identify and search with photos, in one collection (see
    the module doc). ``index``: the engine; ``embedder``: the model every photo is embedded
    by (None: opened without one; a :class:`LazyEmbedder` loads, and is checked against the
    store, on first use). What the collection holds: :attr:`catalogue`; removals and
    recalibration: :attr:`index`."""

    def __init__(
        self,
        index: SpecimenIndex,
        embedder: ImageEmbedder | None,
        model_path: str = "",
        *,
        check_model: bool = True,
    ) -> None:
        self.index = index
        self.store: SpecimenStore = index.store
        self.catalogue = Catalogue(index)
        self.settings: IndexSettings = index.settings
        self.model_path = model_path
        self._embedder = embedder
        self._check_model = check_model
        self._limits = index.settings.intake_limits()  # what a photo may cost (SHELLID_MAX_*)

    @classmethod
    def open(
        cls,
        uri: str | Path | None = None,
        model: str | Path | Any | None = None,
        create: bool = True,
        *,
        settings: IndexSettings,
        config: IdentifierConfig | None = None,
        need_model: bool = True,
        check_model: bool = True,
        exported_model: bool = False,
    ) -> Collection:
        """Open (or create) the collection at ``uri`` (default ``settings.store``) with
        ``model`` (default ``settings.model``, else the frozen backbone; ``exported_model``:
        run its cached ONNX export without PyTorch when there is one, see
        :class:`~index.workflows.models.LazyEmbedder`). ``settings`` (required) are the ones
        the entry point loaded (``IndexSettings.load()``): nothing here reads the environment.

        Refuses a store whose vectors another model made (:class:`ModelMismatchError`) unless
        ``check_model=False`` (for ``reindex``). ``need_model=False`` skips loading the model
        (listing and removing work; enrolling and identifying images do not).
        """
        store = SpecimenStore(
            uri if uri is not None else settings.store,
            create=create,
            keep_versions=timedelta(minutes=settings.keep_versions_minutes),
            compact_every=settings.compact_every,
        )
        embedder, path = (None, "")
        if need_model:
            embedder, path = make_embedder(
                model if model is not None else settings.model,
                exported=exported_model,
                settings=settings,
            )
        known = embedder if not isinstance(embedder, LazyEmbedder) else None
        if check_model and known is not None:
            check_fingerprint(store, known)  # a lazy model is checked when it loads
        config = config or settings.identifier_config()
        dim = int(known.dim) if known is not None else None
        index = SpecimenIndex(store, settings, config, dim=dim)
        return cls(index, embedder, path, check_model=check_model)

    # ================================================================== the model
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

    @property
    def fingerprint(self) -> str:
        """Fingerprint of the model whose vectors the store holds (or will hold)."""
        if self._embedder is not None:
            return self.embedder.fingerprint
        return str(self.store.info().get("fingerprint", ""))

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
        vectors = embed_photos(
            self.embedder, [p.image for _, p in candidates], progress, desc=f"embedding {name}"
        )
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
            self.index.calibrate()
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
        return embed_photos(
            self.embedder, [as_stored(normalise_size(im.convert("RGB")))[0] for im in images]
        )

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
        with self.index.reading() as identifier:
            result = identifier.identify(
                vectors, top_k=top_k, region=region, genus=genus, family=family, subset=subset
            )
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
        with self.index.reading() as identifier:
            return identifier.search(vectors, k=k, region=region, genus=genus, family=family)

    # ================================================================== a new model
    def reindex(self, model: str | Path | Any | None = None, progress: bool = True) -> int:
        """Re-embed every stored image with ``model`` (one commit) and adopt that model;
        returns the number of images re-embedded."""
        new_embedder = loaded(make_embedder(model, settings=self.settings)[0])
        with self.index.write_lock:
            ids, vectors = embed_stored(self.store, new_embedder, progress)
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
        new_embedder, path = make_embedder(model, settings=self.settings)
        new_embedder = embedder or loaded(new_embedder)
        with self.index.write_lock:
            count = self.index.replace_vectors(ids, vectors, model_record(new_embedder, path))
            self._embedder, self.model_path = new_embedder, path
            return count
