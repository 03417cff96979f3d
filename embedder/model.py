"""The embedding model: backbone + optional projection head -> L2-normalised vectors, and the
``MODEL.pt`` file that carries it (weights, backbone name, preprocessing, embedding size,
training config, class list, a fingerprint the index records and, optionally, the
within-species covariance of the training data that the index uses as its prior).
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .backbones import BACKBONES, DEFAULT_BACKBONE, Backbone, BackboneError, create_backbone
from .heads import HEADS as HEADS  # re-exported: the heads create_head builds
from .heads import create_head
from .profiles import PROFILES, Profile, create_profile, profile_of
from .transforms import PreprocessConfig

MODEL_FORMAT = "shellid-model/1"


class ModelFileError(RuntimeError):
    """A MODEL.pt that is missing, unreadable or not a shellid model."""


class ResidualProjection(nn.Module):
    """The ``residual`` head of :data:`embedder.heads.HEADS`: ``x + W x + b`` with ``W`` and
    ``b`` initialised to zero: starts as the identity, so training refines the pretrained
    features instead of replacing them."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, dim)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features + self.proj(features)


class EmbeddingModel(nn.Module):
    """Backbone features -> head -> L2-normalised embedding of size :attr:`dim`."""

    def __init__(
        self,
        backbone: Backbone,
        head: nn.Module | None = None,
        head_config: dict[str, Any] | None = None,
        training_config: dict[str, Any] | None = None,
        classes: list[str] | None = None,
        metrics: dict[str, Any] | None = None,
        within_species_prior: dict[str, np.ndarray] | None = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head if head is not None else nn.Identity()
        self.head_config = head_config or {
            "kind": "identity",
            "in_dim": backbone.num_features,
            "out_dim": backbone.num_features,
        }
        self.training_config = training_config or {}
        self.classes = list(classes or [])
        self.metrics = dict(metrics or {})
        #: arrays of ``index.whitening.WithinSpeciesPrior`` (from ``shellid prior``); they
        #: change how the index weighs directions, not the vectors, so not the fingerprint.
        self.within_species_prior = within_species_prior
        self._fingerprint: str | None = None

    @property
    def dim(self) -> int:
        return int(self.head_config.get("out_dim", self.backbone.num_features))

    @property
    def preprocess(self) -> PreprocessConfig:
        return self.backbone.preprocess

    @property
    def name(self) -> str:
        trained = (
            "trained"
            if self.head_config.get("kind") != "identity" or self.training_config
            else "frozen"
        )
        return f"{self.backbone.name}/{trained}"

    def embed_features(self, features: torch.Tensor) -> torch.Tensor:
        """Head + L2 normalisation on backbone features."""
        return F.normalize(self.head(features), dim=-1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.embed_features(self.backbone(images))

    # ---------------------------------------------------------------- identity
    def invalidate_fingerprint(self) -> None:
        self._fingerprint = None

    @property
    def fingerprint(self) -> str:
        """Short hash of all weights, preprocessing and head config (stable across loads)."""
        if self._fingerprint is None:
            digest = hashlib.sha256()
            digest.update(self.backbone.name.encode())
            digest.update(json.dumps(self.preprocess.to_dict(), sort_keys=True).encode())
            digest.update(json.dumps(self.head_config, sort_keys=True).encode())
            for key, tensor in self.state_dict().items():
                if key.endswith("num_batches_tracked"):
                    continue
                digest.update(key.encode())
                digest.update(
                    tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes()
                )
            self._fingerprint = digest.hexdigest()[:16]
        return self._fingerprint

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "backbone": self.backbone.name,
            "weights": self.backbone.weights_source,
            "dim": self.dim,
            "fingerprint": self.fingerprint,
            "preprocess": self.preprocess.to_dict(),
            "head": self.head_config,
            "classes": len(self.classes),
            "within_species_prior": self.within_species_prior is not None,
        }

    # ---------------------------------------------------------------- files
    def save(self, path: str | Path) -> Path:
        """Write ``MODEL.pt`` atomically (temp file + rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        profile = profile_of(self.backbone)
        payload = {
            "format": MODEL_FORMAT,
            "backbone_name": self.backbone.name,
            "backbone_weights_source": self.backbone.weights_source,
            "backbone_state_dict": self.backbone.model.state_dict(),
            "profile": None if profile is None else profile.config(),
            "head_config": self.head_config,
            "head_state_dict": self.head.state_dict(),
            "embedding_dim": self.dim,
            "preprocess": self.preprocess.to_dict(),
            "training_config": self.training_config,
            "classes": self.classes,
            "metrics": self.metrics,
            "within_species_prior": (
                None
                if self.within_species_prior is None
                else {
                    k: torch.from_numpy(np.asarray(v)) for k, v in self.within_species_prior.items()
                }
            ),
            "fingerprint": self.fingerprint,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_bytes(buffer.getvalue())
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> EmbeddingModel:
        """Read a ``MODEL.pt`` written by :meth:`save`; raises :class:`ModelFileError`."""
        path = Path(path)
        if not path.is_file():
            raise ModelFileError(f"model file {path} not found")
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ModelFileError(f"{path}: not a readable model file ({exc})") from None
        if not isinstance(payload, dict) or payload.get("format") != MODEL_FORMAT:
            raise ModelFileError(
                f"{path}: not a shellid model file (format {MODEL_FORMAT} expected)"
            )
        try:
            backbone = _empty_backbone(payload)
            backbone.model.load_state_dict(payload["backbone_state_dict"])
        except (BackboneError, RuntimeError, KeyError) as exc:
            raise ModelFileError(f"{path}: backbone weights do not load ({exc})") from None
        backbone.preprocess = PreprocessConfig.from_dict(payload["preprocess"])
        backbone.weights_source = payload.get("backbone_weights_source", "file")
        head_config = dict(payload["head_config"])
        head = create_head(
            head_config.get("kind", "identity"),
            int(head_config.get("in_dim", backbone.num_features)),
            int(head_config.get("out_dim", backbone.num_features)),
            int(head_config.get("hidden", 1024)),
        )
        head.load_state_dict(payload["head_state_dict"])
        model = cls(
            backbone,
            head,
            head_config=head_config,
            training_config=payload.get("training_config", {}),
            classes=payload.get("classes", []),
            metrics=payload.get("metrics", {}),
            within_species_prior=_prior_arrays(payload.get("within_species_prior"), path),
        )
        model.eval().to(device)
        stored = payload.get("fingerprint")
        if stored and stored != model.fingerprint:
            raise ModelFileError(
                f"{path}: weights do not match the recorded fingerprint (file damaged?)"
            )
        return model


def _empty_backbone(payload: dict[str, Any]) -> Backbone:
    """The saved model's backbone with random weights: its profile recipe when the file
    carries one (profiles travel with the model), else the named backbone."""
    recipe = payload.get("profile")
    if recipe:
        return create_profile(Profile.from_config(recipe), weights=None)
    return create_backbone(payload["backbone_name"], weights=None)


def _prior_arrays(stored: Any, path: Path) -> dict[str, np.ndarray] | None:
    """The ``within_species_prior`` entry of a model file as numpy arrays (None if absent)."""
    if stored is None:
        return None
    if not isinstance(stored, dict) or not all(
        isinstance(v, torch.Tensor) for v in stored.values()
    ):
        raise ModelFileError(f"{path}: its within-species prior is not a set of arrays")
    return {str(k): v.numpy() for k, v in stored.items()}


def default_model(
    backbone: str = DEFAULT_BACKBONE, weights: str | Path | None = "offline"
) -> EmbeddingModel:
    """The frozen baseline: a pretrained backbone with no head (pooled features, L2-normalised)."""
    return EmbeddingModel(create_backbone(backbone, weights=weights)).eval()


def load_model(
    model: str | Path | None = None, device: str | torch.device | None = None
) -> EmbeddingModel:
    """A ``MODEL.pt`` path, a packaged backbone or profile name (frozen, e.g.
    ``tf_efficientnet_lite2``, ``lite012-ensemble``) or ``None`` (the frozen default backbone);
    on GPU when one is present."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if model is None:
        loaded = default_model()
    elif Path(model).is_file():
        loaded = EmbeddingModel.load(model)
    elif str(model) in BACKBONES or str(model) in PROFILES:
        loaded = default_model(str(model))
    else:
        raise ModelFileError(_unknown_model_message(str(model)))
    return loaded.eval().to(device)


def _unknown_model_message(model: str) -> str:
    """``model file X not found (nor is it a packaged backbone or profile: ...)``, naming the
    closest backbone or profile when one is close."""
    close = BACKBONES.closest(model) or PROFILES.closest(model)
    hint = f"; did you mean {close!r}?" if close else ""
    return (
        f"model file {model} not found (nor is it a packaged backbone or profile{hint}: "
        f"{', '.join([*BACKBONES, *PROFILES])})"
    )
