"""The service end to end on the real shell photos: enroll specimens over HTTP, identify
specimens it has never seen (both views as one query), and turn away a rock."""

from __future__ import annotations

import re
from collections import defaultdict

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.settings import ServiceSettings
from index.config import IndexSettings

pytestmark = pytest.mark.shared

NAME = re.compile(r"^(?P<species>.+)_(?P<specimen>\d+)_(?P<view>[A-Za-z]+)$")
HELD_OUT = {"9", "10"}


def shell_photos(shared) -> dict[str, dict[str, list]]:
    """species -> specimen number -> its photos (views), from shells-zhang8."""
    photos: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for path in sorted(shared("shells-zhang8").glob("*/*.jpg")):
        match = NAME.match(path.stem)
        assert match, path
        photos[match["species"]][match["specimen"]].append(path)
    return photos


def test_unseen_real_specimens_are_identified_over_http(shared, tmp_path, frozen_model):
    from index.workflows.collection import Collection

    photos = shell_photos(shared)
    assert len(photos) >= 5

    store = tmp_path / "store"
    collection = Collection.open(
        str(store), model=frozen_model, create=True, settings=IndexSettings.load()
    )
    with TestClient(create_app(ServiceSettings(store=str(store)), collection)) as api:
        for species, specimens in photos.items():
            files = [
                ("images", (p.name, p.read_bytes(), "image/jpeg"))
                for specimen, paths in specimens.items()
                if specimen not in HELD_OUT
                for p in paths
            ]
            response = api.post(f"/v1/species/{species}/images", files=files)
            assert response.status_code == 201, response.text

        right, asked = 0, 0
        for species, specimens in photos.items():
            for specimen in HELD_OUT & set(specimens):
                files = [
                    ("images", (p.name, p.read_bytes(), "image/jpeg")) for p in specimens[specimen]
                ]
                answer = api.post("/v1/identify", files=files)
                assert answer.status_code == 200, answer.text
                asked += 1
                right += answer.json()["candidates"][0]["species"] == species
        assert asked >= 10
        assert right / asked >= 0.8, f"top-1 {right}/{asked} on unseen specimens"

        rock = next(shared("negatives-rocks").rglob("*.jpg"))
        answer = api.post(
            "/v1/identify", files=[("images", (rock.name, rock.read_bytes(), "image/jpeg"))]
        )
        assert answer.status_code == 200
        assert answer.json()["decision"] in {"out_of_domain", "unknown_species"}


def _upload(paths) -> list:
    return [("images", (p.name, p.read_bytes(), "image/jpeg")) for p in paths]


def test_a_species_enrolled_with_three_photos_is_named_at_once(shared, tmp_path, frozen_model):
    """The web page's enrolment (photos, no specimen grouping): seven species with eight
    specimens each, then a new species with three photos (both views represented); its next
    specimens are named with a ``species`` decision straight away, no restart, no retraining."""
    from index.workflows.collection import Collection

    photos = shell_photos(shared)
    *known, newcomer = sorted(photos)

    store = tmp_path / "store"
    collection = Collection.open(
        str(store), model=frozen_model, create=True, settings=IndexSettings.load()
    )
    with TestClient(create_app(ServiceSettings(store=str(store)), collection)) as api:
        for species in known:
            paths = [p for s, ps in photos[species].items() if s not in HELD_OUT for p in ps]
            assert api.post(f"/v1/species/{species}/images", files=_upload(paths)).is_success
        three = [photos[newcomer]["1"][0], photos[newcomer]["2"][-1], photos[newcomer]["3"][0]]
        enrolled = api.post(f"/v1/species/{newcomer}/images", files=_upload(three))
        assert enrolled.status_code == 201, enrolled.text

        for specimen in sorted(HELD_OUT):  # both views of a new specimen, as the page sends
            views = photos[newcomer][specimen]
            answer = api.post("/v1/identify", files=_upload(views)).json()
            assert answer["decision"] == "species", (specimen, answer["summary"])
            assert answer["species"] == newcomer
            assert answer["candidates"][0]["probability"] > answer["none_probability"]
