"""Decisions benchmark: how well the index turns vectors into answers, next to the previous
default and a logistic-regression probe, in one run.

    .venv/bin/python benchmarks/decision_benchmark.py [--seeds 2] [--datasets ...]

Data: ../shared/datasets, embedded once with the default backbone (the evaluation cache,
``$SHELLID_CACHE_DIR``). Per dataset and seed, 30 % of the species are never enrolled
(leave-species-out); of the others, K photos from distinct specimens / tracks are enrolled
(K = 1, 5, 20; "all" = 70 % of each species' specimens) and the remaining specimens are the
known queries. Columns:

- ``previous``: the index as of commit :data:`BASELINE_COMMIT` (prototype + nearest-specimen
  cosine, temperature fitted without a "none of these" outcome), imported from git.
- ``prototypes``: today's index with ``method="prototype"`` (CL2N prototype cosine).
- ``default``: today's default (whitened prototypes on Hellinger-mapped vectors, see
  index/whitening.py and ``IdentifierConfig.feature_power``).
- ``unmapped``: the default with ``feature_power=1`` (vectors as embedded; OOD floor 0.40,
  its raw-cosine value).
- ``probe``: class-balanced logistic regression fitted on the enrolled vectors (C=10),
  open-set score 1 - max probability; a closed-set reference with no thresholds.

Figures: top-1 of known queries; unknown-species AUROC; the shares of unknown-species photos
rejected (``unknown_species`` or ``out_of_domain``) and of known photos kept at the calibrated
thresholds; the share of known photos named correctly with a ``species`` decision; ECE of the
top species probability over all known photos, and over the answers that show probabilities
(today's index shows none on ``unknown_species`` / ``out_of_domain``; the previous one did).
Part 2: the two species with the most specimens of each set, many photos each. Part 3 (printed
last) times the covariance refit at 10^4 and 10^6 vectors. Part 4: the default with a
within-species prior from training data (``shellid prior``), see :func:`prior_part`.
"""

from __future__ import annotations

import argparse
import importlib
import io
import subprocess
import sys
import tarfile
import tempfile
import time
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from embedder import Embedder, load_model  # noqa: E402
from embedder.datasets import ImageRecord, group_split, scan_collection, shots_split  # noqa: E402
from embedder.settings import EmbedderSettings  # noqa: E402
from index.calibration import auroc, expected_calibration_error  # noqa: E402
from index.classifier import VectorIdentifier  # noqa: E402
from index.config import IdentifierConfig  # noqa: E402
from index.prototypes import l2_normalise  # noqa: E402
from index.results import REJECTIONS  # noqa: E402
from index.rows import SpecimenRows  # noqa: E402
from index.whitening import Whitening, WithinSpeciesPrior  # noqa: E402
from index.workflows.evaluation.cache import EmbeddingCache  # noqa: E402
from index.workflows.evaluation.metrics import REPORTED_KNOWN_RECALL, fpr_at_recall  # noqa: E402

#: the last commit before the decision layer was rebuilt (issue 10).
BASELINE_COMMIT = "8abbf92"
DATASETS = {
    "shells-zhang8": "specimen",
    "fish4k-23": "track",
    "birds-cub-base100": "image",
}
SHOTS: tuple[int | str, ...] = (1, 5, 20, "all")
METHODS = ("previous", "prototypes", "unmapped", "default", "probe")


def baseline_identifier(commit: str) -> type:
    """``VectorIdentifier`` of ``index/`` at ``commit``, imported as a separate package."""
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", commit, "index"],
        check=True,
        capture_output=True,
    ).stdout
    root = Path(tempfile.mkdtemp(prefix="shellid-baseline-"))
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(root, filter="data")
    (root / "index").rename(root / "shellid_previous_index")
    sys.path.insert(0, str(root))
    return importlib.import_module("shellid_previous_index.classifier").VectorIdentifier


def embed(records: list[ImageRecord], cache: EmbeddingCache, name: str):
    result = cache.embed_paths([r.path for r in records], desc=f"embedding {name}")
    kept = {str(p) for p in result.paths}
    records = [r for r in records if str(r.path) in kept]
    return records, l2_normalise(result.embeddings)


