"""The class-centre losses train: the loss falls and the model embeds (generated images,
64 px, head only, so each case takes seconds)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from embedder import LOSSES, Embedder, scan_collection
from embedder.training import split_validation_classes, train_embedder
from tests.test_training import quick_config, small_backbone


@pytest.mark.parametrize("loss", ["arcface", "proxyanchor"])
def test_a_class_centre_loss_lowers_its_loss_and_gives_unit_embeddings(
    loss, generated_collection, tmp_path
):
    assert loss in LOSSES
    records = scan_collection(generated_collection, group_pattern="specimen")
    train, val = split_validation_classes(records, 0.4, seed=0)
    config = quick_config(
        unfreeze=0, head="linear", embedding_dim=32, epochs=5, patience=5, loss=loss
    )
    result = train_embedder(
        train,
        val,
        config,
        cache_dir=tmp_path / "cache",
        backbone=small_backbone(),
        progress=False,
        log=lambda _: None,
    )
    losses = [h.loss for h in result.history[1:]]
    assert all(math.isfinite(x) for x in losses) and losses[-1] < losses[0]
    assert result.model.training_config["loss"] == loss
    vectors = Embedder(result.model).embed_paths([r.path for r in val[:4]], progress=False)
    assert vectors.embeddings.shape == (4, 32)
    np.testing.assert_allclose(np.linalg.norm(vectors.embeddings, axis=1), 1.0, atol=1e-5)
