"""Preprocessing: the deterministic eval transform, training augmentations, and the optional
shell-photo normalisation (object on a plain background -> cropped, black background, square).
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from pydantic import BaseModel, ConfigDict
from scipy import ndimage
from torchvision.transforms import v2 as T

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class PreprocessConfig(BaseModel):
    """What a backbone expects: input size, normalisation and resize policy.

    ``normalize_shells`` turns on :func:`normalize_shell_photo` before resizing (for studio
    photos of one object on a plain background; off for natural photos). Saved as
    :meth:`to_dict` in ``MODEL.pt`` and ONNX cache records, and part of the fingerprints.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    input_size: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    crop_pct: float = 0.875
    interpolation: str = "bicubic"
    normalize_shells: bool = False

    def to_dict(self) -> dict:
        """The fields as plain data, in their order (``mean`` and ``std`` as tuples)."""
        return self.model_dump()

    @classmethod
    def from_dict(cls, data: dict) -> PreprocessConfig:
        """The config saved as ``data`` (keys it does not know are ignored)."""
        known = {k: data[k] for k in cls.model_fields if k in data}
        for key in ("mean", "std"):
            if key in known:
                known[key] = tuple(float(v) for v in known[key])
        return cls(**known)

    def with_shell_normalisation(self, enabled: bool) -> PreprocessConfig:
        return self.model_copy(update={"normalize_shells": enabled})


def _interpolation(name: str) -> T.InterpolationMode:
    return {
        "bicubic": T.InterpolationMode.BICUBIC,
        "bilinear": T.InterpolationMode.BILINEAR,
        "nearest": T.InterpolationMode.NEAREST,
    }.get(name, T.InterpolationMode.BICUBIC)


class ShellNormalisation:
    """Callable wrapper of :func:`normalize_shell_photo` for transform pipelines."""

    def __init__(self, output_size: int, margin: float = 0.06) -> None:
        self.output_size = output_size
        self.margin = margin

    def __call__(self, image: Image.Image) -> Image.Image:
        return normalize_shell_photo(image, output_size=self.output_size, margin=self.margin)


def eval_transform(config: PreprocessConfig) -> T.Compose:
    """Deterministic transform: resize, centre crop, tensor, normalise."""
    size = config.input_size
    steps: list = []
    if config.normalize_shells:
        steps += [
            ShellNormalisation(size),
            T.Resize((size, size), interpolation=_interpolation(config.interpolation)),
        ]
    else:
        steps += [
            T.Resize(
                round(size / config.crop_pct),
                interpolation=_interpolation(config.interpolation),
            ),
            T.CenterCrop(size),
        ]
    steps += [
        T.ToImage(),
        T.ToDtype(torch.float32, scale=True),
        T.Normalize(config.mean, config.std),
    ]
    return T.Compose(steps)


def train_transform(config: PreprocessConfig) -> T.Compose:
    """Training augmentations after BackHome19K: rotation ±45°, h/v flips, scale 0.8–1.2,
    brightness ±20 %, contrast ±15 %, saturation ±10 %, random resized crop keeping aspect."""
    size = config.input_size
    steps: list = []
    if config.normalize_shells:
        steps.append(ShellNormalisation(int(size * 1.15)))
    else:
        steps.append(
            T.Resize(
                round(size / config.crop_pct),
                interpolation=_interpolation(config.interpolation),
            )
        )
    steps += [
        T.RandomRotation(45, interpolation=T.InterpolationMode.BILINEAR),
        T.RandomHorizontalFlip(),
        T.RandomVerticalFlip(),
        T.RandomAffine(degrees=0, scale=(0.8, 1.2)),
        T.ColorJitter(brightness=0.2, contrast=0.15, saturation=0.1),
        T.RandomResizedCrop(
            size,
            scale=(0.6, 1.0),
            ratio=(1.0, 1.0),
            interpolation=_interpolation(config.interpolation),
        ),
        T.ToImage(),
        T.ToDtype(torch.float32, scale=True),
        T.Normalize(config.mean, config.std),
    ]
    return T.Compose(steps)


