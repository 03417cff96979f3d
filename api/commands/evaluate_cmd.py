"""``shellid evaluate``: closed-set, few-shot and open-set figures of a model against the frozen
backbone and a logistic probe, on the same splits; ``--json`` and an HTML ``--report``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TextIO

from ._collection import check_model_option, settings_from
from ._options import add_model_options, load_config

HELP = "measure a model on DATA/<species>/*.jpg against the frozen backbone and a logistic probe"


#: EvaluationConfig fields that are options (the others keep their defaults)
CONFIG_OPTIONS = (
    "shots",
    "episodes",
    "n_way",
    "group_pattern",
    "classes",
    "test_fraction",
    "unknown_fraction",
    "ood_dirs",
    "max_ood_images",
    "bootstrap_resamples",
    "seed",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from embedder.settings import EmbedderSettings
    from index.config import EvaluationConfig, IndexSettings

    from ._models import EvaluateOptions

    add_model_options(parser, EvaluateOptions, ["data", "model", "json_", "report"])
    add_model_options(parser, EvaluationConfig, CONFIG_OPTIONS, check=True)
    add_model_options(
        parser,
        IndexSettings,
        ["target_recall"],
        help={"target_recall": "known-species recall the open-set thresholds are calibrated for"},
    )
    add_model_options(
        parser, EmbedderSettings, ["cache_dir"], help={"cache_dir": "embedding cache folder"}
    )
    add_model_options(parser, EvaluateOptions, ["quiet"])


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
    from index.config import EvaluationConfig
    from index.workflows.evaluation import evaluate_collection

    data = Path(args.data).expanduser()
    if not data.is_dir():
        raise FileNotFoundError(f"{data}: no such folder")
    check_model_option(args.model)
    for folder in args.ood_dirs:
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
    settings = settings_from(args)
    config = load_config(
        EvaluationConfig,
        args,
        target_recall=settings.target_recall,
        ood_dirs=tuple(str(Path(d).expanduser()) for d in args.ood_dirs),
    )
    log = (lambda _msg: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr))
    if args.model is None:
        log("no --model given: the model is the frozen backbone (compared with the logistic probe)")
    result = evaluate_collection(
        data,
        Path(args.model).expanduser() if args.model else None,
        config,
        cache_dir=settings.cache_root(),
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
