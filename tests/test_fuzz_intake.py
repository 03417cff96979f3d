"""Fuzzing the intake over HTTP (issue 12): Hypothesis generates images (every Pillow mode,
six formats, thin, huge-but-cheap and tiny sizes, truncated and bit-flipped files) and
multipart bodies (odd field and file names, content types, raw garbage) and posts them to
identify, search and enrol.

Fails on any 5xx, on an enrolment that half-happens, and on any identify/search request that
costs more CPU than twice a normal one (one 12-megapixel phone JPEG). Bounded: a fixed number
of examples, each small; about a minute on the 2-core development CPU.
"""

from __future__ import annotations

import time
from urllib.parse import quote

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from api.app import create_app
from api.settings import ServiceSettings
from embedder.intake import to_rgb
from index.config import IndexSettings
from index.workflows.collection import Collection
from tests.conftest import make_collection
from tests.fake_embedder import FakeEmbedder
from tests.test_hostile_input import BIG, GOOD, LONG, THIN, encode, la_tiff, phone_photo

MODES = ["RGB", "L", "LA", "RGBA", "P", "1", "I;16", "I", "F", "CMYK", "YCbCr", "RGBa", "La"]
FORMATS = ["PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP"]
EXAMPLES = 40


@pytest.fixture(scope="module")
def fuzz_client(tmp_path_factory):
    root = make_collection(tmp_path_factory.mktemp("photos"), specimens=2, views=1)
    store = tmp_path_factory.mktemp("fuzz") / "store"
    collection = Collection.open(str(store), model=FakeEmbedder(), settings=IndexSettings.load())
    collection.enroll_folder(root, progress=False)
    app = create_app(ServiceSettings(store=str(store)), collection)
    with TestClient(app, raise_server_exceptions=False) as client:
        normal = [
            ("images", ("phone.jpg", encode(phone_photo(), "JPEG", quality=90), "image/jpeg"))
        ]
        client.post("/v1/identify", files=normal)  # warm-up
        costs = []
        for _ in range(3):
            started = time.process_time()
            assert client.post("/v1/identify", files=normal).status_code == 200
            costs.append(time.process_time() - started)
        client.normal_cost = min(costs)  # type: ignore[attr-defined]
        client.collection = collection  # type: ignore[attr-defined]
        yield client


@st.composite
def images(draw) -> bytes:
    """An encoded image of a random mode, format and shape, possibly damaged."""
    shape = draw(st.sampled_from(["small", "thin", "large", "tiny"]))
    if shape == "small":
        size = (draw(st.integers(16, 300)), draw(st.integers(16, 300)))
    elif shape == "thin":
        long_side, short_side = draw(st.integers(400, 60_000)), draw(st.integers(1, 48))
        size = (long_side, short_side) if draw(st.booleans()) else (short_side, long_side)
    elif shape == "large":
        size = (draw(st.integers(1000, 5000)), draw(st.integers(1000, 5000)))
    else:
        size = (draw(st.integers(1, 40)), draw(st.integers(1, 40)))
    mode = draw(st.sampled_from(MODES))
    fmt = draw(st.sampled_from(FORMATS))
    if shape == "small" and draw(st.booleans()):
        rng = np.random.default_rng(draw(st.integers(0, 2**16)))
        image = Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
        image = image.convert(mode) if mode not in ("La", "RGBa") else image
    else:
        image = Image.new(mode, size)
    try:
        data = encode(image, fmt, progressive=True) if fmt == "JPEG" else encode(image, fmt)
    except (OSError, ValueError, KeyError):  # a mode or size the format cannot hold
        try:
            data = encode(to_rgb(image), fmt)
        except (OSError, ValueError, KeyError):
            data = encode(to_rgb(image), "PNG")
    damage = draw(st.sampled_from(["none", "none", "truncate", "flip", "prefix"]))
    if damage == "truncate":
        data = data[: draw(st.integers(0, max(0, len(data) - 1)))]
    elif damage == "flip":
        buffer = bytearray(data)
        for position in draw(st.lists(st.integers(0, len(buffer) - 1), min_size=1, max_size=8)):
            buffer[position] ^= 0xFF
        data = bytes(buffer)
    elif damage == "prefix":
        data = draw(st.binary(min_size=1, max_size=16)) + data
    return data


