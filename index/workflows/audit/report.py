"""The HTML page of ``shellid audit --report DIR``: findings grouped by kind with small JPEG
thumbnails written beside the page (``DIR/thumbs/``); self-contained, no scripts. The summary
links only the kinds that have a list on the page, and the page fits a 390 px phone screen
(tables scroll inside their own box)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from jinja2 import Environment, PackageLoader, select_autoescape
from PIL import Image

from embedder.intake import ImageIntakeError, load_image

from .findings import KINDS, SEVERITIES, summary_counts
from .runner import AuditResult

THUMB_SIDE = 160
MAX_ROWS_PER_KIND = 200


def write_thumbnail(path: str | Path, directory: Path, side: int = THUMB_SIDE) -> str | None:
    """Write a small JPEG of ``path`` into ``directory``; its file name, or None when the image
    cannot be read (a corrupt file gets no thumbnail)."""
    name = hashlib.sha1(str(path).encode()).hexdigest()[:16] + ".jpg"
    target = directory / name
    if target.is_file():
        return name
    try:
        image = load_image(path, min_side=1)
    except ImageIntakeError:
        return None
    image.thumbnail((side, side), Image.Resampling.LANCZOS)
    directory.mkdir(parents=True, exist_ok=True)
    image.save(target, "JPEG", quality=80)
    return name


def shown_path(path: str | Path, root: str | Path) -> str:
    """``path`` relative to the audited folder when it lies inside it (``species/photo.jpg``,
    short enough for a phone), else as given; the page keeps the full path in a tooltip."""
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return str(path)


def write_audit_report(result: AuditResult, directory: str | Path) -> Path:
    """Write ``index.html`` and ``thumbs/*.jpg`` into ``directory``; returns the page's path."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    thumbs_dir = out / "thumbs"
    sections = []
    shown: dict[str, int] = {}
    thumbs: dict[str, str] = {}
    for kind in KINDS:
        rows = [f for f in result.findings if f.kind == kind]
        if not rows:
            continue
        sections.append((kind, rows))
        shown[kind] = min(len(rows), MAX_ROWS_PER_KIND)
        for finding in rows[: shown[kind]]:
            for path in (finding.path, finding.related_path):
                if path and path not in thumbs and Path(path).is_file():
                    name = write_thumbnail(path, thumbs_dir)
                    if name:
                        thumbs[path] = f"thumbs/{name}"
    env = Environment(
        loader=PackageLoader("index.workflows.audit", "templates"),
        autoescape=select_autoescape(["html", "j2"]),
    )
    env.filters["shown_path"] = shown_path
    html = env.get_template("audit.html.j2").render(
        r=result,
        kinds=KINDS,
        severities=SEVERITIES,
        counts=summary_counts(result.findings),
        sections=sections,
        listed={kind for kind, _ in sections},
        shown=shown,
        thumbs=thumbs,
    )
    page = out / "index.html"
    page.write_text(html, encoding="utf-8")
    return page
