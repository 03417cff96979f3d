"""Checks on output files made before long work starts, so a bad path fails in one line."""

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
