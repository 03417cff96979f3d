"""The HTML reports of ``shellid evaluate --report`` and ``shellid audit --report``: every plot
says something for the data at hand (or the page says why it is not drawn), axes and legends
are readable, links and images resolve, and no page is wider than a 390 px phone screen (in a
real headless Chromium; skipped without it unless CI or SHELLID_REQUIRE_SHARED=1 is set).

Screenshots of the browser test go to a temporary folder, or to ``$SHELLID_SCREENSHOTS``.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import numpy as np
import pytest

from index.workflows.evaluation import plots
from tests.conftest import GENERATED_SPECIES, make_collection

WIDTHS = (1280, 390)


@pytest.fixture(scope="module")
def collection(tmp_path_factory) -> Path:
    """Five generated species with 3, 3, 4, 5 and 6 specimens (two views each), so species
    differ in enrolled images; one exact copy across species gives the audit a finding."""
    root = tmp_path_factory.mktemp("reports") / "collection"
    for k, (name, look) in enumerate(GENERATED_SPECIES.items()):
        make_collection(root, {name: look}, specimens=(3, 3, 4, 5, 6)[k % 5])
    first, second = list(GENERATED_SPECIES)[:2]
    shutil.copy(root / first / f"{first}_1_A.png", root / second / "copied.png")
    return root


@pytest.fixture(scope="module")
def evaluation(collection, tmp_path_factory):
    from index.workflows.evaluation import EvaluationConfig, evaluate_collection

    config = EvaluationConfig(
        group_pattern="specimen",
        shots=(1,),
        episodes=10,
        allway_repeats=2,
        bootstrap_resamples=50,
        test_fraction=0.4,
        unknown_fraction=0.4,
    )
    cache = tmp_path_factory.mktemp("cache")
    return evaluate_collection(collection, None, config, cache_dir=cache, progress=False)


@pytest.fixture(scope="module")
def evaluation_report(evaluation, tmp_path_factory) -> Path:
    from index.workflows.evaluation.report import write_report

    out = tmp_path_factory.mktemp("evaluation-report")
    json_path = out / "elsewhere" / "figures.json"
    json_path.parent.mkdir()
    json_path.write_text(evaluation.to_json())
    return write_report(evaluation, out / "report", json_path=json_path)


@pytest.fixture(scope="module")
def audit_report(collection, tmp_path_factory) -> Path:
    from index.workflows.audit import AuditConfig, audit_collection, write_audit_report

    result = audit_collection(
        collection,
        config=AuditConfig(group_pattern="specimen"),
        cache_dir=tmp_path_factory.mktemp("audit-cache"),
        progress=False,
    )
    assert result.findings, "the planted copy should give the audit something to list"
    return write_audit_report(result, tmp_path_factory.mktemp("audit-report"))


class _Links(HTMLParser):
    """Every id, href and img src of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.hrefs: list[str] = []
        self.srcs: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get("id"):
            self.ids.add(a["id"])
        if tag == "a" and a.get("href") is not None:
            self.hrefs.append(a["href"])
        if tag == "img" and a.get("src") is not None:
            self.srcs.append(a["src"])


def broken_links(page: Path) -> list[str]:
    """Links and images of ``page`` that lead nowhere: an anchor with no such id, a relative
    file that is not there, or anything off the machine (the reports are self-contained)."""
    links = _Links()
    links.feed(page.read_text(encoding="utf-8"))
    broken = []
    for target in links.hrefs + links.srcs:
        parts = urlsplit(target)
        if parts.scheme or parts.netloc:
            broken.append(f"{target} (not a local file)")
            continue
        if parts.path and not (page.parent / unquote(parts.path)).is_file():
            broken.append(f"{target} (no such file)")
        if parts.fragment and (parts.path or unquote(parts.fragment) not in links.ids):
            broken.append(f"{target} (no such anchor)")
    return broken


def drawn(monkeypatch):
    """Capture the figures the plot functions draw (instead of closing them)."""
    figures = []

    def keep(fig, path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=50)
        figures.append(fig)
        return path

    monkeypatch.setattr(plots, "_save", keep)
    return figures


def _overlaps_axes(fig, legend) -> bool:
    fig.canvas.draw()
    box = legend.get_window_extent()
    return any(box.overlaps(ax.get_window_extent()) for ax in fig.axes)


# --- F1 versus images per species -------------------------------------------------------


def test_f1_vs_images_is_skipped_with_its_reason_when_all_species_have_the_same_count():
    assert "same number of enrolled images (14)" in plots.f1_vs_images_skip_reason(
        {"a": 14, "b": 14, "c": 14}
    )
    assert plots.f1_vs_images_skip_reason({"a": 14, "b": 15}) is None


