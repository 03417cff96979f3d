"""The command line as a curator meets it: batch identification (folders, patterns, specimens,
csv/jsonl/json files), enrolling many photos of one species, the demo's kept-back specimens
("try these"), clear errors, and light commands that start without torch."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.cli import main
from api.commands import demo_cmd
from index.config import IndexSettings
from tests.conftest import GENERATED_SPECIES, make_collection
from tests.fake_embedder import FakeEmbedder

REPO = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("fake_cli_model")


# ------------------------------------------------------------------ batch identification
def test_identify_a_folder_by_specimen_writes_one_jsonl_line_per_specimen(store, photos, capsys):
    folder = photos / "Murex_epsilon"  # 4 specimens x 2 views
    assert (
        main(["identify", str(folder), "--group-regex", "specimen", "--json", "--store", store])
        == 0
    )
    answers = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [a["specimen"] for a in answers] == [f"Murex_epsilon_{n}" for n in (1, 2, 3, 4)]
    assert all(len(a["query"]) == 2 for a in answers)
    top = answers[0]["candidates"][0]
    assert top["species"] == "Murex_epsilon" and top["genus"] == "Murex"
    assert "family" in top and top["family"] is None  # missing taxonomy is null, never ""
    assert answers[0]["family"] is None
    assert answers[0]["similar"][0]["filename"].startswith("Murex_epsilon_")


def test_identify_a_pattern_gives_one_answer_per_photo_in_csv(store, photos, tmp_path, capsys):
    out = tmp_path / "answers.csv"
    pattern = str(photos / "*" / "*_4_A.png")
    code = main(
        [
            "identify",
            pattern,
            "--output",
            str(out),
            "--top-k",
            "3",
            "--store",
            store,
        ]
    )
    assert code == 0
    assert "wrote 5 answers" in capsys.readouterr().err
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 5 * 3  # one row per candidate
    assert list(rows[0])[:11] == [
        "query",
        "specimen",
        "photos",
        "decision",
        "answer",
        "confidence",
        "placement_rank",
        "placement",
        "placement_probability",
        "rank",
        "species",
    ]
    assert {"genus", "family", "region", "probability", "similarity"} <= set(rows[0])
    firsts = [r for r in rows if r["rank"] == "1"]
    assert {r["species"] for r in firsts} == set(GENERATED_SPECIES)
    assert all(r["query"].endswith("_4_A.png") and r["photos"] == "1" for r in rows)


def test_identify_json_file_holds_every_answer_with_full_taxonomy(tmp_path, photos, capsys):
    path = str(tmp_path / "s")
    taxonomy = tmp_path / "taxonomy.csv"
    taxonomy.write_text(
        "species,genus,family,region,order\nConus_alpha,Conus,Conidae,Red Sea,Neogastropoda\n"
    )
    assert main(["enroll", str(photos), "--store", path, "--taxonomy", str(taxonomy)]) == 0
    out = tmp_path / "a.json"
    files = sorted(str(p) for p in (photos / "Conus_alpha").glob("*_3_*.png"))
    assert (
        main(["identify", *files, "--format", "json", "--output", str(out), "--store", path]) == 0
    )
    answers = json.loads(out.read_text())
    assert len(answers) == 1 and len(answers[0]["query"]) == 2  # listed files: one specimen
    top = answers[0]["candidates"][0]
    assert top == top | {
        "species": "Conus_alpha",
        "genus": "Conus",
        "family": "Conidae",
        "region": "Red Sea",
        "order": "Neogastropoda",
    }


def test_identify_missing_paths_fail_in_one_line(tmp_path, capsys):
    for argv, message in (
        (["identify", str(tmp_path / "nope.jpg")], "nope.jpg: file not found"),
        (["identify", str(tmp_path)], "no photos in this folder"),
        (["identify", str(tmp_path / "*.jpg")], "no photo matches this pattern"),
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err


# ------------------------------------------------------------------ enrolment
def test_enroll_many_photos_of_one_species(tmp_path, photos, capsys):
    path = str(tmp_path / "s")
    first = sorted((photos / "Conus_beta").glob("*_1_*.png"))
    second = sorted((photos / "Conus_beta").glob("*_2_*.png"))
    argv = ["enroll", *map(str, first + second), "--species", "Conus beta", "--family", "Conidae"]
    assert main([*argv, "--group-regex", "specimen", "--store", path, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["species"] == "Conus_beta" and report["added"] == 4
    assert main(["species", "--store", path, "--json"]) == 0
    (species,) = json.loads(capsys.readouterr().out)
    assert species["count"] == 4 and species["specimens"] == 2 and species["family"] == "Conidae"
    assert species["region"] is None


def test_species_listing_is_read_from_the_copy_and_refreshed_after_any_write(store, photos, capsys):
    from api.commands._listing import read_listing
    from index.workflows.collection import Collection

    assert main(["species", "--store", store]) == 0
    capsys.readouterr()
    assert read_listing(store)["photos"] == 40  # written by enroll / the listing
    other = Collection.open(
        store, model=FakeEmbedder(), settings=IndexSettings.load()
    )  # another process, as the service
    other.index.remove_species("Conus_alpha")
    assert read_listing(store) is None  # the store changed: the copy is stale
    assert main(["species", "--store", store]) == 0
    assert "4 species, 32 photos" in capsys.readouterr().out


# ------------------------------------------------------------------ edges
def test_a_mistyped_option_shows_the_usage_of_its_command(capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["identify", "x.jpg", "--top_k", "3"])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: shellid identify ") and "unrecognized arguments: --top_k" in err


def test_a_photo_given_as_the_model_is_refused_clearly(tmp_path, photos, capsys, monkeypatch):
    monkeypatch.undo()  # the real model check, no fake
    photo = sorted((photos / "Conus_beta").glob("*.png"))[0]
    assert main(["identify", str(photo), "--model", str(photo), "--store", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "not a shellid model file" in err and "pop from empty list" not in err


def test_a_zip_that_is_not_a_model_passes_the_quick_check(tmp_path):
    from api.commands._collection import check_model_option

    model = tmp_path / "m.pt"
    with zipfile.ZipFile(model, "w") as archive:
        archive.writestr("data.pkl", b"")
    check_model_option(str(model))  # torch.load decides later


# ------------------------------------------------------------------ demo: try these
@pytest.fixture
def demo_store(tmp_path, monkeypatch, capsys):
    import api.app
    from index.workflows.collection import Collection

    monkeypatch.setattr(
        api.app,
        "open_collection",
        lambda settings: Collection.open(
            settings.store, model=FakeEmbedder(), create=True, settings=settings
        ),
    )
    data = make_collection(tmp_path / "sample", specimens=3, views=2)
    (data / "taxonomy.csv").write_text("species,genus,family\nConus_alpha,Conus,Conidae\n")
    store = str(tmp_path / "store")
    assert main(["demo", "--store", store, "--data", str(data)]) == 0
    out = capsys.readouterr().out
    return store, data, out


def test_demo_keeps_one_specimen_per_species_back_and_lists_it(demo_store):
    from index.workflows.collection import Collection

    store, data, out = demo_store
    assert "added 20 photos of 5 species" in out and "kept back 5 specimens (10 photos)" in out
    collection = Collection.open(
        store, model=FakeEmbedder(), create=False, settings=IndexSettings.load()
    )
    enrolled = set(collection.catalogue.photo_names().values())
    kept = {p.name for p in data.glob("*/*_3_*.png")}  # the last specimen of each species
    assert len(kept) == 10 and not kept & enrolled
    assert {s.species: s.specimens for s in collection.catalogue.species()} == dict.fromkeys(
        GENERATED_SPECIES, 2
    )
    assert collection.catalogue.species_info("Conus_alpha").family == "Conidae"

    from api.app import create_app
    from api.settings import ServiceSettings

    with TestClient(create_app(ServiceSettings(store=store), collection)) as client:
        items = client.get("/v1/try-these").json()["items"]
        assert [i["specimen"] for i in items] == [f"{s}_3" for s in sorted(GENERATED_SPECIES)]
        first = items[0]
        assert first["species"] == "Conus_alpha" and first["family"] == "Conidae"
        assert first["enrolled"] and len(first["photos"]) == 2
        photo = client.get(first["photos"][0]["url"])
        assert photo.status_code == 200 and photo.headers["content-type"] == "image/png"
        assert photo.content == (data / "Conus_alpha" / first["photos"][0]["name"]).read_bytes()
        assert client.get("/v1/try-these/99/0").status_code == 404


def test_the_web_page_has_the_try_these_strip():
    page = (REPO / "api" / "static" / "index.html").read_text()
    script = (REPO / "api" / "static" / "app.js").read_text()
    assert 'id="try-these"' in page and "/v1/try-these" in script


def test_the_sample_taxonomy_names_a_genus_and_family_for_every_sample_species():
    rows = list(csv.DictReader(io.StringIO(demo_cmd.SAMPLE_TAXONOMY.read_text())))
    assert len(rows) == 8 and all(r["genus"] and r["family"] for r in rows)
    names = {r["species"] for r in rows}
    sample = next((p for p in demo_cmd.sample_candidates() if p.is_dir()), None)
    if sample is not None:  # the real sample (../shared) when present
        assert names == {p.name for p in sample.iterdir() if p.is_dir()}


# ------------------------------------------------------------------ start time
MODEL_MODULES = ("torch", "timm", "torchvision", "onnxruntime")
STORE_MODULES = ("lancedb", "faiss", "scipy")
#: (label, argv, whether the species listing's copy is removed first, modules it must not import)
LIGHT = [
    ("help", ["--help"], False, MODEL_MODULES + STORE_MODULES),
    ("species", ["species", "--store", "{store}"], False, MODEL_MODULES + STORE_MODULES),
    ("species-stale", ["species", "--store", "{store}"], True, MODEL_MODULES),
    ("remove", ["remove"], False, MODEL_MODULES + STORE_MODULES),
    ("identify-missing", ["identify", "missing.jpg"], False, MODEL_MODULES + STORE_MODULES),
]


@pytest.mark.parametrize(("label", "argv", "stale", "forbidden"), LIGHT, ids=[x[0] for x in LIGHT])
def test_light_commands_never_import_torch_or_timm(label, argv, stale, forbidden, store, tmp_path):
    """Run the command in a fresh interpreter and list the heavy modules it imported: never
    the model's (torch, timm, ...); the store's (LanceDB, FAISS, SciPy) only to open the store
    when the listing's copy is stale."""
    from api.commands._listing import CACHE_FILE

    if stale:
        (Path(store) / CACHE_FILE).unlink()
    probe = (
        "import sys\n"
        "from api.cli import main\n"
        "try:\n"
        f"    main({[a.format(store=store) for a in argv]!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        f"heavy = sorted(m for m in {forbidden!r} if m in sys.modules)\n"
        "print('HEAVY=' + ','.join(heavy), file=sys.stderr)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    line = next(x for x in done.stderr.splitlines() if x.startswith("HEAVY="))
    assert line == "HEAVY=", f"{argv} imported {line[6:]}"
    if label.startswith("species"):
        assert "5 species, 40 photos" in done.stdout


# ------------------------------------------------------------------ settings and wording
def test_training_without_validation_species_prints_no_nan():
    import math

    from embedder.training import _percent

    assert _percent(math.nan).strip() == "n/a" and _percent(0.875) == " 87.5 %"


def test_one_cache_variable_and_the_old_name_still_works_with_a_warning(monkeypatch, tmp_path):
    from embedder.settings import EmbedderSettings

    monkeypatch.setenv("SHELLID_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("SHELLID_CACHE", str(tmp_path / "old"))
    features = EmbedderSettings.load().features_dir()
    assert features == tmp_path / "cache" / "features"  # the documented one wins
    monkeypatch.delenv("SHELLID_CACHE_DIR")
    with pytest.warns(FutureWarning, match="SHELLID_CACHE is deprecated"):
        assert EmbedderSettings.load().features_dir() == tmp_path / "old"


def test_demo_over_a_store_that_holds_everything_withdraws_the_kept_back(
    tmp_path, monkeypatch, capsys
):
    """A store filled by an earlier demo (every photo enrolled): the kept-back specimens are
    removed, so trying them is never a self-match."""
    import api.app
    from index.workflows.collection import Collection

    monkeypatch.setattr(
        api.app,
        "open_collection",
        lambda settings: Collection.open(
            settings.store, model=FakeEmbedder(), create=True, settings=settings
        ),
    )
    data = make_collection(tmp_path / "sample", specimens=3, views=2)
    store = str(tmp_path / "store")
    assert main(["demo", "--store", store, "--data", str(data), "--hold-out", "0"]) == 0
    assert "added 30 photos" in capsys.readouterr().out
    assert main(["demo", "--store", store, "--data", str(data)]) == 0
    assert "removed 10 photos of kept-back specimens enrolled before" in capsys.readouterr().out
    collection = Collection.open(
        store, model=FakeEmbedder(), create=False, settings=IndexSettings.load()
    )
    assert len(collection.catalogue) == 20
    assert not {p.name for p in data.glob("*/*_3_*.png")} & set(
        collection.catalogue.photo_names().values()
    )
