"""shellid evaluate: metrics agree with scikit-learn, bootstrap intervals behave, few-shot
episodes match embedder.episodes, the embedding cache works, and the JSON keys are stable."""

from __future__ import annotations

import json
import os
from typing import ClassVar

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
    top_k_accuracy_score,
)

from api.cli import main
from embedder.episodes import episodic_accuracy
from index.results import DECISIONS
from index.workflows.evaluation.bootstrap import bootstrap_f1
from index.workflows.evaluation.fewshot import episodic_accuracies, probe_predict, prototype_predict
from index.workflows.evaluation.metrics import (
    closed_set_metrics,
    expected_calibration_error,
    fpr_at_recall,
    most_confused_pairs,
    topk_accuracy,
)
from index.workflows.evaluation.openset import decision_rates, holdout_species
from index.workflows.evaluation.runner import EvaluationError, choose_species

SPECIES = ["Conus_a", "Conus_b", "Murex_c", "Oliva_d"]


@pytest.fixture
def fixed_predictions():
    rng = np.random.default_rng(7)
    n = 120
    truth = rng.integers(0, 4, size=n)
    logits = rng.normal(size=(n, 4))
    logits[np.arange(n), truth] += 1.2  # right more often than not, with mistakes
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return probs, truth


def test_closed_set_metrics_match_scikit_learn(fixed_predictions):
    probs, truth = fixed_predictions
    names = [SPECIES[t] for t in truth]
    m = closed_set_metrics(SPECIES, probs, names)
    pred = probs.argmax(axis=1)
    assert m.accuracy == pytest.approx(accuracy_score(truth, pred))
    assert m.top5_accuracy == pytest.approx(1.0)
    assert topk_accuracy(probs, truth, 2) == pytest.approx(
        top_k_accuracy_score(truth, probs, k=2, labels=range(4))
    )
    assert m.macro["f1"] == pytest.approx(f1_score(truth, pred, average="macro"))
    assert m.weighted["f1"] == pytest.approx(f1_score(truth, pred, average="weighted"))
    p, r, f, s = precision_recall_fscore_support(truth, pred, labels=range(4), zero_division=0)
    for i, name in enumerate(SPECIES):
        assert m.per_species[name]["precision"] == pytest.approx(p[i])
        assert m.per_species[name]["recall"] == pytest.approx(r[i])
        assert m.per_species[name]["f1"] == pytest.approx(f[i])
        assert m.per_species[name]["support"] == s[i]
    assert np.array_equal(m.confusion, confusion_matrix(truth, pred, labels=range(4)))


def test_closed_set_metrics_refuse_species_the_classifier_does_not_know():
    with pytest.raises(ValueError, match="not among"):
        closed_set_metrics(SPECIES[:2], np.eye(2), ["Conus_a", "Nope_x"])


def test_most_confused_pairs_are_largest_off_diagonal_cells_first():
    matrix = np.array([[5, 3, 0], [1, 6, 0], [0, 4, 2]])
    pairs = most_confused_pairs(matrix, ["a", "b", "c"], n=2)
    assert [(p["true"], p["predicted"], p["count"]) for p in pairs] == [
        ("c", "b", 4),
        ("a", "b", 3),
    ]
    assert pairs[0]["share"] == pytest.approx(4 / 6)


def test_expected_calibration_error_by_hand():
    confidence = np.array([0.95, 0.95, 0.55, 0.55])
    correct = np.array([1, 1, 0, 1])
    ece, table = expected_calibration_error(confidence, correct, bins=10)
    # bin 0.9-1.0: acc 1 vs conf .95 -> .05; bin .5-.6: acc .5 vs conf .55 -> .05; weights 1/2
    assert ece == pytest.approx(0.05)
    assert sum(table["count"]) == 4


