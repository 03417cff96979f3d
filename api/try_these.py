"""Photos kept back from a demo collection, for trying identification ("try these").

``shellid demo`` enrols all but one specimen of each species and records the specimens it
kept back in the store (``store_info`` key :data:`INFO_KEY`: species, specimen, photo paths).
The service lists them (``GET /v1/try-these``) and serves their photos, and the web page shows
them as a strip under the identify form. Only photos recorded there are ever served.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from index.catalogue import Catalogue

INFO_KEY = "try_these"
MEDIA_TYPES = {
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
    ".webp": "image/webp",
}


def record(collection: Any, items: list[dict[str, Any]]) -> None:
    """Store the kept-back specimens: ``[{"species", "specimen", "files": [path, ...]}]``."""
    clean = [
        {
            "species": str(item["species"]),
            "specimen": str(item["specimen"]),
            "files": [str(Path(f).resolve()) for f in item["files"]],
        }
        for item in items
    ]
    collection.store.write_info(**{INFO_KEY: clean})


def recorded(catalogue: Catalogue) -> list[dict[str, Any]]:
    """The kept-back specimens recorded in the store (empty when the demo did not make it)."""
    items = catalogue.store.info().get(INFO_KEY) or []
    if not isinstance(items, list):
        return []
    return [
        item
        for item in items
        if isinstance(item, dict) and item.get("species") and isinstance(item.get("files"), list)
    ]


def listing(catalogue: Catalogue) -> list[dict[str, Any]]:
    """What the page shows: each kept-back specimen with its taxonomy and photo URLs."""
    taxonomy = {s.species: s for s in catalogue.species()}
    out = []
    for index, item in enumerate(recorded(catalogue)):
        known = taxonomy.get(item["species"])
        out.append(
            {
                "species": item["species"],
                "specimen": item.get("specimen", ""),
                "genus": (known.genus if known else "") or None,
                "family": (known.family if known else "") or None,
                "enrolled": known is not None,
                "photos": [
                    {"name": Path(f).name, "url": f"/v1/try-these/{index}/{view}"}
                    for view, f in enumerate(item["files"])
                ],
            }
        )
    return out


def photo(catalogue: Catalogue, index: int, view: int) -> tuple[Path, str]:
    """``(path, media type)`` of one recorded photo; LookupError when there is none."""
    items = recorded(catalogue)
    if not 0 <= index < len(items) or not 0 <= view < len(items[index]["files"]):
        raise LookupError(f"no try-these photo {index}/{view}")
    path = Path(items[index]["files"][view])
    if not path.is_file():
        raise LookupError(f"try-these photo {path.name} is no longer at {path.parent}")
    return path, MEDIA_TYPES.get(path.suffix.lower(), "application/octet-stream")
