"""Filters a curator can name: ``GET /v1/taxa`` lists the known regions, genera, families and
species; a subset (species, genus or family names) restricts identification in the API and
with ``shellid identify --subset FILE``; an unknown value is answered in one line with the
closest known ones (422 over HTTP). Also the subject noun kept in the store, and how taxon
names are shown. Generated photos and the fast fake embedder: no real data, no backbone."""

from __future__ import annotations

import io
import json

import pytest
from fastapi.testclient import TestClient

import api.service
from api.app import create_app
from api.cli import main
from api.settings import ServiceSettings
from index.config import IndexSettings
from index.errors import InvalidQueryError
from index.names import accepted_species, display_name
from index.taxa import closest, read_subset
from index.workflows.collection import Collection
from tests.conftest import GENERATED_SPECIES, draw_specimen, make_collection
from tests.fake_embedder import FakeEmbedder

TAXONOMY = """species,genus,family,region
Conus_alpha,Conus,Conidae,Red Sea
Conus_beta,Conus,Conidae,Red Sea; Indian Ocean
Cypraea_gamma,Cypraea,Cypraeidae,Indian Ocean
Cypraea_delta,Cypraea,Cypraeidae,Mediterranean
Murex_epsilon,Murex,Muricidae,Mediterranean
"""


@pytest.fixture(scope="module")
def filled(tmp_path_factory):
    """A store of the five generated species with genus, family and region."""
    root = make_collection(tmp_path_factory.mktemp("photos") / "data", specimens=3, views=1)
    (root / "taxonomy.csv").write_text(TAXONOMY)
    store = str(tmp_path_factory.mktemp("store") / "store")
    collection = Collection.open(
        store, model=FakeEmbedder(), create=True, settings=IndexSettings.load()
    )
    collection.enroll_folder(root, progress=False, group_pattern="specimen")
    return store, collection


@pytest.fixture
def client(filled, monkeypatch):
    monkeypatch.delenv("SHELLID_SUBJECT", raising=False)
    store, collection = filled
    with TestClient(create_app(ServiceSettings(store=store), collection)) as test_client:
        yield test_client


def photo(species: str = "Conus_alpha", seed: int = 4242) -> bytes:
    kind, colour = GENERATED_SPECIES[species]
    buffer = io.BytesIO()
    draw_specimen(kind, colour, seed, 96).save(buffer, format="PNG")
    return buffer.getvalue()


def identify(client, params=None, data=None, species: str = "Conus_alpha"):
    return client.post(
        "/v1/identify",
        params=params or {},
        data=data or {},
        files=[("images", ("q.png", photo(species), "image/png"))],
    )


# ------------------------------------------------------------------ /v1/taxa
def test_taxa_lists_the_known_regions_genera_families_and_species(client):
    body = client.get("/v1/taxa").json()
    assert body["regions"] == ["Indian Ocean", "Mediterranean", "Red Sea"]
    assert body["genera"] == ["Conus", "Cypraea", "Murex"]
    assert body["families"] == ["Conidae", "Cypraeidae", "Muricidae"]
    beta = next(s for s in body["species"] if s["species"] == "Conus_beta")
    assert beta == {
        "species": "Conus_beta",
        "name": "Conus beta",
        "genus": "Conus",
        "family": "Conidae",
        "regions": ["Indian Ocean", "Red Sea"],
    }


# ------------------------------------------------------------------ subset over HTTP
def test_identify_with_a_subset_only_considers_the_taxa_it_names(client):
    answer = identify(client, params={"subset": ["Cypraeidae", "Murex epsilon"]})
    assert answer.status_code == 200, answer.text
    named = {c["species"] for c in answer.json()["candidates"]}
    assert named == {"Cypraea_gamma", "Cypraea_delta", "Murex_epsilon"}
    as_form = identify(client, data={"subset": "Conus_beta\n# a comment\n\nMurex\n"})
    assert {c["species"] for c in as_form.json()["candidates"]} == {"Conus_beta", "Murex_epsilon"}


def test_an_unknown_subset_name_is_422_with_the_closest_known_names(client):
    answer = identify(client, params={"subset": ["Cypraeida"]})
    assert answer.status_code == 422
    assert answer.json()["detail"].startswith(
        "unknown taxon in the subset 'Cypraeida' (closest known: 'Cypraeidae', 'Cypraea'"
    )