def split(records, shots, seed):
    """(enrolled, known queries, unknown queries) for one seed."""
    rng = np.random.default_rng(seed)
    species = sorted({r.species for r in records})
    unknown = set(rng.choice(species, max(2, round(0.3 * len(species))), replace=False))
    known = [r for r in records if r.species not in unknown]
    if shots == "all":
        enrolled, queries = group_split(known, test_fraction=0.3, seed=seed)
    else:
        enrolled, queries = shots_split(known, int(shots), seed=seed)
    strangers = [r for r in records if r.species in unknown]
    if len(strangers) > 800:
        strangers = [strangers[i] for i in rng.choice(len(strangers), 800, replace=False)]
    return enrolled, queries, strangers


def rejected_at_recall(known: np.ndarray, unknown: np.ndarray) -> float:
    """Share of ``unknown`` scores above the threshold that keeps the reports' known recall
    (:data:`REPORTED_KNOWN_RECALL`) of ``known``: the same operating point for every method."""
    return 1.0 - fpr_at_recall(known, unknown, REPORTED_KNOWN_RECALL)


def probe_scores(train_x, train_y, names, queries):
    from sklearn.linear_model import LogisticRegression

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = LogisticRegression(C=10.0, max_iter=500, class_weight="balanced")
        model.fit(train_x, train_y)
    probs = np.zeros((len(queries), len(names)), np.float32)
    probs[:, [names.index(c) for c in model.classes_]] = model.predict_proba(queries)
    return probs


def evaluate(method, previous_cls, enrolled, vx, queries, qx, strangers, sx, prior=None) -> dict:
    """Figures of one method on one split (open-set ones only when there are ``strangers``);
    ``prior``: the default's :class:`WithinSpeciesPrior` (part 4)."""
    names = sorted({r.species for r in enrolled})
    truth = np.array([names.index(r.species) for r in queries])
    out: dict[str, float] = {}
    if method == "probe":
        train_y = [r.species for r in enrolled]
        known = probe_scores(vx, train_y, names, qx)
        correct = known.argmax(1) == truth
        out["top1"] = float(correct.mean())
        out["ece"] = expected_calibration_error(known.max(1), correct)
        if strangers:
            unknown = probe_scores(vx, train_y, names, sx)
            out["auroc"] = auroc(1 - known.max(1), 1 - unknown.max(1)) or 0.0
            out["rejected95"] = rejected_at_recall(1 - known.max(1), 1 - unknown.max(1))
        return out
    args = dict(
        vectors=vx,
        species=[r.species for r in enrolled],
        groups=[r.group for r in enrolled],
    )
    if method == "previous":
        identifier = previous_cls.fit(**args)
    else:
        config = {
            "prototypes": IdentifierConfig(method="prototype"),
            # the raw-cosine floor of the OOD threshold that went with vectors as embedded
            "unmapped": IdentifierConfig(feature_power=1.0, fallback_ood_similarity=0.40),
        }.get(method)
        identifier = VectorIdentifier.fit(SpecimenRows(**args), config=config, prior=prior)
    known = identifier.score_batch(qx)
    assert known.species == names
    correct = known.similarities.argmax(1) == truth  # the same ranking as the probabilities
    decisions = np.array(known.decisions)
    out["top1"] = float(correct.mean())
    out["kept"] = float((~np.isin(decisions, list(REJECTIONS))).mean())
    out["named"] = float(((decisions == "species") & correct).mean())
    out["ece"] = expected_calibration_error(known.probabilities.max(1), correct)
    shown = ~np.isin(decisions, list(REJECTIONS))  # answers that show probabilities
    if method != "previous":  # the previous index showed them on rejections too
        out["ece_shown"] = expected_calibration_error(
            known.probabilities.max(1)[shown], correct[shown]
        )
    out["temperature"] = identifier.thresholds.temperature
    if strangers:
        unknown = identifier.score_batch(sx)
        out["auroc"] = auroc(known.unknown_score, unknown.unknown_score) or 0.0
        out["rejected95"] = rejected_at_recall(known.unknown_score, unknown.unknown_score)
        out["rejected"] = float(np.isin(unknown.decisions, list(REJECTIONS)).mean())
    return out


