"""``train_on_store``: train a model on the photos a store holds and install it only when it
names the collection's own species better than the current model (see docs/training.md,
"Training on the store")."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from embedder.datasets import ImageRecord
from embedder.episodes import prototype_top1
from embedder.settings import TrainingConfig, TrainingError
from embedder.validation import MIN_GROUPS_TO_SPLIT, split_validation_photos

from .photos import StorePhotos, exported_photos, read_rows
from .progress import JobProgress
from .report import StoreTrainingReport, install_decision

if TYPE_CHECKING:
    from embedder.training import TrainingResult

    from ..collection import Collection

#: photos whose trunk features are cached per step of the progress bar
CACHE_CHUNK = 64


def train_on_store(
    collection: Collection,
    config: TrainingConfig,
    *,
    cache_dir: Path,
    on_progress: Callable[[str, float], None] | None = None,
    show_bars: bool = True,
    log: Callable[[str], None] = print,
) -> StoreTrainingReport:
    """Train with ``config`` on the photos ``collection``'s store holds and install the model
    when it beats the current one on held-out photos.

    Whole specimens of every species with enough of them are held out
    (``config.val_fraction``, seeded by ``config.seed``; the store's specimen column, each
    photo its own specimen where none was given); training always validates on them
    (``validation="photos"``, whatever ``config`` says). ``before``: the current model's
    seen-species top-1 on them from the stored vectors; ``after``: the new model's. Installed
    (``collection.reindex(model)``) only when ``after`` names more of them right
    (:func:`~.report.install_decision`); otherwise the store is left untouched.
    ``cache_dir``: the training feature cache (``EmbedderSettings.features_dir()``), which
    keeps the features for the next training of the store. Raises :class:`TrainingError` for
    a store it cannot train on (no photos, one species, nothing to validate on).
    """
    started = time.perf_counter()
    config = TrainingConfig.model_validate({**config.model_dump(), "validation": "photos"})
    progress = JobProgress(on_progress)
    progress.report("reading the store")
    rows = read_rows(collection.store)
    progress.report("exporting photos")
    with exported_photos(
        collection.store,
        rows,
        Path(cache_dir),
        on_batch=lambda n: progress.report("exporting photos", n / len(rows)),
    ) as photos:
        train, val = held_out(photos, config, log)
        before = current_top1(photos, train, val)
        result = _train(train, val, config, Path(cache_dir), progress, show_bars, log)
        after = result.metrics["val_top1"]
        installed, reason = install_decision(before, after, len(val))
        if installed:
            attach_prior(result.model, train, config, Path(cache_dir), log)
    if installed:
        progress.report("re-embedding the store")
        collection.reindex(result.model, progress=show_bars)
    progress.done("installed" if installed else "not installed")
    return StoreTrainingReport(
        installed=installed,
        reason=reason,
        species=len(photos.species),
        photos=len(rows),
        validation_photos=len(val),
        before=before,
        after=after,
        seconds=round(time.perf_counter() - started, 1),
        model_name=result.model.name,
        fingerprint=result.model.fingerprint if installed else None,
    )


def held_out(
    photos: StorePhotos, config: TrainingConfig, log: Callable[[str], None]
) -> tuple[list[ImageRecord], list[ImageRecord]]:
    """``(train, validation)``: whole specimens held out of each species with enough of them
    (:func:`embedder.validation.split_validation_photos`), said in one ``log`` line;
    :class:`TrainingError` when none is."""
    train, val = split_validation_photos(photos.records, config.val_fraction, config.seed)
    if not val:
        why = (
            "a validation fraction of 0 holds nothing out"
            if config.val_fraction == 0
            else f"no species has {MIN_GROUPS_TO_SPLIT} or more specimens to hold one out"
        )
        raise TrainingError(
            f"nothing to validate on: {why}, so a new model cannot be compared with the current one"
        )
    log(
        f"{len(photos.records)} photos of {len(photos.species)} species: {len(val)} photos of "
        f"{len({r.group for r in val})} specimens held out for validation"
    )
    return train, val


def current_top1(
    photos: StorePhotos, train: Sequence[ImageRecord], val: Sequence[ImageRecord]
) -> float:
    """The current model's seen-species top-1 on ``val``, from the vectors the store holds
    (prototypes of the ``train`` photos' vectors)."""
    row = {record.path: i for i, record in enumerate(photos.records)}
    vectors = photos.rows.vectors
    return prototype_top1(
        vectors[[row[r.path] for r in train]],
        [r.species for r in train],
        vectors[[row[r.path] for r in val]],
        [r.species for r in val],
    )


def attach_prior(
    model: Any,
    train: Sequence[ImageRecord],
    config: TrainingConfig,
    cache_dir: Path,
    log: Callable[[str], None],
) -> None:
    """Give ``model`` the within-species prior of its training photos (as ``shellid train``
    does), embedded from the feature cache; a store with no species of two specimens leaves
    it without one."""
    import numpy as np

    from embedder.training import embed_cached

    from ...whitening import WithinSpeciesPrior

    device = next(model.parameters()).device
    vectors, kept, _ = embed_cached(
        model,
        [r.path for r in train],
        config.unfreeze,
        cache_dir=cache_dir,
        device=device,
        progress=False,
    )
    by_path = {r.path: r for r in train}
    records = [by_path[p] for p in kept]
    prior = WithinSpeciesPrior.of_collection(
        vectors,
        np.array([r.species for r in records]),
        np.array([r.group for r in records]),
    )
    if prior is None:
        log("the new model carries no within-species prior: no species has two specimens")
        return
    model.within_species_prior = prior.to_arrays()


def _train(
    train: list[ImageRecord],
    val: list[ImageRecord],
    config: TrainingConfig,
    cache_dir: Path,
    progress: JobProgress,
    show_bars: bool,
    log: Callable[[str], None],
) -> TrainingResult:
    """Cache the trunk features (with progress), then train, an epoch a step of progress
    (and of a bar with the ETA of the most epochs; an early stop ends it sooner)."""
    from tqdm.auto import tqdm

    from embedder.training import resolve_device, starting_backbone, train_embedder

    backbone = starting_backbone(None, config, resolve_device(config.device))
    cache_features(backbone, train, val, config, cache_dir, progress, show_bars)
    with tqdm(total=config.epochs, desc="training", unit="epoch", disable=not show_bars) as bar:

        def on_epoch(epoch: int, epochs: int) -> None:
            bar.update(epoch - bar.n)
            progress.report("training", epoch / epochs, f"epoch {epoch}/{epochs}")

        return train_embedder(
            train,
            val,
            config,
            cache_dir=cache_dir,
            backbone=backbone,
            progress=show_bars,
            log=log,
            on_epoch=on_epoch,
        )


def cache_features(
    backbone: Any,
    train: Sequence[ImageRecord],
    val: Sequence[ImageRecord],
    config: TrainingConfig,
    cache_dir: Path,
    progress: JobProgress,
    show_bars: bool,
) -> None:
    """The trunk features training reads (every view of the training photos, the clean view
    of the validation photos), a chunk at a time under one bar with an ETA; those cached by
    an earlier training are reused."""
    from tqdm.auto import tqdm

    from embedder.feature_cache import FeatureCache

    cache = FeatureCache(cache_dir, backbone, config.unfreeze)
    jobs = [(r.path, tuple(range(config.views + 1))) for r in train]
    jobs += [(r.path, (0,)) for r in val]
    progress.report("caching features")
    with tqdm(total=len(jobs), desc="caching features", unit="photo", disable=not show_bars) as bar:
        for start in range(0, len(jobs), CACHE_CHUNK):
            chunk = jobs[start : start + CACHE_CHUNK]
            for views in sorted({v for _, v in chunk}):
                cache.get([p for p, v in chunk if v == views], views, progress=False)
            bar.update(len(chunk))
            progress.report("caching features", (start + len(chunk)) / len(jobs))


__all__ = ["current_top1", "held_out", "train_on_store"]
