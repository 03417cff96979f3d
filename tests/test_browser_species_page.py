"""Species pages and the page's edges in a real headless Chromium (skips without it, like
tests/test_browser.py): a collection card opens the species' page (its photos with provenance,
counts by specimen, taxonomy), candidates link to their page and show their own reference
photos, photos and species are added and deleted behind the API key, too many photos and an
unreadable photo are said plainly, percentages stay on one line. Every view is checked at 1280
and 390 px for horizontal overflow and broken images, and screenshotted (to a temporary folder,
or ``$SHELLID_SCREENSHOTS``). Fast: the stand-in embedder, not the real model."""

from __future__ import annotations

from pathlib import Path

import pytest

from index.config import IndexSettings
from tests.browser import serve
from tests.conftest import GENERATED_SPECIES, draw_specimen, make_collection
from tests.fake_embedder import FakeEmbedder

pytestmark = pytest.mark.browser

KEY = "species-page-key"
VIEWPORTS = {"1280": {"width": 1280, "height": 900}, "390": {"width": 390, "height": 844}}
TAXA = {
    "Conus_alpha": {"family": "Conidae", "order": "Neogastropoda", "region": "Indo-Pacific"},
    "Cypraea_gamma": {"family": "Cypraeidae", "region": "Red Sea"},
    "Murex_epsilon": {"family": "Muricidae"},
}
OVERFLOW = "document.documentElement.scrollWidth - document.documentElement.clientWidth"
#: images that finished loading without a picture (a broken image), by alt text
BROKEN = (
    "Array.from(document.images).filter(i => i.complete && i.naturalWidth === 0)"
    ".map(i => i.alt || i.src)"
)
ALL_LOADED = (
    "() => { document.querySelectorAll('img[loading=lazy]').forEach(i => i.loading = 'eager');"
    " return Array.from(document.images).every(i => i.complete); }"
)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """Three generated species x 3 specimens x 2 views, grouped by specimen, with taxonomy;
    writes need ``KEY``."""
    from api.app import create_app
    from api.settings import ServiceSettings
    from index.workflows.collection import Collection

    species = {name: GENERATED_SPECIES[name] for name in TAXA}
    root = make_collection(tmp_path_factory.mktemp("photos"), species, specimens=3, views=2)
    store = tmp_path_factory.mktemp("store") / "store"
    collection = Collection.open(
        str(store), model=FakeEmbedder(), create=True, settings=IndexSettings.load()
    )
    for name, taxonomy in TAXA.items():
        paths = sorted(str(p) for p in (root / name).glob("*.png"))
        groups = [Path(p).stem.rsplit("_", 1)[0] for p in paths]
        collection.enroll(name, paths, taxonomy=taxonomy, source="museum drawer 4", groups=groups)
    yield from serve(create_app(ServiceSettings(store=str(store), api_key=KEY), collection))


def open_page(browser, url: str, viewport: str = "390"):
    context = browser.new_context(viewport=VIEWPORTS[viewport], device_scale_factor=1)
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.on("dialog", lambda dialog: dialog.accept())  # "Delete ...?" confirmations
    page.goto(url)
    return context, page


def photo(folder: Path, name: str, species: str, seed: int) -> Path:
    kind, colour = GENERATED_SPECIES[species]
    path = folder / name
    draw_specimen(kind, colour, seed, size=128).save(path)
    return path


def check_layout(page, shots: Path, name: str) -> None:
    """No horizontal overflow, every image loaded with a picture; then a full-page shot."""
    page.wait_for_function(ALL_LOADED)
    assert page.evaluate(BROKEN) == [], f"{name}: broken images"
    overflow = page.evaluate(OVERFLOW)
    assert overflow <= 0, f"{name}: {overflow}px wider than the screen"
    page.screenshot(path=str(shots / f"{name}.png"), full_page=True)


def open_species(page, display: str) -> None:
    page.click("nav >> text=Collection")
    page.locator("#species-list a.card", has_text=display).click()
    page.wait_for_selector("#sp-body:not([hidden])")


