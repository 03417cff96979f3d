"""Open-set scores: the protocol and registry (:mod:`.base`) and the registered scores, in
the order the decision policy checks them: ``ood`` (:mod:`.out_of_domain`), then ``unknown``
(:mod:`.unknown_species`). See :mod:`.base` for adding one."""

from __future__ import annotations

from . import out_of_domain, unknown_species
from .base import (
    OPEN_SET_SCORES,
    HeldOutImages,
    HeldOutOpenSet,
    OpenSetScore,
    OpenSetScores,
    reject,
)

__all__ = [
    "OPEN_SET_SCORES",
    "HeldOutImages",
    "HeldOutOpenSet",
    "OpenSetScore",
    "OpenSetScores",
    "out_of_domain",
    "reject",
    "unknown_species",
]
