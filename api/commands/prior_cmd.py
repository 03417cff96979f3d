"""``shellid prior``: a model file that carries the within-species covariance of a labelled
collection (its training data, or any reference collection of the same kind of photos), the
prior the index shrinks a new collection's own covariance toward (see index/whitening.py)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from ._options import add_model_options

HELP = "make a model file carry a within-species prior learned from a labelled collection"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ._models import PriorOptions

    add_model_options(parser, PriorOptions)


def attach_prior(
    model: Any, records: Sequence[Any], vectors: Any, components: int | None = None
) -> str:
    """Give ``model`` the within-species prior of ``records`` (``ImageRecord``) embedded as
    ``vectors``; returns a sentence for the user. Raises ValueError when no species has two
    specimens."""
    import numpy as np

    from index.whitening import PRIOR_COMPONENTS, WithinSpeciesPrior

    components = PRIOR_COMPONENTS if components is None else components
    species = np.array([r.species for r in records])
    specimens = np.array([f"{r.species}\x00{r.group}" for r in records])
    prior = WithinSpeciesPrior.of_collection(vectors, species, specimens, components)
    if prior is None:
        raise ValueError(
            "no species has photos of two specimens, so nothing says how specimens of one "
            "species vary (check --group-regex)"
        )
    model.within_species_prior = prior.to_arrays()
    return (
        f"within-species prior from {len(records)} photos of {len(set(species))} species "
        f"({prior.dof} degrees of freedom, {prior.basis.shape[1]} directions)"
    )


def run(args: argparse.Namespace) -> int:
    from embedder import Embedder, load_model
    from embedder.datasets import scan_collection
    from embedder.settings import EmbedderSettings

    from ._output import check_output
    from .embed_cmd import describe_errors

    if (args.components is not None and args.components < 1) or args.batch_size < 1:
        raise ValueError("--components and --batch-size must be ≥ 1")
    out = check_output(args.out, suffix=".pt")
    records = scan_collection(args.data, group_pattern=args.group_regex)
    model = load_model(args.model)
    options = EmbedderSettings.load().embedder_options()
    embedder = Embedder(model, batch_size=args.batch_size, **options)
    result = embedder.embed_paths([r.path for r in records], progress=not args.quiet)
    if result.errors:
        print(
            f"shellid: skipped {len(result.errors)} unreadable image(s): "
            f"{describe_errors(result.errors)}",
            file=sys.stderr,
        )
    by_path = {str(r.path): r for r in records}
    kept = [by_path[str(p)] for p in result.paths]
    try:
        described = attach_prior(model, kept, result.embeddings, args.components)
    except ValueError as exc:
        raise ValueError(f"{args.data}: {exc}") from None
    model.save(out)
    print(
        f"wrote {out}: {model.name} (fingerprint {model.fingerprint}, unchanged) with a "
        f"{described}. Use it with --model {out} for a new store, or "
        f"`shellid reindex --model {out}` for an existing one."
    )
    return 0