@pytest.mark.parametrize("viewport", sorted(VIEWPORTS))
def test_identify_collection_and_species_page_fit_the_screen_without_broken_images(
    browser, server, tmp_path, shots, viewport
):
    context, page = open_page(browser, server, viewport)
    try:
        icon = page.request.get(f"{server}/favicon.ico")
        assert icon.status == 200 and icon.headers["content-type"] == "image/x-icon"

        page.set_input_files(
            "#identify-photos", str(photo(tmp_path, "q.png", "Conus_alpha", 92))
        )  # named: candidates shown
        page.click("#identify-submit")
        page.wait_for_selector("#result:not([hidden])")
        first = page.locator("#result-candidates li").first
        link = first.locator("a.name")
        assert link.inner_text().startswith("Conus alpha")
        assert link.get_attribute("href") == "#species/Conus_alpha"
        # the candidate's own reference photos, spread over its specimens
        refs = first.locator(".refs img")
        refs.first.wait_for()
        assert refs.count() == 3
        assert all("Conus alpha" in refs.nth(i).get_attribute("alt") for i in range(3))
        assert first.locator(".refs a.more").inner_text() == "all 6 photos"
        check_layout(page, shots, f"identify-{viewport}px")

        link.click()
        page.wait_for_selector("#sp-body:not([hidden])")
        assert page.evaluate("location.hash") == "#species/Conus_alpha"
        assert page.inner_text("#sp-title") == "Conus alpha"
        assert page.locator("#sp-photos li").count() == 6
        check_layout(page, shots, f"species-page-{viewport}px")

        page.click("nav >> text=Collection")
        page.locator("#species-list a.card").first.wait_for()
        check_layout(page, shots, f"collection-{viewport}px")
    finally:
        context.close()


def test_a_collection_card_opens_the_species_page_with_provenance_and_counts(browser, server):
    context, page = open_page(browser, server)
    try:
        open_species(page, "Cypraea gamma")
        assert page.evaluate("location.hash") == "#species/Cypraea_gamma"
        assert page.inner_text("#sp-counts") == "6 photos of 3 specimens."
        taxonomy = page.inner_text("#sp-taxonomy")
        assert "Cypraeidae" in taxonomy and "Red Sea" in taxonomy and "Cypraea" in taxonomy
        assert taxonomy.index("Genus") < taxonomy.index("Family")  # rank order
        chips = page.locator("#sp-specimens li")
        assert chips.all_inner_texts() == [f"Cypraea_gamma_{i}: 2" for i in (1, 2, 3)]
        cards = page.locator("#sp-photos li")
        assert cards.count() == 6
        card = cards.first.inner_text()
        for expected in (
            "Cypraea_gamma_1_A.png",
            "Specimen: Cypraea_gamma_1",
            "Source: museum drawer 4",
            "Region: Red Sea",
            "Added: ",
        ):
            assert expected in card
        assert cards.first.locator("a.frame").get_attribute("href").endswith("/photo")
        page.go_back()  # the address is the view: back returns to the collection
        page.wait_for_selector("#view-species:not([hidden])")
    finally:
        context.close()


def test_deleting_and_adding_on_a_species_page_need_the_key(browser, server, tmp_path):
    context, page = open_page(browser, server)
    try:
        open_species(page, "Murex epsilon")
        # this server needs a key to write: the field appears once /v1/info has said so
        page.wait_for_selector("#sp-api-key", state="visible", timeout=10_000)
        page.fill("#sp-api-key", "wrong-key")
        page.locator("#sp-photos li").first.locator("button.delete-photo").click()
        page.wait_for_selector("#error:not([hidden])")
        assert "wrong API key" in page.inner_text("#error")
        assert page.locator("#sp-photos li").count() == 6  # nothing went

        page.fill("#sp-api-key", KEY)
        assert page.input_value("#api-key") == KEY  # one key for the whole page
        first = page.locator("#sp-photos li").first.locator(".fname").inner_text()
        page.locator("#sp-photos li").first.locator("button.delete-photo").click()
        page.wait_for_function("document.querySelectorAll('#sp-photos li').length === 5")
        assert page.inner_text("#sp-counts") == "5 photos of 3 specimens."
        assert first not in page.inner_text("#sp-photos")
        assert "Murex_epsilon_1: 1" in page.locator("#sp-specimens").inner_text()

        new = [photo(tmp_path, f"new{i}.png", "Murex_epsilon", 7000 + i) for i in range(2)]
        page.set_input_files("#sp-add-photos", [str(p) for p in new])
        page.click("#sp-add-submit")
        page.wait_for_selector("#sp-add-result:not([hidden])")
        assert "Added 2 photos" in page.inner_text("#sp-add-result")
        assert page.locator("#sp-photos li").count() == 7
        assert "new0.png" in page.inner_text("#sp-photos")

        page.click("#sp-delete")
        page.wait_for_selector("#view-species:not([hidden])")
        page.wait_for_function("document.querySelectorAll('#species-list li').length === 2")
        assert "Murex epsilon" not in page.inner_text("#species-list")
        assert page.inner_text("#status") == "Deleted Murex epsilon (7 photos)."
    finally:
        context.close()


