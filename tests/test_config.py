"""One configuration path: the options a user sets are defined once (DecisionOptions) and reach
the identifier and FAISS from SHELLID_* variables."""

from __future__ import annotations

import faiss

from index.config import DecisionOptions, IdentifierConfig, IndexSettings
from index.search import VectorIndex


def test_every_user_option_reaches_the_identifier_config(monkeypatch):
    monkeypatch.setenv("SHELLID_METHOD", "prototype")
    monkeypatch.setenv("SHELLID_SPECIES_PROBABILITY", "0.7")
    monkeypatch.setenv("SHELLID_TARGET_RECALL", "0.8")
    monkeypatch.setenv("SHELLID_FAISS_THREADS", "2")
    config = IndexSettings().identifier_config()
    assert (config.method, config.species_probability, config.target_recall) == (
        "prototype",
        0.7,
        0.8,
    )
    assert config.faiss_threads == 2
    for name in DecisionOptions.model_fields:  # defined once, inherited by both
        assert repr(IdentifierConfig.model_fields[name]) == repr(IndexSettings.model_fields[name])


def test_faiss_threads_follow_the_config():
    try:
        VectorIndex(4, threads=2)
        assert faiss.omp_get_max_threads() == 2
        VectorIndex(4)  # no setting: the count stays
        assert faiss.omp_get_max_threads() == 2
    finally:
        VectorIndex(4, threads=1)
    assert faiss.omp_get_max_threads() == 1
