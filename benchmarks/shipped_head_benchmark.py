"""Would a trained head shipped with the package beat the frozen default on unseen kinds of species?

    nice -n 19 python benchmarks/shipped_head_benchmark.py --json /tmp/shipped-head.json

Leave-domain-out: a head is trained with :func:`embedder.training.train_embedder` on broad
data (birds, fish, shells), but never on the kind of species it is scored on:

* ``birds-novel`` (the second half of ``birds-cub-base100``'s species in name order, as in
  ``profile_benchmark.py``) is scored with a head trained on the first half of the birds
  + ``shells-zhang8`` + ``fish4k-23``;
* ``fish4k-23`` (all 23 species, split by track) is scored with a head trained on all of
  ``birds-cub-base100`` + ``shells-zhang8`` (no fish seen).

The training photos are ``--train-per-class`` per species (spread over specimens/tracks);
15 % of the training species (any domain) pick the best epoch. Candidates (``--unfreeze``):
``0`` trains the residual head only (the cheapest file to ship), ``2`` is the default recipe
of ``shellid train`` (two unfrozen stages). The first row is the frozen default
(``tf_efficientnet_lite0``), the baseline.

Vectors are the clean-view embeddings of the photos through the training feature cache
(:func:`embedder.training.embed_cached`: what :class:`embedder.Embedder` gives up to float16
rounding; the baseline is embedded the same way), mapped as the index maps every vector
(Hellinger, ``IdentifierConfig.feature_power``) before scoring. Scores are those of
``profile_benchmark.py``: 5-way 1-shot and 5-shot, all-way 5-shot top-1, Recall@1 and
unknown-species AUROC. Speed (``img/s``, ``1-photo ms``: ONNX Runtime from JPEG files, the
birds model against the baseline in turns) and identify p50 (a store of the birds-novel
species, 5 photos each) are measured as there. ``train s`` is the training time of each
fold (features cached beforehand), ``MB`` the size of ``MODEL.pt`` and of the weights a
package would have to add (head, and unfrozen stages when there are any).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DEFAULT_SHARED = REPO.parent / "shared" / "datasets"
#: domain -> (folder under --shared, group preset)
DOMAINS = {
    "birds": ("birds-cub-base100", None),
    "fish": ("fish4k-23", "track"),
    "shells": ("shells-zhang8", "specimen"),
}


@dataclass(frozen=True)
class Fold:
    """One scored set and the training data its head may see (never the same kind)."""

    name: str
    domain: str
    half: int | None  # which half of the domain's species is scored (None: all)
    train: tuple[str, ...]  # "domain" or "domain/0" (the first half of its species)


FOLDS = (
    Fold("birds-novel", "birds", 1, ("birds/0", "shells", "fish")),
    Fold("fish4k-23", "fish", None, ("birds", "shells")),
)
RECIPES = {0: "head only (unfreeze 0, residual)", 2: "default recipe (unfreeze 2)"}


@dataclass
class Photos:
    paths: list[Path]
    labels: list[str]
    groups: list[str]

    def half(self, which: int | None) -> Photos:
        if which is None:
            return self
        species = sorted(set(self.labels))
        kept = set(species[len(species) // 2 :] if which else species[: len(species) // 2])
        rows = [i for i, s in enumerate(self.labels) if s in kept]
        return Photos(
            [self.paths[i] for i in rows],
            [self.labels[i] for i in rows],
            [self.groups[i] for i in rows],
        )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    parser.add_argument("--shared", type=Path, default=DEFAULT_SHARED)
    parser.add_argument("--per-class", type=int, default=20, help="scored photos per species")
    parser.add_argument(
        "--train-per-class", type=int, default=20, help="training photos per species"
    )
    parser.add_argument("--unfreeze", default="0", help="candidates, comma-separated: 0, 2")
    parser.add_argument("--views", type=int, default=0, help="augmented views per training photo")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--episodes", type=int, default=600)
    parser.add_argument("--trials", type=int, default=20, help="all-way 5-shot draws")
    parser.add_argument("--splits", type=int, default=10, help="unknown-species halves")
    parser.add_argument("--timing", type=int, default=48, help="photos timed per row")
    parser.add_argument("--single", type=int, default=10, help="one-photo embeddings timed")
    parser.add_argument("--rounds", type=int, default=3, help="timing rounds (best kept)")
    parser.add_argument(
        "--identify", type=int, default=20, help="identify requests timed (0: none)"
    )
    parser.add_argument("--features", type=Path, help="feature cache (default: shellid's)")
    parser.add_argument("--out", type=Path, default=Path("/tmp/shellid-shipped-head"))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    missing = [f for f, _ in DOMAINS.values() if not (args.shared / f).is_dir()]
    if missing:
        parser.error(
            f"{', '.join(missing)} not found under {args.shared}: this benchmark needs the "
            "shared datasets (birds-cub-base100, fish4k-23, shells-zhang8); see --shared"
        )
    return args


def load_domains(shared: Path, per_class: int) -> dict[str, Photos]:
    """``per_class`` photos per species of every domain, spread over specimens/tracks (the
    same picks as ``profile_benchmark.py``; a larger count keeps the smaller one's picks)."""
    from benchmarks.backbone_benchmark import photos

    return {
        domain: Photos(*photos(shared / folder, group, per_class, seed=0))
        for domain, (folder, group) in DOMAINS.items()
    }


def training_records(domains: dict[str, Photos], parts: tuple[str, ...]) -> list:
    """Image records of ``parts`` ("birds/0": first half of the species), each species
    named ``domain:species`` so that two domains never share a class."""
    from embedder.datasets import ImageRecord

    records = []
    for part in parts:
        domain, _, half = part.partition("/")
        chosen = domains[domain].half(int(half) if half else None)
        records += [
            ImageRecord(path, f"{domain}:{label}", f"{domain}:{group}")
            for path, label, group in zip(chosen.paths, chosen.labels, chosen.groups, strict=True)
        ]
    return records


def weights_mb(model, unfreeze: int) -> float:
    """MB of what a package would add to the frozen backbone: the head (and the unfrozen tail)."""
    import torch

    from embedder import stages

    state = {f"head.{k}": v for k, v in model.head.state_dict().items()}
    if unfreeze:
        tail = stages.tail(model.backbone, unfreeze)
        state |= {f"tail.{k}": v for k, v in tail.state_dict().items()}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getbuffer().nbytes / 1e6


def train_fold(fold: Fold, unfreeze: int, domains: dict, args: argparse.Namespace) -> dict:
    """Train the head of ``fold`` with ``unfreeze`` stages; its model path and costs."""
    from embedder.settings import TrainingConfig
    from embedder.training import split_validation_classes, train_embedder

    records = training_records(domains, fold.train)
    config = TrainingConfig(unfreeze=unfreeze, views=args.views, epochs=args.epochs)
    train, val = split_validation_classes(records, config.val_fraction, config.seed)
    out = args.out / f"{fold.name}-u{unfreeze}.pt"
    print(
        f"training for {fold.name} (unfreeze {unfreeze}): {len(train)} photos of "
        f"{len({r.species for r in train})} species from {', '.join(fold.train)}; "
        f"{len({r.species for r in val})} species pick the epoch",
        flush=True,
    )
    started = time.perf_counter()
    result = train_embedder(
        train, val, config, out=out, cache_dir=args.features, progress=False, log=print
    )
    return {
        "model": str(out),
        "train_s": time.perf_counter() - started,
        "best_epoch": result.best_epoch,
        "val_1shot": result.metrics["val_1shot"],
        "train_photos": len(train),
        "file_mb": out.stat().st_size / 1e6,
        "weights_mb": weights_mb(result.model, unfreeze),
    }


def score_fold(model, unfreeze: int, fold: Fold, domains: dict, args: argparse.Namespace) -> dict:
    """Scores of ``model`` on the scored photos of ``fold``, Hellinger-mapped and unmapped."""
    from benchmarks.profile_benchmark import HELLINGER, scores
    from embedder.training import embed_cached
    from index.prototypes import power_normalise

    scored = domains[fold.domain].half(fold.half)
    vectors, kept, _ = embed_cached(
        model, scored.paths, unfreeze, cache_dir=args.features, progress=False
    )
    row_of = {p: i for i, p in enumerate(scored.paths)}
    labels = [scored.labels[row_of[p]] for p in kept]
    groups = [scored.groups[row_of[p]] for p in kept]
    return {
        "mapped": scores(power_normalise(vectors, HELLINGER), labels, groups, args),
        "unmapped": scores(vectors, labels, groups, args),
    }


def run(args: argparse.Namespace) -> dict:
    from benchmarks.profile_benchmark import identify_p50, speed
    from embedder import EmbeddingModel, default_model

    eval_domains = load_domains(args.shared, args.per_class)
    train_domains = load_domains(args.shared, args.train_per_class)
    baseline = default_model()
    report: dict = {
        "args": {k: str(v) for k, v in vars(args).items()},
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "rows": [{"label": "tf_lite0 (default, frozen)", "folds": {}}],
    }
    for fold in FOLDS:
        report["rows"][0]["folds"][fold.name] = score_fold(baseline, 0, fold, eval_domains, args)
    timing = [p for d in eval_domains.values() for p in d.paths][::7][: args.timing]
    for unfreeze in [int(u) for u in args.unfreeze.split(",")]:
        row: dict = {"label": RECIPES.get(unfreeze, f"unfreeze {unfreeze}"), "folds": {}}
        for fold in FOLDS:
            trained = train_fold(fold, unfreeze, train_domains, args)
            model = EmbeddingModel.load(trained["model"]).eval()
            row["folds"][fold.name] = trained | score_fold(
                model, unfreeze, fold, eval_domains, args
            )
        first = EmbeddingModel.load(row["folds"][FOLDS[0].name]["model"]).eval()
        (base_rate, base_ms), (rate, ms) = speed(
            [baseline, first], timing, args.single, args.rounds
        )
        row |= {"images_per_s": rate, "ratio": rate / base_rate, "single_ms": ms}
        report["rows"][0] |= {"images_per_s": base_rate, "ratio": 1.0, "single_ms": base_ms}
        if args.identify:
            birds = eval_domains["birds"].half(1)
            data = {"birds-novel": (None, birds.paths, birds.labels, birds.groups)}
            p50 = identify_p50([None, row["folds"][FOLDS[0].name]["model"]], data, args.identify)
            report["rows"][0]["identify_p50_ms"], row["identify_p50_ms"] = p50
        report["rows"].append(row)
        if args.json:
            args.json.write_text(json.dumps(report, indent=2))
    return report


COLUMNS = (
    ("1shot", "1-shot"),
    ("5shot", "5-shot"),
    ("all_way_5shot", "all-way 5-shot"),
    ("recall@1", "R@1"),
    ("unknown_auroc", "unk. AUROC"),
)


def _cells(scores: dict) -> list[str]:
    return [
        f"{scores[c]:.3f}" if c == "unknown_auroc" else f"{100 * scores[c]:.1f}" for c, _ in COLUMNS
    ]


def print_table(report: dict, key: str = "mapped") -> None:
    head = ["candidate"]
    for fold in FOLDS:
        head += [f"{fold.name} {COLUMNS[0][1]}", *(c[1] for c in COLUMNS[1:])]
    head += [
        "img/s",
        "× base",
        "1-photo ms",
        "identify p50 ms",
        "train s",
        "MODEL.pt MB",
        "added MB",
    ]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for row in report["rows"]:
        folds = [row["folds"][f.name] for f in FOLDS]
        cells = [row["label"]] + [c for f in folds for c in _cells(f[key])]
        cells += [
            f"{row['images_per_s']:.1f}" if "images_per_s" in row else "",
            f"{row['ratio']:.2f}" if "ratio" in row else "",
            f"{row['single_ms']:.0f}" if "single_ms" in row else "",
            f"{row['identify_p50_ms']:.0f}" if "identify_p50_ms" in row else "",
            " / ".join(f"{f['train_s']:.0f}" for f in folds) if "train_s" in folds[0] else "—",
            f"{folds[0]['file_mb']:.1f}" if "file_mb" in folds[0] else "—",
            f"{folds[0]['weights_mb']:.1f}" if "weights_mb" in folds[0] else "—",
        ]
        print("| " + " | ".join(cells) + " |")
    base = report["rows"][0]["folds"]
    print(
        "95 % CI of the baseline's 1-shot: "
        + ", ".join(f"{f.name} ±{100 * base[f.name][key]['1shot_ci95']:.1f}" for f in FOLDS)
        + "; scored: "
        + ", ".join(
            f"{f.name} {base[f.name][key]['classes']} species "
            f"({base[f.name][key]['images']} photos)"
            for f in FOLDS
        )
    )


def main() -> int:
    args = parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    report = run(args)
    report["load_average_1min"] = os.getloadavg()[0]
    for row in report["rows"][1:]:
        for name, fold in row["folds"].items():
            print(
                f"{row['label']}, {name}: {fold['train_photos']} training photos, best epoch "
                f"{fold['best_epoch']} (val 1-shot {100 * fold['val_1shot']:.1f}), "
                f"{fold['train_s']:.0f} s, {fold['model']}"
            )
    print("\nWith the index's Hellinger map (what the product scores):")
    print_table(report)
    print("\nUnmapped (plain L2-normalised vectors):")
    print_table(report, "unmapped")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