def decisions_part(args, previous_cls) -> None:
    settings = EmbedderSettings.load()  # read once: SHELLID_RUNTIME, SHELLID_CACHE_DIR
    embedder = Embedder(load_model(None), **settings.embedder_options())
    cache = EmbeddingCache(embedder, settings.cache_root())
    figures: dict = defaultdict(lambda: defaultdict(list))
    for name in args.datasets:
        records = scan_collection(args.data / name, group_pattern=DATASETS[name])
        records, vectors = embed(records, cache, name)
        row = {str(r.path): i for i, r in enumerate(records)}

        def take(part, vectors=vectors, row=row):
            return vectors[[row[str(r.path)] for r in part]]

        if args.pairs:
            pairs_part(name, records, take, previous_cls)
        for shots in SHOTS if args.shots else ():
            for seed in range(args.seeds):
                enrolled, queries, strangers = split(records, shots, seed)
                if not queries:
                    continue
                parts = (take(enrolled), queries, take(queries), strangers, take(strangers))
                for method in METHODS:
                    started = time.perf_counter()
                    result = evaluate(method, previous_cls, enrolled, parts[0], *parts[1:])
                    result["seconds"] = time.perf_counter() - started
                    for key, value in result.items():
                        figures[(name, str(shots))][(method, key)].append(value)
            print_block(name, shots, figures[(name, str(shots))])


def pairs_part(name: str, records, take, previous_cls, seeds: int = 5) -> None:
    """Many photos, two species (the case a user measured at 89 % over HTTP): the two species
    with the most specimens, 70 % of their specimens enrolled, the rest identified."""
    counts = defaultdict(set)
    for r in records:
        counts[r.species].add(r.group)
    pair = sorted(counts, key=lambda s: -len(counts[s]))[:2]
    chosen = [r for r in records if r.species in pair]
    top1: dict[str, list[float]] = defaultdict(list)
    for seed in range(seeds):
        enrolled, queries = group_split(chosen, test_fraction=0.3, seed=seed)
        for method in METHODS:
            result = evaluate(
                method, previous_cls, enrolled, take(enrolled), queries, take(queries), [], None
            )
            top1[method].append(result["top1"])
    sizes = ", ".join(f"{s} ({len(counts[s])} specimens)" for s in pair)
    print(f"\n{name}, two species with many photos: {sizes}; top-1 %, {seeds} splits")
    print("  " + "".join(f"{m:>12}" for m in METHODS))
    print("  " + "".join(f"{100 * np.mean(top1[m]):12.1f}" for m in METHODS))


PRIOR_COLUMNS = ("default", "same kind", "other kind", "probe")