@pytest.mark.parametrize(
    ("counts", "log"), [((12, 13, 14, 14, 16), False), ((2, 9, 40, 130, 400), True)]
)
def test_f1_vs_images_has_plain_integer_ticks_and_log_only_for_a_wide_range(
    tmp_path, monkeypatch, counts, log
):
    figures = drawn(monkeypatch)
    train = {f"Sp_{i}": c for i, c in enumerate(counts)}
    f1 = {m: {s: {"f1": 0.5} for s in train} for m in ("frozen", "probe")}
    plots.f1_vs_images_plot(f1, train, tmp_path / "f1.png")
    (fig,) = figures
    ax = fig.axes[0]
    fig.canvas.draw()
    assert (ax.get_xscale() == "log") is log
    low, high = ax.get_xlim()
    labels = [
        t.get_text()
        for t in ax.get_xticklabels(minor=False) + ax.get_xticklabels(minor=True)
        if t.get_text() and low <= t.get_position()[0] <= high
    ]
    assert len(labels) >= 2
    assert all(re.fullmatch(r"\d+", label) for label in labels), labels
    assert not _overlaps_axes(fig, ax.get_legend())


# --- reliability diagram ---------------------------------------------------------------


def test_reliability_bars_carry_their_counts_and_sparse_bins_are_marked(tmp_path, monkeypatch):
    figures = drawn(monkeypatch)
    edges = np.linspace(0, 1, 11).tolist()
    count = [0, 0, 0, 1, 0, 2, 7, 0, 30, 60]
    data = {
        "bin_edges": edges,
        "count": count,
        "accuracy": [np.nan if c == 0 else 0.5 for c in count],
        "confidence": [np.nan if c == 0 else (i + 0.5) / 10 for i, c in enumerate(count)],
    }
    plots.reliability_plot(
        {"frozen": data, "probe": data}, {"frozen": 0.1, "probe": 0.2}, tmp_path / "r.png"
    )
    (fig,) = figures
    for ax in fig.axes:
        texts = sorted(int(t.get_text()) for t in ax.texts)
        assert texts == sorted(c for c in count if c), "one count written on each used bin"
        bars = ax.patches
        assert len(bars) == sum(1 for c in count if c), "one bar per used bin, none for empty"
        sparse = [b for b in bars if b.get_hatch()]
        assert len(sparse) == sum(1 for c in count if 0 < c < plots.SPARSE_BIN)
        assert not any(
            line.get_marker() == "o" and len(line.get_xdata()) > 1 for line in ax.lines
        ), "bins are never joined by a line"
    assert not any(_overlaps_axes(fig, legend) for legend in fig.legends)


# --- legends never on the data ------------------------------------------------------------


def test_per_species_f1_and_prototype_legends_sit_outside_the_axes(tmp_path, monkeypatch):
    figures = drawn(monkeypatch)
    species = [f"Genus{i // 2}_species{i}" for i in range(8)]
    table = {s: {"value": 0.5 + i / 20, "low": 0.4, "high": 0.9} for i, s in enumerate(species)}
    plots.per_species_f1_plot(
        {m: {"per_species_f1": table} for m in ("frozen", "probe")}, tmp_path / "f1.png"
    )
    vectors = np.random.default_rng(0).normal(size=(8, 16))
    prototypes = {
        "species": species,
        "genus": [s.split("_")[0] for s in species],
        "family": [""] * 8,
        "vectors": {"frozen": vectors, "model": vectors + 0.1},
    }
    plots.prototype_map_plot(prototypes, tmp_path / "map.png")
    f1_fig, map_fig = figures
    assert not _overlaps_axes(f1_fig, f1_fig.axes[0].get_legend())
    assert map_fig.legends and not _overlaps_axes(map_fig, map_fig.legends[0])


def test_prototype_map_colours_only_groups_with_several_species():
    one_each = {"species": ["A_x", "B_y"], "genus": ["A", "B"], "family": [None, None]}
    assert plots.prototype_groups(one_each) is None
    shared = {"species": ["A_x", "A_y", "B_z"], "genus": ["A", "A", "B"], "family": ["", "", ""]}
    assert plots.prototype_groups(shared) == (["A", "A", "B"], "genus")
    one_genus = {"species": ["A_x", "A_y"], "genus": ["A", "A"], "family": ["", ""]}
    assert plots.prototype_groups(one_genus) is None
    families = {**shared, "family": ["F", "G", "G"]}
    assert plots.prototype_groups(families) == (["F", "G", "G"], "family")


