"""Convergence benchmark: quality vs kimg and vs training time, several runs x several seeds.

    python scripts/bench_convergence.py --config configs/smoke-ada.yaml --data data/datasets/sample-32 \\
        --kimg 4 --every-kimg 0.5 --seeds 0 1 2 --run "ADA on" --run "ADA off:augment.mode=none" \\
        --out runs/bench-ada

Trains the preset once per (run, seed) for ``--kimg`` kimg (``train.seed`` = the seed, each
run's ``KEY=VALUE`` overrides on top of ``--set``) and every ``--every-kimg`` scores SWD
(eval/swd.py, needs no weights) and every metric of ``--metrics`` whose pretrained weights are
already present (``--weights-dir`` or the torch cache; never downloaded here). Writes

- ``OUT/convergence.jsonl``: one line per (run, seed, point): run, seed, kimg, cur_nimg,
  ``train_sec`` (training time up to the point, without the time spent on metrics, sample
  grids and checkpoints) and the metric values (``swd``, ``swd_<res>``, ``kid`` ...);
- ``OUT/convergence.png``: each metric against kimg and against training time, one line per
  run (the mean over seeds) with error bars of one standard deviation over seeds.

Each (run, seed) trains into ``OUT/<run>/seed<seed>``; a finished one is reused when the
command is run again (``--plot-only`` redraws from the JSON-lines file alone).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from atelier.common.fileio import atomic_write_bytes, atomic_write_text  # noqa: E402

log = logging.getLogger("bench_convergence")

WEIGHTED_METRICS = ("kid", "fid", "pr")  # scored only when their weights are already on disk
TIME_KEY = "train_sec"
PLOTTED = ("swd", "kid", "fid", "precision", "recall", "fd_dinov2", "r_t")
Y_LABELS = {
    "swd": "SWD ×10³ (mean over levels)",
    "kid": "KID (Inception)",
    "fd_dinov2": "FD (DINOv2)",
    "r_t": "r_t = E[sign D(real)] over the tick",
}


@dataclass
class RunSpec:
    """One line of the plot: a label and the config overrides that make it."""

    label: str
    overrides: list[str]

    @classmethod
    def parse(cls, text: str) -> "RunSpec":
        """``LABEL`` or ``LABEL:key=value,key=value``."""
        label, _, rest = text.partition(":")
        label = label.strip()
        if not label:
            raise ValueError(f"--run {text!r}: empty label")
        overrides = [item.strip() for item in rest.split(",") if item.strip()] if rest else []
        bad = [item for item in overrides if "=" not in item]
        if bad:
            raise ValueError(f"--run {text!r}: {bad[0]!r} is not key=value")
        return cls(label, overrides)

    @property
    def folder(self) -> str:
        return re.sub(r"[^A-Za-z0-9._-]+", "-", self.label).strip("-") or "run"


def present_metrics(wanted: list[str], weights_dir: Optional[str]) -> list[str]:
    """The metrics of ``wanted`` whose weight files are on disk now (no download)."""
    from eval import weights as W
    from eval.evaluate import weights_needed

    found = []
    for metric in wanted:
        try:
            for spec in weights_needed([metric]):
                W.resolve_weights(spec, weights_dir, download=False)
        except W.MissingWeightsError:
            log.info("%s: weights not present, not scored", metric)
            continue
        found.append(metric)
    return found


def train_one(args: argparse.Namespace, spec: RunSpec, seed: int, metrics: list[str]) -> Path:
    """Train one (run, seed) into its folder (reused when already finished); returns the run dir."""
    from gan import train

    run_dir = Path(args.out) / spec.folder / f"seed{seed}"
    if _finished(run_dir, args.kimg):
        log.info("%s seed %d: finished before, reused (%s)", spec.label, seed, run_dir)
        return run_dir
    overrides = [
        *args.overrides,
        *spec.overrides,
        f"train.seed={seed}",
        f"train.total_kimg={args.kimg}",
        f"metrics.metrics=[{','.join(metrics)}]",
        f"metrics.every_kimg={args.every_kimg}",
        f"metrics.num_samples={args.num_samples}",
        # A tick at every metrics point, so the training time up to each point is on record.
        f"log.tick_kimg={args.every_kimg}",
        f"log.sample_every_kimg={args.kimg}",
        f"checkpoint.every_kimg={args.checkpoint_kimg or args.kimg}",
        "checkpoint.keep_last=1",
        "log.tracker=none",
    ]
    if args.weights_dir:
        overrides.append(f"metrics.weights_dir={args.weights_dir}")
    argv = ["--config", str(args.config), "--run-dir", str(run_dir), "--tracker", "none"]
    if args.data:
        argv += ["--data", str(args.data)]
    for item in overrides:
        argv += ["--set", item]
    if any((run_dir / "checkpoints").glob("*/")):  # cut short before: go on from its last checkpoint
        argv = ["--resume", str(run_dir), "--tracker", "none"] + [a for i in overrides for a in ("--set", i)]
    elif run_dir.exists():  # cut short before its first checkpoint: this tool's own folder, start again
        log.info("%s seed %d: %s has no checkpoint, starting it again", spec.label, seed, run_dir)
        shutil.rmtree(run_dir)
    log.info("%s seed %d: training %s kimg into %s", spec.label, seed, args.kimg, run_dir)
    code = train.main(argv)
    if code != 0:
        raise RuntimeError(f"{spec.label} seed {seed}: training exited with status {code} (see {run_dir})")
    return run_dir


def _finished(run_dir: Path, kimg: float) -> bool:
    rows = _read_jsonl(run_dir / "metrics.jsonl")
    return any("tick" in row and row["kimg"] >= kimg - 1e-9 for row in rows) and any(
        "metrics/swd" in row and row["kimg"] >= kimg - 1e-9 for row in rows
    )


def _read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def points_of(run_dir: Path, label: str, seed: int) -> list[dict]:
    """The metric points of one run dir with the training time up to each.

    Training time is the sum of the ticks' ``sec_per_tick`` (the loop leaves metrics, grids
    and checkpoints out of it) up to the tick at the point's image count.
    """
    rows = _read_jsonl(run_dir / "metrics.jsonl")
    ticks = sorted((row for row in rows if "tick" in row), key=lambda row: row["cur_nimg"])
    out = []
    for row in rows:
        scores = {key.split("/", 1)[1]: value for key, value in row.items() if key.startswith("metrics/")}
        if not scores:
            continue
        elapsed = sum(t["sec_per_tick"] for t in ticks if t["cur_nimg"] <= row["cur_nimg"])
        # D's overfitting signal over the tick that ends here (ADA's r_t, logged in every augment mode).
        tick = next((t for t in ticks if t["cur_nimg"] == row["cur_nimg"]), {})
        extra = {"r_t": tick["scores/real_sign"]} if "scores/real_sign" in tick else {}
        out.append(
            {"run": label, "seed": seed, "kimg": row["cur_nimg"] / 1000, "cur_nimg": row["cur_nimg"], TIME_KEY: elapsed, **scores, **extra}
        )
    return out


def aggregate(points: list[dict], metric: str, x_key: str) -> dict[str, list[tuple[float, float, float, int]]]:
    """Per run: (mean x, mean metric, std of the metric over seeds, seeds) at each image count.

    The std is the sample standard deviation (n - 1); 0 with one seed.
    """
    grouped: dict[str, dict[int, list[dict]]] = {}
    for point in points:
        if metric in point and point[metric] is not None:
            grouped.setdefault(point["run"], {}).setdefault(point["cur_nimg"], []).append(point)
    out = {}
    for run, by_nimg in grouped.items():
        rows = []
        for nimg in sorted(by_nimg):
            group = by_nimg[nimg]
            values = [p[metric] for p in group]
            mean = sum(values) / len(values)
            std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
            rows.append((sum(p[x_key] for p in group) / len(group), mean, std, len(values)))
        out[run] = rows
    return out


def plot(points: list[dict], path: Path, title: str = "") -> Path:
    """PNG: one row per metric, against kimg (left) and training time (right), error bars = 1 std over seeds."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [m for m in PLOTTED if any(m in p for p in points)]
    if not metrics:
        raise ValueError("no metric values to plot")
    fig, axes = plt.subplots(len(metrics), 2, figsize=(11, 3.6 * len(metrics)), squeeze=False)
    seeds = sorted({p["seed"] for p in points})
    for row, metric in enumerate(metrics):
        for col, (x_key, x_label) in enumerate(
            (("kimg", "kimg (thousands of real images shown)"), (TIME_KEY, "training time (s, metrics excluded)"))
        ):
            ax = axes[row][col]
            for run, rows in aggregate(points, metric, x_key).items():
                xs, ys, errors, counts = zip(*rows)
                ax.errorbar(xs, ys, yerr=errors, marker="o", markersize=3, capsize=3, label=f"{run} (n={max(counts)} seeds)")
            ax.set_xlabel(x_label)
            ax.set_ylabel(Y_LABELS.get(metric, metric))
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    fig.suptitle(f"{title} (mean over seeds {seeds}, error bars: ±1 std over seeds)".strip(), fontsize=10)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return atomic_write_bytes(path, buffer.getvalue())


