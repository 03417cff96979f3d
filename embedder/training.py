"""Contrastive training of the embedder on cached features (fast on a CPU).

Method (see docs/training.md for the measurements behind the defaults):

1. The backbone is split at a stage boundary (:mod:`embedder.stages`): the frozen trunk's
   output for one clean and ``views`` augmented views of every training image is computed once
   and cached on disk (:class:`embedder.feature_cache.FeatureCache`); validation images need
   only the clean view.
2. The tail (the last ``unfreeze`` block stages, the final 1x1 convolution and pooling) and a
   projection head are trained on those features with a pytorch-metric-learning loss, batches
   drawn by ``MPerClassSampler`` (``m_per_class`` images of each class per batch), one random
   cached view per image per epoch. The pretrained tail gets a lower learning rate than the head.
3. After every epoch the model is scored on the validation records (:mod:`embedder.validation`,
   ``TrainingConfig.validation``): held-out *classes* never trained on, by episodic 5-way
   1-shot accuracy with CL2N prototypes (``"species"``), or held-out photos of the trained
   classes, by nearest-prototype top-1 against the training photos' clean views
   (``"photos"``); the best epoch's weights are kept and training stops after ``patience``
   epochs without improvement.
4. The result is an :class:`embedder.EmbeddingModel` (full backbone weights with the trained
   tail, head, config, class list, validation metrics), saved as ``MODEL.pt`` with a CSV log
   and a PNG of the training curves beside it.
"""

from __future__ import annotations

import copy
import csv
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from . import stages
from .backbones import Backbone, create_backbone
from .datasets import DatasetError, ImageRecord, scan_collection
from .episodes import prototype_top1
from .feature_cache import CachedFeatures, FeatureCache
from .losses import LOSSES
from .model import EmbeddingModel, create_head
from .registry import UnknownNameError
from .settings import LOSS_KINDS, TrainingConfig, TrainingError
from .validation import (
    check_validation,
    check_validation_classes,
    check_validation_photos,
    species_scores,
    split_validation,
    split_validation_classes,
)


@dataclass
class EpochLog:
    """One row of the training log (epoch 0 = the model before training)."""

    epoch: int
    loss: float
    val_1shot: float
    val_1shot_ci: float
    val_5shot: float
    lr: float
    seconds: float
    val_top1: float = math.nan  # validation "photos": seen-species nearest-prototype top-1


@dataclass
class TrainingResult:
    """The trained model (best epoch), its history and the files written."""

    model: EmbeddingModel
    history: list[EpochLog]
    best_epoch: int
    metrics: dict[str, Any]
    files: dict[str, Path] = field(default_factory=dict)


def _percent(share: float) -> str:
    """``"87.5 %"``, or ``"  n/a"`` when there is nothing to measure (no validation species)."""
    return "  n/a" if math.isnan(share) else f"{100 * share:5.1f} %"


# ---------------------------------------------------------------------- building blocks
def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def create_loss(kind: str, num_classes: int, dim: int) -> tuple[nn.Module, nn.Module | None]:
    """The loss registered as ``kind`` in :data:`embedder.losses.LOSSES` and its miner (or
    ``None``); :class:`TrainingError` names the closest registered loss for an unknown one."""
    try:
        factory = LOSSES[kind]
    except UnknownNameError as exc:
        raise TrainingError(str(exc)) from None
    return factory(num_classes, dim)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy (also pytorch-metric-learning's sampler) and torch."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class _Trainable(nn.Module):
    """Tail + head on cached trunk features -> L2-normalised embeddings."""

    def __init__(self, tail: nn.Module, head: nn.Module, train_batchnorm: bool) -> None:
        super().__init__()
        self.tail = tail
        self.head = head
        self.train_batchnorm = train_batchnorm

    def train(self, mode: bool = True) -> _Trainable:
        super().train(mode)
        if mode and not self.train_batchnorm:
            for module in self.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.head(self.tail(features)), dim=-1)


