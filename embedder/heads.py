"""Projection heads by name: the registry :data:`HEADS` and its factory :func:`create_head`.

A head maps backbone features ``(n, in_dim)`` to ``(n, out_dim)`` before the L2
normalisation of :class:`embedder.model.EmbeddingModel`. Each entry is a function
``(in_dim, out_dim, hidden, dropout) -> nn.Module`` whose docstring's first line is its
description (docs/training.md's table is generated from it). Adding a head is one decorated
function::

    @HEADS.register("gated")
    def gated_head(in_dim: int, out_dim: int, hidden: int, dropout: float) -> nn.Module:
        \"\"\"Features times a learned sigmoid gate.\"\"\"
        ...

This module imports no torch (the factories do, when called), so the command line reads
:data:`HEADS`'s names for ``--head`` without loading PyTorch. ``MODEL.pt`` records the head's
name (``head_config["kind"]``), so a registered name is never renamed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from .registry import Registry, UnknownNameError

if TYPE_CHECKING:
    from torch import nn


class HeadFactory(Protocol):
    """Builds a projection head for ``in_dim`` features and an ``out_dim`` embedding."""

    def __call__(self, in_dim: int, out_dim: int, hidden: int, dropout: float) -> nn.Module: ...


#: Head name -> its factory, in the order the command line and the docs list them.
HEADS: Registry[HeadFactory] = Registry("head")


@HEADS.register("identity")
def identity_head(in_dim: int, out_dim: int, hidden: int, dropout: float) -> nn.Module:
    """No projection: the backbone's pooled features (keeps the feature size)."""
    from torch import nn

    if out_dim != in_dim:
        raise ValueError(f"the identity head keeps the feature size ({in_dim})")
    return nn.Identity()


@HEADS.register("linear")
def linear_head(in_dim: int, out_dim: int, hidden: int, dropout: float) -> nn.Module:
    """One linear layer (any embedding size)."""
    from torch import nn

    return nn.Linear(in_dim, out_dim)


@HEADS.register("mlp")
def mlp_head(in_dim: int, out_dim: int, hidden: int, dropout: float) -> nn.Module:
    """Linear - batch norm - ReLU - dropout - linear, ``hidden`` wide (any embedding size)."""
    from torch import nn

    return nn.Sequential(
        nn.Linear(in_dim, hidden),
        nn.BatchNorm1d(hidden),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.Linear(hidden, out_dim),
    )


@HEADS.register("residual")
def residual_head(in_dim: int, out_dim: int, hidden: int, dropout: float) -> nn.Module:
    """Features plus a learned linear correction that starts at zero (keeps the feature size;
    the training default)."""
    from .model import ResidualProjection

    if out_dim != in_dim:
        raise ValueError(
            f"the residual head keeps the feature size ({in_dim}); embedding size {out_dim} "
            "needs the linear or mlp head"
        )
    return ResidualProjection(in_dim)


def create_head(
    kind: str, in_dim: int, out_dim: int, hidden: int = 1024, dropout: float = 0.0
) -> nn.Module:
    """The head registered as ``kind`` in :data:`HEADS`. Raises :class:`ValueError` for an
    unknown name (the closest registered one suggested) or sizes the head cannot take."""
    try:
        factory = HEADS[kind]
    except UnknownNameError as exc:
        raise ValueError(str(exc)) from None
    return factory(in_dim, out_dim, hidden, dropout)