def test_fpr_at_recall_counts_novel_scores_under_the_known_quantile():
    known = np.linspace(0, 1, 101)  # the 95 % quantile is 0.95
    novel = np.array([0.5, 0.94, 0.96, 2.0])
    assert fpr_at_recall(known, novel, 0.95) == pytest.approx(0.5)


def test_bootstrap_interval_contains_point_estimate(fixed_predictions):
    probs, truth = fixed_predictions
    names = [SPECIES[t] for t in truth]
    predicted = [SPECIES[j] for j in probs.argmax(axis=1)]
    result = bootstrap_f1(names, predicted, resamples=500, seed=1)
    assert result.macro_f1.value == pytest.approx(f1_score(names, predicted, average="macro"))
    for interval in [result.accuracy, result.macro_f1, *result.per_species_f1.values()]:
        assert interval.low <= interval.value <= interval.high
        assert interval.low < interval.high


def test_bootstrap_interval_narrows_with_more_data():
    rng = np.random.default_rng(0)

    def width(per_species: int) -> float:
        truth = np.repeat(SPECIES, per_species)
        wrong = rng.random(len(truth)) < 0.25
        predicted = np.where(wrong, np.roll(truth, 1), truth)
        result = bootstrap_f1(list(truth), list(predicted), resamples=400, seed=0)
        return result.macro_f1.high - result.macro_f1.low

    assert width(200) < 0.6 * width(20)


def test_bootstrap_caps_images_per_species():
    truth = ["a"] * 1000 + ["b"] * 10
    result = bootstrap_f1(truth, truth, resamples=50, max_per_species=200)
    assert result.max_per_species == 200 and result.accuracy.value == 1.0


def test_prototype_episodes_equal_embedder_episodic_accuracy():
    rng = np.random.default_rng(3)
    labels = np.repeat([f"s{i}" for i in range(8)], 12)
    centres = rng.normal(size=(8, 32))
    x = centres[np.repeat(np.arange(8), 12)] + rng.normal(scale=1.5, size=(96, 32))
    groups = [f"{label}/{i // 2}" for i, label in enumerate(labels)]
    reference = episodic_accuracy(x, labels, 5, 2, episodes=40, seed=5, groups=groups)
    ours = episodic_accuracies(
        {"m": x},
        {"proto": ("m", prototype_predict), "probe": ("m", probe_predict)},
        labels,
        groups,
        n_way=5,
        k_shot=2,
        episodes=40,
        seed=5,
    )
    assert ours["proto"].mean == pytest.approx(reference.mean)
    assert ours["proto"].ci95 == pytest.approx(reference.ci95)
    assert 0.2 < ours["probe"].mean <= 1.0


def test_holdout_species_is_disjoint_deterministic_and_leaves_two_known():
    names = [f"s{i}" for i in range(10)]
    known, unknown = holdout_species(names, 0.3, seed=2)
    assert len(unknown) == 3 and not set(known) & set(unknown)
    assert (known, unknown) == holdout_species(names, 0.3, seed=2)
    assert len(holdout_species(names[:3], 0.9)[0]) == 2
    with pytest.raises(ValueError, match="at least 3 species"):
        holdout_species(names[:2], 0.3)


def test_decision_rates_cover_every_decision_and_sum_to_one():
    rates = decision_rates(["species", "species", "genus", "out_of_domain"])
    assert set(rates) == set(DECISIONS)
    assert rates["species"] == 0.5 and sum(rates.values()) == pytest.approx(1.0)


class _TrainedModel:
    classes: ClassVar[list[str]] = ["a", "b"]
    metrics: ClassVar[dict] = {"val_classes": ["c"]}


def test_choose_species_novel_base_and_lists():
    names = ["a", "b", "c", "d", "e"]
    assert choose_species(names, "novel", _TrainedModel()) == ["d", "e"]
    assert choose_species(names, "base", _TrainedModel()) == ["a", "b", "c"]
    assert choose_species(names, "e, a", None) == ["a", "e"]
    with pytest.raises(EvaluationError, match="needs --model"):
        choose_species(names, "novel", None)
    with pytest.raises(EvaluationError, match="not in the collection"):
        choose_species(names, "a,zzz", None)


