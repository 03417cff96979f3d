"""The HTML report of ``shellid evaluate --report DIR``: one self-contained page (no CDN,
no scripts) with the PNG figures and ``evaluation.json`` written beside it; readable on a
390 px phone screen (wide tables scroll inside their own box)."""

from __future__ import annotations

import math
from pathlib import Path

from jinja2 import Environment, PackageLoader, select_autoescape

from index.results import DECISIONS

from . import plots
from .runner import EvaluationResult

#: The figures as JSON, written beside the page (the same content as ``--json FILE``).
JSON_NAME = "evaluation.json"


def pct(value: float | None, digits: int = 1) -> str:
    """``0.1234`` -> ``"12.3 %"``; missing values as an en dash."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{100 * value:.{digits}f} %"


def _interval(entry: dict | None) -> str:
    if not entry:
        return "–"
    return f"{pct(entry['value'])} [{100 * entry['low']:.1f}–{100 * entry['high']:.1f}]"


def _episode(entry: dict | None) -> str:
    if not entry:
        return "–"
    return f"{pct(entry['mean'])} ± {100 * entry['ci95']:.1f}"


Rows = list[tuple[str, list[str]]]


def _closed_set_rows(f: dict, methods: list[str]) -> Rows:
    closed = f["closed_set"]["methods"]
    return [
        (
            "accuracy (top-1) [95 % CI]",
            [_interval(closed[m]["bootstrap"]["accuracy"]) for m in methods],
        ),
        ("top-5 accuracy", [pct(closed[m]["top5_accuracy"]) for m in methods]),
        ("specimen accuracy (views fused)", [pct(closed[m]["specimen_accuracy"]) for m in methods]),
        ("macro F1 [95 % CI]", [_interval(closed[m]["bootstrap"]["macro_f1"]) for m in methods]),
        (
            "macro precision / recall",
            [
                f"{pct(closed[m]['macro']['precision'])} / {pct(closed[m]['macro']['recall'])}"
                for m in methods
            ],
        ),
        ("weighted F1", [pct(closed[m]["weighted"]["f1"]) for m in methods]),
        ("calibration error (ECE)", [pct(closed[m]["ece"]) for m in methods]),
    ]


def _few_shot_rows(f: dict, methods: list[str]) -> Rows:
    rows: Rows = []
    for kind in ("episodic", "all_way"):
        for k, entry in f["few_shot"][kind].items():
            if kind == "episodic":
                label = f"{entry['n_way']}-way {k}-shot episodes"
            else:
                label = f"all-way ({entry.get('n_way', '?')} species) {k}-shot"
            values = entry.get("methods") or {}
            missing = entry.get("error", "–")
            rows.append((label, [_episode(values.get(m)) if values else missing for m in methods]))
    return rows


def _open_set_rows(f: dict, methods: list[str]) -> Rows:
    if "error" in f["open_set"]:
        return [("open set", [f["open_set"]["error"]] * len(methods))]
    open_set = f["open_set"]["methods"]
    recall = round(100 * f["open_set"]["target_recall"])
    rows: Rows = [
        ("unknown species: AUROC", [pct(open_set[m]["unknown"]["auroc"]) for m in methods]),
        (
            f"unknown species: FPR at {recall} % recall",
            [pct(open_set[m]["unknown"]["fpr_at_recall"]) for m in methods],
        ),
    ]
    for rank in ("genus", "family"):
        placed = {m: open_set[m].get("placement", {}).get(rank) for m in methods}
        if not any(placed.values()):
            continue
        for key, label in (
            ("coverage", "placed"),
            ("precision", "right"),
            ("ece", "calibration error"),
        ):
            rows.append(
                (
                    f"unknown species: {label} in their {rank}",
                    [pct(v[key]) if v else "–" for v in placed.values()],
                )
            )
    for folder in f["open_set"]["ood_queries"]:
        ood = [open_set[m]["ood"][folder] for m in methods]
        rows.append((f"off-domain {folder}: AUROC", [pct(o["auroc"]) for o in ood]))
        at_recall = [pct(o["fpr_at_recall"]) for o in ood]
        rows.append((f"off-domain {folder}: FPR at {recall} % recall", at_recall))
    return rows


def summary_rows(f: dict) -> Rows:
    """The side-by-side summary table: one row per figure, one column per method."""
    methods = list(f["methods"])
    return _closed_set_rows(f, methods) + _few_shot_rows(f, methods) + _open_set_rows(f, methods)


#: what each method is, in words: (the name the page shows, one sentence)
METHOD_WORDS = {
    "model": (
        "your model",
        "shellid's identifier (as the service answers: each species' mean photo, calibrated "
        "probabilities and rejections) on the embeddings of the model given with --model.",
    ),
    "frozen": (
        "backbone",
        "the same identifier on the pretrained backbone as shipped, with no training of yours: "
        "the baseline a trained model should beat.",
    ),
    "probe": (
        "probe",
        "a logistic regression fitted on the embeddings of the enrolled photos: the standard "
        "yardstick of papers on image embeddings. It only ranks species; it cannot say "
        "'not in the collection'.",
    ),
}

#: the decisions as the page names them (the service's words, index.results.DECISIONS keys)
DECISION_WORDS = {
    "species": "species named",
    "genus": "genus named",
    "family": "family named",
    "uncertain": "uncertain",
    "unknown_species": "not in the collection",
    "out_of_domain": "not like the collection",
}

#: one line per kind of figure of the summary: (text its label contains, term, meaning)
GLOSSARY: tuple[tuple[str, str, str], ...] = (
    (
        "accuracy (top-1)",
        "accuracy",
        "share of test photos whose most likely species is the right one. [95 % CI]: the "
        "range the figure would likely fall in with other photos of the same species "
        "(bootstrap).",
    ),
    (
        "top-5 accuracy",
        "top-5 accuracy",
        "share of test photos whose right species is among the five most likely.",
    ),
    (
        "specimen accuracy",
        "specimen accuracy",
        "the same for whole specimens: all photos of one specimen (its views) answered together.",
    ),
    (
        "macro F1",
        "F1",
        "combines precision and recall (their harmonic mean); macro: averaged over species, "
        "so a rare species counts as much as a common one.",
    ),
    (
        "macro precision",
        "precision / recall",
        "precision: of the photos named species X, the share that show X; recall: of the "
        "photos of X, the share named X.",
    ),
    ("weighted F1", "weighted F1", "F1 averaged over species, each weighted by its photos."),
    (
        "calibration error (ECE)",
        "calibration error (ECE)",
        "how far the probabilities shown are from how often they are right (expected "
        "calibration error); 0 % means a shown 80 % is right 80 % of the time.",
    ),
    (
        "all-way",
        "all-way K-shot",
        "one test with every species at once, each enrolled from only K photos.",
    ),
    (
        "-shot episodes",
        "N-way K-shot episodes",
        "many small tests with N species, each enrolled from only K photos (mean ± 95 % "
        "interval): how well a species is named from a few photos.",
    ),
    (
        " in their ",
        "placed / right in their genus or family",
        "placed: share of never-enrolled-species photos given a genus (family); right: share "
        "of those placements that are correct; calibration error as above.",
    ),
    (
        ": AUROC",
        "AUROC",
        "how well the scores tell photos of never-enrolled species (or off-domain photos) from "
        "photos of enrolled species: 100 % always, 50 % no better than chance (area under the "
        "ROC curve).",
    ),
    (
        ": FPR",
        "FPR at N % recall",
        "false-positive rate: share of never-enrolled-species (or off-domain) photos still "
        "named as an enrolled species when the thresholds keep N % (recall) of the "
        "enrolled-species photos; lower is better.",
    ),
    (
        "off-domain ",
        "off-domain FOLDER",
        "photos of a folder given with --ood that do not show the subject at all (rocks, "
        "drawings...): the service should answer them 'not like the collection'.",
    ),
)


def glossary(rows: list[tuple[str, list[str]]]) -> list[tuple[str, str]]:
    """``(term, meaning)`` for each kind of figure the summary shows, in its order."""
    out: list[tuple[str, str]] = []
    for label, _ in rows:
        for part, term, meaning in GLOSSARY:
            if part in label and (term, meaning) not in out:
                out.append((term, meaning))
    return out


def shown(method: str) -> str:
    """The name the page and its figures give a method (or embedding): "your model",
    "backbone", "probe"."""
    return METHOD_WORDS.get(method, (method, ""))[0]


def method_words(f: dict) -> dict[str, tuple[str, str]]:
    """Each method's shown name and sentence; the probe's says which embedding it used."""
    out = {}
    for name, described in f["methods"].items():
        label, sentence = METHOD_WORDS.get(name, (name, described.get("classifier", "")))
        if name == "probe":
            on = METHOD_WORDS.get(described.get("embedding", ""), ("", ""))[0]
            sentence = sentence.replace(
                "the embeddings", f"the {on} embeddings" if on else "the embeddings"
            )
        out[name] = (label, sentence)
    return out


def _per_species_rows(f: dict) -> list[dict]:
    methods = list(f["methods"])
    closed = f["closed_set"]["methods"]
    first = closed[methods[0]]["per_species"]
    out = []
    for species in sorted(first):
        values = [_interval(closed[m]["bootstrap"]["per_species_f1"].get(species)) for m in methods]
        out.append({"species": species, "support": first[species]["support"], "cells": values})
    return out


def write_report(
    result: EvaluationResult, directory: str | Path, json_path: str | Path | None = None
) -> Path:
    """Write ``index.html``, its PNG figures and ``evaluation.json`` (every figure, the same
    JSON as ``--json``) into ``directory``; returns the page's path. ``json_path``: where
    ``--json`` wrote the figures too, named on the page.

    Every figure is drawn only when it can say something for this data; a figure that cannot
    is listed with the reason instead of an image.
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    figures = (
        _confusion_figures(result, out)
        + _closed_set_figures(result, out)
        + _open_set_figures(result, out)
    )
    (out / JSON_NAME).write_text(result.to_json(), encoding="utf-8")
    json_elsewhere = None
    if json_path is not None and Path(json_path).resolve() != (out / JSON_NAME).resolve():
        json_elsewhere = str(json_path)
    env = Environment(
        loader=PackageLoader("index.workflows.evaluation", "templates"),
        autoescape=select_autoescape(["html", "j2"]),
    )
    env.globals["pct"] = pct
    f = result.figures
    summary = summary_rows(f)
    words = method_words(f)
    html = env.get_template("evaluation.html.j2").render(
        f=f,
        methods=list(f["methods"]),
        labels={name: label for name, (label, _) in words.items()},
        method_words=words,
        glossary=glossary(summary),
        decision_words=DECISION_WORDS,
        summary=summary,
        decisions=DECISIONS,
        figures=figures,
        per_species=_per_species_rows(f),
        json_name=JSON_NAME,
        json_elsewhere=json_elsewhere,
    )
    page = out / "index.html"
    page.write_text(html, encoding="utf-8")
    return page


