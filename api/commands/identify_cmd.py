"""``shellid identify``: name the species in photos, with calibrated confidence."""

from __future__ import annotations

import argparse
import json
import sys

from ._collection import (
    add_filter_options,
    add_model_option,
    add_store_option,
    add_threshold_options,
    display,
    open_collection,
    table,
)

HELP = "identify the species in photos (several photos = views of one specimen, unless --each)"

DECISION_TEXT = {
    "species": "species",
    "genus": "genus only (species uncertain)",
    "family": "family only (genus uncertain)",
    "uncertain": "uncertain (close to enrolled species, none confidently)",
    "unknown_species": "unknown species (like the collection, but no enrolled species is close)",
    "out_of_domain": "out of domain (not like anything in the collection)",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="photo files")
    parser.add_argument(
        "--each", action="store_true", help="identify each photo on its own (default: one specimen)"
    )
    parser.add_argument("--top-k", type=int, default=5, help="candidates to show (default: 5)")
    parser.add_argument(
        "--json", action="store_true", help="one JSON object per query, one per line"
    )
    add_filter_options(parser)
    add_store_option(parser)
    add_model_option(parser)
    add_threshold_options(parser)


def describe(result, files: list[str]) -> str:
    """Readable answer for one query."""
    lines = [" + ".join(files) + (f"  ({len(files)} views)" if len(files) > 1 else "")]
    named = {"species": result.species, "genus": result.genus, "family": result.family}
    name = named.get(result.decision)
    verdict = DECISION_TEXT[result.decision]
    if name:
        verdict += f": {display(name)} (probability {result.confidence:.2f})"
    lines.append(f"  answer: {verdict}")
    if result.candidates:
        rows = [
            [
                str(i),
                display(c.species),
                c.genus,
                c.family or "-",
                f"{c.probability:.3f}",
                f"{c.score:.3f}",
            ]
            for i, c in enumerate(result.candidates, 1)
        ]
        body = table(rows, ["#", "species", "genus", "family", "probability", "similarity"], {4, 5})
        lines += ["  " + line for line in body.splitlines()]
    if result.similar:
        near = ", ".join(
            f"{display(s.species)} {s.specimen_id} ({s.score:.2f})" for s in result.similar[:3]
        )
        lines.append(f"  most similar enrolled photos: {near}")
    if result.region:
        votes = ", ".join(f"{k} {v:.0%}" for k, v in result.region_votes.items())
        lines.append(f"  region (nearest specimens): {result.region}  [{votes}]")
    lines.append(f"  scores: unknown {result.unknown_score:.3f}, off-domain {result.ood_score:.3f}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from embedder.intake import ImageIntakeError, load_image

    if args.top_k < 1:
        raise ValueError("--top-k must be at least 1")
    queries = [[f] for f in args.images] if args.each else [list(args.images)]
    if not args.each:  # one specimen: every photo must load before the model is loaded
        images_of = {f: load_image(f) for f in args.images}
    collection = open_collection(args)
    status = 0
    for files in queries:
        try:
            images = [images_of[f] for f in files] if not args.each else [load_image(files[0])]
        except ImageIntakeError as exc:
            status = 1
            if args.json:
                print(json.dumps({"query": files, "error": exc.code, "message": str(exc)}))
            else:
                print(f"shellid: error: {exc}", file=sys.stderr)
            continue
        result = collection.identify(
            images, top_k=args.top_k, region=args.region, genus=args.genus, family=args.family
        )
        if args.json:
            print(json.dumps({"query": files, **result.model_dump(mode="json")}))
        else:
            print(describe(result, files))
    return status
