"""The catalogue: what a collection holds, read from the engine with no model and no photo
decoded, and following the engine's writes at once."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from index.catalogue import Catalogue
from index.config import IdentifierConfig, IndexSettings
from index.errors import SpeciesNotFoundError
from index.specimens import ModelRecord, SpecimenIndex, StoredPhoto
from index.store import SpecimenStore

DIM = 8
MODEL = ModelRecord("fingerprint0", "test-model", "", DIM)


def photos(species: str, count: int) -> list[StoredPhoto]:
    return [
        StoredPhoto(
            f"{species}_{k}.jpg",
            hashlib.sha256(f"{species}{k}".encode()).hexdigest(),
            f"copy {species} {k}".encode(),
            f"thumb {species} {k}".encode(),
            40 + k,
            30,
        )
        for k in range(count)
    ]


def enrol(engine: SpecimenIndex, species: str, count: int, seed: int, **taxonomy: str) -> None:
    vectors = np.random.default_rng(seed).normal(size=(count, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    report = engine.add_photos(
        species,
        photos(species, count),
        vectors,
        MODEL,
        taxonomy=taxonomy,
        source="/data",
        groups=[f"s{k // 2 + 1}" for k in range(count)],
        calibrate=False,
    )
    assert report.added == count


@pytest.fixture
def engine(tmp_path) -> SpecimenIndex:
    store = SpecimenStore(tmp_path / "store", create=True)
    return SpecimenIndex(store, IndexSettings(), IdentifierConfig(), dim=DIM)


def test_the_catalogue_lists_what_the_engine_holds_without_a_model(engine):
    catalogue = Catalogue(engine)
    assert len(catalogue) == 0 and catalogue.species() == [] and not catalogue.taxa().species
    enrol(engine, "Conus_alpha", 4, seed=1, family="Conidae", region="Red Sea", order="Neogastro")
    enrol(engine, "Murex_beta", 2, seed=2)
    assert len(catalogue) == 6  # written through the engine, listed at once
    assert [(s.species, s.count, s.specimens) for s in catalogue.species()] == [
        ("Conus_alpha", 4, 2),
        ("Murex_beta", 2, 1),
    ]
    info = catalogue.species_info("Conus alpha")
    assert (info.genus, info.family, info.region) == ("Conus", "Conidae", "Red Sea")
    assert catalogue.enrolled_taxonomy("Conus_alpha")["Conus_alpha"]["order"] == "Neogastro"
    assert [t.species for t in catalogue.taxa().species] == ["Conus_alpha", "Murex_beta"]
    page = catalogue.species_photos("Conus_alpha", offset=1, limit=2)
    assert page.total == 4 and page.by_specimen == {"s1": 2, "s2": 2}
    assert [p.filename for p in page.photos] == ["Conus_alpha_1.jpg", "Conus_alpha_2.jpg"]
    first = page.photos[0].specimen_id
    assert catalogue.photo_names()[first] == "Conus_alpha_1.jpg"
    assert catalogue.thumbnail(first) == b"thumb Conus_alpha 1"
    assert catalogue.image(first) == b"copy Conus_alpha 1"
    engine.remove_species("Murex_beta")
    assert [s.species for s in catalogue.species()] == ["Conus_alpha"] and len(catalogue) == 4
    with pytest.raises(SpeciesNotFoundError):
        catalogue.species_info("Murex_beta")
