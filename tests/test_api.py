"""HTTP API: every endpoint's answers and errors, over real stores of generated photos and the
real frozen backbone (loaded once per session)."""

from __future__ import annotations

import io
import threading
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from api.app import create_app
from api.service import InferencePlan
from api.settings import ServiceSettings
from index.config import IndexSettings
from index.results import DECISIONS
from tests.conftest import GENERATED_SPECIES, draw_specimen, make_collection

KNOWN = "Conus_alpha"


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def query_photo(species: str = KNOWN, seed: int = 777, size: int = 96) -> bytes:
    """A new photo (unseen seed) of one of the generated species."""
    kind, colour = GENERATED_SPECIES[species]
    return png_bytes(draw_specimen(kind, colour, seed, size))


def photos(*items: bytes, names: list[str] | None = None) -> list[tuple]:
    names = names or [f"photo{i}.png" for i in range(len(items))]
    return [("images", (name, data, "image/png")) for name, data in zip(names, items, strict=True)]


def settings_for(store: Path, **values) -> ServiceSettings:
    return ServiceSettings(store=str(store), **values)


def open_collection(store: Path, model):
    from index.workflows.collection import Collection

    return Collection.open(str(store), model=model, create=True, settings=IndexSettings.load())


@pytest.fixture(scope="module")
def reference(tmp_path_factory, frozen_model):
    """A store with the five generated species (3 specimens x 2 views each)."""
    root = make_collection(tmp_path_factory.mktemp("photos"), specimens=3, views=2)
    store = tmp_path_factory.mktemp("reference") / "store"
    collection = open_collection(store, frozen_model)
    collection.enroll_folder(root, progress=False)
    return store, collection


@pytest.fixture(scope="module")
def client(reference):
    store, collection = reference
    with TestClient(create_app(settings_for(store), collection)) as test_client:
        yield test_client


@pytest.fixture
def fresh(tmp_path, frozen_model):
    """An empty store of its own, for tests that write."""
    store = tmp_path / "store"
    return store, open_collection(store, frozen_model)


def make_client(store, collection, **values) -> TestClient:
    return TestClient(create_app(settings_for(store, **values), collection))


def assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == code
    assert body["detail"] and "\n" not in body["detail"] and "Traceback" not in body["detail"]
    return body


# ------------------------------------------------------------------------------ identify
def test_identify_names_the_enrolled_species_of_a_new_photo(client):
    response = client.post("/v1/identify", files=photos(query_photo()))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["decision"] in DECISIONS
    assert body["candidates"][0]["species"] == KNOWN
    assert body["summary"]
    if body["decision"] in {"unknown_species", "out_of_domain"}:
        assert body["candidates"][0]["probability"] is None  # closest species, not a match
    else:
        assert 0 <= body["candidates"][0]["probability"] <= 1
    assert body["similar"] and body["similar"][0]["image_url"].startswith("/v1/specimens/")
    assert {"decode", "embed", "identify", "total"} <= set(body["timings_ms"])


def test_identify_answer_tells_one_story_with_summary_detail_and_headings(client):
    body = client.post("/v1/identify", files=photos(query_photo(seed=805))).json()
    assert body["summary"] and body["detail"] and body["candidates_heading"]
    assert body["similar_heading"]
    assert "none_probability" in body
    if body["decision"] not in {"unknown_species", "out_of_domain"}:
        shown = sum(c["probability"] for c in body["candidates"])
        assert shown + (body["none_probability"] or 0.0) <= 1.0 + 1e-6


@pytest.mark.parametrize(
    ("overrides", "decision"),
    [({"unknown": -10.0}, "unknown_species"), ({"ood": -10.0}, "out_of_domain")],
)
def test_a_rejection_offers_candidates_by_similarity_not_probability(
    client, reference, overrides, decision
):
    identifier = reference[1].index.identifier
    identifier.set_overrides(**overrides)
    try:
        response = client.post("/v1/identify", files=photos(query_photo(seed=806)))
    finally:
        identifier.set_overrides(**dict.fromkeys(overrides))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["decision"] == decision
    assert body["candidates"] and all(c["probability"] is None for c in body["candidates"])
    assert all(-1.0 <= c["score"] <= 1.0 for c in body["candidates"])
    assert body["none_probability"] is None
    assert body["detail"].endswith(".") and "%" not in body["detail"]
    assert "%" not in body["summary"]
    assert body["candidates_heading"] == "Closest species (not a match)"
    if decision == "unknown_species":
        assert body["detail"].startswith("It looks most like Conus alpha (similarity ")


