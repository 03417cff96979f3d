"""Issue 12, hostile and odd input: every reproduction of the issue, as a regression test.

1. cost per request is bounded (header checks and a cost model before decoding);
2. body limits hold while the body streams in (chunked too), before spooling;
3. one intake for enrolment and queries: enrolment is all or nothing, every Pillow mode
   converts or gets a clear 422, and an error does not silently drop keep-alive;
4. the smaller ones: empty API key, species names, compaction counter, OPTIONS, OpenAPI.

Over the fake embedder (tests/fake_embedder.py) unless the real model's cost is the point.
"""

from __future__ import annotations

import asyncio
import http.client
import io
import re
import socket
import struct
import threading
import time

import numpy as np
import pytest
import uvicorn
from fastapi.testclient import TestClient
from PIL import Image

from api.app import create_app
from api.settings import ServiceSettings, SettingsError, load_settings
from embedder.intake import (
    NORMAL_PHOTO,
    ImageHeader,
    ImageIntakeError,
    IntakeLimits,
    estimate_cost,
    to_rgb,
)
from index.config import IndexSettings
from index.errors import InvalidQueryError
from index.names import canonical_species
from index.store import SpecimenStore
from index.store_upkeep import StoreUpkeep
from index.workflows.collection import Collection
from index.workflows.imaging import accept_image, storage_size
from tests.conftest import GENERATED_SPECIES, draw_specimen, make_collection, store_row
from tests.fake_embedder import FakeEmbedder


