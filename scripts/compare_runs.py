"""Compare two training runs' discriminator overfitting and KID in one Markdown table.

    python scripts/compare_runs.py runs/ada-evidence/ada-on runs/ada-evidence/ada-off \\
        --labels "ADA on" "ADA off" --every-kimg 1.5

For each run it reads ``<run>/metrics.jsonl`` (one record per training tick) and, when
present, evaluation reports ``<run>/eval/*.json`` written by ``python -m eval --checkpoint
<run>/checkpoints/<nimg> --out <run>/eval/<name>.json``. Rows are kimg points every
``--every-kimg``; each row summarises the ticks since the previous row:

- ``r_t``: E[sign(D(real))] over the window's D steps (the tick means of ``scores/real_sign``,
  weighted by images), ADA's overfitting heuristic: 0 = D cannot tell reals from fakes,
  1 = D calls every training image real;
- ``p``: the augmentation probability at the row's last tick (blank without a pipe);
- ``gap``: mean D logit on reals minus mean D logit on fakes (``scores/real - scores/fake``),
  the raw real/fake separation;
- ``KID``: ``fidelity.metrics.kid_mean`` (x 10^3) of the report for the checkpoint in the window;
- ``SWD``: ProGAN's sliced Wasserstein distance (x 10^3, mean over pyramid levels; eval/swd.py,
  no pretrained weights) of the in-training metrics (``metrics/swd`` rows, on by default) or of
  an eval report, the last one in the window.

Rows end on the first tick at or after each multiple of ``--every-kimg`` (the row's kimg),
so with ``--every-kimg`` equal to ``checkpoint.every_kimg`` each row holds one checkpoint.

Output is Markdown on stdout, so it can be pasted into docs/.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

log = logging.getLogger("compare_runs")


@dataclass
class Window:
    """One table row's summary of one run."""

    r_t: Optional[float]
    p: Optional[float]
    gap: Optional[float]
    kid: Optional[float]
    swd: Optional[float] = None


def read_ticks(run: Path) -> list[dict]:
    """The tick records of ``run``/metrics.jsonl (rows without a tick, e.g. metrics-only, skipped)."""
    path = run / "metrics.jsonl" if run.is_dir() else run
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no metrics.jsonl (is {run} a run dir?)")
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{number}: not JSON ({exc})") from exc
        if "tick" in row:
            rows.append(row)
    if not rows:
        raise ValueError(f"{path}: no tick records")
    return rows


def kid_source(report: dict) -> str:
    """What one KID value rests on: sample counts, subset size, the reference set and the Inception weights."""
    fidelity = report.get("fidelity") or {}
    weights = next((w for w in fidelity.get("weights") or [] if "inception" in w.get("extractor", "")), {})
    return (
        f"{fidelity.get('num_generated')} generated vs {fidelity.get('num_reference')} real images "
        f"(dataset {str(report.get('dataset_content_sha256'))[:12]}), subset size {fidelity.get('kid_subset_size')}, "
        f"Inception weights {weights.get('file')} sha256 {str(weights.get('sha256'))[:12]}"
    )


def read_kid(run: Path, sources: Optional[dict[str, set[str]]] = None) -> dict[int, float]:
    """KID (mean) by cur_nimg from ``run``/eval/*.json reports and in-training metrics rows.

    ``sources`` (when given) collects, per run name, what each KID value rests on, so the
    table can say so and warn when values of different kinds share a column.
    """
    kid: dict[int, float] = {}
    found: set[str] = set()
    metrics = run / "metrics.jsonl"
    if metrics.is_file():
        for line in metrics.read_text(encoding="utf-8").splitlines():
            row = json.loads(line) if line.strip() else {}
            if "metrics/kid" in row:
                kid[int(row["cur_nimg"])] = float(row["metrics/kid"])
                found.add("in-training metrics (metrics.num_samples of the run's config)")
    for report in sorted((run / "eval").glob("*.json")):
        data = json.loads(report.read_text(encoding="utf-8"))
        value = ((data.get("fidelity") or {}).get("metrics") or {}).get("kid_mean")
        name = Path(data.get("generator") or "").name
        if value is not None and name.isdigit():  # a checkpoint dir is named by its cur_nimg
            kid[int(name)] = float(value)
            found.add(kid_source(data))
    if sources is not None:
        sources[str(run)] = found
    return kid


def swd_source(report: dict) -> str:
    """What one SWD value rests on: sample counts, the reference set and the patch / direction counts."""
    swd = report.get("swd") or {}
    return (
        f"{swd.get('num_generated')} generated vs {swd.get('num_reference')} real images "
        f"(dataset {str(report.get('dataset_content_sha256'))[:12]}), {swd.get('patches_per_image')} patches "
        f"per image and level, {swd.get('directions')} directions"
    )


def read_swd(run: Path, sources: Optional[dict[str, set[str]]] = None) -> dict[int, float]:
    """SWD (x 10^3, mean over levels) by cur_nimg from in-training metrics rows and ``run``/eval/*.json."""
    swd: dict[int, float] = {}
    found: set[str] = set()
    metrics = run / "metrics.jsonl"
    if metrics.is_file():
        for line in metrics.read_text(encoding="utf-8").splitlines():
            row = json.loads(line) if line.strip() else {}
            if "metrics/swd" in row:
                swd[int(row["cur_nimg"])] = float(row["metrics/swd"])
    for report in sorted((run / "metrics").glob("kimg*.json")):  # the in-training reports behind those rows
        data = json.loads(report.read_text(encoding="utf-8"))
        if data.get("swd"):
            found.add(swd_source(data))
    for report in sorted((run / "eval").glob("*.json")):
        data = json.loads(report.read_text(encoding="utf-8"))
        name = Path(data.get("generator") or "").name
        if data.get("swd") and name.isdigit():
            swd[int(name)] = float(data["swd"]["swd"])
            found.add(swd_source(data))
    if sources is not None:
        sources[str(run)] = found
    return swd


