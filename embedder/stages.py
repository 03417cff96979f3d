"""Splitting a backbone into a frozen *trunk* and a trainable *tail* at a stage boundary.

``unfreeze = N`` trains the last ``N`` block stages plus the final 1x1 convolution, its
batch norm and the pooling (for timm EfficientNet: ``blocks[-N:]``, ``conv_head``, ``bn2``,
``global_pool``); everything before stays frozen and its output can be cached on disk.
``unfreeze = 0`` freezes the whole backbone: the trunk is the backbone itself (pooled features)
and the tail is empty.

Stages are: the stem (``conv_stem`` + ``bn1``), one stage per entry of ``blocks``, and the
finish (``conv_head`` + ``bn2`` + ``global_pool``). Running ``stages[:k]`` gives the features
at split ``k``; a cache taken at an earlier split can be carried to a later one with
:func:`bridge` (cheap: a few frozen stages).
"""

from __future__ import annotations

from typing import Any, cast

from torch import nn

from .backbones import Backbone, BackboneError


def supports_unfreeze(model: nn.Module) -> bool:
    """True when ``model`` has the EfficientNet layout this module knows how to split."""
    return all(
        hasattr(model, name)
        for name in ("conv_stem", "bn1", "blocks", "conv_head", "bn2", "global_pool")
    ) and isinstance(model.blocks, nn.Sequential)


def max_unfreeze(backbone: Backbone) -> int:
    """The largest valid ``unfreeze`` for ``backbone`` (its number of block stages)."""
    model = backbone.model
    return len(cast(nn.Sequential, model.blocks)) if supports_unfreeze(model) else 0


def check_unfreeze(backbone: Backbone, unfreeze: int) -> None:
    """Raise :class:`BackboneError` with a clear message when ``unfreeze`` does not fit."""
    if unfreeze < 0:
        raise BackboneError(f"unfreeze must be ≥ 0, got {unfreeze}")
    if unfreeze == 0:
        return
    if not supports_unfreeze(backbone.model):
        raise BackboneError(
            "unfreezing stages needs an EfficientNet-style backbone; "
            f"{backbone.name} supports only unfreeze 0"
        )
    if unfreeze > max_unfreeze(backbone):
        raise BackboneError(
            f"{backbone.name} has {max_unfreeze(backbone)} block stages; "
            f"unfreeze {unfreeze} is too many"
        )


def stages(backbone: Backbone) -> list[nn.Module]:
    """The backbone as an ordered list of stage modules (stem, block stages, finish)."""
    model = backbone.model
    if not supports_unfreeze(model):
        return [model]
    part = cast(Any, model)  # an EfficientNet-style timm model (checked above)
    return [
        nn.Sequential(part.conv_stem, part.bn1),
        *list(part.blocks),
        nn.Sequential(part.conv_head, part.bn2, part.global_pool),
    ]


def split_index(backbone: Backbone, unfreeze: int) -> int:
    """Number of leading stages in the frozen trunk for ``unfreeze`` trainable block stages."""
    check_unfreeze(backbone, unfreeze)
    count = len(stages(backbone))
    return count if unfreeze == 0 else count - 1 - unfreeze


def trunk(backbone: Backbone, unfreeze: int) -> nn.Sequential:
    """The frozen part: images -> features at the split (pooled features when unfreeze is 0)."""
    return nn.Sequential(*stages(backbone)[: split_index(backbone, unfreeze)])


def tail(backbone: Backbone, unfreeze: int) -> nn.Sequential:
    """The trainable part: features at the split -> pooled features (empty when unfreeze is 0).

    Its modules are the backbone's own, so training the tail trains the backbone in place.
    """
    return nn.Sequential(*stages(backbone)[split_index(backbone, unfreeze) :])


def bridge(backbone: Backbone, from_unfreeze: int, to_unfreeze: int) -> nn.Sequential:
    """Frozen stages carrying features cached for ``from_unfreeze`` to the split of
    ``to_unfreeze`` (which must be smaller: a later split)."""
    if from_unfreeze <= to_unfreeze:
        raise ValueError("a bridge goes from a larger unfreeze (earlier split) to a smaller one")
    all_stages = stages(backbone)
    return nn.Sequential(
        *all_stages[split_index(backbone, from_unfreeze) : split_index(backbone, to_unfreeze)]
    )