def test_identify_with_two_views_and_top_k_returns_at_most_k_candidates(client):
    files = photos(query_photo(seed=801), query_photo(seed=802))
    response = client.post("/v1/identify", params={"top_k": 2}, files=files)
    assert response.status_code == 200, response.text
    candidates = response.json()["candidates"]
    assert 1 <= len(candidates) <= 2
    assert candidates[0]["species"] == KNOWN


def test_identify_genus_filter_only_offers_that_genus(client):
    response = client.post(
        "/v1/identify", params={"genus": "Cypraea"}, files=photos(query_photo(seed=803))
    )
    assert response.status_code == 200, response.text
    species = {c["species"] for c in response.json()["candidates"]}
    assert species and all(s.startswith("Cypraea_") for s in species)


def test_identify_rejects_a_file_that_is_not_an_image_naming_it(client):
    files = [("images", ("notes.txt", b"just some text, not a photo", "text/plain"))]
    body = assert_error(client.post("/v1/identify", files=files), 422, "not_an_image")
    assert body["file"] == "notes.txt"
    assert "notes.txt" in body["detail"]


def test_identify_rejects_a_truncated_photo(client):
    buffer = io.BytesIO()
    draw_specimen("ellipse", (200, 60, 40), 1, 128).save(buffer, format="JPEG")
    truncated = buffer.getvalue()[: len(buffer.getvalue()) // 2]
    assert_error(client.post("/v1/identify", files=photos(truncated)), 422, "truncated")


def test_identify_rejects_a_tiny_image(client):
    tiny = png_bytes(Image.new("RGB", (8, 8), (10, 20, 30)))
    assert_error(client.post("/v1/identify", files=photos(tiny)), 422, "too_small")


def test_identify_without_photos_is_a_clear_422(client):
    body = assert_error(client.post("/v1/identify", data={"x": "1"}), 422, "invalid_request")
    assert "images" in body["detail"]


def test_identify_refuses_more_photos_than_the_limit(client):
    files = photos(*[query_photo(seed=900 + i) for i in range(6)])
    body = assert_error(client.post("/v1/identify", files=files), 413, "too_many_files")
    assert "at most 5" in body["detail"]


def test_top_k_accepts_exactly_what_shellid_top_k_accepts(client):
    from api.settings import SettingsError, field_bound

    most = field_bound(ServiceSettings, "top_k", "le")
    assert ServiceSettings.load({"top_k": most}).top_k == most
    with pytest.raises(SettingsError):
        ServiceSettings.load({"top_k": most + 1})
    files = photos(query_photo(seed=811))
    assert client.post("/v1/identify", params={"top_k": most}, files=files).status_code == 200
    response = client.post("/v1/identify", params={"top_k": most + 1}, files=files)
    assert_error(response, 422, "invalid_request")


def test_invalid_query_parameter_names_the_parameter(client):
    response = client.post("/v1/identify", params={"top_k": 0}, files=photos(query_photo()))
    body = assert_error(response, 422, "invalid_request")
    assert "top_k" in body["detail"]


def test_oversized_file_is_refused_with_413(reference):
    store, collection = reference
    with make_client(store, collection, max_file_bytes=4_000) as small:
        big = query_photo(size=200)
        assert len(big) > 4_000
        body = assert_error(small.post("/v1/identify", files=photos(big)), 413, "file_too_large")
        assert "photo0.png" in body["detail"]


def test_oversized_request_body_is_refused_before_it_is_read(reference):
    store, collection = reference
    with make_client(store, collection, max_file_bytes=1_000, max_query_files=1) as small:
        files = photos(query_photo(size=400))
        assert_error(small.post("/v1/identify", files=files), 413, "request_too_large")


def test_image_over_the_pixel_limit_is_refused_with_413(reference):
    store, collection = reference
    with make_client(store, collection, max_pixels=5_000) as small:
        response = small.post("/v1/identify", files=photos(query_photo(size=96)))
        assert_error(response, 413, "too_many_pixels")


def test_identify_on_an_empty_store_says_to_enroll_first(fresh):
    store, collection = fresh
    with make_client(store, collection) as empty:
        body = assert_error(
            empty.post("/v1/identify", files=photos(query_photo())), 409, "empty_collection"
        )
        assert "enroll" in body["detail"]
        search = empty.post("/v1/search", files=photos(query_photo()))
        assert search.status_code == 200 and search.json()["results"] == []
        assert empty.get("/v1/species").json()["total_species"] == 0


# -------------------------------------------------------------------------------- search
def test_search_returns_k_nearest_photos_whose_thumbnails_are_jpegs(client):
    response = client.post("/v1/search", params={"k": 3}, files=photos(query_photo(seed=804)))
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert len(results) == 3
    assert results[0]["species"] == KNOWN
    assert [r["score"] for r in results] == sorted((r["score"] for r in results), reverse=True)
    image = client.get(results[0]["image_url"])
    assert image.status_code == 200 and image.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(image.content)).format == "JPEG"


