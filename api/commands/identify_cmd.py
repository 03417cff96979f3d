"""``shellid identify``: name the species in photos, with calibrated confidence."""

from __future__ import annotations

import argparse
import json
import sys

from ..wording import words_for
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


def describe(result, files: list[str], subject: str = "shell") -> str:
    """Readable answer for one query, in the same words as the web page and the API."""
    words = words_for(result, subject)
    lines = [" + ".join(files) + (f"  ({len(files)} views)" if len(files) > 1 else "")]
    lines.append(f"  answer: {words.summary}")
    if words.detail:
        lines.append(f"  {words.detail}")
    if result.candidates:
        rows = []
        for i, c in enumerate(result.candidates, 1):
            p = c.probability
            rows.append(
                [
                    str(i),
                    display(c.species),
                    c.genus or "-",
                    c.family or "-",
                    "-" if p is None else f"{p:.3f}",
                    f"{c.score:.3f}",
                ]
            )
        if result.none_probability is not None:
            rows.append(["", "(none of these)", "", "", f"{result.none_probability:.3f}", ""])
        body = table(rows, ["#", "species", "genus", "family", "probability", "similarity"], {4, 5})
        lines.append(f"  {words.candidates_heading}:")
        lines += ["  " + line for line in body.splitlines()]
    if result.similar:
        near = ", ".join(
            f"{display(s.species)} {s.specimen_id} ({s.score:.2f})" for s in result.similar[:3]
        )
        lines.append(f"  {words.similar_heading.lower()}: {near}")
    if result.region:
        votes = ", ".join(f"{k} {v:.0%}" for k, v in result.region_votes.items())
        lines.append(f"  region (nearest specimens): {result.region}  [{votes}]")
    lines.append(f"  scores: unknown {result.unknown_score:.3f}, off-domain {result.ood_score:.3f}")
    return "\n".join(lines)


def _subject() -> str:
    """What the collection holds in the service's words ($SHELLID_SUBJECT, default shell)."""
    try:
        from ..settings import ServiceSettings

        return ServiceSettings().subject or "shell"
    except Exception:  # an unrelated bad setting must not stop identification
        return "shell"


def as_json(result, subject: str = "shell") -> dict:
    """The index's answer as JSON, with the wording of the API (summary, detail, headings)."""
    words = words_for(result, subject)
    answer = result.model_dump(mode="json")
    answer.update(
        summary=words.summary,
        detail=words.detail,
        candidates_heading=words.candidates_heading,
        similar_heading=words.similar_heading,
    )
    return answer


def run(args: argparse.Namespace) -> int:
    from embedder.intake import ImageIntakeError, load_image

    if args.top_k < 1:
        raise ValueError("--top-k must be at least 1")
    queries = [[f] for f in args.images] if args.each else [list(args.images)]
    if not args.each:  # one specimen: every photo must load before the model is loaded
        images_of = {f: load_image(f) for f in args.images}
    collection = open_collection(args)
    subject = _subject()
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
            print(json.dumps({"query": files, **as_json(result, subject)}))
        else:
            print(describe(result, files, subject))
    return status