def test_an_unknown_region_is_422_with_the_closest_known_regions(client):
    answer = identify(client, params={"region": "Red See"})
    assert answer.status_code == 422
    assert answer.json()["detail"] == "unknown region 'Red See' (closest known: 'Red Sea')"
    far = identify(client, params={"genus": "Zzyzx"}).json()["detail"]
    assert far == "unknown genus 'Zzyzx' (known: 'Conus', 'Cypraea', 'Murex')"


def test_known_values_that_no_species_shares_still_say_so(client):
    answer = identify(client, params={"region": "Red Sea", "family": "Muricidae"})
    assert answer.status_code == 422
    assert "no enrolled species matches region='Red Sea', family='Muricidae'" in answer.text


# ------------------------------------------------------------------ subset on the CLI
def test_cli_identify_subset_file_restricts_the_candidates(filled, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(
        "index.workflows.collection.collection.make_embedder",
        lambda model, **_: (FakeEmbedder(), ""),
    )
    store, _ = filled
    query = tmp_path / "q.png"
    query.write_bytes(photo("Murex_epsilon"))
    subset = tmp_path / "taxa.txt"
    subset.write_text("Conus\nMurex_epsilon  # the one it is\n")
    assert main(["identify", str(query), "--store", store, "--subset", str(subset), "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert {c["species"] for c in answer["candidates"]} == {
        "Conus_alpha",
        "Conus_beta",
        "Murex_epsilon",
    }
    assert answer["species"] == "Murex_epsilon" or answer["decision"] != "species"


def test_cli_identify_unknown_subset_name_fails_in_one_line_before_embedding(
    filled, tmp_path, capsys, monkeypatch
):
    model = FakeEmbedder()
    monkeypatch.setattr(
        "index.workflows.collection.collection.make_embedder", lambda name, **_: (model, "")
    )
    store, _ = filled
    query = tmp_path / "q.png"
    query.write_bytes(photo())
    subset = tmp_path / "taxa.txt"
    subset.write_text("Murex epsilon\nConus alfa\n")
    assert main(["identify", str(query), "--store", store, "--subset", str(subset)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "shellid: error: unknown taxon in the subset 'Conus alfa' "
        "(closest known: 'Conus alpha', 'Conus beta', 'Conus')"
    )
    assert model.calls == 0  # refused before any photo was embedded
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n")
    assert main(["identify", str(query), "--store", store, "--subset", str(empty)]) == 2
    assert "names no taxon" in capsys.readouterr().err
    missing = tmp_path / "missing.txt"
    assert main(["identify", str(query), "--store", store, "--subset", str(missing)]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_cli_identify_unknown_family_names_the_closest(filled, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(
        "index.workflows.collection.collection.make_embedder",
        lambda model, **_: (FakeEmbedder(), ""),
    )
    store, _ = filled
    query = tmp_path / "q.png"
    query.write_bytes(photo())
    assert main(["identify", str(query), "--store", store, "--family", "conidea"]) == 2
    assert capsys.readouterr().err.strip() == (
        "shellid: error: unknown family 'conidea' (closest known: 'Conidae')"
    )


# ------------------------------------------------------------------ the subject noun
def test_the_subject_noun_comes_from_the_store_and_the_env_overrides_it(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.delenv("SHELLID_SUBJECT", raising=False)
    monkeypatch.setattr(
        "index.workflows.collection.collection.make_embedder",
        lambda model, **_: (FakeEmbedder(), ""),
    )
    root = make_collection(tmp_path / "fish", specimens=2, views=1)
    store = str(tmp_path / "store")
    assert main(["enroll", str(root), "--store", store, "--subject", "fish"]) == 0
    capsys.readouterr()
    collection = Collection.open(
        store, model=FakeEmbedder(), create=False, settings=IndexSettings.load()
    )
    worded = []
    real_words = api.service.words_for
    monkeypatch.setattr(
        api.service,
        "words_for",
        lambda result, noun: worded.append(noun) or real_words(result, noun),
    )
    with TestClient(create_app(ServiceSettings(store=store), collection)) as client:
        assert client.get("/v1/info").json()["subject"] == "fish"
        assert identify(client).status_code == 200
        assert worded == ["fish"]  # the answer is worded with the store's noun
    with TestClient(
        create_app(ServiceSettings(store=store, subject="butterfly"), collection)
    ) as client:
        assert client.get("/v1/info").json()["subject"] == "butterfly"


def test_put_subject_needs_the_write_key_and_keeps_the_word(filled, monkeypatch):
    monkeypatch.delenv("SHELLID_SUBJECT", raising=False)
    store, collection = filled
    settings = ServiceSettings(store=store, api_key="k")
    with TestClient(create_app(settings, collection)) as client:
        assert client.put("/v1/subject", json={"subject": "bird"}).status_code == 401
        key = {"Authorization": "Bearer k"}
        bad = client.put("/v1/subject", json={"subject": "x/y"}, headers=key)
        assert bad.status_code == 422 and "not usable" in bad.json()["detail"]
        done = client.put("/v1/subject", json={"subject": "  sea  urchin "}, headers=key)
        assert done.json() == {"subject": "sea urchin"}
        assert client.get("/v1/info").json()["subject"] == "sea urchin"
    from api.subject import recorded

    assert recorded(collection.store) == "sea urchin"
    collection.store.write_info(subject=None)


def test_a_store_without_a_subject_says_shell(tmp_path, monkeypatch):
    monkeypatch.delenv("SHELLID_SUBJECT", raising=False)
    from api.subject import resolve
    from index.store import SpecimenStore

    assert resolve(None, SpecimenStore(tmp_path / "new")) == "shell"
    assert resolve(" fish ", None) == "fish"


# ------------------------------------------------------------------ names as shown
@pytest.mark.parametrize(
    ("stored", "shown"),
    [
        ("Conus_textile", "Conus textile"),
        ("Bellamya_species", "Bellamya sp."),
        ("Bellamya_spp", "Bellamya sp."),
        ("Bellamya sp.", "Bellamya sp."),
        ("Conidae", "Conidae"),
        ("species_alpha", "species alpha"),  # not a genus: no placeholder
        (None, ""),
    ],
)
def test_display_name_spells_placeholders_as_sp(stored, shown):
    assert display_name(stored) == shown


def test_accepted_names_drop_the_authority():
    assert accepted_species("Anadara consociata (E.A. Smith 1885)") == "Anadara_consociata"
    assert accepted_species("Acteon nakayamai Habe 1952") == "Acteon_nakayamai"
    assert accepted_species("Bellamya sp.") == "Bellamya_sp."


def test_the_demo_enrols_under_the_accepted_names_of_the_packaged_taxonomy():
    from api.commands.demo_cmd import SAMPLE_TAXONOMY, species_name
    from embedder.datasets import ImageRecord, load_taxonomy

    taxonomy = load_taxonomy(SAMPLE_TAXONOMY)
    names = {
        species_name(ImageRecord(path=None, species=folder, group="1", taxonomy=fields))  # type: ignore[arg-type]
        for folder, fields in taxonomy.items()
    }
    assert "Anadara_consociata" in names and "Aandara_consociata" not in names
    assert display_name("Bellamya_sp.") == "Bellamya sp." and "Bellamya_sp." in names
    for name in names:
        genus = name.split("_")[0]
        assert any(fields["genus"] == genus for fields in taxonomy.values()), name


def test_helpers_read_subset_files_and_rank_close_names():
    assert read_subset("\ufeffConus\n\n  # only comments\nMurex  # genus\n") == ["Conus", "Murex"]
    assert closest("red see", ["Red Sea", "Indian Ocean"]) == ["Red Sea"]
    with pytest.raises(InvalidQueryError):
        from index.taxa import KnownTaxa, subset_mask

        subset_mask(KnownTaxa(), ["  "])


def test_demo_keeps_its_subject_in_the_store_and_refuses_a_bad_one_first(
    tmp_path, monkeypatch, capsys
):
    import api.app
    from api.subject import recorded

    opened = []

    def open_fake(settings):
        opened.append(settings.store)
        return Collection.open(settings.store, model=FakeEmbedder(), create=True, settings=settings)

    monkeypatch.setattr(api.app, "open_collection", open_fake)
    data = make_collection(tmp_path / "sample", specimens=2, views=1)
    store = str(tmp_path / "store")
    assert main(["demo", "--store", store, "--data", str(data), "--subject", "fish"]) == 0
    capsys.readouterr()
    assert (
        recorded(
            Collection.open(
                store, model=FakeEmbedder(), create=False, settings=IndexSettings.load()
            ).store
        )
        == "fish"
    )
    opened.clear()
    bad = ["demo", "--store", str(tmp_path / "other"), "--data", str(data), "--subject", "1/2"]
    assert main(bad) == 2
    assert "subject '1/2' is not usable" in capsys.readouterr().err
    assert opened == []  # refused before any store was opened
