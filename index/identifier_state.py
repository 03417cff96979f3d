"""The saved state of a :class:`~index.classifier.VectorIdentifier` (what a snapshot keeps,
:mod:`index.snapshot`): rows, prototypes, whitening, calibrated thresholds and the search
index's state, so that a load answers without refitting anything."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from .decision import DecisionPolicy
from .results import Thresholds
from .scorers import MeanScorer, PrototypeScorer, SpeciesScorer, WhitenedScorer
from .whitening import Whitening

if TYPE_CHECKING:
    from .classifier import VectorIdentifier


def prototype_scorers(scorer: SpeciesScorer) -> list[PrototypeScorer]:
    """The prototype parts of a species scorer (what has prototypes to save)."""
    if isinstance(scorer, WhitenedScorer):
        return [scorer.prototypes]
    parts = scorer.parts if isinstance(scorer, MeanScorer) else [scorer]
    return [p for p in parts if isinstance(p, PrototypeScorer)]


def export_state(identifier: VectorIdentifier) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """``(arrays, meta)`` of :meth:`VectorIdentifier.export_state`."""
    arrays, rows_meta = identifier.rows.export_state()
    arrays = {f"rows.{k}": v for k, v in arrays.items()}
    for i, part in enumerate(prototype_scorers(identifier.scorer)):
        arrays[f"protos.{i}"], arrays[f"owner.{i}"] = part.protos, part.owner
    meta: dict[str, Any] = {
        "dim": identifier.dim,
        "rows": rows_meta,
        "search": identifier.rows.index.export_state(),
        "thresholds": json.loads(identifier.calibrated_thresholds.model_dump_json()),
    }
    if isinstance(identifier.scorer, WhitenedScorer):
        w = identifier.scorer.whitening
        arrays["whitening.basis"], arrays["whitening.scale"] = w.basis, w.scale
        arrays["whitened"] = identifier.scorer.whitened
        meta["whitening"] = {"shrinkage": w.shrinkage, "dof": w.dof}
    return arrays, meta


def restore_state(
    identifier: VectorIdentifier,
    arrays: Mapping[str, np.ndarray],
    meta: Mapping[str, Any],
    read_index: Callable[[int], bytes] | None = None,
) -> None:
    """Fill a new, empty ``identifier`` from :func:`export_state` output (see
    :meth:`VectorIdentifier.from_state`)."""
    rows = identifier.rows
    rows.restore_state({k[5:]: v for k, v in arrays.items() if k.startswith("rows.")}, meta["rows"])
    rows.index.restore_state(rows.vectors, rows.keys, meta["search"], read_index)
    identifier.cl2n.fit()
    species = len(rows.species)
    for i, part in enumerate(prototype_scorers(identifier.scorer)):
        protos = np.asarray(arrays[f"protos.{i}"], np.float32)
        owner = np.asarray(arrays[f"owner.{i}"], np.int64)
        if protos.shape != (owner.size, identifier.dim) or (owner.size and owner.max() >= species):
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
    identifier.policy = DecisionPolicy.of(rows, identifier.open_set.decisions())
    identifier.thresholds = Thresholds.model_validate(meta["thresholds"])
    identifier.whitening_settled()
