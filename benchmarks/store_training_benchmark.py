"""Training on a curator's store: which recipe? Each candidate is trained on the photos a store
would hold and scored on what a curator sees afterwards, next to the frozen default, in one run.

    python benchmarks/store_training_benchmark.py --threads 2 --json /tmp/store-training.json

Protocol (``--seed`` picks the species and photos):

* ``--seen`` species (80 of birds-cub-base100's 100) are *enrolled*: ``--photos`` photos each
  (20, from distinct specimens/tracks) are the store. The model trains on them; with
  ``validation="photos"`` (when ``TrainingConfig`` has it) the store is split as store
  training splits it (``val_fraction`` of each species' specimens pick the epoch).
* **seen top-1**: every other photo of the enrolled species, identified by the product's
  identifier (:class:`index.VectorIdentifier`, the default config) fitted on the store's
  vectors (all ``--photos`` per species) of the candidate's model: its top species. A trained
  model brings the within-species prior of its training photos, as store training installs
  it (``index.workflows.training.attach_prior``); the frozen default has none. ``no prior``
  columns: the trained model's figures without it.
* **unseen**: the remaining species are never enrolled. **rejected**: the share of their photos
  the same identifier answers ``unknown_species`` or ``out_of_domain`` (its own calibrated
  thresholds), beside the share of seen photos it keeps (not rejected). **5-way 1-shot**:
  episodic accuracy on the unseen species (CL2N prototypes, ``--episodes``), the training
  benchmark's figure.
* **minutes**: ``cache`` is the cold cost of caching the trunk features of the store's photos
  at the candidate's split (clean view + ``views`` augmented views), measured on a sample of
  ``--cache-sample`` photos in an empty cache and scaled to the store; ``train`` is
  :func:`embedder.training.train_embedder` on the warm cache (features loaded, epochs,
  validation). The run itself shares one feature cache between candidates (``--cache-dir``).

Candidates are :data:`CANDIDATES` (settings differing from ``TrainingConfig()``); the frozen
default is the first row and every other row shows its difference to it. ``random-sampling``
swaps ``MPerClassSampler`` for plain shuffled batches inside this benchmark only (no setting).
Trained models are kept in ``--work`` and reused when their settings match.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from embedder import EmbeddingModel, default_model, scan_collection  # noqa: E402
from embedder import training as training_module  # noqa: E402
from embedder.datasets import ImageRecord, shots_split  # noqa: E402
from embedder.episodes import episodic_accuracy  # noqa: E402
from embedder.feature_cache import FeatureCache  # noqa: E402
from embedder.training import TrainingConfig, embed_cached, train_embedder  # noqa: E402
from index.classifier import VectorIdentifier  # noqa: E402
from index.results import REJECTIONS  # noqa: E402
from index.rows import SpecimenRows  # noqa: E402
from index.whitening import WithinSpeciesPrior  # noqa: E402

#: data set -> group preset (specimen/track), as in decision_benchmark.py
DATASETS = {"birds-cub-base100": None, "fish4k-23": "track", "shells-zhang8": "specimen"}

#: name -> settings that differ from TrainingConfig() ("default" is today's default recipe).
CANDIDATES: dict[str, dict[str, Any]] = {
    "default": {},
    "unfreeze-0": {"unfreeze": 0},
    "unfreeze-3": {"unfreeze": 3},
    "proxyanchor": {"loss": "proxyanchor"},
    "arcface": {"loss": "arcface"},
    "random-sampling": {},  # the default with shuffled batches (see RandomBatches)
    "epochs-30": {"epochs": 30, "patience": 8},
}


@dataclass
class Split:
    """One protocol draw: the store (and its validation part), seen test, unseen photos."""

    store: list[ImageRecord]
    train: list[ImageRecord]
    val: list[ImageRecord]
    seen_test: list[ImageRecord]
    unseen: list[ImageRecord]


def make_split(records: Sequence[ImageRecord], seen: int, photos: int, seed: int) -> Split:
    """``seen`` random species with ``photos`` store photos each (distinct groups); the rest of
    their photos (other groups) are the seen test; the other species are unseen. With
    ``validation="photos"`` the store is split as store training splits it
    (``embedder.validation.split_validation_photos``, ``TrainingConfig().val_fraction``)."""
    species = sorted({r.species for r in records})
    if seen >= len(species):
        raise SystemExit(f"--seen {seen} leaves no unseen species of {len(species)}")
    rng = np.random.default_rng(seed)
    unseen = set(rng.choice(species, len(species) - seen, replace=False).tolist())
    known = [r for r in records if r.species not in unseen]
    store, seen_test = shots_split(known, photos, seed=seed)
    train, val = list(store), list[ImageRecord]()
    if has_photo_validation():
        from embedder.validation import split_validation_photos

        defaults = TrainingConfig()
        train, val = split_validation_photos(store, defaults.val_fraction, seed)
    return Split(store, train, val, seen_test, [r for r in records if r.species in unseen])


def has_photo_validation() -> bool:
    """Whether this checkout's TrainingConfig has ``validation`` (seen-species validation)."""
    return "validation" in TrainingConfig.model_fields