# ------------------------------------------------------------------------------- species
def test_species_list_has_counts_and_a_thumbnail_each(client):
    body = client.get("/v1/species").json()
    assert body["total_species"] == len(GENERATED_SPECIES)
    assert body["total_specimens"] == 6 * len(GENERATED_SPECIES)
    for item in body["species"]:
        assert item["count"] == 6
        assert client.get(item["thumbnail_url"]).status_code == 200
    alpha = client.get(f"/v1/species/{KNOWN}").json()
    assert alpha["species"] == KNOWN and alpha["genus"] == "Conus" and alpha["count"] == 6


def test_unknown_species_and_specimen_answer_404(client):
    assert_error(client.get("/v1/species/Nonexistent_species"), 404, "species_not_found")
    assert_error(client.get("/v1/specimens/no-such-id/image"), 404, "specimen_not_found")
    assert_error(client.get("/v1/no/such/route"), 404, "not_found")


def test_enroll_then_identify_then_delete_a_species(fresh):
    store, collection = fresh
    with make_client(store, collection) as api:
        first = [query_photo("Murex_epsilon", seed=s) for s in (11, 12)]
        other = query_photo("Cypraea_delta", seed=13)
        response = api.post(
            "/v1/species/Murex_epsilon/images",
            files=photos(*first),
            data={"family": "Muricidae", "region": "Mediterranean"},
        )
        assert response.status_code == 201, response.text
        report = response.json()
        assert len(report.pop("specimen_ids")) == 2
        assert report == {
            "species": "Murex_epsilon",
            "added": 2,
            "duplicates": [],
            "errors": {},
            "total": 2,
        }
        assert api.post("/v1/species/Cypraea_delta/images", files=photos(other)).status_code == 201

        again = api.post("/v1/species/Murex_epsilon/images", files=photos(*first)).json()
        assert again["added"] == 0 and len(again["duplicates"]) == 2 and again["total"] == 2

        info = api.get("/v1/species/Murex_epsilon").json()
        assert info["family"] == "Muricidae" and info["region"] == "Mediterranean"

        answer = api.post("/v1/identify", files=photos(query_photo("Murex_epsilon", seed=14)))
        assert answer.status_code == 200
        assert answer.json()["candidates"][0]["species"] == "Murex_epsilon"

        removed = api.delete("/v1/species/Murex_epsilon")
        assert removed.json() == {"species": "Murex_epsilon", "removed": 2}
        assert_error(api.get("/v1/species/Murex_epsilon"), 404, "species_not_found")
        assert_error(api.delete("/v1/species/Murex_epsilon"), 404, "species_not_found")


def test_same_photo_under_another_species_is_refused_with_409(fresh):
    store, collection = fresh
    with make_client(store, collection) as api:
        photo = query_photo(seed=21)
        assert api.post(f"/v1/species/{KNOWN}/images", files=photos(photo)).status_code == 201
        files = photos(query_photo(seed=22), photo, names=["new.png", "again.png"])
        body = assert_error(
            api.post("/v1/species/Conus_beta/images", files=files), 409, "image_under_other_species"
        )
        assert "again.png" in body["detail"] and KNOWN in body["detail"]
        assert api.get("/v1/species").json()["total_species"] == 1
        assert len(collection.catalogue) == 1


def test_enroll_with_one_bad_photo_adds_nothing(fresh):
    store, collection = fresh
    with make_client(store, collection) as api:
        files = photos(query_photo(seed=31), b"GIF89a broken", names=["good.png", "bad.gif"])
        body = assert_error(
            api.post(f"/v1/species/{KNOWN}/images", files=files), 422, "not_an_image"
        )
        assert body["file"] == "bad.gif"
        assert len(collection.catalogue) == 0


