"""Figures of the evaluation report (matplotlib, Agg backend; each function writes one PNG).

Every function takes plain data from
:class:`index.workflows.evaluation.runner.EvaluationResult` and a path, draws, saves and
closes the figure, and returns the path.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

#: a colour per method, by its JSON name and by the name the report shows (report.shown)
COLOURS = {
    "model": "#1f77b4",
    "frozen": "#ff7f0e",
    "probe": "#2ca02c",
    "your model": "#1f77b4",
    "backbone": "#ff7f0e",
}
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
    method's F1; the legend sits above the axes, never on a bar."""
    methods = list(bootstrap)
    first = bootstrap[methods[0]]["per_species_f1"]
    species = sorted(first, key=lambda s: (first[s]["value"], s))
    n, m = len(species), len(methods)
    height = min(max(3.0, 0.22 * n * max(1, m / 1.5) + 1.2), 40)
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
    ax.set_ylim(-0.6, n - 0.4)
    ax.set_xlim(0, 1.02)
    ax.set_xlabel("F1 (bars: 95 % bootstrap interval)")
    ax.set_title("Per-species F1 on the test split", pad=26)
    ax.legend(loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=m, frameon=False, borderaxespad=0.2)
    return _save(fig, path)


def f1_vs_images_skip_reason(train_counts: Mapping[str, int]) -> str | None:
    """Why "F1 versus images per species" would say nothing for these enrolled-image counts
    (None when it can be drawn): it needs species with different numbers of images."""
    counts = set(train_counts.values())
    if not counts:
        return "no species has enrolled images"
    if len(counts) == 1:
        (n,) = counts
        return (
            f"every species has the same number of enrolled images ({n}), so F1 cannot be "
            "compared across image counts"
        )
    return None


#: Above this ratio of the largest to the smallest image count the x axis is logarithmic.
LOG_AXIS_RATIO = 20.0


def f1_vs_images_plot(
    per_species: Mapping[str, Mapping[str, Mapping]], train_counts: Mapping[str, int], path: Path
) -> Path:
    """Per-species F1 against enrolled (training) images of the species, per method.

    Plain integer ticks; a log axis only when the counts span more than
    :data:`LOG_AXIS_RATIO` times. Methods are dodged sideways, not jittered at random. Call
    :func:`f1_vs_images_skip_reason` first: with a single count there is nothing to show.
    """
    from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

    fig, ax = plt.subplots(figsize=(7, 4.5))
    values = [c for c in train_counts.values() if c > 0]
    low, high = min(values), max(values)
    log = high / low > LOG_AXIS_RATIO
    methods = list(per_species)
    for k, (method, table) in enumerate(per_species.items()):
        species = [s for s in table if s in train_counts]
        x = np.array([train_counts[s] for s in species], dtype=float)
        y = np.array([table[s]["f1"] for s in species])
        offset = (k - (len(methods) - 1) / 2) * 0.06
        dodged = x * (1 + offset) if log else x + offset * max(1.0, (high - low) / 4)
        ax.scatter(dodged, y, s=22, alpha=0.75, color=_colour(method), label=method)
    if log:
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("enrolled images of the species (log scale)")
    else:
        ax.xaxis.set_major_locator(MaxNLocator(nbins=8, integer=True))
        pad = max(0.6, 0.06 * (high - low))
        ax.set_xlim(low - pad, high + pad)
        ax.set_xlabel("enrolled images of the species")
    ax.set_ylabel("F1 on the test split")
    ax.set_ylim(-0.03, 1.03)
    ax.set_title("F1 versus images per species", pad=26)
    ax.grid(alpha=0.3)
    ax.legend(
        loc="lower left",
        bbox_to_anchor=(0.0, 1.0),
        ncol=len(methods),
        frameon=False,
        borderaxespad=0.2,
    )
    return _save(fig, path)


#: Reliability bins with fewer test images than this are drawn hatched and pale: their
#: accuracy is too noisy to read.
SPARSE_BIN = 5


def _reliability_panel(ax: Any, method: str, data: Mapping, ece: float) -> None:
    """One method's reliability bars, dots and counts on ``ax``."""
    edges = np.asarray(data["bin_edges"], dtype=float)
    conf = np.asarray(data["confidence"], dtype=float)
    acc = np.asarray(data["accuracy"], dtype=float)
    count = np.asarray(data["count"], dtype=int)
    width = np.diff(edges)
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1)
    for b in np.flatnonzero(count > 0):
        sparse = count[b] < SPARSE_BIN
        ax.bar(
            edges[b],
            acc[b],
            width=width[b],
            align="edge",
            color=_colour(method),
            alpha=0.3 if sparse else 0.8,
            hatch="///" if sparse else None,
            edgecolor="white" if not sparse else _colour(method),
            linewidth=0.8,
        )
        ax.plot(conf[b], acc[b], "o", color="black", markersize=3)
        ax.annotate(  # above the bar and its dot; the axes leave room up to 1.2
            str(count[b]),
            (edges[b] + width[b] / 2, acc[b]),
            xytext=(0, 4),
            textcoords="offset points",
            ha="center",
            va="bottom",
            fontsize=7,
            rotation=90 if len(width) > 12 and count[b] >= 100 else 0,
        )
    total = int(count.sum())
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.2)
    ax.set_yticks(np.linspace(0, 1, 6))
    ax.set_xlabel("confidence (top-1 probability)")
    ax.set_title(
        f"{method}: calibration error {100 * ece:.1f} %, {total} test images",
        fontsize=10,
    )


