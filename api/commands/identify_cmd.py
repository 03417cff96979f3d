"""``shellid identify``: name the species in photos, with calibrated confidence.

Photos are files, folders or glob patterns. Answers are given per specimen: the photos given
are views of one specimen; with ``--group-regex`` the photos whose file names name the same
specimen are; with ``--each`` (the default for folders and patterns) every photo is.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from index.names import display_name as species_display

from ._collection import (
    add_decision_options,
    add_filter_options,
    add_model_option,
    add_store_option,
    add_threshold_options,
    add_top_k_option,
    open_collection,
    settings_from,
    store_uri,
    table,
    taxonomy_value,
)
from ._options import add_model_options
from ._server import add_server_option

HELP = "identify the species in photos, folders or patterns (one answer per specimen or photo)"
FORMATS = ("text", "json", "jsonl", "csv")
#: CSV columns before the taxonomy fields of the candidate; then probability, similarity (the
#: cosine similarity to the species' closest enrolled photo)
CSV_HEAD = [
    "query",
    "specimen",
    "photos",
    "decision",
    "answer",
    "confidence",
    "placement_rank",
    "placement",
    "placement_probability",
    "rank",
    "species",
]
CSV_TAIL = ["probability", "similarity", "error"]
TAXONOMY_FIRST = ("genus", "family", "region")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ._models import IdentifyOptions

    add_model_options(parser, IdentifyOptions, ["images"])
    grouping = parser.add_mutually_exclusive_group()
    add_model_options(grouping, IdentifyOptions, ["each", "group_regex"])
    add_top_k_option(parser)
    add_model_options(parser, IdentifyOptions, ["format", "json_", "output"])
    add_filter_options(parser)
    add_model_options(parser, IdentifyOptions, ["subset"])
    add_store_option(parser)
    add_server_option(parser)
    add_model_option(parser)
    add_threshold_options(parser)
    add_decision_options(parser)


def describe(result, files: list[str], subject: str = "shell", names=None) -> str:
    """Readable answer for one query, in the same words as the web page and the API.

    ``names``: enrolled photo id -> file name, to show the similar photos by name."""
    from ..wording import words_for

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
                    species_display(c.species),
                    c.genus or "-",
                    c.family or "-",
                    "-" if p is None else f"{p:.3f}",
                    "-" if c.similarity is None else f"{c.similarity:.3f}",
                ]
            )
        if result.none_probability is not None:
            rows.append(["", "(none of these)", "", "", f"{result.none_probability:.3f}", ""])
        body = table(rows, ["#", "species", "genus", "family", "probability", "similarity"], {4, 5})
        lines.append(f"  {words.candidates_heading}:")
        lines += ["  " + line for line in body.splitlines()]
    if result.similar:
        near = ", ".join(
            f"{species_display(s.species)} {photo_label(s, names)} ({s.score:.2f})"
            for s in result.similar[:3]
        )
        lines.append(f"  {words.similar_heading.lower()}: {near}")
    if result.region:
        votes = ", ".join(f"{k} {v:.0%}" for k, v in result.region_votes.items())
        lines.append(f"  region (nearest specimens): {result.region}  [{votes}]")
    lines.append(f"  scores: {scores_text(result)}")
    return "\n".join(lines)


#: how the text answer names the open-set scores, in its order (any other by its own name,
#: after these)
SCORE_WORDS = {"unknown": "unknown", "ood": "off-domain"}


def scores_text(result) -> str:
    """Every open-set score of the answer: ``unknown 0.123, off-domain 0.456`` and then the
    scores registered since, by name."""
    names = [*SCORE_WORDS, *(n for n in result.open_set_scores if n not in SCORE_WORDS)]
    return ", ".join(
        f"{SCORE_WORDS.get(name, name)} {result.open_set_score(name):.3f}" for name in names
    )


def photo_label(similar, names: dict[str, str] | None) -> str:
    """An enrolled photo as people know it: the path it was enrolled from (its source folder
    and file name), ``name (upload)`` for one sent to the service, else its id."""
    from index.results import UPLOAD_SOURCE

    name = (names or {}).get(similar.specimen_id, "")
    if not name:
        return similar.specimen_id
    source = getattr(similar, "source", "")
    if source == UPLOAD_SOURCE:
        return f"{name} ({UPLOAD_SOURCE})"
    return f"{source.rstrip('/')}/{name}" if source else name


def _subject(store: Any = None) -> str:
    """What the collection holds in the service's words ($SHELLID_SUBJECT, else the store's
    word, else shell: :mod:`api.subject`)."""
    from ..subject import resolve

    try:
        from ..settings import ServiceSettings

        override = ServiceSettings().subject
    except Exception:  # an unrelated bad setting must not stop identification
        override = None
    return resolve(override, store)


def read_subset_file(path: Path | None) -> list[str] | None:
    """The names of a ``--subset`` file (None without one); one line for a missing, unreadable
    or empty file."""
    if path is None:
        return None
    from index.taxa import read_subset

    try:
        names = read_subset(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or "not UTF-8 text"
        raise ValueError(f"--subset {path}: cannot read it ({reason})") from None
    if not names:
        raise ValueError(f"--subset {path}: names no taxon (one name per line)")
    return names


def check_filters(catalogue: Any, args: Any, subset: list[str] | None) -> None:
    """Refuse an unknown filter value or subset name before any photo is embedded (one line
    naming the closest known ones)."""
    if not (args.region or args.genus or args.family or subset is not None):
        return
    from index.taxa import check_known, subset_mask

    taxa = catalogue.taxa()
    check_known(taxa, args.region, args.genus, args.family)
    if subset is not None:
        subset_mask(taxa, subset)


def as_json(
    result,
    subject: str = "shell",
    taxonomy: dict[str, dict[str, str]] | None = None,
    names: dict[str, str] | None = None,
) -> dict:
    """The index's answer as JSON, with the wording of the API (summary, detail, headings),
    each candidate's full taxonomy as enrolled (``taxonomy``: species -> fields) and each
    similar photo's file name (``names``: id -> file name). Missing taxonomy is null."""
    from ..wording import words_for

    words = words_for(result, subject)
    answer = result.model_dump(mode="json", exclude={"timings_ms"})
    answer.update(
        summary=words.summary,
        detail=words.detail,
        candidates_heading=words.candidates_heading,
        similar_heading=words.similar_heading,
    )
    for candidate in answer["candidates"]:
        for key, value in (taxonomy or {}).get(candidate["species"], {}).items():
            if not candidate.get(key):
                candidate[key] = value
        for key in TAXONOMY_FIRST:
            candidate[key] = taxonomy_value(candidate.get(key, ""))
    for similar in answer["similar"]:
        similar["filename"] = taxonomy_value((names or {}).get(similar["specimen_id"], ""))
        for key in ("genus", "region", "source"):
            similar[key] = taxonomy_value(similar.get(key, ""))
    for key in ("species", "genus", "family", "region"):
        answer[key] = taxonomy_value(answer.get(key))
    return answer


