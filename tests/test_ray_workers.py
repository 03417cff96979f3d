"""A Ray job's workers embed as the command's settings say: the runtime and cache folder the
entry point loaded travel to them in the (picklable) :class:`ModelSource` (no Ray needed)."""

from __future__ import annotations

import pickle

import pytest

import embedder
from embedder.settings import EmbedderSettings
from index.workflows.ray.cluster import ModelSource, RayClusterError, worker_embedder


def test_a_model_source_carries_the_settings_runtime_and_cache_folder(tmp_path):
    settings = EmbedderSettings(runtime="torch", cache_dir=tmp_path / "cache")
    source = ModelSource.of("tf_efficientnet_lite1", settings)
    assert (source.name, source.runtime, source.cache_dir) == (
        "tf_efficientnet_lite1",
        "torch",
        tmp_path / "cache",
    )
    assert pickle.loads(pickle.dumps(source)) == source  # as Ray sends it to the workers
    bare = ModelSource.of(None)
    assert (bare.runtime, bare.cache_dir) == ("auto", None)


def test_a_model_file_travels_as_bytes_with_the_settings(tmp_path):
    model = tmp_path / "MODEL.pt"
    model.write_bytes(b"weights")
    source = ModelSource.of(model, EmbedderSettings(runtime="onnx", cache_dir=tmp_path))
    assert (source.data, source.runtime, source.cache_dir) == (b"weights", "onnx", tmp_path)


def test_the_worker_embedder_uses_the_runtime_and_cache_folder_of_the_source(
    tmp_path, monkeypatch, frozen_model
):
    monkeypatch.setattr(embedder, "load_model", lambda spec: frozen_model)
    source = ModelSource.of(None, EmbedderSettings(runtime="torch", cache_dir=tmp_path / "c"))
    worker = worker_embedder(source, frozen_model.fingerprint, batch_size=4, cpus=1)
    assert (worker.requested_runtime, worker.cache_dir) == ("torch", tmp_path / "c")
    assert worker.batch_size == 4
    with pytest.raises(RayClusterError, match="not the driver's"):
        worker_embedder(source, "another-model", batch_size=4, cpus=1)
