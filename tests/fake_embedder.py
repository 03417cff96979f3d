"""A fast stand-in for the embedding model in index tests where the backbone is not the point:
colour histograms plus a coarse grey layout, optionally through a fixed random projection
(``variant`` > 0 makes a "different model" with another fingerprint and size)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image


class FakeEmbedder:
    """``embed_images`` / ``dim`` / ``fingerprint`` / ``name``, like ``embedder.Embedder``."""

    BASE_DIM = 48

    def __init__(self, variant: int = 0) -> None:
        self.variant = variant
        self.dim = self.BASE_DIM if variant == 0 else 32
        self.fingerprint = f"fake{variant:012d}"
        self.name = f"fake-{variant}"
        rng = np.random.default_rng(variant)
        self._projection = rng.normal(size=(self.BASE_DIM, self.dim)) if variant else None
        self.calls = 0

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        self.calls += 1
        rows = []
        for image in images:
            pixels = np.asarray(image.convert("RGB").resize((16, 16)), np.float32) / 255.0
            hist = np.concatenate(
                [np.histogram(pixels[..., c], bins=8, range=(0, 1))[0] for c in range(3)]
            )
            layout = np.asarray(image.convert("L").resize((4, 6)), np.float32).ravel() / 255.0
            vector = np.concatenate([hist / 256.0, layout])
            if self._projection is not None:
                vector = vector @ self._projection
            rows.append(vector / np.linalg.norm(vector))
        return np.asarray(rows, np.float32).reshape(len(rows), self.dim)

    def held_model(self) -> tuple[str, bytes]:
        """What a store keeps of this model (``index.workflows.models.HELD_KINDS``: ``fake``)."""
        return "fake", str(self.variant).encode()


def fake_make_embedder(model, *, exported: bool = False, settings=None):
    """Drop-in for ``index.workflows.collection.collection.make_embedder``: ``"other"`` in the
    model name gives variant 1, anything else variant 0 (``exported`` and the settings' runtime
    make no difference to a fake)."""
    if model is not None and hasattr(model, "embed_images"):
        return model, ""
    variant = 1 if model is not None and "other" in str(model) else 0
    return FakeEmbedder(variant), str(model or "")


def _held_fake(held, store, cache) -> FakeEmbedder:
    """A fake model a store holds (kind ``fake``: its variant), as a real one loads from it."""
    return FakeEmbedder(int(held.data.decode()))


def _register_held_kind() -> None:
    from index.workflows.models import HELD_KINDS

    if "fake" not in HELD_KINDS:
        HELD_KINDS.add("fake", _held_fake)


_register_held_kind()
