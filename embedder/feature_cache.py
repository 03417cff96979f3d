"""On-disk cache of frozen-trunk features, so training runs on features instead of photos.

For a backbone and an ``unfreeze`` setting (see :mod:`embedder.stages`), the frozen trunk's
output for each image and *view* is computed once and stored as a float16 ``.npy`` file:

* view 0 is the clean view (:func:`embedder.eval_transform`);
* views 1, 2, ... are augmented views (:func:`embedder.train_transform`), each drawn with a
  seed derived from the image and the view number, so a view is the same in every run.

Layout: ``<cache_dir>/<backbone>-u<unfreeze>-<hash>/<image key>_v<view>.npy`` plus a
``meta.json``. The hash covers the trunk's weights, the preprocessing and the view recipe, so a
changed model or preprocessing never reads stale features; the image key covers the file's
absolute path, size and modification time, so an edited photo is recomputed. Features cached
for a larger ``unfreeze`` (an earlier split) are carried forward through the frozen stages in
between instead of decoding the photos again.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from . import stages
from .backbones import Backbone
from .cache_dir import default_cache_dir
from .intake import ImageIntakeError, load_image
from .transforms import eval_transform, train_transform

#: Bump when the view recipe (transforms, seeding) changes: old caches then stop matching.
VIEW_RECIPE = "views/1"


def default_features_dir() -> Path:
    """``<default cache dir>/features``: the folder of a feature cache whose root is not given
    (the command line passes :meth:`embedder.settings.EmbedderSettings.features_dir`)."""
    return default_cache_dir() / "features"


CACHE_DTYPE = np.float16


@dataclass
class CachedFeatures:
    """Trunk features of the images that loaded: ``features[i, j]`` is view ``views[j]`` of
    ``paths[i]``; unreadable images are listed in ``errors`` (path -> reason)."""

    features: np.ndarray
    paths: list[Path]
    views: tuple[int, ...]
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        return int(self.features.nbytes)


def image_key(path: Path) -> str:
    """Stable id of an image file's content version: absolute path, size, modification time."""
    stat = path.stat()
    text = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    return hashlib.sha1(text.encode()).hexdigest()[:20]


def view_seed(key: str, view: int) -> int:
    return int(hashlib.sha1(f"{key}:{view}".encode()).hexdigest()[:8], 16)