def test_embedding_cache_reuses_vectors_and_refreshes_edited_files(
    frozen_model, generated_collection, tmp_path
):
    from embedder import Embedder
    from index.workflows.evaluation.cache import EmbeddingCache

    paths = sorted(generated_collection.rglob("*.png"))[:6]
    broken = generated_collection / "Conus_alpha" / "broken.png"
    broken.write_bytes(b"not an image")
    embedder = Embedder(frozen_model)
    cache = EmbeddingCache(embedder, tmp_path / "cache")
    first = cache.embed_paths([*paths, broken], progress=False)
    assert first.embeddings.shape == (6, frozen_model.dim) and str(broken) in first.errors
    calls = []
    original = embedder.embed_paths
    embedder.embed_paths = lambda p, **kw: calls.append(list(p)) or original(p, **kw)
    again = EmbeddingCache(embedder, tmp_path / "cache").embed_paths(
        [*paths, broken], progress=False
    )
    assert calls == [] and np.array_equal(again.embeddings, first.embeddings)
    os.utime(paths[0], ns=(1, 1))  # "edited": new mtime -> embedded again, alone
    cache.embed_paths(paths, progress=False)
    assert calls == [[paths[0]]]


#: every top-level key of `shellid evaluate --json` and the keys below it (docs/evaluation.md).
TOP_KEYS = {
    "schema_version",
    "created",
    "data",
    "config",
    "models",
    "model_is_frozen",
    "methods",
    "closed_set",
    "few_shot",
    "open_set",
    "timings_s",
}
CLOSED_METHOD_KEYS = {
    "accuracy",
    "top5_accuracy",
    "specimen_accuracy",
    "macro",
    "weighted",
    "per_species",
    "confusion_matrix",
    "most_confused",
    "ece",
    "ece_all",
    "reliability",
    "bootstrap",
    "decision_rates",
}
OPEN_KEYS = {
    "known_species",
    "unknown_species",
    "enrolled_images",
    "known_queries",
    "unknown_queries",
    "ood_queries",
    "target_recall",
    "methods",
}


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    """`shellid evaluate` on a generated collection with an off-domain folder, run once."""
    from tests.conftest import make_collection
    from tests.test_audit import line_drawing

    base = tmp_path_factory.mktemp("evaluate")
    root = make_collection(base / "collection", specimens=5)
    ood = base / "drawings"
    ood.mkdir()
    for i in range(6):
        line_drawing(ood / f"d{i}.png", seed=i)
    args = [
        "evaluate",
        str(root),
        "--group-regex",
        "specimen",
        "--shots",
        "1,2",
        "--episodes",
        "20",
        "--bootstrap",
        "100",
        "--ood",
        str(ood),
        "--json",
        str(base / "out.json"),
        "--report",
        str(base / "report"),
        "--cache-dir",
        str(base / "cache"),
        "--quiet",
    ]
    code = main(args)
    return code, json.loads((base / "out.json").read_text()), base


