"""What a photo may cost before any pixel is decoded: the limits and their defaults, apart
from :mod:`embedder.intake` so settings can name them without loading Pillow."""

from __future__ import annotations

from dataclasses import dataclass

MIN_SIDE_PX = 32
DEFAULT_MAX_PIXELS = 50_000_000
DEFAULT_MAX_SIDE = 16_384
DEFAULT_MAX_ASPECT_RATIO = 10.0
DEFAULT_MAX_COST = 2.0


@dataclass(frozen=True)
class IntakeLimits:
    """What an image may cost before any pixel is decoded (checked from its header).

    ``max_pixels``: width x height (decompression bombs); ``max_side`` / ``min_side``: pixels
    per side; ``max_aspect_ratio``: longer side / shorter side; ``max_cost``: the estimated
    work of decoding and resizing it, in multiples of a normal photo
    (:data:`embedder.intake.NORMAL_PHOTO`, see :func:`embedder.intake.estimate_cost`).
    """

    max_pixels: int = DEFAULT_MAX_PIXELS
    max_side: int = DEFAULT_MAX_SIDE
    min_side: int = MIN_SIDE_PX
    max_aspect_ratio: float = DEFAULT_MAX_ASPECT_RATIO
    max_cost: float = DEFAULT_MAX_COST
