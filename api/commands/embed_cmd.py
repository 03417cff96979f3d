"""``shellid embed``: photos -> an ``.npz`` of L2-normalised embeddings with labels and paths."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ._options import add_model_options
from ._ray import add_ray_options

HELP = "embed photos (a DATA/<species>/ tree, folders or files) into an .npz file"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ._models import EmbedOptions

    add_model_options(parser, EmbedOptions)
    add_ray_options(parser, batch=False)


def collect_inputs(
    items: list[str], group_regex: str | None
) -> tuple[list[Path], list[str], list[str]]:
    """Image paths with their labels and groups from folders and files given on the command line."""
    from embedder.datasets import IMAGE_SUFFIXES, compile_group_pattern, group_of, scan_collection

    regex = compile_group_pattern(group_regex)
    found: dict[Path, tuple[str, str]] = {}

    def add_loose(path: Path) -> None:
        found.setdefault(path, ("", group_of(path.stem, regex)))

    for item in items:
        path = Path(item).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such file or folder")
        if path.is_file():
            add_loose(path)
            continue
        before = len(found)
        for child in sorted(path.iterdir()):
            if child.is_file() and child.suffix.lower() in IMAGE_SUFFIXES:
                add_loose(child)
        has_classes = any(
            sub.is_dir()
            and any(f.suffix.lower() in IMAGE_SUFFIXES for f in sub.iterdir() if f.is_file())
            for sub in path.iterdir()
            if not sub.name.startswith(".")
        )
        if has_classes:
            for record in scan_collection(path, group_pattern=group_regex):
                found.setdefault(record.path, (record.species, record.group))
        if len(found) == before:
            raise FileNotFoundError(
                f"{path}: no photos found (expected {path}/<species>/*.jpg or photos in the folder)"
            )
    paths = list(found)
    return paths, [found[p][0] for p in paths], [found[p][1] for p in paths]


def describe_errors(errors: dict[str, str], shown: int = 3) -> str:
    """``'a.jpg (reason); b.jpg (reason) and 4 more'`` for a one-line report."""
    parts = [f"{Path(p).name} ({why})" for p, why in list(errors.items())[:shown]]
    more = len(errors) - shown
    return "; ".join(parts) + (f" and {more} more" if more > 0 else "")


def run(args: argparse.Namespace) -> int:
    from embedder import Embedder, load_model, save_embeddings
    from embedder.settings import EmbedderSettings

    from ._output import check_output

    if args.batch_size < 1:
        raise ValueError("--batch-size must be ≥ 1")
    ray = None
    if args.ray:
        from ._ray import ray_options

        ray = ray_options(args, batch_size=args.batch_size)
    out = check_output(args.out, suffix=".npz")
    paths, labels, groups = collect_inputs(args.data, args.group_regex)
    model = load_model(args.model)
    settings = EmbedderSettings.load()
    embedder = Embedder(model, batch_size=args.batch_size, **settings.embedder_options())
    started = time.perf_counter()
    if ray is not None:
        from embedder.embedding import EmbeddingResult
        from index.workflows.ray.embed import embed_on_ray

        result = EmbeddingResult(
            *embed_on_ray(
                paths, args.model, embedder.fingerprint, ray, settings, progress=not args.quiet
            )
        )
    else:
        result = embedder.embed_paths(paths, progress=not args.quiet)
    seconds = time.perf_counter() - started
    if result.errors:
        print(
            f"shellid: skipped {len(result.errors)} unreadable image(s): "
            f"{describe_errors(result.errors)}",
            file=sys.stderr,
        )
    if not result.paths:
        raise ValueError(f"none of the {len(paths)} photo(s) could be read; nothing written")
    index = {p: i for i, p in enumerate(paths)}
    kept = [index[p] for p in result.paths]
    save_embeddings(
        out,
        result.embeddings,
        [labels[i] for i in kept],
        result.paths,
        fingerprint=embedder.fingerprint,
        groups=[groups[i] for i in kept],
    )
    species = len({labels[i] for i in kept} - {""})
    print(
        f"wrote {out}: {len(result.paths)} embeddings "
        f"({embedder.dim}-d, {species} labelled species) "
        f"with {model.name} (fingerprint {embedder.fingerprint}) in {seconds:.1f} s "
        f"({len(result.paths) / max(seconds, 1e-9):.1f} images/s)"
    )
    return 0
