"""The models a collection embeds with: the :class:`ImageEmbedder` protocol, a model named by a
path or backbone name loaded on first use (:class:`LazyEmbedder`), and the check that a model
is the one whose vectors a store holds."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image

from embedder.settings import EmbedderSettings

from ..errors import ModelMismatchError
from ..specimens import ModelRecord
from ..store import SpecimenStore

log = logging.getLogger(__name__)

#: ``model_name`` recorded by stores that the first release's default (frozen) model built.
LEGACY_FROZEN_MODEL = "efficientnet_lite0/frozen"


class ImageEmbedder(Protocol):
    """What a collection needs from a model (``embedder.Embedder`` fits)."""

    @property
    def dim(self) -> int: ...

    @property
    def fingerprint(self) -> str: ...

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray: ...


def model_name(embedder: Any) -> str:
    """The name a store records for ``embedder``'s model (``tf_efficientnet_lite0/frozen``):
    the first ``name`` down the chain of wrappers (``.model`` of a batcher, of an embedder),
    the class name only when none has one."""
    owner = embedder
    for _ in range(4):
        name = getattr(owner, "name", None)
        if isinstance(name, str) and name:
            return name
        owner = getattr(owner, "model", None)
        if owner is None:
            break
    return type(embedder).__name__


def model_label(embedder: Any, path: str = "") -> str:
    """How people are told which model answers: its name, and the file it came from when it
    is a ``MODEL.pt`` (``tf_efficientnet_lite0/trained (shells.pt)``)."""
    name = model_name(embedder)
    return f"{name} ({Path(path).name})" if path and Path(path).suffix else name


def model_record(embedder: ImageEmbedder, path: str) -> ModelRecord:
    """What the store records of ``embedder`` (loaded) made from ``path``."""
    return ModelRecord(
        fingerprint=embedder.fingerprint,
        name=model_name(embedder),
        path=path,
        dim=int(embedder.dim),
        prior=getattr(embedder, "within_species_prior", None),
    )


class LazyEmbedder:
    """A model named by a path or backbone name, built on first use (torch, timm and the
    weights load only when something is embedded, or the fingerprint is asked for).

    With ``exported=True`` (one-off command-line answers) the model's cached ONNX export is
    run without PyTorch when there is one (:func:`embedder.onnx_session.open_cached`: about
    0.2 s instead of several seconds); otherwise, and whenever it is not usable, the model
    loads with PyTorch, which leaves that export and its records for the next time.
    ``runtime`` and ``cache_dir`` are the settings' (``SHELLID_RUNTIME``, ``SHELLID_CACHE_DIR``:
    :class:`embedder.settings.EmbedderSettings`, read by the entry point)."""

    def __init__(
        self,
        model: str | None,
        *,
        exported: bool = False,
        runtime: str = "auto",
        cache_dir: Path | None = None,
    ) -> None:
        self.spec = model
        self.exported = exported
        self.runtime = runtime
        self.cache_dir = cache_dir
        self._real: ImageEmbedder | None = None
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._real is not None

    def load(self) -> ImageEmbedder:
        with self._lock:
            if self._real is None and self.exported:
                from embedder.onnx_session import open_cached

                self._real = open_cached(self.spec, self.cache_dir, runtime=self.runtime)
            if self._real is None:
                from embedder import load_model
                from embedder.embedding import Embedder

                real = Embedder(
                    load_model(self.spec), runtime=self.runtime, cache_dir=self.cache_dir
                )
                remember_export(self.spec, real)
                self._real = real
            return self._real

    @property
    def dim(self) -> int:
        return self.load().dim

    @property
    def fingerprint(self) -> str:
        return self.load().fingerprint

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        return self.load().embed_images(images)


def remember_export(spec: str | None, embedder: Any) -> None:
    """Leave the records that let the next command run ``embedder``'s ONNX export without
    PyTorch (:func:`embedder.onnx_session.remember`); a failure only costs that speed."""
    from embedder.onnx_session import remember

    try:
        remember(spec, embedder)
    except Exception as exc:
        log.info("no ONNX records for model %s: %s", spec or "default", exc)


def make_embedder(
    model: Any, *, exported: bool = False, settings: EmbedderSettings | None = None
) -> tuple[ImageEmbedder, str]:
    """``(embedder, model path or '')`` from None (frozen default), a packaged backbone name
    (frozen), a MODEL.pt path, an ``EmbeddingModel`` or anything with ``embed_images`` /
    ``dim`` / ``fingerprint``. A name or path gives a :class:`LazyEmbedder` (``exported``:
    see there): nothing heavy is imported or loaded until the first embedding. ``settings``
    give the runtime and the cache folder (default: ``auto`` and the standard folder)."""
    if model is not None and hasattr(model, "embed_images"):
        return model, ""
    where = settings.embedder_options() if settings else {}
    if model is None:
        return LazyEmbedder(None, exported=exported, **where), ""
    if isinstance(model, str | Path):
        file = Path(model).expanduser()
        if not file.is_file():  # a packaged backbone name (load_model says if it is not)
            return LazyEmbedder(str(model), exported=exported, **where), str(model)
        path = str(file.resolve())
        return LazyEmbedder(path, exported=exported, **where), path
    from embedder import EmbeddingModel
    from embedder.embedding import Embedder

    if isinstance(model, EmbeddingModel):
        return Embedder(model, **where), ""
    raise TypeError(f"not a model: {model!r}")


def loaded(embedder: ImageEmbedder) -> ImageEmbedder:
    """The real embedder behind a :class:`LazyEmbedder` (loading it), else ``embedder``."""
    return embedder.load() if isinstance(embedder, LazyEmbedder) else embedder


def check_fingerprint(store: SpecimenStore, embedder: ImageEmbedder) -> None:
    """Refuse a model other than the one whose vectors the store holds."""
    info = store.info()
    if (
        store.count() > 0
        and info.get("fingerprint")
        and info["fingerprint"] != embedder.fingerprint
    ):
        made_by = info.get("model_path") or info.get("model_name", "")
        raise ModelMismatchError(
            info["fingerprint"],
            embedder.fingerprint,
            made_by,
            store.uri,
            legacy_default=info.get("model_name") == LEGACY_FROZEN_MODEL,
        )
