"""Few-shot figures: episodic N-way K-shot accuracy for prototypes *and* a logistic-regression
probe on identical episodes, and all-way K-shot through any classifier.

Episodes are drawn exactly as :func:`embedder.episodes.episodic_accuracy` draws them (same
seed, same episodes), so the prototype figures here equal that function's.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import numpy as np
from sklearn.linear_model import LogisticRegression

from embedder.episodes import EpisodeResult, cl2n, sample_episodes, summarize
from embedder.vectors import l2_normalise


def prototype_predict(
    support: np.ndarray, support_way: np.ndarray, query: np.ndarray, center=None
) -> np.ndarray:
    """Nearest CL2N prototype (SimpleShot): class position of each query."""
    support, query = cl2n(support, query, center)
    ways = np.unique(support_way)
    prototypes = l2_normalise(np.stack([support[support_way == w].mean(axis=0) for w in ways]))
    return ways[(query @ prototypes.T).argmax(axis=1)]


def probe_predict(support: np.ndarray, support_way: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Logistic regression (L2, C=1) fitted on the L2-normalised supports."""
    support, query = l2_normalise(support), l2_normalise(query)
    if len(np.unique(support_way)) < 2:
        return np.full(len(query), support_way[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence chatter on tiny episodes
        probe = LogisticRegression(C=1.0, max_iter=1000)
        probe.fit(support, support_way)
    return probe.predict(query)


Predictor = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def episodic_accuracies(
    embeddings: dict[str, np.ndarray],
    methods: dict[str, tuple[str, Predictor]],
    labels: Sequence[str],
    groups: Sequence[str] | None,
    n_way: int,
    k_shot: int,
    n_query: int = 15,
    episodes: int = 600,
    seed: int = 0,
) -> dict[str, EpisodeResult]:
    """N-way K-shot accuracy (mean ± 95 % CI) of several methods on the *same* episodes.

    ``embeddings`` maps a name to an ``(n, d)`` array whose rows follow ``labels``;
    ``methods`` maps a method name to ``(embedding name, predict)``, where ``predict(support,
    support_way, query)`` returns the class position of each query.
    """
    accuracies: dict[str, list[float]] = {name: [] for name in methods}
    for episode in sample_episodes(labels, groups, n_way, k_shot, n_query, episodes, seed):
        support_idx = episode.support.reshape(-1)
        support_way = np.repeat(np.arange(n_way), k_shot)
        for name, (vectors_name, predict) in methods.items():
            x = embeddings[vectors_name]
            predicted = predict(x[support_idx], support_way, x[episode.query])
            accuracies[name].append(float((predicted == episode.query_way).mean()))
    return {name: summarize(values, n_way, k_shot) for name, values in accuracies.items()}
