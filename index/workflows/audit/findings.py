"""Audit findings: one row per problem (kind, severity, path, species, detail, related path)."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

#: severity levels, most serious first.
SEVERITIES = ("error", "warning", "info")

#: every kind of finding with a one-line explanation (shown in the HTML page and the docs).
KINDS: dict[str, str] = {
    "corrupt": "the file cannot be decoded as a photo (truncated, corrupt, empty, unsupported)",
    "tiny": "the image is too small to identify reliably",
    "exact_duplicate": "byte-identical copy of another file (sha256)",
    "near_duplicate": "visually the same photo as another one (perceptual hash or embedding)",
    "mislabel": "its nearest neighbours all belong to one other species",
    "off_domain": "unlike the rest of the collection (drawing, text, X-ray, other subject?)",
    "outlier": "far from the centre of its species",
    "grayscale": "no colour (scan, X-ray or black-and-white photo in a colour collection?)",
    "cmyk": "CMYK file (print export); colours may shift when converted to RGB",
    "few_images": "species with too few images or specimens to enrol or validate reliably",
}

CSV_COLUMNS = ("kind", "severity", "path", "species", "detail", "related_path")

DUPLICATE_KINDS = ("exact_duplicate", "near_duplicate")


@dataclass(frozen=True)
class ActionGroup:
    """Findings a curator handles together, in the order to act on them."""

    key: str  #: anchor on the page
    title: str
    meaning: str  #: what the findings mean, in one sentence
    kinds: tuple[str, ...]
    across_species: bool | None = None  #: duplicates only: across (True) or within (False)

    def holds(self, finding: Finding) -> bool:
        if finding.kind not in self.kinds:
            return False
        if self.across_species is None:
            return True
        return (finding.severity == "error") == self.across_species  # across = error


#: What a curator should act on first: wrong labels, the same photo under two species, photos
#: that are not of the subject, then the quality of single files and species.
ACTION_GROUPS: tuple[ActionGroup, ...] = (
    ActionGroup(
        "mislabel",
        "Possibly mislabelled",
        "Its nearest photos all belong to one other species: check which species it shows.",
        ("mislabel",),
    ),
    ActionGroup(
        "duplicates-across-species",
        "The same photo under two species",
        "A copy (byte-identical or visually the same) is filed under another species: one of "
        "the two labels is wrong.",
        DUPLICATE_KINDS,
        across_species=True,
    ),
    ActionGroup(
        "off_domain",
        "Not like the rest of the collection",
        "A drawing, text, an X-ray or another subject? Remove it or move it out.",
        ("off_domain",),
    ),
    ActionGroup(
        "corrupt",
        "Cannot be read",
        "The file is not a usable photo (truncated, corrupt, empty or an unsupported format).",
        ("corrupt",),
    ),
    ActionGroup(
        "few_images",
        "Species with too few photos",
        "Too few photos or specimens to enrol the species or to check it reliably.",
        ("few_images",),
    ),
    ActionGroup(
        "duplicates-within-species",
        "Duplicates within a species",
        "Copies of a photo under the same species: harmless for naming, but they count twice.",
        DUPLICATE_KINDS,
        across_species=False,
    ),
    ActionGroup(
        "outlier",
        "Far from the rest of its species",
        "An unusual view, a juvenile or a wrong label? Worth a look when there is time.",
        ("outlier",),
    ),
    ActionGroup(
        "tiny",
        "Too small",
        "The photo is too small to identify reliably.",
        ("tiny",),
    ),
    ActionGroup(
        "grayscale",
        "No colour",
        "A scan, X-ray or black-and-white photo in a colour collection?",
        ("grayscale",),
    ),
    ActionGroup(
        "cmyk",
        "CMYK files",
        "A print export: colours may shift when it is converted to RGB.",
        ("cmyk",),
    ),
)


def action_rank(finding: Finding) -> int:
    """Position of the finding's group in :data:`ACTION_GROUPS`."""
    return next(i for i, group in enumerate(ACTION_GROUPS) if group.holds(finding))


def group_findings(findings: Iterable[Finding]) -> list[tuple[ActionGroup, list[Finding]]]:
    """The non-empty :data:`ACTION_GROUPS` with their findings (in :func:`sort_findings`
    order), in the order to act on them."""
    ordered = sort_findings(findings)
    return [
        (group, rows) for group in ACTION_GROUPS if (rows := [f for f in ordered if group.holds(f)])
    ]


@dataclass(frozen=True)
class Finding:
    """One problem found in a collection; ``related_path`` names the other file involved."""

    kind: str
    severity: str
    path: str
    species: str
    detail: str
    related_path: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown finding kind {self.kind!r}")
        if self.severity not in SEVERITIES:
            raise ValueError(f"unknown severity {self.severity!r}")


def sort_findings(findings: Iterable[Finding]) -> list[Finding]:
    """In the order to act on them (:data:`ACTION_GROUPS`), then most serious first, by kind
    (in :data:`KINDS` order), species and path."""
    order = {k: i for i, k in enumerate(KINDS)}
    return sorted(
        findings,
        key=lambda f: (
            action_rank(f),
            SEVERITIES.index(f.severity),
            order[f.kind],
            f.species,
            f.path,
        ),
    )


def write_csv(findings: Sequence[Finding], path: str | Path) -> Path:
    """Write findings as CSV with the columns of :data:`CSV_COLUMNS`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for finding in findings:
            writer.writerow(asdict(finding))
    return path


def read_csv(path: str | Path) -> list[Finding]:
    """Read a findings CSV written by :func:`write_csv`."""
    with Path(path).open(newline="", encoding="utf-8") as handle:
        return [Finding(**row) for row in csv.DictReader(handle)]