def test_reads_are_answered_while_an_enrollment_is_being_written(fresh, monkeypatch):
    store, collection = fresh
    collection.enroll(KNOWN, [("first.png", query_photo(seed=70))])
    writing, finish = threading.Event(), threading.Event()
    real_write = collection.index.add_photos  # the engine the service's collection writes to

    def slow_write(*args, **kwargs):
        writing.set()
        assert finish.wait(60)
        return real_write(*args, **kwargs)

    monkeypatch.setattr(collection.index, "add_photos", slow_write)
    with make_client(store, collection) as api:
        result: dict = {}
        files = photos(query_photo("Conus_beta", seed=71))
        worker = threading.Thread(
            target=lambda: result.update(r=api.post("/v1/species/Conus_beta/images", files=files))
        )
        worker.start()
        try:
            assert writing.wait(60)
            assert api.get("/v1/species").status_code == 200
            assert api.post("/v1/identify", files=photos(query_photo())).status_code == 200
            assert worker.is_alive()  # the enrollment is still waiting to be written
        finally:
            finish.set()
            worker.join(60)
        assert result["r"].status_code == 201
        assert api.get("/v1/species").json()["total_specimens"] == 2


def test_delete_one_specimen_then_its_image_is_gone(fresh):
    store, collection = fresh
    with make_client(store, collection) as api:
        files = photos(query_photo(seed=41), query_photo(seed=42))
        assert api.post(f"/v1/species/{KNOWN}/images", files=files).status_code == 201
        specimen = api.get(f"/v1/species/{KNOWN}").json()["specimen_ids"][0]
        removed = api.delete(f"/v1/specimens/{specimen}")
        assert removed.status_code == 200, removed.text
        assert removed.json() == {"specimen_id": specimen, "species": KNOWN}
        assert_error(api.get(f"/v1/specimens/{specimen}/image"), 404, "specimen_not_found")
        assert_error(api.delete(f"/v1/specimens/{specimen}"), 404, "specimen_not_found")
        assert api.get(f"/v1/species/{KNOWN}").json()["count"] == 1


# ---------------------------------------------------------------------------------- keys
def test_writes_need_the_api_key_when_one_is_set(fresh):
    store, collection = fresh
    with make_client(store, collection, api_key="s3cret") as api:
        url = f"/v1/species/{KNOWN}/images"
        missing = api.post(url, files=photos(query_photo(seed=51)))
        assert_error(missing, 401, "unauthorized")
        assert missing.headers["www-authenticate"] == "Bearer"
        wrong = api.post(
            url, files=photos(query_photo(seed=51)), headers={"Authorization": "Bearer nope"}
        )
        assert assert_error(wrong, 401, "unauthorized")["detail"] == "wrong API key"
        assert_error(api.delete(f"/v1/species/{KNOWN}"), 401, "unauthorized")
        right = api.post(
            url, files=photos(query_photo(seed=51)), headers={"Authorization": "Bearer s3cret"}
        )
        assert right.status_code == 201
        assert api.get("/v1/species").status_code == 200  # reads stay open
        assert api.get("/v1/info").json()["writes_need_key"] is True


def test_reads_need_the_read_key_when_one_is_set(reference):
    store, collection = reference
    with make_client(store, collection, read_key="look", api_key="change") as api:
        assert_error(api.get("/v1/species"), 401, "unauthorized")
        assert_error(api.post("/v1/identify", files=photos(query_photo())), 401, "unauthorized")
        for key in ("look", "change"):
            answer = api.get("/v1/species", headers={"Authorization": f"Bearer {key}"})
            assert answer.status_code == 200
        assert api.get("/healthz").status_code == 200
        assert api.get("/v1/info").json()["reads_need_key"] is True


# ------------------------------------------------------------------------------- service
def test_health_readiness_and_info(client, reference):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz").json()
    assert ready["status"] == "ready" and ready["specimens"] == len(reference[1].catalogue)
    info = client.get("/v1/info").json()
    assert info["fingerprint"] == reference[1].fingerprint
    assert info["limits"]["max_query_files"] == 5


def test_without_a_collection_the_app_loads_one_in_the_background(
    tmp_path, frozen_model, monkeypatch
):
    import api.app

    gate = threading.Event()

    def slow_open(settings):
        gate.wait(60)
        return open_collection(Path(settings.store), frozen_model)

    monkeypatch.setattr(api.app, "open_collection", slow_open)
    with TestClient(create_app(settings_for(tmp_path / "store"))) as api_client:
        loading = api_client.get("/readyz")
        assert loading.status_code == 503 and loading.json()["status"] == "loading"
        assert_error(api_client.get("/v1/species"), 503, "not_ready")
        assert api_client.get("/healthz").status_code == 200
        gate.set()
        assert api_client.app.state.runtime.loaded.wait(60)
        assert api_client.get("/readyz").json() == {
            "status": "ready",
            "detail": None,
            "specimens": 0,
        }


