"""The API behind the species pages: every photo of a species with its provenance, a page at a
time (``GET /v1/species/{name}/photos``), counts that agree with ``GET /v1/species/{name}``,
the stored copy of a photo, deletion behind the key, and ``/favicon.ico``. Fast: the stand-in
embedder of tests/fake_embedder.py, not the real model."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.settings import ServiceSettings
from index.config import IndexSettings
from tests.conftest import make_collection
from tests.fake_embedder import FakeEmbedder

KEY = "species-page-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
SPECIES = "Conus_alpha"


@pytest.fixture
def api(tmp_path):
    """A store of five generated species x 6 specimens x 2 views (12 photos each), filled
    with specimen groups from the file names; writes need ``KEY``."""
    from index.workflows.collection import Collection

    root = make_collection(tmp_path / "photos", specimens=6, views=2, size=64)
    store = tmp_path / "store"
    collection = Collection.open(
        str(store), model=FakeEmbedder(), create=True, settings=IndexSettings.load()
    )
    collection.enroll_folder(root, progress=False, group_pattern=r"^(.+)_[AB]$")
    with TestClient(create_app(ServiceSettings(store=str(store), api_key=KEY), collection)) as c:
        yield c


def _error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == code, body
    return body


def test_every_photo_is_listed_once_across_pages_with_its_provenance(api):
    first = api.get(f"/v1/species/{SPECIES}/photos", params={"limit": 5})
    assert first.status_code == 200, first.text
    page = first.json()
    assert (page["total"], page["offset"], page["limit"], page["next_offset"]) == (12, 0, 5, 5)
    assert len(page["photos"]) == 5
    seen = [p["id"] for p in page["photos"]]
    offset = page["next_offset"]
    while offset is not None:
        page = api.get(f"/v1/species/{SPECIES}/photos?offset={offset}&limit=5").json()
        assert page["offset"] == offset and page["total"] == 12
        seen += [p["id"] for p in page["photos"]]
        offset = page["next_offset"]
    assert len(page["photos"]) == 2  # 5 + 5 + 2
    assert len(seen) == len(set(seen)) == 12
    everything = api.get(f"/v1/species/{SPECIES}/photos?limit=200").json()
    assert [p["id"] for p in everything["photos"]] == seen  # one stable order
    assert everything["next_offset"] is None

    photo = everything["photos"][0]
    assert photo["filename"] == "Conus_alpha_1_A.png"
    assert photo["specimen"] == "Conus_alpha_1"
    # enrolled from a folder without --source: the source is that folder, so with the file
    # name it gives the photo's path
    assert Path(photo["source"], photo["filename"]).is_file()
    assert (photo["width"], photo["height"]) == (64, 64)
    created = datetime.fromisoformat(photo["created"])
    assert abs(datetime.now(UTC) - created) < timedelta(minutes=10)
    # specimens in numeric order (2 before 10 would matter; here 1..6), views within them
    assert [p["filename"] for p in everything["photos"][:4]] == [
        "Conus_alpha_1_A.png",
        "Conus_alpha_1_B.png",
        "Conus_alpha_2_A.png",
        "Conus_alpha_2_B.png",
    ]
    thumbnail = api.get(photo["thumbnail_url"])
    assert thumbnail.status_code == 200 and thumbnail.headers["content-type"] == "image/jpeg"
    stored = api.get(photo["image_url"])
    assert stored.status_code == 200 and stored.headers["content-type"] == "image/jpeg"
    assert stored.content[:2] == b"\xff\xd8" and stored.content != thumbnail.content


def test_a_page_past_the_end_is_empty_and_bad_paging_is_refused(api):
    past = api.get(f"/v1/species/{SPECIES}/photos?offset=50").json()
    assert past["photos"] == [] and past["total"] == 12 and past["next_offset"] is None
    for query in ("offset=-1", "limit=0", "limit=201", "limit=many"):
        _error(api.get(f"/v1/species/{SPECIES}/photos?{query}"), 422, "invalid_request")


def test_counts_agree_between_the_species_and_its_photo_list(api):
    info = api.get(f"/v1/species/{SPECIES}").json()
    page = api.get(info["photos_url"]).json()
    assert info["count"] == page["total"] == 12
    assert info["specimens"] == page["specimens"] == len(page["by_specimen"]) == 6
    assert sum(item["photos"] for item in page["by_specimen"]) == page["total"]
    assert page["by_specimen"][0] == {"specimen": "Conus_alpha_1", "photos": 2}
    assert len(info["specimen_ids"]) == 5  # a preview, said so in the schema
    assert set(info["specimen_ids"]) <= {p["id"] for p in page["photos"]}
    listed = api.get("/v1/species").json()
    assert listed["total_specimens"] == sum(s["count"] for s in listed["species"]) == 60
    assert all(
        s["photos_url"].endswith(f"/v1/species/{s['species']}/photos") for s in listed["species"]
    )


def test_the_taxonomy_enrolled_with_the_species_comes_with_its_photos(api):
    from tests.test_api import photos, query_photo

    form = {"family": "Conidae", "order": "Neogastropoda", "region": "Indo-Pacific"}
    added = api.post(
        "/v1/species/Conus_zeta/images", files=photos(query_photo()), data=form, headers=AUTH
    )
    assert added.status_code == 201, added.text
    page = api.get("/v1/species/Conus zeta/photos").json()  # the name as typed, spaces and all
    assert page["species"] == "Conus_zeta"
    assert page["genus"] == "Conus" and page["family"] == "Conidae"
    assert page["taxonomy"]["order"] == "Neogastropoda"
    assert page["taxonomy"]["region"] == "Indo-Pacific"
    assert page["photos"][0]["region"] == "Indo-Pacific"
    assert page["photos"][0]["filename"] == "photo0.png"


def test_unknown_species_and_photos_answer_404(api):
    _error(api.get("/v1/species/Nonexistent_species/photos"), 404, "species_not_found")
    _error(api.get("/v1/specimens/0123456789abcdef/photo"), 404, "specimen_not_found")
    _error(api.get("/v1/specimens/not-an-id/photo"), 404, "specimen_not_found")
    _error(api.get("/v1/species/../photos"), 404, "not_found")


def test_deleting_a_photo_or_the_species_needs_the_key_and_updates_the_list(api):
    photo = api.get(f"/v1/species/{SPECIES}/photos").json()["photos"][0]
    _error(api.delete(f"/v1/specimens/{photo['id']}"), 401, "unauthorized")
    wrong = api.delete(f"/v1/specimens/{photo['id']}", headers={"Authorization": "Bearer no"})
    assert _error(wrong, 401, "unauthorized")["detail"] == "wrong API key"
    assert api.get(f"/v1/species/{SPECIES}/photos").json()["total"] == 12  # nothing went

    gone = api.delete(f"/v1/specimens/{photo['id']}", headers=AUTH)
    assert gone.status_code == 200, gone.text
    page = api.get(f"/v1/species/{SPECIES}/photos").json()
    assert page["total"] == 11 and photo["id"] not in {p["id"] for p in page["photos"]}
    assert page["by_specimen"][0] == {"specimen": "Conus_alpha_1", "photos": 1}
    assert api.get(f"/v1/species/{SPECIES}").json()["count"] == 11
    _error(api.get(photo["image_url"]), 404, "specimen_not_found")

    _error(api.delete(f"/v1/species/{SPECIES}"), 401, "unauthorized")
    removed = api.delete(f"/v1/species/{SPECIES}", headers=AUTH)
    assert removed.json() == {"species": SPECIES, "removed": 11}
    _error(api.get(f"/v1/species/{SPECIES}/photos"), 404, "species_not_found")
    assert api.get("/v1/species").json()["total_species"] == 4


def test_reads_need_the_read_key_when_one_is_set(tmp_path):
    from index.workflows.collection import Collection

    root = make_collection(
        tmp_path / "photos", {"Conus_alpha": ("ellipse", (200, 60, 40))}, 1, 2, 64
    )
    store = tmp_path / "store"
    collection = Collection.open(
        str(store), model=FakeEmbedder(), create=True, settings=IndexSettings.load()
    )
    collection.enroll_folder(root, progress=False)
    settings = ServiceSettings(store=str(store), read_key="reader")
    with TestClient(create_app(settings, collection)) as api:
        _error(api.get(f"/v1/species/{SPECIES}/photos"), 401, "unauthorized")
        page = api.get(f"/v1/species/{SPECIES}/photos", headers={"Authorization": "Bearer reader"})
        assert page.status_code == 200 and page.json()["total"] == 2
        _error(api.get(page.json()["photos"][0]["image_url"]), 401, "unauthorized")


def test_the_favicon_is_served(api):
    icon = api.get("/favicon.ico")
    assert icon.status_code == 200
    assert icon.headers["content-type"] == "image/x-icon"
    assert icon.content[:4] == b"\x00\x00\x01\x00"  # an ICO header
    svg = api.get("/static/favicon.svg")
    assert svg.status_code == 200 and svg.text.startswith("<svg")
    page = api.get("/").text
    assert 'rel="icon"' in page


def test_the_photo_list_answers_options_and_refuses_other_methods(api):
    options = api.options(f"/v1/species/{SPECIES}/photos")
    assert options.status_code == 204
    assert {m.strip() for m in options.headers["allow"].split(",")} >= {"GET", "OPTIONS"}
    wrong = api.delete(f"/v1/species/{SPECIES}/photos", headers=AUTH)
    assert wrong.status_code == 405 and "GET" in wrong.headers["allow"]
    assert api.get(f"/v1/species/{SPECIES}/photos").json()["total"] == 12


def test_photos_sent_without_a_source_are_recorded_as_uploads(api):
    import io

    from tests.conftest import draw_specimen

    buffer = io.BytesIO()
    draw_specimen("ring", (20, 90, 200), 77, 80).save(buffer, format="PNG")
    sent = api.post(
        "/v1/species/Novel_species/images",
        files=[("images", ("mine.png", buffer.getvalue(), "image/png"))],
        headers=AUTH,
    )
    assert sent.status_code == 201, sent.text
    photo = api.get("/v1/species/Novel_species/photos").json()["photos"][0]
    assert (photo["filename"], photo["source"]) == ("mine.png", "upload")
