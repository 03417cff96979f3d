"""Labelled image collections: ``root/<Genus_species>/*.jpg`` folders, an optional
``taxonomy.csv``, group-aware splits (no specimen or track in two splits) and class-level
splits (base / validation / novel species) for few-shot work.
"""

from __future__ import annotations

import csv
import random
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp", ".heic", ".heif"}
)
TAXONOMY_FILE = "taxonomy.csv"

#: Regex presets for ``group_pattern``: the part of the file stem naming one physical object.
GROUP_PRESETS: dict[str, str] = {
    # Genus_species_<specimen>_<view>  ->  Genus_species_<specimen>
    "specimen": r"^(?P<group>.+)_[^_]+$",
    # fish_<track>_<frame>  ->  fish_<track>
    "track": r"^(?P<group>.+)_[^_]+$",
    # every image is its own group
    "image": r"^(?P<group>.+)$",
}


class DatasetError(ValueError):
    """A collection folder that cannot be read as ``root/<species>/<images>``."""


@dataclass(frozen=True)
class ImageRecord:
    """One labelled image of a collection."""

    path: Path
    species: str
    group: str
    taxonomy: dict[str, str] = field(default_factory=dict, compare=False, hash=False)

    @property
    def genus(self) -> str:
        return self.taxonomy.get("genus") or genus_of(self.species)

    @property
    def family(self) -> str:
        return self.taxonomy.get("family", "")


def genus_of(species: str) -> str:
    """Genus from a ``Genus_species`` (or ``Genus species``) name; '' when it has no genus part."""
    parts = re.split(r"[_\s]+", species.strip())
    return parts[0] if len(parts) >= 2 and parts[0][:1].isupper() else ""


def load_taxonomy(path: Path) -> dict[str, dict[str, str]]:
    """Read ``taxonomy.csv`` (a ``species`` column plus genus, family, region, ...)."""
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or "species" not in [f.strip().lower() for f in reader.fieldnames]:
            raise DatasetError(f"{path}: needs a 'species' column (found {reader.fieldnames})")
        table: dict[str, dict[str, str]] = {}
        for row in reader:
            clean = {(k or "").strip().lower(): (v or "").strip() for k, v in row.items()}
            name = clean.pop("species")
            if name:
                table[name.replace(" ", "_")] = {k: v for k, v in clean.items() if v}
    return table


def compile_group_pattern(pattern: str | None) -> re.Pattern[str] | None:
    """Compile a group regex or preset name; it must have a ``group`` named group or one group."""
    if pattern is None:
        return None
    regex = re.compile(GROUP_PRESETS.get(pattern, pattern))
    if "group" not in regex.groupindex and regex.groups < 1:
        raise DatasetError(
            f"group pattern {pattern!r} needs a capture group (ideally (?P<group>...))"
        )
    return regex


def group_of(stem: str, regex: re.Pattern[str] | None) -> str:
    """The group id of a file stem; the stem itself when no pattern is set or it does not match."""
    if regex is None:
        return stem
    match = regex.match(stem)
    if not match:
        return stem
    return match.group("group") if "group" in regex.groupindex else match.group(1)


