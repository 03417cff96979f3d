"""Open-set scores are plug-ins: a toy score, one class plus one registration line, is made
for every new identifier, calibrated with the others, given a threshold in
``Thresholds.open_set``, checked by the decision policy, reported by evaluation and sent in
the HTTP answer; removed again, every answer is today's."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import ClassVar

import numpy as np
import pytest
from fastapi.testclient import TestClient

from index import VectorIdentifier
from index.calibration import acceptance_threshold
from index.config import IdentifierConfig, IndexSettings
from index.enrolled import EnrolledRows
from index.open_set import OPEN_SET_SCORES, HeldOutImages, HeldOutOpenSet, OpenSetScore
from index.results import Decision, Thresholds
from index.rows import SpecimenRows
from index.workflows.evaluation.openset import open_set_figures, open_set_thresholds
from tests.clusters import specimens_around, unit
from tests.conftest import GENERATED_SPECIES, make_collection
from tests.fake_embedder import FakeEmbedder

DIM = 16
CONFIG = IdentifierConfig(use_gpu=False)


class FarFromTheMean(OpenSetScore):
    """Toy score: 1 - cosine similarity of the query to the mean enrolled photo."""

    decision: ClassVar[Decision] = "unknown_species"

    def __init__(self, rows: EnrolledRows, config: IdentifierConfig) -> None:
        self.rows = rows

    @staticmethod
    def default_threshold(config: IdentifierConfig) -> float:
        return float("inf")

    def _score(self, vectors: np.ndarray) -> np.ndarray:
        return 1.0 - vectors @ unit(self.rows.vectors.mean(axis=0))

    def query_scores(
        self, queries: np.ndarray, sims: np.ndarray, threshold: float, thresholds: Thresholds
    ) -> tuple[np.ndarray, np.ndarray]:
        scores = self._score(queries)
        return scores, scores

    def held_out(self, images: HeldOutImages) -> HeldOutOpenSet:
        scores = self._score(self.rows.vectors[images.rows])
        return HeldOutOpenSet(scores, scores)

    def fit(
        self,
        images: HeldOutImages,
        scores: HeldOutOpenSet,
        accepted: np.ndarray,
        thresholds: Thresholds,
        notes: list[str],
    ) -> tuple[float, bool]:
        return acceptance_threshold(scores.known[images.known][accepted], 0.99), True


@pytest.fixture
def toy() -> Iterator[None]:
    OPEN_SET_SCORES.add("toy", FarFromTheMean)  # the one registration line
    try:
        yield
    finally:
        OPEN_SET_SCORES.remove("toy")


def collection() -> tuple[np.ndarray, list[str], list[str], np.ndarray]:
    """Six species of 2-5 specimens around one domain, and queries: new specimens of them
    and random off-domain vectors."""
    rng = np.random.default_rng(7)
    domain = unit(rng.normal(size=DIM))
    centres = unit(domain + 0.9 * unit(rng.normal(size=(6, DIM))))
    vectors, labels, groups = specimens_around(
        centres, (5, 5, 4, 3, 2, 2), rng, 0.15, 0.03, lambda s: f"Genus{s // 2}_s{s}"
    )
    news, _, _ = specimens_around(centres, [2] * 6, rng, 0.15, 0.03, str, views=1)
    return vectors, labels, groups, np.concatenate([news, rng.normal(size=(4, DIM))])


def answers(identifier: VectorIdentifier, queries: np.ndarray) -> list[str]:
    out = []
    for q in queries:
        answer = identifier.identify(q[None, :]).model_dump(mode="json")
        answer.pop("timings_ms")
        out.append(json.dumps(answer))
    return out


def fitted() -> tuple[VectorIdentifier, np.ndarray]:
    vectors, labels, groups, queries = collection()
    identifier = VectorIdentifier.fit(SpecimenRows(vectors, labels, groups=groups), config=CONFIG)
    return identifier, queries


def test_a_registered_score_is_calibrated_and_gets_a_threshold_by_name(toy):
    identifier, queries = fitted()
    th = identifier.thresholds
    assert list(th.open_set) == ["ood", "unknown", "toy"]
    assert np.isfinite(th.open_set["toy"]) and th.toy == th.open_set["toy"]
    assert th.source == "calibrated"
    # stored as one field per score, and read back the same
    stored = json.loads(th.model_dump_json())
    assert stored["toy"] == th.open_set["toy"] and "open_set" not in stored
    assert Thresholds.model_validate(stored) == th
    # the answers' batch scores carry it
    batch = identifier.score_batch(queries)
    assert batch.toy_score.shape == (len(queries),)


def test_the_decision_policy_checks_a_registered_score(toy):
    identifier, queries = fitted()
    before = identifier.score_batch(queries).decisions
    identifier.set_overrides(toy=-10.0)  # every query is far from the mean
    after = identifier.score_batch(queries).decisions
    assert "toy" in identifier.thresholds.overridden
    # the OOD check comes first; every other answer is now the toy's unknown_species
    assert after == ["out_of_domain" if d == "out_of_domain" else "unknown_species" for d in before]
    assert set(before) - {"out_of_domain", "unknown_species"}  # it changed something


def test_evaluation_reports_figures_of_a_registered_score(toy):
    identifier, queries = fitted()
    known = identifier.score_batch(queries[:12])
    strangers = identifier.score_batch(queries[12:])
    figures = open_set_figures(
        known.open_set, strangers.open_set, {"noise": strangers.open_set}, None
    )
    assert list(figures) == ["unknown", "toy", "ood", "decision_rates"]
    assert figures["toy"]["queries"] == 4 and 0.0 <= figures["toy"]["auroc"] <= 1.0
    assert set(figures["ood"]) == {"noise"}
    reported = open_set_thresholds(identifier.thresholds)
    assert list(reported) == ["temperature", "unknown", "toy", "ood", "source"]
    assert reported["toy"] == identifier.thresholds.open_set["toy"]


def test_unregistering_a_score_restores_todays_answers():
    today, queries = fitted()
    expected = answers(today, queries), today.thresholds.model_dump_json()
    OPEN_SET_SCORES.add("toy", FarFromTheMean)
    try:
        with_toy, _ = fitted()
        with_toy.set_overrides(toy=-10.0)
        assert answers(with_toy, queries) != expected[0]
    finally:
        OPEN_SET_SCORES.remove("toy")
    again, _ = fitted()
    assert (answers(again, queries), again.thresholds.model_dump_json()) == expected
    assert list(again.thresholds.open_set) == ["ood", "unknown"]


def test_the_http_answer_carries_every_registered_score(toy, tmp_path):
    from api.app import create_app
    from api.settings import ServiceSettings
    from index.workflows.collection import Collection

    photos = make_collection(tmp_path / "photos", specimens=3, views=1, size=64)
    store = str(tmp_path / "store")
    collection = Collection.open(
        store, model=FakeEmbedder(), create=True, settings=IndexSettings.load()
    )
    for species in list(GENERATED_SPECIES)[:3]:
        collection.enroll(species, sorted((photos / species).iterdir()))
    query = sorted((photos / species).iterdir())[0].read_bytes()
    settings = ServiceSettings(store=store, refresh_seconds=0)
    with TestClient(create_app(settings, collection)) as client:
        reply = client.post("/v1/identify", files=[("images", ("q.png", query, "image/png"))])
    assert reply.status_code == 200, reply.text
    answer = reply.json()
    scores = answer["open_set_scores"]
    assert list(scores) == ["ood", "unknown", "toy"]
    assert 0.0 <= scores["toy"] <= 2.0  # 1 - a cosine similarity
    # the fields older clients read are the mapping's
    assert (answer["ood_score"], answer["unknown_score"]) == (scores["ood"], scores["unknown"])


def test_an_answer_written_with_one_field_per_score_reads_into_the_mapping():
    from index.results import Identification

    old = {"decision": "species", "ood_score": 0.25, "unknown_score": 0.5}  # an older server's
    answer = Identification.model_validate(old)
    assert answer.open_set_scores == {"ood": 0.25, "unknown": 0.5}
    dumped = answer.model_dump(mode="json")
    assert list(dumped)[list(dumped).index("ood_score") :][:3] == [
        "ood_score",
        "unknown_score",
        "open_set_scores",
    ]
    assert Identification.model_validate(dumped) == answer