def candidate_config(name: str, epochs: int | None) -> TrainingConfig:
    settings = dict(CANDIDATES[name])
    if has_photo_validation():
        settings["validation"] = "photos"
    if epochs is not None:
        settings["epochs"] = epochs
    return TrainingConfig(**settings)


class RandomBatches(training_module._EpochBatches):
    """Plain shuffled batches (no class balancing): the ``random-sampling`` candidate."""

    def of_epoch(self) -> tuple[torch.Tensor, ...]:
        order = torch.randperm(len(self.features), generator=self.view_rng)
        return order.split(self.size)


def train(
    name: str, split: Split, config: TrainingConfig, args: argparse.Namespace
) -> tuple[EmbeddingModel, float]:
    """The candidate's model (reused from ``--work`` when its settings match) and the training
    seconds (warm cache)."""
    path = args.work / f"{name}-seed{args.seed}.pt"
    if path.is_file():
        model = EmbeddingModel.load(path)
        if model.training_config == config.to_dict() and model.metrics.get("store_protocol") == (
            protocol_key(args)
        ):
            return model, float(model.metrics["seconds"])
    print(f"\n--- training {name}: {CANDIDATES[name] or 'TrainingConfig()'}", flush=True)
    original = training_module._EpochBatches
    if name == "random-sampling":
        training_module._EpochBatches = RandomBatches  # type: ignore[misc]
    try:
        result = train_embedder(
            split.train, split.val, config, cache_dir=args.cache_dir, progress=True
        )
    finally:
        training_module._EpochBatches = original  # type: ignore[misc]
    model = result.model
    model.metrics["store_protocol"] = protocol_key(args)
    model.save(path)
    return model, float(result.metrics["seconds"])


def protocol_key(args: argparse.Namespace) -> str:
    return f"{args.dataset}:{args.seen}:{args.photos}:{has_photo_validation()}:{args.seed}"


