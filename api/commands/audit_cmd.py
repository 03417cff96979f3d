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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from embedder.settings import EmbedderSettings

    from ._models import AuditOptions

    fields = list(AuditOptions.model_fields)
    add_model_options(parser, AuditOptions, fields[:-1], check=True)
    add_model_options(
        parser, EmbedderSettings, ["cache_dir"], help={"cache_dir": "embedding cache folder"}
    )
    add_model_options(parser, AuditOptions, ["quiet"])


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
