"""shellid embedder: photos -> L2-normalised vectors (backbones, preprocessing, training).

The extension points are registries (:class:`embedder.registry.Registry`): :data:`BACKBONES`,
:data:`PROFILES`, :data:`HEADS` and :data:`LOSSES`.

Names are imported on first use (PEP 562), so ``import embedder.intake`` or
``embedder.datasets`` does not pull in torch, timm or torchvision; ``from embedder import
Embedder`` still works and loads what that name needs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the real names for type checkers and IDEs
    from .backbones import (
        BACKBONES,
        DEFAULT_BACKBONE,
        Backbone,
        BackboneError,
        create_backbone,
    )
    from .datasets import DatasetError, ImageRecord, class_split, group_split, scan_collection
    from .embedding import Embedder, EmbeddingResult, save_embeddings
    from .heads import HEADS, create_head
    from .intake import ImageIntakeError, decode_image, load_image
    from .losses import LOSSES
    from .model import EmbeddingModel, ModelFileError, default_model, load_model
    from .profiles import PROFILES
    from .transforms import (
        PreprocessConfig,
        eval_transform,
        normalize_shell_photo,
        train_transform,
    )

#: public name -> submodule that defines it
_EXPORTS: dict[str, str] = {
    "BACKBONES": "backbones",
    "DEFAULT_BACKBONE": "backbones",
    "Backbone": "backbones",
    "BackboneError": "backbones",
    "create_backbone": "backbones",
    "DatasetError": "datasets",
    "ImageRecord": "datasets",
    "class_split": "datasets",
    "group_split": "datasets",
    "scan_collection": "datasets",
    "Embedder": "embedding",
    "EmbeddingResult": "embedding",
    "save_embeddings": "embedding",
    "HEADS": "heads",
    "create_head": "heads",
    "ImageIntakeError": "intake",
    "decode_image": "intake",
    "load_image": "intake",
    "LOSSES": "losses",
    "EmbeddingModel": "model",
    "ModelFileError": "model",
    "default_model": "model",
    "load_model": "model",
    "PROFILES": "profiles",
    "PreprocessConfig": "transforms",
    "eval_transform": "transforms",
    "normalize_shell_photo": "transforms",
    "train_transform": "transforms",
}

__all__ = [
    "BACKBONES",
    "DEFAULT_BACKBONE",
    "HEADS",
    "LOSSES",
    "PROFILES",
    "Backbone",
    "BackboneError",
    "DatasetError",
    "Embedder",
    "EmbeddingModel",
    "EmbeddingResult",
    "ImageIntakeError",
    "ImageRecord",
    "ModelFileError",
    "PreprocessConfig",
    "class_split",
    "create_backbone",
    "create_head",
    "decode_image",
    "default_model",
    "eval_transform",
    "group_split",
    "load_image",
    "load_model",
    "normalize_shell_photo",
    "save_embeddings",
    "scan_collection",
    "train_transform",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'embedder' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
