"""A store and its snapshot written before the row batch and the snapshot split of issue 26
(commit 05e3023, ``tests/data/make_old_store.py``) open with today's code and answer as they
did then: from the old snapshot file, and rebuilt from the old rows."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from index.config import IdentifierConfig, IndexSettings
from index.schema import INDEX_COLUMNS, PHOTO_COLUMNS, where_in
from index.snapshot import Snapshots
from index.specimens import SpecimenIndex
from index.store import SpecimenStore
from index.sync import load_state

OLD = Path(__file__).parent / "data" / "store-05e3023"
RECORD = json.loads((OLD / "answers.json").read_text())
DIM, FINGERPRINT = 16, "0123456789abcdef"


@pytest.fixture
def old_store(tmp_path: Path) -> Path:
    path = tmp_path / "store"
    shutil.copytree(OLD, path)
    return path


def assert_close(got: Any, want: Any, where: str = "answer") -> None:
    """Equal JSON, numbers to 1e-5."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and got.keys() == want.keys(), where
        for key in want:
            assert_close(got[key], want[key], f"{where}.{key}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), where
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            assert_close(g, w, f"{where}[{i}]")
    elif isinstance(want, float) and not isinstance(got, bool):
        assert got == pytest.approx(want, abs=1e-5), where
    else:
        assert got == want, where


def answers(engine: SpecimenIndex) -> list[dict[str, Any]]:
    """The answers to the recorded probes, without their timings."""
    probes = np.asarray(RECORD["probes"], np.float32)
    with engine.reading() as identifier:
        return [
            identifier.identify(q[None, :], top_k=3).model_dump(mode="json", exclude={"timings_ms"})
            for q in probes
        ]


#: the recorded answers; answers now also carry their open-set scores in one mapping (the
#: same values as the recorded ``ood_score`` and ``unknown_score``)
WANTED = [
    {
        **{k: v for k, v in a.items() if k != "timings_ms"},
        "open_set_scores": {"ood": a["ood_score"], "unknown": a["unknown_score"]},
    }
    for a in RECORD["answers"]
]


def open_engine(path: Path) -> SpecimenIndex:
    store = SpecimenStore(path, create=False)
    return SpecimenIndex(store, IndexSettings(), IdentifierConfig(), dim=DIM)


def test_an_old_snapshot_loads_without_a_rebuild_and_answers_as_before(old_store, monkeypatch):
    def no_rebuild(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the old snapshot was not used")

    monkeypatch.setattr("index.sync.rebuild", no_rebuild)
    store = SpecimenStore(old_store, create=False)
    state = load_state(store, DIM, FINGERPRINT, IdentifierConfig(), None, Snapshots(store.uri))
    assert state.source == "snapshot" and len(state.identifier) == 58
    table = store.load_index(["id", "species", "sha256"])
    assert state.sha.table() == {
        h: (s, i)
        for h, s, i in zip(
            table["sha256"].to_pylist(),
            table["species"].to_pylist(),
            table["id"].to_pylist(),
            strict=True,
        )
    }
    assert_close(answers(open_engine(old_store)), WANTED)


def test_old_rows_rebuild_to_the_same_answers(old_store):
    shutil.rmtree(old_store / "_snapshots")
    assert_close(answers(open_engine(old_store)), WANTED)


def test_old_rows_read_through_the_derived_columns_and_filters(old_store):
    store = SpecimenStore(old_store, create=False)
    assert store.load_index().column_names == INDEX_COLUMNS
    photos = store.select(PHOTO_COLUMNS, where_in("specimen", ["p'0", "p'1"]))
    assert sorted(photos["id"].to_pylist()) == [f"{i:016x}" for i in (0, 1, 2)]  # 3 deleted
    assert store.read_blob(f"{7:016x}", "thumbnail") == b"t7"
