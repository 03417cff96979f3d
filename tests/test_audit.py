"""shellid audit: planted problems are found, files are never changed, CSV/HTML/CLI outputs."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from api.cli import main
from index.workflows.audit import (
    CSV_COLUMNS,
    KINDS,
    SEVERITIES,
    AuditConfig,
    AuditResult,
    Finding,
    audit_collection,
    read_csv,
    write_audit_report,
    write_csv,
)
from index.workflows.audit.embedding_checks import nearest_neighbours, robust_z
from index.workflows.audit.files import difference_hash, hamming_pairs, inspect_file
from index.workflows.audit.findings import action_rank, group_findings, sort_findings
from tests.conftest import make_collection


def line_drawing(path: Path, seed: int = 0, size: int = 96) -> Path:
    """A generated 'drawing': black line art (a house and random strokes) on white."""
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(image)
    draw.rectangle((20, 45, 76, 86), outline="black", width=2)
    draw.polygon([(16, 46), (48, 14), (80, 46)], outline="black", width=2)
    for _ in range(6):
        x0, y0, x1, y1 = rng.integers(4, size - 4, size=4)
        draw.line((int(x0), int(y0), int(x1), int(y1)), fill="black", width=1)
    image.save(path)
    return path


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """Generated collection with one planted exact duplicate across species, one mislabel and
    one drawing, audited once with the frozen backbone."""
    root = make_collection(tmp_path_factory.mktemp("audit") / "collection", specimens=5)
    duplicate = root / "Conus_beta" / "copied_from_murex.png"
    shutil.copy(root / "Murex_epsilon" / "Murex_epsilon_3_A.png", duplicate)
    mislabel = root / "Cypraea_gamma" / "Conus_alpha_2_B.png"
    (root / "Conus_alpha" / "Conus_alpha_2_B.png").rename(mislabel)
    drawing = line_drawing(root / "Cypraea_delta" / "sketch.png")
    before = snapshot(root)
    result = audit_collection(
        root,
        config=AuditConfig(group_pattern="specimen"),
        cache_dir=tmp_path_factory.mktemp("cache"),
        progress=False,
    )
    return result, root, {"duplicate": duplicate, "mislabel": mislabel, "drawing": drawing}, before


def kinds_of(result, path: Path) -> set[str]:
    return {f.kind for f in result.findings if f.path == str(path)}


def test_audit_finds_planted_exact_duplicate_across_species(planted):
    result, root, files, _ = planted
    found = [f for f in result.findings if f.kind == "exact_duplicate"]
    assert len(found) == 1
    original = root / "Murex_epsilon" / "Murex_epsilon_3_A.png"
    assert {found[0].path, found[0].related_path} == {str(files["duplicate"]), str(original)}
    assert found[0].severity == "error"


def test_audit_finds_planted_mislabel_naming_the_true_species(planted):
    result, _, files, _ = planted
    found = [
        f for f in result.findings if f.kind == "mislabel" and f.path == str(files["mislabel"])
    ]
    assert len(found) == 1
    assert "Conus_alpha" in found[0].detail
    assert Path(found[0].related_path).parent.name == "Conus_alpha"


def test_audit_flags_planted_drawing_as_off_domain(planted):
    result, _, files, _ = planted
    flagged = [f for f in result.findings if f.kind == "off_domain"]
    assert str(files["drawing"]) in {f.path for f in flagged}

    def similarity(finding) -> float:  # "mean similarity to its 5 nearest images 0.38 (..."
        return float(finding.detail.split("nearest images ")[1].split()[0])

    # synthetic specimens are nearly identical, so the drawing must stand out the most
    assert min(flagged, key=similarity).path == str(files["drawing"])


def test_audit_reports_no_serious_problem_for_untouched_photos(planted):
    result, _, files, _ = planted
    planted_paths = {str(p) for p in files.values()} | {
        str(p) for p in (files["duplicate"].parents[1] / "Murex_epsilon").glob("*_3_A.png")
    }
    serious = {f.path for f in result.findings if f.kind in ("mislabel", "exact_duplicate")}
    assert serious <= planted_paths


def test_audit_changes_no_file(planted):
    _, root, _, before = planted
    assert snapshot(root) == before


def test_audit_finds_corrupt_tiny_grayscale_cmyk_and_small_species(tmp_path):
    root = make_collection(tmp_path / "c", specimens=3)
    (root / "Conus_alpha" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    Image.new("RGB", (20, 20), (200, 10, 10)).save(root / "Conus_beta" / "tiny.png")
    Image.new("RGB", (50, 50), (200, 10, 10)).save(root / "Conus_beta" / "small.png")
    gray = Image.open(root / "Murex_epsilon" / "Murex_epsilon_1_A.png").convert("L")
    gray.save(root / "Murex_epsilon" / "gray.png")
    Image.new("CMYK", (96, 96), (0, 200, 200, 0)).save(root / "Cypraea_gamma" / "print.jpg")
    lonely = root / "Lonely_species"
    lonely.mkdir()
    shutil.copy(root / "Conus_alpha" / "Conus_alpha_1_A.png", lonely / "Lonely_species_1_A.png")
    result = audit_collection(root, cache_dir=tmp_path / "cache", progress=False)
    by_path = {}
    for f in result.findings:
        by_path.setdefault(Path(f.path).name, set()).add((f.kind, f.severity))
    assert ("corrupt", "error") in by_path["broken.jpg"]
    assert ("tiny", "error") in by_path["tiny.png"]
    assert ("tiny", "warning") in by_path["small.png"]
    assert ("grayscale", "info") in by_path["gray.png"]
    assert ("cmyk", "info") in by_path["print.jpg"]
    assert ("few_images", "warning") in by_path["Lonely_species"]
    assert ("exact_duplicate", "error") in by_path["Lonely_species_1_A.png"]


def test_findings_csv_has_documented_columns_and_round_trips(planted, tmp_path):
    result, *_ = planted
    path = write_csv(result.findings, tmp_path / "findings.csv")
    with path.open(newline="") as handle:
        assert tuple(next(csv.reader(handle))) == CSV_COLUMNS
    assert read_csv(path) == result.findings


def test_difference_hash_is_stable_under_resizing_and_differs_for_other_images(tmp_path):
    root = make_collection(tmp_path / "c", specimens=1, views=1)
    image = Image.open(root / "Conus_alpha" / "Conus_alpha_1_A.png")
    other = Image.open(root / "Murex_epsilon" / "Murex_epsilon_1_A.png")
    hashes = np.stack(
        [difference_hash(image), difference_hash(image.resize((64, 64))), difference_hash(other)]
    )
    pairs = {(i, j) for i, j, _ in hamming_pairs(hashes, max_distance=16)}
    assert (0, 1) in pairs
    assert (0, 2) not in pairs and (1, 2) not in pairs


def test_inspect_file_reports_unreadable_file_without_raising(tmp_path):
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    info = inspect_file(path)
    assert not info.readable and info.error_code == "empty"


def test_nearest_neighbours_skip_self_and_exact_copies():
    x = np.eye(4, dtype=np.float32)
    x = np.vstack([x, x[0]])  # row 4 is a byte copy of row 0
    table = nearest_neighbours(x, k=1, pair_threshold=0.99, copy_id=[0, 1, 2, 3, 0])
    assert table.index[0, 0] not in (0, 4)
    assert table.close_pairs == []


def test_robust_z_marks_the_single_low_value():
    values = np.r_[np.random.default_rng(0).normal(0.8, 0.02, 50), 0.2]
    z = robust_z(values)
    assert z[-1] < -10 and np.all(np.abs(z[:-1]) < 4)


def test_audit_cli_writes_csv_and_report_with_thumbnails(planted, tmp_path, capsys):
    _, root, files, _ = planted
    code = main(
        [
            "audit",
            str(root),
            "--group-regex",
            "specimen",
            "--csv",
            str(tmp_path / "f.csv"),
            "--report",
            str(tmp_path / "report"),
            "--cache-dir",
            str(tmp_path / "cache"),
            "--quiet",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "exact_duplicate" in out and "mislabel" in out and "off_domain" in out
    rows = read_csv(tmp_path / "f.csv")
    assert {r.kind for r in rows} >= {"exact_duplicate", "mislabel", "off_domain"}
    html = (tmp_path / "report" / "index.html").read_text()
    thumbs = list((tmp_path / "report" / "thumbs").glob("*.jpg"))
    assert thumbs and all(max(Image.open(t).size) <= 160 for t in thumbs)
    assert all(f"thumbs/{t.name}" in html for t in thumbs)
    assert "http://" not in html and "https://" not in html
    assert str(files["drawing"]) in html


def test_audit_cli_missing_folder_is_one_line_error(tmp_path, capsys):
    code = main(["audit", str(tmp_path / "nope")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "no such folder" in err


@pytest.mark.shared
def test_audit_flags_real_drawing_and_mislabel_among_real_shells(shared, tmp_path):
    source = shared("shells-zhang8")
    drawings = shared("negatives-drawings")
    root = tmp_path / "shells"
    for species in sorted(p for p in source.iterdir() if p.is_dir())[:4]:
        shutil.copytree(species, root / species.name)
    names = sorted(p.name for p in root.iterdir())
    moved = root / names[1] / f"{names[0]}_1_A.jpg"
    (root / names[0] / f"{names[0]}_1_A.jpg").rename(moved)
    sketch = next(p for p in sorted(drawings.rglob("*.jpg")) if "sketch" in p.parent.name)
    planted = root / names[2] / "drawing.jpg"
    shutil.copy(sketch, planted)
    result = audit_collection(
        root,
        config=AuditConfig(group_pattern="specimen"),
        cache_dir=tmp_path / "cache",
        progress=False,
    )
    assert "off_domain" in kinds_of(result, planted)
    assert "mislabel" in kinds_of(result, moved)
    assert {f.path for f in result.findings if f.kind == "off_domain"} == {str(planted)}


def _finding(kind: str, severity: str, n: int, species: str = "Conus_alpha") -> Finding:
    return Finding(kind, severity, f"/data/{species}/{kind}_{n}.png", species, f"{kind} {n}")


def test_findings_come_in_the_order_a_curator_acts_on_them():
    findings = (
        [_finding("tiny", "warning", i) for i in range(30)]
        + [_finding("near_duplicate", "warning", 1)]  # within one species
        + [_finding("off_domain", "warning", 1)]
        + [_finding("exact_duplicate", "error", 1)]  # across species
        + [_finding("mislabel", "warning", i) for i in range(2)]
        + [_finding("corrupt", "error", 1), _finding("grayscale", "info", 1)]
    )
    titles = [group.key for group, _ in group_findings(findings)]
    assert titles == [
        "mislabel",
        "duplicates-across-species",
        "off_domain",
        "corrupt",
        "duplicates-within-species",
        "tiny",
        "grayscale",
    ]
    ordered = sort_findings(findings)
    assert [f.kind for f in ordered[:4]] == [
        "mislabel",
        "mislabel",
        "exact_duplicate",
        "off_domain",
    ]
    every = [Finding(k, s, "p", "s", "d") for k in KINDS for s in SEVERITIES]
    assert all(isinstance(action_rank(f), int) for f in every)  # every finding has a group


def test_audit_report_puts_mislabels_on_top_and_folds_long_groups(tmp_path):
    findings = [_finding("tiny", "warning", i) for i in range(103)] + [
        _finding("mislabel", "warning", 1, "Cypraea_gamma")
    ]
    result = AuditResult(Path("/data"), sort_findings(findings), 104, 2, 104, "test model")
    html = write_audit_report(result, tmp_path / "report").read_text()
    assert html.index('id="mislabel"') < html.index('id="tiny"')
    assert '<details id="mislabel" class="group" open>' in html  # short: open
    assert '<details id="tiny" class="group">' in html  # 103 findings: folded
    assert 'Too small <span class="count">(103)</span>' in html
    plan = html[html.index('<ol class="plan">') : html.index("</ol>")]
    assert plan.index("Possibly mislabelled") < plan.index("Too small")
    assert '<table class="summary"' not in html  # no wide table to clip on a phone
