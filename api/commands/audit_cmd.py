"""``shellid audit``: find problems in a labelled collection before enrolling or training on
it (duplicates, mislabels, off-domain images, outliers, unusable files). Reads only."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TextIO

from ._collection import check_model_option
from ._options import add_model_options, options_from

HELP = "find duplicates, likely mislabels, off-domain and unusable photos in DATA (changes nothing)"


def _threshold(low: float, high: float):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} must be between {low:g} and {high:g}")
        return value

    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from embedder.settings import EmbedderSettings

    parser.add_argument(
        "data", metavar="DATA", help="folder with one sub-folder of photos per species"
    )
    parser.add_argument(
        "--report", metavar="DIR", help="write an HTML page with thumbnails into DIR"
    )
    parser.add_argument("--csv", metavar="FILE", help="write one row per finding to FILE (CSV)")
    parser.add_argument(
        "--model",
        metavar="MODEL.pt",
        help="model for the embedding checks (default: frozen backbone)",
    )
    parser.add_argument(
        "--group-regex",
        metavar="REGEX",
        help="regex on file names whose (?P<group>...) names one specimen or track, or a preset "
        "(specimen, track, image): views or frames of one object are not near-duplicate findings",
    )
    parser.add_argument(
        "--duplicate-cosine",
        type=_threshold(0.5, 1.0),
        default=0.97,
        help="embedding cosine from which two photos are near duplicates (default: 0.97)",
    )
    parser.add_argument(
        "--off-domain-z",
        type=_threshold(1.0, 50.0),
        default=4.0,
        help="robust z-score of neighbour similarity below -Z marks off-domain images (default: 4)",
    )
    parser.add_argument(
        "--outlier-percentile",
        type=_threshold(50.0, 100.0),
        default=99.0,
        help="distance-to-species-centre percentile for outliers (default: 99)",
    )
    parser.add_argument(
        "--min-images", type=int, default=5, help="flag species with fewer images (default: 5)"
    )
    parser.add_argument(
        "--min-side",
        type=int,
        default=64,
        help="flag images with a shorter side in px (default: 64)",
    )
    add_model_options(
        parser, EmbedderSettings, ["cache_dir"], help={"cache_dir": "embedding cache folder"}
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def print_summary(result, out: TextIO | None = None, examples: int = 3) -> None:
    """Counts per group of findings, in the order to act on them (mislabels, the same photo
    under two species, off-domain, then quality), each with a few examples."""
    from index.workflows.audit import SEVERITIES
    from index.workflows.audit.findings import group_findings

    out = out or sys.stdout
    print(
        f"audited {result.images} images of {result.species} species in {result.root} "
        f"({result.embedded} embedded with {result.model}): {len(result.findings)} findings",
        file=out,
    )
    groups = group_findings(result.findings)
    if not groups:
        print("no problems found", file=out)
        return
    for group, rows in groups:
        parts = ", ".join(
            f"{n} {s}" for s in SEVERITIES if (n := sum(f.severity == s for f in rows))
        )
        kinds = ", ".join(sorted({f.kind for f in rows}))
        print(f"  {group.title}: {len(rows)} ({parts}) [{kinds}]", file=out)
        for finding in rows[:examples]:
            related = f" <-> {finding.related_path}" if finding.related_path else ""
            print(f"      {finding.path}{related}: {finding.detail}", file=out)


def run(args: argparse.Namespace) -> int:
    from embedder.settings import EmbedderSettings
    from index.workflows.audit import AuditConfig, audit_collection, write_audit_report, write_csv

    data = Path(args.data).expanduser()
    if not data.is_dir():
        raise FileNotFoundError(f"{data}: no such folder")
    check_model_option(args.model)
    if args.min_images < 1 or args.min_side < 1:
        raise ValueError("--min-images and --min-side must be at least 1")
    csv_path = Path(args.csv).expanduser() if args.csv else None
    if csv_path is not None and csv_path.is_dir():
        raise ValueError(f"--csv {csv_path} is a folder; give a file name")
    config = AuditConfig(
        near_duplicate_cosine=args.duplicate_cosine,
        off_domain_z=args.off_domain_z,
        outlier_percentile=args.outlier_percentile,
        min_images=args.min_images,
        min_side=args.min_side,
        group_pattern=args.group_regex,
    )
    result = audit_collection(
        data,
        Path(args.model).expanduser() if args.model else None,
        config,
        cache_dir=EmbedderSettings.load(options_from(args, EmbedderSettings)).cache_root(),
        progress=not args.quiet,
    )
    print_summary(result)
    if csv_path is not None:
        write_csv(result.findings, csv_path)
        print(f"findings written to {csv_path}")
    if args.report:
        page = write_audit_report(result, Path(args.report).expanduser())
        print(f"report written to {page}")
    return 0
