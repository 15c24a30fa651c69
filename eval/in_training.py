"""Metrics during training: the hook the training loop calls every ``metrics.every_kimg``.

Runs on the main process only (the caller checks ``accelerator.is_main_process``; the
others wait at a barrier): torch-fidelity has no distributed mode, and at the sample
counts used in training a single GPU takes seconds. Writes the full report to
``RUN_DIR/metrics/kimg<kimg>.json`` and the nearest-neighbour panel to
``RUN_DIR/metrics/nn-kimg<kimg>.png``; returns flat scalars for metrics.jsonl / W&B.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import NamedTuple, Optional

import torch

from eval import weights as W
from eval.evaluate import EvalOptions, evaluate, weights_needed
from eval.report import EvalReport, write_report

log = logging.getLogger(__name__)
_SKIPPED: set[str] = set()  # metrics already reported as skipped for missing weights (once per process)


class TrainingMetrics(NamedTuple):
    scalars: dict[str, float]  # e.g. {"kid": ..., "lpips_div": ..., "nn_flagged_fraction": ...}
    nn_panel: Optional[Path]  # sample | nearest real work image, when "nn" ran
    report: Path  # the full JSON report of this evaluation


def scalars_of(report: EvalReport) -> dict[str, float]:
    """The numbers worth a curve on the dashboard, with stable names."""
    out: dict[str, float] = {}
    if report.fidelity:
        names = {"fid": "fid", "kid_mean": "kid", "kid_std": "kid_std", "precision": "precision", "recall": "recall"}
        out.update({names[k]: v for k, v in report.fidelity.metrics.items() if k in names})
    if report.diversity:
        out["lpips_div"] = report.diversity.lpips_diversity
        if report.diversity.reference_lpips_diversity is not None:
            out["lpips_div_train"] = report.diversity.reference_lpips_diversity
    if report.swd:  # x 10^3, the mean over pyramid levels and each level (swd_32, swd_16, ...)
        out["swd"] = report.swd.swd
        out.update({f"swd_{resolution}": value for resolution, value in report.swd.levels.items()})
    if report.dinov2:
        names = {
            "fd_dinov2": "fd_dinov2",
            "kid_dinov2_mean": "kid_dinov2",
            "precision_dinov2": "precision_dinov2",
            "recall_dinov2": "recall_dinov2",
        }
        out.update({names[k]: v for k, v in report.dinov2.metrics.items() if k in names})
    if report.memorisation:
        out["nn_flagged_fraction"] = report.memorisation.flagged_fraction
        if report.memorisation.worst:
            out["nn_min_lpips"] = min(n.lpips_distance for n in report.memorisation.worst)
    return out


def runnable_metrics(metrics: list[str], weights_dir: Optional[str]) -> list[str]:
    """The metrics whose pretrained weights are at hand (or download); the others are skipped with
    one warning each, so an offline run still gets its weight-free curves (SWD)."""
    kept = []
    for metric in metrics:
        try:
            W.resolve_all(weights_needed([metric]), weights_dir)
        except W.MissingWeightsError as exc:
            if metric not in _SKIPPED:
                _SKIPPED.add(metric)
                log.warning("in-training metric %s skipped: %s", metric, exc)
            continue
        kept.append(metric)
    return kept


def run_training_metrics(
    G_ema: torch.nn.Module,
    metrics_cfg,
    dataset_path: str | Path,
    run_dir: str | Path,
    kimg: float,
    device: torch.device | str,
    seed: int = 0,
) -> TrainingMetrics:
    """Evaluate ``G_ema`` with ``metrics_cfg`` (gan.config.MetricsConfig) against the training dataset.

    ``metrics_cfg.num_samples`` images feed KID/FID/PR and at most 256 of them the LPIPS and
    memorisation checks (pairwise work grows quadratically). A fixed ``seed`` makes curves
    comparable across ticks. The generator's train/eval mode is restored afterwards.
    """
    out_dir = Path(run_dir) / "metrics"
    tag = f"kimg{kimg:08.1f}"
    metrics = runnable_metrics(list(metrics_cfg.metrics), metrics_cfg.weights_dir)
    if not metrics:
        raise W.MissingWeightsError(f"no metric of {list(metrics_cfg.metrics)} has its weights (see the warnings)")
    options = EvalOptions(
        metrics=metrics,
        num_samples=metrics_cfg.num_samples,
        lpips_samples=min(metrics_cfg.num_samples, 256),
        seed=seed,
        weights_dir=metrics_cfg.weights_dir,
        grid_path=str(out_dir / f"nn-{tag}.png"),
        worst_k=8,
        device=str(device),
    )
    was_training = G_ema.training
    try:
        report = evaluate(dataset_path, options, generator=G_ema)
    finally:
        G_ema.train(was_training)
    report.extra["kimg"] = kimg
    report_path = write_report(report, out_dir / f"{tag}.json")
    panel = Path(report.memorisation.grid) if report.memorisation and report.memorisation.grid else None
    return TrainingMetrics(scalars_of(report), panel, report_path)
