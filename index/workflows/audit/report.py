"""The HTML page of ``shellid audit --report DIR``: findings in the order a curator should act
on them (:data:`~index.workflows.audit.findings.ACTION_GROUPS`: mislabels, the same photo under
two species, off-domain photos, then the quality of files and species), each group a
``<details>`` with its count (long groups folded), small JPEG thumbnails written beside the page
(``DIR/thumbs/``); self-contained, no scripts, readable on a 390 px phone (the summary is a list,
findings are cards there).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

from jinja2 import Environment, PackageLoader, select_autoescape
from PIL import Image

from embedder.intake import ImageIntakeError, load_image

from .findings import SEVERITIES, group_findings
from .runner import AuditResult

THUMB_SIDE = 160
MAX_ROWS_PER_KIND = 200
#: groups with more findings than this start folded
FOLD_AFTER = 10


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
    groups = []
    thumbs: dict[str, str] = {}
    for group, rows in group_findings(result.findings):
        severity = Counter(f.severity for f in rows)
        groups.append(
            {
                "group": group,
                "rows": rows,
                "shown": min(len(rows), MAX_ROWS_PER_KIND),
                "open": len(rows) <= FOLD_AFTER,
                "severities": [(s, severity[s]) for s in SEVERITIES if severity[s]],
            }
        )
        for finding in rows[:MAX_ROWS_PER_KIND]:
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
        r=result, groups=groups, thumbs=thumbs, fold_after=FOLD_AFTER
    )
    page = out / "index.html"
    page.write_text(html, encoding="utf-8")
    return page
