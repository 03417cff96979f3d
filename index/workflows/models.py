"""The models a collection embeds with: the :class:`ImageEmbedder` protocol, a model named by a
path or backbone name loaded on first use (:class:`LazyEmbedder`), the check that a model
is the one whose vectors a store holds, and the models a store holds (issue 23): a model as
bytes for the store's ``models`` table (:func:`held_model_of`) and back
(:func:`held_embedder`, through a cache file verified by its SHA-256 and fingerprint)."""

from __future__ import annotations

import hashlib
import logging
import tempfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image

from embedder.registry import Registry, UnknownNameError
from embedder.settings import EmbedderSettings

from ..errors import ModelMismatchError, Remedy, StoreError
from ..held_models import HeldModel, ModelRecord
from ..model_switch import rows_model, vectors_model
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
    """Refuse a model other than the one whose vectors the store holds (the rows' model: after
    an interrupted switch ``store_info`` may still name the one before)."""
    truth = rows_model(store) if store.count() > 0 else ""
    if not truth or truth == embedder.fingerprint:
        return
    info = store.info()
    made_by = ""
    if info.get("fingerprint") == truth:
        made_by = info.get("model_path") or info.get("model_name", "")
    raise ModelMismatchError(
        truth,
        embedder.fingerprint,
        made_by,
        store.uri,
        legacy_default=info.get("model_name") == LEGACY_FROZEN_MODEL,
    )


# ====================================================================== models held in a store
#: ``kind`` of a held MODEL.pt (its bytes), of a packaged backbone or profile name (its name;
#: empty: the default model)
MODEL_FILE, MODEL_NAME = "MODEL.pt", "name"
#: how a held model loads: kind -> ``(held, store, cache folder) ->`` a MODEL.pt path or a
#: packaged name (None: the default) for a :class:`LazyEmbedder`, or a ready ``ImageEmbedder``
HeldLoader = Callable[[HeldModel, SpecimenStore, Path], Any]
HELD_KINDS: Registry[HeldLoader] = Registry("held model kind")


@HELD_KINDS.register(MODEL_NAME)
def _packaged_name(held: HeldModel, store: SpecimenStore, cache: Path) -> str | None:
    return held.data.decode() or None


@HELD_KINDS.register(MODEL_FILE)
def _model_file(held: HeldModel, store: SpecimenStore, cache: Path) -> str:
    return str(cached_model_file(held, store, cache))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cached_model_file(held: HeldModel, store: SpecimenStore, cache: Path) -> Path:
    """The held MODEL.pt as a file of the cache folder (``<cache>/models/<fingerprint>.pt``),
    written from the store when missing or not the held bytes (SHA-256)."""
    path = cache / "models" / f"{held.fingerprint}.pt"
    if path.is_file() and _sha256(path) == held.digest():
        return path
    full = held if held.data else store.models.get(held.fingerprint)
    if full is None or hashlib.sha256(full.data).hexdigest() != held.digest():
        raise StoreError(
            f"store {store.uri}: its copy of model {held.fingerprint} is missing or damaged",
            remedy=Remedy.DOCTOR,
            store=store.uri,
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as out:
        out.write(full.data)
    Path(out.name).replace(path)
    return path


def _model_bytes(model: Any, embedder: Any, path: str) -> tuple[str, bytes] | None:
    """``(kind, bytes)`` a store keeps of the model given as ``model`` (loaded: ``embedder``,
    from ``path``): a MODEL.pt file's bytes, a packaged name, an ``EmbeddingModel`` saved, or
    what a model's own ``held_model()`` gives; None for a model that cannot be saved."""
    for owner in (model, embedder):
        own = getattr(owner, "held_model", None)
        if callable(own):
            kind, data = own()
            return str(kind), bytes(data)
    if path and Path(path).is_file():
        return MODEL_FILE, Path(path).read_bytes()
    if model is None or isinstance(model, str | Path):
        return MODEL_NAME, str(model or "").encode()
    from embedder import EmbeddingModel

    for network in (model, getattr(model, "model", None), getattr(embedder, "model", None)):
        if isinstance(network, EmbeddingModel):
            with tempfile.TemporaryDirectory(prefix="shellid-model-") as folder:
                return MODEL_FILE, network.save(Path(folder) / "MODEL.pt").read_bytes()
    return None


def held_model_of(model: Any, embedder: ImageEmbedder, path: str) -> HeldModel | None:
    """What a store keeps of the model a collection is re-embedded with (``model`` as given,
    ``embedder`` loaded, ``path`` from :func:`make_embedder`): MODEL.pt files and models given
    as objects by their bytes, packaged names by name; None (logged) for a model that cannot
    be saved (then other processes need it given)."""
    found = _model_bytes(model, embedder, path)
    record = model_record(embedder, path)
    if found is None:
        log.warning("model %s cannot be saved: the store will not hold it", record.name)
        return None
    kind, data = found
    return HeldModel(record.fingerprint, record.name, kind, path, record.dim, data, record.prior)


def held_embedder(
    held: HeldModel, store: SpecimenStore, settings: EmbedderSettings, exported: bool = False
) -> tuple[ImageEmbedder, str]:
    """``(embedder, path)`` of a model the store holds, as :func:`make_embedder` gives for a
    model named by path or name (a MODEL.pt is loaded from its cache file)."""
    try:
        loader = HELD_KINDS[held.kind]
    except UnknownNameError:
        raise StoreError(
            f"store {store.uri} holds model {held.fingerprint} of kind {held.kind!r}, which "
            "this version cannot load",
            store=store.uri,
        ) from None
    if held.kind != MODEL_FILE and not held.data:  # small bytes: read now (a file: if not cached)
        held = store.models.get(held.fingerprint) or held
    spec = loader(held, store, settings.cache_root())
    if spec is None or isinstance(spec, str):
        where = settings.embedder_options()
        return LazyEmbedder(spec, exported=exported, **where), spec or ""
    return spec, ""


def store_model(
    store: SpecimenStore, settings: EmbedderSettings, exported: bool = False
) -> tuple[ImageEmbedder, str] | None:
    """The model the store's vectors were made by when the store holds it (a store
    re-embedded by ``reindex`` or ``train``), else None."""
    fingerprint = vectors_model(store)
    held = store.models.get(fingerprint, with_data=False) if fingerprint else None
    return None if held is None else held_embedder(held, store, settings, exported)


def load_held(
    store: SpecimenStore, fingerprint: str, settings: EmbedderSettings, current: str = ""
) -> tuple[ImageEmbedder, str]:
    """The held model ``fingerprint``, loaded and verified (:class:`ModelMismatchError`, with
    ``current`` the model in use, when the store does not hold it; :class:`StoreError` when its
    copy loads as another model)."""
    held = store.models.get(fingerprint, with_data=False)
    if held is None:
        raise ModelMismatchError(fingerprint, current, "not held by the store", store.uri)
    embedder, path = held_embedder(held, store, settings)
    real = loaded(embedder)
    if real.fingerprint != fingerprint:
        raise StoreError(
            f"store {store.uri}: its copy of model {fingerprint} loads as {real.fingerprint}",
            remedy=Remedy.DOCTOR,
            store=store.uri,
        )
    return real, path