def swd_notes(sources: dict[str, set[str]]) -> list[str]:
    every = set().union(*sources.values()) if sources else set()
    notes = [f"SWD: {source}" for source in sorted(every)]
    if len(every) > 1:
        notes.append("warning: the SWD values rest on different sample counts or reference sets; they are not comparable with each other")
    return notes


def kid_notes(sources: dict[str, set[str]]) -> list[str]:
    """Footnotes under the table: the basis of the KID column, and a warning when it is mixed."""
    every = set().union(*sources.values()) if sources else set()
    if not every:
        return []
    notes = [f"KID: {source}" for source in sorted(every)]
    if len(every) > 1:
        notes.append(
            "warning: the KID values rest on different sample counts, reference sets or weights; they are not comparable with each other"
        )
    return notes


def summarise(ticks: list[dict], kid: dict[int, float], start_nimg: int, end_nimg: int, swd: Optional[dict[int, float]] = None) -> Window:
    """Aggregate the ticks with cur_nimg in (start, end]; KID of the checkpoint closest to ``end``."""
    inside = [t for t in ticks if start_nimg < t["cur_nimg"] <= end_nimg]
    r_t = gap = p = None
    if inside:
        # Weight each tick by the images it covers (the last tick of a run may be short).
        bounds = [start_nimg] + [t["cur_nimg"] for t in inside]
        weights = [b - a for a, b in zip(bounds, bounds[1:])]
        r_t = _weighted([(t.get("scores/real_sign"), w) for t, w in zip(inside, weights)])
        gap = _weighted(
            [
                (t["scores/real"] - t["scores/fake"] if "scores/real" in t and "scores/fake" in t else None, w)
                for t, w in zip(inside, weights)
            ]
        )
        p = inside[-1].get("augment/p")
    near = [n for n in kid if start_nimg < n <= end_nimg]
    near_swd = [n for n in swd or {} if start_nimg < n <= end_nimg]
    return Window(r_t, p, gap, kid[max(near)] if near else None, swd[max(near_swd)] if near_swd else None)


def row_points(tick_nimgs: list[int], every_kimg: float) -> list[int]:
    """For each multiple of ``every_kimg``, the first tick at or after it (so rows end on real
    ticks and line up with checkpoints written there), plus the last tick."""
    step = max(1, round(every_kimg * 1000))
    end = tick_nimgs[-1]
    points = {min(n for n in tick_nimgs if n >= m) for m in range(step, end + 1, step)}
    return sorted(points | {end})


def _weighted(pairs: list[tuple[Optional[float], int]]) -> Optional[float]:
    known = [(v, w) for v, w in pairs if v is not None]
    total = sum(w for _, w in known)
    return sum(v * w for v, w in known) / total if total else None


def _fmt(value: Optional[float], digits: int = 3, scale: float = 1.0) -> str:
    return "" if value is None or not math.isfinite(value) else f"{value * scale:.{digits}f}"


def comparison_table(runs: list[Path], labels: list[str], every_kimg: float) -> str:
    """The Markdown table (one row per kimg point, r_t / p / gap / KID columns per run)."""
    ticks = [read_ticks(run) for run in runs]
    sources: dict[str, set[str]] = {}
    kids = [read_kid(run, sources) for run in runs]
    swd_sources: dict[str, set[str]] = {}
    swds = [read_swd(run, swd_sources) for run in runs]
    points = row_points(sorted({t["cur_nimg"] for run in ticks for t in run}), every_kimg)
    header = ["kimg"]
    for label in labels:
        header += [f"r_t {label}", f"p {label}", f"gap {label}"]
    if any(kids):
        header += [f"KID×10³ {label}" for label in labels]
    if any(swds):
        header += [f"SWD×10³ {label}" for label in labels]
    lines = ["| " + " | ".join(header) + " |", "|" + "---:|" * len(header)]
    prev = 0
    for point in points:
        windows = [summarise(t, k, prev, point, s) for t, k, s in zip(ticks, kids, swds)]
        if all(w == Window(None, None, None, None, None) for w in windows):
            continue  # no tick ended in this window (ticks sparser than --every-kimg); fold it into the next
        cells = [f"{point / 1000:.3g}"]
        for w in windows:
            cells += [_fmt(w.r_t), _fmt(w.p), _fmt(w.gap, 2)]
        if any(kids):
            cells += [_fmt(w.kid, 2, 1000.0) for w in windows]
        if any(swds):
            cells += [_fmt(w.swd, 1) for w in windows]
        lines.append("| " + " | ".join(cells) + " |")
        prev = point
    notes = kid_notes(sources) + swd_notes(swd_sources)
    return "\n".join(lines + ([""] + notes if notes else []))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="compare_runs.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", type=Path, nargs=2, metavar="RUN_DIR", help="two run dirs (each with metrics.jsonl)")
    parser.add_argument(
        "--labels", nargs=2, default=None, metavar="LABEL", help="column labels for the two runs (default: the run dir names)"
    )
    parser.add_argument(
        "--every-kimg",
        type=float,
        default=1.0,
        help="one row per this many kimg; each row summarises the ticks since the last (default: 1.0)",
    )
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.every_kimg <= 0:
        print(f"error: --every-kimg must be positive, got {args.every_kimg}", file=sys.stderr)
        return 2
    labels = args.labels or [run.name for run in args.runs]
    try:
        print(comparison_table(list(args.runs), labels, args.every_kimg))
    except (OSError, ValueError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
