"""scripts/compare_runs.py: the ADA on/off table and what its KID column rests on."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("compare_runs", ROOT / "scripts" / "compare_runs.py")
compare_runs = importlib.util.module_from_spec(_spec)
sys.modules["compare_runs"] = compare_runs
_spec.loader.exec_module(compare_runs)


def _run(folder: Path, real_sign: float, kid_reports: dict[int, tuple[float, int]]) -> Path:
    """A run dir with two 500-image ticks and one eval report per checkpoint (nimg -> (kid, num_generated))."""
    folder.mkdir(parents=True)
    ticks = [
        {"tick": t, "cur_nimg": 500 * t, "scores/real_sign": real_sign, "scores/real": 1.0, "scores/fake": -1.0, "augment/p": 0.1 * t}
        for t in (1, 2)
    ]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(t) + "\n" for t in ticks))
    (folder / "eval").mkdir()
    for nimg, (kid, generated) in kid_reports.items():
        report = {
            "generator": str(folder / "checkpoints" / f"{nimg:010d}"),
            "dataset_content_sha256": "d" * 64,
            "fidelity": {
                "metrics": {"kid_mean": kid},
                "num_generated": generated,
                "num_reference": 48,
                "kid_subset_size": 48,
                "weights": [{"extractor": "inception-v3-compat (pool3)", "file": "inception.pth", "sha256": "a" * 64}],
            },
        }
        (folder / "eval" / f"kid-{nimg}.json").write_text(json.dumps(report))
    return folder


def test_table_rows_and_the_basis_of_its_kid_column(tmp_path, capsys):
    on = _run(tmp_path / "on", 0.5, {500: (0.002, 96), 1000: (0.001, 96)})
    off = _run(tmp_path / "off", 0.9, {1000: (0.008, 96)})
    assert compare_runs.main([str(on), str(off), "--labels", "on", "off", "--every-kimg", "0.5"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "| kimg | r_t on | p on | gap on | r_t off | p off | gap off | KID×10³ on | KID×10³ off |"
    assert lines[2] == "| 0.5 | 0.500 | 0.100 | 2.00 | 0.900 | 0.100 | 2.00 | 2.00 |  |"
    assert lines[3] == "| 1 | 0.500 | 0.200 | 2.00 | 0.900 | 0.200 | 2.00 | 1.00 | 8.00 |"
    notes = [line for line in lines if line.startswith("KID:")]
    assert notes == [
        "KID: 96 generated vs 48 real images (dataset dddddddddddd), subset size 48, Inception weights inception.pth sha256 aaaaaaaaaaaa"
    ]
    assert not any(line.startswith("warning") for line in lines)


def test_kid_values_of_different_sample_counts_are_flagged(tmp_path, capsys):
    on = _run(tmp_path / "on", 0.5, {1000: (0.001, 96)})
    off = _run(tmp_path / "off", 0.9, {1000: (0.008, 2000)})
    assert compare_runs.main([str(on), str(off)]) == 0
    out = capsys.readouterr().out
    assert "96 generated" in out and "2000 generated" in out
    assert "warning: the KID values rest on different sample counts" in out


def test_a_folder_without_metrics_is_a_one_line_error(tmp_path, capsys):
    on = _run(tmp_path / "on", 0.5, {})
    assert compare_runs.main([str(on), str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no metrics.jsonl" in err[0]
