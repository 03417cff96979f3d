"""Identification answers in plain words: the ONE wording source for the web page (which shows
the API's words verbatim), the HTTP API and the ``shellid identify`` CLI.

Every decision gets a headline (:func:`summarize`), a one-sentence detail (:func:`explain`) and
headings for the candidate list and the photo gallery (:func:`headings`), all consistent with
what is shown under them: when the answer is a rejection (``unknown_species``,
``out_of_domain``) the candidates are the *closest* species with their similarity, never a
probability of being right, and no rejection wording gives a species a percentage. A
placement (the genus, else family, the species most likely belongs to: index.placement) is
said with its own probability and rank: "probably a new Conus (genus, 80 %)".

"similarity" is always the cosine similarity of the query to an enrolled photo (for a species:
its closest photo), the one scale the page, the CLI and the CSV show.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from index.names import display_name as species_display


def percent(probability: float) -> str:
    """``0.942`` -> ``94 %``; never claims certainty: ``> 99 %`` and ``< 1 %`` at the ends."""
    if probability > 0.99:
        return "> 99 %"
    if 0 < probability < 0.01:
        return "< 1 %"
    return f"{round(100 * probability)} %"


def similarity(score: float) -> str:
    """``0.5412`` -> ``similarity 0.54`` (cosine similarity, not a probability)."""
    return f"similarity {score:.2f}"


def _field(item: Any, name: str, default: Any = None) -> Any:
    if isinstance(item, dict):
        return item.get(name, default)
    return getattr(item, name, default)


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def placed(placement: Any) -> str:
    """``{rank: genus, name: Conus, probability: 0.8}`` -> ``Conus (genus, 80 %)``."""
    name = species_display(_field(placement, "name"))
    probability = percent(float(_field(placement, "probability")))
    return f"{name} ({_field(placement, 'rank')}, {probability})"


def summarize(
    decision: str,
    species: str | None,
    genus: str | None,
    family: str | None,
    confidence: float,
    subject: str = "shell",
    placement: Any = None,
) -> str:
    """The headline for a decision: 'Conus textile, 94 %', 'Probably genus Conus — species
    uncertain', 'Not a species in this collection — probably a new Conus (genus, 80 %)',
    'This does not look like a shell'. ``placement``: the answer's placement (or None)."""
    if decision == "species" and species:
        return f"{species_display(species)}, {percent(confidence)}"
    if decision == "out_of_domain":
        return f"This does not look like {_article(subject)} {subject}"
    if decision == "unknown_species":
        if placement:
            return f"Not a species in this collection — probably a new {placed(placement)}"
        return "Not a species in this collection"
    if decision == "genus" and genus:
        headline = f"Probably genus {species_display(genus)} — species uncertain"
    elif decision == "family" and family:
        headline = f"Probably family {species_display(family)} — genus and species uncertain"
    else:
        headline = "Uncertain — several species are possible"
    taxon = genus if decision == "genus" else family if decision == "family" else None
    if placement and _field(placement, "name") != taxon:
        headline += f"; probably {_article(_field(placement, 'name'))} {placed(placement)}"
    return headline


def _named(candidate: Any) -> str:
    """``Conus textile (48 %)``; the name alone when the probability is missing."""
    name = species_display(_field(candidate, "species"))
    probability = _field(candidate, "probability")
    return f"{name} ({percent(probability)})" if probability is not None else name


def _and(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def explain(
    decision: str,
    candidates: Sequence[Any] = (),
    *,
    genus: str | None = None,
    family: str | None = None,
    confidence: float = 0.0,
    none_probability: float | None = None,
) -> str:
    """One sentence of detail under the headline, for every decision.

    ``candidates``: ranked objects or dicts with ``species``, ``score`` and ``probability``
    (None on rejections); ``genus`` / ``family`` / ``confidence``: the named taxon and its
    probability; ``none_probability``: the probability of none of the enrolled species."""
    best = candidates[0] if candidates else None
    if decision == "out_of_domain":
        return "Nothing in the collection is close."
    if decision == "unknown_species":
        if best is None:
            return "No enrolled species is close enough to name it."
        return (
            f"It looks most like {species_display(_field(best, 'species'))} "
            f"({similarity(float(_field(best, 'similarity', 0.0) or 0.0))}), but not closely "
            "enough to name it."
        )
    if decision in ("genus", "family") and (genus if decision == "genus" else family):
        taxon = species_display(genus if decision == "genus" else family)
        sentence = f"{decision.capitalize()} {taxon} is {percent(confidence)} likely"
        if best is not None:
            sentence += f"; the most likely species is {_named(best)}"
        return sentence + "."
    if decision == "species":
        runner_up = candidates[1] if len(candidates) > 1 else None
        p = _field(runner_up, "probability") if runner_up is not None else None
        if p is not None and p >= 0.05:
            return (
                f"The next most likely is {_named(runner_up)}; compare with the enrolled photos "
                "to confirm."
            )
        return "Compare with the most similar enrolled photos to confirm."
    # uncertain (or a genus / family answer without its name)
    top = [c for c in candidates[:3] if _field(c, "probability") is not None]
    top = top[:1] + [c for c in top[1:] if _field(c, "probability") >= 0.05]  # no "(0 %)"
    if not top:
        return "No species is likely enough to name."
    sentence = (
        f"No species is likely enough to name; the most likely are {_and([_named(c) for c in top])}"
        if len(top) > 1
        else f"No species is likely enough to name; the most likely is {_named(top[0])}"
    )
    if none_probability is not None and none_probability >= 0.01:
        sentence += f", and it may be none of them ({percent(none_probability)})"
    return sentence + "."


def headings(decision: str) -> tuple[str, str]:
    """(candidate list heading, photo gallery heading) for a decision."""
    if decision == "out_of_domain":
        return "Closest species (not a match)", "Nearest photos in the collection (not a match)"
    if decision == "unknown_species":
        return "Closest species (not a match)", "Closest photos in the collection, for comparison"
    return "Most likely species", "Most similar photos in the collection"


@dataclass(frozen=True)
class Wording:
    """Everything said about one answer."""

    summary: str
    detail: str
    candidates_heading: str
    similar_heading: str


def words_for(result: Any, subject: str = "shell") -> Wording:
    """The wording of an :class:`index.results.Identification` (or anything with its fields;
    the index already leaves probabilities out of rejections)."""
    decision = _field(result, "decision")
    candidates = [
        {
            "species": _field(c, "species"),
            "score": float(_field(c, "score", 0.0)),
            "probability": _field(c, "probability"),
            "similarity": _field(c, "similarity"),
        }
        for c in (_field(result, "candidates") or [])
    ]
    none_probability = _field(result, "none_probability")
    candidates_heading, similar_heading = headings(decision)
    return Wording(
        summary=summarize(
            decision,
            _field(result, "species"),
            _field(result, "genus"),
            _field(result, "family"),
            float(_field(result, "confidence", 0.0) or 0.0),
            subject,
            _field(result, "placement"),
        ),
        detail=explain(
            decision,
            candidates,
            genus=_field(result, "genus"),
            family=_field(result, "family"),
            confidence=float(_field(result, "confidence", 0.0) or 0.0),
            none_probability=none_probability,
        ),
        candidates_heading=candidates_heading,
        similar_heading=similar_heading,
    )
