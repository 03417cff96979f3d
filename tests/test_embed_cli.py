"""``shellid embed``: npz contents (keys, shapes, normalisation, labels, groups), trained
models, unreadable photos and bad input reported in one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from api.cli import main
from embedder import EmbeddingModel, create_backbone
from embedder.model import create_head
from embedder.transforms import PreprocessConfig
from tests.conftest import GENERATED_SPECIES, make_collection

TWO_SPECIES = dict(list(GENERATED_SPECIES.items())[:2])


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def small_tree(tmp_path) -> Path:
    """2 species x 2 specimens x 2 views."""
    return make_collection(tmp_path / "tree", species=TWO_SPECIES, specimens=2, views=2, size=64)


def test_embed_writes_normalised_embeddings_labels_paths_and_groups(small_tree, tmp_path, capsys):
    out = tmp_path / "out" / "emb.npz"
    code, stdout, stderr = run_cli(
        ["embed", str(small_tree), "--out", str(out), "--group-regex", "specimen", "--quiet"],
        capsys,
    )
    assert code == 0, stderr
    data = np.load(out)
    assert {"embeddings", "labels", "paths", "groups", "fingerprint"} <= set(data.files)
    assert data["embeddings"].dtype == np.float32 and data["embeddings"].shape == (8, 1280)
    np.testing.assert_allclose(np.linalg.norm(data["embeddings"], axis=1), 1.0, atol=1e-5)
    assert sorted(set(data["labels"])) == sorted(TWO_SPECIES)
    for label, path, group in zip(data["labels"], data["paths"], data["groups"], strict=True):
        assert Path(path).parent.name == label
        assert group == f"{label}/{Path(path).stem.rsplit('_', 1)[0]}"
    assert "8 embeddings" in stdout and "images/s" in stdout


def test_embed_loose_photos_get_empty_labels(small_tree, tmp_path, capsys):
    files = sorted((small_tree / "Conus_alpha").glob("*.png"))[:3]
    out = tmp_path / "loose.npz"
    code, _, stderr = run_cli(["embed", *map(str, files), "--out", str(out), "--quiet"], capsys)
    assert code == 0, stderr
    data = np.load(out)
    assert list(data["labels"]) == ["", "", ""]
    assert [Path(p).name for p in data["paths"]] == [f.name for f in files]

    folder = small_tree / "Conus_alpha"
    code, _, stderr = run_cli(["embed", str(folder), "--out", str(out), "--quiet"], capsys)
    assert code == 0, stderr
    assert len(np.load(out)["labels"]) == 4 and set(np.load(out)["labels"]) == {""}


def test_embed_with_a_trained_model_uses_its_size_and_fingerprint(small_tree, tmp_path, capsys):
    backbone = create_backbone(weights=None)
    backbone.preprocess = PreprocessConfig(**{**backbone.preprocess.to_dict(), "input_size": 64})
    head = create_head("linear", backbone.num_features, 24)
    model = EmbeddingModel(
        backbone, head, {"kind": "linear", "in_dim": backbone.num_features, "out_dim": 24}
    )
    model.save(tmp_path / "MODEL.pt")
    out = tmp_path / "trained.npz"
    code, _, stderr = run_cli(
        [
            "embed",
            str(small_tree),
            "--model",
            str(tmp_path / "MODEL.pt"),
            "--out",
            str(out),
            "--quiet",
        ],
        capsys,
    )
    assert code == 0, stderr
    data = np.load(out)
    assert data["embeddings"].shape == (8, 24)
    assert str(data["fingerprint"]) == model.fingerprint
    np.testing.assert_allclose(np.linalg.norm(data["embeddings"], axis=1), 1.0, atol=1e-5)


def test_embed_skips_unreadable_photos_and_counts_them(small_tree, tmp_path, capsys):
    (small_tree / "Conus_alpha" / "broken.jpg").write_bytes(b"not a jpeg at all")
    (small_tree / "Conus_beta" / "empty.png").write_bytes(b"")
    out = tmp_path / "emb.npz"
    code, _, stderr = run_cli(["embed", str(small_tree), "--out", str(out), "--quiet"], capsys)
    assert code == 0
    assert "skipped 2 unreadable image(s)" in stderr and "broken.jpg" in stderr
    assert len(stderr.strip().splitlines()) == 1
    data = np.load(out)
    assert len(data["paths"]) == 8 and not any("broken" in p for p in data["paths"])


def test_embed_with_only_unreadable_photos_writes_nothing(tmp_path, capsys):
    folder = tmp_path / "junk"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(b"junk")
    out = tmp_path / "emb.npz"
    code, _, stderr = run_cli(["embed", str(folder), "--out", str(out), "--quiet"], capsys)
    assert code == 2 and "none of the 1 photo(s) could be read" in stderr
    assert not out.exists()


@pytest.mark.parametrize(
    ("make_args", "message"),
    [
        (
            lambda root: [str(root / "missing"), "--out", str(root / "e.npz")],
            "no such file or folder",
        ),
        (lambda root: [str(root / "empty"), "--out", str(root / "e.npz")], "no photos found"),
        (lambda root: [str(root / "tree"), "--out", str(root / "e.csv")], "expected a .npz file"),
        (
            lambda root: [str(root / "tree"), "--out", str(root / "blocker" / "e.npz")],
            "cannot create",
        ),
        (lambda root: [str(root / "tree"), "--out", "/proc/e.npz"], "not writable"),
        (
            lambda root: [
                str(root / "tree"),
                "--model",
                str(root / "nope.pt"),
                "--out",
                str(root / "e.npz"),
            ],
            "not found",
        ),
        (
            lambda root: [
                str(root / "tree"),
                "--model",
                str(root / "blocker"),
                "--out",
                str(root / "e.npz"),
            ],
            "not a readable model file",
        ),
    ],
)
def test_embed_bad_input_gives_one_clear_line(small_tree, tmp_path, capsys, make_args, message):
    (tmp_path / "empty").mkdir()
    (tmp_path / "blocker").write_text("a file where a folder is expected")
    code, _, stderr = run_cli(["embed", *make_args(tmp_path), "--quiet"], capsys)
    assert code == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("shellid: error:") and message in lines[0]
    assert not (tmp_path / "e.npz").exists()