def scan_collection(
    root: str | Path,
    group_pattern: str | None = None,
    taxonomy_csv: str | Path | None = None,
    min_images: int = 1,
) -> list[ImageRecord]:
    """List the images of ``root/<species>/*`` with labels, groups and taxonomy.

    ``group_pattern`` is a regex (or a key of :data:`GROUP_PRESETS`) applied to file stems;
    ``taxonomy_csv`` defaults to ``root/taxonomy.csv`` when present. Species with fewer than
    ``min_images`` images are left out. Raises :class:`DatasetError` when nothing usable is found.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder")
    csv_path = Path(taxonomy_csv) if taxonomy_csv else root / TAXONOMY_FILE
    taxonomy = load_taxonomy(csv_path) if csv_path.is_file() else {}
    regex = compile_group_pattern(group_pattern)
    records: list[ImageRecord] = []
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        species = class_dir.name
        files = sorted(
            p for p in class_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
        )
        if len(files) < min_images:
            continue
        info = dict(taxonomy.get(species, {}))
        info.setdefault("genus", genus_of(species))
        for path in files:
            # Groups are namespaced by species so equal stems in two folders never merge.
            records.append(
                ImageRecord(path, species, f"{species}/{group_of(path.stem, regex)}", info)
            )
    if not records:
        raise DatasetError(
            f"{root}: no images found; expected folders root/<Genus_species>/*.jpg "
            f"(formats: {', '.join(sorted(IMAGE_SUFFIXES))})"
        )
    return records


def images_in(paths: Iterable[str | Path]) -> list[Path]:
    """Expand files and folders (recursively) into a sorted list of image files."""
    found: list[Path] = []
    for item in paths:
        path = Path(item)
        if path.is_dir():
            found += sorted(
                p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            )
        else:
            found.append(path)
    return found


def group_split(
    records: Sequence[ImageRecord],
    test_fraction: float = 0.3,
    seed: int = 0,
    min_train_groups: int = 1,
) -> tuple[list[ImageRecord], list[ImageRecord]]:
    """Split each species by group: no group (specimen, track) lands in both parts.

    Per species, ``round(test_fraction * groups)`` groups go to test, keeping at least
    ``min_train_groups`` for training; a species with a single group stays in training.
    """
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError("test_fraction must be in [0, 1)")
    rng = random.Random(seed)
    by_species: dict[str, dict[str, list[ImageRecord]]] = defaultdict(lambda: defaultdict(list))
    for record in records:
        by_species[record.species][record.group].append(record)
    train: list[ImageRecord] = []
    test: list[ImageRecord] = []
    for species in sorted(by_species):
        groups = sorted(by_species[species])
        rng.shuffle(groups)
        n_test = min(round(test_fraction * len(groups)), len(groups) - min_train_groups)
        n_test = max(n_test, 0)
        for index, group in enumerate(groups):
            (test if index < n_test else train).extend(by_species[species][group])
    return train, test


def shots_split(
    records: Sequence[ImageRecord], shots: int, seed: int = 0
) -> tuple[list[ImageRecord], list[ImageRecord]]:
    """Take ``shots`` images per species from distinct groups as support; the rest of the
    species' images, minus every group used in the support, become queries."""
    rng = random.Random(seed)
    by_species: dict[str, dict[str, list[ImageRecord]]] = defaultdict(lambda: defaultdict(list))
    for record in records:
        by_species[record.species][record.group].append(record)
    support: list[ImageRecord] = []
    query: list[ImageRecord] = []
    for species in sorted(by_species):
        groups = sorted(by_species[species])
        rng.shuffle(groups)
        chosen = groups[:shots] if len(groups) > shots else groups[: max(1, len(groups) - 1)]
        picked: list[ImageRecord] = []
        for group in chosen:
            picked.append(rng.choice(by_species[species][group]))
        while len(picked) < shots:  # fewer groups than shots: more images of the chosen groups
            extra = [r for g in chosen for r in by_species[species][g] if r not in picked]
            if not extra:
                break
            picked.append(rng.choice(extra))
        support += picked
        for group in groups:
            if group not in chosen:
                query += by_species[species][group]
    return support, query


def class_split(
    species: Sequence[str],
    fractions: tuple[float, float, float] = (0.6, 0.2, 0.2),
    seed: int = 0,
) -> tuple[list[str], list[str], list[str]]:
    """Split species into base / validation / novel lists (disjoint, deterministic)."""
    if abs(sum(fractions) - 1.0) > 1e-6 or min(fractions) < 0:
        raise ValueError("fractions must be non-negative and sum to 1")
    names = sorted(species)
    random.Random(seed).shuffle(names)
    n_base = round(fractions[0] * len(names))
    n_val = round(fractions[1] * len(names))
    return (
        sorted(names[:n_base]),
        sorted(names[n_base : n_base + n_val]),
        sorted(names[n_base + n_val :]),
    )


def select_species(records: Sequence[ImageRecord], species: Iterable[str]) -> list[ImageRecord]:
    wanted = set(species)
    return [r for r in records if r.species in wanted]
