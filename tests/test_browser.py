"""The web page in a real headless Chromium (Debian's /usr/bin/chromium, driven by playwright):
identify an uploaded photo, enroll a species and find it in the collection, on a phone-width
screen; every decision reads as one story (headline, detail and candidates agree). Skips
without Chromium unless CI or SHELLID_REQUIRE_SHARED=1 is set (then fails).

Screenshots go to a temporary folder, or to ``$SHELLID_SCREENSHOTS`` when set.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from index.config import IndexSettings
from tests.browser import serve
from tests.conftest import GENERATED_SPECIES, draw_specimen, make_collection

pytestmark = pytest.mark.browser

PHONE = {"width": 390, "height": 844}
API_KEY = "browser-test-key"


@pytest.fixture(scope="module")
def server(tmp_path_factory, frozen_model):
    """The real app under uvicorn on a loopback port, over a store of three generated species;
    writes need ``API_KEY``."""
    from api.app import create_app
    from api.settings import ServiceSettings
    from index.workflows.collection import Collection

    species = {k: GENERATED_SPECIES[k] for k in ("Conus_alpha", "Cypraea_gamma", "Murex_epsilon")}
    root = make_collection(tmp_path_factory.mktemp("photos"), species, specimens=2, views=2)
    store = tmp_path_factory.mktemp("store") / "store"
    collection = Collection.open(
        str(store), model=frozen_model, create=True, settings=IndexSettings.load()
    )
    collection.enroll_folder(root, progress=False)
    settings = ServiceSettings(store=str(store), api_key=API_KEY)
    yield from serve(create_app(settings, collection))


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport=PHONE, device_scale_factor=1)
    tab = context.new_page()
    tab.set_default_timeout(30_000)
    tab.goto(server)
    yield tab
    context.close()


def write_photo(folder: Path, name: str, species: str, seed: int) -> Path:
    kind, colour = GENERATED_SPECIES[species]
    path = folder / name
    draw_specimen(kind, colour, seed, size=128).save(path)
    return path


def test_uploading_a_photo_shows_the_answer_with_bars_and_reference_photos(page, tmp_path, shots):
    photo = write_photo(tmp_path, "query.png", "Cypraea_gamma", seed=4242)
    page.set_input_files("#identify-photos", str(photo))
    assert page.locator("#identify-previews img").count() == 1
    with page.expect_response(lambda r: "/v1/identify" in r.url) as answer:
        page.click("#identify-submit")
    body = answer.value.json()
    page.wait_for_selector("#result:not([hidden])")
    summary = page.inner_text("#result-summary")
    assert summary.strip()
    if body["decision"] in REJECTIONS:
        # calibration on three tiny synthetic species may reject a known one: then the page
        # says so in one line naming the closest species, with no candidates and no bars
        assert "Cypraea gamma" in page.inner_text("#result-detail")
        assert not page.is_visible("#result-candidates")
        assert page.locator("#result [role=meter]").count() == 0
    else:
        first = page.locator("#result-candidates li").first
        assert first.inner_text().startswith("Cypraea gamma")
        assert page.locator("#result-candidates [role=meter]").count() >= 1
        page.wait_for_function(
            "Array.from(document.querySelectorAll('#result-similar img'))"
            ".some(img => img.complete && img.naturalWidth > 0)"
        )
    assert not page.is_visible("#error")
    assert page.is_hidden("#read-key-bar")  # reads need no key on this server
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"page is {width}px wide on a {PHONE['width']}px screen"
    page.screenshot(path=str(shots / "identify-390px.png"), full_page=True)


def test_a_bad_file_shows_the_error_in_the_page(page, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    page.set_input_files("#identify-photos", str(bad))
    page.click("#identify-submit")
    page.wait_for_selector("#error:not([hidden])")
    assert "broken.jpg" in page.inner_text("#error")
    assert page.is_hidden("#result")


def test_enrolling_a_species_shows_it_in_the_collection(page, tmp_path, shots):
    photos = [write_photo(tmp_path, f"delta{i}.png", "Cypraea_delta", 5000 + i) for i in range(2)]
    page.click("nav >> text=Add a species")
    # this server needs a key to write: the field appears once /v1/info has said so
    page.wait_for_selector("#api-key", state="visible", timeout=10_000)
    page.fill("#enroll-name", "Cypraea_delta")
    page.fill("#enroll-family", "Cypraeidae")
    page.set_input_files("#enroll-photos", [str(p) for p in photos])

    page.fill("#api-key", "wrong-key")
    page.click("#enroll-submit")
    page.wait_for_selector("#error:not([hidden])")
    assert "wrong API key" in page.inner_text("#error")

    page.fill("#api-key", API_KEY)
    page.click("#enroll-submit")
    page.wait_for_selector("#enroll-result:not([hidden])")
    assert "Added 2 photos of Cypraea delta" in page.inner_text("#enroll-result")
    page.screenshot(path=str(shots / "enroll-390px.png"), full_page=True)

    page.click("nav >> text=Collection")
    item = page.locator("#species-list li", has_text="Cypraea delta")
    item.wait_for()
    assert "2 photos" in item.inner_text() and "Cypraeidae" in item.inner_text()
    assert page.locator("#species-list li").count() == 4
    thumbnail = item.locator("img")
    thumbnail.scroll_into_view_if_needed()
    page.wait_for_function(
        "img => img.complete && img.naturalWidth > 0", arg=thumbnail.element_handle()
    )
    page.screenshot(path=str(shots / "collection-390px.png"), full_page=True)


def test_api_docs_render_without_internet(browser, server):
    context = browser.new_context()
    tab = context.new_page()
    outside: list[str] = []
    tab.on("request", lambda r: None if r.url.startswith(server) else outside.append(r.url))
    tab.goto(f"{server}/docs")
    tab.wait_for_selector(".swagger-ui .info .title", timeout=30_000)
    assert "shellid" in tab.inner_text(".swagger-ui .info .title")
    assert tab.locator(".opblock-summary-path", has_text="/v1/identify").count() == 1
    context.close()
    assert outside == []


# ------------------------------------------------------------- every decision, one story
#: Threshold overrides that force each decision (set on the served collection's identifier;
#: every key is set, None = back to the calibrated value).
NEVER, ALWAYS = 2.0, 0.0
FORCE = {
    "species": dict(species_probability=ALWAYS, unknown=10.0, ood=10.0),
    "genus": dict(species_probability=NEVER, genus_probability=ALWAYS, unknown=10.0, ood=10.0),
    "family": dict(
        species_probability=NEVER,
        genus_probability=NEVER,
        family_probability=ALWAYS,
        unknown=10.0,
        ood=10.0,
    ),
    "uncertain": dict(
        species_probability=NEVER,
        genus_probability=NEVER,
        family_probability=NEVER,
        unknown=10.0,
        ood=10.0,
    ),
    "unknown_species": dict(unknown=-10.0, ood=10.0),
    "out_of_domain": dict(ood=-10.0),
}
THRESHOLD_KEYS = (
    "species_probability",
    "genus_probability",
    "family_probability",
    "unknown",
    "ood",
)
#: decision -> (headline, how the detail sentence starts)
EXPECTED = {
    "species": ("Conus alpha, ", ""),
    "genus": ("Probably genus Conus — species uncertain", "Genus Conus is "),
    "family": ("Probably family Conidae — genus and species uncertain", "Family Conidae is "),
    "uncertain": (
        "Uncertain — several species are possible",
        "No species is likely enough to name; the most likely ",
    ),
    "unknown_species": (
        "Not a species in this collection",
        "It looks most like Conus alpha (similarity ",
    ),
    "out_of_domain": ("This does not look like a shell", "Nothing in the collection is close."),
}
REJECTIONS = {"unknown_species", "out_of_domain"}


@pytest.fixture(scope="module")
def taxonomy_server(tmp_path_factory, frozen_model):
    """(URL, collection): two Conus species (family Conidae) and a cowrie (Cypraeidae)."""
    from api.app import create_app
    from api.settings import ServiceSettings
    from index.workflows.collection import Collection

    taxa = {
        "Conus_alpha": ("Conus", "Conidae"),
        "Conus_beta": ("Conus", "Conidae"),
        "Cypraea_gamma": ("Cypraea", "Cypraeidae"),
    }
    root = make_collection(
        tmp_path_factory.mktemp("photos"),
        {k: GENERATED_SPECIES[k] for k in taxa},
        specimens=2,
        views=2,
    )
    store = tmp_path_factory.mktemp("store") / "store"
    collection = Collection.open(
        str(store), model=frozen_model, create=True, settings=IndexSettings.load()
    )
    for name, (genus, family) in taxa.items():
        paths = sorted(str(p) for p in (root / name).glob("*.png"))
        collection.enroll(name, paths, taxonomy={"genus": genus, "family": family})
    settings = ServiceSettings(store=str(store))
    for url in serve(create_app(settings, collection)):
        yield url, collection


@pytest.mark.parametrize("decision", list(FORCE))
def test_every_decision_reads_as_one_story(browser, taxonomy_server, tmp_path, shots, decision):
    url, collection = taxonomy_server
    identifier = collection.index.identifier
    identifier.set_overrides(**{k: FORCE[decision].get(k) for k in THRESHOLD_KEYS})
    context = browser.new_context(viewport=PHONE, device_scale_factor=1)
    try:
        page = context.new_page()
        page.set_default_timeout(30_000)
        page.goto(url)
        photo = write_photo(tmp_path, "query.png", "Conus_alpha", seed=4343)
        page.set_input_files("#identify-photos", str(photo))
        with page.expect_response(lambda r: "/v1/identify" in r.url) as answer:
            page.click("#identify-submit")
        body = answer.value.json()
        page.wait_for_selector("#result:not([hidden])")
        assert body["decision"] == decision

        headline, detail = EXPECTED[decision]
        assert page.inner_text("#result-summary").startswith(headline)
        shown_detail = page.inner_text("#result-detail")
        assert shown_detail == body["detail"] and shown_detail.startswith(detail)
        assert shown_detail.endswith(".")
        candidates = page.locator("#result-candidates")
        if decision in REJECTIONS:  # only the detail line: no candidates, no "not a match" photos
            assert "%" not in page.inner_text("#result-summary") + shown_detail
            for part in ("candidates-title", "candidates", "similar-title", "similar"):
                assert not page.is_visible(f"#result-{part}")
            assert page.locator("#result [role=meter]").count() == 0
            if decision == "unknown_species":
                assert "similarity" in shown_detail
        else:
            assert page.inner_text("#result-candidates-title") == body["candidates_heading"]
            assert page.inner_text("#result-similar-title") == body["similar_heading"]
            assert candidates.locator("li").first.inner_text().startswith("Conus alpha")
            assert candidates.locator("[role=meter]").count() >= 1
            none_rows = candidates.locator("li.none")
            assert none_rows.count() == (0 if body["none_probability"] is None else 1)
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        if decision in {"species", "unknown_species", "out_of_domain"}:
            if decision == "species":
                page.locator("#result-similar li").last.scroll_into_view_if_needed()
                page.wait_for_function(
                    "Array.from(document.querySelectorAll('#result-similar img'))"
                    ".every(img => img.complete && img.naturalWidth > 0)"
                )
            page.screenshot(path=str(shots / f"{decision}-390px.png"), full_page=True)
            page.set_viewport_size({"width": 1280, "height": 900})
            page.screenshot(path=str(shots / f"{decision}-1280px.png"), full_page=True)
    finally:
        context.close()
        identifier.set_overrides(**dict.fromkeys(THRESHOLD_KEYS))


#: Page script: identify answers without ``none_probability`` get 20 % of "none of these"
#: (the species' probabilities scaled to the other 80 %).
def test_probabilities_end_with_a_none_of_these_row(browser, taxonomy_server, tmp_path, shots):
    """The bars end with the index's ``none_probability`` (so they never claim more than the
    answer does): the unknown threshold is set just below the photo's best score, which gives
    "none of these" a large share without rejecting it."""
    from PIL import Image

    from api.wording import percent

    url, collection = taxonomy_server
    identifier = collection.index.identifier
    photo = write_photo(tmp_path, "q.png", "Conus_alpha", 4444)
    best = collection.identify([Image.open(photo)]).candidates[0].score
    identifier.set_overrides(
        unknown=1.0 - best + 0.01,
        species_probability=1.0,
        genus_probability=1.0,
        family_probability=1.0,
    )
    answer = collection.identify([Image.open(photo)])
    assert answer.decision == "uncertain" and answer.none_probability is not None
    assert answer.none_probability > 0.05
    context = browser.new_context(viewport=PHONE, device_scale_factor=1)
    try:
        page = context.new_page()
        page.set_default_timeout(30_000)
        page.goto(url)
        page.set_input_files("#identify-photos", str(photo))
        page.click("#identify-submit")
        page.wait_for_selector("#result:not([hidden])")
        rows = page.locator("#result-candidates li")
        last = rows.last
        assert last.inner_text().startswith("None of these")
        assert percent(answer.none_probability) in last.inner_text()
        meter = last.locator("[role=meter]").get_attribute("aria-valuenow")
        assert meter == str(round(100 * answer.none_probability))
        assert rows.count() == 4  # three species, then none of these
        page.screenshot(path=str(shots / "uncertain-none-390px.png"), full_page=True)
    finally:
        context.close()
        identifier.set_overrides(**dict.fromkeys(THRESHOLD_KEYS))


def test_a_placed_answer_says_where_the_species_belongs(browser, taxonomy_server, tmp_path, shots):
    """An unknown species placed in a genus: the headline says 'probably a new Conus (genus,
    80 %)' as the API does, and nothing else on the page claims a species."""
    import math

    from index.results import PlacementCalibration, RankCalibration

    url, collection = taxonomy_server
    identifier = collection.index.identifier
    calibrated = identifier.calibrated_thresholds
    genus = RankCalibration(  # probability 0.8 whatever the scores: logit(0.8) = 1.386
        rank="genus",
        weights=[0.0, 0.0, 0.0, math.log(4)],
        score_centre=0.0,
        score_scale=1.0,
        threshold=0.5,
    )
    identifier.thresholds = calibrated.model_copy(
        update={
            "placement": PlacementCalibration(
                target_precision=0.8, temperature=calibrated.temperature, ranks=[genus]
            )
        }
    )
    identifier.set_overrides(**FORCE["unknown_species"])
    context = browser.new_context(viewport=PHONE, device_scale_factor=1)
    try:
        page = context.new_page()
        page.set_default_timeout(30_000)
        page.goto(url)
        photo = write_photo(tmp_path, "query.png", "Conus_alpha", seed=4343)
        page.set_input_files("#identify-photos", str(photo))
        with page.expect_response(lambda r: "/v1/identify" in r.url) as answer:
            page.click("#identify-submit")
        body = answer.value.json()
        page.wait_for_selector("#result:not([hidden])")
        assert body["decision"] == "unknown_species"
        assert body["placement"] == {"rank": "genus", "name": "Conus", "probability": 0.8}
        headline = "Not a species in this collection — probably a new Conus (genus, 80 %)"
        assert body["summary"] == headline
        assert page.inner_text("#result-summary") == headline
        assert not page.is_visible("#result-candidates")
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        page.screenshot(path=str(shots / "placed-390px.png"), full_page=True)
        page.set_viewport_size({"width": 1280, "height": 900})
        page.screenshot(path=str(shots / "placed-1280px.png"), full_page=True)
    finally:
        context.close()
        identifier.set_overrides(**dict.fromkeys(THRESHOLD_KEYS))
        identifier.thresholds = calibrated