@torch.inference_mode()
def embed_features(
    net: nn.Module, features: np.ndarray | torch.Tensor, device: torch.device, batch_size: int = 256
) -> np.ndarray:
    """Run cached features (``(n, *shape)``, any float dtype) through ``net`` in batches."""
    was_training = net.training
    net.eval()
    tensor = torch.as_tensor(features)
    chunks = [
        net(tensor[start : start + batch_size].to(device, torch.float32)).float().cpu().numpy()
        for start in range(0, len(tensor), batch_size)
    ]
    net.train(was_training)
    return np.concatenate(chunks) if chunks else np.zeros((0, 0), np.float32)


def embed_cached(
    model: EmbeddingModel,
    paths: Sequence[str | Path],
    unfreeze: int,
    *,
    cache_dir: str | Path | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> tuple[np.ndarray, list[Path], dict[str, str]]:
    """Clean-view embeddings of ``paths`` through the trunk-feature cache.

    Equals :class:`embedder.Embedder` on the same files up to the float16 rounding of the
    cache, and reuses the features when ``model`` shares its frozen trunk with the cached
    one (a model trained with ``unfreeze`` stages and the pretrained backbone do). Returns
    ``(embeddings, paths kept, errors)``.
    """
    device = torch.device(device)
    model.to(device)
    cache = FeatureCache(cache_dir, model.backbone, unfreeze)
    cached = cache.get(paths, (0,), progress=progress, desc="caching clean views")
    net = _Trainable(stages.tail(model.backbone, unfreeze), model.head, train_batchnorm=False)
    vectors = embed_features(net, cached.features[:, 0], device)
    return vectors, cached.paths, cached.errors


# ---------------------------------------------------------------------- files
def log_paths(out: Path) -> dict[str, Path]:
    """Where the CSV log and the PNG curves of a model saved at ``out`` go."""
    return {
        "model": out,
        "log": out.with_name(out.stem + ".training.csv"),
        "curves": out.with_name(out.stem + ".training.png"),
    }


def write_log(history: Sequence[EpochLog], path: Path) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([f.name for f in fields(EpochLog)])
        for row in history:
            writer.writerow(
                [
                    f"{getattr(row, f.name):.6g}"
                    if isinstance(getattr(row, f.name), float)
                    else getattr(row, f.name)
                    for f in fields(EpochLog)
                ]
            )
    return path


def plot_curves(history: Sequence[EpochLog], best_epoch: int, path: Path, title: str = "") -> Path:
    """Training loss and validation accuracy per epoch, best epoch marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h.epoch for h in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    trained = [h for h in history if h.epoch > 0]
    ax_loss.plot([h.epoch for h in trained], [h.loss for h in trained], marker="o", color="tab:red")
    ax_loss.set(xlabel="epoch", ylabel="training loss", title="loss")
    ax_loss.grid(alpha=0.3)
    seen = not all(math.isnan(h.val_top1) for h in history)
    if seen:
        top1 = [100 * h.val_top1 for h in history]
        ax_acc.plot(epochs, top1, marker="o", label="val top-1, trained species")
    else:
        one = [100 * h.val_1shot for h in history]
        ci = [100 * h.val_1shot_ci for h in history]
        ax_acc.errorbar(epochs, one, yerr=ci, marker="o", capsize=3, label="val 5-way 1-shot")
    if not all(math.isnan(h.val_5shot) for h in history):
        ax_acc.plot(
            epochs, [100 * h.val_5shot for h in history], marker="s", label="val 5-way 5-shot"
        )
    ax_acc.axvline(best_epoch, color="grey", linestyle="--", label=f"best epoch {best_epoch}")
    ax_acc.set(
        xlabel="epoch (0 = before training)",
        ylabel="accuracy (%)",
        title="validation photos" if seen else "validation classes",
    )
    ax_acc.grid(alpha=0.3)
    ax_acc.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------- training
@dataclass
class _TrainingData:
    """Cached backbone features of the training and validation images, with their labels."""

    train: CachedFeatures
    val: CachedFeatures
    classes: list[str]  # training classes with readable images
    label_ids: torch.Tensor  # (n,) index into classes per training image
    val_labels: list[str]
    val_groups: list[str]
    skipped: int


@dataclass
class _Network:
    """The trainable part (backbone tail + head) with its loss, miner and optimiser."""

    net: _Trainable
    head: nn.Module
    in_dim: int
    out_dim: int
    loss_fn: nn.Module
    miner: Any
    optimizer: torch.optim.Optimizer
    scheduler: Any


def train_embedder(
    train_records: Sequence[ImageRecord],
    val_records: Sequence[ImageRecord],
    config: TrainingConfig | None = None,
    *,
    out: str | Path | None = None,
    cache_dir: str | Path | None = None,
    backbone: Backbone | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
    on_epoch: Callable[[int, int], None] | None = None,
) -> TrainingResult:
    """Train on ``train_records``, select the epoch on ``val_records``: other classes
    (``config.validation`` "species") or other photos of the trained classes ("photos").

    ``backbone`` is the starting point (default: ``config.backbone`` with its offline
    pretrained weights); it is trained in place. With no validation records the last epoch is
    kept. ``on_epoch(epoch, epochs)`` follows the epochs (0: the starting model measured).
    Seeds Python, NumPy and torch with ``config.seed``. Writes ``out`` (MODEL.pt) with its
    ``.training.csv`` and ``.training.png`` when ``out`` is given. Raises
    :class:`TrainingError` for unusable data or settings.
    """
    config = config or TrainingConfig()
    started = time.perf_counter()
    seed_everything(config.seed)
    device = resolve_device(config.device)
    check_validation(train_records, val_records, config.validation)
    backbone = starting_backbone(backbone, config, device)
    data = _cache_features(
        FeatureCache(cache_dir, backbone, config.unfreeze),
        train_records,
        val_records,
        config,
        progress,
        log,
    )
    network = _build_network(backbone, len(data.classes), config, device)
    history, best_epoch = _run_epochs(network, data, config, device, progress, log, on_epoch)
    for parameter in backbone.parameters():
        parameter.requires_grad_(False)
    metrics = _training_metrics(history, best_epoch, data, config, time.perf_counter() - started)
    model = EmbeddingModel(
        backbone,
        network.head,
        head_config={"kind": config.head, "in_dim": network.in_dim, "out_dim": network.out_dim},
        training_config=config.to_dict(),
        classes=data.classes,
        metrics=metrics,
    ).eval()
    model.invalidate_fingerprint()
    files = _write_outputs(model, history, best_epoch, config, out)
    return TrainingResult(model, history, best_epoch, metrics, files)


def starting_backbone(
    backbone: Backbone | None, config: TrainingConfig, device: torch.device
) -> Backbone:
    """The starting backbone on ``device`` (default: ``config.backbone`` with its offline
    pretrained weights), every weight frozen (the tail is thawed later), preprocessing as
    ``config`` says: the backbone whose trunk features training caches."""
    if backbone is None:
        backbone = create_backbone(config.backbone)
    backbone.preprocess = backbone.preprocess.with_shell_normalisation(config.normalize_shells)
    backbone.to(device).eval()
    for parameter in backbone.parameters():
        parameter.requires_grad_(False)
    return backbone


def _cache_features(
    cache: FeatureCache,
    train_records: Sequence[ImageRecord],
    val_records: Sequence[ImageRecord],
    config: TrainingConfig,
    progress: bool,
    log: Callable[[str], None],
) -> _TrainingData:
    """Trunk features of the augmented training views and the clean validation images."""
    train_set = cache.get(
        [r.path for r in train_records],
        tuple(range(config.views + 1)),
        desc="caching training views",
        progress=progress,
    )
    val_set = cache.get(
        [r.path for r in val_records], (0,), desc="caching validation images", progress=progress
    )
    errors = {**train_set.errors, **val_set.errors}
    if errors:
        first = next(iter(errors.items()))
        log(f"skipped {len(errors)} unreadable image(s), e.g. {first[0]}: {first[1]}")
    by_path = {r.path: r for r in [*train_records, *val_records]}
    train_labels = [by_path[p].species for p in train_set.paths]
    classes = sorted(set(train_labels))
    if len(classes) < 2:
        raise TrainingError("fewer than 2 training classes have readable images")
    if val_records and config.validation == "photos":
        check_validation_photos(
            set(classes), set(train_set.paths), [by_path[p] for p in val_set.paths]
        )
    elif val_records:
        check_validation_classes([by_path[p] for p in val_set.paths])
    return _TrainingData(
        train=train_set,
        val=val_set,
        classes=classes,
        label_ids=torch.tensor([classes.index(s) for s in train_labels]),
        val_labels=[by_path[p].species for p in val_set.paths],
        val_groups=[by_path[p].group for p in val_set.paths],
        skipped=len(errors),
    )


def _build_network(
    backbone: Backbone, n_classes: int, config: TrainingConfig, device: torch.device
) -> _Network:
    """Tail + head to train, the loss (with its miner) and the optimiser over what learns."""
    tail = stages.tail(backbone, config.unfreeze)
    in_dim = backbone.num_features
    default_dim = in_dim if config.head in ("identity", "residual") else 512
    out_dim = config.embedding_dim or default_dim
    try:
        head = create_head(config.head, in_dim, out_dim)
    except ValueError as exc:
        raise TrainingError(str(exc)) from None
    net = _Trainable(tail, head, config.train_batchnorm).to(device)
    for parameter in tail.parameters():
        parameter.requires_grad_(True)
    loss_fn, miner = create_loss(config.loss, n_classes, out_dim)
    loss_fn = loss_fn.to(device)
    groups = [{"params": list(head.parameters()), "lr": config.lr}]
    if config.unfreeze > 0 and config.tail_lr_scale > 0:
        groups.append({"params": list(tail.parameters()), "lr": config.lr * config.tail_lr_scale})
    if list(loss_fn.parameters()):  # proxies learn fast (as in the Proxy-Anchor paper)
        groups.append({"params": list(loss_fn.parameters()), "lr": config.lr * 100})
    groups = [g for g in groups if g["params"]]
    if not groups:
        raise TrainingError("nothing to train: the identity head with unfreeze 0 has no weights")
    optimizer = torch.optim.AdamW(groups, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
    return _Network(net, head, in_dim, out_dim, loss_fn, miner, optimizer, scheduler)


def _run_epochs(
    network: _Network,
    data: _TrainingData,
    config: TrainingConfig,
    device: torch.device,
    progress: bool,
    log: Callable[[str], None],
    on_epoch: Callable[[int, int], None] | None = None,
) -> tuple[list[EpochLog], int]:
    """Train epoch by epoch, validating after each; loads the best epoch's weights into the
    network and returns the history and that epoch (early stop after ``patience``).
    ``on_epoch(epoch, epochs)`` is called after each epoch (0: the starting model)."""
    validating = len(data.val.paths) > 0
    batches = _EpochBatches(data, config)
    one, ci, five, top1 = _validate(network.net, data, config, device)
    history = [EpochLog(0, math.nan, one, ci, five, 0.0, 0.0, top1)]
    log(_epoch_line(history[0], config, improved=False))
    best_epoch, best_score, stale = 0, _score(history[0], config), 0
    best_state = copy.deepcopy(network.net.state_dict())
    if on_epoch is not None:
        on_epoch(0, config.epochs)
    for epoch in range(1, config.epochs + 1):
        tick = time.perf_counter()
        lr = network.optimizer.param_groups[0]["lr"]
        losses = [
            _train_step(network, batches.features, data.label_ids, batch, batches.view_rng, device)
            for batch in tqdm(
                batches.of_epoch(),
                desc=f"epoch {epoch}",
                unit="batch",
                leave=False,
                disable=not progress,
            )
        ]
        network.scheduler.step()
        one, ci, five, top1 = _validate(network.net, data, config, device)
        mean_loss = float(np.mean(losses)) if losses else math.nan
        row = EpochLog(epoch, mean_loss, one, ci, five, lr, time.perf_counter() - tick, top1)
        history.append(row)
        improved = validating and _score(row, config) > best_score
        if improved or not validating:
            best_epoch, best_score, stale = epoch, _score(row, config), 0
            best_state = copy.deepcopy(network.net.state_dict())
        else:
            stale += 1
        log(_epoch_line(row, config, improved))
        if on_epoch is not None:
            on_epoch(epoch, config.epochs)
        if validating and stale >= config.patience:
            log(
                f"no improvement for {config.patience} epochs: stopping, keeping epoch {best_epoch}"
            )
            break
    network.net.load_state_dict(best_state)
    return history, best_epoch


def _score(row: EpochLog, config: TrainingConfig) -> float:
    """What selects the epoch: seen-species top-1 (validation "photos") or 1-shot."""
    return row.val_top1 if config.validation == "photos" else row.val_1shot


def _epoch_line(row: EpochLog, config: TrainingConfig, improved: bool) -> str:
    """One log line of an epoch (epoch 0: before training)."""
    if config.validation == "photos":
        figures = f"val top-1 {_percent(row.val_top1)}"
    else:
        figures = f"val 1-shot {_percent(row.val_1shot)}  5-shot {_percent(row.val_5shot)}"
    if row.epoch == 0:
        return f"epoch  0/{config.epochs}  before training          {figures}"
    return (
        f"epoch {row.epoch:2d}/{config.epochs}  loss {row.loss:.4f}  {figures}  "
        f"({row.seconds:.0f} s){'  *' if improved else ''}"
    )


class _EpochBatches:
    """The training images' batches: ``m_per_class`` images of each of several classes per
    batch (``MPerClassSampler``), and the cached views with the generator that picks one view
    of each image per step."""

    def __init__(self, data: _TrainingData, config: TrainingConfig) -> None:
        from pytorch_metric_learning.samplers import MPerClassSampler

        m = config.m_per_class
        self.size = max(2 * m, min(config.batch_size, m * len(data.classes)) // m * m)
        self.sampler = MPerClassSampler(
            data.label_ids.numpy(),
            m=m,
            batch_size=self.size,
            length_before_new_iter=max(len(data.label_ids), self.size),
        )
        self.features = torch.from_numpy(data.train.features)  # (n, views, ...) f16, on CPU
        self.view_rng = torch.Generator().manual_seed(config.seed)

    def of_epoch(self) -> tuple[torch.Tensor, ...]:
        """One epoch's batches of image indices (a new draw of the sampler)."""
        return torch.tensor(list(iter(self.sampler))).split(self.size)


def _validate(
    net: nn.Module, data: _TrainingData, config: TrainingConfig, device: torch.device
) -> tuple[float, float, float, float]:
    """Validation scores of ``net``: (1-shot, its CI, 5-shot, seen-species top-1), NaN where
    not measured (no validation images, or the other validation mode)."""
    nan = math.nan
    if not data.val.paths:
        return nan, nan, nan, nan
    vectors = embed_features(net, data.val.features[:, 0], device)
    if config.validation == "photos":
        support = embed_features(net, data.train.features[:, 0], device)
        labels = [data.classes[i] for i in data.label_ids.tolist()]
        return nan, nan, nan, prototype_top1(support, labels, vectors, data.val_labels)
    one, ci, five = species_scores(
        vectors, data.val_labels, data.val_groups, config.val_episodes, config.seed
    )
    return one, ci, five, nan


def _train_step(
    network: _Network,
    features: torch.Tensor,
    label_ids: torch.Tensor,
    batch: torch.Tensor,
    view_rng: torch.Generator,
    device: torch.device,
) -> float:
    """One optimiser step on ``batch`` (a random cached view of each image); its loss."""
    network.net.train()
    views = torch.randint(0, features.shape[1], (len(batch),), generator=view_rng)
    inputs = features[batch, views].to(device, torch.float32)
    labels = label_ids[batch].to(device)
    embeddings = network.net(inputs)
    pairs = network.miner(embeddings, labels) if network.miner is not None else None
    loss = (
        network.loss_fn(embeddings, labels, pairs)
        if pairs is not None
        else network.loss_fn(embeddings, labels)
    )
    network.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    network.optimizer.step()
    return float(loss.detach())


def _training_metrics(
    history: list[EpochLog],
    best_epoch: int,
    data: _TrainingData,
    config: TrainingConfig,
    seconds: float,
) -> dict[str, Any]:
    """What MODEL.pt records of its training (NaN, i.e. not measured, becomes None):
    ``validation`` says which figures were measured (``val_1shot``... for "species",
    ``val_top1`` for "photos"; ``_before``: the starting model)."""
    best = history[best_epoch]
    validating = len(data.val.paths) > 0
    species = config.validation == "species"
    metrics: dict[str, Any] = {
        "best_epoch": best_epoch,
        "epochs_run": history[-1].epoch,
        "validation": config.validation,
        "val_images": len(data.val.paths),
        "val_top1": best.val_top1,
        "val_top1_before": history[0].val_top1,
        "val_1shot": best.val_1shot,
        "val_1shot_ci95": best.val_1shot_ci,
        "val_5shot": best.val_5shot,
        "val_1shot_before": history[0].val_1shot,
        "val_5shot_before": history[0].val_5shot,
        "val_n_way": min(5, len(set(data.val_labels))) if validating and species else 0,
        "val_classes": sorted(set(data.val_labels)),
        "train_images": len(data.train.paths),
        "skipped_images": data.skipped,
        "seconds": round(seconds, 1),
    }
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in metrics.items()}