def cold_cache_minutes(
    unfreeze: int, views: int, split: Split, args: argparse.Namespace, memo: dict
) -> float:
    """Minutes to cache the store's photos from cold at ``unfreeze`` (training photos with
    ``views`` augmented views, validation photos clean): a sample in an empty cache, scaled."""
    key = (unfreeze, views)
    if key not in memo:
        sample = [r.path for r in split.train[:: max(1, len(split.train) // args.cache_sample)]]
        sample = sample[: args.cache_sample]
        backbone = default_model().backbone
        with tempfile.TemporaryDirectory(prefix="shellid-cold-cache-") as tmp:
            cache = FeatureCache(tmp, backbone, unfreeze)
            started = time.perf_counter()
            cache.get(sample, tuple(range(views + 1)), desc=f"cold cache u{unfreeze} (sample)")
            per_view = (time.perf_counter() - started) / (len(sample) * (views + 1))
            shutil.rmtree(tmp, ignore_errors=True)
        memo[key] = per_view
    total_views = len(split.train) * (views + 1) + len(split.val)
    return memo[key] * total_views / 60


def warm_caches(
    split: Split, configs: Sequence[TrainingConfig] | Any, args: argparse.Namespace
) -> None:
    """Fill the shared cache for every split the candidates use before any is timed (a split
    is carried forward from an earlier one's features when present)."""
    started = time.perf_counter()
    backbone = default_model().backbone
    every = [r.path for r in [*split.store, *split.seen_test, *split.unseen]]
    for unfreeze, views in sorted({(c.unfreeze, c.views) for c in configs}, reverse=True):
        cache = FeatureCache(args.cache_dir, backbone, unfreeze)
        cache.get([r.path for r in split.train], tuple(range(views + 1)), desc=f"u{unfreeze} views")
        cache.get(every, (0,), desc=f"u{unfreeze} clean views")
    print(f"shared feature cache ready in {(time.perf_counter() - started) / 60:.1f} min")


def score(
    model: EmbeddingModel, unfreeze: int, split: Split, args: argparse.Namespace, trained: bool
) -> dict:
    """Seen top-1, unseen rejection and seen kept by the product's identifier fitted on the
    store (with the within-species prior of the training photos for a ``trained`` model, as
    store training installs it, and without: ``*_no_prior``); unseen 5-way 1-shot."""
    every = [*split.store, *split.seen_test, *split.unseen]
    vectors, kept, errors = embed_cached(
        model, [r.path for r in every], unfreeze, cache_dir=args.cache_dir, progress=False
    )
    if errors:
        raise SystemExit(f"unreadable photos: {list(errors)[:3]}")
    row = {p: i for i, p in enumerate(kept)}

    def take(part: list[ImageRecord]) -> np.ndarray:
        return vectors[[row[r.path] for r in part]]

    rows = SpecimenRows(
        take(split.store),
        species=[r.species for r in split.store],
        groups=[r.group for r in split.store],
    )
    prior = None
    if trained:  # store training gives the model the prior of its training photos
        prior = WithinSpeciesPrior.of_collection(
            take(split.train),
            np.array([r.species for r in split.train]),
            np.array([r.group for r in split.train]),
        )
    figures: dict[str, float] = {}
    for suffix, chosen in (("", prior), ("_no_prior", None)):
        identifier = VectorIdentifier.fit(rows, prior=chosen)
        known = identifier.score_batch(take(split.seen_test))
        truth = np.array([known.species.index(r.species) for r in split.seen_test])
        strangers = identifier.score_batch(take(split.unseen))
        figures |= {
            f"seen_top1{suffix}": float((known.similarities.argmax(1) == truth).mean()),
            f"seen_kept{suffix}": float((~np.isin(known.decisions, list(REJECTIONS))).mean()),
            f"unseen_rejected{suffix}": float(
                np.isin(strangers.decisions, list(REJECTIONS)).mean()
            ),
        }
    one = episodic_accuracy(
        take(split.unseen),
        [r.species for r in split.unseen],
        n_way=min(5, len({r.species for r in split.unseen})),
        k_shot=1,
        episodes=args.episodes,
        seed=0,
        groups=[r.group for r in split.unseen],
    )
    return {
        **figures,
        "unseen_1shot": one.mean,
        "unseen_1shot_ci95": one.ci95,
    }


COLUMNS = (
    ("candidate", 16),
    ("seen top-1", 11),
    ("Δ", 7),
    ("seen kept", 10),
    ("unseen rej.", 12),
    ("Δ", 7),
    ("unseen 1-shot", 15),
    ("Δ", 7),
    ("no prior: top-1", 16),
    ("rej.", 6),
    ("best ep.", 9),
    ("cache min", 10),
    ("train min", 10),
    ("total", 7),
    ("top-1 ×", 8),
)


def table_cells(name: str, r: dict, base: dict) -> list[str]:
    """One row's cells: figures in %, differences to the frozen row, minutes."""
    delta = name != "frozen"

    def diff(key: str) -> str:
        return f"{100 * (r[key] - base[key]):+.1f}" if delta else ""

    def minutes(value: float | None) -> str:
        return "—" if value is None else f"{value:.1f}"

    cache, train_min = r.get("cache_min"), r.get("train_min")
    total = None if cache is None or train_min is None else cache + train_min
    return [
        name,
        f"{100 * r['seen_top1']:.1f}",
        diff("seen_top1"),
        f"{100 * r['seen_kept']:.1f}",
        f"{100 * r['unseen_rejected']:.1f}",
        diff("unseen_rejected"),
        f"{100 * r['unseen_1shot']:.1f} ± {100 * r['unseen_1shot_ci95']:.1f}",
        diff("unseen_1shot"),
        f"{100 * r['seen_top1_no_prior']:.1f}",
        f"{100 * r['unseen_rejected_no_prior']:.1f}",
        str(r.get("best_epoch", "—")),
        minutes(cache),
        minutes(train_min),
        minutes(total),
        f"{r['seen_top1'] / base['seen_top1']:.3f}" if delta else "",
    ]


def print_table(rows: dict[str, dict]) -> None:
    """The table so far (figures in %, Δ = difference to the frozen row)."""
    print("\n" + "".join(f"{title:>{width}}" for title, width in COLUMNS), flush=True)
    for name, r in rows.items():
        cells = table_cells(name, r, rows["frozen"])
        print("".join(f"{c:>{w}}" for c, (_, w) in zip(cells, COLUMNS, strict=True)), flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "datasets")
    parser.add_argument("--dataset", default="birds-cub-base100", choices=list(DATASETS))
    parser.add_argument("--seen", type=int, default=80, help="enrolled (trained) species")
    parser.add_argument("--photos", type=int, default=20, help="store photos per seen species")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--candidates", default=",".join(CANDIDATES), help="comma-separated")
    parser.add_argument("--epochs", type=int, help="override every candidate's epochs (quick)")
    parser.add_argument("--episodes", type=int, default=600)
    parser.add_argument("--cache-sample", type=int, default=48, help="photos timed cold")
    parser.add_argument("--cache-dir", type=Path, default=Path("/tmp/shellid-store-bench/cache"))
    parser.add_argument("--work", type=Path, default=Path("/tmp/shellid-store-bench/models"))
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    unknown = [n for n in args.candidates.split(",") if n and n not in CANDIDATES]
    if unknown:
        parser.error(f"unknown candidates {unknown}; known: {', '.join(CANDIDATES)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    records = scan_collection(args.data / args.dataset, group_pattern=DATASETS[args.dataset])
    split = make_split(records, args.seen, args.photos, args.seed)
    validation = (
        f"{len(split.val)} held-out store photos pick the epoch (validation='photos')"
        if split.val
        else "no validation (this TrainingConfig has no validation='photos'): last epoch kept"
    )
    print(
        f"{args.dataset}, seed {args.seed}: {args.seen} seen species x {args.photos} store photos "
        f"({len(split.store)}; {len(split.train)} train, {validation}); seen test "
        f"{len(split.seen_test)} other photos; {len({r.species for r in split.unseen})} unseen "
        f"species ({len(split.unseen)} photos). Identifier: VectorIdentifier defaults, a "
        "trained model with the prior of its training photos. "
        f"{args.threads} torch thread(s)."
    )
    args.work.mkdir(parents=True, exist_ok=True)
    frozen = default_model()
    rows: dict[str, dict] = {"frozen": score(frozen, 0, split, args, trained=False)}
    print_table(rows)
    configs = {n: candidate_config(n, args.epochs) for n in args.candidates.split(",") if n}
    warm_caches(split, configs.values(), args)
    memo: dict = {}
    for name in [n for n in args.candidates.split(",") if n]:
        config = configs[name]
        model, seconds = train(name, split, config, args)
        rows[name] = {
            **score(model, config.unfreeze, split, args, trained=True),
            "settings": CANDIDATES[name],
            "best_epoch": model.metrics.get("best_epoch"),
            "epochs_run": model.metrics.get("epochs_run"),
            "train_min": seconds / 60,
            "cache_min": cold_cache_minutes(config.unfreeze, config.views, split, args, memo),
        }
        print_table(rows)
        if args.json:
            args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
