"""Decisions in plain words, as the web page shows them."""

from __future__ import annotations

import pytest

from api.wording import percent, summarize


@pytest.mark.parametrize(
    ("decision", "expected"),
    [
        ("species", "Conus textile, 94 %"),
        ("genus", "Probably genus Conus — species uncertain"),
        ("family", "Probably family Conidae — genus and species uncertain"),
        ("uncertain", "Uncertain — several species are possible"),
        ("unknown_species", "Not a species in this collection"),
        ("out_of_domain", "This does not look like a shell"),
    ],
)
def test_each_decision_reads_as_a_sentence(decision, expected):
    assert summarize(decision, "Conus_textile", "Conus", "Conidae", 0.942) == expected


def test_the_subject_word_is_configurable_with_its_article():
    assert summarize("out_of_domain", None, None, None, 0.0, "fish") == (
        "This does not look like a fish"
    )
    assert summarize("out_of_domain", None, None, None, 0.0, "insect") == (
        "This does not look like an insect"
    )


def test_percentages_never_claim_certainty():
    assert percent(1.0) == "> 99 %"
    assert percent(0.996) == "> 99 %"
    assert percent(0.004) == "< 1 %"
    assert percent(0.0) == "0 %"
    assert percent(0.5) == "50 %"
