"""The taxa a collection knows (regions, genera, families, species) and the checks of a query's
filters against them: an unknown filter value is answered with the closest known ones, and a
subset (a list of species, genus or family names) becomes the species it covers.

Light: numpy and the standard library only, so the command line can check a subset file
against a listing without the engine.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from .errors import InvalidQueryError
from .names import display_name

if TYPE_CHECKING:
    from .enrolled import EnrolledRows

_REGION_SPLIT = re.compile(r"\s*[;,|]\s*")
#: how many known values an error names at most
SHOWN = 8


def region_names(text: str) -> list[str]:
    """Region names of a ``;``, ``,`` or ``|`` separated list, as spelt (see
    :func:`index.enrolled.regions_of` for the lower-cased set the filter compares)."""
    return [part for part in _REGION_SPLIT.split(text or "") if part]


def _key(name: str) -> str:
    """How filter values are compared: case, spaces and underscores do not matter."""
    return re.sub(r"[\s_]+", " ", str(name)).strip().lower()


@dataclass(frozen=True)
class KnownSpecies:
    species: str
    name: str  #: as shown (index.names.display_name)
    genus: str
    family: str
    regions: list[str]


@dataclass(frozen=True)
class KnownTaxa:
    """What a collection's filters can name, each list sorted."""

    regions: list[str] = field(default_factory=list)
    genera: list[str] = field(default_factory=list)
    families: list[str] = field(default_factory=list)
    species: list[KnownSpecies] = field(default_factory=list)


def known_taxa(rows: EnrolledRows) -> KnownTaxa:
    """The regions, genera, families and species of the enrolled rows."""
    species = []
    spelt: dict[str, str] = {}  # lower-cased region -> its first spelling met
    for s, name in enumerate(rows.species):
        texts = [rows.taxonomy.get(name, {}).get("region", "")]
        texts += rows.region_texts(name)
        own: dict[str, str] = {}
        for text in texts:
            for part in region_names(text):
                own.setdefault(part.lower(), spelt.setdefault(part.lower(), part))
        species.append(
            KnownSpecies(
                name,
                display_name(name),
                rows.genus[s],
                rows.family[s],
                sorted(own.values(), key=str.lower),
            )
        )
    return KnownTaxa(
        regions=sorted(spelt.values(), key=str.lower),
        genera=sorted({g for g in rows.genus if g}, key=str.lower),
        families=sorted({f for f in rows.family if f}, key=str.lower),
        species=species,
    )


def closest(value: str, known: Iterable[str], n: int = 3) -> list[str]:
    """The known values most like ``value`` (difflib, case-insensitive), best first."""
    by_key: dict[str, str] = {}
    for name in known:
        by_key.setdefault(_key(name), name)
    found = difflib.get_close_matches(_key(value), list(by_key), n=n, cutoff=0.6)
    return [by_key[k] for k in found]


def unknown_value(kind: str, value: str, known: Sequence[str]) -> InvalidQueryError:
    """The one-line error for a filter value the collection does not know: the closest known
    values, else the first of them (all when few)."""
    near = closest(value, known)
    if near:
        hint = "closest known: " + ", ".join(repr(k) for k in near)
    elif known:
        shown = ", ".join(repr(k) for k in list(known)[:SHOWN])
        more = f" and {len(known) - SHOWN} more" if len(known) > SHOWN else ""
        hint = f"known: {shown}{more}"
    else:
        hint = "the collection names none"
    return InvalidQueryError(f"unknown {kind} {value!r} ({hint})")


def check_known(
    taxa: KnownTaxa,
    region: str | None = None,
    genus: str | None = None,
    family: str | None = None,
) -> None:
    """Raise :func:`unknown_value`'s error for the first filter value the collection does not
    know (a region list passes when one of its regions is known)."""
    if region and not {_key(r) for r in region_names(region)} & {_key(r) for r in taxa.regions}:
        raise unknown_value("region", region.strip(), taxa.regions)
    if genus and _key(genus) not in {_key(g) for g in taxa.genera}:
        raise unknown_value("genus", genus.strip(), taxa.genera)
    if family and _key(family) not in {_key(f) for f in taxa.families}:
        raise unknown_value("family", family.strip(), taxa.families)


def subset_mask(taxa: KnownTaxa, names: Sequence[str]) -> np.ndarray:
    """Species covered by ``names`` (each a species, as stored or as shown, a genus or a
    family); an unknown name raises :func:`unknown_value`'s error. Blank names are skipped."""
    species = taxa.species
    mask = np.zeros(len(species), bool)
    wanted = [n.strip() for n in names if n and n.strip()]
    if not wanted:
        raise InvalidQueryError("the subset names no taxon")
    for name in wanted:
        key = _key(name)
        hit = np.array(
            [
                key in {_key(s.species), _key(s.name), _key(s.genus), _key(s.family)}
                for s in species
            ],
            bool,
        )
        if not hit.any():
            everything = [s.name for s in species] + taxa.genera + taxa.families
            raise unknown_value("taxon in the subset", name, everything)
        mask |= hit
    return mask


def read_subset(text: str) -> list[str]:
    """Names of a subset file: one per line; blank lines and ``#`` comments skipped."""
    text = text.removeprefix("\ufeff")
    return [
        line.split("#", 1)[0].strip() for line in text.splitlines() if line.split("#", 1)[0].strip()
    ]
