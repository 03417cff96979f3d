"""How the service is put together: its collection is built with the embedding micro-batcher
as its model (nothing is swapped into the collection it was given), and what the collection
holds is read from the catalogue. The stand-in embedder keeps it fast."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np
from fastapi.testclient import TestClient
from PIL import Image

from api.app import create_app
from api.batcher import BatchedModel
from api.settings import ServiceSettings
from index.config import IndexSettings
from index.results import SpeciesSummary
from index.workflows.collection import Collection
from tests.conftest import GENERATED_SPECIES, make_collection
from tests.fake_embedder import FakeEmbedder

FIRST, NEW = list(GENERATED_SPECIES)[:2]


class ThreadRecordingEmbedder(FakeEmbedder):
    """The fake model, noting which thread ran each of its forward passes."""

    def __init__(self) -> None:
        super().__init__()
        self.threads: list[str] = []

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        self.threads.append(threading.current_thread().name)
        return super().embed_images(images)


def png(path) -> tuple[str, bytes, str]:
    return (path.name, path.read_bytes(), "image/png")


def test_the_service_collection_embeds_through_the_batcher_it_was_built_with(tmp_path):
    photos = make_collection(tmp_path / "photos", specimens=2, views=1, size=64)
    store = str(tmp_path / "store")
    model = ThreadRecordingEmbedder()
    opened = Collection.open(store, model=model, create=True, settings=IndexSettings.load())
    opened.enroll(FIRST, sorted((photos / FIRST).iterdir()))
    app = create_app(ServiceSettings(store=store, refresh_seconds=0), opened)
    with TestClient(app) as client:
        service = app.state.runtime.service
        served = service.collection
        assert served is not opened and served.index is opened.index  # one engine
        assert isinstance(served.embedder, BatchedModel)
        assert served.embedder.batcher is service.batcher and served.embedder.model is model
        assert opened.embedder is model  # the collection given was not changed
        model.threads.clear()
        query = sorted((photos / NEW).iterdir())
        answer = client.post("/v1/identify", files=[("images", png(query[0]))])
        assert answer.status_code == 200, answer.text
        enrolled = client.post(f"/v1/species/{NEW}/images", files=[("images", png(query[1]))])
        assert enrolled.status_code == 201, enrolled.text
        assert len(model.threads) == 2  # one pass each, both on the batcher's workers
        assert all(name.startswith("shellid-embedding-") for name in model.threads)
    model.threads.clear()
    opened.identify([Image.open(query[0])])  # after the service: the plain model, no batcher
    assert model.threads == [threading.current_thread().name]


def test_the_species_listing_is_served_from_the_catalogue(tmp_path, monkeypatch):
    photos = make_collection(tmp_path / "photos", specimens=2, views=1, size=64)
    store = str(tmp_path / "store")
    opened = Collection.open(
        store, model=FakeEmbedder(), create=True, settings=IndexSettings.load()
    )
    opened.enroll(FIRST, sorted((photos / FIRST).iterdir()))
    app = create_app(ServiceSettings(store=store, refresh_seconds=0), opened)
    with TestClient(app) as client:
        catalogue = app.state.runtime.service.catalogue
        assert catalogue.species() == opened.catalogue.species()  # the one engine's state
        listed = client.get("/v1/species").json()
        assert [s["species"] for s in listed["species"]] == [FIRST]
        assert listed["total_specimens"] == len(catalogue) == 2
        shown = SpeciesSummary(species=NEW, count=7, specimens=3, specimen_ids=["x"])
        monkeypatch.setattr(catalogue, "species", lambda: [shown])
        listed = client.get("/v1/species").json()
        assert [(s["species"], s["count"]) for s in listed["species"]] == [(NEW, 7)]
        assert listed["species"][0]["thumbnail_url"] is None
