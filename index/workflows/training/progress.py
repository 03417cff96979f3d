"""One fraction of a whole store training for ``on_progress(stage, fraction)``: each stage
owns a share of [0, 1] (:data:`SHARES`), the fraction never goes back."""

from __future__ import annotations

from collections.abc import Callable

#: the share of the job each stage takes, in order (measured on 2 CPU cores, roughly: the
#: features of new photos dominate a first training, the epochs a later one)
SHARES: dict[str, float] = {
    "reading the store": 0.02,
    "exporting photos": 0.05,
    "caching features": 0.33,
    "training": 0.45,
    "re-embedding the store": 0.15,
}


class JobProgress:
    """Reports ``(stage, fraction of the whole job)`` to ``on_progress`` (if any), monotonic."""

    def __init__(self, on_progress: Callable[[str, float], None] | None) -> None:
        self.on_progress = on_progress
        self.fraction = 0.0
        names = list(SHARES)
        self.starts = {name: sum(SHARES[n] for n in names[: names.index(name)]) for name in names}

    def report(self, part: str, done: float = 0.0, label: str | None = None) -> None:
        """``done`` (0..1) of stage ``part``, shown as ``label`` (default: the part)."""
        share = SHARES[part]
        fraction = self.starts[part] + share * min(1.0, max(0.0, done))
        self.fraction = max(self.fraction, min(1.0, fraction))
        if self.on_progress is not None:
            self.on_progress(label or part, self.fraction)

    def done(self, label: str = "done") -> None:
        self.fraction = 1.0
        if self.on_progress is not None:
            self.on_progress(label, 1.0)