def table(points: list[dict], every_kimg: Optional[float] = None) -> str:
    """Markdown: one row per image count (every ``every_kimg`` when given), mean ± std over seeds per run and metric."""
    metrics = [m for m in PLOTTED if any(m in p for p in points)]
    runs = list(dict.fromkeys(p["run"] for p in points))
    columns = [(m, r) for m in metrics for r in runs]
    cells: dict[tuple[str, str], dict[int, tuple[float, float, int]]] = {}
    for metric in metrics:
        for run, rows in aggregate(points, metric, "cur_nimg").items():
            cells[(metric, run)] = {int(x): (mean, std, n) for x, mean, std, n in rows}
    nimgs = sorted({int(p["cur_nimg"]) for p in points})
    if every_kimg:  # the first point at or after each multiple (points land where ticks end, e.g. 1504)
        step = max(1, round(every_kimg * 1000))
        nimgs = sorted({min(n for n in nimgs if n >= m) for m in range(step, nimgs[-1] + 1, step)})
    header = "| kimg | " + " | ".join(f"{m} {r}" for m, r in columns) + " |"
    lines = [header, "|" + "---:|" * (len(columns) + 1)]
    for nimg in nimgs:
        row = [f"{nimg / 1000:g}"]
        for key in columns:
            value = cells.get(key, {}).get(nimg)
            digits = 1 if key[0] == "swd" else 3
            row.append("" if value is None else f"{value[0]:.{digits}f} ± {value[1]:.{digits}f}")
        lines.append("| " + " | ".join(row) + " |")
    seeds = sorted({p["seed"] for p in points})
    return "\n".join(lines + ["", f"mean ± sample std over seeds {seeds}"])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bench_convergence.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, help="YAML preset to train (required unless --plot-only)")
    parser.add_argument("--data", help="prepared dataset dir (overrides data.path)")
    parser.add_argument("--kimg", type=float, default=4.0, help="train each run this many kimg (default: 4)")
    parser.add_argument("--every-kimg", type=float, default=0.5, help="score every this many kimg (default: 0.5)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds (default: 0 1 2)")
    parser.add_argument(
        "--run",
        dest="runs",
        action="append",
        default=[],
        metavar="LABEL[:KEY=VALUE,...]",
        help="one plotted line; repeat for more (default: one run named after the preset)",
    )
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="config override for every run")
    parser.add_argument(
        "--metrics", default="kid", help="comma-separated metrics to add to SWD when their weights are present (default: kid)"
    )
    parser.add_argument("--num-samples", type=int, default=256, help="generated images per evaluation (default: 256)")
    parser.add_argument("--weights-dir", help="folder of pretrained weight files for --metrics")
    parser.add_argument(
        "--checkpoint-kimg", type=float, help="checkpoint every this many kimg, so a killed run resumes (default: only at the end)"
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder (convergence.jsonl, .png, run dirs)")
    parser.add_argument("--title", default="", help="plot title")
    parser.add_argument("--plot-only", action="store_true", help="redraw OUT/convergence.png from OUT/convergence.jsonl")
    parser.add_argument(
        "--table-every-kimg", type=float, help="the printed Markdown table keeps rows at multiples of this (default: every point)"
    )
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    jsonl, png = args.out / "convergence.jsonl", args.out / "convergence.png"
    try:
        if args.plot_only:
            points = _read_jsonl(jsonl)
            if not points:
                raise ValueError(f"{jsonl}: no points to plot")
        else:
            points = run_all(args, jsonl)
        plot(points, png, args.title)
    except (OSError, ValueError, RuntimeError) as exc:
        print(f"bench_convergence.py: error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}", file=sys.stderr)
        return 2
    print(table(points, args.table_every_kimg))
    print(f"wrote {jsonl} ({len(points)} points) and {png}")
    return 0


def run_all(args: argparse.Namespace, jsonl: Path) -> list[dict]:
    """Train every (run, seed), appending its points to the JSON-lines file as each finishes."""
    if args.config is None:
        raise ValueError("--config is required (or --plot-only)")
    if args.kimg <= 0 or args.every_kimg <= 0 or args.every_kimg > args.kimg:
        raise ValueError(f"need 0 < --every-kimg ({args.every_kimg}) <= --kimg ({args.kimg})")
    if args.num_samples < 2:
        raise ValueError(f"--num-samples must be at least 2, got {args.num_samples}")
    # Import the whole training and metrics stack now: a run takes minutes, and modules first
    # imported later would come from whatever the source tree holds by then.
    import eval.dinov2  # noqa: F401
    import eval.in_training  # noqa: F401
    import eval.swd  # noqa: F401
    import gan.train  # noqa: F401
    import gan.training_loop  # noqa: F401

    specs = [RunSpec.parse(text) for text in args.runs] or [RunSpec(args.config.stem, [])]
    if len({s.folder for s in specs}) != len(specs):
        raise ValueError("two --run labels map to the same folder name")
    wanted = [m.strip() for m in args.metrics.split(",") if m.strip() and m.strip() != "swd"]
    metrics = ["swd"] + present_metrics(wanted, args.weights_dir)
    points: list[dict] = []
    for seed in args.seeds:  # seeds outermost: an early stop still leaves every run with some seeds
        for spec in specs:
            run_dir = train_one(args, spec, seed, metrics)
            points += points_of(run_dir, spec.label, seed)
            atomic_write_text(jsonl, "".join(json.dumps(p, sort_keys=True) + "\n" for p in points))
    return points


if __name__ == "__main__":
    sys.exit(main())
