"""Does training help? The frozen backbone and the model ``shellid train`` makes, side by side.

    python benchmarks/embedder_benchmark.py --json /tmp/embedder-benchmark.json

1. Trains with the default :class:`embedder.training.TrainingConfig` on birds-cub-base100,
   class split 60 base / 10 validation (epoch selection) / 30 held-out (seed 0).
2. Held-out CUB classes: 5-way 1-shot and 5-shot accuracy (mean ± 95 % CI over ``--episodes``
   episodes, the same episodes for both models) and Recall@1, frozen vs trained.
3. fish4k-23, all classes, split by track: the same figures (does bird training hurt fish?).
4. ``shellid embed`` throughput on the CPU, frozen vs trained model, and their ratio.

Embeddings for 2 and 3 go through the trunk-feature cache (``--cache-dir``), which equals the
full forward pass up to float16 rounding (checked on a few photos and printed); the trained
model is kept in ``--work`` and reused when its settings match, so reruns take minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from api.cli import main as shellid
from embedder import Embedder, EmbeddingModel, class_split, default_model, scan_collection
from embedder.episodes import episodic_accuracy, recall_at_k
from embedder.training import TrainingConfig, embed_cached, train_embedder

REPO = Path(__file__).resolve().parents[1]
METRICS = ("1shot", "5shot", "recall@1")


def few_shot_scores(
    vectors: np.ndarray, labels: list[str], groups: list[str], episodes: int
) -> dict:
    """5-way 1-shot and 5-shot (support and query never share a group) and Recall@1."""
    one = episodic_accuracy(vectors, labels, k_shot=1, episodes=episodes, seed=0, groups=groups)
    five = episodic_accuracy(vectors, labels, k_shot=5, episodes=episodes, seed=0, groups=groups)
    return {
        "1shot": one.mean,
        "1shot_ci95": one.ci95,
        "5shot": five.mean,
        "5shot_ci95": five.ci95,
        "recall@1": recall_at_k(vectors, labels, ks=(1,), groups=groups)[1],
        "images": len(labels),
        "classes": len(set(labels)),
        "episodes": episodes,
    }


def compare(
    models: dict[str, tuple[EmbeddingModel, int]], records, cache_dir: Path, episodes: int
) -> dict:
    """Scores of each model on ``records`` and the trained-minus-frozen differences."""
    result: dict[str, dict] = {}
    for name, (model, unfreeze) in models.items():
        vectors, kept, errors = embed_cached(
            model, [r.path for r in records], unfreeze, cache_dir=cache_dir
        )
        by_path = {r.path: r for r in records}
        labels = [by_path[p].species for p in kept]
        groups = [by_path[p].group for p in kept]
        result[name] = few_shot_scores(vectors, labels, groups, episodes)
        result[name]["skipped"] = len(errors)
    result["delta"] = {m: result["trained"][m] - result["frozen"][m] for m in METRICS}
    return result


def cache_agreement(
    model: EmbeddingModel, unfreeze: int, paths: list[Path], cache_dir: Path
) -> float:
    """Largest |difference| between cached-feature and full-forward embeddings of ``paths``."""
    via_cache, kept, _ = embed_cached(model, paths, unfreeze, cache_dir=cache_dir, progress=False)
    direct = Embedder(model).embed_paths(kept, progress=False).embeddings
    return float(np.abs(via_cache - direct).max())


def throughput(models: dict[str, Path | None], paths: list[Path], work: Path, rounds: int) -> dict:
    """Images/s of ``shellid embed`` per model (rounds alternate between models)."""
    seconds: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(rounds):
        for name, model_path in models.items():
            argv = [
                "embed",
                *map(str, paths),
                "--out",
                str(work / f"throughput-{name}.npz"),
                "--quiet",
            ]
            if model_path is not None:
                argv += ["--model", str(model_path)]
            started = time.perf_counter()
            if shellid(argv) != 0:
                raise RuntimeError(f"shellid embed failed for the {name} model")
            seconds[name].append(time.perf_counter() - started)
    rates = {name: len(paths) / float(np.mean(values)) for name, values in seconds.items()}
    return {
        "images": len(paths),
        "rounds": rounds,
        "images_per_s": rates,
        "seconds": seconds,
        "ratio_trained_to_frozen": rates["trained"] / rates["frozen"],
        "torch_threads": torch.get_num_threads(),
        "load_average_1min": os.getloadavg()[0],
    }


def percent(scores: dict, metric: str) -> str:
    """``'71.2 ± 0.9 %'`` (the ± part when the metric has a confidence interval)."""
    ci = scores.get(f"{metric}_ci95")
    return f"{100 * scores[metric]:.1f}" + (f" ± {100 * ci:.1f}" if ci is not None else "") + " %"


def print_table(report: dict) -> None:
    rows = []
    for key, title in (("cub", "CUB held-out classes"), ("fish", "fish4k-23 (by track)")):
        block = report[key]
        for metric, label in (
            ("1shot", "5-way 1-shot"),
            ("5shot", "5-way 5-shot"),
            ("recall@1", "Recall@1"),
        ):
            frozen, trained = block["frozen"], block["trained"]
            rows.append(
                (
                    f"{title} ({block['frozen']['classes']} cl.)",
                    label,
                    percent(frozen, metric),
                    percent(trained, metric),
                    f"{100 * block['delta'][metric]:+.1f} pts",
                )
            )
    speed = report["throughput"]
    rows.append(
        (
            f"shellid embed, CPU ({speed['images']} photos)",
            "images/s",
            f"{speed['images_per_s']['frozen']:.1f}",
            f"{speed['images_per_s']['trained']:.1f}",
            f"× {speed['ratio_trained_to_frozen']:.2f}",
        )
    )
    header = ("data", "metric", "frozen", "trained", "trained vs frozen")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, tuple("-" * w for w in widths), *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "datasets")
    parser.add_argument("--cache-dir", type=Path, default=Path("/tmp/shellid-cache"))
    parser.add_argument("--work", type=Path, default=Path("/tmp/shellid-benchmark"))
    parser.add_argument("--episodes", type=int, default=600, help="episodes per figure (≥ 500)")
    parser.add_argument("--throughput-images", type=int, default=120)
    parser.add_argument("--throughput-rounds", type=int, default=2)
    parser.add_argument(
        "--retrain", action="store_true", help="train again even if the model exists"
    )
    parser.add_argument("--json", type=Path, required=True, help="write the results here")
    args = parser.parse_args()
    for name in ("birds-cub-base100", "fish4k-23"):
        if not (args.data / name).is_dir():
            parser.error(f"{args.data / name} not found (see --data)")
    args.work.mkdir(parents=True, exist_ok=True)

    config = TrainingConfig()
    birds = scan_collection(args.data / "birds-cub-base100")
    base, val, test = class_split(
        sorted({r.species for r in birds}), (0.6, 0.1, 0.3), seed=config.seed
    )
    subset = lambda names: [r for r in birds if r.species in set(names)]  # noqa: E731
    model_path = args.work / "cub-MODEL.pt"
    trained = None
    if model_path.is_file() and not args.retrain:
        trained = EmbeddingModel.load(model_path)
        if trained.training_config != config.to_dict():
            trained = None
    if trained is None:
        print(f"training on {len(base)} CUB classes (validation: {len(val)} classes) with {config}")
        trained = train_embedder(
            subset(base), subset(val), config, out=model_path, cache_dir=args.cache_dir
        ).model
    frozen = default_model()
    models = {"frozen": (frozen, config.unfreeze), "trained": (trained, config.unfreeze)}

    held_out = subset(test)
    report: dict = {
        "config": config.to_dict(),
        "split": {"base": base, "validation": val, "held_out": test},
        "training": dict(trained.metrics),
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "cuda": torch.cuda.is_available(),
        },
    }
    probe = [r.path for r in held_out[:: max(1, len(held_out) // 12)]][:12]
    report["cache_max_abs_diff"] = {
        name: cache_agreement(model, unfreeze, probe, args.cache_dir)
        for name, (model, unfreeze) in models.items()
    }
    print(f"cached-feature vs full-forward embeddings, max |Δ|: {report['cache_max_abs_diff']}")
    report["cub"] = compare(models, held_out, args.cache_dir, args.episodes)
    fish = scan_collection(args.data / "fish4k-23", group_pattern="track")
    report["fish"] = compare(models, fish, args.cache_dir, args.episodes)

    step = max(1, len(held_out) // args.throughput_images)
    photos = [r.path for r in held_out[::step]][: args.throughput_images]
    report["throughput"] = throughput(
        {"frozen": None, "trained": model_path}, photos, args.work, args.throughput_rounds
    )

    print()
    print_table(report)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2, default=str))
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