# --- the pages --------------------------------------------------------------------------


def test_evaluation_report_draws_f1_vs_images_and_names_where_the_json_is(evaluation_report):
    html = evaluation_report.read_text()
    assert 'src="f1_vs_images.png"' in html
    assert 'href="evaluation.json"' in html
    beside = json.loads((evaluation_report.parent / "evaluation.json").read_text())
    assert beside["schema_version"] == 2
    assert str(evaluation_report.parent.parent / "elsewhere" / "figures.json") in html
    assert broken_links(evaluation_report) == []


def test_evaluation_report_explains_an_f1_vs_images_plot_it_cannot_draw(evaluation, tmp_path):
    from index.workflows.evaluation.report import write_report

    same = {species: 6 for species in evaluation.plots["train_counts"]}
    result = dataclasses.replace(evaluation, plots={**evaluation.plots, "train_counts": same})
    page = write_report(result, tmp_path / "report")
    html = page.read_text()
    assert "f1_vs_images.png" not in html and not (page.parent / "f1_vs_images.png").exists()
    assert "Not drawn: every species has the same number of enrolled images (6)" in html
    assert "--json" not in html, "no --json file was written, so the page names none"
    assert broken_links(page) == []


def test_audit_report_links_only_anchors_that_exist(audit_report):
    html = audit_report.read_text()
    across = "duplicates-across-species"  # the planted copy: a group of its own, linked
    assert f'href="#{across}"' in html and f'<details id="{across}"' in html
    assert 'href="#corrupt"' not in html, "no corrupt file, so no link to a missing list"
    assert broken_links(audit_report) == []


# --- in a real browser ----------------------------------------------------------------------


PAGE_CHECK = """() => {
  const width = document.documentElement.clientWidth;
  const broken = [...document.images]
    .filter(img => !img.complete || img.naturalWidth === 0)
    .map(img => img.getAttribute('src'));
  const anchors = [...document.querySelectorAll('a[href^="#"]')]
    .map(a => decodeURIComponent(a.getAttribute('href').slice(1)))
    .filter(id => !document.getElementById(id));
  const wide = [...document.body.querySelectorAll('*')]
    .filter(el => !el.closest('.scroll') && el.getBoundingClientRect().right > width + 1)
    .map(el => el.tagName + '.' + el.className);
  return {scroll: document.documentElement.scrollWidth, width, broken, anchors,
          wide: wide.slice(0, 5), images: document.images.length};
}"""


@pytest.mark.browser
@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("which", ["evaluation", "audit"])
def test_report_fits_the_screen_with_no_broken_image_or_link(request, browser, shots, which, width):
    report = request.getfixturevalue(f"{which}_report")
    context = browser.new_context(viewport={"width": width, "height": 900}, device_scale_factor=1)
    tab = context.new_page()
    try:
        tab.goto(report.as_uri())
        tab.wait_for_load_state("load")
        seen = tab.evaluate(PAGE_CHECK)
        tab.screenshot(path=str(shots / f"report-{which}-{width}.png"), full_page=True)
    finally:
        context.close()
    assert seen["images"] > 0
    assert seen["broken"] == [], f"images that did not load: {seen['broken']}"
    assert seen["anchors"] == [], f"links to anchors that do not exist: {seen['anchors']}"
    overflow = seen["scroll"] - seen["width"]
    assert overflow <= 0, f"{overflow} px of horizontal overflow at {width} px: {seen['wide']}"
    assert seen["wide"] == [], f"elements past the right edge: {seen['wide']}"


def test_evaluation_report_speaks_plainly_with_a_glossary_line_per_figure(
    evaluation, evaluation_report
):
    from index.workflows.evaluation.report import GLOSSARY, glossary, summary_rows

    html = evaluation_report.read_text()
    text = re.sub(r"<[^>]+>", " ", html)
    assert "VectorIdentifier" not in html
    assert "fingerprint" not in text  # the weights' hash is said in words
    assert "ECE" not in text.replace("calibration error (ECE)", "")
    for leaked in ("unknown_species", "out_of_domain"):
        assert leaked not in text, leaked
    assert "<dt>backbone</dt>" in html and "<dt>probe</dt>" in html  # each method explained
    rows = summary_rows(evaluation.figures)
    terms = glossary(rows)
    for label, _ in rows:  # every figure of the summary has its line
        assert any(part in label for part, _, _ in GLOSSARY), label
    for term, meaning in terms:
        assert f"<dt>{term}</dt><dd>{meaning}</dd>".replace("'", "&#39;") in html
