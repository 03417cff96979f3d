"""Every extension point is a registry: an entry added with one registration is built by the
usual factory, an unknown name gets the closest registered one, the torch-free name lists the
command line reads agree with the registries, and the docs' tables are generated from them."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, get_args

import numpy as np
import pytest
import torch
from torch import nn

from embedder.backbones import BACKBONES, BackboneError, OfflineWeights, create_backbone
from embedder.heads import HEADS, create_head
from embedder.losses import LOSSES
from embedder.model import ModelFileError, load_model
from embedder.profiles import PROFILES, Profile, create_profile
from embedder.registry import Registry
from embedder.settings import BACKBONE_NAMES, HEAD_KINDS, LOSS_KINDS, PROFILE_NAMES, TrainingError
from embedder.training import create_loss
from embedder.transforms import PreprocessConfig
from index.config import IdentifierConfig, Method
from index.scorers import SCORERS, MeanScorer, PrototypeScorer, species_scorer
from tests.test_scorers import world

if TYPE_CHECKING:
    from index.enrolled import EnrolledRows
    from index.scorers import Cl2n, SpeciesScorer
    from index.whitening import WithinSpeciesPrior

REPO = Path(__file__).resolve().parents[1]
T = TypeVar("T")


@contextmanager
def registered(registry: Registry[T], name: str, entry: T) -> Iterator[T]:
    """``entry`` registered as ``name`` while the block runs."""
    registry.add(name, entry)
    try:
        yield entry
    finally:
        registry.remove(name)


def load_docs_generator() -> Any:
    spec = importlib.util.spec_from_file_location("registries_doc", REPO / "docs/registries.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------------- one registration each
def halved_head(in_dim: int, out_dim: int, hidden: int, dropout: float) -> nn.Module:
    """A linear head whose output starts at half the input."""
    head = nn.Linear(in_dim, out_dim, bias=False)
    nn.init.eye_(head.weight)
    head.weight.data *= 0.5
    return head


def test_a_registered_head_is_built_by_create_head_until_removed():
    with registered(HEADS, "halved", halved_head):
        head = create_head("halved", 4, 4)
        assert torch.allclose(head(torch.ones(2, 4)), torch.full((2, 4), 0.5))
    with pytest.raises(ValueError, match="unknown head 'halved'"):
        create_head("halved", 4, 4)


def contrastive_loss(num_classes: int, dim: int) -> tuple[nn.Module, nn.Module | None]:
    """Contrastive loss, no miner."""
    from pytorch_metric_learning import losses

    return losses.ContrastiveLoss(), None


def test_a_registered_loss_is_built_by_create_loss_until_removed():
    from pytorch_metric_learning import losses

    with registered(LOSSES, "contrastive", contrastive_loss):
        loss, miner = create_loss("contrastive", 3, 8)
        assert isinstance(loss, losses.ContrastiveLoss) and miner is None
        embeddings = nn.functional.normalize(torch.randn(6, 8), dim=-1)
        assert float(loss(embeddings, torch.tensor([0, 0, 1, 1, 2, 2]))) >= 0
    with pytest.raises(TrainingError, match="unknown loss 'contrastive'"):
        create_loss("contrastive", 3, 8)


def prototype_twice(
    rows: EnrolledRows, cl2n: Cl2n, config: IdentifierConfig, prior: WithinSpeciesPrior | None
) -> SpeciesScorer:
    """The mean of two prototype scorers (the prototype scores)."""
    return MeanScorer([PrototypeScorer(rows, cl2n, config), PrototypeScorer(rows, cl2n, config)])


def test_a_registered_scorer_is_the_identifiers_choice_by_name():
    rows, cl2n, queries = world()
    config = IdentifierConfig(use_gpu=False, method="prototype")
    # IdentifierConfig.method takes the names of index.config.Method; model_copy skips that
    toy = config.model_copy(update={"method": "prototype-twice"})
    with registered(SCORERS, "prototype-twice", prototype_twice):
        scorer = species_scorer(rows, cl2n, toy)
        reference = species_scorer(rows, cl2n, config)
        scorer.fit()
        reference.fit()
        assert isinstance(scorer, MeanScorer)
        assert np.allclose(scorer.scores(queries), reference.scores(queries), atol=1e-6)
    with pytest.raises(ValueError, match="unknown species scorer 'prototype-twice'"):
        species_scorer(rows, cl2n, toy)


def test_a_registered_backbone_brings_its_preprocessing_to_create_backbone():
    small = PreprocessConfig(input_size=96)
    with registered(BACKBONES, "efficientnet_lite1", OfflineWeights(1, small, "a toy")):
        backbone = create_backbone("efficientnet_lite1", weights=None)
        assert backbone.name == "efficientnet_lite1" and backbone.preprocess == small
    assert create_backbone("efficientnet_lite1", weights=None).preprocess != small  # timm's


def test_a_registered_profile_is_built_by_create_backbone_by_name():
    toy = Profile("toy-gem", ("tf_efficientnet_lite0",), pooling="gem")
    with registered(PROFILES, "toy-gem", toy):
        backbone = create_backbone("toy-gem", weights=None)
        assert backbone.name == "toy-gem" and backbone.model.profile == toy
        assert backbone(torch.zeros(1, 3, 64, 64)).shape == (1, backbone.num_features)
    with pytest.raises(BackboneError, match="unknown backbone 'toy-gem'"):
        create_backbone("toy-gem", weights=None)


# ---------------------------------------------------------------------- unknown names
@pytest.mark.parametrize(
    ("build", "error", "suggestion"),
    [
        (lambda: create_head("residul", 4, 4), ValueError, "residual"),
        (lambda: create_loss("multisimilarty", 3, 8), TrainingError, "multisimilarity"),
        (
            lambda: create_backbone("tf_efficientnet_lit0", None),
            BackboneError,
            "tf_efficientnet_lite0",
        ),
        (lambda: create_profile("lite02-ensembl", None), BackboneError, "lite02-ensemble"),
        (lambda: load_model("lite02-ensembel", "cpu"), ModelFileError, "lite02-ensemble"),
    ],
)
def test_an_unknown_name_gets_the_closest_registered_one(build, error, suggestion):
    with pytest.raises(error) as caught:
        build()
    message = str(caught.value)
    assert f"did you mean {suggestion!r}?" in message and "\n" not in message


def test_an_unknown_scorer_gets_the_closest_registered_one():
    rows, cl2n, _ = world()
    config = IdentifierConfig(use_gpu=False).model_copy(update={"method": "whitend"})
    with pytest.raises(ValueError, match="did you mean 'whitened'"):
        species_scorer(rows, cl2n, config)


# ---------------------------------------------------------------------- names and docs
def test_the_torch_free_name_lists_are_the_registries():
    """The command line's choices (embedder.settings, index.config) list what is registered."""
    assert tuple(BACKBONES) == BACKBONE_NAMES and tuple(PROFILES) == PROFILE_NAMES
    assert tuple(HEADS) == HEAD_KINDS and tuple(LOSSES) == LOSS_KINDS
    assert get_args(Method) == tuple(SCORERS)


def test_the_head_and_loss_registries_import_without_torch():
    code = "import sys, embedder.heads, embedder.losses; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO).returncode == 0


def test_the_docs_tables_are_the_registries():
    assert load_docs_generator().stale_blocks() == []


def test_a_registration_without_regenerated_docs_is_caught():
    with registered(HEADS, "halved", halved_head):
        assert load_docs_generator().stale_blocks() == ["training.md: heads"]
