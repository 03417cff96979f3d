"""VectorIndex: exact and approximate FAISS search by id, updates and deletions."""

from __future__ import annotations

import numpy as np
import pytest

from index.search import VectorIndex, default_nlist


def unit(rng: np.random.Generator, n: int, d: int, clusters: int = 20) -> np.ndarray:
    centres = rng.normal(size=(clusters, d))
    x = centres[rng.integers(clusters, size=n)] + 0.6 * rng.normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_exact_search_returns_true_neighbours_by_id():
    rng = np.random.default_rng(0)
    x = unit(rng, 300, 16)
    ids = np.arange(1000, 1300)
    index = VectorIndex(16)
    index.add(x, ids)
    scores, found = index.search(x[:5], 3)
    truth = np.argsort(-(x[:5] @ x.T), axis=1)[:, :3] + 1000
    assert index.kind == "flat"
    np.testing.assert_array_equal(found, truth)
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-5)


def test_search_pads_when_fewer_vectors_than_k():
    index = VectorIndex(4)
    index.add(np.eye(4, dtype=np.float32)[:2], np.array([7, 8]))
    scores, ids = index.search(np.eye(4, dtype=np.float32)[:1], 5)
    assert ids[0].tolist() == [7, 8, -1, -1, -1]
    assert np.isinf(scores[0, 2:]).all()


def test_empty_index_answers_nothing():
    scores, ids = VectorIndex(4).search(np.ones((2, 4), np.float32), 3)
    assert (ids == -1).all() and np.isinf(scores).all()


def test_removed_ids_are_never_returned():
    rng = np.random.default_rng(1)
    x = unit(rng, 200, 8)
    index = VectorIndex(8)
    index.add(x, np.arange(200))
    assert index.remove(np.array([0, 1, 2, 999])) == 3
    _, ids = index.search(x[:3], 5)
    assert not np.isin(ids, [0, 1, 2]).any()
    assert len(index) == 197


def test_add_refuses_existing_ids_and_wrong_sizes():
    index = VectorIndex(4)
    index.add(np.eye(4, dtype=np.float32), np.arange(4))
    with pytest.raises(ValueError, match="new and unique"):
        index.add(np.eye(4, dtype=np.float32)[:1], np.array([2]))
    with pytest.raises(ValueError, match="size 4"):
        index.add(np.ones((1, 5), np.float32), np.array([9]))
    with pytest.raises(ValueError, match="size 4"):
        index.search(np.ones((1, 3), np.float32), 1)


def test_switches_to_ivf_above_threshold_with_high_recall_and_back():
    rng = np.random.default_rng(2)
    x = unit(rng, 3000, 32)
    index = VectorIndex(32, ann_threshold=2000)
    index.add(x[:1500], np.arange(1500))
    assert index.kind == "flat"
    index.add(x[1500:], np.arange(1500, 3000))
    assert index.kind.startswith("IVF")
    queries = unit(np.random.default_rng(3), 100, 32)
    _, approx = index.search(queries, 10)
    _, exact = index.search_exact(queries, 10)
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx, exact, strict=True)])
    assert recall >= 0.9
    index.remove(np.arange(2200))  # far below the threshold: back to exact search
    assert index.kind == "flat" and len(index) == 800


def test_index_types_that_cannot_delete_are_rebuilt_on_removal():
    rng = np.random.default_rng(4)
    x = unit(rng, 400, 16)
    index = VectorIndex(16, ann_threshold=100, factory="HNSW16,Flat")
    index.add(x, np.arange(400))
    assert index.kind == "HNSW16,Flat"
    index.remove(np.arange(0, 400, 2))
    _, ids = index.search(x[:20], 5)
    assert (ids[ids >= 0] % 2 == 1).all()


def test_default_nlist_grows_with_the_collection():
    assert default_nlist(100_000) == 1024
    assert default_nlist(1_000_000) == 4096
    assert default_nlist(10_000) == 256  # at least 39 training vectors per list
    assert default_nlist(10) == 16


def test_search_breadth_is_tuned_to_the_recall_target():
    rng = np.random.default_rng(5)
    x = unit(rng, 20000, 32, clusters=5000)  # hard: four vectors per cluster
    index = VectorIndex(32, ann_threshold=1000, recall_target=0.9)
    index.add(x, np.arange(20000))
    assert index.kind == "IVF512,Flat"
    assert index.measured_recall >= 0.9
    assert index.search_breadth["nprobe"] > 32  # the default alone was not enough
    fixed = VectorIndex(32, ann_threshold=1000, nprobe=4)
    fixed.add(x, np.arange(20000))
    assert fixed.search_breadth == {"nprobe": 4} and fixed.measured_recall < 0.9
