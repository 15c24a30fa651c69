"""Run overview: what a run dir says about itself (config, metric curves, latest samples, W&B link).

Only files are read: ``config.yaml`` as text, ``metrics.jsonl`` line by line (a torn last line
from a run still writing is skipped), the newest ``samples/fakes-*.png`` grid, and the W&B
folder's run directories and logs.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

MAX_CONFIG_CHARS = 200_000
# The curves worth plotting, by key prefix in metrics.jsonl (training ticks and in-training metrics).
# Case matters: training logs each loss twice ("Loss/G_main" per phase and "loss/G" per term); the
# phase totals are the ones plotted.
CURVE_GROUPS = {
    "losses": ("Loss/",),
    "quality": ("metrics/",),  # KID, SWD, FID, LPIPS diversity, memorisation (eval.in_training)
    "augmentation": ("augment/",),
}
_URL = re.compile(r"https://wandb\.ai/[\w\-./]+/runs/[\w\-]+")


@dataclass
class RunOverview:
    """Everything the Run tab shows; missing parts are None / empty with a reason in ``notes``."""

    run_dir: Optional[Path]
    config_text: str = ""
    metrics: list[dict] = field(default_factory=list)
    latest_grid: Optional[Path] = None
    wandb: str = ""
    notes: list[str] = field(default_factory=list)


def run_dir_of(checkpoint: str | Path) -> Optional[Path]:
    """The run dir a ``--checkpoint`` belongs to: itself, the run above a checkpoint dir, or None for a bare export."""
    path = Path(checkpoint)
    if path.is_file():
        path = path.parent
    for candidate in (path, path.parent.parent if path.parent.name == "checkpoints" else None):
        if candidate is not None and ((candidate / "metrics.jsonl").is_file() or (candidate / "config.yaml").is_file()):
            return candidate
    return None


def read_metrics(path: Path) -> list[dict]:
    """The JSON objects of a metrics.jsonl, skipping lines that do not parse (a run may be mid-write)."""
    rows = []
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return rows
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def curve_table(metrics: list[dict], group: str) -> list[dict]:
    """Long-format rows ``{"kimg", "metric", "value"}`` of one curve group, for a line plot."""
    prefixes = CURVE_GROUPS[group]
    rows = []
    for row in metrics:
        kimg = row.get("kimg")
        if not isinstance(kimg, (int, float)):
            continue
        for key, value in row.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and key.startswith(prefixes):
                rows.append({"kimg": float(kimg), "metric": key, "value": float(value)})
    return rows


def latest_grid(run_dir: Path) -> Optional[Path]:
    """The newest generated sample grid of a run (``samples/fakes-*.png``, by name = by kimg)."""
    grids = sorted((run_dir / "samples").glob("fakes-*.png"))
    return grids[-1] if grids else None


def wandb_link(run_dir: Path) -> str:
    """The run's W&B URL when it synced online, else how to upload an offline run, else ''."""
    folder = run_dir / "wandb"
    if not folder.is_dir():
        return ""
    runs = sorted(p for p in folder.iterdir() if p.is_dir() and (p.name.startswith("run-") or p.name.startswith("offline-run-")))
    for run in reversed(runs):
        for log in (run / "logs" / "debug.log", run / "files" / "output.log"):
            if log.is_file():
                match = _URL.search(log.read_text(encoding="utf-8", errors="replace")[:2_000_000])
                if match:
                    return match.group(0)
    offline = [p for p in runs if p.name.startswith("offline-run-")]
    if offline:
        return f"offline W&B run: upload it with `wandb sync {offline[-1]}`"
    return ""


def load_overview(checkpoint: str | Path) -> RunOverview:
    """Read a run's overview from its files (nothing is loaded as code)."""
    run_dir = run_dir_of(checkpoint)
    if run_dir is None:
        return RunOverview(None, notes=[f"{checkpoint} is a bare generator export: no run dir with config and metrics"])
    overview = RunOverview(run_dir)
    config = run_dir / "config.yaml"
    if config.is_file():
        overview.config_text = config.read_text(encoding="utf-8", errors="replace")[:MAX_CONFIG_CHARS]
    else:
        overview.notes.append("no config.yaml in the run dir")
    overview.metrics = read_metrics(run_dir / "metrics.jsonl")
    if not overview.metrics:
        overview.notes.append("no metrics.jsonl rows yet")
    overview.latest_grid = latest_grid(run_dir)
    overview.wandb = wandb_link(run_dir)
    return overview