def prior_part(args) -> None:
    """A prior from training data (``shellid prior``): half of each set's species stand for
    the model's training data, the other half for the collection enrolled later (30 % of it
    never enrolled, as in part 1). Columns: the default without a prior, with the prior of
    the training half ("same kind"), with the prior of another whole set ("other kind"), and
    the probe; all on the same splits of the collection half."""
    settings = EmbedderSettings.load()
    embedder = Embedder(load_model(None), **settings.embedder_options())
    cache = EmbeddingCache(embedder, settings.cache_root())
    loaded = {}
    for name in DATASETS:
        records = scan_collection(args.data / name, group_pattern=DATASETS[name])
        loaded[name] = embed(records, cache, name)

    def prior_of(records, vectors):
        species = np.array([r.species for r in records])
        specimens = np.array([f"{r.species}\x00{r.group}" for r in records])
        return WithinSpeciesPrior.of_collection(vectors, species, specimens)

    for name in args.datasets:
        records, vectors = loaded[name]
        other = "fish4k-23" if name != "fish4k-23" else "birds-cub-base100"
        other_prior = prior_of(*loaded[other])
        row = {str(r.path): i for i, r in enumerate(records)}

        def take(part, vectors=vectors, row=row):
            return vectors[[row[str(r.path)] for r in part]]

        figures: dict = defaultdict(lambda: defaultdict(list))
        for seed in range(args.seeds):
            rng = np.random.default_rng(100 + seed)
            species = sorted({r.species for r in records})
            training = set(rng.choice(species, len(species) // 2, replace=False))
            train = [r for r in records if r.species in training]
            rest = [r for r in records if r.species not in training]
            same_prior = prior_of(train, take(train))
            for shots in SHOTS:
                enrolled, queries, strangers = split(rest, shots, seed)
                if not queries:
                    continue
                parts = (take(enrolled), queries, take(queries), strangers, take(strangers))
                for column, method, prior in (
                    ("default", "default", None),
                    ("same kind", "default", same_prior),
                    ("other kind", "default", other_prior),
                    ("probe", "probe", None),
                ):
                    result = evaluate(method, None, enrolled, *parts, prior=prior)
                    for key, value in result.items():
                        figures[str(shots)][(column, key)].append(value)
        print(
            f"\n{name}: a prior from training data — half the species train it, the other "
            f"half are the collection; other kind = the prior of {other}; mean of seeds"
        )
        print(f"  {'figure':<46}" + "".join(f"{c:>12}" for c in PRIOR_COLUMNS))
        for shots in SHOTS:
            block = figures[str(shots)]
            for label, key, percent in (
                ("top-1", "top1", True),
                ("unknown-species AUROC", "auroc", False),
                ("unknown rejected at 95 % known kept", "rejected95", True),
                ("ECE of probabilities shown", "ece_shown", True),
            ):
                cells = "".join(
                    f"{fmt(block.get((c, key), []), percent):>12}" for c in PRIOR_COLUMNS
                )
                print(f"  {f'{shots} photo(s): {label}':<46}{cells}")


def fmt(values: list[float], percent: bool = True) -> str:
    if not values:
        return "—"
    mean = float(np.mean(values))
    return f"{100 * mean:5.1f}" if percent else f"{mean:5.3f}"


def print_block(name: str, shots, block) -> None:
    print(f"\n{name}, {shots} photo(s) per enrolled species (mean of seeds; % unless noted)")
    print(f"  {'figure':<34}" + "".join(f"{m:>12}" for m in METHODS))
    rows = (
        ("top-1", "top1", True),
        ("unknown-species AUROC", "auroc", False),
        ("unknown rejected at 95 % known kept", "rejected95", True),
        ("unknown photos rejected", "rejected", True),
        ("known photos kept", "kept", True),
        ("known named right (species)", "named", True),
        ("ECE of top probability", "ece", True),
        ("ECE of probabilities shown", "ece_shown", True),
        ("temperature", "temperature", False),
    )
    for label, key, percent in rows:
        cells = "".join(f"{fmt(block.get((m, key), []), percent):>12}" for m in METHODS)
        print(f"  {label:<34}{cells}")
    best_other = max(np.mean(block[("prototypes", "top1")]), np.mean(block[("probe", "top1")]))

    def mean(method: str, key: str) -> float:
        return float(np.mean(block[(method, key)]))

    print(
        f"  default top-1 / best of prototypes and probe: "
        f"{mean('default', 'top1') / best_other:.3f}x; unknown rejected at 95 % known kept, "
        f"default / previous: "
        f"{mean('default', 'rejected95') / max(mean('previous', 'rejected95'), 1e-9):.2f}x"
    )


def refit_part() -> None:
    """Covariance refit time at 10^4 and 10^6 enrolled vectors (synthetic, 1280-d)."""
    print("\nRefit of the within-species covariance (synthetic 1280-d vectors, 1,000 species)")
    rng = np.random.default_rng(0)
    times = {}
    for n in (10_000, 1_000_000):
        species = rng.integers(0, 1000, n)
        vectors = np.empty((n, 1280), np.float32)
        centres = rng.normal(size=(1000, 1280)).astype(np.float32)
        for start in range(0, n, 100_000):
            block = rng.normal(size=(min(100_000, n - start), 1280)).astype(np.float32)
            block += 0.5 * centres[species[start : start + len(block)]]
            vectors[start : start + len(block)] = l2_normalise(block)
        started = time.perf_counter()
        Whitening.fit(vectors, species, np.arange(n))
        times[n] = time.perf_counter() - started
        print(f"  {n:>9,} vectors: {times[n]:6.2f} s")
        del vectors
    print(f"  10^6 / 10^4: {times[1_000_000] / times[10_000]:.1f}x for 100x the vectors")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "datasets")
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--skip-refit", action="store_true")
    parser.add_argument(
        "--no-shots", dest="shots", action="store_false", help="skip the per-shot tables"
    )
    parser.add_argument(
        "--no-pairs", dest="pairs", action="store_false", help="skip the two-species case"
    )
    parser.add_argument(
        "--no-prior", dest="prior", action="store_false", help="skip the prior from training data"
    )
    args = parser.parse_args(argv)
    previous_cls = baseline_identifier(BASELINE_COMMIT)
    decisions_part(args, previous_cls)
    if args.prior:
        prior_part(args)
    if not args.skip_refit:
        refit_part()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
