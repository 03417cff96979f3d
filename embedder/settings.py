"""Names and settings of the embedder that need no torch: the packaged backbones, heads and
losses, and :class:`TrainingConfig`. The command line reads its options and defaults here, so
``shellid --help`` and ``shellid train --help`` never import torch."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

#: Packaged backbones (``embedder.backbones.BACKBONES``), the default first.
BACKBONE_NAMES = (
    "tf_efficientnet_lite0",
    "tf_efficientnet_lite1",
    "tf_efficientnet_lite2",
    "efficientnet_lite0",
)
DEFAULT_BACKBONE = BACKBONE_NAMES[0]
#: The backbone the first release used by default (stores built with it need ``reindex``).
LEGACY_BACKBONE = "efficientnet_lite0"
#: Head kinds known to ``embedder.model.create_head`` (``residual`` keeps the input size).
HEAD_KINDS = ("identity", "linear", "mlp", "residual")
LOSS_KINDS = ("multisimilarity", "supcon", "proxyanchor", "triplet")


class TrainingError(ValueError):
    """Training data or settings that cannot work (too few classes, bad values)."""


@dataclass
class TrainingConfig:
    """Everything that defines a training run; saved into ``MODEL.pt``.

    ``embedding_dim=None`` keeps the backbone's feature size (required by the ``residual`` and
    ``identity`` heads; ``linear``/``mlp`` then default to 512). ``group_pattern`` (regex or
    preset, see :data:`embedder.datasets.GROUP_PRESETS`) keeps views of one specimen or frames
    of one track on one side of each validation episode.
    """

    backbone: str = DEFAULT_BACKBONE
    unfreeze: int = 2
    head: str = "residual"
    embedding_dim: int | None = None
    loss: str = "multisimilarity"
    epochs: int = 15
    lr: float = 1e-4
    tail_lr_scale: float = 0.3
    weight_decay: float = 1e-4
    views: int = 4
    m_per_class: int = 4
    batch_size: int = 64
    train_batchnorm: bool = False
    val_fraction: float = 0.15
    val_episodes: int = 300
    patience: int = 4
    seed: int = 0
    normalize_shells: bool = False
    group_pattern: str | None = None
    device: str = "auto"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainingConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def validate(self) -> None:
        """Raise :class:`TrainingError` naming the first setting that cannot work."""
        checks = [
            (
                self.head in HEAD_KINDS,
                f"unknown head {self.head!r}; choose one of {', '.join(HEAD_KINDS)}",
            ),
            (
                self.loss in LOSS_KINDS,
                f"unknown loss {self.loss!r}; choose one of {', '.join(LOSS_KINDS)}",
            ),
            (self.epochs >= 1, "epochs must be ≥ 1"),
            (self.lr > 0, "lr must be > 0"),
            (self.tail_lr_scale >= 0, "tail_lr_scale must be ≥ 0"),
            (self.views >= 0, "views must be ≥ 0"),
            (self.unfreeze >= 0, "unfreeze must be ≥ 0"),
            (self.m_per_class >= 2, "m_per_class must be ≥ 2 (pairs of one class are needed)"),
            (self.batch_size >= 2 * self.m_per_class, "batch_size must hold at least two classes"),
            (0.0 <= self.val_fraction < 1.0, "val_fraction must be in [0, 1)"),
            (self.patience >= 1, "patience must be ≥ 1"),
            (self.embedding_dim is None or self.embedding_dim >= 2, "embedding_dim must be ≥ 2"),
        ]
        for ok, message in checks:
            if not ok:
                raise TrainingError(message)
