"""The docs' tables of registered backbones, profiles, heads, losses, species scorers and
open-set scores, generated from the registries (:class:`embedder.registry.Registry`).

``python docs/registries.py`` rewrites every block between ``<!-- registry:NAME ... -->`` and
``<!-- /registry:NAME -->`` in docs/; ``--check`` only reports the blocks that differ (exit 1).
tests/test_registries.py fails when a doc and its registry disagree.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from embedder.backbones import BACKBONES, TF_MEAN, TF_STD, OfflineWeights  # noqa: E402
from embedder.heads import HEADS  # noqa: E402
from embedder.losses import LOSSES  # noqa: E402
from embedder.profiles import PROFILES  # noqa: E402
from embedder.settings import DEFAULT_BACKBONE, LEGACY_BACKBONE  # noqa: E402
from embedder.transforms import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402
from index.open_set import OPEN_SET_SCORES  # noqa: E402
from index.scorers import SCORERS  # noqa: E402


def summary(entry: object) -> str:
    """The first paragraph of ``entry``'s docstring, on one line."""
    doc = (getattr(entry, "__doc__", None) or "").strip().split("\n\n")[0]
    return " ".join(doc.split()).replace("``", "`")


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join([*lines, *("| " + " | ".join(row) + " |" for row in rows)])


def _normalisation(weights: OfflineWeights) -> str:
    mean, std = tuple(weights.preprocess.mean), tuple(weights.preprocess.std)
    if (mean, std) == (tuple(TF_MEAN), tuple(TF_STD)):
        return "[-1, 1] (mean = std = 0.5)"
    if (mean, std) == (tuple(IMAGENET_MEAN), tuple(IMAGENET_STD)):
        return "ImageNet mean/std"
    return f"mean {mean}, std {std}"


def backbones() -> str:
    rows = []
    for name, weights in BACKBONES.items():
        cfg = weights.preprocess
        label = {DEFAULT_BACKBONE: " (**default**)", LEGACY_BACKBONE: " (legacy)"}.get(name, "")
        rows.append(
            [
                f"`{name}`{label}",
                f"`{weights.package}`",
                f"{cfg.input_size} px, crop {cfg.crop_pct:g}, {cfg.interpolation}",
                'TF "same"' if name.startswith("tf_") else "PyTorch symmetric",
                _normalisation(weights),
                weights.description,
            ]
        )
    return table(["name", "weights package", "input", "padding", "normalisation", "use"], rows)


def profiles() -> str:
    rows = [
        [
            f"`{name}`",
            " + ".join(f"`{m}`" for m in profile.members),
            profile.pooling,
            ", ".join(map(str, profile.stages)) or "none",
            "yes" if profile.flip else "no",
            profile.description,
        ]
        for name, profile in PROFILES.items()
    ]
    return table(["name", "members", "pooling", "earlier stages", "flip", "use"], rows)


def heads() -> str:
    rows = [[f"`{name}`", summary(factory)] for name, factory in HEADS.items()]
    return table(["`--head`", "projection"], rows)


def losses() -> str:
    rows = [[f"`{name}`", summary(factory)] for name, factory in LOSSES.items()]
    return table(["`--loss`", "loss (pytorch-metric-learning) and miner"], rows)


def scorers() -> str:
    rows = [[f"`{name}`", summary(factory)] for name, factory in SCORERS.items()]
    return table(["`SHELLID_METHOD`", "species score"], rows)


def open_set_scores() -> str:
    rows = [
        [f"`{name}`", f"`{score.decision}`", summary(score)]
        for name, score in OPEN_SET_SCORES.items()
    ]
    return table(["open-set score", "rejects as", "score (higher = more novel)"], rows)


#: block name -> (the doc that holds it, its table).
BLOCKS: dict[str, tuple[str, Callable[[], str]]] = {
    "backbones": ("embedder.md", backbones),
    "profiles": ("embedder.md", profiles),
    "heads": ("training.md", heads),
    "losses": ("training.md", losses),
    "scorers": ("index.md", scorers),
    "open_set_scores": ("index.md", open_set_scores),
}


def block_pattern(name: str) -> re.Pattern[str]:
    return re.compile(
        rf"(<!-- registry:{name} [^\n]*-->\n)(.*?)(<!-- /registry:{name} -->)", re.DOTALL
    )


def render(text: str, name: str) -> str:
    """``text`` with block ``name`` replaced by its table (ValueError when it has no block)."""
    pattern = block_pattern(name)
    if not pattern.search(text):
        raise ValueError(f"no <!-- registry:{name} --> block")
    return pattern.sub(lambda m: m.group(1) + BLOCKS[name][1]() + "\n" + m.group(3), text)


def stale_blocks(docs: Path = ROOT / "docs") -> list[str]:
    """``file: block`` for every block whose table differs from its registry's."""
    return [
        f"{file}: {name}"
        for name, (file, _) in BLOCKS.items()
        if render(text := (docs / file).read_text(), name) != text
    ]


def main(argv: list[str]) -> int:
    if "--check" in argv:
        stale = stale_blocks()
        print("\n".join(f"differs from its registry: {s}" for s in stale) or "docs up to date")
        return 1 if stale else 0
    for name, (file, _) in BLOCKS.items():
        path = ROOT / "docs" / file
        path.write_text(render(path.read_text(), name))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
