"""Numpy-level identification: :class:`VectorIdentifier` turns query embeddings into calibrated
open-set answers against a set of enrolled embeddings.

Scoring (see docs/index.md): species score = cosine similarity to the species' CL2N
prototype in the collection's within-species whitened space (``method="whitened"``, the
default), to the plain prototype(s) (``"prototype"``), to its nearest enrolled specimen
(``"knn"``) or the mean of the last two; probabilities = softmax over the species at
temperature T, sharing the mass with "none of these" (scored at the unknown threshold, odds
against the best species at temperature T_none), so they leave room for an unknown species;
``unknown_score`` = 1 - best species score;
``ood_score`` = 1 - mean raw cosine similarity to the ``ood_k`` nearest specimens. Decisions:
out_of_domain, unknown_species, then species / genus / family roll-up when the probability
passes its threshold, else uncertain.

The parts: :mod:`index.enrolled` (rows and species tables), :mod:`index.scorers` (species,
unknown and OOD scores), :mod:`index.calibrate` (thresholds from held-out scores) and
:mod:`index.decision` (the decision policy and filters); this class ties them together.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import calibrate as calibration_procedure
from .calibration import open_set_probabilities
from .config import IdentifierConfig
from .decision import DecisionPolicy
from .decision import candidate_mask as species_mask
from .enrolled import EnrolledRows
from .errors import EmptyCollectionError, InvalidQueryError
from .placement import place
from .prototypes import fuse_views, power_normalise
from .results import (
    REJECTIONS,
    BatchScores,
    Candidate,
    Identification,
    Placement,
    SimilarSpecimen,
    Thresholds,
)
from .scorers import (
    Cl2n,
    MeanScorer,
    OodScorer,
    PrototypeScorer,
    SpeciesScorer,
    WhitenedScorer,
    species_scorer,
    unknown_scores,
)
from .search import VectorIndex
from .whitening import Whitening, WithinSpeciesPrior

__all__ = ["Refit", "VectorIdentifier"]


@dataclass(frozen=True)
class Refit:
    """A refit computed off the request path (:meth:`VectorIdentifier.prepare_refit`)."""

    whitening: Whitening | None
    thresholds: Thresholds | None
    generation: int = -1  # the rows it was computed for (VectorIdentifier.generation)


class VectorIdentifier:
    """Open-set species identification over enrolled embeddings (numpy in, numpy out).

    Build with :meth:`fit`; grow or shrink with :meth:`add` / :meth:`remove`; thresholds come
    from :meth:`calibrate` (run by ``fit``/``add``/``remove`` unless ``calibrate=False``) and
    can be overridden with :meth:`set_overrides` (kept through recalibration).
    """

    def __init__(
        self,
        dim: int,
        config: IdentifierConfig | None = None,
        prior: WithinSpeciesPrior | None = None,
    ) -> None:
        """``prior``: the model's within-species covariance (:class:`WithinSpeciesPrior`),
        the target the collection's own covariance is shrunk toward (whitened method)."""
        self.config = config or IdentifierConfig()
        self.dim = int(dim)
        cfg = self.config
        self.rows = EnrolledRows(
            self.dim,
            VectorIndex(
                self.dim,
                ann_threshold=cfg.ann_threshold,
                factory=cfg.ann_factory,
                nprobe=cfg.ann_nprobe,
                use_gpu=cfg.use_gpu,
                threads=cfg.faiss_threads,
            ),
        )
        self.cl2n = Cl2n(self.rows, cfg)
        if prior is not None and prior.basis.shape[0] != self.dim:
            raise ValueError(f"the prior is {prior.basis.shape[0]}-d, the vectors {self.dim}-d")
        self.prior = prior
        self.scorer = species_scorer(self.rows, self.cl2n, cfg, prior)
        self.ood_scorer = OodScorer(self.rows, cfg)
        self._overrides: dict[str, float] = {}
        self._calibrated = calibration_procedure.default_thresholds(cfg)
        self._thresholds = self._calibrated
        # how often the rows changed, and for which change the whitening / thresholds were fit
        self.generation = 0
        self._whitening_generation = 0
        self._threshold_generation = 0
        self._refresh()

    @property
    def taxonomy(self) -> dict[str, dict[str, str]]:
        """species -> {genus, family, region, ...} as enrolled."""
        return self.rows.taxonomy

    # ================================================================== building
    @classmethod
    def fit(
        cls,
        vectors: np.ndarray,
        species: Sequence[str],
        taxonomy: Mapping[str, Mapping[str, str]] | None = None,
        specimen_ids: Sequence[str] | None = None,
        groups: Sequence[str] | None = None,
        config: IdentifierConfig | None = None,
        *,
        sources: Sequence[str] | None = None,
        regions: Sequence[str] | None = None,
        calibrate: bool = True,
        prior: WithinSpeciesPrior | None = None,
    ) -> VectorIdentifier:
        """An identifier over ``vectors`` (n, d) labelled ``species``.

        ``taxonomy``: species -> {genus, family, region, ...} (genus defaults to the first word
        of a ``Genus_species`` name); ``specimen_ids``: one unique id per vector (default
        ``"0"``, ``"1"``, ...); ``groups``: the physical specimen each vector shows (views of
        one shell share a group; default each vector its own); ``regions``: per-vector region
        overriding the species' one; ``prior``: see :meth:`__init__`. Thresholds are
        calibrated unless ``calibrate=False``.
        """
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2:
            raise InvalidQueryError(f"vectors must be a 2-d array, got shape {vectors.shape}")
        identifier = cls(vectors.shape[1], config, prior)
        identifier.add(
            vectors,
            species,
            taxonomy,
            specimen_ids,
            groups,
            sources=sources,
            regions=regions,
            calibrate=calibrate,
        )
        return identifier

    def add(
        self,
        vectors: np.ndarray,
        species: Sequence[str],
        taxonomy: Mapping[str, Mapping[str, str]] | None = None,
        specimen_ids: Sequence[str] | None = None,
        groups: Sequence[str] | None = None,
        *,
        sources: Sequence[str] | None = None,
        regions: Sequence[str] | None = None,
        calibrate: bool = True,
    ) -> None:
        """Enroll more vectors (same arguments as :meth:`fit`); no retraining is involved."""
        added = self.rows.add(
            self.features(vectors),
            species,
            taxonomy,
            specimen_ids,
            groups,
            sources=sources,
            regions=regions,
        )
        if not added:
            return
        self.generation += 1
        self._refresh()
        if calibrate:
            self.calibrate()

    def remove(self, specimen_ids: Sequence[str], calibrate: bool = True) -> int:
        """Remove enrolled vectors by specimen id; returns how many went (unknown ids raise
        :class:`SpecimenNotFoundError` before anything is removed)."""
        return self._drop_rows(self.rows.rows_of_ids(specimen_ids), calibrate)

    def remove_species(self, species: str, calibrate: bool = True) -> int:
        """Remove every vector of ``species``; returns how many went (0 if none)."""
        return self._drop_rows(self.rows.labels == species, calibrate)

    def _drop_rows(self, drop: np.ndarray, calibrate: bool) -> int:
        count = self.rows.drop(drop)
        if not count:
            return 0
        self.generation += 1
        self._refresh()
        if calibrate:
            self.calibrate()
        return count

    def _refresh(self) -> None:
        """Refit what depends on the rows: CL2N centring, the scorer, the decision tables."""
        self.cl2n.fit()
        self.scorer.fit()
        self.policy = DecisionPolicy.of(self.rows)

    # ================================================================== persistence
    def _prototype_scorers(self) -> list[PrototypeScorer]:
        scorer = self.scorer
        if isinstance(scorer, WhitenedScorer):
            return [scorer.prototypes]
        parts = scorer.parts if isinstance(scorer, MeanScorer) else [scorer]
        return [p for p in parts if isinstance(p, PrototypeScorer)]

    def export_state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """``(arrays, meta)``: the state :meth:`from_state` answers from without refitting
        anything (rows, prototypes, whitening, calibrated thresholds, search index state;
        the FAISS index itself is streamed by ``self.rows.index.write_index``). Meta is
        JSON-able; overrides are not included (they come from the settings)."""
        arrays, rows_meta = self.rows.export_state()
        arrays = {f"rows.{k}": v for k, v in arrays.items()}
        for i, part in enumerate(self._prototype_scorers()):
            arrays[f"protos.{i}"], arrays[f"owner.{i}"] = part.protos, part.owner
        meta: dict[str, Any] = {
            "dim": self.dim,
            "rows": rows_meta,
            "search": self.rows.index.export_state(),
            "thresholds": json.loads(self._calibrated.model_dump_json()),
        }
        if isinstance(self.scorer, WhitenedScorer):
            w = self.scorer.whitening
            arrays["whitening.basis"], arrays["whitening.scale"] = w.basis, w.scale
            arrays["whitened"] = self.scorer.whitened
            meta["whitening"] = {"shrinkage": w.shrinkage, "dof": w.dof}
        return arrays, meta

    @classmethod
    def from_state(
        cls,
        arrays: Mapping[str, np.ndarray],
        meta: Mapping[str, Any],
        config: IdentifierConfig | None = None,
        prior: WithinSpeciesPrior | None = None,
        read_index: Callable[[int], bytes] | None = None,
    ) -> VectorIdentifier:
        """An identifier from :meth:`export_state` output (made with the same ``config`` and
        ``prior``: the caller checks that, see :mod:`index.snapshot`); ``read_index`` streams
        the saved FAISS index. ValueError (or KeyError) when the parts do not fit."""
        identifier = cls(int(meta["dim"]), config, prior)
        rows = identifier.rows
        rows.restore_state(
            {k[5:]: v for k, v in arrays.items() if k.startswith("rows.")}, meta["rows"]
        )
        rows.index.restore_state(rows.vectors, rows.keys, meta["search"], read_index)
        identifier.cl2n.fit()
        species = len(rows.species)
        for i, part in enumerate(identifier._prototype_scorers()):
            protos = np.asarray(arrays[f"protos.{i}"], np.float32)
            owner = np.asarray(arrays[f"owner.{i}"], np.int64)
            if protos.shape != (owner.size, identifier.dim) or (
                owner.size and owner.max() >= species
            ):
                raise ValueError("saved prototypes do not fit the rows")
            part.restore(protos, owner)
        scorer = identifier.scorer
        if isinstance(scorer, WhitenedScorer):
            whitened = np.asarray(arrays["whitened"], np.float32)
            if whitened.shape != scorer.prototypes.protos.shape:
                raise ValueError("saved whitened prototypes do not fit the rows")
            scorer.whitening = Whitening(
                np.asarray(arrays["whitening.basis"], np.float32),
                np.asarray(arrays["whitening.scale"], np.float32),
                float(meta["whitening"]["shrinkage"]),
                int(meta["whitening"]["dof"]),
            )
            scorer.whitened = whitened
        else:
            scorer.fit()  # nearest-specimen parts have nothing to restore
        identifier.policy = DecisionPolicy.of(rows)
        identifier.thresholds = Thresholds.model_validate(meta["thresholds"])
        identifier._whitening_generation = identifier.generation
        return identifier

    # ================================================================== properties
    def __len__(self) -> int:
        return len(self.rows)

    @property
    def species(self) -> list[str]:
        """Enrolled species names (sorted)."""
        return list(self.rows.species)

    @property
    def specimen_ids(self) -> list[str]:
        return [str(i) for i in self.rows.ids]

    @property
    def labels(self) -> list[str]:
        """Species of every enrolled vector, in enrollment order."""
        return [str(s) for s in self.rows.labels]

    @property
    def vectors(self) -> np.ndarray:
        """The enrolled vectors as this identifier works on them (:meth:`features`)."""
        return self.rows.vectors.copy()

    def counts(self) -> dict[str, int]:
        """Images per species."""
        return {s: int(c) for s, c in zip(self.rows.species, self.rows.counts, strict=True)}

    def specimen_counts(self) -> dict[str, int]:
        """Distinct specimens (groups) per species."""
        return {s: int(c) for s, c in zip(self.rows.species, self.rows.group_counts, strict=True)}

    def taxon_of(self, species: str) -> tuple[str, str]:
        """``(genus, family)`` of an enrolled species."""
        s = self.rows.species.index(species)
        return self.rows.genus[s], self.rows.family[s]

    @property
    def thresholds(self) -> Thresholds:
        return self._thresholds

    @thresholds.setter
    def thresholds(self, value: Thresholds) -> None:
        """Replace the calibrated thresholds (overrides still apply on top); the caller vouches
        that they were calibrated on the current rows (see :attr:`settled`)."""
        self._calibrated = value
        self._thresholds = value.with_overrides(**self._overrides)
        self._threshold_generation = self.generation

    @property
    def settled(self) -> bool:
        """True when the whitening and the thresholds were fit on the current rows (what a
        fresh load would compute), so this state may be saved as a snapshot."""
        whitened = isinstance(self.scorer, WhitenedScorer)
        return self._threshold_generation == self.generation and (
            not whitened or self._whitening_generation == self.generation
        )

    @property
    def calibrated_thresholds(self) -> Thresholds:
        """The thresholds of the last calibration, without overrides (what stores keep)."""
        return self._calibrated

    def set_overrides(self, **values: float | None) -> Thresholds:
        """Fix thresholds by hand (``temperature``, ``unknown``, ``ood``, ``*_probability``);
        ``None`` un-sets one. They survive :meth:`calibrate`."""
        for key, value in values.items():
            if value is None:
                self._overrides.pop(key, None)
            else:
                self._overrides[key] = float(value)
        self._thresholds = self._calibrated.with_overrides(**self._overrides)
        return self._thresholds

    def prepare_refit(self, target_recall: float | None = None, calibrate: bool = True) -> Refit:
        """Everything a refit needs, computed without changing what queries see: the
        scorer's whitening for the current rows (:mod:`index.whitening`) and, with
        ``calibrate``, the thresholds fitted with it. Install with :meth:`apply_refit`, so a
        service can compute it outside its lock and swap it in at once."""
        whitening = None
        generation = self.generation
        scorer: SpeciesScorer = self.scorer
        if isinstance(self.scorer, WhitenedScorer):
            whitening = self.scorer.estimate()
            scorer = self.scorer.with_whitening(whitening)
        thresholds = None
        if calibrate:
            thresholds = calibration_procedure.calibrate(
                self.rows, scorer, self.ood_scorer, self.config, target_recall
            )
        return Refit(whitening, thresholds, generation)

    def apply_refit(self, refit: Refit) -> Thresholds:
        """Install a :meth:`prepare_refit` result; returns the thresholds in force."""
        if refit.whitening is not None and isinstance(self.scorer, WhitenedScorer):
            self.scorer.use(refit.whitening)
            self._whitening_generation = refit.generation
        if refit.thresholds is not None:
            self.thresholds = refit.thresholds
            self._threshold_generation = refit.generation
        return self._thresholds

    def calibrate(self, target_recall: float | None = None) -> Thresholds:
        """Refit the scorer and fit the temperature and the open-set thresholds on the enrolled
        data (held-out scores, see :mod:`index.calibrate`); returns the thresholds in force."""
        return self.apply_refit(self.prepare_refit(target_recall))

    def _probabilities(self, sims: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        th = self._thresholds
        return open_set_probabilities(
            sims, th.temperature, 1.0 - th.unknown, self.config.none_temperature
        )

    # ================================================================== scoring
    def _check_queries(self, queries: np.ndarray) -> np.ndarray:
        queries = np.asarray(queries, dtype=np.float32)
        if queries.ndim == 1:
            queries = queries[None, :]
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise InvalidQueryError(
                f"query vectors must have size {self.dim} (this collection's model), got shape "
                f"{queries.shape}"
            )
        if not np.isfinite(queries).all():
            raise InvalidQueryError("query vectors contain NaN or infinite values")
        if len(self) == 0:
            raise EmptyCollectionError("the collection is empty: enroll some species first")
        return self.features(queries)

    def features(self, vectors: np.ndarray) -> np.ndarray:
        """Embeddings -> the vectors this identifier works on (``config.feature_power``, unit
        length): what it stores for enrolled rows and compares queries as."""
        return power_normalise(vectors, self.config.feature_power)

    def candidate_mask(
        self,
        region: str | None = None,
        genus: str | None = None,
        family: str | None = None,
        subset: Sequence[str] | None = None,
    ) -> np.ndarray:
        """Species allowed by the filters and the subset (:func:`index.decision.candidate_mask`:
        an unknown value raises InvalidQueryError naming the closest known ones)."""
        return species_mask(self.rows, region, genus, family, subset)

    def score_batch(self, queries: np.ndarray) -> BatchScores:
        """Score many single-vector queries: similarities and probabilities over
        :attr:`species`, unknown and OOD scores, and the decision for each."""
        queries = self._check_queries(queries)
        sims = self.scorer.scores(queries)
        probs, none = self._probabilities(sims)
        unknown = unknown_scores(sims)
        ood, nearest = self.ood_scorer.scores_and_nearest(queries)
        decisions = [
            str(d)
            for d, _, _ in self.policy.decide(
                probs, unknown, self._widened(ood, nearest), self._thresholds
            )
        ]
        return BatchScores(
            list(self.rows.species),
            sims,
            probs,
            unknown.astype(np.float32),
            ood.astype(np.float32),
            decisions,
            none,
            self.place(sims),
        )

    def _widened(self, ood: np.ndarray, nearest: np.ndarray) -> np.ndarray:
        """OOD scores as the decision policy compares them: lowered by how much wider than the
        collection's threshold the nearest photo's species' own threshold is
        (``Thresholds.ood_by_species``); the answer's ``ood_score`` stays as measured."""
        th = self._thresholds
        if not th.ood_by_species or not np.isfinite(th.ood):
            return ood
        margin = np.zeros(len(self.rows.species) + 1)
        index = {name: i for i, name in enumerate(self.rows.species)}
        for name, threshold in th.ood_by_species.items():
            if name in index:
                margin[index[name]] = max(0.0, threshold - th.ood)
        return ood - margin[nearest]  # nearest -1 picks the last entry, 0

    def place(self, sims: np.ndarray) -> list[Placement | None]:
        """The placement (genus, else family, with its probability) of queries with species
        scores ``sims`` (see :mod:`index.placement`); None where none is likely enough."""
        taxa = {"genus": list(self.rows.genus), "family": list(self.rows.family)}
        return place(self._calibrated.placement, sims, taxa)

    def _closest_photo(self, q: np.ndarray, species: int) -> float:
        """Cosine similarity of the (mapped) query to the species' closest enrolled photo."""
        rows = self.rows.rows_by_species[species]
        return float(np.max(self.rows.vectors[rows] @ q[0])) if len(rows) else float("nan")

    def identify(
        self,
        query: np.ndarray,
        top_k: int = 5,
        region: str | None = None,
        genus: str | None = None,
        family: str | None = None,
        subset: Sequence[str] | None = None,
    ) -> Identification:
        """Identify ONE specimen from the embeddings of its views ``(v, d)`` (fused first),
        among the species the filters and ``subset`` (species, genus or family names) allow."""
        started = time.perf_counter()
        views = self._check_queries(query)
        q = fuse_views(views)[None, :]
        mask = self.candidate_mask(region, genus, family, subset)
        sims = self.scorer.scores(q)
        sims[:, ~mask] = -np.inf
        th = self._thresholds
        probs, none = self._probabilities(sims)
        unknown = unknown_scores(sims)
        ood, nearest = self.ood_scorer.scores_and_nearest(q)
        widened = self._widened(ood, nearest)
        decision, taxon, confidence = self.policy.decide(probs, unknown, widened, th)[0]
        rejected = decision in REJECTIONS
        scored = time.perf_counter()
        rows = self.rows
        order = [j for j in np.argsort(-sims[0], kind="stable") if mask[j]][: max(1, top_k)]
        candidates = [
            Candidate(
                species=rows.species[j],
                genus=rows.genus[j],
                family=rows.family[j],
                score=round(float(sims[0, j]), 6),
                probability=None if rejected else round(float(probs[0, j]), 6),
                similarity=round(self._closest_photo(q, j), 6),
            )
            for j in order
        ]
        placement = None
        if decision not in ("species", "out_of_domain"):
            placement = self.place(sims)[0]
        similar = self._similar(q, max(1, top_k), mask)
        votes = self._region_votes(q, mask)
        species_name = genus_name = family_name = None
        if decision == "species":
            species_name = taxon
            assert taxon is not None
            s = rows.species.index(taxon)
            genus_name, family_name = rows.genus[s] or None, rows.family[s] or None
        elif decision == "genus":
            genus_name = taxon
            families = {
                rows.family[s] for s, g in enumerate(rows.genus) if g == taxon and rows.family[s]
            }
            family_name = families.pop() if len(families) == 1 else None
        elif decision == "family":
            family_name = taxon
        return Identification(
            decision=decision,
            species=species_name,
            genus=genus_name,
            family=family_name,
            confidence=round(confidence, 6),
            none_probability=None if rejected else round(float(none[0]), 6),
            candidates=candidates,
            similar=similar,
            region=(max(votes, key=lambda r: votes[r]) if votes else None),
            region_votes=votes,
            ood_score=round(float(np.nan_to_num(ood[0], nan=2.0)), 6),
            unknown_score=round(float(unknown[0]), 6),
            placement=placement,
            timings_ms={
                "classify": round((scored - started) * 1e3, 3),
                "search": round((time.perf_counter() - scored) * 1e3, 3),
            },
        )

    def search(
        self,
        query: np.ndarray,
        k: int = 10,
        region: str | None = None,
        genus: str | None = None,
        family: str | None = None,
    ) -> list[SimilarSpecimen]:
        """The ``k`` enrolled images nearest to the (fused) query, optionally filtered."""
        q = fuse_views(self._check_queries(query))[None, :]
        return self._similar(q, k, self.candidate_mask(region, genus, family))

    def _similar(self, q: np.ndarray, k: int, mask: np.ndarray) -> list[SimilarSpecimen]:
        rows = self.rows
        found, scores = rows.nearest(q, k, mask)
        return [
            SimilarSpecimen(
                specimen_id=str(rows.ids[r]),
                species=rows.species[rows.y[r]],
                genus=rows.genus[rows.y[r]],
                score=round(float(s), 6),
                source=str(rows.sources[r]),
                region=str(rows.region_of_row(r)),
                specimen=rows.specimen_of_row(r),
            )
            for r, s in zip(found, scores, strict=True)
        ]

    def _region_votes(self, q: np.ndarray, mask: np.ndarray) -> dict[str, float]:
        found, scores = self.rows.nearest(q, self.config.region_k, mask)
        votes: dict[str, float] = {}
        for r, s in zip(found, scores, strict=True):
            text = self.rows.region_of_row(r)
            if text:
                votes[text] = votes.get(text, 0.0) + max(float(s), 0.0)
        total = sum(votes.values())
        if total <= 0:
            return {}
        return {k: round(v / total, 4) for k, v in sorted(votes.items(), key=lambda kv: -kv[1])}
