"""shellid embedder: photos -> L2-normalised vectors (backbones, preprocessing, training)."""

from .backbones import BACKBONES, DEFAULT_BACKBONE, Backbone, BackboneError, create_backbone
from .datasets import DatasetError, ImageRecord, class_split, group_split, scan_collection
from .embedding import Embedder, EmbeddingResult, save_embeddings
from .intake import ImageIntakeError, decode_image, load_image
from .model import EmbeddingModel, ModelFileError, default_model, load_model
from .transforms import PreprocessConfig, eval_transform, normalize_shell_photo, train_transform

__all__ = [
    "BACKBONES",
    "DEFAULT_BACKBONE",
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
