"""The service layer: what the routes ask of one collection, every blocking call moved off
the event loop. Photos go to a :class:`~index.workflows.collection.Collection` built with the
embedding micro-batcher as its model; what the collection holds is read from its
:class:`~index.catalogue.Catalogue`."""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool

from . import subject
from .batcher import BatchedModel, EmbeddingBatcher
from .schemas import (
    EnrollResponse,
    IdentifyResponse,
    SearchResponse,
    SimilarOut,
    SpeciesList,
    SpeciesOut,
    SpeciesPhotoPage,
    SpeciesRemoved,
    SpecimenRemoved,
)
from .settings import ServiceSettings
from .uploads import Upload
from .wording import words_for

if TYPE_CHECKING:
    from index.catalogue import Catalogue
    from index.taxa import KnownTaxa
    from index.workflows.collection import Collection


log = logging.getLogger("shellid.api")
#: how long the store's subject word is reused before it is read again (another process may
#: set it: shellid enroll --subject)
SUBJECT_SECONDS = 5.0


def image_url(specimen_id: str) -> str:
    """Where the JPEG thumbnail of an enrolled photo is served."""
    return f"/v1/specimens/{quote(str(specimen_id), safe='')}/image"


def photo_url(specimen_id: str) -> str:
    """Where the stored JPEG copy (longer side at most 512 px) of an enrolled photo is served."""
    return f"/v1/specimens/{quote(str(specimen_id), safe='')}/photo"


def photos_url(species: str) -> str:
    """Where every photo of a species is listed, a page at a time."""
    return f"/v1/species/{quote(str(species), safe='')}/photos"


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 2)


def _similar(items) -> list[SimilarOut]:
    return [
        SimilarOut.model_validate({**item.model_dump(), "image_url": image_url(item.specimen_id)})
        for item in items
    ]


def _species_out(summary) -> SpeciesOut:
    return SpeciesOut(
        species=summary.species,
        genus=summary.genus or None,
        family=summary.family or None,
        region=summary.region or None,
        count=summary.count,
        specimens=summary.specimens,
        specimen_ids=[str(i) for i in summary.specimen_ids],
        thumbnail_url=image_url(summary.thumbnail_id) if summary.thumbnail_id else None,
        photos_url=photos_url(summary.species),
    )


def _photo_page(catalogue: Catalogue, name: str, offset: int, limit: int) -> SpeciesPhotoPage:
    """One page of a species' photos with its taxonomy (runs in the thread pool)."""
    page = catalogue.species_photos(name, offset, limit)
    taxonomy = catalogue.enrolled_taxonomy(page.species).get(page.species, {})
    summary = catalogue.species_info(page.species)
    end = page.offset + len(page.photos)
    return SpeciesPhotoPage.model_validate(
        {
            "species": page.species,
            "genus": summary.genus or taxonomy.get("genus") or None,
            "family": summary.family or taxonomy.get("family") or None,
            "taxonomy": taxonomy,
            "total": page.total,
            "specimens": len(page.by_specimen),
            "by_specimen": [
                {"specimen": specimen, "photos": count}
                for specimen, count in page.by_specimen.items()
            ],
            "offset": page.offset,
            "limit": limit,
            "next_offset": end if end < page.total else None,
            "photos": [
                {
                    "id": photo.specimen_id,
                    "filename": photo.filename,
                    "source": photo.source,
                    "specimen": photo.specimen,
                    "region": photo.region or None,
                    "width": photo.width,
                    "height": photo.height,
                    "created": photo.created,
                    "thumbnail_url": image_url(photo.specimen_id),
                    "image_url": photo_url(photo.specimen_id),
                }
                for photo in page.photos
            ],
        }
    )


def embedder_device(embedder: object) -> str:
    """``"cpu"`` or ``"cuda"``: where the embedder's model runs."""
    return getattr(getattr(embedder, "device", None), "type", None) or "cpu"


@dataclass(frozen=True)
class InferencePlan:
    """How forward passes run: on which device, how many at once, threads and batch size."""

    device: str
    workers: int
    torch_threads: int | None
    max_batch_images: int


