"""``shellid train``: contrastive training of the embedder on a folder of labelled photos
(writes MODEL.pt), or on the photos a store holds (``--store``: installed in the store when
better)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ._options import add_model_options, load_config

HELP = (
    "train the embedder on DATA/<species>/*.jpg (writes MODEL.pt) or on a store's photos "
    "(--store DIR: installed there when better)"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from embedder.settings import TrainingConfig

    from ._models import TrainOptions

    add_model_options(parser, TrainOptions)
    add_model_options(
        parser.add_argument_group("training (embedder.settings.TrainingConfig)"), TrainingConfig
    )


class TrainUsageError(ValueError):
    """DATA and --store together, neither, or an option of the other mode."""


def run(args: argparse.Namespace) -> int:
    if args.data is not None and args.store is not None:
        raise TrainUsageError("give DATA or --store DIR, not both")
    if args.data is None and args.store is None:
        raise TrainUsageError(
            "give DATA (a folder with a sub-folder of photos per species) or --store DIR "
            "(train on the photos a store holds)"
        )
    if args.store is not None:
        if args.out is not None:
            raise TrainUsageError("--out is for training on DATA; --store installs the model")
        return run_on_store(args)
    if args.out is None:
        raise TrainUsageError("--out MODEL.pt is required when training on DATA")
    return run_on_folder(args)


def run_on_store(args: argparse.Namespace) -> int:
    """Train on the store's photos; print the report; 0 when installed, 1 when not."""
    from embedder.settings import EmbedderSettings, TrainingConfig
    from index.workflows.training import train_on_store

    from ._collection import open_collection

    config = load_config(TrainingConfig, args)
    collection = open_collection(args, need_model=False)
    features = args.cache_dir or EmbedderSettings.load().features_dir()
    report = train_on_store(collection, config, cache_dir=features, show_bars=not args.quiet)
    for line in report.lines():
        print(line)
    return 0 if report.installed else 1


def run_on_folder(args: argparse.Namespace) -> int:
    from embedder.settings import EmbedderSettings, TrainingConfig
    from embedder.training import train_collection

    from ._output import check_output

    data = Path(args.data).expanduser()
    if not data.is_dir():
        raise FileNotFoundError(f"DATA {data} is not a folder")
    out = check_output(args.out, suffix=".pt", overwrite=args.overwrite)
    config = load_config(TrainingConfig, args)
    features = args.cache_dir or EmbedderSettings.load().features_dir()
    result = train_collection(data, config, out=out, cache_dir=features, progress=not args.quiet)
    if args.prior:  # the model carries how specimens of one species vary in its training data
        add_prior(result.model, data, config, features, out, progress=not args.quiet)
    print_result(result, out)
    return 0


def add_prior(
    model: Any, data: Path, config: Any, features: Path, out: Path, progress: bool
) -> None:
    """Give the trained ``model`` the within-species prior of its training photos (embedded
    from the feature cache) and save it again; a collection without two specimens of a species
    leaves it without one, said in one line."""
    from embedder.datasets import scan_collection
    from embedder.training import embed_cached

    from .prior_cmd import attach_prior

    records = scan_collection(data, group_pattern=config.group_pattern)
    vectors, kept, _ = embed_cached(
        model,
        [r.path for r in records],
        config.unfreeze,
        cache_dir=features,
        device=next(model.parameters()).device,
        progress=progress,
    )
    by_path = {str(r.path): r for r in records}
    try:
        described = attach_prior(model, [by_path[str(p)] for p in kept], vectors)
    except ValueError as exc:
        print(f"shellid: the model carries no within-species prior: {exc}", file=sys.stderr)
    else:
        model.save(out)
        print(f"{out} carries a {described}")


def print_result(result: Any, out: Path) -> None:
    """The saved model, its validation figures against the frozen start, and the log files."""
    metrics, model = result.metrics, result.model
    print(
        f"saved {out} ({model.name}, {model.dim}-d, fingerprint {model.fingerprint}, "
        f"best epoch {result.best_epoch} of {metrics['epochs_run']})"
    )
    if metrics.get("val_top1") is not None:
        print(
            f"validation on {metrics['val_images']} held-out photos of the trained species: "
            f"top-1 {100 * metrics['val_top1']:.1f} % "
            f"(before training {100 * metrics['val_top1_before']:.1f} %)"
        )
    elif metrics.get("val_1shot") is not None:
        n_way = metrics["val_n_way"]
        five = metrics.get("val_5shot")
        five_text = (
            ""
            if five is None
            else (
                f"; {n_way}-way 5-shot {100 * five:.1f} % "
                f"(before {100 * metrics['val_5shot_before']:.1f} %)"
            )
        )
        print(
            f"validation on {len(metrics['val_classes'])} held-out species: {n_way}-way 1-shot "
            f"{100 * metrics['val_1shot']:.1f} ± {100 * metrics['val_1shot_ci95']:.1f} % "
            f"(before training {100 * metrics['val_1shot_before']:.1f} %){five_text}"
        )
    else:
        print("nothing held out for validation (--val-fraction 0): the last epoch was kept")
    print(f"log {result.files['log']}, curves {result.files['curves']}")
