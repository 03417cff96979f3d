"""``shellid evaluate``: closed-set, few-shot and open-set figures of a model against the frozen
backbone and a logistic probe, on the same splits; ``--json`` and an HTML ``--report``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TextIO

from ._collection import check_model_option, settings_from
from ._options import add_model_options

HELP = "measure a model on DATA/<species>/*.jpg against the frozen backbone and a logistic probe"


def _shots(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--shots {text!r}: expected numbers such as 1,5"
        ) from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("--shots needs positive numbers such as 1,5")
    return values


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"{value} must be between 0 and 1 (exclusive)")
    return value


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from index.config import IndexSettings

    parser.add_argument(
        "data", metavar="DATA", help="folder with one sub-folder of photos per species"
    )
    parser.add_argument(
        "--model",
        metavar="MODEL.pt",
        help="trained model to measure (default: the frozen backbone)",
    )
    parser.add_argument(
        "--shots", type=_shots, default=(1, 5), metavar="K,K", help="K for K-shot (default: 1,5)"
    )
    parser.add_argument(
        "--episodes",
        type=_positive,
        default=600,
        help="few-shot episodes per K (default: %(default)s)",
    )
    parser.add_argument(
        "--n-way", type=_positive, default=5, help="N of N-way episodes (default: 5)"
    )
    parser.add_argument(
        "--json", metavar="FILE", help="write every figure as JSON (keys: docs/evaluation.md)"
    )
    parser.add_argument("--report", metavar="DIR", help="write an HTML report with plots into DIR")
    parser.add_argument(
        "--group-regex",
        metavar="REGEX",
        help="regex on file names whose (?P<group>...) names one specimen or track, or a preset "
        "(specimen, track, image); no group is split across train and test (default: each "
        "image is its own group)",
    )
    parser.add_argument(
        "--classes",
        default="all",
        metavar="WHICH",
        help="species to evaluate: all, novel / base (not / only those the model was trained or "
        "validated on), NAME,NAME,... or @FILE (default: all)",
    )
    parser.add_argument(
        "--test-fraction",
        type=_fraction,
        default=0.3,
        help="share of each species' groups held out as test queries (default: 0.3)",
    )
    parser.add_argument(
        "--unknown-fraction",
        type=_fraction,
        default=0.3,
        help="share of species never enrolled, for the open-set figures (default: 0.3)",
    )
    parser.add_argument(
        "--ood",
        nargs="+",
        default=[],
        metavar="DIR",
        help="folders of off-domain photos (drawings, rocks, ...) scored as queries",
    )
    parser.add_argument(
        "--max-ood-images",
        type=_positive,
        default=500,
        help="photos sampled from each --ood folder (default: %(default)s)",
    )
    add_model_options(
        parser,
        IndexSettings,
        ["target_recall"],
        help={"target_recall": "known-species recall the open-set thresholds are calibrated for"},
    )
    parser.add_argument(
        "--bootstrap", type=_positive, default=1000, help="bootstrap resamples (default: 1000)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of every split (default: 0)")
    parser.add_argument(
        "--cache-dir",
        metavar="DIR",
        help="embedding cache (default: $SHELLID_CACHE_DIR or ~/.cache/shellid)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def print_summary(figures: dict, out: TextIO | None = None) -> None:
    """The side-by-side table of the report, as text."""
    from index.workflows.evaluation.report import summary_rows

    out = out or sys.stdout

    methods = list(figures["methods"])
    rows = summary_rows(figures)
    width = max(len(label) for label, _ in rows) + 2
    col = max(22, *(len(v) + 2 for _, values in rows for v in values))
    print(f"{'':{width}}" + "".join(f"{m:>{col}}" for m in methods), file=out)
    for label, values in rows:
        print(f"{label:{width}}" + "".join(f"{v:>{col}}" for v in values), file=out)
    if figures["model_is_frozen"]:
        print("(no --model: the model is the frozen backbone, reported as 'frozen')", file=out)


def run(args: argparse.Namespace) -> int:
    from index.workflows.evaluation import EvaluationConfig, evaluate_collection

    data = Path(args.data).expanduser()
    if not data.is_dir():
        raise FileNotFoundError(f"{data}: no such folder")
    check_model_option(args.model)
    for folder in args.ood:
        if not Path(folder).expanduser().is_dir():
            raise FileNotFoundError(f"--ood {folder}: no such folder")
    if args.classes.strip() in ("novel", "base") and not args.model:
        raise ValueError(
            f"--classes {args.classes.strip()} needs --model MODEL.pt (the species it was trained "
            "on); the frozen backbone was not trained on any species"
        )
    json_path = Path(args.json).expanduser() if args.json else None
    if json_path is not None:
        if json_path.is_dir():
            raise ValueError(f"--json {json_path} is a folder; give a file name")
        json_path.parent.mkdir(parents=True, exist_ok=True)
    config = EvaluationConfig(
        shots=args.shots,
        episodes=args.episodes,
        n_way=args.n_way,
        test_fraction=args.test_fraction,
        unknown_fraction=args.unknown_fraction,
        target_recall=settings_from(args).target_recall,
        group_pattern=args.group_regex,
        classes=args.classes,
        ood_dirs=tuple(str(Path(d).expanduser()) for d in args.ood),
        max_ood_images=args.max_ood_images,
        bootstrap_resamples=args.bootstrap,
        seed=args.seed,
    )
    log = (lambda _msg: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr))
    if args.model is None:
        log("no --model given: the model is the frozen backbone (compared with the logistic probe)")
    result = evaluate_collection(
        data,
        Path(args.model).expanduser() if args.model else None,
        config,
        cache_dir=args.cache_dir,
        progress=not args.quiet,
        log=log,
    )
    print_summary(result.figures)
    if json_path is not None:
        json_path.write_text(result.to_json(), encoding="utf-8")
        print(f"figures written to {json_path}")
    if args.report:
        from index.workflows.evaluation.report import write_report

        page = write_report(result, Path(args.report).expanduser(), json_path=json_path)
        print(f"report written to {page}")
    return 0