def test_choosing_too_many_photos_says_which_were_left_out(browser, server, tmp_path):
    context, page = open_page(browser, server)
    try:
        chosen = [photo(tmp_path, f"view{i}.png", "Conus_alpha", 100 + i) for i in range(7)]
        page.set_input_files("#identify-photos", [str(p) for p in chosen])
        notice = page.locator("#identify-notice")
        notice.wait_for()
        text = notice.inner_text()
        assert "You chose 7 photos, but at most 5" in text
        assert "view5.png and view6.png" in text
        # the input says what will be sent, not "7 files"
        assert page.evaluate("document.getElementById('identify-photos').files.length") == 5
        assert page.locator("#identify-previews li").count() == 5
        page.locator("#identify-previews li").first.locator("button.remove").click()
        assert page.evaluate("document.getElementById('identify-photos').files.length") == 4
        assert page.is_hidden("#identify-notice")
        assert page.evaluate(OVERFLOW) <= 0
    finally:
        context.close()


def test_an_unreadable_photo_shows_a_message_not_a_broken_image(browser, server, tmp_path, shots):
    context, page = open_page(browser, server)
    try:
        bad = tmp_path / "broken.jpg"
        bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
        good = photo(tmp_path, "good.png", "Conus_alpha", 5)
        page.set_input_files("#identify-photos", [str(bad), str(good)])
        page.wait_for_selector("#identify-previews .nopreview")
        tile = page.locator("#identify-previews li").first
        assert tile.inner_text().startswith("Cannot show this file")
        assert "broken.jpg" in tile.inner_text()
        assert "cannot show broken.jpg" in page.inner_text("#identify-notice")
        page.wait_for_function(ALL_LOADED)
        assert page.evaluate(BROKEN) == []
        assert page.locator("#identify-previews img").count() == 1
        page.screenshot(path=str(shots / "unreadable-preview-390px.png"), full_page=True)
        page.click("#identify-submit")  # still sent: the server says what is wrong with it
        page.wait_for_selector("#error:not([hidden])")
        assert "broken.jpg" in page.inner_text("#error")
    finally:
        context.close()


#: The number of lines the characters of ``needle`` inside element ``id`` are laid out on.
LINES_OF = """([id, needle]) => {
  const element = document.getElementById(id);
  const walker = document.createTreeWalker(element, NodeFilter.SHOW_TEXT);
  const nodes = [];
  let text = "";
  while (walker.nextNode()) { nodes.push([walker.currentNode, text.length]);
                              text += walker.currentNode.data; }
  const start = text.indexOf(needle);
  if (start < 0) return -1;
  const tops = new Set();
  for (let i = start; i < start + needle.length; i++) {
    const [node, offset] = nodes.filter(([n, at]) => at <= i).at(-1);
    const range = document.createRange();
    range.setStart(node, i - offset);
    range.setEnd(node, i - offset + 1);
    for (const rect of range.getClientRects()) if (rect.width > 0) tops.add(Math.round(rect.top));
  }
  return tops.size;
}"""


