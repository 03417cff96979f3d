"""Identification and open-set benchmark of the index on real photos, next to a plain
nearest-neighbour baseline in the same run.

    .venv/bin/python benchmarks/index_benchmark.py [--model MODEL.pt] [--seeds 3]

Data: ../shared/datasets (``--datasets``). Embeddings are cached in /tmp/shellid-cache.

1. Few-shot closed set, fish4k-23 split by track: enroll K in {1, 5} images per species (from
   distinct tracks), identify every image of the other tracks: top-1 / top-5.
2. Unknown species: 30 % of the fish species are never enrolled; AUROC of the unknown score
   and the shares flagged at the calibrated thresholds (unknown queries caught, known
   queries wrongly rejected).
3. Off-domain: a store of shells-zhang8 + fish4k-23 (70 % of specimens / tracks); queries are
   the other 30 % and 200 photos each of negatives-rocks and negatives-drawings: share flagged
   out_of_domain, and known images wrongly flagged.
4. Method comparison (the evidence for the defaults): prototype vs nearest specimen vs both,
   one vs several prototypes per species.

Baseline: 1-NN cosine over enrolled images (no centring), open-set score = 1 - max
similarity, its threshold set by the same leave-one-specimen-out rule at the same target.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.embedding_cache import DEFAULT_CACHE, embed_files  # noqa: E402
from embedder.datasets import (  # noqa: E402
    IMAGE_SUFFIXES,
    ImageRecord,
    scan_collection,
    shots_split,
)
from index.calibration import acceptance_threshold, auroc  # noqa: E402
from index.classifier import VectorIdentifier  # noqa: E402
from index.config import IdentifierConfig  # noqa: E402
from index.prototypes import l2_normalise  # noqa: E402
from index.results import REJECTIONS  # noqa: E402
from index.rows import SpecimenRows  # noqa: E402
from index.workflows.evaluation.metrics import REPORTED_KNOWN_RECALL  # noqa: E402


@dataclass
class Data:
    """Embedded images of one dataset."""

    records: list[ImageRecord]
    vectors: np.ndarray

    def take(self, records: list[ImageRecord]) -> np.ndarray:
        index = {r.path: i for i, r in enumerate(self.records)}
        return self.vectors[[index[r.path] for r in records]]


def load(
    embedder,
    root: Path,
    name: str,
    group: str,
    cache: Path,
    limit: int | None = None,
    seed: int = 0,
) -> Data:
    """Scan ``root/<class>/*`` (optionally a seeded subsample of ``limit`` images), embed."""
    records = scan_collection(root, group_pattern=group)
    if limit is not None and len(records) > limit:
        records = sorted(random.Random(seed).sample(records, limit), key=lambda r: str(r.path))
    vectors, ok = embed_files(embedder, [r.path for r in records], root, name, cache)
    records = [r for r, good in zip(records, ok, strict=True) if good]
    return Data(records, vectors[ok])


def negatives(
    embedder, root: Path, name: str, cache: Path, limit: int, seed: int = 0
) -> np.ndarray:
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    files = sorted(random.Random(seed).sample(files, min(limit, len(files))))
    vectors, ok = embed_files(embedder, files, root, name, cache)
    return vectors[ok]


# ---------------------------------------------------------------------------- baseline
class NearestNeighbour:
    """1-NN cosine over enrolled images, no centring; open-set score = 1 - max similarity."""

    def __init__(
        self,
        vectors: np.ndarray,
        species: list[str],
        groups: list[str],
        target_recall: float = REPORTED_KNOWN_RECALL,
    ) -> None:
        self.vectors = l2_normalise(vectors)
        self.names = sorted(set(species))
        index = {s: i for i, s in enumerate(self.names)}
        self.y = np.array([index[s] for s in species])
        self.groups = np.array(groups)
        self.threshold = float("inf")
        # leave-one-specimen-out: nearest image of another specimen of the same species
        sims = self.vectors @ self.vectors.T
        same_species = self.y[:, None] == self.y[None, :]
        other_group = self.groups[:, None] != self.groups[None, :]
        # held-out images of species with other specimens: best similarity to any other one
        held_out = np.where(other_group, sims, -np.inf).max(axis=1)
        usable = np.isfinite(held_out) & (same_species & other_group).any(axis=1)
        if usable.sum() >= 3:
            self.threshold = acceptance_threshold(1.0 - held_out[usable], target_recall)

    def scores(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(per-species max similarity (m, S), open-set score (m,))``."""
        sims = l2_normalise(queries) @ self.vectors.T
        per_species = np.full((len(queries), len(self.names)), -np.inf, np.float32)
        for s in range(len(self.names)):
            per_species[:, s] = sims[:, self.y == s].max(axis=1)
        return per_species, 1.0 - per_species.max(axis=1)


def rejected_at(known: np.ndarray, unknown: np.ndarray, known_rejection: float = 0.05) -> float:
    """Share of ``unknown`` scores above the threshold that rejects ``known_rejection`` of
    ``known`` (an oracle operating point, the same for both methods)."""
    return float(np.mean(unknown > np.quantile(known, 1.0 - known_rejection)))


def topk_accuracy(scores: np.ndarray, names: list[str], truth: list[str], k: int) -> float:
    order = np.argsort(-scores, axis=1)[:, :k]
    return float(
        np.mean([t in {names[j] for j in row} for row, t in zip(order, truth, strict=True)])
    )


def fit(
    data: Data, support: list[ImageRecord], config: IdentifierConfig | None = None
) -> VectorIdentifier:
    return VectorIdentifier.fit(
        SpecimenRows(
            data.take(support),
            [r.species for r in support],
            taxonomy={r.species: dict(r.taxonomy) for r in support},
            groups=[r.group for r in support],
        ),
        config=config,
    )


def mean_sd(values: list[float]) -> str:
    if not values or any(v is None for v in values):
        return "n/a"
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}"


def ratio(a: list[float], b: list[float]) -> str:
    if not a or not b or any(v is None for v in a + b) or np.mean(b) == 0:
        return "n/a"
    return f"{np.mean(a) / np.mean(b):.2f}x"


def print_table(title: str, rows: list[tuple[str, list[float], list[float]]]) -> None:
    print(f"\n{title}")
    print(f"  {'metric':<44} {'shellid index':>17} {'1-NN baseline':>17} {'ratio':>7}")
    for name, ours, base in rows:
        print(f"  {name:<44} {mean_sd(ours):>17} {mean_sd(base):>17} {ratio(ours, base):>7}")


# ---------------------------------------------------------------------------- experiments
def closed_set(fish: Data, shots: int, seed: int, config: IdentifierConfig | None = None) -> dict:
    support, query = shots_split(fish.records, shots, seed=seed)
    identifier = fit(fish, support, config)
    q = fish.take(query)
    truth = [r.species for r in query]
    batch = identifier.score_batch(q)
    baseline = NearestNeighbour(
        fish.take(support), [r.species for r in support], [r.group for r in support]
    )
    base_scores, _ = baseline.scores(q)
    return {
        "top1": topk_accuracy(batch.probabilities, batch.species, truth, 1),
        "top5": topk_accuracy(batch.probabilities, batch.species, truth, 5),
        "base_top1": topk_accuracy(base_scores, baseline.names, truth, 1),
        "base_top5": topk_accuracy(base_scores, baseline.names, truth, 5),
        "queries": len(query),
        "support": len(support),
    }


def open_set(
    fish: Data,
    shots: int,
    seed: int,
    unknown_fraction: float,
    config: IdentifierConfig | None = None,
) -> dict:
    species = sorted({r.species for r in fish.records})
    held_out = set(random.Random(seed).sample(species, round(unknown_fraction * len(species))))
    known_records = [r for r in fish.records if r.species not in held_out]
    unknown_records = [r for r in fish.records if r.species in held_out]
    support, known_query = shots_split(known_records, shots, seed=seed)
    identifier = fit(fish, support, config)
    known = identifier.score_batch(fish.take(known_query))
    unknown = identifier.score_batch(fish.take(unknown_records))
    th = identifier.thresholds
    baseline = NearestNeighbour(
        fish.take(support),
        [r.species for r in support],
        [r.group for r in support],
        th.target_recall,
    )
    _, base_known = baseline.scores(fish.take(known_query))
    _, base_unknown = baseline.scores(fish.take(unknown_records))
    return {
        "auroc": auroc(known.unknown_score, unknown.unknown_score),
        "unknown_flagged": float(np.mean([d == "unknown_species" for d in unknown.decisions])),
        "unknown_rejected": float(np.mean([d in REJECTIONS for d in unknown.decisions])),
        "known_rejected": float(np.mean([d in REJECTIONS for d in known.decisions])),
        "known_top1_accepted": float(
            np.mean(
                [
                    d not in REJECTIONS and top[0] == r.species
                    for d, top, r in zip(known.decisions, known.top(1), known_query, strict=True)
                ]
            )
        ),
        "unknown_rejected_at_5": rejected_at(known.unknown_score, unknown.unknown_score),
        "base_auroc": auroc(base_known, base_unknown),
        "base_unknown_rejected_at_5": rejected_at(base_known, base_unknown),
        "base_unknown_rejected": float(np.mean(base_unknown > baseline.threshold)),
        "base_known_rejected": float(np.mean(base_known > baseline.threshold)),
        "known_decisions": Counter(known.decisions),
        "unknown_decisions": Counter(unknown.decisions),
        "thresholds": th,
    }


def off_domain(
    shells: Data,
    fish: Data,
    rocks: np.ndarray,
    drawings: np.ndarray,
    seed: int,
    config: IdentifierConfig | None = None,
) -> dict:
    from embedder.datasets import group_split

    shell_train, shell_test = group_split(shells.records, 0.3, seed=seed)
    fish_train, fish_test = group_split(fish.records, 0.3, seed=seed)
    vectors = np.concatenate([shells.take(shell_train), fish.take(fish_train)])
    support = shell_train + fish_train
    identifier = VectorIdentifier.fit(
        SpecimenRows(vectors, [r.species for r in support], groups=[r.group for r in support]),
        config=config,
    )
    known_vectors = np.concatenate([shells.take(shell_test), fish.take(fish_test)])
    known = identifier.score_batch(known_vectors)
    out = {
        "known_ood": float(np.mean([d == "out_of_domain" for d in known.decisions])),
        "known_rejected": float(np.mean([d in REJECTIONS for d in known.decisions])),
        "thresholds": identifier.thresholds,
    }
    baseline = NearestNeighbour(vectors, [r.species for r in support], [r.group for r in support])
    _, base_known = baseline.scores(known_vectors)
    out["base_known_rejected"] = float(np.mean(base_known > baseline.threshold))
    for name, neg in (("rocks", rocks), ("drawings", drawings)):
        batch = identifier.score_batch(neg)
        _, base_neg = baseline.scores(neg)
        out[f"{name}_ood"] = float(np.mean([d == "out_of_domain" for d in batch.decisions]))
        out[f"{name}_rejected"] = float(np.mean([d in REJECTIONS for d in batch.decisions]))
        out[f"{name}_auroc"] = auroc(known.ood_score, batch.ood_score)
        out[f"base_{name}_rejected"] = float(np.mean(base_neg > baseline.threshold))
        out[f"base_{name}_auroc"] = auroc(base_known, base_neg)
        out[f"{name}_scores"] = batch.ood_score
    out["known_scores"] = known.ood_score
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="MODEL.pt (default: the frozen backbone)")
    parser.add_argument("--datasets", type=Path, default=REPO.parent / "shared" / "datasets")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--shots", default="1,5")
    parser.add_argument("--unknown-fraction", type=float, default=0.3)
    parser.add_argument("--negatives", type=int, default=200, help="photos per negative set")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("/tmp/shellid-bench"),
        help="folder for the JSON figures and the score histogram PNG",
    )
    parser.add_argument("--embed-only", action="store_true", help="fill the cache and stop")
    parser.add_argument("--skip-methods", action="store_true", help="skip the method comparison")
    args = parser.parse_args(argv)

    from embedder import load_model
    from embedder.embedding import Embedder

    for name in ("fish4k-23", "shells-zhang8", "negatives-rocks", "negatives-drawings"):
        if not (args.datasets / name).is_dir():
            parser.error(f"dataset {args.datasets / name} not found (--datasets)")
    started = time.perf_counter()
    embedder = Embedder(load_model(args.model))
    print(f"model: {embedder.model.name} ({embedder.fingerprint}), dim {embedder.dim}")
    fish = load(embedder, args.datasets / "fish4k-23", "fish4k-23", "track", args.cache_dir)
    shells = load(
        embedder, args.datasets / "shells-zhang8", "shells-zhang8", "specimen", args.cache_dir
    )
    rocks = negatives(
        embedder,
        args.datasets / "negatives-rocks",
        "negatives-rocks",
        args.cache_dir,
        args.negatives,
    )
    drawings = negatives(
        embedder,
        args.datasets / "negatives-drawings",
        "negatives-drawings",
        args.cache_dir,
        args.negatives,
    )
    print(
        f"images: fish {len(fish.records)}, shells {len(shells.records)}, rocks {len(rocks)}, "
        f"drawings {len(drawings)} (embedding/cache {time.perf_counter() - started:.0f} s)"
    )
    if args.embed_only:
        return 0
    seeds = list(range(args.seeds))
    shots = [int(s) for s in args.shots.split(",")]
    figures: dict = {"model": embedder.fingerprint, "seeds": args.seeds}

    for k in shots:
        runs = [closed_set(fish, k, seed) for seed in seeds]
        print_table(
            f"1. fish4k-23 closed set, {k}-shot ({runs[0]['support']} enrolled, "
            f"~{runs[0]['queries']} queries from other tracks, {len(seeds)} seeds)",
            [
                ("top-1 accuracy", [r["top1"] for r in runs], [r["base_top1"] for r in runs]),
                ("top-5 accuracy", [r["top5"] for r in runs], [r["base_top5"] for r in runs]),
            ],
        )
        figures[f"closed_{k}shot"] = {key: [r[key] for r in runs] for key in runs[0]}

    for k in shots:
        runs = [open_set(fish, k, seed, args.unknown_fraction) for seed in seeds]
        print_table(
            f"2. fish4k-23 unknown species, {k}-shot ({args.unknown_fraction:.0%} of species "
            f"never enrolled; target known recall {runs[0]['thresholds'].target_recall})",
            [
                (
                    "AUROC known vs unknown species",
                    [r["auroc"] for r in runs],
                    [r["base_auroc"] for r in runs],
                ),
                (
                    "unknown queries rejected (unknown/OOD)",
                    [r["unknown_rejected"] for r in runs],
                    [r["base_unknown_rejected"] for r in runs],
                ),
                ("  of which flagged unknown_species", [r["unknown_flagged"] for r in runs], []),
                (
                    "known queries wrongly rejected",
                    [r["known_rejected"] for r in runs],
                    [r["base_known_rejected"] for r in runs],
                ),
                (
                    "known queries accepted and top-1 right",
                    [r["known_top1_accepted"] for r in runs],
                    [],
                ),
                (
                    "unknown rejected at 5 % known rejected (oracle)",
                    [r["unknown_rejected_at_5"] for r in runs],
                    [r["base_unknown_rejected_at_5"] for r in runs],
                ),
            ],
        )
        th = runs[0]["thresholds"]
        print(
            f"  thresholds (seed 0): T={th.temperature:.4f} unknown={th.unknown:.4f} "
            f"ood={th.ood:.4f} source={th.source}; "
            f"calibration: {th.stats.model_dump(exclude={'notes'})}"
        )
        for note in th.stats.notes:
            print(f"  note: {note}")
        for side in ("known", "unknown"):
            counts = dict(sum((r[f"{side}_decisions"] for r in runs), Counter()))
            print(f"  decisions, {side} queries (all seeds): {counts}")
        figures[f"open_{k}shot"] = {
            key: [r[key] for r in runs]
            for key in runs[0]
            if key not in ("thresholds", "known_decisions", "unknown_decisions")
        }

    runs = [off_domain(shells, fish, rocks, drawings, seed) for seed in seeds]
    print_table(
        "3. off-domain queries against a shells-zhang8 + fish4k-23 store "
        "(70 % of specimens/tracks)",
        [
            ("rocks flagged out_of_domain", [r["rocks_ood"] for r in runs], []),
            (
                "rocks rejected (OOD or unknown)",
                [r["rocks_rejected"] for r in runs],
                [r["base_rocks_rejected"] for r in runs],
            ),
            ("drawings flagged out_of_domain", [r["drawings_ood"] for r in runs], []),
            (
                "drawings rejected (OOD or unknown)",
                [r["drawings_rejected"] for r in runs],
                [r["base_drawings_rejected"] for r in runs],
            ),
            (
                "AUROC known vs rocks",
                [r["rocks_auroc"] for r in runs],
                [r["base_rocks_auroc"] for r in runs],
            ),
            (
                "AUROC known vs drawings",
                [r["drawings_auroc"] for r in runs],
                [r["base_drawings_auroc"] for r in runs],
            ),
            ("known images wrongly flagged out_of_domain", [r["known_ood"] for r in runs], []),
            (
                "known images wrongly rejected (OOD or unknown)",
                [r["known_rejected"] for r in runs],
                [r["base_known_rejected"] for r in runs],
            ),
        ],
    )
    figures["off_domain"] = {
        key: [r[key] for r in runs]
        for key in runs[0]
        if not key.endswith("scores") and key != "thresholds"
    }
    args.out.mkdir(parents=True, exist_ok=True)
    plot_scores(runs[0], args.out / "ood_scores.png")
    print(f"  OOD score histogram: {args.out / 'ood_scores.png'}")

    if not args.skip_methods:
        compare_methods(fish, seeds, args.unknown_fraction, figures)
    (args.out / "index_benchmark.json").write_text(json.dumps(figures, indent=1, default=float))
    total = time.perf_counter() - started
    print(f"\nfigures: {args.out / 'index_benchmark.json'}  (total {total:.0f} s)")
    return 0


def compare_methods(fish: Data, seeds: list[int], unknown_fraction: float, figures: dict) -> None:
    """Closed-set top-1 (1- and 5-shot) and unknown-species AUROC (5-shot) per scoring method."""
    variants = {
        "prototype": IdentifierConfig(method="prototype"),
        "nearest specimen (knn)": IdentifierConfig(method="knn"),
        "prototype + knn (until #10)": IdentifierConfig(method="prototype+knn"),
        "whitened (default)": IdentifierConfig(),
        "  without centring": IdentifierConfig(centre=False),
        "  2 prototypes/species": IdentifierConfig(
            prototypes_per_species=2, min_specimens_per_prototype=2
        ),
    }
    print("\n4. scoring methods on fish4k-23 (mean over seeds)")
    columns = ("1-shot top-1", "5-shot top-1", "5-shot top-5", "5-shot AUROC")
    print(f"  {'method':<28} " + " ".join(f"{c:>13}" for c in columns))
    figures["methods"] = {}
    for name, config in variants.items():
        one = [closed_set(fish, 1, s, config)["top1"] for s in seeds]
        five = [closed_set(fish, 5, s, config) for s in seeds]
        au = [open_set(fish, 5, s, unknown_fraction, config)["auroc"] for s in seeds]
        row = {
            "top1_1shot": float(np.mean(one)),
            "top1_5shot": float(np.mean([r["top1"] for r in five])),
            "top5_5shot": float(np.mean([r["top5"] for r in five])),
            "auroc_5shot": float(np.mean(au)),
        }
        figures["methods"][name] = row
        print(f"  {name:<28} " + " ".join(f"{v:>13.3f}" for v in row.values()))


def plot_scores(run: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    bins = np.linspace(0, 1.2, 60)
    for key, label in (
        ("known_scores", "known species (held-out)"),
        ("rocks_scores", "rocks"),
        ("drawings_scores", "drawings"),
    ):
        ax.hist(run[key], bins=bins, alpha=0.5, label=label, density=True)
    ax.axvline(run["thresholds"].ood, color="k", ls="--", label="calibrated OOD threshold")
    ax.set_xlabel("OOD score (1 - mean cosine to 5 nearest specimens)")
    ax.set_ylabel("density")
    ax.set_title("Off-domain filter: shells + fish store")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
