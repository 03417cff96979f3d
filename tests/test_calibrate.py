"""The calibration procedure: held-out query selection, the thresholds it fits and its
fallbacks, and that any scorer following the SpeciesScorer protocol plugs into it."""

from __future__ import annotations

import numpy as np
import pytest

from index import VectorIdentifier
from index.calibrate import calibrate, calibration_rows, default_thresholds
from index.calibration import (
    cap_confidence,
    fit_temperature,
    open_set_probabilities,
    softmax,
)
from index.config import IdentifierConfig
from index.enrolled import EnrolledRows
from index.open_set import OpenSetScores
from index.prototypes import power_normalise
from index.rows import SpecimenRows
from index.scorers import Cl2n, species_scorer
from tests.clusters import specimens_around, unit

DIM = 16
CONFIG = IdentifierConfig(use_gpu=False)


def synthetic(specimens=(5, 5, 5, 5, 2, 1)) -> tuple[np.ndarray, list[str], list[str]]:
    """One species per entry of ``specimens`` (that many specimens, 2 views each)."""
    rng = np.random.default_rng(3)
    domain = unit(rng.normal(size=DIM))
    centres = unit(domain + 0.9 * unit(rng.normal(size=(len(specimens), DIM))))
    return specimens_around(centres, specimens, rng, 0.15, 0.03, lambda s: f"Genus{s // 2}_s{s}")


def enrolled(specimens=(5, 5, 5, 5, 2, 1)) -> EnrolledRows:
    vectors, labels, groups = synthetic(specimens)
    rows = EnrolledRows(DIM)
    rows.add(
        SpecimenRows(power_normalise(vectors, CONFIG.feature_power), labels, groups=groups)
    )  # as mapped
    return rows


def parts(rows: EnrolledRows, config: IdentifierConfig = CONFIG):
    cl2n = Cl2n(rows, config)
    cl2n.fit()
    scorer = species_scorer(rows, cl2n, config)
    scorer.fit()
    return scorer, OpenSetScores.of(rows, config)


def test_calibration_rows_take_whole_specimens_round_robin_over_species():
    rows = enrolled()
    chosen = calibration_rows(rows, 12, np.random.default_rng(0))
    assert len(chosen) == 12
    # the first round visits every species once (6 species x 2 views = 12 rows)
    assert sorted(set(rows.y[chosen].tolist())) == list(range(6))
    for g in set(rows.g[chosen].tolist()):
        assert set(np.flatnonzero(rows.g == g).tolist()) <= set(chosen.tolist())


def test_calibration_rows_stop_when_the_budget_is_reached_or_everything_is_taken():
    rows = enrolled()
    assert len(calibration_rows(rows, 1, np.random.default_rng(0))) == 2  # one whole specimen
    everything = calibration_rows(rows, 10_000, np.random.default_rng(0))
    assert sorted(everything.tolist()) == list(range(len(rows)))


def test_calibration_fits_the_thresholds_and_reaches_about_the_target_recall():
    rows = enrolled()
    scorer, ood = parts(rows)
    th = calibrate(rows, scorer, ood, CONFIG, target_recall=0.9)
    assert th.source == "calibrated" and th.target_recall == 0.9
    assert 0.01 <= th.temperature <= 1.0
    assert th.temperature != CONFIG.fallback_temperature
    assert np.isfinite(th.unknown) and np.isfinite(th.ood)
    assert th.stats.known_recall is not None and th.stats.known_recall >= 0.85
    # known samples: species with 2+ specimens (the one-specimen species cannot be held out)
    assert th.stats.known_queries == 2 * (5 + 5 + 5 + 5 + 2)
    assert th.stats.unknown_queries == len(rows)


def test_the_identifier_calibrates_with_this_procedure():
    vectors, labels, groups = synthetic()
    identifier = VectorIdentifier.fit(SpecimenRows(vectors, labels, groups=groups))
    rows = enrolled()
    scorer, ood = parts(rows)
    assert identifier.thresholds == calibrate(rows, scorer, ood, identifier.config)


def test_an_empty_collection_keeps_the_default_thresholds_with_a_note():
    rows = EnrolledRows(DIM)
    scorer, ood = parts(rows)
    th = calibrate(rows, scorer, ood, CONFIG)
    assert th.source == "default"
    assert th.temperature == default_thresholds(CONFIG).temperature
    assert th.stats.notes == ["empty collection: default thresholds"]


