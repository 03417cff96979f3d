"""The "Try these" strip in a real headless Chromium: the specimens ``shellid demo`` kept back
are shown under the identify form at desktop and phone width (no horizontal overflow, no
broken image), and choosing one identifies it. Skips without Chromium like test_browser."""

from __future__ import annotations

import pytest

from api.cli import main
from index.config import IndexSettings
from tests.browser import serve
from tests.conftest import make_collection
from tests.fake_embedder import FakeEmbedder

pytestmark = pytest.mark.browser

VIEWPORTS = {"desktop": {"width": 1280, "height": 900}, "phone": {"width": 390, "height": 844}}


@pytest.fixture
def demo_server(tmp_path, monkeypatch, capsys):
    import api.app
    from api.app import create_app
    from api.settings import ServiceSettings
    from index.workflows.collection import Collection

    monkeypatch.setattr(
        api.app,
        "open_collection",
        lambda settings: Collection.open(
            settings.store, model=FakeEmbedder(), create=True, settings=settings
        ),
    )
    data = make_collection(tmp_path / "sample", specimens=3, views=2, size=128)
    store = str(tmp_path / "store")
    assert main(["demo", "--store", store, "--data", str(data)]) == 0
    capsys.readouterr()
    collection = Collection.open(
        store, model=FakeEmbedder(), create=False, settings=IndexSettings.load()
    )
    yield from serve(create_app(ServiceSettings(store=store), collection))


@pytest.mark.parametrize("viewport", sorted(VIEWPORTS))
def test_try_these_strip_shows_the_kept_back_specimens_and_identifies_one(
    browser, demo_server, viewport, tmp_path
):
    page = browser.new_page(viewport=VIEWPORTS[viewport])
    page.set_default_timeout(30_000)
    page.goto(demo_server)
    page.wait_for_selector("#try-these:not([hidden])")
    page.wait_for_function(
        "Array.from(document.querySelectorAll('#try-list img'))"
        ".every(i => i.complete && i.naturalWidth > 0)"
    )
    assert page.locator("#try-list li").count() == 5
    overflow = "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    assert page.evaluate(overflow) <= 0
    page.screenshot(path=str(tmp_path / f"try-these-{viewport}.png"), full_page=True)

    page.locator("#try-list button", has_text="Murex epsilon").click()
    page.wait_for_selector("#result:not([hidden])")
    assert page.locator("#identify-previews img").count() == 2  # both views were sent
    assert "Murex epsilon" in page.inner_text("#result-candidates")
    broken = "Array.from(document.images).filter(i => i.complete && i.naturalWidth === 0)"
    assert page.evaluate(f"{broken}.length") == 0
    assert page.evaluate(overflow) <= 0

    page.close()


#: the answer's top is on screen, near the top unless the page cannot scroll further
IN_VIEW = """() => { const r = document.getElementById('result').getBoundingClientRect();
  const end = window.scrollY + window.innerHeight >= document.documentElement.scrollHeight - 2;
  const high = r.top < window.innerHeight / 3;
  return r.top >= -1 && (high || (end && r.top < window.innerHeight / 2)); }"""


def test_after_identify_on_a_phone_the_answer_is_in_view_and_focused(browser, demo_server):
    page = browser.new_page(viewport=VIEWPORTS["phone"])
    page.set_default_timeout(30_000)
    page.goto(demo_server)
    page.wait_for_selector("#try-these:not([hidden])")
    page.locator("#try-list button").last.scroll_into_view_if_needed()
    page.locator("#try-list button").last.click()
    page.wait_for_selector("#result:not([hidden])")
    page.wait_for_function(IN_VIEW)  # scrolled to the answer, not left below the strip
    assert page.evaluate("document.activeElement.id") == "result"
    top = page.evaluate("document.getElementById('result').getBoundingClientRect().top")
    assert 0 <= top < VIEWPORTS["phone"]["height"] / 2
    # the strip comes after the answer: it can never push the answer off-screen
    order = page.evaluate(
        "document.getElementById('result').compareDocumentPosition("
        "document.getElementById('try-these')) & Node.DOCUMENT_POSITION_FOLLOWING"
    )
    assert order
    page.close()


def test_the_filters_offer_the_known_taxa_and_a_taxa_list_restricts_the_answer(
    browser, demo_server
):
    page = browser.new_page(viewport=VIEWPORTS["phone"])
    page.set_default_timeout(30_000)
    page.goto(demo_server)
    page.wait_for_function("document.querySelectorAll('#known-genera option').length > 0")
    genera = page.eval_on_selector_all("#known-genera option", "os => os.map(o => o.value)")
    assert genera == ["Conus", "Cypraea", "Murex"]
    page.locator("#filters summary").click()
    page.fill("#filter-add-taxon", "Murex epsilon")
    page.dispatch_event("#filter-add-taxon", "change")
    page.fill("#filter-add-taxon", "Cypraea")
    page.dispatch_event("#filter-add-taxon", "change")
    assert page.input_value("#filter-subset") == "Murex epsilon\nCypraea"
    page.wait_for_selector("#try-these:not([hidden])")
    page.locator("#try-list button", has_text="Murex epsilon").click()
    page.wait_for_selector("#result:not([hidden])")
    page.wait_for_function(IN_VIEW)
    shown = page.inner_text("#result-candidates")
    assert "Conus" not in shown and "Murex epsilon" in shown
    page.fill("#filter-subset", "Cypraea gamm")  # a typo: one line naming the closest
    page.locator("#identify-submit").click()
    page.wait_for_selector("#error:not([hidden])")
    assert "closest known: 'Cypraea gamma'" in page.inner_text("#error")
    page.close()
