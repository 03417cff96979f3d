"""What the commands write: checks on output files made before long work starts (a bad path
fails in one line), and counts in words."""

from __future__ import annotations

import os
from pathlib import Path


class OutputPathError(ValueError):
    """An output path that cannot or should not be written."""


def check_output(
    path: str | Path, *, suffix: str, overwrite: bool = True, option: str = "--out"
) -> Path:
    """Return ``path`` after checking its suffix, that its folder can be created and written,
    and (unless ``overwrite``) that no file of that name exists yet."""
    path = Path(path).expanduser()
    if path.suffix.lower() != suffix:
        raise OutputPathError(f"{option} {path}: expected a {suffix} file name")
    if path.is_dir():
        raise OutputPathError(f"{option} {path} is a folder; give a file name ending in {suffix}")
    if path.exists() and not overwrite:
        raise OutputPathError(f"{option} {path} already exists; pass --overwrite to replace it")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputPathError(
            f"{option} {path}: cannot create folder {path.parent} ({exc.strerror or exc})"
        ) from None
    probe = path.parent / f".{path.name}.{os.getpid()}.probe"
    try:
        probe.write_bytes(b"")
    except OSError as exc:
        raise OutputPathError(
            f"{option} {path}: folder {path.parent} is not writable ({exc.strerror or exc})"
        ) from None
    finally:
        probe.unlink(missing_ok=True)
    return path


#: plurals that do not add an s
PLURALS = {"species": "species", "specimen": "specimens", "family": "families", "genus": "genera"}


def counted(count: int, noun: str) -> str:
    """``1 photo``, ``2 photos``, ``1 species``, ``3 families``."""
    if count == 1:
        return f"{count} {noun}"
    return f"{count} {PLURALS.get(noun, noun + 's')}"