def test_readyz_is_503_with_the_reason_when_the_model_cannot_load(tmp_path):
    settings = settings_for(tmp_path / "store", model=str(tmp_path / "missing.pt"))
    with TestClient(create_app(settings)) as api:
        runtime = api.app.state.runtime
        assert runtime.loaded.wait(60)
        ready = api.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["status"] == "failed" and "missing.pt" in ready.json()["detail"]
        assert_error(api.post("/v1/identify", files=photos(query_photo())), 503, "not_ready")
        assert api.get("/healthz").status_code == 200


def test_inference_plan_fits_the_device_and_settings_override_it():
    from api.service import plan_inference

    defaults = ServiceSettings()
    assert plan_inference(defaults, "cpu", cores=2) == InferencePlan("cpu", 2, 1, 1)
    assert plan_inference(defaults, "cpu", cores=16) == InferencePlan("cpu", 4, 4, 1)
    assert plan_inference(defaults, "cuda", cores=16) == InferencePlan("cuda", 1, None, 32)
    chosen = ServiceSettings(embed_workers=1, torch_threads=2, batch_max_images=8)
    assert plan_inference(chosen, "cpu", cores=2) == InferencePlan("cpu", 1, 2, 8)


def test_the_service_runs_the_model_with_its_planned_threads_and_reports_them(reference):
    import numpy as np
    import torch

    store, collection = reference
    settings = settings_for(store, embed_workers=1, torch_threads=1)
    app = create_app(settings, collection)
    with TestClient(app) as api:
        inference = api.get("/v1/info").json()["inference"]
        assert inference == {
            "device": "cpu",
            "workers": 1,
            "torch_threads": 1,
            "max_batch_images": 1,
        }
        batcher = app.state.runtime.service.batcher
        batcher._embed = lambda images: np.full((len(images), 1), torch.get_num_threads())
        assert batcher.submit([Image.new("RGB", (40, 40))]).result(timeout=10)[0, 0] == 1


def test_metrics_count_requests_by_route_and_report_store_size(client, reference):
    client.post("/v1/identify", files=photos(query_photo(seed=61)))
    client.get("/v1/species/Nonexistent_species")
    text = client.get("/metrics").text
    assert 'shellid_http_requests_total{method="POST",route="/v1/identify",status="200"}' in text
    assert 'route="/v1/species/{name}",status="404"' in text
    assert 'shellid_http_request_duration_seconds_bucket{le="0.1",method="POST"' in text
    assert f"shellid_store_specimens {float(len(reference[1].catalogue))}" in text
    assert "shellid_embedding_batch_images_count" in text


def test_an_unexpected_fault_is_a_json_500_without_traceback(reference, monkeypatch):
    store, collection = reference
    app = create_app(settings_for(store), collection)
    with TestClient(app, raise_server_exceptions=False) as api:
        service = app.state.runtime.service
        monkeypatch.setattr(service.catalogue, "species", lambda: 1 / 0)
        body = assert_error(api.get("/v1/species"), 500, "internal_error")
        assert "ZeroDivision" not in body["detail"]


def test_openapi_schema_is_valid_and_documents_every_route(client):
    from openapi_spec_validator import validate

    schema = client.get("/openapi.json").json()
    validate(schema)
    assert {
        "/v1/identify",
        "/v1/search",
        "/v1/species",
        "/v1/species/{name}",
        "/v1/species/{name}/images",
        "/v1/specimens/{specimen_id}",
        "/v1/specimens/{specimen_id}/image",
        "/healthz",
        "/readyz",
        "/metrics",
    } <= set(schema["paths"])
    identify = schema["paths"]["/v1/identify"]["post"]
    assert {"200", "413", "422", "409"} <= set(identify["responses"])
    assert "IdentifyResponse" in schema["components"]["schemas"]
    docs = client.get("/docs")
    assert docs.status_code == 200 and "swagger-ui-bundle.js" in docs.text
    assert "https://" not in docs.text  # served offline, no CDN
    assert client.get("/redoc").status_code == 200


def test_web_page_and_its_assets_are_served(client):
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert 'capture="environment"' in page.text and "/static/app.js" in page.text
    assert client.get("/static/app.js").status_code == 200
    assert client.get("/static/app.css").status_code == 200