def _reliability_legend() -> list[Any]:
    """The legend entries of :func:`reliability_plot`."""
    from matplotlib.patches import Patch

    return [
        Patch(facecolor="#888888", alpha=0.8, label="bin (number: its test images)"),
        Patch(
            facecolor="#888888",
            alpha=0.3,
            hatch="///",
            edgecolor="#888888",
            label=f"fewer than {SPARSE_BIN} images: too few to read",
        ),
        plt.Line2D([0], [0], color="grey", linestyle="--", label="perfect calibration"),
        plt.Line2D(
            [0],
            [0],
            marker="o",
            color="black",
            linestyle="none",
            markersize=3,
            label="mean confidence of the bin",
        ),
    ]


def reliability_plot(
    reliability: Mapping[str, Mapping], eces: Mapping[str, float], path: Path
) -> Path:
    """Reliability diagram, one panel per method: one bar per confidence bin (height: accuracy
    of its test images), never joined to its neighbours, with the bin's image count written on
    it; bins under :data:`SPARSE_BIN` images are hatched and pale; a dot marks the bin's mean
    confidence, which lies on the diagonal when the probabilities can be read as chances."""
    methods = list(reliability)
    fig, axes = plt.subplots(
        1, len(methods), figsize=(5.2 * len(methods), 4.8), squeeze=False, sharey=True
    )
    for ax, method in zip(axes[0], methods, strict=True):
        _reliability_panel(ax, method, reliability[method], eces[method])
    axes[0, 0].set_ylabel("accuracy of the bin")
    fig.legend(
        handles=_reliability_legend(),
        loc="upper center",
        bbox_to_anchor=(0.5, 0.0),
        ncol=2,
        frameon=False,
        fontsize=8,
    )
    fig.suptitle("Reliability of the probabilities", y=1.0)
    fig.tight_layout()
    return _save(fig, path)


def score_histograms_plot(
    scores: Mapping[str, Mapping[str, Mapping[str, np.ndarray]]], path: Path
) -> Path:
    """Histograms of the unknown-species and off-domain scores of known, unknown and
    off-domain queries, one row per method. The probe has a single score (1 − its top
    probability), so its row has one panel, not the same histogram twice. One legend for the
    figure, under the panels (the query sets and colours are the same in every panel)."""
    from matplotlib.patches import Patch

    methods = list(scores)
    fig, axes = plt.subplots(len(methods), 2, figsize=(11, 3.2 * len(methods)), squeeze=False)
    palette = ["#1f77b4", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf"]
    legend: dict[str, str] = {}
    for row, method in enumerate(methods):
        sets = scores[method]
        kinds = ("unknown",) if method == "probe" else ("unknown", "ood")
        if len(kinds) == 1:
            axes[row, 1].remove()
        for col, kind in enumerate(kinds):
            ax = axes[row, col]
            values = [np.asarray(v[kind], dtype=float) for v in sets.values()]
            finite = np.concatenate([v[np.isfinite(v)] for v in values]) if values else np.zeros(1)
            bins = np.linspace(finite.min(), finite.max() + 1e-9, 40) if finite.size else 20
            for k, (name, query_set) in enumerate(sets.items()):
                v = np.asarray(query_set[kind], dtype=float)
                v = v[np.isfinite(v)]
                if v.size:
                    colour = palette[k % len(palette)]
                    ax.hist(v, bins=bins, density=True, alpha=0.45, color=colour)
                    legend.setdefault(f"{name.removeprefix('ood:')} ({v.size} queries)", colour)
            if method == "probe":
                label, title = "1 − max probability", "probe: its only novelty score"
            elif kind == "unknown":
                label, title = "unknown-species score", f"{method}: unknown species"
            else:
                label, title = "off-domain score", f"{method}: off-domain"
            ax.set_xlabel(f"{label} (higher = more novel)")
            ax.set_ylabel("density")
            ax.set_title(title)
    fig.tight_layout()
    fig.legend(
        handles=[Patch(facecolor=c, alpha=0.45, label=n) for n, c in legend.items()],
        loc="upper center",
        bbox_to_anchor=(0.5, 0.0),
        ncol=min(len(legend), 4) or 1,
        frameon=False,
    )
    return _save(fig, path)


def prototype_groups(prototypes: Mapping) -> tuple[list[str], str] | None:
    """The groups colouring the prototype map and their kind (family, else genus), or None
    when colour would say nothing: no taxonomy, every group holds a single species, or every
    species is in one group."""
    family = [f or "" for f in prototypes["family"]]
    genus = [g or "" for g in prototypes["genus"]]
    for groups, kind in ((family, "family"), (genus, "genus")):
        named = [g for g in groups if g]
        if 2 <= len(set(groups)) < len(groups) and len(set(named)) < len(named):
            return groups, kind
    return None


def prototype_map_plot(prototypes: Mapping, path: Path, seed: int = 0) -> Path:
    """2-D t-SNE map of species prototypes, one panel per embedding, coloured by family (or
    genus) when some family (genus) holds several species; every point carries its species
    name when there are at most 40, and the colour legend sits beside the panels."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    species = list(prototypes["species"])
    grouping = prototype_groups(prototypes)
    groups, group_kind = grouping if grouping else ([""] * len(species), "")
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
            colour = colour_of[g] if grouping else "#1f77b4"
            ax.scatter(xy[idx, 0], xy[idx, 1], s=40, color=colour, label=g or "(none)")
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
        ax.margins(0.12)
        ax.set_title(f"{embedding}: species prototypes ({method})")
        ax.set_xticks([])
        ax.set_yticks([])
    if grouping and len(names) <= 25:
        fig.legend(
            *axes[0, 0].get_legend_handles_labels(),
            title=group_kind,
            fontsize=7,
            loc="center left",
            bbox_to_anchor=(1.0, 0.5),
            frameon=False,
        )
    return _save(fig, path)