def _figure(id_: str, title: str, file: str | None, caption: str) -> dict:
    """One entry of the page's figure list (``file`` None: not drawn, the caption says why)."""
    return {"id": id_, "title": title, "file": file, "caption": caption}


def _confusion_figures(result: EvaluationResult, out: Path) -> list[dict]:
    """A confusion matrix per identifier (the probe has its own numbers in the tables)."""
    f = result.figures
    closed = f["closed_set"]["methods"]
    figures = []
    for m, described in f["methods"].items():
        if "VectorIdentifier" not in described["classifier"]:
            continue
        cm = closed[m]["confusion_matrix"]
        title = f"Confusion matrix — {METHOD_WORDS.get(m, (m, ''))[0]}"
        plots.confusion_matrix_plot(cm["species"], cm["counts"], out / f"confusion_{m}.png", title)
        figures.append(
            _figure(
                f"confusion-{m}",
                title,
                f"confusion_{m}.png",
                "Rows: true species; colour: share of its test images; numbers: counts.",
            )
        )
    return figures


def _closed_set_figures(result: EvaluationResult, out: Path) -> list[dict]:
    """Per-species F1, F1 versus enrolled images (when counts differ) and reliability."""
    f, p = result.figures, result.plots
    closed = f["closed_set"]["methods"]
    methods = list(f["methods"])
    plots.per_species_f1_plot(
        {shown(m): closed[m]["bootstrap"] for m in methods}, out / "per_species_f1.png"
    )
    figures = [
        _figure(
            "per-species-f1",
            "Per-species F1",
            "per_species_f1.png",
            "Test-split F1 of each species with its 95 % bootstrap interval.",
        )
    ]
    skipped = plots.f1_vs_images_skip_reason(p["train_counts"])
    if skipped:
        figures.append(
            _figure("f1-vs-images", "F1 versus images per species", None, f"Not drawn: {skipped}.")
        )
    else:
        plots.f1_vs_images_plot(
            {shown(m): closed[m]["per_species"] for m in methods},
            p["train_counts"],
            out / "f1_vs_images.png",
        )
        figures.append(
            _figure(
                "f1-vs-images",
                "F1 versus images per species",
                "f1_vs_images.png",
                "Does a species need more enrolled photos? Each dot is one species, "
                "placed by its enrolled (training-split) images.",
            )
        )
    plots.reliability_plot(
        {shown(m): closed[m]["reliability"] for m in methods},
        {shown(m): closed[m]["ece"] for m in methods},
        out / "reliability.png",
    )
    figures.append(
        _figure(
            "reliability",
            "Reliability diagram",
            "reliability.png",
            "The test images grouped by their top-1 probability (for the identifier, "
            "the answers that show one: not 'not in the collection' or 'not like the "
            "collection'): each bar is one "
            "bin, its height the bin's accuracy, the number above it the bin's images; hatched "
            f"bins hold fewer than {plots.SPARSE_BIN} images and say little. Where the bars "
            "reach the diagonal the probabilities can be read as chances.",
        )
    )
    return figures