def test_evaluate_json_keys_are_stable(evaluated):
    code, figures, _ = evaluated
    assert code == 0
    assert set(figures) == TOP_KEYS
    assert figures["schema_version"] == 2
    assert figures["model_is_frozen"] is True
    assert set(figures["methods"]) == {"frozen", "probe"}
    closed = figures["closed_set"]
    assert set(closed) == {"train_images", "test_images", "methods"}
    for method in ("frozen", "probe"):
        assert set(closed["methods"][method]) == CLOSED_METHOD_KEYS
        assert set(closed["methods"][method]["bootstrap"]) == {
            "resamples",
            "max_per_species",
            "accuracy",
            "macro_f1",
            "per_species_f1",
        }
    assert set(figures["few_shot"]) == {"episodic", "all_way"}
    assert set(figures["few_shot"]["episodic"]) == {"1", "2"}
    assert set(figures["few_shot"]["episodic"]["1"]["methods"]["frozen"]) == {
        "mean",
        "ci95",
        "episodes",
        "n_way",
        "k_shot",
    }
    assert set(figures["open_set"]) == OPEN_KEYS
    frozen_open = figures["open_set"]["methods"]["frozen"]
    assert set(frozen_open) == {
        "unknown",
        "ood",
        "decision_rates",
        "thresholds",
        "known_species_correct",
        "placement",
    }
    assert set(frozen_open["placement"]) == {"genus", "family"}
    assert set(frozen_open["placement"]["genus"]) == {
        "queries",
        "in_collection",
        "placed",
        "coverage",
        "precision",
        "ece",
    }
    assert set(frozen_open["ood"]) == {"drawings"}
    assert set(frozen_open["decision_rates"]) == {"known", "unknown", "ood:drawings"}
    assert figures["open_set"]["methods"]["probe"]["decision_rates"] is None


def test_evaluate_figures_are_sane_on_separable_synthetic_species(evaluated):
    _, figures, _ = evaluated
    frozen = figures["closed_set"]["methods"]["frozen"]
    assert 0.6 <= frozen["accuracy"] <= 1.0
    assert frozen["top5_accuracy"] == 1.0
    assert frozen["specimen_accuracy"] is not None  # two views per specimen are fused
    drawings = figures["open_set"]["methods"]["frozen"]["ood"]["drawings"]
    assert drawings["auroc"] > 0.9 and drawings["queries"] == 6


def test_evaluate_report_is_self_contained_with_every_plot(evaluated):
    _, _, base = evaluated
    report = base / "report"
    html = (report / "index.html").read_text()
    for name in (
        "confusion_frozen.png",
        "per_species_f1.png",
        "reliability.png",
        "scores.png",
        "prototypes.png",
    ):
        assert (report / name).stat().st_size > 1000
        assert f'src="{name}"' in html
    # every species has 5 specimens, so the same number of enrolled images: nothing to compare
    assert 'src="f1_vs_images.png"' not in html
    assert "Not drawn: every species has the same number of enrolled images" in html
    assert (report / "evaluation.json").is_file()
    assert "http://" not in html and "https://" not in html and "<script" not in html


def test_evaluate_errors_are_one_line(tmp_path, generated_collection, capsys):
    assert main(["evaluate", str(tmp_path / "missing")]) == 2
    assert main(["evaluate", str(generated_collection), "--classes", "novel"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("shellid: error:") for line in err)
    assert "needs --model" in err[1]


def test_evaluate_rejects_bad_option_values(generated_collection):
    with pytest.raises(SystemExit):
        main(["evaluate", str(generated_collection), "--unknown-fraction", "1.5"])
    with pytest.raises(SystemExit):
        main(["evaluate", str(generated_collection), "--shots", "0"])


def test_evaluate_two_species_skips_open_set_but_reports_the_rest(tmp_path):
    from index.workflows.evaluation import EvaluationConfig, evaluate_collection
    from index.workflows.evaluation.report import write_report
    from tests.conftest import GENERATED_SPECIES, make_collection

    two = dict(list(GENERATED_SPECIES.items())[:2])
    root = make_collection(tmp_path / "two", species=two, specimens=3)
    config = EvaluationConfig(
        group_pattern="specimen", shots=(1,), episodes=5, allway_repeats=2, bootstrap_resamples=50
    )
    result = evaluate_collection(root, None, config, cache_dir=tmp_path / "cache", progress=False)
    assert result.figures["open_set"] == {"error": "open-set figures need at least 3 species"}
    assert result.figures["closed_set"]["methods"]["frozen"]["accuracy"] >= 0.5
    html = write_report(result, tmp_path / "report").read_text()
    assert "open-set figures need at least 3 species" in html
