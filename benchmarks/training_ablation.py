"""Which training recipe? Trains variants on the base classes of birds-cub-base100 and scores
each on the validation classes (used to choose) and on the held-out classes (reported), next
to the frozen backbone measured in the same run.

    python benchmarks/training_ablation.py --json /tmp/ablation.json [--variants a,b,...]

Class split 60 base / 10 validation / 30 held-out (seed 0), as in embedder_benchmark.py.
Features are cached (``--cache-dir``), trained models kept in ``--work`` (a variant whose model
file exists with the same settings is not retrained), so reruns take seconds.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from embedder import EmbeddingModel, class_split, default_model, scan_collection
from embedder.episodes import episodic_accuracy, recall_at_k
from embedder.training import TrainingConfig, embed_cached, train_embedder

REPO = Path(__file__).resolve().parents[1]

#: name -> settings that differ from TrainingConfig() (the shipped default is "default").
VARIANTS: dict[str, dict] = {
    "default": {},
    # head only (unfreeze 0): a linear head on clean views, then the residual head on views
    "head-linear-clean": {
        "unfreeze": 0,
        "head": "linear",
        "embedding_dim": 512,
        "views": 0,
        "lr": 1e-3,
    },
    "head-residual-v2": {"unfreeze": 0, "views": 2, "lr": 1e-4},
    "head-residual-v4": {"unfreeze": 0, "views": 4, "lr": 1e-4},
    # last stage trained (unfreeze 1): learning rates, views, head, loss; then two stages
    "u1-v2-lr3e-4-tail0.33": {"unfreeze": 1, "views": 2, "lr": 3e-4, "tail_lr_scale": 0.33},
    "u1-v2-lr3e-4-tail1": {"unfreeze": 1, "views": 2, "lr": 3e-4, "tail_lr_scale": 1.0},
    "u1-v4": {"unfreeze": 1},
    "u1-v0": {"unfreeze": 1, "views": 0},
    "u1-v2": {"unfreeze": 1, "views": 2},
    "u1-identity-head": {"unfreeze": 1, "head": "identity", "tail_lr_scale": 1.0},
    "u1-supcon": {"unfreeze": 1, "loss": "supcon"},
    "u1-tail0.3": {"unfreeze": 1, "tail_lr_scale": 0.3},
    "u2-tail0.1": {"unfreeze": 2, "tail_lr_scale": 0.1},  # the default before the TF loading
    "u2-seed1": {"unfreeze": 2, "seed": 1},
    # a longer schedule of the default (its best epoch was the last on the corrected trunk)
    "default-e30": {"epochs": 30},
    # seed variation of the leading recipes
    "head-residual-v2-seed1": {"unfreeze": 0, "views": 2, "lr": 1e-4, "seed": 1},
    "u1-v0-seed1": {"unfreeze": 1, "views": 0, "seed": 1},
    "u1-tail0.3-seed1": {"unfreeze": 1, "tail_lr_scale": 0.3, "seed": 1},
}


def scores(vectors: np.ndarray, labels: list[str], episodes: int) -> dict[str, float]:
    one = episodic_accuracy(vectors, labels, k_shot=1, episodes=episodes, seed=0)
    five = episodic_accuracy(vectors, labels, k_shot=5, episodes=episodes, seed=0)
    return {
        "1shot": one.mean,
        "1shot_ci95": one.ci95,
        "5shot": five.mean,
        "5shot_ci95": five.ci95,
        "recall@1": recall_at_k(vectors, labels, ks=(1,))[1],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data", type=Path, default=REPO.parent / "shared" / "datasets" / "birds-cub-base100"
    )
    parser.add_argument("--cache-dir", type=Path, default=Path("/tmp/shellid-cache"))
    parser.add_argument("--work", type=Path, default=Path("/tmp/shellid-ablation"))
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated names")
    parser.add_argument("--episodes", type=int, default=600)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    names = [n.strip() for n in args.variants.split(",") if n.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")

    records = scan_collection(args.data)
    base, val, test = class_split(sorted({r.species for r in records}), (0.6, 0.1, 0.3), seed=0)
    pick = lambda names: [r for r in records if r.species in set(names)]  # noqa: E731
    base_records, val_records, test_records = pick(base), pick(val), pick(test)
    counts = [len(base_records), len(val_records), len(test_records)]
    print("{} base / {} validation / {} held-out images".format(*counts))

    def evaluate(model: EmbeddingModel, unfreeze: int, subset) -> dict[str, float]:
        vectors, kept, _ = embed_cached(
            model, [r.path for r in subset], unfreeze, cache_dir=args.cache_dir
        )
        by_path = {r.path: r.species for r in subset}
        return scores(vectors, [by_path[p] for p in kept], args.episodes)

    frozen = default_model()
    rows: dict[str, dict] = {
        "frozen": {
            "val": evaluate(frozen, 1, val_records),
            "test": evaluate(frozen, 1, test_records),
        }
    }
    args.work.mkdir(parents=True, exist_ok=True)
    for name in names:
        config = TrainingConfig(**VARIANTS[name])
        path = args.work / f"{name}.pt"
        started = time.perf_counter()
        model = None
        if path.is_file():
            model = EmbeddingModel.load(path)
            if model.training_config != config.to_dict():
                model = None
        if model is None:
            print(f"--- training {name}: {VARIANTS[name] or 'TrainingConfig()'}")
            model = train_embedder(
                base_records, val_records, config, out=path, cache_dir=args.cache_dir
            ).model
        rows[name] = {
            "settings": VARIANTS[name],
            "val": evaluate(model, config.unfreeze, val_records),
            "test": evaluate(model, config.unfreeze, test_records),
            "best_epoch": model.metrics.get("best_epoch"),
            "train_seconds": model.metrics.get("seconds"),
            "wall_seconds": round(time.perf_counter() - started, 1),
        }
        print_table(rows)
        if args.json:
            args.json.write_text(json.dumps(rows, indent=2))


def print_table(rows: dict[str, dict]) -> None:
    """Validation 1-shot (the selection score) and held-out figures with gains over frozen."""
    frozen = rows["frozen"]["test"]
    header = ["variant", "val 1-shot", "test 1-shot", "Δ", "test 5-shot", "Δ", "test R@1", "Δ"]
    print("\n" + " | ".join([*header, "best epoch", "train s"]))
    for name, row in rows.items():
        val, test = row["val"], row["test"]
        cells = [
            name,
            f"{100 * val['1shot']:.1f}",
            f"{100 * test['1shot']:.1f} ± {100 * test['1shot_ci95']:.1f}",
            f"{100 * (test['1shot'] - frozen['1shot']):+.1f}",
            f"{100 * test['5shot']:.1f} ± {100 * test['5shot_ci95']:.1f}",
            f"{100 * (test['5shot'] - frozen['5shot']):+.1f}",
            f"{100 * test['recall@1']:.1f}",
            f"{100 * (test['recall@1'] - frozen['recall@1']):+.1f}",
            str(row.get("best_epoch", "-")),
            f"{row.get('train_seconds') or 0:.0f}",
        ]
        print(" | ".join(cells))


if __name__ == "__main__":
    main()
