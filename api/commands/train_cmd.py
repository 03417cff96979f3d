"""``shellid train``: contrastive training of the embedder on a folder of labelled photos."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from embedder.settings import BACKBONE_NAMES, HEAD_KINDS, LOSS_KINDS, TrainingConfig

HELP = "train the embedder on DATA/<species>/*.jpg (CPU-friendly default; writes MODEL.pt)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = TrainingConfig()
    parser.add_argument(
        "data", metavar="DATA", help="folder with one sub-folder of photos per species"
    )
    parser.add_argument(
        "--out", required=True, metavar="MODEL.pt", help="where to write the trained model"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    parser.add_argument(
        "--backbone",
        choices=BACKBONE_NAMES,
        default=d.backbone,
        help="pretrained backbone to start from: EfficientNet-Lite0/1/2 as trained "
        "(efficientnet_lite0: the first release's loading, for old models) (default: %(default)s)",
    )
    parser.add_argument(
        "--epochs", type=int, default=d.epochs, help="most epochs (default: %(default)s)"
    )
    parser.add_argument(
        "--views",
        type=int,
        default=d.views,
        help="augmented views cached per training photo, besides the clean one "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--unfreeze",
        type=int,
        default=d.unfreeze,
        help="last backbone stages to train; 0 trains the head only (default: %(default)s)",
    )
    parser.add_argument(
        "--embedding-dim",
        type=int,
        default=d.embedding_dim,
        help="embedding size (default: the backbone's feature size; 512 for linear/mlp heads)",
    )
    parser.add_argument(
        "--loss", choices=LOSS_KINDS, default=d.loss, help="metric loss (default: %(default)s)"
    )
    parser.add_argument(
        "--head", choices=HEAD_KINDS, default=d.head, help="projection head (default: %(default)s)"
    )
    parser.add_argument(
        "--lr", type=float, default=d.lr, help="head learning rate (default: %(default)s)"
    )
    parser.add_argument(
        "--tail-lr-scale",
        type=float,
        default=d.tail_lr_scale,
        help="learning rate of the unfrozen stages relative to --lr (default: %(default)s)",
    )
    parser.add_argument(
        "--val-fraction",
        type=float,
        default=d.val_fraction,
        help="share of species held out to pick the best epoch (at least 2; 0 = none) "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--patience",
        type=int,
        default=d.patience,
        help="stop after this many epochs without improvement (default: %(default)s)",
    )
    parser.add_argument(
        "--group-regex",
        default=d.group_pattern,
        metavar="REGEX",
        help="regex on file names whose (?P<group>...) names one specimen or track, or a preset: "
        "specimen, track, image (default: every photo is its own specimen)",
    )
    parser.add_argument(
        "--normalize-shells",
        action="store_true",
        help="crop studio shell photos to the object on black before embedding",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="feature cache folder (default: $SHELLID_CACHE_DIR/features, else "
        "~/.cache/shellid/features)",
    )
    parser.add_argument("--batch-size", type=int, default=d.batch_size, help="default: %(default)s")
    parser.add_argument(
        "--m-per-class",
        type=int,
        default=d.m_per_class,
        help="photos of each species per batch (default: %(default)s)",
    )
    parser.add_argument("--seed", type=int, default=d.seed, help="default: %(default)s")
    parser.add_argument(
        "--device", default=d.device, help="auto, cpu or cuda (default: %(default)s)"
    )
    parser.add_argument(
        "--no-prior",
        dest="prior",
        action="store_false",
        help="do not store the training data's within-species prior in the model "
        "(see shellid prior)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from embedder.training import TrainingConfig, train_collection

    from ._output import check_output

    data = Path(args.data).expanduser()
    if not data.is_dir():
        raise FileNotFoundError(f"DATA {data} is not a folder")
    out = check_output(args.out, suffix=".pt", overwrite=args.overwrite)
    config = TrainingConfig(
        backbone=args.backbone,
        unfreeze=args.unfreeze,
        head=args.head,
        embedding_dim=args.embedding_dim,
        loss=args.loss,
        epochs=args.epochs,
        lr=args.lr,
        tail_lr_scale=args.tail_lr_scale,
        views=args.views,
        m_per_class=args.m_per_class,
        batch_size=args.batch_size,
        val_fraction=args.val_fraction,
        patience=args.patience,
        seed=args.seed,
        normalize_shells=args.normalize_shells,
        group_pattern=args.group_regex,
        device=args.device,
    )
    result = train_collection(
        data, config, out=out, cache_dir=args.cache_dir, progress=not args.quiet
    )
    metrics = result.metrics
    model = result.model
    if args.prior:  # the model carries how specimens of one species vary in its training data
        from embedder.datasets import scan_collection
        from embedder.training import embed_cached

        from .prior_cmd import attach_prior

        records = scan_collection(data, group_pattern=args.group_regex)
        vectors, kept, _ = embed_cached(
            model,
            [r.path for r in records],
            args.unfreeze,
            cache_dir=args.cache_dir,
            device=next(model.parameters()).device,
            progress=not args.quiet,
        )
        by_path = {str(r.path): r for r in records}
        try:
            described = attach_prior(model, [by_path[str(p)] for p in kept], vectors)
        except ValueError as exc:
            print(f"shellid: the model carries no within-species prior: {exc}", file=sys.stderr)
        else:
            model.save(out)
            print(f"{out} carries a {described}")
    print(
        f"saved {out} ({model.name}, {model.dim}-d, fingerprint {model.fingerprint}, "
        f"best epoch {result.best_epoch} of {metrics['epochs_run']})"
    )
    if metrics.get("val_1shot") is not None:
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
        print("no validation species (--val-fraction 0): the last epoch was kept")
    print(f"log {result.files['log']}, curves {result.files['curves']}")
    return 0
