"""The photo-in operations of one collection: every photo goes through the one intake
(:mod:`index.workflows.imaging`), is embedded by the model the collection was built with
(:mod:`index.workflows.models`; a service builds its collection with its micro-batcher in
front of that model) and its vectors go to the engine (:class:`index.specimens.SpecimenIndex`:
the LanceDB store and the in-memory identifier).

Thread-safe as the engine is: identification and search go on while an enrollment is
embedded and written; writers are serialised.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from embedder.intake import ImageIntakeError, IntakeLimits

from ...catalogue import Catalogue
from ...classifier import VectorIdentifier
from ...config import IdentifierConfig, IndexSettings
from ...errors import InvalidQueryError, ModelNotLoadedError, ModelSwitchedError
from ...model_switch import vectors_model
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
    held_model_of,
    load_held,
    loaded,
    make_embedder,
    model_record,
    store_model,
)
from .embedding import embed_blobs, embed_photos, embed_stored
from .folders import enrolled_from, folder_batches

#: tries of a query or an enrolment that a model switch overtook (each follows the switch)
SWITCH_TRIES = 3


def prepare_all(
    images: Sequence[ImageInput | AcceptedImage],
    errors: dict[str, str],
    limits: IntakeLimits,
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
            prepared.append(prepare_image(*read_input(item), limits))
        except ImageIntakeError as exc:
            if strict:
                raise
            key = name if name not in errors else f"{name} ({len(errors) + 1})"
            errors[key] = exc.reason
            prepared.append(None)
    return prepared


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
        #: what the collection embeds with, made of a model the store switched to (the
        #: service: its micro-batcher in front of it); None: the model itself
        self.wrap_model: Callable[[ImageEmbedder], ImageEmbedder] | None = None
        self._model_lock = threading.RLock()  # one model change at a time
        self._ready: dict[str, tuple[ImageEmbedder, str]] = {}  # a switch's model, loaded early

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
        ``model`` (default ``settings.model``, else the model the store holds for its vectors,
        else the frozen backbone; ``exported_model``:
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
            model = model if model is not None else settings.model
            held = store_model(store, settings, exported_model) if model is None else None
            embedder, path = held or make_embedder(
                model, exported=exported_model, settings=settings
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
        return self.index.fingerprint or str(self.store.info().get("fingerprint", ""))

    def _serves(self, embedder: ImageEmbedder) -> bool:
        """Whether vectors ``embedder`` made may be searched in the loaded vectors (call under
        ``index.lock``): the same model, or nothing loaded, or the check turned off."""
        return not self._check_model or self.index.fingerprint in ("", embedder.fingerprint)

    def follow(self) -> bool:
        """Adopt the model the engine's loaded vectors were made by, when the store switched
        to another (loaded from the store's held copy, and wrapped by :attr:`wrap_model`);
        True when the model changed. ModelMismatchError when the store does not hold it."""
        with self._model_lock:
            wanted, current = self.index.fingerprint, self._embedder
            if current is None or not wanted or not self._check_model:
                return False
            if current.fingerprint == wanted:
                return False
            ready = self._ready.pop(wanted, None)
            real, path = ready or load_held(self.store, wanted, self.settings, current.fingerprint)
            self._embedder = self.wrap_model(real) if self.wrap_model else real
            self.model_path = path
            self._ready.clear()
            return True

    def refresh(self) -> bool:
        """Catch up with other processes' commits (``index.refresh``); when the store switched
        models, the new model is loaded first (queries are answered by the old model and its
        vectors meanwhile), then the vectors and the model change. True when anything
        changed. What a service's watch calls."""
        current = self._embedder
        moved = self.store.latest_version() != self.index.loaded_version
        lazy = isinstance(current, LazyEmbedder) and not current.loaded
        if current is not None and not lazy and self._check_model and moved:
            wanted = vectors_model(self.store)
            if wanted and wanted != current.fingerprint and wanted not in self._ready:
                self._ready = {
                    wanted: load_held(self.store, wanted, self.settings, current.fingerprint)
                }
        changed = self.index.refresh()
        return self.follow() or changed

    # ================================================================== enrollment
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
        first = EnrollReport(species=name)
        prepared = prepare_all(images, first.errors, limits or self._limits, strict)
        candidates = [(i, p) for i, p in enumerate(prepared) if p is not None]
        for attempt in range(SWITCH_TRIES):
            embedder = self.embedder
            vectors = embed_photos(
                embedder, [p.image for _, p in candidates], progress, desc=f"embedding {name}"
            )
            try:
                return self.enroll_embedded(
                    name,
                    [p for _, p in candidates],
                    vectors,
                    taxonomy=taxonomy,
                    source=source,
                    groups=None if groups is None else [groups[i] for i, _ in candidates],
                    strict=strict,
                    calibrate=calibrate,
                    report=first.model_copy(deep=True),
                    embedder=embedder,
                )
            except ModelSwitchedError:  # the store switched models: embed again with its model
                if attempt == SWITCH_TRIES - 1:
                    raise
                self.index.refresh()
                self.follow()
        raise AssertionError("unreachable")  # pragma: no cover

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
        embedder: ImageEmbedder | None = None,
    ) -> EnrollReport:
        """:meth:`enroll` for photos already through the intake (:func:`prepare_image`) and
        embedded by this collection's model (or ``embedder``) elsewhere (``vectors`` row i is
        ``photos[i]``): the duplicate rules, then ONE store commit. ModelSwitchedError when
        the store switched to another model meanwhile (nothing written)."""
        return self.index.add_photos(
            species,
            photos,
            vectors,
            model_record(embedder or self.embedder, self.model_path),
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
        self,
        images: Sequence[Image.Image],
        limits: IntakeLimits | None = None,
        embedder: ImageEmbedder | None = None,
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
            embedder or self.embedder,
            [as_stored(normalise_size(im.convert("RGB")))[0] for im in images],
        )

    def _answer(
        self,
        images: Sequence[Image.Image],
        limits: IntakeLimits | None,
        ask: Callable[[VectorIdentifier, np.ndarray], Any],
    ) -> tuple[Any, float]:
        """``ask(identifier, vectors)`` with the query photos' vectors, only ever against
        vectors of the model that embedded them: when the store switched models between the
        embedding and the search, the collection follows (:meth:`follow`) and embeds again.
        Returns the answer and the seconds the embedding took."""
        self.index.need_identifier()
        for _ in range(SWITCH_TRIES):
            started = time.perf_counter()
            embedder = self.embedder
            vectors = self._embed_queries(images, limits, embedder)
            seconds = time.perf_counter() - started
            with self.index.reading() as identifier:
                if self._serves(embedder):
                    return ask(identifier, vectors), seconds
            self.follow()
        raise ModelSwitchedError(
            f"store {self.store.uri} kept switching models during this query", store=self.store.uri
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
        started = time.perf_counter()
        result, embedding = self._answer(
            images,
            limits,
            lambda identifier, vectors: identifier.identify(
                vectors, top_k=top_k, region=region, genus=genus, family=family, subset=subset
            ),
        )
        done = time.perf_counter()
        result.timings_ms["embed"] = round(embedding * 1e3, 3)
        result.timings_ms["identify"] = round((done - started - embedding) * 1e3, 3)
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
        found, _ = self._answer(
            images,
            limits,
            lambda identifier, vectors: identifier.search(
                vectors, k=k, region=region, genus=genus, family=family
            ),
        )
        return list(found)

    # ================================================================== a new model
    def reindex(self, model: str | Path | Any | None = None, progress: bool = True) -> int:
        """Re-embed every stored image with ``model`` and switch the store to it in one commit
        (:func:`index.model_switch.switch_vectors`; the store keeps a copy of the model, so
        every process opening it without a model, and every replica, uses it); returns the
        number of images the store holds after."""
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
        commit (rows added meanwhile are embedded here), and recalibrate; returns how many
        rows the store holds after."""
        new_embedder, path = make_embedder(model, settings=self.settings)
        new_embedder = embedder or loaded(new_embedder)
        held = held_model_of(model, new_embedder, path)
        with self.index.write_lock, self._model_lock:
            count = self.index.replace_vectors(
                ids,
                vectors,
                model_record(new_embedder, path),
                held=held,
                embed=lambda ids, blobs: embed_blobs(new_embedder, ids, blobs),
            )
            wrap = self.wrap_model
            self._embedder = wrap(new_embedder) if wrap else new_embedder
            self.model_path = path
            return count
