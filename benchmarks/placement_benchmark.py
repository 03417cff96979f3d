"""Placement benchmark: photos of species the collection lacks, placed in their genus (issue 22),
beside today's answers (a ``genus`` / ``family`` roll-up decision only), in one run.

    .venv/bin/python benchmarks/placement_benchmark.py [--seeds 2] [--shots 1 5 20]

Data: ../shared/datasets, embedded once with the default backbone (the evaluation cache,
``$SHELLID_CACHE_DIR``). Taxonomy is built here, never read from the folders:

- ``birds-cub-base100``: folders are CUB common names (``Black_footed_Albatross``); the genus
  column is the LAST word of the common name (Albatross, Auklet, Blackbird, Bunting, ...), a
  stand-in for the genus that groups look-alike species the way a genus does. No family.
- ``fish4k-23``: folders ``fish_01`` ... ``fish_23`` are the Fish4Knowledge ground-truth classes
  (Boom et al., ICPR 2012), whose scientific names give genus and family (:data:`FISH`; class 18
  is the family Scaridae, no genus). Only Chaetodon and Hemigymnus have two species, so fish
  are also run holding out one species of every *family* with two or more species.

Per dataset, rank and seed: one species of every taxon (at that rank) with two or more species
is never enrolled ("unseen"); of the other species K photos from distinct specimens / tracks
are enrolled (K = 1, 5, 20) and their other photos are the known queries. Columns:

- ``placed``: share of unseen species' photos whose answer names a taxon above species (today:
  a ``genus`` / ``family`` decision; new: the answer's ``placement``, else such a decision);
- ``right``: of those, the share whose named taxon is the photo's own (at the taxon's rank);
- ``ECE``: calibration of the probability shown with the named taxon (decision confidence
  today, placement probability new) against being right;
- ``nearest``: unseen photos whose most probable taxon (summed species probability) is right;
- ``named``: known photos named right (a ``species`` decision for their species);
- ``rejected``: unseen photos answered ``unknown_species`` or ``out_of_domain``;
- ``placement alone``: the new answers' ``placement`` only (where identify shows it): the
  share of unseen photos placed, right, and ECE of its probability.

``today`` is the index of commit :data:`BASELINE_COMMIT` imported from git (as
benchmarks/decision_benchmark.py does), ``new`` the working tree's.

Part 2 (``--parts stability``), on fish4k-23 and shells-zhang8: 2 or 3 species enrolled (half
of their specimens), one photo of a further species added; the share of the other answers
(the rest of their specimens and 40 photos of other species) whose decision or named taxon
changes, and the exported similarity of their top candidate before -> after (today: the
candidate ``score`` the CSV exported; new: ``similarity``, the cosine to its closest photo);
``named`` / ``rejected``: before the addition, the enrolled species' photos named right and
the other species' photos rejected (what the stabler centring costs or gains).

Part 3 (``--parts unusual``): shells-zhang8 enrolled whole plus 3 photos (3 tracks) of one
fish4k-23 species; the share of that fish's other photos named right, per fish species, and
the share of 300 rocks and 300 drawings (negatives-*) still answered ``out_of_domain``.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from decision_benchmark import baseline_identifier, embed  # noqa: E402

from embedder import Embedder, load_model  # noqa: E402
from embedder.datasets import ImageRecord, scan_collection, shots_split  # noqa: E402
from embedder.settings import EmbedderSettings  # noqa: E402
from index.calibration import expected_calibration_error  # noqa: E402
from index.classifier import VectorIdentifier  # noqa: E402
from index.results import REJECTIONS  # noqa: E402
from index.rows import SpecimenRows  # noqa: E402
from index.workflows.evaluation.cache import EmbeddingCache  # noqa: E402

#: the index before placement (issue 22).
BASELINE_COMMIT = "b1acf63"
DATA = REPO.parent / "shared" / "datasets"
#: Fish4Knowledge's 23 classes: (scientific name, family); class 18 is a family.
FISH = {
    "fish_01": ("Dascyllus reticulatus", "Pomacentridae"),
    "fish_02": ("Plectroglyphidodon dickii", "Pomacentridae"),
    "fish_03": ("Chromis chrysura", "Pomacentridae"),
    "fish_04": ("Amphiprion clarkii", "Pomacentridae"),
    "fish_05": ("Chaetodon lunulatus", "Chaetodontidae"),
    "fish_06": ("Chaetodon trifascialis", "Chaetodontidae"),
    "fish_07": ("Myripristis kuntee", "Holocentridae"),
    "fish_08": ("Acanthurus nigrofuscus", "Acanthuridae"),
    "fish_09": ("Hemigymnus fasciatus", "Labridae"),
    "fish_10": ("Neoniphon sammara", "Holocentridae"),
    "fish_11": ("Abudefduf vaigiensis", "Pomacentridae"),
    "fish_12": ("Canthigaster valentini", "Tetraodontidae"),
    "fish_13": ("Pomacentrus moluccensis", "Pomacentridae"),
    "fish_14": ("Zebrasoma scopas", "Acanthuridae"),
    "fish_15": ("Hemigymnus melapterus", "Labridae"),
    "fish_16": ("Lutjanus fulvus", "Lutjanidae"),
    "fish_17": ("Scolopsis bilineata", "Nemipteridae"),
    "fish_18": ("", "Scaridae"),
    "fish_19": ("Pempheris vanicolensis", "Pempheridae"),
    "fish_20": ("Zanclus cornutus", "Zanclidae"),
    "fish_21": ("Neoglyphidodon nigroris", "Pomacentridae"),
    "fish_22": ("Balistapus undulatus", "Balistidae"),
    "fish_23": ("Siganus fuscescens", "Siganidae"),
}
#: (dataset, specimen grouping, rank whose taxa lose one species each)
RUNS = (
    ("birds-cub-base100", "image", "genus"),
    ("fish4k-23", "track", "genus"),
    ("fish4k-23", "track", "family"),
)
MAX_QUERIES = 1500


def taxonomy_of(dataset: str, species: list[str]) -> dict[str, dict[str, str]]:
    """species -> {genus, family} by the rules in the module doc."""
    if dataset == "birds-cub-base100":
        return {s: {"genus": s.split("_")[-1], "family": ""} for s in species}
    if dataset == "fish4k-23":
        return {
            s: {"genus": FISH[s][0].split(" ")[0] if FISH[s][0] else "", "family": FISH[s][1]}
            for s in species
        }
    raise ValueError(f"no taxonomy rule for {dataset}")


def split(records: list[ImageRecord], taxonomy, rank: str, shots: int, seed: int):
    """(enrolled, known queries, unseen photos): one species of every ``rank`` taxon with 2+
    species never enrolled."""
    rng = np.random.default_rng(seed)
    members: dict[str, list[str]] = defaultdict(list)
    for s in sorted({r.species for r in records}):
        if taxonomy[s][rank]:
            members[taxonomy[s][rank]].append(s)
    unseen = {rng.choice(group) for group in members.values() if len(group) >= 2}
    enrolled, queries = shots_split([r for r in records if r.species not in unseen], shots, seed)
    strangers = [r for r in records if r.species in unseen]
    cap = lambda part: [part[i] for i in sorted(rng.permutation(len(part))[:MAX_QUERIES])]  # noqa: E731
    return enrolled, cap(queries), cap(strangers), sorted(unseen)


def truth_at(taxonomy, records, rank: str) -> np.ndarray:
    return np.array([taxonomy[r.species][rank] for r in records], dtype=object)


def named_taxa(identifier, batch) -> list[tuple[str, str, float]]:
    """(rank, taxon, probability) each answer names above species ('' when none), from the
    decision policy (what today's index answers)."""
    th = identifier.thresholds
    out = []
    for decision, taxon, p in identifier.policy.decide(batch.probabilities, batch.open_set, th):
        out.append((decision, taxon or "", p) if decision in ("genus", "family") else ("", "", 0))
    return out


def nearest_right(identifier, batch, taxonomy, records, rank: str) -> float:
    """Unseen photos whose most probable ``rank`` taxon is their own."""
    names = batch.species
    parents = np.array([taxonomy[s][rank] for s in names], dtype=object)
    taxa = sorted(set(parents) - {""})
    mass = np.stack([batch.probabilities[:, parents == t].sum(1) for t in taxa], 1)
    best = np.array(taxa, dtype=object)[mass.argmax(1)]
    return float(np.mean(best == truth_at(taxonomy, records, rank)))


def taxon_figures(answers, strangers, enrolled_taxonomy) -> tuple[float, float, float]:
    """(share placed, share of those right, ECE) of (rank, taxon, probability) answers."""
    placed = np.array([bool(t) for _, t, _ in answers])
    right = np.array(
        [
            bool(t) and enrolled_taxonomy[r.species].get(k, "") == t
            for (k, t, _), r in zip(answers, strangers, strict=True)
        ]
    )
    probability = np.array([p for _, _, p in answers])
    if not placed.any():
        return 0.0, float("nan"), float("nan")
    ece = expected_calibration_error(probability[placed], right[placed])
    return float(placed.mean()), float(right[placed].mean()), ece


def figures(identifier, enrolled_taxonomy, parts, rank: str, new: bool) -> dict[str, float]:
    _, queries, qx, strangers, sx = parts
    known = identifier.score_batch(qx)
    truth = np.array([known.species.index(r.species) for r in queries])
    named = (np.array(known.decisions) == "species") & (known.similarities.argmax(1) == truth)
    unseen = identifier.score_batch(sx)
    answers = named_taxa(identifier, unseen)
    out: dict[str, float] = {}
    if new:
        shown = [
            (p.rank, p.name, p.probability)
            if p is not None and d not in ("species", "out_of_domain")
            else ("", "", 0.0)
            for p, d in zip(unseen.placements, unseen.decisions, strict=True)
        ]
        out["p.placed"], out["p.right"], out["p.ece"] = taxon_figures(
            shown, strangers, enrolled_taxonomy
        )
        answers = [s if s[1] else a for s, a in zip(shown, answers, strict=True)]
    out["placed"], out["right"], out["ece"] = taxon_figures(answers, strangers, enrolled_taxonomy)
    out["nearest"] = nearest_right(identifier, unseen, enrolled_taxonomy, strangers, rank)
    out["named"] = float(named.mean())
    out["rejected"] = float(np.isin(unseen.decisions, list(REJECTIONS)).mean())
    return out


def mean_of(values: list[float]) -> float:
    """Mean of the values that are not NaN (NaN when none is)."""
    kept = [v for v in values if not np.isnan(v)]
    return float(np.mean(kept)) if kept else float("nan")


def fit_identifier(cls, **rows):
    """``cls.fit`` over these rows: the baseline (an older ``VectorIdentifier``) takes them as
    arguments, today's as one :class:`~index.rows.SpecimenRows` batch."""
    if cls is VectorIdentifier:
        return cls.fit(SpecimenRows(**rows))
    return cls.fit(**rows)


def run(dataset: str, grouping: str, rank: str, args, cache, previous_cls) -> None:
    records = scan_collection(DATA / dataset, group_pattern=grouping)
    records, vectors = embed(records, cache, dataset)
    taxonomy = taxonomy_of(dataset, sorted({r.species for r in records}))
    row = {str(r.path): i for i, r in enumerate(records)}

    def take(part):
        return vectors[[row[str(r.path)] for r in part]]

    table: dict = defaultdict(lambda: defaultdict(list))
    held: set[str] = set()
    for shots in args.shots:
        for seed in range(args.seeds):
            enrolled, queries, strangers, unseen = split(records, taxonomy, rank, shots, seed)
            held.update(unseen)
            fit = dict(
                vectors=take(enrolled),
                species=[r.species for r in enrolled],
                groups=[r.group for r in enrolled],
                taxonomy={s: taxonomy[s] for s in {r.species for r in enrolled}},
            )
            parts = (None, queries, take(queries), strangers, take(strangers))
            for label, cls in (("today", previous_cls), ("new", VectorIdentifier)):
                identifier = fit_identifier(cls, **fit)
                result = figures(identifier, taxonomy, parts, rank, label == "new")
                for key, value in result.items():
                    table[shots][(label, key)].append(value)
    print(
        f"\n{dataset}: one species of every {rank} with 2+ species never enrolled "
        f"({len(held)} species over the splits); % of photos, mean of {args.seeds} seeds"
    )
    keys = ("placed", "right", "ece", "nearest", "named", "rejected")
    print(f"  {'K':>3} " + "".join(f"{k:>17}" for k in keys) + "   placement alone")
    print(
        f"  {'':>3} "
        + "".join(f"{'today':>9}{'new':>8}" for _ in keys)
        + f"{'placed':>9}{'right':>7}{'ece':>7}"
    )
    for shots, cells in table.items():
        line = f"  {shots:>3} "
        for key in keys:
            scale = 1.0 if key == "ece" else 100.0
            fmt = "{:9.3f}{:8.3f}" if key == "ece" else "{:9.1f}{:8.1f}"
            line += fmt.format(
                scale * np.nanmean(cells[("today", key)]), scale * np.nanmean(cells[("new", key)])
            )
        alone = [mean_of(cells[("new", f"p.{k}")]) for k in ("placed", "right", "ece")]
        line += f"{100 * alone[0]:9.1f}{100 * alone[1]:7.1f}{alone[2]:7.3f}"
        print(line, flush=True)


def stability_split(records, enrolled_species: int, rng):
    """(enrolled rows, query rows, the one photo added): ``enrolled_species`` species with half
    of their specimens enrolled, the other half and 40 photos of other species asked, and one
    photo of a further species (unrelated: none of the enrolled ones) added."""
    species = sorted({r.species for r in records})
    chosen = list(rng.choice(species, enrolled_species + 1, replace=False))
    rows = {s: [i for i, r in enumerate(records) if r.species == s] for s in chosen}
    enrol: list[int] = []
    query: list[int] = []
    for s in chosen[:-1]:
        groups = sorted({records[i].group for i in rows[s]})
        half = {groups[j] for j in rng.permutation(len(groups))[: max(1, len(groups) // 2)]}
        enrol += [i for i in rows[s] if records[i].group in half]
        query += [i for i in rows[s] if records[i].group not in half]
    others = [i for i, r in enumerate(records) if r.species not in chosen]
    query += [int(i) for i in rng.choice(others, min(40, len(others)), replace=False)]
    return enrol, query, int(rng.choice(rows[chosen[-1]]))


def exported(answer, new: bool) -> float:
    """The similarity the answer exports for its top candidate (CSV ``similarity``)."""
    top = answer.candidates[0]
    return float(top.similarity if new else top.score)


def stability(dataset: str, grouping: str, args, cache, previous_cls) -> None:
    """Issue 22's stability check: enrol 2-3 species, add one photo of an unrelated species,
    count the other answers whose decision (or named taxon) changes and the shift of the
    exported similarity of their top candidate."""
    records = scan_collection(DATA / dataset, group_pattern=grouping)
    records, vectors = embed(records, cache, dataset)
    table: dict = defaultdict(lambda: defaultdict(list))
    for seed in range(args.stability_seeds):
        rng = np.random.default_rng(1000 + seed)
        for enrolled_species in (2, 3):
            enrol, query, one = stability_split(records, enrolled_species, rng)
            for label, cls in (("today", previous_cls), ("new", VectorIdentifier)):
                answers = []
                for rows in (enrol, [*enrol, one]):
                    identifier = fit_identifier(
                        cls,
                        vectors=vectors[rows],
                        species=[records[i].species for i in rows],
                        groups=[records[i].group for i in rows],
                    )
                    answers.append([identifier.identify(vectors[i][None, :]) for i in query])
                before, after = answers
                changed = [
                    (a.decision, a.species, a.genus) != (b.decision, b.species, b.genus)
                    for a, b in zip(before, after, strict=True)
                ]
                shift = [
                    abs(exported(a, label == "new") - exported(b, label == "new"))
                    for a, b in zip(before, after, strict=True)
                ]
                cell = table[(enrolled_species, label)]
                cell["changed"].append(float(np.mean(changed)))
                cell["shift"].append(float(np.mean(shift)))
                cell["before"].append(np.mean([exported(a, label == "new") for a in before]))
                cell["after"].append(np.mean([exported(b, label == "new") for b in after]))
                cell["queries"].append(len(query))
                enrolled = {records[i].species for i in enrol}
                known = [records[i].species in enrolled for i in query]
                cell["named"].append(
                    np.mean(
                        [
                            a.decision == "species" and a.species == records[i].species
                            for a, i, k in zip(before, query, known, strict=True)
                            if k
                        ]
                    )
                )
                cell["rejected"].append(
                    np.mean(
                        [
                            a.decision in REJECTIONS
                            for a, k in zip(before, known, strict=True)
                            if not k
                        ]
                    )
                )
    print(
        f"\n{dataset}: enrol 2 or 3 species, then one photo of an unrelated species; "
        f"mean of {args.stability_seeds} draws"
    )
    print(
        f"  {'species':>8} {'':>6} {'queries':>8} {'named %':>8} {'rejected %':>11} "
        f"{'changed %':>10} {'exported similarity':>30}"
    )
    for (enrolled_species, label), cell in sorted(table.items()):
        mean = {k: float(np.mean(v)) for k, v in cell.items()}
        print(
            f"  {enrolled_species:>8} {label:>6} {mean['queries']:8.0f} "
            f"{100 * mean['named']:8.1f} {100 * mean['rejected']:11.1f} "
            f"{100 * mean['changed']:10.1f} {mean['before']:10.2f} -> {mean['after']:.2f}"
            f" (mean |change| {mean['shift']:.3f})",
            flush=True,
        )


def unusual(args, cache, previous_cls) -> None:
    """Issue 22's species unlike the rest: all of shells-zhang8 enrolled (studio shells) plus 3
    photos (3 tracks) of one fish4k-23 species (underwater); the share of that fish's other
    photos named right (a ``species`` decision for it), and how the rest are answered."""
    shells, shell_x = embed(
        scan_collection(DATA / "shells-zhang8", group_pattern="specimen"), cache, "shells-zhang8"
    )
    fish, fish_x = embed(scan_collection(DATA / "fish4k-23", group_pattern="track"), cache, "fish")
    negatives = {}
    for folder in ("negatives-rocks", "negatives-drawings"):
        _, x = embed(scan_collection(DATA / folder, group_pattern="image"), cache, folder)
        negatives[folder] = x[np.random.default_rng(0).permutation(len(x))[:300]]
    table: dict = defaultdict(lambda: defaultdict(list))
    rng = np.random.default_rng(7)
    for species in sorted({r.species for r in fish})[: args.unusual_species]:
        rows = [i for i, r in enumerate(fish) if r.species == species]
        tracks = sorted({fish[i].group for i in rows})
        if len(tracks) < 4:
            continue
        chosen = {tracks[j] for j in rng.permutation(len(tracks))[:3]}
        enrol = [next(i for i in rows if fish[i].group == t) for t in sorted(chosen)]
        asked = [i for i in rows if fish[i].group not in chosen]
        vectors = np.vstack([shell_x, fish_x[enrol]])
        labels = [r.species for r in shells] + [species] * 3
        groups = [r.group for r in shells] + [f"t{k}" for k in range(3)]
        for label, cls in (("today", previous_cls), ("new", VectorIdentifier)):
            identifier = fit_identifier(cls, vectors=vectors, species=labels, groups=groups)
            batch = identifier.score_batch(fish_x[asked])
            top = [batch.species[j] for j in batch.similarities.argmax(1)]
            decisions = np.array(batch.decisions)
            cell = table[label]
            cell["named"].append(
                float(np.mean((decisions == "species") & (np.array(top) == species)))
            )
            for decision in ("out_of_domain", "unknown_species", "uncertain"):
                cell[decision].append(float(np.mean(decisions == decision)))
            off = [identifier.score_batch(x).decisions for x in negatives.values()]
            cell["negatives"].append(float(np.mean([d == "out_of_domain" for o in off for d in o])))
    print(
        "\nshells-zhang8 + 3 photos of one fish4k-23 species: that fish's other photos "
        f"(% , mean over {len(table['new']['named'])} fish species)"
    )
    print(
        f"  {'':>6} {'named':>7} {'out_of_domain':>14} {'unknown':>8} {'uncertain':>10}"
        f" {'rocks+drawings out_of_domain':>29}"
    )
    for label, cell in table.items():
        mean = {k: 100 * float(np.mean(v)) for k, v in cell.items()}
        print(
            f"  {label:>6} {mean['named']:7.1f} {mean['out_of_domain']:14.1f} "
            f"{mean['unknown_species']:8.1f} {mean['uncertain']:10.1f} {mean['negatives']:29.1f}",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--shots", type=int, nargs="+", default=[1, 5, 20])
    parser.add_argument("--datasets", nargs="+", default=sorted({d for d, _, _ in RUNS}))
    parser.add_argument("--parts", nargs="+", default=["placement", "stability", "unusual"])
    parser.add_argument("--unusual-species", type=int, default=8)
    parser.add_argument("--stability-seeds", type=int, default=6)
    args = parser.parse_args()
    settings = EmbedderSettings.load()  # read once: SHELLID_RUNTIME, SHELLID_CACHE_DIR
    cache = EmbeddingCache(
        Embedder(load_model(None), **settings.embedder_options()), settings.cache_root()
    )
    previous_cls = baseline_identifier(BASELINE_COMMIT)
    if "placement" in args.parts:
        for dataset, grouping, rank in RUNS:
            if dataset in args.datasets:
                run(dataset, grouping, rank, args, cache, previous_cls)
    if "stability" in args.parts:
        for dataset, grouping in (("fish4k-23", "track"), ("shells-zhang8", "specimen")):
            stability(dataset, grouping, args, cache, previous_cls)
    if "unusual" in args.parts:
        unusual(args, cache, previous_cls)


if __name__ == "__main__":
    main()