def module_digest(module: torch.nn.Module) -> str:
    """Hash of every parameter and buffer of ``module`` (names, shapes, values)."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        if name.endswith("num_batches_tracked"):
            continue
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


class _ViewDataset(Dataset):
    """One item per image: the requested views of it as tensors, or the reason it failed."""

    def __init__(self, jobs: list[tuple[Path, str, list[int]]], backbone: Backbone) -> None:
        self.jobs = jobs
        self.clean = eval_transform(backbone.preprocess)
        self.augment = train_transform(backbone.preprocess)

    def __len__(self) -> int:
        return len(self.jobs)

    def __getitem__(self, index: int):
        path, key, views = self.jobs[index]
        try:
            image = load_image(path)
        except ImageIntakeError as exc:
            return index, None, exc.reason
        tensors = []
        for view in views:
            if view == 0:
                tensors.append(self.clean(image))
                continue
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(view_seed(key, view))
                tensors.append(self.augment(image))
        return index, tensors, None


def _collate(items):
    return items


class FeatureCache:
    """Frozen-trunk features of images and views, computed once and kept on disk."""

    def __init__(
        self,
        root: str | Path | None,
        backbone: Backbone,
        unfreeze: int,
        *,
        batch_size: int = 32,
        num_workers: int = 0,
    ) -> None:
        self.root = Path(root) if root is not None else default_features_dir()
        self.backbone = backbone
        self.unfreeze = unfreeze
        self.batch_size = batch_size
        self.num_workers = num_workers
        stages.check_unfreeze(backbone, unfreeze)
        self.directory = self._directory_for(unfreeze)

    # ---------------------------------------------------------------- layout
    def _directory_for(self, unfreeze: int) -> Path:
        trunk = stages.trunk(self.backbone, unfreeze)
        digest = hashlib.sha256()
        digest.update(self.backbone.name.encode())
        digest.update(json.dumps(self.backbone.preprocess.to_dict(), sort_keys=True).encode())
        digest.update(VIEW_RECIPE.encode())
        digest.update(str(stages.split_index(self.backbone, unfreeze)).encode())
        digest.update(module_digest(trunk).encode())
        return self.root / f"{self.backbone.name}-u{unfreeze}-{digest.hexdigest()[:12]}"

    def _file(self, directory: Path, key: str, view: int) -> Path:
        return directory / f"{key}_v{view}.npy"

    def _prepare(self) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OSError(
                f"cannot create the feature cache {self.directory}: {exc.strerror or exc}"
            ) from None
        meta = self.directory / "meta.json"
        if not meta.exists():
            meta.write_text(
                json.dumps(
                    {
                        "backbone": self.backbone.name,
                        "unfreeze": self.unfreeze,
                        "preprocess": self.backbone.preprocess.to_dict(),
                        "view_recipe": VIEW_RECIPE,
                        "dtype": np.dtype(CACHE_DTYPE).name,
                    },
                    indent=2,
                )
            )

    def _store(self, path: Path, array: np.ndarray) -> None:
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npy")
        np.save(tmp, array.astype(CACHE_DTYPE, copy=False))
        tmp.replace(path)

    # ---------------------------------------------------------------- compute
    @property
    def device(self) -> torch.device:
        return next(self.backbone.parameters()).device

    @torch.inference_mode()
    def _run(self, module: torch.nn.Module, batch: list[torch.Tensor]) -> np.ndarray:
        module.eval()
        inputs = torch.stack(batch).to(self.device, torch.float32)
        return module(inputs).float().cpu().numpy()

    def _carry_forward(self, missing: dict[int, list[int]], keys: list[str], bar: tqdm) -> None:
        """Fill ``missing`` (image index -> views) from caches of earlier splits, in place."""
        for source_unfreeze in range(self.unfreeze + 1, stages.max_unfreeze(self.backbone) + 1):
            if not missing:
                return
            source = self._directory_for(source_unfreeze)
            if not source.is_dir():
                continue
            found = [
                (i, v)
                for i, views in missing.items()
                for v in views
                if self._file(source, keys[i], v).is_file()
            ]
            if not found:
                continue
            bridge = stages.bridge(self.backbone, source_unfreeze, self.unfreeze)
            for start in range(0, len(found), self.batch_size):
                chunk = found[start : start + self.batch_size]
                arrays = [
                    torch.from_numpy(np.load(self._file(source, keys[i], v)).astype(np.float32))
                    for i, v in chunk
                ]
                outputs = self._run(bridge, arrays)
                for (i, v), output in zip(chunk, outputs, strict=True):
                    self._store(self._file(self.directory, keys[i], v), output)
                    missing[i].remove(v)
                bar.update(len(chunk))
            for i in [i for i, views in missing.items() if not views]:
                del missing[i]

    def _compute(
        self,
        missing: dict[int, list[int]],
        paths: list[Path],
        keys: list[str],
        errors: dict[str, str],
        bar: tqdm,
    ) -> None:
        """Decode the photos still missing, run the trunk, store every view."""
        jobs = [(paths[i], keys[i], views) for i, views in sorted(missing.items())]
        owners = sorted(missing)
        loader = DataLoader(
            _ViewDataset(jobs, self.backbone),
            batch_size=max(1, self.batch_size // 4),
            num_workers=self.num_workers,
            collate_fn=_collate,
        )
        trunk = stages.trunk(self.backbone, self.unfreeze)
        pending: list[tuple[int, int, torch.Tensor]] = []

        def flush() -> None:
            outputs = self._run(trunk, [t for _, _, t in pending])
            for (i, v, _), output in zip(pending, outputs, strict=True):
                self._store(self._file(self.directory, keys[i], v), output)
            bar.update(len(pending))
            pending.clear()

        for items in loader:
            for job_index, tensors, error in items:
                i = owners[job_index]
                if error is not None:
                    errors[str(paths[i])] = error
                    bar.update(len(missing[i]))
                    continue
                pending += [(i, v, t) for v, t in zip(missing[i], tensors, strict=True)]
            if len(pending) >= self.batch_size:
                flush()
        if pending:
            flush()

    # ---------------------------------------------------------------- public
    def get(
        self,
        paths: Sequence[str | Path],
        views: Sequence[int] = (0,),
        *,
        progress: bool = True,
        desc: str = "caching features",
    ) -> CachedFeatures:
        """Features of ``paths`` x ``views`` (computing and storing what is missing).

        Images that cannot be read are left out and reported in ``errors``.
        """
        files = [Path(p) for p in paths]
        views = tuple(int(v) for v in views)
        if any(v < 0 for v in views):
            raise ValueError("view numbers must be ≥ 0 (0 = clean view)")
        self._prepare()
        errors: dict[str, str] = {}
        keys: list[str] = []
        for path in files:
            try:
                keys.append(image_key(path))
            except OSError as exc:
                errors[str(path)] = f"cannot read file ({exc.strerror or exc})"
                keys.append("")
        missing: dict[int, list[int]] = {}
        for i, key in enumerate(keys):
            if not key:
                continue
            absent = [v for v in views if not self._file(self.directory, key, v).is_file()]
            if absent:
                missing[i] = absent
        total = sum(len(v) for v in missing.values())
        if total:
            with tqdm(total=total, desc=desc, unit="view", disable=not progress) as bar:
                self._carry_forward(missing, keys, bar)
                if missing:
                    self._compute(missing, files, keys, errors, bar)
        kept = [i for i, path in enumerate(files) if str(path) not in errors]
        features: np.ndarray | None = None
        for row, i in enumerate(
            tqdm(
                kept, desc="loading features", unit="img", disable=not progress or len(kept) < 2000
            )
        ):
            for column, view in enumerate(views):
                array = np.load(self._file(self.directory, keys[i], view))
                if features is None:
                    features = np.empty((len(kept), len(views), *array.shape), dtype=CACHE_DTYPE)
                features[row, column] = array
        if features is None:
            shape = self._feature_shape()
            features = np.empty((0, len(views), *shape), dtype=CACHE_DTYPE)
        return CachedFeatures(features, [files[i] for i in kept], views, errors)

    def _feature_shape(self) -> tuple[int, ...]:
        size = self.backbone.preprocess.input_size
        probe = torch.zeros(1, 3, size, size, device=self.device)
        with torch.inference_mode():
            return tuple(stages.trunk(self.backbone, self.unfreeze).eval()(probe).shape[1:])
