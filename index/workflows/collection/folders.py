"""Folders of photos as enrollment batches: a class-folder tree ``root/<Genus_species>/*.jpg``
(one batch per species, with the specimen each photo shows and the species' taxonomy), or
every photo under one folder as one species."""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ...errors import InvalidQueryError

#: one species' batch: ``(species, files, specimen per file, taxonomy)``
FolderBatch = tuple[str, list[Path], list[str], dict[str, str]]


def enrolled_from(files: Sequence[str | Path]) -> str:
    """The ``source`` recorded for photos enrolled from ``files`` when none is given: the
    folder holding them (absolute; their common folder when several), so that the source and
    a photo's file name give its path (photos sent to the service: ``UPLOAD_SOURCE`` of
    :mod:`index.results`)."""
    if not files:
        return ""
    return os.path.commonpath([str(Path(f).resolve().parent) for f in files])


def folder_batches(
    root: Path,
    species: str | None,
    group_pattern: str | None,
    taxonomy_csv: str | Path | None,
    taxonomy: Mapping[str, Any] | None,
) -> list[FolderBatch]:
    """``(species, files, specimen per file, taxonomy)`` for each species under ``root``
    (or every image under ``root`` as ``species``)."""
    from embedder.datasets import compile_group_pattern, group_of, images_in, scan_collection

    if species is not None:
        if not root.exists():
            raise InvalidQueryError(f"{root}: no such file or folder")
        files = images_in([root])
        if not files:
            raise InvalidQueryError(f"{root}: no images found")
        regex = compile_group_pattern(group_pattern)
        return [(species, files, [group_of(f.stem, regex) for f in files], dict(taxonomy or {}))]
    by_species: dict[str, list] = defaultdict(list)
    for record in scan_collection(root, group_pattern=group_pattern, taxonomy_csv=taxonomy_csv):
        by_species[record.species].append(record)
    return [
        (
            name,
            [r.path for r in records],
            [r.group.split("/", 1)[-1] for r in records],
            dict(records[0].taxonomy) | dict(taxonomy or {}),
        )
        for name, records in by_species.items()
    ]