filenames = st.one_of(
    st.just("photo.jpg"),
    st.text(min_size=0, max_size=40),
    st.sampled_from(['a"b.png', "..\\..\\etc\\passwd", "x\r\ny.png", "\u202egnp.exe", ""]),
)
parts = st.lists(
    st.tuples(
        st.sampled_from(["images", "images", "images", "image", "other"]),
        filenames,
        st.sampled_from(["image/png", "image/jpeg", "application/octet-stream", "text/plain"]),
        st.one_of(images(), st.binary(max_size=2048)),
    ),
    min_size=0,
    max_size=6,
)


def _post(client, path: str, body_parts, raw: bytes | None):
    if raw is not None:
        headers = {"Content-Type": "multipart/form-data; boundary=fuzzboundary"}
        return client.post(path, content=raw, headers=headers)
    files = []
    for field, name, content_type, data in body_parts:
        files.append((field, (name, data, content_type)))
    if not files:
        return client.post(path, data={"nothing": "here"})
    return client.post(path, files=files)


HOSTILE = [
    ("images", "thin.png", "image/png", THIN),
    ("images", "big.png", "image/png", BIG),
    ("images", "long.png", "image/png", LONG),
    ("images", "la.tif", "image/tiff", la_tiff()),
    (
        "images",
        "prog.jpg",
        "image/jpeg",
        encode(Image.new("RGB", (8000, 6000)), "JPEG", progressive=True),
    ),
]


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
        HealthCheck.large_base_example,
    ],
)
@given(
    route=st.sampled_from(["identify", "search", "enrol"]),
    body_parts=parts,
    raw=st.one_of(st.none(), st.none(), st.none(), st.binary(max_size=4096)),
    species=st.text(min_size=1, max_size=30),
)
@example(route="identify", body_parts=[HOSTILE[0]] * 5, raw=None, species="x")
@example(route="identify", body_parts=[HOSTILE[1]] * 5, raw=None, species="x")
@example(
    route="enrol",
    body_parts=[("images", "good.jpg", "image/jpeg", GOOD), HOSTILE[2]],
    raw=None,
    species="Conus_alpha",
)
@example(route="search", body_parts=HOSTILE[3:], raw=None, species="x")
@example(route="enrol", body_parts=[HOSTILE[3]], raw=None, species="..")
def test_fuzzed_uploads_never_fail_the_server_nor_cost_more_than_twice_a_normal_request(
    fuzz_client, route, body_parts, raw, species
):
    client = fuzz_client
    path = {
        "identify": "/v1/identify",
        "search": "/v1/search",
        "enrol": f"/v1/species/{quote(species, safe='')}/images",
    }[route]
    before = client.collection.store.count()
    cost = float("inf")
    for _ in range(3):  # the least of up to three runs: a busy machine only adds
        started = time.process_time()
        response = _post(client, path, body_parts, raw)
        cost = min(cost, time.process_time() - started)
        assert response.status_code < 500, (response.status_code, response.text)
        body = response.json()
        if response.status_code >= 400:
            assert body.get("detail") and "Traceback" not in str(body["detail"])
        if route == "enrol":
            added = client.collection.store.count() - before
            assert added == (body["added"] if response.status_code == 201 else 0)
            return  # an enrolment writes; its cost is not a query's
        if cost <= 2 * client.normal_cost:
            return
    raise AssertionError(
        f"{route} cost {cost * 1000:.0f} ms of CPU, over twice a normal request "
        f"({client.normal_cost * 1000:.0f} ms); status {response.status_code}"
    )
