"""Numpy-level identification: :class:`VectorIdentifier` turns query embeddings into calibrated
open-set answers against a set of enrolled embeddings.

Scoring (see docs/index.md): species score = cosine similarity to the species' CL2N
prototype in the collection's within-species whitened space (``method="whitened"``, the
default), to the plain prototype(s) (``"prototype"``), to its nearest enrolled specimen
(``"knn"``) or the mean of the last two; probabilities = softmax over the species at
temperature T, sharing the mass with "none of these" (scored at the unknown threshold, odds
against the best species at temperature T_none), so they leave room for an unknown species;
then the registered open-set scores (:mod:`index.open_set`: ``ood``, out-of-domain, and
``unknown``, species-level novelty). Decisions (:mod:`index.decision`): out_of_domain,
unknown_species, then species / genus / family roll-up when the probability passes its
threshold, else uncertain.

The parts: :mod:`index.enrolled` (rows and species tables), :mod:`index.scorers` (species
scores), :mod:`index.open_set` (open-set scores), :mod:`index.calibrate` (thresholds from
held-out scores), :mod:`index.decision` (the decision policy and filters),
:mod:`index.answers` (candidates, similar photos, region votes of an answer) and
:mod:`index.identifier_state` (saving and restoring); this class ties them together.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import answers, identifier_state
from . import calibrate as calibration_procedure
from .config import IdentifierConfig
from .decision import DecisionPolicy
from .decision import candidate_mask as species_mask
from .enrolled import EnrolledRows
from .open_set import OpenSetScores
from .placement import place
from .prototypes import fuse_views, power_normalise
from .query_scores import Scored, checked_queries, score
from .results import (
    REJECTIONS,
    BatchScores,
    Identification,
    Placement,
    SimilarSpecimen,
    Thresholds,
)
from .rows import SpecimenRows
from .scorers import Cl2n, SpeciesScorer, WhitenedScorer, species_scorer
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
        self.open_set = OpenSetScores.of(self.rows, cfg)
        self._overrides: dict[str, float] = {}
        self._calibrated = calibration_procedure.default_thresholds(cfg, self.open_set)
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
        rows: SpecimenRows,
        config: IdentifierConfig | None = None,
        *,
        calibrate: bool = True,
        prior: WithinSpeciesPrior | None = None,
    ) -> VectorIdentifier:
        """An identifier over a batch of rows (:class:`~index.rows.SpecimenRows`: vectors,
        species, taxonomy, ids, groups, sources, regions); ``prior``: see :meth:`__init__`.
        Thresholds are calibrated unless ``calibrate=False``."""
        identifier = cls(rows.dim, config, prior)
        identifier.add(rows, calibrate=calibrate)
        return identifier

    def add(self, rows: SpecimenRows, *, calibrate: bool = True) -> None:
        """Enroll more rows (a :class:`~index.rows.SpecimenRows` batch); no retraining."""
        if not self.rows.add(rows.with_vectors(self.features(rows.vectors))):
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
        self.policy = DecisionPolicy.of(self.rows, self.open_set.decisions())

    # ================================================================== persistence
    def export_state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """``(arrays, meta)``: the state :meth:`from_state` answers from without refitting
        anything (rows, prototypes, whitening, calibrated thresholds, search index state;
        the FAISS index itself is streamed by ``self.rows.index.write_index``). Meta is
        JSON-able; overrides are not included (they come from the settings)."""
        return identifier_state.export_state(self)

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
        identifier_state.restore_state(identifier, arrays, meta, read_index)
        return identifier

    def whitening_settled(self) -> None:
        """Record that the scorer's whitening fits the current rows (a restored state)."""
        self._whitening_generation = self.generation

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
                self.rows, scorer, self.open_set, self.config, target_recall
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

    # ================================================================== scoring
    def _check_queries(self, queries: np.ndarray) -> np.ndarray:
        return self.features(checked_queries(queries, self.dim, len(self)))

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

    def score(self, queries: np.ndarray, mask: np.ndarray | None = None) -> Scored:
        """Score (mapped) ``queries`` among the species ``mask`` allows (default all): species
        scores, probabilities, the open-set scores and the decisions (:mod:`index.query_scores`)."""
        th, none_temperature = self._thresholds, self.config.none_temperature
        return score(queries, self.scorer, self.open_set, self.policy, th, none_temperature, mask)

    def score_batch(self, queries: np.ndarray) -> BatchScores:
        """Score many single-vector queries: similarities and probabilities over
        :attr:`species`, the open-set scores, and the decision for each."""
        scored = self.score(self._check_queries(queries))
        return BatchScores(
            list(self.rows.species),
            scored.sims,
            scored.probabilities,
            {name: s.astype(np.float32) for name, s in scored.open_set.items()},
            [str(d) for d, _, _ in scored.verdicts],
            scored.none,
            self.place(scored.sims),
        )

    def place(self, sims: np.ndarray) -> list[Placement | None]:
        """The placement (genus, else family, with its probability) of queries with species
        scores ``sims`` (see :mod:`index.placement`); None where none is likely enough."""
        taxa = {"genus": list(self.rows.genus), "family": list(self.rows.family)}
        return place(self._calibrated.placement, sims, taxa)

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
        q = fuse_views(self._check_queries(query))[None, :]
        mask = self.candidate_mask(region, genus, family, subset)
        scored = self.score(q, mask)
        decision, taxon, confidence = scored.verdicts[0]
        rejected = decision in REJECTIONS
        scored_at = time.perf_counter()
        rows, k = self.rows, max(1, top_k)
        candidates = answers.candidates(rows, q, scored, mask, k, rejected)
        placement = None
        if decision not in ("species", "out_of_domain"):
            placement = self.place(scored.sims)[0]
        similar = answers.similar(rows, q, k, mask)
        votes = answers.region_votes(rows, q, self.config.region_k, mask)
        species_name, genus_name, family_name = answers.named_taxa(rows, decision, taxon)
        return Identification(
            decision=decision,
            species=species_name,
            genus=genus_name,
            family=family_name,
            confidence=round(confidence, 6),
            none_probability=None if rejected else round(float(scored.none[0]), 6),
            candidates=candidates,
            similar=similar,
            region=(max(votes, key=lambda r: votes[r]) if votes else None),
            region_votes=votes,
            placement=placement,
            timings_ms={
                "classify": round((scored_at - started) * 1e3, 3),
                "search": round((time.perf_counter() - scored_at) * 1e3, 3),
            },
            open_set_scores=scored.answer_scores(),
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
        return answers.similar(self.rows, q, k, self.candidate_mask(region, genus, family))