def csv_rows(record: dict[str, Any], extra: list[str]) -> Iterator[dict[str, Any]]:
    """One CSV row per candidate of one answer (one row with ``error`` for a failed query)."""
    base = {
        "query": ";".join(record["query"]),
        "specimen": record.get("specimen", ""),
        "photos": len(record["query"]),
    }
    if "error" in record:
        yield base | {"error": record.get("message") or record["error"]}
        return
    named = record.get(record["decision"]) if record["decision"] in TAXONOMY_FIRST else None
    placement = record.get("placement") or {}
    base |= {
        "decision": record["decision"],
        "answer": named or record["species"] or "",
        "confidence": f"{record['confidence']:.4f}",
        "placement_rank": placement.get("rank", ""),
        "placement": placement.get("name", ""),
        "placement_probability": f"{placement['probability']:.4f}" if placement else "",
    }
    if not record["candidates"]:
        yield base
    for rank, c in enumerate(record["candidates"], 1):
        p = c.get("probability")
        yield base | {
            "rank": rank,
            "species": c["species"],
            **{k: c.get(k) or "" for k in (*TAXONOMY_FIRST, *extra)},
            "probability": "" if p is None else f"{p:.4f}",
            "similarity": "" if c.get("similarity") is None else f"{c['similarity']:.4f}",
        }


def write_answers(records: list[dict[str, Any]], fmt: str, out: TextIO) -> None:
    """Write answers (``as_json`` records plus ``query``/``specimen``) as json, jsonl or csv."""
    if fmt == "json":
        json.dump(records, out, indent=1)
        out.write("\n")
    elif fmt == "jsonl":
        for record in records:
            out.write(json.dumps(record) + "\n")
    elif fmt == "csv":
        extra = sorted(
            {
                k
                for r in records
                for c in r.get("candidates", [])
                for k in c
                if k not in {"species", "score", "probability", "similarity", *TAXONOMY_FIRST}
            }
        )
        columns = [*CSV_HEAD, *TAXONOMY_FIRST, *extra, *CSV_TAIL]
        writer = csv.DictWriter(out, columns, lineterminator="\n")
        writer.writeheader()
        for record in records:
            writer.writerows(csv_rows(record, extra))


def plan_queries(args: argparse.Namespace) -> list[tuple[str, list[Path]]]:
    """``[(specimen name, its photos)]`` from the arguments (missing paths fail here, before
    anything heavy is imported)."""
    from ._inputs import expand_photos, group_photos

    photos, expanded = expand_photos(args.images)
    if args.group_regex:
        return group_photos(photos, args.group_regex)
    if args.each or expanded:
        return [(p.stem, [p]) for p in photos]
    return [(photos[0].stem if len(photos) == 1 else "specimen", photos)]


