"""The words of the command line and ``/v1/info``: counts in the singular when there is one,
no ``--yes`` advice after the user has answered no, where an enrolled photo came from, and
the model named as people know it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from api.cli import main


@pytest.fixture
def fake_model(fake_cli_model, monkeypatch):
    monkeypatch.setattr("api.commands._collection.check_model_option", lambda model: None)


def test_counts_are_singular_for_one():
    from api.commands._output import counted
    from api.commands.remove_cmd import species_removal

    assert [counted(n, "photo") for n in (0, 1, 2)] == ["0 photos", "1 photo", "2 photos"]
    assert counted(1, "species") == "1 species" and counted(3, "species") == "3 species"
    assert counted(2, "family") == "2 families" and counted(2, "genus") == "2 genera"
    assert species_removal("Conus_alpha", 1, 1, "s") == "Conus alpha: 1 photo of 1 specimen from s"


def test_one_photo_is_enrolled_and_removed_in_the_singular(fake_model, tmp_path, photos, capsys):
    store = str(tmp_path / "store")
    photo = str(sorted((photos / "Conus_alpha").glob("*.png"))[0])
    assert main(["enroll", photo, "--species", "Conus_alpha", "--store", store]) == 0
    out = capsys.readouterr().out
    assert "Conus alpha: +1 photo, 1 in the store" in out
    assert "enrolled 1 photo of 1 species" in out and "(1 photo, 1 species in all" in out
    assert main(["remove", "--species", "Conus alpha", "--store", store, "--yes"]) == 0
    assert "removed Conus alpha: 1 photo (0 left)" in capsys.readouterr().out


@pytest.mark.parametrize("answer", ["n", ""])
def test_no_yes_advice_after_the_user_said_no(fake_model, store, capsys, monkeypatch, answer):
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    monkeypatch.setattr("builtins.input", lambda question: answer)
    assert main(["remove", "--species", "Conus alpha", "--store", store]) == 1
    assert capsys.readouterr().err == "shellid: not removed\n"


def test_without_a_terminal_the_advice_says_how_to_remove(fake_model, store, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    assert main(["remove", "--species", "Conus alpha", "--store", store]) == 1
    err = capsys.readouterr().err
    assert "would remove Conus alpha: 8 photos of 4 specimens" in err and "--yes" in err


def test_search_names_the_file_a_folder_enrolment_came_from(fake_model, store, photos, capsys):
    query = str(sorted((photos / "Murex_epsilon").glob("*_4_*.png"))[0])
    assert main(["search", query, "--k", "1", "--store", store, "--json"]) == 0
    found = json.loads(capsys.readouterr().out)[0]
    path = Path(found["source"], found["filename"])
    assert path.is_file() and path.parent == (photos / "Murex_epsilon").resolve()
    assert main(["search", query, "--k", "1", "--store", store]) == 0
    assert str(path) in capsys.readouterr().out


def test_photos_sent_to_the_service_are_labelled_upload():
    from api.commands.identify_cmd import photo_label
    from index.results import UPLOAD_SOURCE, SimilarSpecimen

    sent = SimilarSpecimen(specimen_id="a", species="A_b", score=0.5, source=UPLOAD_SOURCE)
    assert photo_label(sent, {"a": "shell.jpg"}) == "shell.jpg (upload)"
    kept = SimilarSpecimen(specimen_id="b", species="A_b", score=0.5, source="/data/A_b")
    assert photo_label(kept, {"b": "x.jpg"}) == "/data/A_b/x.jpg"
    assert photo_label(kept, {}) == "b"


def test_the_model_is_named_through_its_wrappers():
    from api.batcher import BatchedModel
    from embedder.backbones import create_backbone
    from embedder.embedding import Embedder
    from embedder.model import EmbeddingModel
    from index.workflows.models import model_label, model_name

    served = BatchedModel(
        Embedder(EmbeddingModel(create_backbone("efficientnet_lite0", None))), None
    )
    assert model_name(served) == served.name == "efficientnet_lite0/frozen"
    assert model_label(served, "/models/shells.pt") == "efficientnet_lite0/frozen (shells.pt)"
    assert model_label(served, "tf_efficientnet_lite2") == "efficientnet_lite0/frozen"
