"""``evaluate_collection``: every figure of ``shellid evaluate`` for one labelled collection.

Methods compared on the same splits (see docs/evaluation.md):

* ``model``  — the given MODEL.pt; prototypes through :class:`index.VectorIdentifier`;
* ``frozen`` — the frozen default backbone; prototypes through :class:`index.VectorIdentifier`;
* ``probe``  — logistic regression on the frozen embeddings (a supervised baseline).

Without a MODEL.pt the model *is* the frozen backbone and only ``frozen`` and ``probe`` are
reported.
"""

from __future__ import annotations

import json
import math
import random
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from tqdm.auto import tqdm

from embedder import EmbeddingModel, ImageRecord, load_model, scan_collection
from embedder.datasets import group_split, images_in, select_species, shots_split
from embedder.embedding import Embedder
from embedder.episodes import summarize
from embedder.vectors import l2_normalise
from index.classifier import VectorIdentifier
from index.config import EvaluationConfig, IdentifierConfig
from index.open_set import OPEN_SET_SCORES
from index.results import REJECTIONS, Placement
from index.rows import SpecimenRows
from index.whitening import WithinSpeciesPrior

from .bootstrap import bootstrap_f1
from .cache import EmbeddingCache
from .fewshot import (
    Predictor,
    episodic_accuracies,
    probe_predict,
    prototype_predict,
)
from .metrics import closed_set_metrics
from .openset import (
    decision_rates,
    holdout_species,
    open_set_figures,
    open_set_thresholds,
    placement_figures,
)

SCHEMA_VERSION = 2  # 2: open_set methods gain placement
IDENTIFIER = "the default identifier (index.VectorIdentifier)"
PROBE = "logistic regression (scikit-learn, C=1)"


class EvaluationError(ValueError):
    """A collection or option that cannot be evaluated (too few species, bad class list)."""


@dataclass
class EvaluationResult:
    """``figures``: every figure (``--json``); ``plots``: arrays the report draws."""

    figures: dict
    plots: dict = field(default_factory=dict)

    def to_json(self) -> str:
        """The figures as strict JSON (NaN and infinities become ``null``)."""
        return json.dumps(json_ready(self.figures), indent=2, allow_nan=False) + "\n"


