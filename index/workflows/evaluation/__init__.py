"""Evaluation of an embedder + identifier on a labelled collection (``shellid evaluate``):
closed-set, few-shot and open-set figures with baselines, bootstrap intervals, an embedding
cache and an HTML report. See docs/evaluation.md."""

from .cache import EmbeddingCache, default_cache_dir
from .runner import (
    SCHEMA_VERSION,
    EvaluationConfig,
    EvaluationError,
    EvaluationResult,
    evaluate_collection,
)

__all__ = [
    "SCHEMA_VERSION",
    "EmbeddingCache",
    "EvaluationConfig",
    "EvaluationError",
    "EvaluationResult",
    "default_cache_dir",
    "evaluate_collection",
]