# ------------------------------------------------------------------------------ helpers
def encode(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def specimen(seed: int = 901, size: int = 96) -> Image.Image:
    kind, colour = GENERATED_SPECIES["Conus_alpha"]
    return draw_specimen(kind, colour, seed, size)


def phone_photo(width: int = 4032, height: int = 3024, seed: int = 0) -> Image.Image:
    """A smooth, photo-like image the size of a 12-megapixel phone photo."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (height // 16 + 1, width // 16 + 1, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((width, height), Image.Resampling.BILINEAR)


def files(*items: tuple[str, bytes]) -> list[tuple]:
    return [("images", (name, data, "application/octet-stream")) for name, data in items]


def la_tiff() -> bytes:
    """A valid grayscale TIFF with associated (premultiplied) alpha: Pillow mode "La"."""
    data = bytearray(encode(Image.new("LA", (64, 48), (120, 200)), "TIFF"))
    offset = struct.unpack("<I", data[4:8])[0]
    for entry in range(struct.unpack("<H", data[offset : offset + 2])[0]):
        at = offset + 2 + 12 * entry
        if struct.unpack("<H", data[at : at + 2])[0] == 338:  # ExtraSamples: 2 -> 1
            data[at + 8 : at + 10] = struct.pack("<H", 1)
    assert Image.open(io.BytesIO(bytes(data))).mode == "La"
    return bytes(data)


THIN = encode(Image.new("RGB", (45000, 32)))  # the 4 KB 45000x32 PNG
LONG = encode(Image.new("RGB", (20000, 40)))  # the 20000x40 PNG
BIG = encode(Image.new("RGB", (7000, 7000)))  # the 7000x7000 PNG (under 50 MP)
GOOD = encode(specimen(), "JPEG", quality=90)


class RecordingEmbedder(FakeEmbedder):
    """The fake embedder, remembering the size of every image it was given."""

    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[tuple[int, int]] = []

    def embed_images(self, images):
        self.sizes += [image.size for image in images]
        return super().embed_images(images)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = make_collection(tmp_path_factory.mktemp("photos"), specimens=2, views=2)
    store = tmp_path_factory.mktemp("hostile") / "store"
    embedder = RecordingEmbedder()
    collection = Collection.open(str(store), model=embedder, settings=IndexSettings.load())
    collection.enroll_folder(root, progress=False)
    return store, collection, embedder


@pytest.fixture(scope="module")
def client(reference):
    store, collection, _ = reference
    with TestClient(create_app(ServiceSettings(store=str(store)), collection)) as test_client:
        yield test_client


@pytest.fixture
def fresh(tmp_path):
    store = tmp_path / "store"
    return store, Collection.open(str(store), model=FakeEmbedder(), settings=IndexSettings.load())


def cpu_seconds(call) -> tuple[float, object]:
    started = time.process_time()
    result = call()
    return time.process_time() - started, result


class LiveServer:
    """The app under a real uvicorn on a free loopback port (keep-alive, chunked bodies)."""

    def __init__(self, app) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="critical")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def multipart(parts: list[tuple[str, str, bytes]], boundary: str = "hostileboundary") -> bytes:
    out = b""
    for field, name, data in parts:
        out += (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; '
                f'filename="{name}"\r\nContent-Type: application/octet-stream\r\n\r\n'
            ).encode()
            + data
            + b"\r\n"
        )
    return out + f"--{boundary}--\r\n".encode()


# ====================================================== 1. cost per request is bounded
def test_case1_thin_png_five_times_is_refused_from_its_header(client):
    """Issue: a 4 KB 45000x32 PNG was shrunk to 2048x1, blown up to 524288x256: 11 s."""
    cost, response = cpu_seconds(
        lambda: client.post("/v1/identify", files=files(*[("thin.png", THIN)] * 5))
    )
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "bad_aspect_ratio"
    assert "45000x32" in response.json()["detail"]
    assert cost < 0.5  # refused from the header: no pixel decoded (was ~11 s)


def test_case1_20000x40_png_is_refused_for_queries_too(client):
    response = client.post("/v1/search", files=files(("long.png", LONG)))
    assert response.status_code == 422 and response.json()["code"] == "bad_aspect_ratio"


def test_case1_five_7000px_pngs_are_too_costly_and_cost_nothing(client):
    """Issue: five 7000x7000 PNGs (715 KB, under the 50 MP limit) took 14 s and +566 MB."""
    cost, response = cpu_seconds(
        lambda: client.post("/v1/identify", files=files(*[("big.png", BIG)] * 5))
    )
    assert response.status_code == 413, response.text
    assert response.json()["code"] == "too_costly"
    assert response.json()["file"] == "big.png"
    assert cost < 0.5


def test_case1_the_embedder_never_gets_an_image_upsampled_or_past_the_stored_size(reference):
    store, collection, embedder = reference
    with TestClient(create_app(ServiceSettings(store=str(store)), collection)) as test_client:
        embedder.sizes.clear()
        shapes = [(3200, 320), (320, 3200), (33, 330), (5000, 4000), (40, 40)]
        uploads = [
            (f"{w}x{h}", encode(Image.new("RGB", (w, h), (90, 60, 30)), fmt))
            for (w, h), fmt in zip(shapes, ["PNG", "PNG", "PNG", "JPEG", "PNG"], strict=True)
        ]
        for name, data in uploads:
            response = test_client.post("/v1/identify", files=files((name, data)))
            assert response.status_code == 200, response.text
    for (w, h), (sent_w, sent_h) in zip(shapes, embedder.sizes, strict=True):
        assert (sent_w, sent_h) == storage_size(w, h)
        assert sent_w <= max(w, 512) and sent_h <= max(h, 512)  # never upscaled
        assert max(sent_w, sent_h) <= 2048 and min(sent_w, sent_h) >= 32


def test_case1_the_cost_model_refuses_what_costs_more_than_twice_a_normal_photo():
    target = storage_size(NORMAL_PHOTO.width, NORMAL_PHOTO.height)
    assert 1.0 <= estimate_cost(NORMAL_PHOTO, target) <= 1.5  # estimates err on the costly side
    for header, accepted in [
        (ImageHeader("JPEG", 4032, 3024, 3_000_000), True),  # phone photo
        (ImageHeader("JPEG", 8660, 5773, 800_000), True),  # 50 MP JPEG, decoded at 1/8
        (ImageHeader("JPEG", 8660, 5773, 300_000, progressive=True), False),
        (ImageHeader("PNG", 1600, 1200, 2_300_000), True),
        (ImageHeader("PNG", 7000, 7000, 140_000), False),
        (ImageHeader("HEIF", 4032, 3024, 700_000), False),
        (ImageHeader("WEBP", 1600, 1200, 170_000), True),
    ]:
        cost = estimate_cost(header, storage_size(header.width, header.height))
        assert (cost <= IntakeLimits().max_cost) is accepted, (header, cost)


def test_case1_limits_are_configurable_through_the_settings(client, reference, monkeypatch):
    monkeypatch.setenv("SHELLID_MAX_ASPECT_RATIO", "2")
    monkeypatch.setenv("SHELLID_MAX_IMAGE_COST", "0.5")
    monkeypatch.setenv("SHELLID_MAX_SIDE", "1000")
    settings = load_settings(store=str(reference[0]))
    assert settings.intake_limits() == IntakeLimits(
        max_pixels=50_000_000, max_side=1000, min_side=32, max_aspect_ratio=2.0, max_cost=0.5
    )
    with TestClient(create_app(settings, reference[1])) as strict:
        wide = encode(Image.new("RGB", (300, 100)))
        assert strict.post("/v1/identify", files=files(("w.png", wide))).status_code == 422
        assert strict.get("/v1/info").json()["limits"]["max_aspect_ratio"] == 2.0
        big = encode(Image.new("RGB", (1000, 1000)))
        assert strict.post("/v1/identify", files=files(("b.png", big))).json()["code"] == (
            "too_costly"
        )
    info = client.get("/v1/info").json()["limits"]
    assert info["max_aspect_ratio"] == 10.0 and info["max_image_cost"] == 2.0


# ============================================ 2. body limits hold while streaming
SMALL_LIMITS = {"max_file_bytes": 100_000, "max_query_files": 1, "max_enroll_files": 2}


def test_case2_a_chunked_body_is_cut_at_the_limit_before_it_is_spooled(reference):
    """Issue: a chunked 300 MB body was read in full (298 MB spooled to /tmp) before 413."""
    store, collection, _ = reference
    app = create_app(ServiceSettings(store=str(store), **SMALL_LIMITS), collection)
    limit = 100_000 + 64 * 1024
    chunk = b"x" * 16_384
    pulled = 0
    sent: list[dict] = []

    head = (
        b'--hostileboundary\r\nContent-Disposition: form-data; name="images"; '
        b'filename="huge.bin"\r\nContent-Type: application/octet-stream\r\n\r\n'
    )

    async def receive():  # one endless file part, chunked: no Content-Length
        nonlocal pulled
        pulled += 1
        return {"type": "http.request", "body": head if pulled == 1 else chunk, "more_body": True}

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/identify",
        "raw_path": b"/v1/identify",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"test"),
            (b"content-type", b"multipart/form-data; boundary=hostileboundary"),
            (b"transfer-encoding", b"chunked"),
        ],
        "client": ("127.0.0.1", 1),
        "server": ("test", 80),
    }
    with TestClient(app):  # lifespan: the service is loaded
        asyncio.run(asyncio.wait_for(app(scope, receive, send), 30))
    start = next(m for m in sent if m["type"] == "http.response.start")
    assert start["status"] == 413
    assert (b"connection", b"close") in start["headers"]
    read = len(head) + (pulled - 1) * len(chunk)
    assert limit < read <= limit + len(chunk)  # stopped at the first chunk over the limit


def test_case2_chunked_upload_over_real_http_gets_413_and_says_connection_close(reference):
    store, collection, _ = reference
    app = create_app(ServiceSettings(store=str(store), **SMALL_LIMITS), collection)
    head = (
        b'--hostileboundary\r\nContent-Disposition: form-data; name="images"; '
        b'filename="huge.bin"\r\nContent-Type: application/octet-stream\r\n\r\n'
    )
    with LiveServer(app) as server:
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        connection.putrequest("POST", "/v1/identify")
        connection.putheader("Content-Type", "multipart/form-data; boundary=hostileboundary")
        connection.putheader("Transfer-Encoding", "chunked")
        connection.endheaders()
        payload = [head] + [b"\0" * 65_536] * 4  # 256 KB: over the 164 KB limit
        for piece in payload:
            connection.send(b"%x\r\n%s\r\n" % (len(piece), piece))
        response = connection.getresponse()  # answered while the body is still open
        assert response.status == 413
        assert response.getheader("Connection") == "close"
        assert b"request_too_large" in response.read()
        connection.close()


def test_case2_content_length_over_the_limit_is_refused_before_reading(reference):
    store, collection, _ = reference
    with TestClient(
        create_app(ServiceSettings(store=str(store), **SMALL_LIMITS), collection)
    ) as small:
        body = multipart([("images", "a.bin", b"\0" * 200_000)])
        response = small.post(
            "/v1/identify",
            content=body,
            headers={"Content-Type": "multipart/form-data; boundary=hostileboundary"},
        )
        assert response.status_code == 413 and response.json()["code"] == "request_too_large"
        ok = small.post("/v1/identify", files=files(("good.jpg", GOOD)))
        assert ok.status_code == 200, ok.text


# =============================== 3. one intake; enrolment all or nothing; modes; keep-alive
def test_case3_good_plus_long_photo_enrols_nothing(fresh):
    """Issue: good.jpg + long.png (20000x40) gave 201 with the good photo committed."""
    store, collection = fresh
    with TestClient(create_app(ServiceSettings(store=str(store)), collection)) as api:
        response = api.post(
            "/v1/species/Conus_alpha/images", files=files(("good.jpg", GOOD), ("long.png", LONG))
        )
        assert response.status_code == 422, response.text
        assert response.json()["file"] == "long.png"
        assert api.get("/v1/species/Conus_alpha").status_code == 404
    assert len(collection.catalogue) == 0 and collection.store.count() == 0


def test_case3_long_photo_alone_is_a_422_not_a_500(fresh):
    """Issue: long.png alone gave 500 'cannot reshape array of size 0'."""
    store, collection = fresh
    with TestClient(create_app(ServiceSettings(store=str(store)), collection)) as api:
        response = api.post("/v1/species/Conus_alpha/images", files=files(("long.png", LONG)))
        assert response.status_code == 422 and response.json()["code"] == "bad_aspect_ratio"


def test_case3_a_photo_the_stored_copy_would_shrink_under_32px_is_refused_before_writing(fresh):
    _, collection = fresh
    lax = IntakeLimits(max_aspect_ratio=1000.0, max_side=20_000)  # 20000x40 passes the header
    with pytest.raises(ImageIntakeError) as refused:
        collection.enroll(
            "Conus_alpha", [("good.jpg", GOOD), ("long.png", LONG)], strict=True, limits=lax
        )
    assert refused.value.code == "too_small" and "2048x4" in str(refused.value)
    assert collection.store.count() == 0
    report = collection.enroll("Conus_alpha", [("long.png", LONG)], limits=lax)  # not strict
    assert report.added == 0 and "long.png" in report.errors  # no reshape error


def test_case3_queries_and_enrolment_accept_and_refuse_the_same_photos(fresh):
    store, collection = fresh
    photos = [("good.jpg", GOOD), ("thin.png", THIN), ("big.png", BIG), ("la.tif", la_tiff())]
    with TestClient(create_app(ServiceSettings(store=str(store)), collection)) as api:
        api.post("/v1/species/Conus_beta/images", files=files(("seed.jpg", encode(specimen(5)))))
        for name, data in photos:
            query = api.post("/v1/identify", files=files((name, data)))
            enrol = api.post(f"/v1/species/S_{name[:3]}/images", files=files((name, data)))
            assert (query.status_code == 200) == (enrol.status_code == 201), name
            if query.status_code != 200:
                assert query.json()["code"] == enrol.json()["code"]


def test_case3_grayscale_tiff_with_associated_alpha_is_identified_and_enrolled(client, fresh):
    """Issue: a TIFF decoding to mode "La" gave 500 on identify, search and enroll."""
    data = la_tiff()
    assert client.post("/v1/identify", files=files(("la.tif", data))).status_code == 200
    assert client.post("/v1/search", files=files(("la.tif", data))).status_code == 200
    store, collection = fresh
    with TestClient(create_app(ServiceSettings(store=str(store)), collection)) as api:
        response = api.post("/v1/species/Gray_alpha/images", files=files(("la.tif", data)))
        assert response.status_code == 201, response.text


@pytest.mark.parametrize("mode", Image.MODES)
def test_case3_every_pillow_mode_converts_to_rgb_or_is_a_clear_422(mode):
    image = Image.new(mode, (40, 40))
    try:
        rgb = to_rgb(image, "x.tif")
    except ImageIntakeError as exc:  # a refusal must name the mode, never crash
        assert exc.code == "unsupported_mode" and mode in str(exc)
    else:
        assert rgb.mode == "RGB" and rgb.size == (40, 40)


def test_case3_after_a_500_the_connection_stays_alive(reference, monkeypatch):
    """Issue: after any 500 the server dropped the keep-alive connection without saying so."""
    store, collection, _ = reference
    app = create_app(ServiceSettings(store=str(store)), collection)
    with LiveServer(app) as server:
        service = app.state.runtime.service
        monkeypatch.setattr(service, "species", _explode)
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        connection.request("GET", "/v1/species")
        failed = connection.getresponse()
        assert failed.status == 500 and b"internal_error" in failed.read()
        assert failed.getheader("Connection") != "close"
        socket_before = connection.sock
        connection.request("GET", "/v1/info")
        again = connection.getresponse()
        assert again.status == 200 and again.read()
        assert connection.sock is socket_before  # same connection, not a silent reconnect
        connection.close()


async def _explode():
    raise RuntimeError("boom")


# ============================================================== 4. the smaller ones
def test_case4_an_empty_api_key_is_a_configuration_error(monkeypatch):
    monkeypatch.setenv("SHELLID_API_KEY", "")
    with pytest.raises(SettingsError, match="SHELLID_API_KEY"):
        load_settings()
    monkeypatch.setenv("SHELLID_API_KEY", "  ")
    with pytest.raises(SettingsError, match="empty"):
        load_settings()
    monkeypatch.delenv("SHELLID_API_KEY")
    monkeypatch.setenv("SHELLID_READ_KEY", "")
    with pytest.raises(SettingsError, match="SHELLID_READ_KEY"):
        load_settings()


@pytest.mark.parametrize(
    "variant",
    [
        "Conus\u200b_textile",  # zero-width space
        "Conus_textile\u200f",  # right-to-left mark
        "\u202eConus_textile",  # right-to-left override
        "Conus\ufeff textile",  # BOM
        "Conus_te\u00adxtile",  # soft hyphen
    ],
)
def test_case4_invisible_and_bidi_characters_do_not_make_another_species(variant):
    assert canonical_species(variant) == "Conus_textile"


def test_case4_nfd_and_nfc_spellings_are_one_species(fresh):
    store, collection = fresh
    nfc, nfd = "N\u00e9rita_alba", "Ne\u0301rita_alba"
    with TestClient(create_app(ServiceSettings(store=str(store)), collection)) as api:
        first = api.post(f"/v1/species/{nfc}/images", files=files(("a.jpg", GOOD)))
        second = api.post(
            f"/v1/species/{nfd}/images", files=files(("b.jpg", encode(specimen(7), "JPEG")))
        )
        assert first.status_code == 201 and second.status_code == 201, second.text
        assert second.json()["species"] == nfc and second.json()["total"] == 2
        assert api.get("/v1/species").json()["total_species"] == 1


@pytest.mark.parametrize("name", ["..", ".", "a/b", "..\\x", "a\x00b", "a\x9fb", "\u200b", "___"])
def test_case4_path_segments_and_control_characters_are_not_species_names(name):
    with pytest.raises(InvalidQueryError):
        canonical_species(name)


def test_case4_dot_dot_is_refused_by_the_api(client):
    response = client.post("/v1/species/%2E%2E/images", files=files(("good.jpg", GOOD)))
    assert response.status_code in (404, 422)
    assert client.get("/v1/species/%2E%2E").status_code in (404, 422)
    assert client.post("/v1/species/a%01b/images", files=files(("g.jpg", GOOD))).status_code == 422


@pytest.mark.filterwarnings("ignore:optimize")
def test_case4_the_compaction_counter_survives_a_restart(tmp_path, monkeypatch):
    compactions: list[int] = []
    monkeypatch.setattr(
        StoreUpkeep, "compact", _recording_compact(StoreUpkeep.compact, compactions)
    )
    for i in range(6):  # a new process (a new store object) for every write
        store = SpecimenStore(tmp_path / "s", compact_every=3)
        store.ensure_table(4)
        store.add(store.make_rows(store_row(i), np.ones((1, 4), np.float32)))
    assert len(compactions) >= 1  # with a per-process counter: never
    store = SpecimenStore(tmp_path / "s", compact_every=3)
    assert store.upkeep.writes_since_compaction() < 3


def _recording_compact(original, calls: list[int]):
    def compact(self):
        calls.append(self.store.version)
        return original(self)

    return compact


def test_case4_options_on_a_species_lists_delete(client):
    response = client.options("/v1/species/Conus_alpha")
    assert response.status_code == 204
    allowed = {m.strip() for m in response.headers["allow"].split(",")}
    assert {"GET", "DELETE", "OPTIONS"} <= allowed
    wrong = client.put("/v1/species/Conus_alpha")
    assert wrong.status_code == 405 and "DELETE" in wrong.headers["allow"]


def test_case4_openapi_does_not_admit_requests_the_server_always_rejects(client):
    schema = client.get("/openapi.json").json()
    bodies = schema["components"]["schemas"]
    for body in ("Body_identify_v1_identify_post", "Body_search_v1_search_post"):
        assert bodies[body]["properties"]["images"]["minItems"] == 1
    enrol = schema["paths"]["/v1/species/{name}/images"]["post"]
    assert (
        bodies[
            enrol["requestBody"]["content"]["multipart/form-data"]["schema"]["$ref"].split("/")[-1]
        ]["properties"]["images"]["minItems"]
        == 1
    )
    pattern = next(p for p in enrol["parameters"] if p["name"] == "name")["schema"]["pattern"]
    for rejected in ["a\x01b", "a\x7fb", "..", ".", "a/b", "___", " "]:
        assert re.fullmatch(pattern, rejected) is None, rejected
        with pytest.raises(InvalidQueryError):
            canonical_species(rejected)
    for accepted in ["Conus_textile", "Nérita alba", "A.b", "x"]:
        assert re.fullmatch(pattern, accepted), accepted
        canonical_species(accepted)
    empty = client.post("/v1/identify", files=[("other", ("a.txt", b"x", "text/plain"))])
    assert empty.status_code == 422


# ----------------------------------------------------------------- the cost model, measured
def largest_accepted(fmt: str, limits: IntakeLimits, bytes_per_pixel: float = 0.25) -> int:
    """Side of the largest square image of ``fmt`` (of ``bytes_per_pixel``) the limits
    accept, by the cost model."""
    low, high = 32, 16_384
    while low < high:
        side = (low + high + 1) // 2
        header = ImageHeader(fmt, side, side, int(side * side * bytes_per_pixel))
        if estimate_cost(header, storage_size(side, side)) <= limits.max_cost:
            low = side
        else:
            high = side - 1
    return low


def costliest_accepted(fmt: str, limits: IntakeLimits, seed: int = 3) -> bytes:
    """The largest square image of noise (the costliest content) of ``fmt`` the limits
    accept, encoded."""
    rng = np.random.default_rng(seed)

    def make(side: int) -> bytes:
        image = Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8))
        return encode(image.convert("P") if fmt == "GIF" else image, fmt)

    per_pixel = len(make(256)) / 256**2
    side = largest_accepted(fmt, limits, per_pixel)
    while True:
        data = make(side)
        try:
            accept_image("probe", data, limits)
            return data
        except ImageIntakeError as exc:
            assert exc.code == "too_costly"
            side = int(side * 0.97)


def test_images_at_the_cost_limit_are_accepted_and_those_past_it_refused():
    limits = IntakeLimits()
    rng = np.random.default_rng(5)
    for fmt in ("PNG", "WEBP", "GIF", "BMP", "TIFF", "HEIF"):
        side = Image.open(io.BytesIO(costliest_accepted(fmt, limits))).size[0]
        bigger = int(side * 1.1)
        image = Image.fromarray(rng.integers(0, 255, (bigger, bigger, 3), dtype=np.uint8))
        with pytest.raises(ImageIntakeError) as refused:
            accept_image("no", encode(image.convert("P") if fmt == "GIF" else image, fmt), limits)
        assert refused.value.code == "too_costly", fmt


def _pipeline_cost(embedder, data: bytes, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.process_time()
        accepted = accept_image("photo", data)
        embedder.embed_images([accepted.image])
        best = min(best, time.process_time() - started)
    return best


def test_the_costliest_accepted_images_cost_at_most_twice_a_normal_photo(frozen_model):
    """Measured, with the real model: decode + resize + embed of the largest image of each
    format the default limits accept, against a 12-megapixel phone JPEG."""
    from embedder import Embedder

    embedder = Embedder(frozen_model, num_workers=0, threads=1)
    normal = encode(phone_photo(), "JPEG", quality=90)
    _pipeline_cost(embedder, normal, 1)  # warm-up
    normal_cost = _pipeline_cost(embedder, normal)
    limits = IntakeLimits()
    worst: dict[str, float] = {}
    for fmt in ("JPEG", "PNG", "WEBP", "GIF", "TIFF", "BMP", "HEIF"):
        worst[fmt] = _pipeline_cost(embedder, costliest_accepted(fmt, limits)) / normal_cost
    for width, height in [(8000, 6000), (6000, 4500), (5000, 3750)]:  # photo content
        big_jpeg = encode(phone_photo(width, height), "JPEG", quality=95)
        try:
            accept_image("probe", big_jpeg, limits)
        except ImageIntakeError:
            continue
        worst[f"JPEG {width}x{height}"] = _pipeline_cost(embedder, big_jpeg) / normal_cost
        break
    print({k: round(v, 2) for k, v in worst.items()})
    assert max(worst.values()) <= 2.0, worst