def test_percentages_never_break_across_lines(browser, server):
    """Summaries of every length on a phone: '> 99 %' is always on one line, wherever the
    line ends (some of these names put the line break inside it without the fix)."""
    context, page = open_page(browser, server)
    try:
        for n in range(0, 48, 2):
            name = "Conus " + "a" * n
            page.evaluate(
                """(name) => renderResult({
                    decision: "species", summary: `${name}, > 99 %`,
                    detail: `It is ${name} at > 99 % with < 1 % for anything else.`,
                    candidates_heading: "Most likely species", similar_heading: "",
                    candidates: [{species: "Conus_alpha", genus: "Conus", family: null,
                                  score: 0.9, probability: 0.999}],
                    none_probability: 0.0005, similar: []})""",
                name,
            )
            assert page.evaluate(LINES_OF, ["result-summary", "> 99 %"]) == 1, name
            assert page.evaluate(LINES_OF, ["result-detail", "> 99 %"]) == 1, name
            assert page.evaluate(LINES_OF, ["result-detail", "< 1 %"]) == 1, name
            assert page.evaluate(LINES_OF, ["result-candidates", "> 99 %"]) == 1, name
        assert page.evaluate(OVERFLOW) <= 0
    finally:
        context.close()


@pytest.fixture(scope="module")
def big_server(tmp_path_factory):
    """One species with 63 photos (more than a page of the species page, 60)."""
    from api.app import create_app
    from api.settings import ServiceSettings
    from index.workflows.collection import Collection

    folder = tmp_path_factory.mktemp("many")
    kind, colour = GENERATED_SPECIES["Conus_alpha"]
    paths = []
    for i in range(63):
        path = folder / f"shell_{i + 1}.png"
        draw_specimen(kind, colour, 9000 + i, size=48).save(path)
        paths.append(str(path))
    store = tmp_path_factory.mktemp("store") / "store"
    collection = Collection.open(
        str(store), model=FakeEmbedder(), create=True, settings=IndexSettings.load()
    )
    collection.enroll("Conus_alpha", paths, groups=[Path(p).stem for p in paths])
    yield from serve(create_app(ServiceSettings(store=str(store)), collection))


def test_show_more_loads_the_next_page_of_photos(browser, big_server):
    context, page = open_page(browser, f"{big_server}/#species/Conus_alpha")
    try:
        page.wait_for_selector("#sp-body:not([hidden])")
        assert page.locator("#sp-photos li").count() == 60
        more = page.locator("#sp-more")
        assert more.inner_text() == "Show more photos (60 of 63 shown)"
        assert page.is_hidden("#sp-key-field")  # this server needs no key to write
        names = page.locator("#sp-photos .fname").all_inner_texts()
        assert names[:3] == ["shell_1.png", "shell_2.png", "shell_3.png"]  # 2 before 10
        more.click()
        page.wait_for_function("document.querySelectorAll('#sp-photos li').length === 63")
        assert page.is_hidden("#sp-more")
        names = page.locator("#sp-photos .fname").all_inner_texts()
        assert len(set(names)) == 63 and names[-1] == "shell_63.png"
        assert page.inner_text("#sp-counts") == "63 photos of 63 specimens."
        assert not page.locator("#sp-specimens-box").evaluate("box => box.open")  # 63 > 12
    finally:
        context.close()


def test_a_server_that_needs_a_read_key_shows_the_species_page_once_it_is_given(
    browser, tmp_path_factory
):
    from api.app import create_app
    from api.settings import ServiceSettings
    from index.workflows.collection import Collection

    root = make_collection(
        tmp_path_factory.mktemp("photos"), {"Conus_alpha": GENERATED_SPECIES["Conus_alpha"]}, 2, 2
    )
    store = tmp_path_factory.mktemp("store") / "store"
    collection = Collection.open(
        str(store), model=FakeEmbedder(), create=True, settings=IndexSettings.load()
    )
    collection.enroll_folder(root, progress=False)
    settings = ServiceSettings(store=str(store), read_key="reader")
    for url in serve(create_app(settings, collection)):
        context, page = open_page(browser, f"{url}/#species/Conus_alpha")
        try:
            page.wait_for_selector("#error:not([hidden])")
            assert "needs an API key" in page.inner_text("#error")
            assert page.is_visible("#read-key")
            page.fill("#read-key", "reader")
            page.press("#read-key", "Enter")
            page.wait_for_selector("#sp-body:not([hidden])")
            assert page.locator("#sp-photos li").count() == 4
            assert page.locator("#sp-photos a.frame").count() == 0  # a link could not send the key
            page.wait_for_function(
                "Array.from(document.querySelectorAll('#sp-photos img'))"
                ".every(i => i.complete && i.naturalWidth > 0)"
            )
            assert page.evaluate(BROKEN) == []
        finally:
            context.close()