def plan_inference(
    settings: ServiceSettings, device: str, cores: int | None = None
) -> InferencePlan:
    """Settings, with the unset ones chosen for the device (see docs/api.md, Performance).

    GPU: one worker forming batches of up to 32 photos. CPU: one worker per core (at most 4),
    one photo per pass and the cores shared out as torch threads, because on a CPU a photo
    costs more inside a batch than alone and one multi-threaded pass loses badly when other
    processes keep the cores busy."""
    cores = cores or os.cpu_count() or 1
    gpu = device != "cpu"
    workers = settings.embed_workers or (1 if gpu else min(cores, 4))
    threads = settings.torch_threads or (None if gpu else max(1, cores // workers))
    batch = settings.batch_max_images or (32 if gpu else 1)
    return InferencePlan(device, workers, threads, batch)


class ShellidService:
    """One collection served over HTTP: identify, search, enroll, list and delete.

    ``collection``: as opened (its model loads here); the service serves a collection built
    over the same engine with the micro-batcher as its model (:class:`BatchedModel`), so the
    API's photos take the command line's path (``Collection.identify`` / ``search`` /
    ``enroll``). The collection given is left as it was."""

    def __init__(self, collection: Collection, settings: ServiceSettings, on_batch=None) -> None:
        from embedder.embedding import Embedder  # torch: imported when a service starts
        from index.workflows.collection import Collection

        self.settings = settings
        self.model = model = collection.embedder  # loaded, and checked against the store
        self.plan = plan_inference(settings, embedder_device(model))
        if isinstance(model, Embedder) and model.threads is None:
            model.threads = self.plan.torch_threads  # ONNX Runtime's threads too
        self.batcher = EmbeddingBatcher(
            self._embed_with_current_model,
            max_wait_ms=settings.batch_wait_ms,
            max_images=self.plan.max_batch_images,
            on_batch=on_batch,
            workers=self.plan.workers,
            thread_setup=self.use_planned_threads,
        )
        batched = BatchedModel(model, self.batcher)
        self.collection = Collection(collection.index, batched, collection.model_path)
        self.collection.wrap_model = self._batched  # a model the store switches to
        self.catalogue = self.collection.catalogue
        self._stopping = threading.Event()
        self._watch: threading.Thread | None = None
        self._subject: tuple[str, float] | None = None  # (word, when read from the store)

    def _embed_with_current_model(self, images):
        """The batcher's forward pass: by the model in use when the batch is embedded (a
        query embedded by the model before a switch is embedded again by the collection)."""
        return self.model.embed_images(images)

    def _batched(self, model):
        """The model the store switched to, behind the batcher (the collection's follow)."""
        from embedder.embedding import Embedder

        if isinstance(model, Embedder) and model.threads is None:
            model.threads = self.plan.torch_threads
        self.model = model
        return BatchedModel(model, self.batcher)

    def use_planned_threads(self) -> None:
        """Apply the planned torch thread count to the calling thread (OpenMP keeps it per
        thread, so every thread that runs the model calls this first)."""
        if self.plan.torch_threads:
            import torch

            if torch.get_num_threads() != self.plan.torch_threads:
                torch.set_num_threads(self.plan.torch_threads)

    def _enroll_in_thread(self, *args, **kwargs):
        self.use_planned_threads()
        return self.collection.enroll(*args, **kwargs)

    def start(self) -> ShellidService:
        """Start the embedding workers and the watch for other processes' writes."""
        self.batcher.start()
        if self.settings.refresh_seconds > 0:
            self._watch = threading.Thread(
                target=self._follow_store, name="shellid-store-watch", daemon=True
            )
            self._watch.start()
        return self

    def _follow_store(self) -> None:
        """Catch up with other processes' commits to the store (a cheap version check every
        ``refresh_seconds``, then only the difference; queries keep the previous state
        meanwhile)."""
        while not self._stopping.wait(self.settings.refresh_seconds):
            try:
                if self.collection.refresh():  # a model switch too: model and vectors
                    log.info("store changed by another process: caught up")
            except Exception:  # a store hiccup must not end the watch
                log.exception("could not check the store for other processes' writes")

    def stop(self) -> None:
        self._stopping.set()
        if self._watch is not None:
            self._watch.join(10)
        self.batcher.stop()
        try:  # the next start begins from here
            if self.collection.index.save_snapshot(force=True):
                log.info("saved the snapshot of the collection for the next start")
        except Exception:  # the store stays the truth: a lost snapshot only slows a start
            log.exception("could not save the snapshot of the collection")

    # ------------------------------------------------------------------ reads
    async def identify(
        self,
        uploads: list[Upload],
        decode_seconds: float,
        top_k: int,
        region: str | None = None,
        genus: str | None = None,
        family: str | None = None,
        subset: list[str] | None = None,
    ) -> IdentifyResponse:
        """Identify the specimen the uploaded photos show (views of one specimen) among the
        species the filters and ``subset`` allow; an empty collection is the index's
        EmptyCollectionError (409 empty_collection)."""
        result = await run_in_threadpool(
            self.collection.identify,
            [upload.image for upload in uploads],
            top_k=top_k,
            region=region,
            genus=genus,
            family=family,
            limits=self.settings.intake_limits(),
            subset=subset,
        )
        timings = {k: round(float(v), 2) for k, v in result.timings_ms.items()}
        timings.update(decode=_ms(decode_seconds), total=timings["total"] + _ms(decode_seconds))
        words = words_for(result, await self.subject())
        return IdentifyResponse.model_validate(
            {
                **result.model_dump(exclude={"similar", "timings_ms"}),
                "summary": words.summary,
                "detail": words.detail,
                "candidates_heading": words.candidates_heading,
                "similar_heading": words.similar_heading,
                "similar": _similar(result.similar),
                "timings_ms": timings,
            }
        )

    async def search(self, uploads: list[Upload], decode_seconds: float, k: int) -> SearchResponse:
        """The ``k`` enrolled photos nearest to the uploaded photos."""
        if len(self.catalogue) == 0:
            return SearchResponse(results=[], timings_ms={"decode": _ms(decode_seconds)})
        started = time.perf_counter()
        found = await run_in_threadpool(
            self.collection.search,
            [upload.image for upload in uploads],
            k,
            limits=self.settings.intake_limits(),
        )
        return SearchResponse(
            results=_similar(found),
            timings_ms={
                "decode": _ms(decode_seconds),
                "search": _ms(time.perf_counter() - started),
                "total": _ms(decode_seconds + time.perf_counter() - started),
            },
        )

    async def subject(self) -> str:
        """What the collection holds ($SHELLID_SUBJECT, else the store's word, else "shell"),
        read from the store at most every :data:`SUBJECT_SECONDS`."""
        if self.settings.subject:
            return self.settings.subject
        now = time.monotonic()
        if self._subject is None or now - self._subject[1] > SUBJECT_SECONDS:
            word = await run_in_threadpool(subject.resolve, None, self.collection.store)
            self._subject = (word, now)
        return self._subject[0]

    async def set_subject(self, word: str) -> str:
        """Keep ``word`` as the collection's subject in the store (InvalidQueryError when it
        is not one usable noun)."""
        noun = await run_in_threadpool(subject.record, self.collection.store, word)
        self._subject = (noun, time.monotonic())
        return await self.subject()

    async def taxa(self) -> KnownTaxa:
        return await run_in_threadpool(self.catalogue.taxa)

    async def species(self) -> SpeciesList:
        summaries = await run_in_threadpool(self.catalogue.species)
        items = [_species_out(s) for s in summaries]
        return SpeciesList(
            species=items,
            total_species=len(items),
            total_specimens=sum(item.count for item in items),
        )

    async def species_info(self, name: str) -> SpeciesOut:
        return _species_out(await run_in_threadpool(self.catalogue.species_info, name))

    async def thumbnail(self, specimen_id: str) -> bytes:
        return await run_in_threadpool(self.catalogue.thumbnail, specimen_id)

    async def photo(self, specimen_id: str) -> bytes:
        return await run_in_threadpool(self.catalogue.image, specimen_id)

    async def species_photos(self, name: str, offset: int, limit: int) -> SpeciesPhotoPage:
        return await run_in_threadpool(_photo_page, self.catalogue, name, offset, limit)

    # ----------------------------------------------------------------- writes
    async def enroll(
        self, species: str, uploads: list[Upload], taxonomy: dict[str, str], source: str
    ) -> EnrollResponse:
        """Add photos of ``species`` in one store commit, all or nothing (a photo enrolled
        under another species refuses the whole request); reads go on meanwhile. The photos
        were accepted by the intake already (:func:`index.workflows.imaging.accept_image`, in
        ``read_uploads``) and are not decoded again."""
        report = await run_in_threadpool(
            partial(
                self._enroll_in_thread,
                species,
                [u.accepted for u in uploads],
                taxonomy=taxonomy or None,
                source=source,
                strict=True,
            )
        )
        return EnrollResponse(
            species=report.species,
            added=report.added,
            duplicates=list(report.duplicates),
            errors=dict(report.errors),
            total=report.total,
            specimen_ids=list(report.specimen_ids),
        )

    async def remove_species(self, name: str) -> SpeciesRemoved:
        removed = await run_in_threadpool(self.collection.index.remove_species, name)
        return SpeciesRemoved(species=name, removed=int(removed))

    async def remove_specimen(self, specimen_id: str) -> SpecimenRemoved:
        record = await run_in_threadpool(self.collection.index.remove_specimen, specimen_id)
        return SpecimenRemoved(
            specimen_id=str(specimen_id), species=str(getattr(record, "species", ""))
        )