def json_ready(value):
    """A copy of ``value`` with numpy scalars as Python numbers and NaN/inf as ``None``."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_ready(value.tolist())
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    return value


# --------------------------------------------------------------------------- selection
def choose_species(
    all_species: Sequence[str], classes: str, model: EmbeddingModel | None
) -> list[str]:
    """Species named by ``--classes``: ``all``, ``novel`` / ``base`` (relative to the species
    the model was trained or validated on), a comma-separated list, or ``@FILE`` (one a line)."""
    names = sorted(set(all_species))
    spec = classes.strip()
    if spec in ("novel", "base"):
        if model is None or not model.classes:
            raise EvaluationError(
                f"--classes {spec} needs --model MODEL.pt trained with a class list; "
                "the frozen backbone was not trained on any species"
            )
        seen = set(model.classes) | set(model.metrics.get("val_classes") or [])
        chosen = [s for s in names if (s not in seen) == (spec == "novel")]
    elif spec == "all":
        chosen = names
    else:
        if spec.startswith("@"):
            path = Path(spec[1:])
            if not path.is_file():
                raise EvaluationError(f"class list {path} not found")
            wanted = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        else:
            wanted = [s.strip() for s in spec.split(",") if s.strip()]
        missing = sorted(set(wanted) - set(names))
        if missing:
            raise EvaluationError(f"species not in the collection: {', '.join(missing[:5])}")
        chosen = sorted(set(wanted))
    if len(chosen) < 2:
        raise EvaluationError(
            f"--classes {classes!r} leaves {len(chosen)} species; at least 2 are needed"
        )
    return chosen


# --------------------------------------------------------------------------- methods
class _Method:
    """One way of answering: an identifier over one embedding, or the logistic probe."""

    def __init__(
        self, name: str, embedding: str, kind: str, prior: WithinSpeciesPrior | None = None
    ) -> None:
        self.name: str = name
        self.embedding: str = embedding
        self.kind: str = kind  # "identifier" or "probe"
        self.prior = prior  # the model's within-species prior (identifiers only)

    def describe(self) -> dict[str, str]:
        described = {
            "embedding": self.embedding,
            "classifier": IDENTIFIER if self.kind == "identifier" else PROBE,
        }
        if self.prior is not None:
            described["prior"] = (
                f"the model's within-species prior ({self.prior.dof} degrees of freedom)"
            )
        return described


def _fit_probe(x: np.ndarray, y: Sequence[str], seed: int) -> LogisticRegression:
    probe = LogisticRegression(C=1.0, max_iter=2000, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        probe.fit(l2_normalise(x), list(y))
    return probe


def _taxonomy(records: Sequence[ImageRecord]) -> dict[str, dict[str, str]]:
    return {r.species: dict(r.taxonomy) for r in records}


# --------------------------------------------------------------------------- main
def evaluate_collection(
    root: str | Path,
    model_path: str | Path | None = None,
    config: EvaluationConfig | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> EvaluationResult:
    """Closed-set, few-shot and open-set figures of the model, the frozen backbone and the
    logistic probe on ``root/<species>/*`` (see the module docstring)."""
    cfg = config or EvaluationConfig()
    started = time.perf_counter()
    timings: dict[str, float] = {}
    records = scan_collection(root, group_pattern=cfg.group_pattern)
    model = load_model(model_path) if model_path else None
    species = choose_species([r.species for r in records], cfg.classes, model)
    records = select_species(records, species)

    embedders: dict[str, EmbeddingModel] = {"frozen": load_model(None)}
    if model is not None:
        embedders = {"model": model, **embedders}
    methods = [_Method(n, n, "identifier", _prior_of(m)) for n, m in embedders.items()] + [
        _Method("probe", "frozen", "probe")
    ]
    caches = {n: EmbeddingCache(Embedder(m), cache_dir) for n, m in embedders.items()}
    vectors, records, unreadable = _embed_records(records, caches, progress)
    timings["embedding"] = time.perf_counter() - started
    if len({r.species for r in records}) < 2:
        raise EvaluationError("fewer than 2 species have readable images")
    log(
        f"{len(records)} images of {len({r.species for r in records})} species"
        + (f" ({len(unreadable)} unreadable, skipped)" if unreadable else "")
        + f"; methods: {', '.join(m.name for m in methods)}"
    )

    figures = _header(root, model_path, cfg, records, unreadable, embedders, methods)
    plots: dict = {"train_counts": {}}

    t = time.perf_counter()
    figures["closed_set"] = _closed_set(records, vectors, methods, cfg, plots)
    timings["closed_set"] = time.perf_counter() - t
    t = time.perf_counter()
    figures["few_shot"] = _few_shot(records, vectors, methods, cfg, progress)
    timings["few_shot"] = time.perf_counter() - t
    t = time.perf_counter()
    if len({r.species for r in records}) >= 3:
        figures["open_set"] = _open_set(records, vectors, methods, caches, cfg, plots, progress)
    else:
        figures["open_set"] = {"error": "open-set figures need at least 3 species"}
    timings["open_set"] = time.perf_counter() - t
    plots["prototypes"] = _prototypes(records, vectors)
    timings["total"] = time.perf_counter() - started
    figures["timings_s"] = {k: round(v, 2) for k, v in timings.items()}
    return EvaluationResult(figures, plots)


def _header(
    root: str | Path,
    model_path: str | Path | None,
    cfg: EvaluationConfig,
    records: Sequence[ImageRecord],
    unreadable: dict[str, str],
    embedders: dict[str, EmbeddingModel],
    methods: list[_Method],
) -> dict:
    """What the figures are of: schema, time, data, configuration, models and methods."""
    return {
        "schema_version": SCHEMA_VERSION,
        "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "data": {
            "root": str(root),
            "images": len(records),
            "species": len({r.species for r in records}),
            "unreadable": unreadable,
            "species_list": sorted({r.species for r in records}),
        },
        "config": cfg.to_dict(),
        "models": {
            name: {
                "name": m.name,
                "fingerprint": m.fingerprint,
                "dim": m.dim,
                "path": str(model_path) if name == "model" else None,
            }
            for name, m in embedders.items()
        },
        "model_is_frozen": "model" not in embedders,
        "methods": {m.name: m.describe() for m in methods},
    }


def _embed_records(
    records: Sequence[ImageRecord], caches: dict[str, EmbeddingCache], progress: bool
) -> tuple[dict[str, np.ndarray], list[ImageRecord], dict[str, str]]:
    """Embeddings of every record by every model, rows aligned; records unreadable by any
    model are dropped and returned with their reason."""
    results = {
        name: cache.embed_paths(
            [r.path for r in records], progress=progress, desc=f"embedding ({name})"
        )
        for name, cache in caches.items()
    }
    unreadable: dict[str, str] = {}
    for result in results.values():
        unreadable.update(result.errors)
    kept = [r for r in records if str(r.path) not in unreadable]
    vectors = {}
    for name, result in results.items():
        row = {str(p): i for i, p in enumerate(result.paths)}
        vectors[name] = result.embeddings[[row[str(r.path)] for r in kept]]
    return vectors, kept, unreadable


@dataclass
class QueryScores:
    """One method's answers for one query set (rows = queries, columns = its species)."""

    probabilities: np.ndarray
    open_set: dict[str, np.ndarray]  # open-set score name -> (m,), higher = more novel
    decisions: list[str] | None  # None for the probe (no open-set decisions)
    placements: list[Placement | None] = field(default_factory=list)  # identifier only


@dataclass
class FittedMethod:
    """A method fitted on enrolled rows: its species order, scores per query set, and the
    identifier (None for the probe)."""

    species: list[str]
    scores: dict[str, QueryScores]
    identifier: VectorIdentifier | None


def _prior_of(model: EmbeddingModel) -> WithinSpeciesPrior | None:
    """The within-species prior a model file carries (see ``shellid prior``), if any."""
    arrays = model.within_species_prior
    return None if arrays is None else WithinSpeciesPrior.from_arrays(arrays)


def _fit_and_score(
    method: _Method,
    vectors: dict[str, np.ndarray],
    train: np.ndarray,
    train_records: Sequence[ImageRecord],
    queries: dict[str, np.ndarray],
    cfg: EvaluationConfig,
    calibrate: bool = True,
) -> FittedMethod:
    """Fit ``method`` on the ``train`` rows and score every query set."""
    x = vectors[method.embedding]
    labels = [r.species for r in train_records]
    scores: dict[str, QueryScores] = {}
    if method.kind == "identifier":
        ident = VectorIdentifier.fit(
            SpecimenRows(
                x[train], labels, _taxonomy(train_records), groups=[r.group for r in train_records]
            ),
            config=IdentifierConfig(target_recall=cfg.target_recall, seed=cfg.seed),
            calibrate=calibrate,
            prior=method.prior,
        )
        for name, q in queries.items():
            if len(q):
                batch = ident.score_batch(q)
                scores[name] = QueryScores(
                    batch.probabilities, batch.open_set, batch.decisions, batch.placements
                )
            else:
                none = {score: np.zeros(0) for score in ident.open_set.names()}
                scores[name] = QueryScores(np.zeros((0, len(ident.species))), none, [])
        return FittedMethod(list(ident.species), scores, ident)
    probe = _fit_probe(x[train], labels, cfg.seed)
    for name, q in queries.items():
        if len(q):
            probs = probe.predict_proba(l2_normalise(q))
        else:
            probs = np.zeros((0, len(probe.classes_)))
        msp = 1.0 - probs.max(axis=1) if len(q) else np.zeros(0)
        scores[name] = QueryScores(probs, dict.fromkeys(OPEN_SET_SCORES, msp), None)
    return FittedMethod([str(c) for c in probe.classes_], scores, None)


def _closed_set(records, vectors, methods, cfg, plots) -> dict:
    train_recs, test_recs = group_split(records, cfg.test_fraction, cfg.seed)
    if not test_recs:
        raise EvaluationError(
            "no test images: every species has a single specimen/group (check --group-regex)"
        )
    row = {id(r): i for i, r in enumerate(records)}
    train = np.asarray([row[id(r)] for r in train_recs])
    test = np.asarray([row[id(r)] for r in test_recs])
    truth = [r.species for r in test_recs]
    counts: dict[str, int] = {}
    for r in train_recs:
        counts[r.species] = counts.get(r.species, 0) + 1
    plots["train_counts"] = counts
    result: dict = {"train_images": len(train), "test_images": len(test), "methods": {}}
    for method in methods:
        queries = {"test": vectors[method.embedding][test]}
        fitted = _fit_and_score(method, vectors, train, train_recs, queries, cfg)
        test_scores = fitted.scores["test"]
        probs = test_scores.probabilities
        shown = (
            None
            if test_scores.decisions is None
            else ~np.isin(test_scores.decisions, list(REJECTIONS))
        )
        metrics = closed_set_metrics(fitted.species, probs, truth, shown=shown).to_dict()
        predicted = [fitted.species[j] for j in probs.argmax(axis=1)]
        metrics["bootstrap"] = bootstrap_f1(
            truth,
            predicted,
            resamples=cfg.bootstrap_resamples,
            max_per_species=cfg.bootstrap_max_per_species,
            seed=cfg.seed,
        ).to_dict()
        metrics["specimen_accuracy"] = _specimen_accuracy(
            fitted.identifier, test_recs, queries["test"]
        )
        metrics["decision_rates"] = (
            decision_rates(test_scores.decisions) if test_scores.decisions is not None else None
        )
        result["methods"][method.name] = metrics
    return result


def _specimen_accuracy(
    identifier: VectorIdentifier | None, test_recs: Sequence[ImageRecord], x: np.ndarray
) -> float | None:
    """Top-1 accuracy of ``VectorIdentifier.identify`` on all views of each test specimen
    (fused), or None for the probe or when every specimen has one image."""
    if identifier is None:
        return None
    by_group: dict[str, list[int]] = {}
    for i, r in enumerate(test_recs):
        by_group.setdefault(r.group, []).append(i)
    if len(by_group) == len(test_recs):
        return None
    correct = 0
    for rows in by_group.values():
        answer = identifier.identify(x[rows], top_k=1)
        correct += int(answer.candidates[0].species == test_recs[rows[0]].species)
    return correct / len(by_group)


def _few_shot(records, vectors, methods, cfg, progress) -> dict:
    labels = [r.species for r in records]
    groups = [r.group for r in records]
    predictors: dict[str, tuple[str, Predictor]] = {
        m.name: (m.embedding, prototype_predict if m.kind == "identifier" else probe_predict)
        for m in methods
    }
    episodic: dict = {}
    all_way: dict = {}
    for k in tqdm(cfg.shots, desc="few-shot", unit="setting", disable=not progress):
        n_way = min(cfg.n_way, len(set(labels)))
        try:
            results = episodic_accuracies(
                vectors, predictors, labels, groups, n_way, k, cfg.n_query, cfg.episodes, cfg.seed
            )
            episodic[str(k)] = {
                "n_way": n_way,
                "k_shot": k,
                "methods": {n: r.to_dict() for n, r in results.items()},
            }
        except ValueError as exc:
            episodic[str(k)] = {"n_way": n_way, "k_shot": k, "error": str(exc)}
        all_way[str(k)] = _all_way(records, vectors, methods, k, cfg)
    return {"episodic": episodic, "all_way": all_way}


def _all_way(records, vectors, methods, k, cfg) -> dict:
    """Every species at once with ``k`` enrolled images each (distinct specimens), the rest as
    queries; repeated ``allway_repeats`` times with different draws."""
    row = {id(r): i for i, r in enumerate(records)}
    accuracies: dict[str, list[float]] = {m.name: [] for m in methods}
    n_species = 0
    for repeat in range(cfg.allway_repeats):
        support, query = shots_split(records, k, seed=cfg.seed + repeat)
        if not query:
            return {"k_shot": k, "error": "no queries left: species have too few specimens"}
        s = np.asarray([row[id(r)] for r in support])
        q = np.asarray([row[id(r)] for r in query])
        truth = np.asarray([r.species for r in query])
        n_species = len({r.species for r in support})
        for method in methods:
            fitted = _fit_and_score(
                method, vectors, s, support, {"q": vectors[method.embedding][q]}, cfg, False
            )
            best = fitted.scores["q"].probabilities.argmax(axis=1)
            predicted = np.asarray(fitted.species)[best]
            accuracies[method.name].append(float((predicted == truth).mean()))
    return {
        "k_shot": k,
        "n_way": n_species,
        "methods": {
            n: {"mean": r.mean, "ci95": r.ci95, "repeats": r.episodes}
            for n, r in ((n, summarize(a, n_species, k)) for n, a in accuracies.items())
        },
    }


def _ood_queries(
    cfg: EvaluationConfig, caches: dict[str, EmbeddingCache], progress: bool
) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, int]]:
    """Vectors of the off-domain folders (``cfg.ood_dirs``; at most ``cfg.max_ood_images``
    each) by embedding, and how many images of each every embedding read."""
    ood_vectors: dict[str, dict[str, np.ndarray]] = {name: {} for name in caches}
    ood_counts: dict[str, int] = {}
    for folder in cfg.ood_dirs:
        paths = images_in([folder])
        if not paths:
            raise EvaluationError(f"--ood {folder}: no images found")
        if len(paths) > cfg.max_ood_images:
            paths = sorted(random.Random(cfg.seed).sample(paths, cfg.max_ood_images))
        label = Path(folder).name or str(folder)
        for name, cache in caches.items():
            embedded = cache.embed_paths(
                paths, progress=progress, desc=f"embedding {label} ({name})"
            )
            ood_vectors[name][label] = embedded.embeddings
        ood_counts[label] = min(len(v[label]) for v in ood_vectors.values())
    return ood_vectors, ood_counts


def _identifier_figures(
    fitted: FittedMethod,
    identifier: VectorIdentifier,
    decisions: dict[str, list[str]],
    truth: list[str],
    unknown_recs: list[ImageRecord],
    train_recs: list[ImageRecord],
) -> dict:
    """The figures only an identifier gives: its thresholds, the share of known-species
    queries it names right, and how it places unknown species in their genus and family."""
    scored = fitted.scores
    best = scored["known"].probabilities.argmax(axis=1)
    named = [
        d == "species" and fitted.species[int(j)] == t
        for d, j, t in zip(decisions["known"], best, truth, strict=True)
    ]
    return {
        "thresholds": open_set_thresholds(identifier.thresholds),
        "known_species_correct": float(np.mean(named)) if named else float("nan"),
        "placement": placement_figures(
            scored["unknown"].placements,
            decisions["unknown"],
            {rank: [getattr(r, rank) for r in unknown_recs] for rank in ("genus", "family")},
            {rank: {getattr(r, rank) for r in train_recs} - {""} for rank in ("genus", "family")},
        ),
    }


def _open_set(records, vectors, methods, caches, cfg, plots, progress) -> dict:
    known, unknown = holdout_species([r.species for r in records], cfg.unknown_fraction, cfg.seed)
    known_recs = [r for r in records if r.species in set(known)]
    unknown_recs = [r for r in records if r.species in set(unknown)]
    train_recs, test_recs = group_split(known_recs, cfg.test_fraction, cfg.seed)
    row = {id(r): i for i, r in enumerate(records)}
    train = np.asarray([row[id(r)] for r in train_recs])
    test = np.asarray([row[id(r)] for r in test_recs])
    unk = np.asarray([row[id(r)] for r in unknown_recs])
    ood_vectors, ood_counts = _ood_queries(cfg, caches, progress)
    result: dict = {
        "known_species": known,
        "unknown_species": unknown,
        "enrolled_images": len(train),
        "known_queries": len(test),
        "unknown_queries": len(unk),
        "ood_queries": ood_counts,
        "target_recall": cfg.target_recall,
        "methods": {},
    }
    plots["scores"] = {}
    for method in methods:
        x = vectors[method.embedding]
        queries = {"known": x[test], "unknown": x[unk]}
        for label, ood in ood_vectors[method.embedding].items():
            queries[f"ood:{label}"] = ood
        fitted = _fit_and_score(method, vectors, train, train_recs, queries, cfg)
        scored = fitted.scores
        decisions = {k: v.decisions for k, v in scored.items() if v.decisions is not None}
        figures = open_set_figures(
            scored["known"].open_set,
            scored["unknown"].open_set,
            {k[4:]: v.open_set for k, v in scored.items() if k.startswith("ood:")},
            decisions if fitted.identifier is not None else None,
            cfg.target_recall,
        )
        if fitted.identifier is not None:
            figures |= _identifier_figures(
                fitted,
                fitted.identifier,
                decisions,
                [r.species for r in test_recs],
                unknown_recs,
                train_recs,
            )
        result["methods"][method.name] = figures
        plots["scores"][method.name] = {
            name: {score: np.asarray(values) for score, values in v.open_set.items()}
            for name, v in scored.items()
        }
    return result


def _prototypes(records, vectors) -> dict:
    """Species prototypes (L2-normalised means) per embedding, with genus and family."""
    species = sorted({r.species for r in records})
    taxon = {r.species: (r.genus, r.family) for r in records}
    labels = np.asarray([r.species for r in records])
    prototypes: dict[str, np.ndarray] = {}
    for name, x in vectors.items():
        prototypes[name] = l2_normalise(np.stack([x[labels == s].mean(axis=0) for s in species]))
    return {
        "species": species,
        "genus": [taxon[s][0] for s in species],
        "family": [taxon[s][1] for s in species],
        "vectors": prototypes,
    }
