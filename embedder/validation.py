"""What training validates on, and how it scores an epoch (``TrainingConfig.validation``).

* ``"species"``: whole species held out (:func:`split_validation_classes`), never trained on;
  an epoch is scored by episodic 5-way 1-shot accuracy on them (:func:`species_scores`), i.e.
  how well the model separates species it has never seen.
* ``"photos"``: other specimens of the *trained* species held out
  (:func:`split_validation_photos`); an epoch is scored by nearest-prototype top-1 of those
  photos against prototypes of the training photos' clean views, every trained species
  competing (:func:`embedder.episodes.prototype_top1`), i.e. how well the model tells the
  collection's own species apart.

Numpy and records only (no torch): the store-training workflow splits with the same functions.
"""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from .datasets import ImageRecord, class_split
from .episodes import episodic_accuracy
from .settings import TrainingConfig, TrainingError

#: a species needs this many specimens (groups) before one is held out for ``"photos"``
#: validation: at least two stay in training.
MIN_GROUPS_TO_SPLIT = 3


def split_validation(
    records: Sequence[ImageRecord], config: TrainingConfig
) -> tuple[list[ImageRecord], list[ImageRecord]]:
    """``(train, validation)`` records as ``config.validation`` asks (seeded by
    ``config.seed``, share ``config.val_fraction``)."""
    if config.validation == "photos":
        return split_validation_photos(records, config.val_fraction, config.seed)
    return split_validation_classes(records, config.val_fraction, config.seed)


def split_validation_classes(
    records: Sequence[ImageRecord], val_fraction: float, seed: int
) -> tuple[list[ImageRecord], list[ImageRecord]]:
    """Hold out whole classes for validation (at least 2 when ``val_fraction > 0``)."""
    species = sorted({r.species for r in records})
    if val_fraction == 0:
        return list(records), []
    n_val = max(2, round(val_fraction * len(species)))
    if len(species) - n_val < 2:
        raise TrainingError(
            f"{len(species)} classes are too few to hold {n_val} out for validation and train on "
            "at least 2; add classes or use a validation fraction of 0"
        )
    _, val, _ = class_split(species, (1 - n_val / len(species), n_val / len(species), 0.0), seed)
    wanted = set(val)
    return [r for r in records if r.species not in wanted], [
        r for r in records if r.species in wanted
    ]


def split_validation_photos(
    records: Sequence[ImageRecord], val_fraction: float, seed: int
) -> tuple[list[ImageRecord], list[ImageRecord]]:
    """Hold out whole specimens (groups) of every species with at least
    :data:`MIN_GROUPS_TO_SPLIT`: ``round(val_fraction x groups)`` of them, at least one, and
    always two left to train on; species with fewer specimens are trained on whole. The
    specimens held out are those ranked first by a hash of ``seed``, species and specimen:
    independent of the records' order, and the same ones again when specimens are added
    (unless a new one ranks before them), so a model trained on an earlier split has rarely
    seen them. ``val_fraction`` 0 holds nothing out."""
    if val_fraction == 0:
        return list(records), []
    by_species: dict[str, dict[str, list[ImageRecord]]] = defaultdict(lambda: defaultdict(list))
    for record in records:
        by_species[record.species][record.group].append(record)
    held: set[tuple[str, str]] = set()
    for species in sorted(by_species):
        groups = sorted(by_species[species])
        if len(groups) < MIN_GROUPS_TO_SPLIT:
            continue
        groups.sort(key=lambda group: _rank(seed, species, group))
        n_val = min(max(1, round(val_fraction * len(groups))), len(groups) - 2)
        held.update((species, group) for group in groups[:n_val])
    train = [r for r in records if (r.species, r.group) not in held]
    return train, [r for r in records if (r.species, r.group) in held]


def _rank(seed: int, species: str, group: str) -> str:
    return hashlib.sha1(f"{seed}\x00{species}\x00{group}".encode()).hexdigest()


def check_validation(
    train_records: Sequence[ImageRecord], val_records: Sequence[ImageRecord], validation: str
) -> None:
    """At least two training classes; validation records that fit ``validation``: other
    classes (``"species"``, 2 or more with 2 specimens each) or other photos of trained
    classes (``"photos"``). Raises :class:`TrainingError`."""
    classes = {r.species for r in train_records}
    if len(classes) < 2:
        raise TrainingError(f"training needs at least 2 classes; found {len(classes)}")
    if validation == "photos":
        check_validation_photos(classes, {r.path for r in train_records}, val_records)
        return
    if val_records:
        check_validation_classes(val_records)
    overlap = classes & {r.species for r in val_records}
    if overlap:
        raise TrainingError(
            f"validation classes must not be trained on; shared: {sorted(overlap)[:3]}"
        )


def check_validation_photos(
    classes: set[str], train_paths: set, val_records: Sequence[ImageRecord]
) -> None:
    """``"photos"`` validation: photos of trained classes that are not training photos."""
    untrained = sorted({r.species for r in val_records} - classes)
    if untrained:
        raise TrainingError(
            "validation photos must be of trained classes (validation 'photos'); not trained: "
            f"{untrained[:3]}"
        )
    shared = [r.path for r in val_records if r.path in train_paths]
    if shared:
        raise TrainingError(f"validation photos must not be training photos; shared: {shared[0]}")


def check_validation_classes(records: Sequence[ImageRecord]) -> None:
    """``"species"`` validation needs 2 classes with 2 or more specimens each."""
    groups: dict[str, set[str]] = {}
    for record in records:
        groups.setdefault(record.species, set()).add(record.group)
    usable = [s for s, g in groups.items() if len(g) >= 2]
    if len(usable) < 2:
        raise TrainingError(
            "validation needs at least 2 classes with 2 or more specimens (groups) each; "
            f"the validation classes have {len(usable)}"
        )


def species_scores(
    vectors: np.ndarray, labels: list[str], groups: list[str], episodes: int, seed: int
) -> tuple[float, float, float]:
    """(1-shot mean, its 95 % CI, 5-shot mean or NaN) on validation embeddings."""
    n_way = min(5, len(set(labels)))
    one = episodic_accuracy(
        vectors, labels, n_way=n_way, k_shot=1, episodes=episodes, seed=seed, groups=groups
    )
    try:
        five = episodic_accuracy(
            vectors, labels, n_way=n_way, k_shot=5, episodes=episodes, seed=seed, groups=groups
        ).mean
    except ValueError:  # fewer than n_way classes with 6 specimens: 5-shot cannot be measured
        five = math.nan
    return one.mean, one.ci95, five
