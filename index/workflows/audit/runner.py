"""``audit_collection``: find problems in a labelled collection before it is enrolled or
trained on. Reads only; nothing is deleted, moved or rewritten."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from embedder import Embedder, EmbeddingModel, ImageRecord, load_model, scan_collection
from embedder.intake import MIN_SIDE_PX

from ...config import AuditConfig
from ..evaluation.cache import EmbeddingCache
from .embedding_checks import (
    CentroidSimilarity,
    NeighbourTable,
    centroid_similarity,
    mislabel_candidates,
    nearest_neighbours,
    off_domain_scores,
    outlier_mask,
)
from .files import HASH_BITS, FileInfo, hamming_pairs, inspect_file
from .findings import Finding, sort_findings


@dataclass
class AuditResult:
    """All findings of one audit, in the order to act on them (:func:`findings.sort_findings`),
    and what was audited."""

    root: Path
    findings: list[Finding]
    images: int
    species: int
    embedded: int
    model: str
    config: AuditConfig = field(default_factory=AuditConfig)

    def to_dict(self) -> dict:
        return {
            "root": str(self.root),
            "images": self.images,
            "species": self.species,
            "embedded": self.embedded,
            "model": self.model,
            "config": self.config.model_dump(),
            "findings": [asdict(f) for f in self.findings],
        }


def _file_findings(records: Sequence[ImageRecord], infos: Sequence[FileInfo], cfg: AuditConfig):
    findings: list[Finding] = []
    for record, info in zip(records, infos, strict=True):
        path, species = str(record.path), record.species
        if not info.readable:
            findings.append(
                Finding("corrupt", "error", path, species, f"{info.error_code}: {info.error}")
            )
            continue
        side = min(info.width, info.height)
        if side < MIN_SIDE_PX:
            findings.append(
                Finding(
                    "tiny",
                    "error",
                    path,
                    species,
                    f"{info.width}x{info.height} px; enrollment refuses images under "
                    f"{MIN_SIDE_PX} px per side",
                )
            )
        elif side < cfg.min_side:
            findings.append(
                Finding(
                    "tiny",
                    "warning",
                    path,
                    species,
                    f"{info.width}x{info.height} px; shorter side under {cfg.min_side} px",
                )
            )
        if info.mode == "CMYK":
            findings.append(Finding("cmyk", "info", path, species, "CMYK colour mode"))
        if info.grayscale:
            findings.append(
                Finding("grayscale", "info", path, species, f"no colour (mode {info.mode or '?'})")
            )
    return findings


def _exact_duplicates(records: Sequence[ImageRecord], infos: Sequence[FileInfo]) -> list[Finding]:
    by_hash: dict[str, list[int]] = defaultdict(list)
    for i, info in enumerate(infos):
        if info.sha256:
            by_hash[info.sha256].append(i)
    findings = []
    for members in by_hash.values():
        first = members[0]
        for i in members[1:]:
            across = records[i].species != records[first].species
            detail = (
                f"same file under {records[first].species} and {records[i].species}"
                if across
                else "same file twice in this species"
            )
            findings.append(
                Finding(
                    "exact_duplicate",
                    "error" if across else "warning",
                    str(records[i].path),
                    records[i].species,
                    detail,
                    str(records[first].path),
                )
            )
    return findings


def audit_collection(
    root: str | Path,
    model: str | Path | EmbeddingModel | None = None,
    config: AuditConfig | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = True,
) -> AuditResult:
    """Audit ``root/<species>/*`` images; see :data:`index.workflows.audit.findings.KINDS`.

    ``model`` is a ``MODEL.pt`` path, a loaded model or ``None`` (the frozen default backbone).
    """
    cfg = config or AuditConfig()
    records = scan_collection(root, group_pattern=cfg.group_pattern)
    infos = [
        inspect_file(r.path)
        for r in tqdm(records, desc="checking files", unit="img", disable=not progress)
    ]
    findings = _file_findings(records, infos, cfg) + _exact_duplicates(records, infos)

    counts: dict[str, int] = defaultdict(int)
    groups: dict[str, set[str]] = defaultdict(set)
    for record in records:
        counts[record.species] += 1
        groups[record.species].add(record.group)
    for species in sorted(counts):
        problems = []
        if counts[species] < cfg.min_images:
            problems.append(f"{counts[species]} image(s), fewer than {cfg.min_images}")
        if cfg.group_pattern and len(groups[species]) < cfg.min_groups:
            problems.append(f"{len(groups[species])} specimen(s), fewer than {cfg.min_groups}")
        if problems:
            folder = str(Path(root) / species)
            findings.append(Finding("few_images", "warning", folder, species, "; ".join(problems)))

    readable = [
        i
        for i, info in enumerate(infos)
        if info.readable and min(info.width, info.height) >= MIN_SIDE_PX
    ]
    embedding_model = model if isinstance(model, EmbeddingModel) else load_model(model)
    embedded = 0
    if len(readable) >= 2:
        cache = EmbeddingCache(Embedder(embedding_model), cache_dir)
        result = cache.embed_paths([records[i].path for i in readable], progress=progress)
        position = {str(p): n for n, p in enumerate(result.paths)}
        rows = [i for i in readable if str(records[i].path) in position]
        vectors = result.embeddings[[position[str(records[i].path)] for i in rows]]
        embedded = len(rows)
        findings += _embedding_findings(records, infos, rows, vectors, cfg)
    return AuditResult(
        root=Path(root),
        findings=sort_findings(findings),
        images=len(records),
        species=len(counts),
        embedded=embedded,
        model=embedding_model.name,
        config=cfg,
    )


def _embedding_findings(
    records: Sequence[ImageRecord],
    infos: Sequence[FileInfo],
    rows: Sequence[int],
    vectors: np.ndarray,
    cfg: AuditConfig,
) -> list[Finding]:
    """Near duplicates, off-domain photos, likely mislabels and outliers, from the
    embeddings (each photo flagged as off-domain or mislabelled once)."""
    recs = [records[i] for i in rows]
    species = [r.species for r in recs]
    copy_id = np.unique([infos[i].sha256 for i in rows], return_inverse=True)[1].tolist()
    table = nearest_neighbours(vectors, cfg.neighbours, cfg.near_duplicate_cosine, copy_id)
    dhashes = [infos[i].dhash for i in rows]
    findings = _near_duplicates(recs, dhashes, vectors, table, copy_id, cfg)
    centres = centroid_similarity(vectors, species)
    flagged: set[int] = set()
    findings += _off_domain(recs, table, cfg, flagged)
    findings += _mislabels(recs, table, centres, flagged)
    findings += _outliers(recs, centres, cfg, flagged)
    return findings


def _near_duplicates(
    recs: list[ImageRecord],
    dhashes: list[np.ndarray | None],
    vectors: np.ndarray,
    table: NeighbourTable,
    copy_id: list[int],
    cfg: AuditConfig,
) -> list[Finding]:
    """Embedding pairs plus perceptual-hash pairs, each pair reported once, never within one
    specimen/track (views and frames of one object are expected to match)."""
    pairs: dict[tuple[int, int], list[str]] = defaultdict(list)
    for i, j, cosine in table.close_pairs:
        pairs[(i, j)].append(f"embedding cosine {cosine:.3f}")
    # Perceptual-hash pairs count only when the embeddings agree: photos of different objects
    # on one plain background can share a coarse hash.
    dhash = np.stack([h for h in dhashes if h is not None])
    for i, j, bits in hamming_pairs(dhash, cfg.near_duplicate_hash_bits):
        cosine = float(vectors[i] @ vectors[j])
        if copy_id[i] != copy_id[j] and cosine >= cfg.near_duplicate_hash_cosine:
            pairs[(i, j)].append(f"perceptual hash differs in {bits}/{HASH_BITS} bits")
    findings = []
    for (i, j), reasons in sorted(pairs.items()):
        if recs[i].group == recs[j].group:
            continue
        across = recs[i].species != recs[j].species
        where = f"also filed under {recs[i].species}" if across else "same species"
        findings.append(
            Finding(
                "near_duplicate",
                "error" if across else "warning",
                str(recs[j].path),
                recs[j].species,
                f"{where}; " + ", ".join(reasons),
                str(recs[i].path),
            )
        )
    return findings


def _off_domain(
    recs: list[ImageRecord], table: NeighbourTable, cfg: AuditConfig, flagged: set[int]
) -> list[Finding]:
    """Photos far less similar to their nearest neighbours than the collection's photos are."""
    z = off_domain_scores(table)
    findings = []
    for i in np.flatnonzero(z <= -cfg.off_domain_z).tolist():
        flagged.add(i)
        mean_sim = float(np.nanmean(table.similarity[i]))
        findings.append(
            Finding(
                "off_domain",
                "warning",
                str(recs[i].path),
                recs[i].species,
                f"mean similarity to its {table.index.shape[1]} nearest images {mean_sim:.2f} "
                f"(robust z {z[i]:.1f}; threshold -{cfg.off_domain_z:g})",
            )
        )
    return findings


def _mislabels(
    recs: list[ImageRecord],
    table: NeighbourTable,
    centres: CentroidSimilarity,
    flagged: set[int],
) -> list[Finding]:
    """Photos whose nearest images all belong to one other species."""
    findings = []
    for i, other, nearest in mislabel_candidates(table, [r.species for r in recs], centres):
        if i in flagged:
            continue
        flagged.add(i)
        own = centres.own[i]
        own_text = f"{own:.2f}" if np.isfinite(own) else "n/a"
        findings.append(
            Finding(
                "mislabel",
                "warning",
                str(recs[i].path),
                recs[i].species,
                f"its {table.index.shape[1]} nearest images are all {other}; similarity to "
                f"{other} centre {centres.best_other[i]:.2f} vs own species {own_text}",
                str(recs[nearest].path),
            )
        )
    return findings


def _outliers(
    recs: list[ImageRecord], centres: CentroidSimilarity, cfg: AuditConfig, flagged: set[int]
) -> list[Finding]:
    """Photos far from their species centre that no other check explained."""
    outliers = outlier_mask(centres, cfg.outlier_percentile, cfg.outlier_min_z)
    return [
        Finding(
            "outlier",
            "info",
            str(recs[i].path),
            recs[i].species,
            f"similarity to its species centre {centres.own[i]:.2f} "
            f"(closest other species: {centres.best_other_species[i]} "
            f"{centres.best_other[i]:.2f})",
        )
        for i in np.flatnonzero(outliers).tolist()
        if i not in flagged
    ]
