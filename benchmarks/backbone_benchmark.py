"""Which backbone, loaded how, run by what? Frozen features on every shared set, side by side.

    python benchmarks/backbone_benchmark.py --json /tmp/backbone-benchmark.json

Each row is a backbone × weight loading × runtime, embedding the same photos:

* ``lite0 legacy (torch)``: the first release's default and path (timm's PyTorch-padded
  ``efficientnet_lite0`` fed ImageNet mean/std, PyTorch, one decoding thread) — the baseline;
* ``lite0 pt-pad [-1,1]``: the same network with the inputs scaled as the weights were trained;
* ``tf_lite0/1/2``: TF "same" padding and [-1, 1] inputs, as the weights were trained; with
  ``torch`` (parallel decoding) and ``onnx`` (ONNX Runtime, parallel decoding).

Per dataset (``shells-zhang8`` split by specimen, ``fish4k-23`` by track,
``birds-cub-base100`` by image; ``--per-class`` photos per class, spread over specimens and
tracks): 5-way 1-shot and 5-shot accuracy (CL2N prototypes, ``--episodes`` episodes; support
and query never share a specimen or track), Recall@1 (own specimen/track excluded), and
unknown-species AUROC (half of the species enrolled with 5 photos each; the maximum prototype
similarity tells the other half's photos from the enrolled species' remaining photos; mean
over ``--splits`` random halves). Images/s is the wall-clock rate of ``Embedder.embed_paths``
over all photos, and ``× today`` its ratio to the baseline row measured in the same run.

Feature recipes over these backbones (ensembles, GeM, multi-layer, flip TTA; the ``--model``
profiles) on novel bird species and fish: ``benchmarks/profile_benchmark.py``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.embedder_benchmark import few_shot_scores  # noqa: E402
from embedder import Embedder, EmbeddingModel, default_model, scan_collection  # noqa: E402
from embedder.backbones import TF_MEAN, TF_STD  # noqa: E402
from embedder.episodes import cl2n  # noqa: E402
from embedder.vectors import l2_normalise  # noqa: E402
from index.calibration import auroc  # noqa: E402

DATASETS = {  # name -> group preset (None: every photo is its own specimen)
    "shells-zhang8": "specimen",
    "fish4k-23": "track",
    "birds-cub-base100": None,
}


@dataclass(frozen=True)
class Variant:
    """One row: a backbone, how its weights are loaded, and the runtime that runs it."""

    name: str
    backbone: str
    runtime: str
    tf_inputs: bool = True  # inputs scaled to [-1, 1] (TF mean/std) whatever the registry says
    decode_threads: int | None = None  # None: the Embedder's default (parallel)

    def model(self) -> EmbeddingModel:
        model = default_model(self.backbone)
        if self.tf_inputs:
            model.backbone.preprocess = model.backbone.preprocess.model_copy(
                update={"mean": TF_MEAN, "std": TF_STD}
            )
        return model


BASELINE = Variant("lite0 legacy", "efficientnet_lite0", "torch", False, decode_threads=0)
VARIANTS = [
    BASELINE,
    Variant("lite0 pt-pad [-1,1]", "efficientnet_lite0", "torch"),
    Variant("tf_lite0", "tf_efficientnet_lite0", "torch"),
    Variant("tf_lite0", "tf_efficientnet_lite0", "onnx"),
    Variant("tf_lite1", "tf_efficientnet_lite1", "onnx"),
    Variant("tf_lite2", "tf_efficientnet_lite2", "onnx"),
]


def photos(root: Path, group: str | None, per_class: int, seed: int) -> tuple[list, list, list]:
    """Up to ``per_class`` photos per species, spread over as many specimens/tracks as there
    are (one photo of each, in random order, then a second of each, ...)."""
    records = scan_collection(root, group_pattern=group)
    rng = np.random.default_rng(seed)
    by_species: dict[str, dict[str, list]] = {}
    for record in records:
        by_species.setdefault(record.species, {}).setdefault(record.group, []).append(record)
    chosen = []
    for species in sorted(by_species):
        groups = [by_species[species][g] for g in sorted(by_species[species])]
        groups = [[members[i] for i in rng.permutation(len(members))] for members in groups]
        order = rng.permutation(len(groups))
        rounds = itertools.zip_longest(*(groups[i] for i in order))
        spread = [record for round_ in rounds for record in round_ if record is not None]
        chosen += spread[:per_class]
    return [r.path for r in chosen], [r.species for r in chosen], [r.group for r in chosen]


def unknown_species_auroc(
    vectors: np.ndarray, labels: list[str], groups: list[str], splits: int, shots: int = 5
) -> float:
    """Mean AUROC of max prototype similarity: enrolled species' other photos vs photos of
    species left out of the collection (half the species, ``splits`` random halves)."""
    y = np.asarray(labels)
    g = np.asarray(groups)
    species = np.unique(y)
    rng = np.random.default_rng(0)
    results = []
    for _ in range(splits):
        known = rng.permutation(species)[: len(species) // 2]
        support_rows, query_known = [], []
        for s in known:
            rows = np.flatnonzero(y == s)
            order = rng.permutation(np.unique(g[rows]))
            support_groups = set(order[: max(1, min(shots, len(order) - 1))])
            support = [r for r in rows if g[r] in support_groups][:shots]
            support_rows.append(support)
            query_known += [r for r in rows if g[r] not in support_groups]
        query_unknown = np.flatnonzero(~np.isin(y, known))
        flat = np.concatenate(support_rows)
        queries = np.concatenate([query_known, query_unknown]).astype(int)
        support, query = cl2n(vectors[flat], vectors[queries])
        sizes = np.cumsum([0] + [len(r) for r in support_rows])
        prototypes = l2_normalise(
            np.stack([support[a:b].mean(axis=0) for a, b in itertools.pairwise(sizes)])
        )
        best = (query @ prototypes.T).max(axis=1)
        # known queries are the positives (higher best similarity), unknown the negatives
        area = auroc(best[len(query_known) :], best[: len(query_known)])
        results.append(float("nan") if area is None else area)
    return float(np.mean(results))


def scores(vectors: np.ndarray, labels: list, groups: list, episodes: int, splits: int) -> dict:
    return {
        **few_shot_scores(vectors, labels, groups, episodes),
        "unknown_auroc": unknown_species_auroc(vectors, labels, groups, splits),
    }


def run_variant(variant: Variant, data: dict, episodes: int, splits: int) -> dict:
    model = variant.model()
    kwargs = {} if variant.decode_threads is None else {"num_workers": variant.decode_threads}
    embedder = Embedder(model, runtime=variant.runtime, **kwargs)
    warm = data[next(iter(data))][0][: embedder.batch_size]
    embedder.embed_paths(warm, progress=False)  # export/warm-up outside the timing
    result: dict = {"runtime": embedder.runtime, "backbone": variant.backbone, "datasets": {}}
    seconds = 0.0
    images = 0
    for name, (paths, labels, groups) in data.items():
        started = time.perf_counter()
        embedded = embedder.embed_paths(paths, progress=False, desc=name)
        seconds += time.perf_counter() - started
        images += len(paths)
        kept = {p: i for i, p in enumerate(paths)}
        rows = [kept[p] for p in embedded.paths]
        result["datasets"][name] = scores(
            embedded.embeddings,
            [labels[i] for i in rows],
            [groups[i] for i in rows],
            episodes,
            splits,
        )
    result["images_per_s"] = images / seconds
    return result


def print_table(report: dict) -> None:
    base = report["rows"][0]["images_per_s"]
    names = list(DATASETS)
    header = "| backbone · loading | runtime | " + " | ".join(
        f"{n} 1-shot | 5-shot | R@1 | unk. AUROC" for n in names
    )
    print(header + " | img/s | × today |")
    print("|" + "---|" * (2 + 4 * len(names) + 2))
    for row in report["rows"]:
        cells = [row["name"], row["runtime"]]
        for n in names:
            s = row["datasets"][n]
            cells += [
                f"{100 * s['1shot']:.1f}",
                f"{100 * s['5shot']:.1f}",
                f"{100 * s['recall@1']:.1f}",
                f"{s['unknown_auroc']:.3f}",
            ]
        cells += [f"{row['images_per_s']:.1f}", f"{row['images_per_s'] / base:.2f}"]
        print("| " + " | ".join(cells) + " |")
    ci = {n: report["rows"][0]["datasets"][n]["1shot_ci95"] for n in names}
    print(
        "95 % CI of 1-shot: "
        + ", ".join(f"{n} ±{100 * v:.1f}" for n, v in ci.items())
        + f"; {report['episodes']} episodes, {report['splits']} unknown-species splits"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "datasets")
    parser.add_argument("--per-class", type=int, default=15, help="photos per class (default 15)")
    parser.add_argument("--episodes", type=int, default=600)
    parser.add_argument("--splits", type=int, default=10)
    parser.add_argument("--only", help="comma-separated row numbers to run (0 = baseline)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    data = {
        name: photos(args.shared / name, group, args.per_class, seed=0)
        for name, group in DATASETS.items()
    }
    chosen = [VARIANTS[int(i)] for i in args.only.split(",")] if args.only else VARIANTS
    if chosen[0] != BASELINE:
        chosen = [BASELINE, *chosen]
    report = {
        "episodes": args.episodes,
        "splits": args.splits,
        "per_class": args.per_class,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "torch_threads": torch.get_num_threads(),
        "rows": [],
    }
    for variant in chosen:
        started = time.perf_counter()
        row = {"name": variant.name, **run_variant(variant, data, args.episodes, args.splits)}
        report["rows"].append(row)
        print(
            f"{variant.name} ({row['runtime']}): {row['images_per_s']:.1f} img/s, "
            f"{time.perf_counter() - started:.0f} s",
            flush=True,
        )
    report["load_average_1min"] = os.getloadavg()[0]
    print_table(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