def _open_set_figures(result: EvaluationResult, out: Path) -> list[dict]:
    """Open-set score histograms and the map of species prototypes, when measured."""
    f, p = result.figures, result.plots
    figures = []
    if p.get("scores"):
        plots.score_histograms_plot(
            {shown(m): scores for m, scores in p["scores"].items()}, out / "scores.png"
        )
        figures.append(
            _figure(
                "scores",
                "Open-set scores",
                "scores.png",
                "Scores of known-species test queries, never-enrolled species and "
                "off-domain folders; well-separated histograms mean easy rejection.",
            )
        )
    if p.get("prototypes"):
        prototypes = {
            **p["prototypes"],
            "vectors": {shown(e): v for e, v in p["prototypes"]["vectors"].items()},
        }
        plots.prototype_map_plot(prototypes, out / "prototypes.png", seed=f["config"]["seed"])
        grouping = plots.prototype_groups(p["prototypes"])
        colour = (
            f"coloured by {grouping[1]}: related species should sit together"
            if grouping
            else "in one colour: no family or genus here holds several species (or all of "
            "them are in one), so colour could not show related species (a taxonomy.csv with "
            "families would add them)"
        )
        figures.append(
            _figure(
                "prototypes",
                "Map of species prototypes",
                "prototypes.png",
                f"t-SNE (PCA under 5 species) of each species' mean embedding, "
                f"{colour}. Distances on such a map are only roughly meaningful.",
            )
        )
    return figures