def test_one_species_falls_back_for_the_temperature_and_the_ood_threshold():
    rows = enrolled(specimens=(3,))
    scorer, ood = parts(rows)
    th = calibrate(rows, scorer, ood, CONFIG)
    assert th.source == "fallback"
    assert th.temperature == CONFIG.fallback_temperature
    assert any(note.startswith("temperature: fallback") for note in th.stats.notes)
    assert th.stats.unknown_queries == 0 and th.stats.unknown_auroc is None


@pytest.mark.parametrize("target", [0.5, 1.0, 1.2])
def test_a_target_recall_outside_the_open_interval_is_refused(target):
    rows = enrolled()
    scorer, ood = parts(rows)
    with pytest.raises(ValueError, match="target_recall"):
        calibrate(rows, scorer, ood, CONFIG, target_recall=target)


class OracleScorer:
    """A stand-in species scorer: 1 for the true species, 0 elsewhere (held out or not)."""

    held_out_cost = 1

    def __init__(self, rows: EnrolledRows) -> None:
        self.rows = rows

    def fit(self) -> None:
        pass

    def scores(self, raw_queries: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def held_out_scores(self, rows: np.ndarray) -> np.ndarray:
        out = np.zeros((len(rows), len(self.rows.species)), np.float32)
        out[np.arange(len(rows)), self.rows.y[rows]] = 1.0
        return out


def test_any_scorer_following_the_protocol_plugs_into_calibration():
    rows = enrolled()
    th = calibrate(rows, OracleScorer(rows), OpenSetScores.of(rows, CONFIG), CONFIG)
    assert th.stats.known_top1 == 1.0
    # the one-specimen species is never a known sample, even when a scorer scores it
    assert th.stats.known_queries == 2 * (5 + 5 + 5 + 5 + 2)
    # perfectly separated: as confident as 44 right answers out of 44 justify, no more (the
    # first release collapsed to the 0.01 bound here and said "> 99 %" for everything)
    n = th.stats.known_queries
    assert th.temperature > 0.05
    sims = np.eye(len(rows.species), dtype=np.float32)[rows.y[rows.group_counts[rows.y] > 1]]
    top = softmax(sims, th.temperature).max(axis=1).mean()
    assert top == pytest.approx((n + 1) / (n + 2), abs=1e-3)
    assert th.stats.unknown_auroc == 1.0


def test_the_temperature_is_fitted_freely_while_the_samples_make_mistakes():
    rng = np.random.default_rng(0)
    targets = rng.integers(0, 4, 400)
    sims = rng.normal(0, 0.05, (400, 4)).astype(np.float32)
    sims[np.arange(400), targets] += 0.06  # right about 75 % of the time
    fitted = fit_temperature(sims, targets)
    assert cap_confidence(sims, targets, fitted) == fitted  # calibrated already: no cap
    top = softmax(sims, fitted).max(axis=1).mean()
    right = np.mean(sims.argmax(axis=1) == targets)
    assert abs(top - right) < 0.05


def test_a_sharp_none_temperature_keeps_the_order_and_the_tie_at_the_threshold():
    sims = np.array([[0.70, 0.30], [0.58, 0.31], [0.60, 0.10]], np.float32)
    soft = open_set_probabilities(sims, 0.05, 0.6, 0.05)
    sharp = open_set_probabilities(sims, 0.05, 0.6, 0.005)
    for species, none in (soft, sharp):
        np.testing.assert_allclose(species.sum(axis=1) + none, 1.0, atol=1e-6)
        assert species[0].max() > none[0] and none[1] > species[1].max()
        assert none[2] == pytest.approx(species[2].max(), abs=1e-5)
    assert sharp[1][0] < soft[1][0]  # far above the threshold "none" all but vanishes
    assert sharp[1][1] > soft[1][1]


def test_the_thresholds_do_not_depend_on_the_specimen_ids():
    """Specimen ids may be random (the store's are): the held-out folds follow the enrolment
    order, so the same photos enrolled in the same order get the same thresholds."""
    vectors, labels, groups = synthetic()
    names = sorted(set(groups))
    renamed = {g: f"{len(names) - i:04d}-{g}" for i, g in enumerate(names)}  # order reversed
    first = VectorIdentifier.fit(SpecimenRows(vectors, labels, groups=groups), config=CONFIG)
    second = VectorIdentifier.fit(
        SpecimenRows(vectors, labels, groups=[renamed[g] for g in groups]), config=CONFIG
    )
    assert first.thresholds.source == "calibrated"
    for name in ("unknown", "temperature", "ood"):  # up to the order of float sums
        assert getattr(second.thresholds, name) == pytest.approx(
            getattr(first.thresholds, name), rel=1e-6
        )
