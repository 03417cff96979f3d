"""Metric-learning losses by name: the registry :data:`LOSSES` (built by
:func:`embedder.training.create_loss`).

Each entry is a function ``(num_classes, dim) -> (loss, miner or None)`` building a
pytorch-metric-learning loss and the miner that picks its pairs; its docstring's first line is
its description (docs/training.md's table is generated from it). Adding a loss is one
decorated function::

    @LOSSES.register("circle")
    def circle_loss(num_classes: int, dim: int) -> tuple[nn.Module, nn.Module | None]:
        \"\"\"Circle loss (Sun et al. 2020), no miner.\"\"\"
        from pytorch_metric_learning import losses

        return losses.CircleLoss(), None

This module imports no torch (the factories do, when called), so the command line reads
:data:`LOSSES`'s names for ``--loss`` without loading PyTorch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from .registry import Registry

if TYPE_CHECKING:
    from torch import nn


class LossFactory(Protocol):
    """Builds a loss (and its miner, or ``None``) for ``num_classes`` classes of ``dim``-sized
    embeddings."""

    def __call__(self, num_classes: int, dim: int) -> tuple[nn.Module, nn.Module | None]: ...


#: Loss name -> its factory, in the order the command line and the docs list them.
LOSSES: Registry[LossFactory] = Registry("loss", plural="losses")


@LOSSES.register("multisimilarity")
def multi_similarity_loss(num_classes: int, dim: int) -> tuple[nn.Module, nn.Module | None]:
    """Multi-Similarity loss (α 2, β 50, base 0.5) with its miner (ε 0.1); the default."""
    from pytorch_metric_learning import losses, miners

    return losses.MultiSimilarityLoss(alpha=2, beta=50, base=0.5), miners.MultiSimilarityMiner(0.1)


@LOSSES.register("supcon")
def supervised_contrastive_loss(num_classes: int, dim: int) -> tuple[nn.Module, nn.Module | None]:
    """Supervised contrastive loss (temperature 0.1), no miner."""
    from pytorch_metric_learning import losses

    return losses.SupConLoss(temperature=0.1), None


@LOSSES.register("proxyanchor")
def proxy_anchor_loss(num_classes: int, dim: int) -> tuple[nn.Module, nn.Module | None]:
    """Proxy-Anchor loss (margin 0.1, α 32): one learned proxy per class, no miner."""
    from pytorch_metric_learning import losses

    return losses.ProxyAnchorLoss(num_classes, dim, margin=0.1, alpha=32), None


@LOSSES.register("triplet")
def triplet_loss(num_classes: int, dim: int) -> tuple[nn.Module, nn.Module | None]:
    """Triplet margin loss (margin 0.1) on semi-hard triplets."""
    from pytorch_metric_learning import losses, miners

    return (
        losses.TripletMarginLoss(margin=0.1),
        miners.TripletMarginMiner(margin=0.1, type_of_triplets="semihard"),
    )


@LOSSES.register("arcface")
def arcface_loss(num_classes: int, dim: int) -> tuple[nn.Module, nn.Module | None]:
    """ArcFace (angular margin 28.6°, scale 64): one learned centre per class, no miner."""
    from pytorch_metric_learning import losses

    return losses.ArcFaceLoss(num_classes, dim, margin=28.6, scale=64), None