def _write_outputs(
    model: EmbeddingModel,
    history: list[EpochLog],
    best_epoch: int,
    config: TrainingConfig,
    out: str | Path | None,
) -> dict[str, Path]:
    """MODEL.pt with its CSV log and curves, when ``out`` is given."""
    if out is None:
        return {}
    files = log_paths(Path(out))
    try:
        model.save(files["model"])
        write_log(history, files["log"])
        plot_curves(
            history,
            best_epoch,
            files["curves"],
            title=f"{config.backbone}, unfreeze {config.unfreeze}, "
            f"{config.head} head, {config.loss}",
        )
    except OSError as exc:
        raise OSError(f"cannot write {files['model']}: {exc.strerror or exc}") from None
    return files


def train_collection(
    root: str | Path,
    config: TrainingConfig | None = None,
    *,
    out: str | Path | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> TrainingResult:
    """Scan ``root/<class>/*`` images, hold out ``val_fraction`` of the classes (or of each
    class's specimens, ``config.validation`` "photos"), train."""
    config = config or TrainingConfig()
    records = scan_collection(root, group_pattern=config.group_pattern)
    train_records, val_records = split_validation(records, config)
    held = (
        f"{len(val_records)} photos of {len({r.species for r in val_records})} of them"
        if config.validation == "photos"
        else f"{len({r.species for r in val_records})}"
    )
    log(
        f"{len(records)} images of {len({r.species for r in records})} classes: "
        f"{len({r.species for r in train_records})} to train on, "
        f"{held} held out for validation"
    )
    return train_embedder(
        train_records, val_records, config, out=out, cache_dir=cache_dir, progress=progress, log=log
    )


__all__ = [
    "LOSSES",
    "LOSS_KINDS",
    "DatasetError",
    "EpochLog",
    "TrainingConfig",
    "TrainingError",
    "TrainingResult",
    "create_loss",
    "embed_cached",
    "split_validation_classes",
    "starting_backbone",
    "train_collection",
    "train_embedder",
]
