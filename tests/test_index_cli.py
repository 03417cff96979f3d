"""The collection commands end to end through ``shellid`` (api.cli.main), with the fake
embedder standing in for the backbone (the CLI behaviour is the point here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from api.cli import main


@pytest.fixture(autouse=True)
def fake_model(fake_cli_model, monkeypatch):
    # the fake takes model names such as other.pt that are not files: skip the file check
    monkeypatch.setattr("api.commands._collection.check_model_option", lambda model: None)


def query(photos: Path, species: str, specimen: int = 4) -> list[str]:
    return sorted(str(p) for p in (photos / species).glob(f"{species}_{specimen}_*.png"))


def test_enroll_reports_each_species(tmp_path, photos, capsys):
    assert (
        main(["enroll", str(photos), "--store", str(tmp_path / "s"), "--group-regex", "specimen"])
        == 0
    )
    out = capsys.readouterr().out
    assert "Conus alpha: +8 photos, 8 in the store" in out
    assert "enrolled 40 photos of 5 species" in out


def test_enroll_one_species_with_taxonomy(tmp_path, photos, capsys):
    path = str(tmp_path / "s")
    code = main(
        [
            "enroll",
            str(photos / "Murex_epsilon"),
            "--species",
            "Murex epsilon",
            "--family",
            "Muricidae",
            "--region",
            "Red Sea",
            "--store",
            path,
            "--json",
        ]
    )
    assert code == 0
    report = json.loads(capsys.readouterr().out.strip())
    assert report["species"] == "Murex_epsilon" and report["added"] == 8
    assert main(["species", "--store", path]) == 0
    listing = capsys.readouterr().out
    assert "Murex epsilon" in listing and "Muricidae" in listing and "Red Sea" in listing


def test_enrolling_again_reports_duplicates(store, photos, capsys):
    assert (
        main(["enroll", str(photos / "Conus_beta"), "--species", "Conus_beta", "--store", store])
        == 0
    )
    assert "+0 photos (8 already enrolled), 8 in the store" in capsys.readouterr().out


def test_identify_json_has_the_documented_fields(store, photos, capsys):
    assert main(["identify", *query(photos, "Cypraea_delta"), "--store", store, "--json"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1  # two views, one specimen
    answer = json.loads(lines[0])
    assert answer["decision"] == "species" and answer["species"] == "Cypraea_delta"
    assert answer["genus"] == "Cypraea"
    assert set(answer["candidates"][0]) >= {"species", "genus", "family", "score", "probability"}
    assert answer["summary"].startswith("Cypraea delta, ") and answer["detail"]
    assert set(answer["similar"][0]) >= {"specimen_id", "species", "score"}
    assert len(answer["query"]) == 2


def test_identify_each_gives_one_answer_per_photo(store, photos, capsys):
    files = query(photos, "Conus_alpha") + query(photos, "Murex_epsilon")
    assert main(["identify", *files, "--each", "--json", "--top-k", "2", "--store", store]) == 0
    answers = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert len(answers) == 4
    assert [a["candidates"][0]["species"] for a in answers] == ["Conus_alpha"] * 2 + [
        "Murex_epsilon"
    ] * 2
    assert all(len(a["candidates"]) == 2 for a in answers)


def test_identify_takes_the_number_of_candidates_from_shellid_top_k(
    store, photos, capsys, monkeypatch
):
    monkeypatch.setenv("SHELLID_TOP_K", "1")
    assert main(["identify", *query(photos, "Conus_alpha"), "--json", "--store", store]) == 0
    assert len(json.loads(capsys.readouterr().out)["candidates"]) == 1
    assert (
        main(
            ["identify", *query(photos, "Conus_alpha"), "--json", "--top-k", "3", "--store", store]
        )
        == 0
    )
    assert len(json.loads(capsys.readouterr().out)["candidates"]) == 3  # the option wins


def test_identify_prints_a_readable_answer(store, photos, capsys):
    assert main(["identify", *query(photos, "Conus_beta"), "--store", store]) == 0
    out = capsys.readouterr().out
    assert "answer: Conus beta, " in out and " %" in out
    assert "probability" in out and "similarity" in out
    assert "most similar photos in the collection" in out


def test_identify_rejection_shows_similarity_and_no_probability(store, photos, capsys):
    files = query(photos, "Conus_beta")
    assert main(["identify", *files, "--store", store, "--unknown-threshold", "-10"]) == 0
    out = capsys.readouterr().out
    assert "answer: Not a species in this collection" in out
    assert "It looks most like Conus beta (similarity " in out
    assert "Closest species (not a match):" in out
    rows = [line.split() for line in out.splitlines() if line.strip()[:2] in {"1 ", "2 "}]
    assert rows and all(row[-2] == "-" for row in rows)  # probability column

    assert main(["identify", *files, "--store", store, "--unknown-threshold", "-10", "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["decision"] == "unknown_species"
    assert answer["summary"].startswith("Not a species in this collection")
    if answer["placement"] is not None:  # a Conus: placed in its genus, with its own probability
        assert answer["placement"]["name"] == "Conus"
        assert answer["summary"].endswith(f"probably a new Conus (genus, {percent_of(answer)})")
    assert answer["detail"].startswith("It looks most like Conus beta (similarity ")
    assert all(c["probability"] is None for c in answer["candidates"])
    assert answer["none_probability"] is None


def percent_of(answer: dict) -> str:
    from api.wording import percent

    return percent(answer["placement"]["probability"])


def test_identify_with_a_filter(store, photos, capsys):
    assert (
        main(
            [
                "identify",
                *query(photos, "Conus_beta"),
                "--genus",
                "Cypraea",
                "--json",
                "--store",
                store,
            ]
        )
        == 0
    )
    answer = json.loads(capsys.readouterr().out)
    assert {c["genus"] for c in answer["candidates"]} == {"Cypraea"}


def test_threshold_options_override_calibration(store, photos, capsys):
    assert (
        main(
            [
                "identify",
                *query(photos, "Conus_beta"),
                "--ood-threshold",
                "-1",
                "--json",
                "--store",
                store,
            ]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out)["decision"] == "out_of_domain"


def test_search_lists_similar_photos(store, photos, capsys):
    assert (
        main(["search", query(photos, "Murex_epsilon")[0], "--k", "3", "--store", store, "--json"])
        == 0
    )
    found = json.loads(capsys.readouterr().out)
    assert len(found) == 3 and found[0]["species"] == "Murex_epsilon"
    assert main(["search", query(photos, "Murex_epsilon")[0], "--k", "3", "--store", store]) == 0
    assert "Murex epsilon" in capsys.readouterr().out


def test_species_table_counts(store, capsys):
    assert main(["species", "--store", store]) == 0
    out = capsys.readouterr().out
    assert "photos" in out and "specimens" in out
    assert "5 species, 40 photos" in out
    row = next(line for line in out.splitlines() if line.startswith("Conus alpha"))
    assert row.split()[-2:] == ["8", "4"]


def test_remove_answers_from_the_current_listing_without_opening_the_store(store, capsys):
    import subprocess
    import sys

    assert main(["species", "--store", store]) == 0  # leaves a current listing beside the store
    capsys.readouterr()
    code = (
        "import sys; from api.cli import main; "
        f"codes = [main(['remove', '--species', name, '--store', {store!r}]) "
        "for name in ('Conus alpha', 'Nope nope')]; "
        "print(codes, 'lancedb' in sys.modules)"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, stdin=subprocess.DEVNULL
    )
    assert run.stdout.strip() == "[1, 2] False", run.stderr
    assert "would remove Conus alpha: 8 photos of 4 specimens" in run.stderr
    assert "species 'Nope nope' is not enrolled" in run.stderr


def test_remove_species_and_specimen(store, photos, capsys):
    assert main(["remove", "--species", "Conus alpha", "--store", store]) == 1  # not asked: kept
    assert "would remove Conus alpha: 8 photos of 4 specimens" in capsys.readouterr().err
    assert main(["remove", "--species", "Conus alpha", "--store", store, "--yes"]) == 0
    assert "removed Conus alpha: 8 photos (32 left)" in capsys.readouterr().out
    assert (
        main(["search", query(photos, "Murex_epsilon")[0], "--k", "1", "--store", store, "--json"])
        == 0
    )
    specimen = json.loads(capsys.readouterr().out)[0]["specimen_id"]
    assert main(["remove", "--specimen", specimen, "--store", store]) == 0
    assert "31 left" in capsys.readouterr().out
    assert main(["remove", "--specimen", specimen, "--store", store]) == 2
    assert "no enrolled specimen" in capsys.readouterr().err


def test_model_mismatch_is_one_line_naming_the_fix(store, photos, capsys):
    assert (
        main(["identify", *query(photos, "Conus_beta"), "--store", store, "--model", "other.pt"])
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "shellid reindex --model NEW" in err


def test_reindex_switches_the_store_to_the_new_model(store, photos, capsys):
    assert main(["reindex", "--model", "other.pt", "--store", store]) == 0
    assert "re-embedded 40 photos" in capsys.readouterr().out
    assert (
        main(
            [
                "identify",
                *query(photos, "Conus_beta"),
                "--store",
                store,
                "--model",
                "other.pt",
                "--json",
            ]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out)["candidates"][0]["species"] == "Conus_beta"


def test_store_path_comes_from_the_environment(store, photos, capsys, monkeypatch):
    monkeypatch.setenv("SHELLID_STORE", store)
    assert main(["species"]) == 0
    assert "5 species" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["identify", "missing.jpg"], "missing.jpg: file not found"),
        (["enroll", "nowhere"], "nowhere: no such file or folder"),
        (["species", "--store", "{tmp}/none"], "does not exist"),
        (["identify", "{photo}", "--store", "{tmp}/none"], "does not exist"),
        (["identify", "{photo}", "--top-k", "0"], "--top-k must be at least 1"),
    ],
)
def test_user_errors_are_one_line(argv, message, tmp_path, photos, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    photo = query(photos, "Conus_beta")[0]
    argv = [a.format(tmp=tmp_path, photo=photo) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err and "Traceback" not in err


def test_enroll_a_single_photo_needs_a_species(tmp_path, photos, capsys):
    assert main(["enroll", query(photos, "Conus_beta")[0], "--store", str(tmp_path / "s")]) == 2
    assert "--species" in capsys.readouterr().err


def test_unreadable_photo_is_reported_and_the_others_answered(store, photos, tmp_path, capsys):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a photo")
    code = main(
        ["identify", str(bad), query(photos, "Conus_beta")[0], "--each", "--json", "--store", store]
    )
    assert code == 1
    first, second = (json.loads(line) for line in capsys.readouterr().out.strip().splitlines())
    assert first["error"] == "not_an_image" and second["decision"]
