"""Photo arguments of the collection commands: files, folders (searched recursively) and
glob patterns, checked before anything heavy is imported, so a missing path fails at once."""

from __future__ import annotations

import glob
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from embedder.datasets import IMAGE_SUFFIXES, compile_group_pattern, group_of

_GLOB = re.compile(r"[*?\[]")


class InputsError(FileNotFoundError):
    """A photo argument that names nothing usable."""


def _images_under(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )


def expand_photos(items: Sequence[str]) -> tuple[list[Path], bool]:
    """``(photo files in argument order without repeats, whether a folder or glob was given)``.

    A file is taken as given (its content is checked when it is read); a folder gives every
    photo under it; a pattern such as ``'shells/*_A.jpg'`` (quoted, so the shell leaves it)
    gives the photos it matches. Raises :class:`InputsError` for a path that does not exist,
    a folder without photos or a pattern that matches none."""
    found: list[Path] = []
    expanded = False
    for item in items:
        path = Path(item).expanduser()
        if path.is_file():
            found.append(path)
        elif path.is_dir():
            expanded = True
            photos = _images_under(path)
            if not photos:
                kinds = ", ".join(sorted(IMAGE_SUFFIXES))
                raise InputsError(f"{item}: no photos in this folder ({kinds})")
            found += photos
        elif _GLOB.search(item):
            expanded = True
            matches = sorted(Path(m) for m in glob.glob(str(path), recursive=True))
            photos = [m for m in matches if m.is_file() and m.suffix.lower() in IMAGE_SUFFIXES]
            for folder in (m for m in matches if m.is_dir()):
                photos += _images_under(folder)
            if not photos:
                raise InputsError(f"{item}: no photo matches this pattern")
            found += photos
        elif path.exists():
            raise InputsError(f"{item}: not a file or folder")
        else:
            raise InputsError(f"{item}: file not found")
    unique: dict[Path, None] = {}
    for photo in found:
        unique.setdefault(photo, None)
    return list(unique), expanded


def group_photos(photos: Sequence[Path], group_regex: str | None) -> list[tuple[str, list[Path]]]:
    """``[(specimen, its photos)]`` in first-seen order: photos whose file names give the same
    specimen under ``group_regex`` (a regex or a preset such as ``specimen``) are views of
    one specimen; a name the pattern does not match is a specimen of its own."""
    regex = compile_group_pattern(group_regex)
    groups: dict[tuple[Path, str], tuple[str, list[Path]]] = {}
    for photo in photos:
        if regex is not None and regex.match(photo.stem):
            name = group_of(photo.stem, regex)
            key = (photo.parent, name)
        else:
            name, key = photo.stem, (photo, "")
        groups.setdefault(key, (name, []))[1].append(photo)
    return list(groups.values())


def unreadable_photos(photos: Sequence[Path], limits: Any) -> dict[Path, Exception]:
    """The photos that cannot be used, each with its :class:`embedder.intake.ImageIntakeError`,
    found from their headers alone (no pixel decoded, no model or store opened): empty files,
    files that are no image (a text file named .jpg), images too small, too large or too
    elongated. ``limits``: :class:`embedder.intake.IntakeLimits` (the decoding-cost limit is
    checked later, at the stored size). The full intake still runs when a photo is used."""
    from embedder.intake import ImageIntakeError, check_header, read_header

    header_limits = limits.model_copy(update={"max_cost": float("inf")})
    refused: dict[Path, Exception] = {}
    for photo in photos:
        try:
            data = photo.read_bytes()
            if not data:
                raise ImageIntakeError("empty", "the file is empty", str(photo))
            _, header = read_header(data, str(photo))
            check_header(header, header_limits, str(photo))
        except ImageIntakeError as exc:
            refused[photo] = exc
        except OSError as exc:
            refused[photo] = ImageIntakeError(
                "unreadable", f"cannot read file ({exc.strerror or exc})", str(photo)
            )
    return refused
