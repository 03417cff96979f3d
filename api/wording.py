"""Identification answers in plain words, as the web page and clients show them."""

from __future__ import annotations


def display_name(name: str | None) -> str:
    """``Conus_textile`` -> ``Conus textile``."""
    return (name or "").replace("_", " ").strip()


def percent(probability: float) -> str:
    """``0.942`` -> ``94 %``; never claims certainty: ``> 99 %`` and ``< 1 %`` at the ends."""
    if probability > 0.99:
        return "> 99 %"
    if 0 < probability < 0.01:
        return "< 1 %"
    return f"{round(100 * probability)} %"


def summarize(
    decision: str,
    species: str | None,
    genus: str | None,
    family: str | None,
    confidence: float,
    subject: str = "shell",
) -> str:
    """One sentence for a decision: 'Conus textile, 94 %', 'Probably genus Conus — species
    uncertain', 'Not a species in this collection', 'This does not look like a shell'."""
    if decision == "species" and species:
        return f"{display_name(species)}, {percent(confidence)}"
    if decision == "genus" and genus:
        return f"Probably genus {display_name(genus)} — species uncertain"
    if decision == "family" and family:
        return f"Probably family {display_name(family)} — genus and species uncertain"
    if decision == "uncertain":
        return "Uncertain — several species are possible"
    if decision == "out_of_domain":
        article = "an" if subject[:1].lower() in "aeiou" else "a"
        return f"This does not look like {article} {subject}"
    return "Not a species in this collection"
