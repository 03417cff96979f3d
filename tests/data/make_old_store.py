"""Writes ``tests/data/store-05e3023``: a small store, its snapshot and the answers it gave,
made by the code of commit 05e3023 (before the row batch and the snapshot split of issue 26),
for ``tests/test_old_store.py``. Run with that commit's sources first on the path:

    git archive 05e3023 index embedder tests | tar -x -C /tmp/old-src
    PYTHONPATH=/tmp/old-src python tests/data/make_old_store.py tests/data/store-05e3023
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

import numpy as np

from index.config import IdentifierConfig, IndexSettings
from index.specimens import SpecimenIndex
from index.store import SpecimenStore

DIM = 16
SPECIES = 6
FINGERPRINT = "0123456789abcdef"


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def rows(store: SpecimenStore, start: int, n: int):
    """``n`` rows numbered from ``start``: 6 species, 2 views per specimen, a quote in a name."""
    centres = np.random.default_rng(7).normal(size=(SPECIES, DIM))
    numbers = np.arange(start, start + n)
    species = (numbers // 2) % SPECIES
    vectors = unit(centres[species] + 0.6 * np.random.default_rng(start).normal(size=(n, DIM)))
    names = [f"Genus{s % 3}_species{s}" for s in species]
    return store.make_rows(
        {
            "id": [f"{i:016x}" for i in numbers],
            "species": names,
            "genus": [name.split("_")[0] for name in names],
            "family": [f"Family{s % 2}" for s in species],
            "region": ["Red Sea" if s % 3 == 0 else "" for s in species],
            "extra": ['{"order": "Neogastropoda"}'] * n,
            "specimen": [f"p'{i // 2}" for i in numbers],
            "source": ["make_old_store"] * n,
            "filename": [f"{i}.jpg" for i in numbers],
            "sha256": [hashlib.sha256(str(i).encode()).hexdigest() for i in numbers],
            "fingerprint": [FINGERPRINT] * n,
            "thumbnail": [b"t%d" % i for i in numbers],
            "image": [b"i%d" % i for i in numbers],
            "width": [100 + i for i in numbers],
            "height": [50] * n,
        },
        vectors,
    )


def probes() -> np.ndarray:
    """Queries near each species and a few far from all of them."""
    centres = np.random.default_rng(7).normal(size=(SPECIES, DIM))
    near = unit(centres + 0.3 * np.random.default_rng(11).normal(size=centres.shape))
    return np.concatenate([near, unit(np.random.default_rng(12).normal(size=(3, DIM)))])


def main(out: Path) -> None:
    shutil.rmtree(out, ignore_errors=True)
    store = SpecimenStore(out)
    store.ensure_table(DIM)
    store.add(rows(store, 0, 48))
    store.add(rows(store, 48, 12))
    store.delete_ids([f"{i:016x}" for i in (3, 50)])
    store.write_info(fingerprint=FINGERPRINT, model_name="synthetic", model_path="", dim=DIM)
    engine = SpecimenIndex(store, IndexSettings(), IdentifierConfig(), dim=DIM)
    engine.calibrate()  # thresholds in store_info; the snapshot was saved by the load
    queries = probes()
    answers = [engine.identify(q[None, :], top_k=3).model_dump(mode="json") for q in queries]
    record = {"probes": queries.tolist(), "answers": answers}
    (out / "answers.json").write_text(json.dumps(record, indent=1, sort_keys=True))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
