"""The ONNX Runtime path (``embedder.runtime``) and parallel decoding in ``Embedder``: same
vectors as PyTorch, one cached export per model fingerprint (re-exported when damaged),
runtime choice and fallback, input order and unreadable files kept as before."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from embedder import (
    Embedder,
    EmbeddingModel,
    ImageIntakeError,
    create_backbone,
    eval_transform,
    load_image,
)
from embedder import runtime as rt
from embedder.cache_dir import default_cache_dir
from embedder.embedding import array_transform
from embedder.runtime import OnnxRunner, OnnxRuntimeError, onnx_path, resolve_runtime
from embedder.transforms import PreprocessConfig
from tests.conftest import GENERATED_SPECIES, draw_specimen, make_collection

CPU = torch.device("cpu")
#: Measured: min cosine between ONNX Runtime and PyTorch embeddings is ~0.999999.
MIN_COSINE = 0.9999


@pytest.fixture(scope="module")
def onnx_cache(tmp_path_factory) -> Path:
    """One cache directory per module, so the frozen model is exported once."""
    return tmp_path_factory.mktemp("shellid-cache")


@pytest.fixture(scope="module")
def runner(frozen_model, onnx_cache) -> OnnxRunner:
    return OnnxRunner(frozen_model, cache_dir=onnx_cache)


def small_model() -> EmbeddingModel:
    """Random-weight Lite0 at 64 px input: a fresh fingerprint each call, quick to export."""
    backbone = create_backbone("efficientnet_lite0", weights=None)
    backbone.preprocess = PreprocessConfig(**{**backbone.preprocess.to_dict(), "input_size": 64})
    return EmbeddingModel(backbone).eval()


def specimens(count: int, size: int = 120) -> list:
    kinds = list(GENERATED_SPECIES.values())
    return [draw_specimen(*kinds[i % len(kinds)], seed=i, size=size + 7 * i) for i in range(count)]


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape
    return float((a * b).sum(axis=1).min())


def test_onnx_embeddings_match_torch_on_generated_images(frozen_model, runner, onnx_cache):
    images = specimens(6)
    torch_vectors = Embedder(frozen_model, runtime="torch").embed_images(images)
    onnx = Embedder(frozen_model, runtime="onnx", cache_dir=onnx_cache)
    onnx_vectors = onnx.embed_images(images)
    assert onnx.runtime == "onnx"
    assert onnx_vectors.dtype == np.float32 and onnx_vectors.shape == (6, frozen_model.dim)
    np.testing.assert_allclose(np.linalg.norm(onnx_vectors, axis=1), 1.0, atol=1e-5)
    assert min_cosine(torch_vectors, onnx_vectors) >= MIN_COSINE


def test_runner_maps_a_batch_to_normalised_embeddings_and_an_empty_batch_to_none(
    frozen_model, runner
):
    batch = torch.randn(3, 3, 224, 224)
    with torch.inference_mode():
        expected = frozen_model(batch).numpy()
    got = runner(batch.numpy())
    assert got.shape == (3, frozen_model.dim) and got.dtype == np.float32
    assert min_cosine(expected, got) >= MIN_COSINE
    assert runner(np.zeros((0, 3, 224, 224), np.float32)).shape == (0, frozen_model.dim)


@pytest.mark.shared
def test_onnx_embeddings_match_torch_on_real_shell_photos(shared, frozen_model, onnx_cache):
    files = sorted(p for p in shared("shells-zhang8").rglob("*") if p.suffix.lower() == ".jpg")
    files = files[:: max(1, len(files) // 16)][:16]
    torch_result = Embedder(frozen_model, runtime="torch", num_workers=0).embed_paths(
        files, progress=False
    )
    onnx_result = Embedder(frozen_model, runtime="onnx", cache_dir=onnx_cache).embed_paths(
        files, progress=False
    )
    assert onnx_result.paths == torch_result.paths == files and not onnx_result.errors
    assert min_cosine(torch_result.embeddings, onnx_result.embeddings) >= MIN_COSINE


def test_export_is_cached_and_reused_without_exporting_again(
    frozen_model, runner, onnx_cache, monkeypatch
):
    path = onnx_path(frozen_model, onnx_cache)
    assert runner.path == path and path.is_file()
    assert path.name == f"{frozen_model.fingerprint}-224.onnx"
    content = path.read_bytes()

    def no_export(*args, **kwargs):
        raise AssertionError("exported again")

    monkeypatch.setattr(rt, "export_onnx", no_export)
    again = OnnxRunner(frozen_model, cache_dir=onnx_cache)
    assert not again.exported and again.path == path and path.read_bytes() == content
    assert list(path.parent.glob("*.tmp")) == []


def test_export_is_keyed_by_model_fingerprint_and_emits_no_warnings(
    frozen_model, runner, onnx_cache
):
    other = small_model()
    assert other.fingerprint != frozen_model.fingerprint
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the exporter's warnings are silenced
        other_runner = OnnxRunner(other, cache_dir=onnx_cache)
    assert other_runner.exported
    assert other_runner.path == onnx_cache / "onnx" / f"{other.fingerprint}-64.onnx"
    assert runner.path.is_file() and other_runner.path != runner.path
    assert other_runner(np.zeros((2, 3, 64, 64), np.float32)).shape == (2, other.dim)


def test_corrupt_cached_export_is_exported_again(tmp_path):
    model = small_model()
    path = onnx_path(model, tmp_path)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not an onnx model")
    runner = OnnxRunner(model, cache_dir=tmp_path)
    assert runner.exported and path.read_bytes() != b"not an onnx model"
    batch = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        expected = model(batch).numpy()
    assert min_cosine(expected, runner(batch.numpy())) >= MIN_COSINE


def test_oldest_exports_are_pruned_beyond_the_limit(tmp_path, monkeypatch):
    folder = tmp_path / "onnx"
    folder.mkdir()
    for i in range(5):
        (folder / f"old{i}-64.onnx").write_bytes(b"x")
        (folder / f"old{i}-64.onnx").touch()
    monkeypatch.setattr(rt, "KEEP_EXPORTS", 3)
    model = small_model()
    OnnxRunner(model, cache_dir=tmp_path)
    kept = sorted(p.name for p in folder.glob("*.onnx"))
    assert len(kept) == 3 and f"{model.fingerprint}-64.onnx" in kept


def test_resolve_runtime_choices_and_errors():
    assert rt.RUNTIMES == ("auto", "torch", "onnx")
    assert resolve_runtime("auto", CPU) == "onnx"
    assert resolve_runtime("onnx", CPU) == "onnx"
    assert resolve_runtime("torch", CPU) == "torch"
    cuda = torch.device("cuda", 0)
    assert resolve_runtime("auto", cuda) == "torch"
    assert resolve_runtime("torch", cuda) == "torch"
    with pytest.raises(ValueError, match="runs on the CPU but the model is on cuda:0"):
        resolve_runtime("onnx", cuda)
    with pytest.raises(ValueError, match="unknown runtime 'tensorrt'; choose one of auto, torch"):
        resolve_runtime("tensorrt", CPU)
    with pytest.raises(ValueError, match="unknown runtime"):
        Embedder(small_model(), runtime="tensorrt")


def test_embedder_exports_lazily_on_first_use(tmp_path):
    model = small_model()
    embedder = Embedder(model, cache_dir=tmp_path)
    assert not (tmp_path / "onnx").exists()
    vectors = embedder.embed_images(specimens(1))
    assert vectors.shape == (1, model.dim) and embedder.runtime == "onnx"
    assert onnx_path(model, tmp_path).is_file()


def test_torch_runtime_never_exports(tmp_path):
    embedder = Embedder(small_model(), runtime="torch", cache_dir=tmp_path)
    embedder.embed_images(specimens(3))
    assert embedder.runtime == "torch" and not (tmp_path / "onnx").exists()


def test_the_settings_runtime_reaches_the_embedder_and_the_environment_is_not_reread(
    tmp_path, monkeypatch
):
    from embedder.settings import EmbedderSettings
    from index.workflows.models import make_embedder

    monkeypatch.setenv("SHELLID_RUNTIME", "torch")
    monkeypatch.setenv("SHELLID_CACHE_DIR", str(tmp_path))
    embedder, _ = make_embedder(small_model(), settings=EmbedderSettings.load())
    embedder.embed_images(specimens(1))
    assert embedder.runtime == "torch" and not (tmp_path / "onnx").exists()
    assert Embedder(small_model(), cache_dir=tmp_path).requested_runtime == "auto"
    with pytest.raises(ValueError, match="unknown runtime 'tensorflow'"):
        Embedder(small_model(), runtime="tensorflow", cache_dir=tmp_path)


def test_changed_weights_get_a_new_export(tmp_path):
    model = small_model()
    embedder = Embedder(model, cache_dir=tmp_path)
    images = specimens(2)
    embedder.embed_images(images)
    first = onnx_path(model, tmp_path)
    with torch.no_grad():
        next(model.parameters()).mul_(1.5)
    model.invalidate_fingerprint()
    after = embedder.embed_images(images)
    assert onnx_path(model, tmp_path) != first and onnx_path(model, tmp_path).is_file()
    expected = Embedder(model, runtime="torch").embed_images(images)
    assert min_cosine(expected, after) >= MIN_COSINE


def test_auto_falls_back_to_torch_with_a_warning_when_onnxruntime_is_missing(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import raises ImportError
    model = small_model()
    embedder = Embedder(model, cache_dir=tmp_path)
    with pytest.warns(RuntimeWarning, match="PyTorch instead of ONNX Runtime: onnxruntime is not"):
        assert embedder.runtime == "torch"
    assert embedder.embed_images(specimens(1)).shape == (1, model.dim)
    with pytest.raises(OnnxRuntimeError, match="pip install onnxruntime"):
        Embedder(model, runtime="onnx", cache_dir=tmp_path).embed_images(specimens(1))


def test_auto_falls_back_to_torch_with_a_warning_when_export_fails(tmp_path, monkeypatch):
    def broken_export(*args, **kwargs):
        raise RuntimeError("unsupported operator\nlong exporter trace")

    monkeypatch.setattr(rt, "export_onnx", broken_export)
    model = small_model()
    with pytest.warns(RuntimeWarning) as caught:
        vectors = Embedder(model, cache_dir=tmp_path).embed_images(specimens(1))
    assert vectors.shape == (1, model.dim)
    messages = [str(w.message) for w in caught]
    assert messages == [
        "shellid: embedding with PyTorch instead of ONNX Runtime: "
        "cannot export the model to ONNX: unsupported operator"
    ]
    with pytest.raises(OnnxRuntimeError, match="cannot export the model to ONNX"):
        Embedder(model, runtime="onnx", cache_dir=tmp_path).embed_images(specimens(1))


def test_parallel_embed_paths_keeps_input_order_and_reports_unreadable_files(
    frozen_model, runner, onnx_cache, tmp_path
):
    tree = make_collection(tmp_path / "tree", specimens=2, views=1, size=80)
    files = sorted(tree.rglob("*.png"), reverse=True)  # not the order the tree lists them
    bad = tmp_path / "bad.jpg"
    bad.write_text("this is not a photo")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    paths = [*files[:3], bad, *files[3:7], empty, *files[7:]]
    parallel = Embedder(
        frozen_model, batch_size=3, num_workers=3, runtime="onnx", cache_dir=onnx_cache
    ).embed_paths(paths, progress=False)
    sequential = Embedder(
        frozen_model, batch_size=3, num_workers=0, runtime="onnx", cache_dir=onnx_cache
    ).embed_paths(paths, progress=False)
    assert parallel.paths == files == sequential.paths
    expected_errors = {}
    for path in (bad, empty):
        with pytest.raises(ImageIntakeError) as caught:
            load_image(path)
        expected_errors[str(path)] = caught.value.reason
    assert parallel.errors == expected_errors == sequential.errors
    np.testing.assert_array_equal(parallel.embeddings, sequential.embeddings)


def test_parallel_embed_images_equals_inline(frozen_model, runner, onnx_cache):
    images = specimens(7)
    inline = Embedder(
        frozen_model, batch_size=7, num_workers=0, runtime="onnx", cache_dir=onnx_cache
    ).embed_images(images)
    pooled = Embedder(
        frozen_model, batch_size=7, num_workers=2, runtime="onnx", cache_dir=onnx_cache
    ).embed_images(images)
    np.testing.assert_array_equal(inline, pooled)


@pytest.mark.parametrize("normalize_shells", [False, True])
def test_array_transform_gives_the_same_values_as_the_eval_transform(normalize_shells):
    config = PreprocessConfig(normalize_shells=normalize_shells)
    whole = eval_transform(config)
    to_array = array_transform(whole)
    for image in specimens(3):
        expected = whole(image).numpy()
        got = to_array(image)
        assert got.dtype == np.float32 and got.flags["C_CONTIGUOUS"]
        np.testing.assert_array_equal(got, expected)
    odd = array_transform(lambda image: torch.ones(3, 2, 2))
    np.testing.assert_array_equal(odd(specimens(1)[0]), np.ones((3, 2, 2), np.float32))


def test_the_cache_folder_follows_the_settings_then_the_platform(monkeypatch, tmp_path):
    from embedder.settings import EmbedderSettings

    monkeypatch.setenv("SHELLID_CACHE_DIR", str(tmp_path / "explicit"))
    assert EmbedderSettings.load().cache_root() == tmp_path / "explicit"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "shellid"  # no settings: the platform's
    monkeypatch.delenv("SHELLID_CACHE_DIR")
    assert EmbedderSettings.load().cache_root() == tmp_path / "xdg" / "shellid"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert EmbedderSettings.load().cache_root() == tmp_path / "home" / ".cache" / "shellid"
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "shellid"
