"""Figures of the evaluation report (matplotlib, Agg backend; each function writes one PNG).

Every function takes plain data from :class:`index.evaluation.runner.EvaluationResult` and a
path, draws, saves and closes the figure, and returns the path.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

COLOURS = {"model": "#1f77b4", "frozen": "#ff7f0e", "probe": "#2ca02c"}
DPI = 110


def _colour(name: str) -> str:
    return COLOURS.get(name, "#7f7f7f")


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return path


def _short(name: str, width: int = 28) -> str:
    name = name.replace("_", " ")
    return name if len(name) <= width else name[: width - 1] + "…"


def confusion_matrix_plot(
    species: Sequence[str], counts: Sequence[Sequence[int]], path: Path, title: str
) -> Path:
    """Row-normalised confusion matrix (share of each true species' test images)."""
    matrix = np.asarray(counts, dtype=np.float64)
    totals = matrix.sum(axis=1, keepdims=True)
    shares = np.divide(matrix, totals, out=np.zeros_like(matrix), where=totals > 0)
    n = len(species)
    size = min(4 + 0.28 * n, 22)
    fig, ax = plt.subplots(figsize=(size, size))
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of true species")
    if n <= 60:
        labels = [_short(s) for s in species]
        ax.set_xticks(range(n), labels, rotation=90, fontsize=7 if n > 25 else 9)
        ax.set_yticks(range(n), labels, fontsize=7 if n > 25 else 9)
    if n <= 15:
        for i in range(n):
            for j in range(n):
                if matrix[i, j]:
                    colour = "white" if shares[i, j] > 0.5 else "black"
                    ax.text(
                        j,
                        i,
                        str(int(matrix[i, j])),
                        ha="center",
                        va="center",
                        color=colour,
                        fontsize=8,
                    )
    ax.set_xlabel("predicted species")
    ax.set_ylabel("true species")
    ax.set_title(title)
    return _save(fig, path)


def per_species_f1_plot(bootstrap: Mapping[str, Mapping], path: Path) -> Path:
    """Per-species F1 with 95 % bootstrap intervals, one bar per method, sorted by the first
    method's F1."""
    methods = list(bootstrap)
    first = bootstrap[methods[0]]["per_species_f1"]
    species = sorted(first, key=lambda s: (first[s]["value"], s))
    n, m = len(species), len(methods)
    height = min(max(3.0, 0.22 * n * max(1, m / 1.5) + 1.0), 40)
    fig, ax = plt.subplots(figsize=(8, height))
    bar = 0.8 / m
    for k, method in enumerate(methods):
        table = bootstrap[method]["per_species_f1"]
        values = np.array([table.get(s, {}).get("value", np.nan) for s in species])
        low = np.array([table.get(s, {}).get("low", np.nan) for s in species])
        high = np.array([table.get(s, {}).get("high", np.nan) for s in species])
        y = np.arange(n) + (k - (m - 1) / 2) * bar
        ax.barh(y, values, height=bar, color=_colour(method), label=method, alpha=0.85)
        ax.errorbar(
            values,
            y,
            xerr=[values - low, high - values],
            fmt="none",
            ecolor="black",
            elinewidth=0.8,
            capsize=1.5,
        )
    ax.set_yticks(range(n), [_short(s) for s in species], fontsize=7 if n > 30 else 9)
    ax.set_xlim(0, 1.02)
    ax.set_xlabel("F1 (bars: 95 % bootstrap interval)")
    ax.set_title("Per-species F1 on the test split")
    ax.legend(loc="lower right")
    return _save(fig, path)


def f1_vs_images_plot(
    per_species: Mapping[str, Mapping[str, Mapping]], train_counts: Mapping[str, int], path: Path
) -> Path:
    """Per-species F1 against enrolled (training) images of the species, per method."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    rng = np.random.default_rng(0)
    for method, table in per_species.items():
        species = [s for s in table if s in train_counts]
        x = np.array([train_counts[s] for s in species], dtype=float)
        y = np.array([table[s]["f1"] for s in species])
        jitter = x * (1 + rng.uniform(-0.03, 0.03, size=len(x)))
        ax.scatter(jitter, y, s=18, alpha=0.7, color=_colour(method), label=method)
    ax.set_xscale("log")
    ax.set_xlabel("enrolled images of the species (log scale)")
    ax.set_ylabel("F1 on the test split")
    ax.set_ylim(-0.03, 1.03)
    ax.set_title("F1 versus images per species")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def reliability_plot(
    reliability: Mapping[str, Mapping], eces: Mapping[str, float], path: Path
) -> Path:
    """Reliability diagram: accuracy against mean confidence per bin, per method, with ECE."""
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect calibration")
    for method, data in reliability.items():
        conf = np.asarray(data["confidence"], dtype=float)
        acc = np.asarray(data["accuracy"], dtype=float)
        used = np.asarray(data["count"]) > 0
        ax.plot(
            conf[used],
            acc[used],
            marker="o",
            color=_colour(method),
            label=f"{method} (ECE {100 * eces[method]:.1f} %)",
        )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (top-1 probability)")
    ax.set_ylabel("accuracy")
    ax.set_title("Reliability of the probabilities")
    ax.legend(loc="upper left", fontsize=8)
    return _save(fig, path)


def score_histograms_plot(
    scores: Mapping[str, Mapping[str, Mapping[str, np.ndarray]]], path: Path
) -> Path:
    """Histograms of the unknown-species and off-domain scores of known, unknown and
    off-domain queries, one row per method."""
    methods = list(scores)
    fig, axes = plt.subplots(len(methods), 2, figsize=(11, 3.2 * len(methods)), squeeze=False)
    palette = ["#1f77b4", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf"]
    for row, method in enumerate(methods):
        sets = scores[method]
        for col, kind in enumerate(("unknown", "ood")):
            ax = axes[row, col]
            values = [np.asarray(v[kind], dtype=float) for v in sets.values()]
            finite = np.concatenate([v[np.isfinite(v)] for v in values]) if values else np.zeros(1)
            bins = np.linspace(finite.min(), finite.max() + 1e-9, 40) if finite.size else 20
            for k, (name, query_set) in enumerate(sets.items()):
                v = np.asarray(query_set[kind], dtype=float)
                v = v[np.isfinite(v)]
                if v.size:
                    ax.hist(
                        v,
                        bins=bins,
                        density=True,
                        alpha=0.45,
                        color=palette[k % len(palette)],
                        label=f"{name.removeprefix('ood:')} ({v.size})",
                    )
            label = "unknown-species score" if kind == "unknown" else "off-domain score"
            if method == "probe":
                label = "1 − max probability"
            ax.set_xlabel(f"{label} (higher = more novel)")
            ax.set_ylabel("density")
            ax.set_title(f"{method}: {'unknown species' if kind == 'unknown' else 'off-domain'}")
            ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def prototype_map_plot(prototypes: Mapping, path: Path, seed: int = 0) -> Path:
    """2-D t-SNE map of species prototypes, coloured by family (or genus when no family is
    known), one panel per embedding."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    species = list(prototypes["species"])
    family = [f or "" for f in prototypes["family"]]
    genus = [g or "" for g in prototypes["genus"]]
    groups, group_kind = (family, "family") if any(family) else (genus, "genus")
    names = sorted(set(groups))
    cmap = plt.get_cmap("tab20" if len(names) > 10 else "tab10")
    colour_of = {g: cmap(i % cmap.N) for i, g in enumerate(names)}
    panels = prototypes["vectors"]
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 6), squeeze=False)
    for ax, (embedding, vectors) in zip(axes[0], panels.items(), strict=True):
        x = np.asarray(vectors, dtype=np.float64)
        if len(x) >= 5:
            perplexity = float(min(30.0, max(2.0, (len(x) - 1) / 3)))
            xy = TSNE(
                2, perplexity=perplexity, init="pca", random_state=seed, metric="cosine"
            ).fit_transform(x)
            method = "t-SNE"
        else:
            xy = PCA(2, random_state=seed).fit_transform(x)
            method = "PCA"
        for g in names:
            idx = [i for i, v in enumerate(groups) if v == g]
            ax.scatter(xy[idx, 0], xy[idx, 1], s=40, color=colour_of[g], label=g or "(none)")
        if len(species) <= 40:
            for i, s in enumerate(species):
                ax.annotate(
                    _short(s, 22),
                    xy[i],
                    fontsize=7,
                    alpha=0.8,
                    xytext=(3, 3),
                    textcoords="offset points",
                )
        ax.set_title(f"{embedding}: species prototypes ({method})")
        ax.set_xticks([])
        ax.set_yticks([])
    if len(names) <= 25:
        axes[0, -1].legend(
            title=group_kind, fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5)
        )
    return _save(fig, path)