class LocalAnswers:
    """Identification in this process: the store opened here, the model run from its cached
    ONNX export when there is one (:class:`index.workflows.models.LazyEmbedder`); the photos
    of ``first`` (the one specimen asked about) decoded before the model loads."""

    def __init__(
        self, args: argparse.Namespace, subset: list[str] | None, limits, first: list[Path] | None
    ) -> None:
        from index.workflows.imaging import query_image

        self.query_image = query_image
        self.limits = limits
        self.preloaded = [query_image(p, limits) for p in first] if first else None
        self.collection = open_collection(args, exported_model=True)
        check_filters(self.collection.catalogue, args, subset)
        self.subject = _subject(self.collection.store)
        self.taxonomy = self.collection.catalogue.enrolled_taxonomy()
        self.names = self.collection.catalogue.photo_names()

    def load(self, photos: list[Path]) -> list[Any]:
        if self.preloaded is not None:
            images, self.preloaded = self.preloaded, None
            return images
        return [self.query_image(p, self.limits) for p in photos]

    def identify(self, images: list[Any], **options: Any) -> Any:
        return self.collection.identify(images, **options)


def run(args: argparse.Namespace) -> int:
    if args.top_k is not None and args.top_k < 1:
        raise ValueError("--top-k must be at least 1")
    fmt, output = chosen_output(args)
    queries = plan_queries(args)
    subset = read_subset_file(args.subset)

    from ._inputs import unreadable_photos
    from ._server import RemoteAnswers

    settings = settings_from(args)
    limits = settings.intake_limits()
    refused = unreadable_photos([p for _, photos in queries for p in photos], limits)
    if len(queries) == 1 and refused:  # one specimen: refused before anything else loads
        raise next(iter(refused.values()))
    answers: LocalAnswers | RemoteAnswers | None = None
    if any(p not in refused for _, photos in queries for p in photos):
        answers = RemoteAnswers.start(args, store_uri(args)) or LocalAnswers(
            args, subset, limits, queries[0][1] if len(queries) == 1 else None
        )
    stream: TextIO = io.StringIO() if output else sys.stdout
    options = {"top_k": settings.top_k, "region": args.region, "genus": args.genus}
    options |= {"family": args.family, "subset": subset}
    records, status, answered = answer_all(queries, refused, answers, fmt, stream, options)
    if fmt in ("json", "csv"):
        write_answers(records, fmt, stream)
    if output is not None:
        assert isinstance(stream, io.StringIO)
        output.write_text(stream.getvalue(), encoding="utf-8")
        print(f"shellid: wrote {answered} answers to {output}", file=sys.stderr)
    return status


def chosen_output(args: argparse.Namespace) -> tuple[str, Path | None]:
    """``(format, file or None for stdout)``: ``--format``, else ``--json``, else the
    ``--output`` file's suffix, else text."""
    suffixes = {"text": ".txt", "json": ".json", "jsonl": ".jsonl", "csv": ".csv"}
    implied = {v: k for k, v in suffixes.items()}.get(Path(args.output or "").suffix.lower())
    fmt = args.format or ("jsonl" if args.json else implied or "text")
    if not args.output:
        return fmt, None
    from ._output import check_output

    return fmt, check_output(args.output, suffix=suffixes[fmt], option="--output")


def answer_all(
    queries: list[tuple[str, list[Path]]],
    refused: dict[Path, Exception],
    answers: Any,
    fmt: str,
    stream: TextIO,
    options: dict[str, Any],
) -> tuple[list[dict[str, Any]], int, int]:
    """Answer each specimen in turn: text and jsonl written as they come, every record kept
    for json and csv. Returns ``(records, exit status, answers given)``."""
    from tqdm import tqdm

    from embedder.intake import ImageIntakeError

    records: list[dict[str, Any]] = []
    status = answered = 0
    with tqdm(
        total=len(queries),
        desc="identifying",
        unit="specimen",
        file=sys.stderr,
        disable=len(queries) < 2 or not sys.stderr.isatty(),
        leave=False,
    ) as bar:
        for specimen, photos in queries:
            files = [str(p) for p in photos]
            bar.update(1)
            try:
                for photo in (p for p in photos if p in refused):
                    raise refused[photo]
                images = answers.load(photos)
            except ImageIntakeError as exc:
                status = 1
                record = {"query": files, "specimen": specimen}
                records.append(record | {"error": exc.code, "message": str(exc)})
                if fmt == "text":
                    print(f"shellid: error: {exc}", file=sys.stderr)
                elif fmt == "jsonl":
                    stream.write(json.dumps(records[-1]) + "\n")
                continue
            result = answers.identify(images, **options)
            answered += 1
            if fmt == "text":
                bar.clear()
                print(describe(result, files, answers.subject, answers.names), file=stream)
                continue
            record = {
                "query": files,
                "specimen": specimen,
                **as_json(result, answers.subject, answers.taxonomy, answers.names),
            }
            records.append(record)
            if fmt == "jsonl":  # streamed: a long batch shows answers as they come
                stream.write(json.dumps(record) + "\n")
                stream.flush()
    return records, status, answered
