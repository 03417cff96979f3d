"""What a photo may cost before any pixel is decoded: the limits and their defaults, apart
from :mod:`embedder.intake` so settings can name them without loading Pillow."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

MIN_SIDE_PX = 32
DEFAULT_MAX_PIXELS = 50_000_000
DEFAULT_MAX_SIDE = 16_384
DEFAULT_MAX_ASPECT_RATIO = 10.0
DEFAULT_MAX_COST = 2.0


class IntakeLimits(BaseModel):
    """What an image may cost before any pixel is decoded (checked from its header).

    ``max_pixels``: width x height (decompression bombs); ``max_side`` / ``min_side``: pixels
    per side; ``max_aspect_ratio``: longer side / shorter side; ``max_cost``: the estimated
    work of decoding and resizing it, in multiples of a normal photo
    (:data:`embedder.intake.NORMAL_PHOTO`, see :func:`embedder.intake.estimate_cost`). The
    service's are ``index.config.IndexSettings``' (``SHELLID_MAX_*``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_pixels: int = Field(default=DEFAULT_MAX_PIXELS, gt=0)
    max_side: int = Field(default=DEFAULT_MAX_SIDE, gt=0)
    min_side: int = Field(default=MIN_SIDE_PX, ge=1)
    max_aspect_ratio: float = Field(default=DEFAULT_MAX_ASPECT_RATIO, ge=1.0)
    max_cost: float = Field(default=DEFAULT_MAX_COST, gt=0)
