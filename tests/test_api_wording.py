"""Decisions in plain words, as the web page, the API and the CLI show them: one answer, one
story (no rejection wording claims a probability)."""

from __future__ import annotations

import pytest

from api.wording import explain, headings, percent, summarize, words_for
from index.results import DECISIONS


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


# ------------------------------------------------------------- one answer, one story
CANDIDATES = [
    {"species": "Conus_textile", "score": 0.41, "probability": 0.48, "similarity": 0.5412},
    {"species": "Conus_marmoreus", "score": 0.40, "probability": 0.30, "similarity": 0.51},
    {"species": "Cypraea_tigris", "score": 0.22, "probability": 0.07, "similarity": 0.32},
]


def identification(decision: str, **fields) -> dict:
    """An Identification-like answer as the index gives it (no probabilities on rejections)."""
    named = {
        "species": ("Conus_textile", None, None, 0.94),
        "genus": (None, "Conus", None, 0.78),
        "family": (None, None, "Conidae", 0.85),
    }.get(decision, (None, None, None, 0.0))
    rejected = decision in ("unknown_species", "out_of_domain")
    answer = dict(
        decision=decision,
        species=named[0],
        genus=named[1],
        family=named[2],
        confidence=named[3],
        candidates=([{**c, "probability": None} for c in CANDIDATES] if rejected else CANDIDATES),
        none_probability=None if rejected else 0.15,
    )
    answer.update(fields)
    return answer


@pytest.mark.parametrize("decision", DECISIONS)
def test_every_decision_has_a_headline_a_detail_and_headings(decision):
    words = words_for(identification(decision))
    assert words.summary and words.detail and words.candidates_heading and words.similar_heading
    assert words.detail.endswith(".") and "\n" not in words.detail


def test_every_index_decision_has_words_of_its_own():
    """No decision falls through to another's words (the page once showed the off-domain
    sentence for ``family`` and ``uncertain``)."""
    worded = {words_for(identification(d)) for d in DECISIONS}
    assert len({w.summary for w in worded}) == len({w.detail for w in worded}) == len(DECISIONS)


@pytest.mark.parametrize("decision", ["unknown_species", "out_of_domain"])
def test_no_rejection_wording_claims_a_probability(decision):
    words = words_for(identification(decision))
    for text in (words.summary, words.detail, words.candidates_heading, words.similar_heading):
        assert "%" not in text
        assert "likely" not in text.lower()
    assert "not a match" in words.candidates_heading


def test_unknown_species_names_the_closest_species_by_its_closest_photo_similarity():
    """One similarity scale: the species' closest enrolled photo (as the photo gallery shows),
    not the species score the candidates are ranked by."""
    assert words_for(identification("unknown_species")).detail == (
        "It looks most like Conus textile (similarity 0.54), but not closely enough to name it."
    )


def test_out_of_domain_names_nothing():
    assert words_for(identification("out_of_domain")).detail == (
        "Nothing in the collection is close."
    )


def test_uncertain_lists_the_likely_species_and_none_of_these():
    detail = words_for(identification("uncertain")).detail
    assert detail == (
        "No species is likely enough to name; the most likely are Conus textile (48 %), "
        "Conus marmoreus (30 %) and Cypraea tigris (7 %), and it may be none of them (15 %)."
    )


def test_uncertain_leaves_out_unlikely_species():
    answer = identification("uncertain", none_probability=0.005)
    odds = (0.4, 0.02, 0.01)
    answer["candidates"] = [dict(c, probability=p) for c, p in zip(CANDIDATES, odds, strict=True)]
    assert words_for(answer).detail == (
        "No species is likely enough to name; the most likely is Conus textile (40 %)."
    )


@pytest.mark.parametrize(("decision", "taxon"), [("genus", "Genus Conus"), ("family", "Family")])
def test_genus_and_family_name_the_closest_species_with_its_probability(decision, taxon):
    detail = words_for(identification(decision)).detail
    assert detail.startswith(taxon)
    assert "the most likely species is Conus textile (48 %)" in detail


def test_species_mentions_a_likely_runner_up():
    detail = words_for(identification("species")).detail
    assert detail.startswith("The next most likely is Conus marmoreus (30 %)")
    lone = identification("species", candidates=CANDIDATES[:1])
    assert words_for(lone).detail == "Compare with the most similar enrolled photos to confirm."


def test_headings_differ_between_a_match_and_a_rejection():
    assert headings("species")[0] == "Most likely species"
    assert headings("unknown_species")[0] == "Closest species (not a match)"


def test_explain_works_without_candidates():
    for decision in DECISIONS:
        assert explain(decision, []).endswith(".")