def _otsu_threshold(values: np.ndarray) -> float:
    hist, edges = np.histogram(values, bins=256, range=(0.0, 1.0))
    hist = hist.astype(np.float64)
    centers = (edges[:-1] + edges[1:]) / 2
    weight_bg = np.cumsum(hist)
    weight_fg = weight_bg[-1] - weight_bg
    mean_bg = np.cumsum(hist * centers) / np.maximum(weight_bg, 1e-12)
    total = (hist * centers).sum()
    mean_fg = (total - np.cumsum(hist * centers)) / np.maximum(weight_fg, 1e-12)
    between = weight_bg * weight_fg * (mean_bg - mean_fg) ** 2
    return float(centers[int(np.argmax(between))])


def foreground_mask(image: Image.Image, work_size: int = 256) -> tuple[np.ndarray, float]:
    """Mask of the largest object against a plain background, at ``work_size`` resolution.

    The background colour is the median of the border pixels; each pixel's distance to it is
    thresholded with Otsu's method and the largest connected component (holes filled) is kept.
    Returns the mask and the scale factor from original to mask coordinates.
    """
    scale = work_size / max(image.size)
    small = image.convert("RGB").resize(
        (max(1, round(image.size[0] * scale)), max(1, round(image.size[1] * scale))),
        Image.Resampling.BILINEAR,
    )
    array = np.asarray(small, dtype=np.float32) / 255.0
    border = np.concatenate([array[0], array[-1], array[:, 0], array[:, -1]])
    background = np.median(border, axis=0)
    distance = np.linalg.norm(array - background, axis=2) / np.sqrt(3)
    threshold = max(_otsu_threshold(distance), 0.04)
    mask = distance > threshold
    mask = ndimage.binary_opening(mask, iterations=1)
    labels, count = ndimage.label(mask)
    if count == 0:
        return np.zeros_like(mask), scale
    sizes = ndimage.sum(mask, labels, index=range(1, count + 1))
    largest = labels == (int(np.argmax(sizes)) + 1)
    return ndimage.binary_fill_holes(largest), scale


def normalize_shell_photo(
    image: Image.Image, output_size: int = 224, margin: float = 0.06
) -> Image.Image:
    """Crop to the main object, black out the background, pad to square and resize.

    Follows the Conus-classification preprocessing (threshold + largest contour). When no
    object stands out (less than 2 % or more than 98 % of the frame), the photo is only padded
    to square, so natural photos pass through unharmed.
    """
    image = image.convert("RGB")
    mask, scale = foreground_mask(image)
    share = float(mask.mean()) if mask.size else 0.0
    if not 0.02 <= share <= 0.98:
        return _pad_square(image).resize((output_size, output_size), Image.Resampling.BICUBIC)
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    top, bottom = rows[0] / scale, (rows[-1] + 1) / scale
    left, right = cols[0] / scale, (cols[-1] + 1) / scale
    pad = margin * max(bottom - top, right - left)
    box = (
        max(0, int(left - pad)),
        max(0, int(top - pad)),
        min(image.size[0], int(np.ceil(right + pad))),
        min(image.size[1], int(np.ceil(bottom + pad))),
    )
    full_mask = Image.fromarray((mask * 255).astype(np.uint8)).resize(
        image.size, Image.Resampling.BILINEAR
    )
    full_mask = full_mask.point(lambda v: 255 if v >= 128 else 0)
    black = Image.new("RGB", image.size, (0, 0, 0))
    cut = Image.composite(image, black, full_mask).crop(box)
    return _pad_square(cut, fill=(0, 0, 0)).resize(
        (output_size, output_size), Image.Resampling.BICUBIC
    )


def _pad_square(image: Image.Image, fill: tuple[int, int, int] | None = None) -> Image.Image:
    width, height = image.size
    side = max(width, height)
    if fill is None:
        array = np.asarray(image)
        border = np.concatenate([array[0], array[-1], array[:, 0], array[:, -1]])
        red, green, blue = (int(v) for v in np.median(border, axis=0)[:3])
        fill = (red, green, blue)
    canvas = Image.new("RGB", (side, side), fill)
    canvas.paste(image, ((side - width) // 2, (side - height) // 2))
    return canvas
