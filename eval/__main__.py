"""Score a generator against its training set: FID / KID / precision-recall, LPIPS diversity, memorisation.

    python -m eval --checkpoint runs/my-run --dataset data/datasets/monet-256 --out report.json
    python -m eval --samples out/samples --dataset data/datasets/monet-256 --metrics kid,nn --out r.json

KID is the headline number for small datasets (a master's few hundred works). The
memorisation check writes a side-by-side grid (sample | nearest real work) of the
closest samples next to the report (<out stem>_nn.png).

SWD (--metrics swd: ProGAN's sliced Wasserstein distance on Laplacian-pyramid patches) needs
no pretrained network and works offline. fd_dinov2 / kid_dinov2 / pr_dinov2 are FD, KID and
precision/recall in DINOv2 feature space (timm's ViT, safetensors from the Hugging Face Hub).
Every summary line names the feature space its numbers come from.

Pretrained feature extractors (Inception-v3 for FID/KID, VGG16 for precision/recall,
AlexNet for LPIPS, DINOv2 for the *_dinov2 metrics) download on first use into the torch hub cache. Offline, put the
files named in the error into --weights-dir (or the torch hub cache) and set
ATELIER_OFFLINE=1 to never try the network.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from pathlib import Path

from atelier.common.command import CommandParser, fail, fail_write, prog_name, setup_logging
from atelier.common.fileio import check_writable
from eval.evaluate import ALL_METRICS, EvalOptions, evaluate, parse_metrics
from eval.report import to_json, write_report
from eval.samples import FolderImages
from eval.weights import MissingWeightsError, WeightsChecksumError

CMD = "eval"
log = logging.getLogger("eval")

DEFAULT_NUM_SAMPLES = 10000
DEFAULT_LPIPS_SAMPLES = 1000


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(prog=prog_name(CMD), description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="generator export (.safetensors), checkpoint dir or run dir")
    source.add_argument("--samples", help="folder of already generated images (PNG/JPEG) to score instead")
    parser.add_argument("--dataset", required=True, help="prepared dataset dir (dataset.json + PNGs): the reference")
    parser.add_argument("--out", required=True, help="report JSON path (written atomically)")
    parser.add_argument(
        "--metrics", default=",".join(ALL_METRICS), help=f"comma-separated subset of {','.join(ALL_METRICS)} (default: all)"
    )
    parser.add_argument(
        "--num-samples",
        type=int,
        help=f"generated images for FID/KID/precision-recall and SWD (default: {DEFAULT_NUM_SAMPLES} from "
        "--checkpoint, every image of --samples; a folder with fewer is an error)",
    )
    parser.add_argument(
        "--lpips-samples",
        type=int,
        help=f"generated images for LPIPS diversity and the memorisation check (default: "
        f"{DEFAULT_LPIPS_SAMPLES}, at most every image of --samples)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the latents and of KID's subsets (default: 0)")
    parser.add_argument("--weights-dir", help="folder holding pretrained weight files (searched before the torch cache)")
    parser.add_argument("--cache-dir", help="where reference statistics are cached (default: ~/.cache/atelier/fidelity)")
    parser.add_argument("--kid-subset-size", type=int, help="KID subset size (default: min(1000, #generated, #dataset images))")
    parser.add_argument("--kid-subsets", type=int, default=100, help="number of KID subsets (default: 100)")
    parser.add_argument("--lpips-net", choices=("alex", "vgg"), default="alex", help="LPIPS backbone (default: alex)")
    parser.add_argument(
        "--dinov2-model",
        choices=("vitl14", "vits14"),
        default="vitl14",
        help="DINOv2 backbone of fd_dinov2/kid_dinov2/pr_dinov2 (default: vitl14, as dgm-eval)",
    )
    parser.add_argument("--lpips-resolution", type=int, default=128, help="images are resized to this size for LPIPS (default: 128)")
    parser.add_argument("--worst-k", type=int, default=16, help="rows in the nearest-neighbour grid (default: 16)")
    parser.add_argument(
        "--nn-percentile",
        type=float,
        default=5.0,
        help="percentile of the training set's own nearest-neighbour distances used to calibrate the copy threshold (default: 5)",
    )
    parser.add_argument(
        "--nn-factor", type=float, default=0.5, help="flag a sample closer than this factor x that percentile (default: 0.5)"
    )
    parser.add_argument("--psi", type=float, default=1.0, help="truncation psi for generated samples (default: 1, none)")
    parser.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default: 32)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("-v", "--verbose", action="store_true", help="progress bars and debug logging")
    return parser


def sample_counts(args: argparse.Namespace, folder_size: int | None) -> None:
    """Fill in --num-samples / --lpips-samples; a samples folder must hold as many as asked for.

    Scoring 10 images when 10000 were asked for would give a number that looks like the
    standard one but is not (FID in particular is strongly biased at small N).
    """
    if folder_size is None:
        args.num_samples = DEFAULT_NUM_SAMPLES if args.num_samples is None else args.num_samples
        args.lpips_samples = DEFAULT_LPIPS_SAMPLES if args.lpips_samples is None else args.lpips_samples
        return
    for name, default in (("num_samples", folder_size), ("lpips_samples", min(DEFAULT_LPIPS_SAMPLES, folder_size))):
        asked = getattr(args, name)
        if asked is not None and asked > folder_size:
            raise ValueError(
                f"--samples {args.samples} holds {folder_size} images, fewer than --{name.replace('_', '-')} {asked}: "
                f"generate more or lower --{name.replace('_', '-')}"
            )
        setattr(args, name, default if asked is None else asked)


def options_from_args(args: argparse.Namespace, grid_path: Path) -> EvalOptions:
    import torch

    for name in ("num_samples", "lpips_samples", "kid_subsets", "batch_size", "worst_k", "lpips_resolution"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    for name in ("psi", "nn_percentile", "nn_factor"):
        if not math.isfinite(getattr(args, name)):
            raise ValueError(f"--{name.replace('_', '-')} must be a finite number, got {getattr(args, name)}")
    return EvalOptions(
        metrics=parse_metrics(args.metrics),
        num_samples=args.num_samples,
        lpips_samples=args.lpips_samples,
        seed=args.seed,
        weights_dir=args.weights_dir,
        cache_dir=args.cache_dir,
        kid_subset_size=args.kid_subset_size,
        kid_subsets=args.kid_subsets,
        lpips_net=args.lpips_net,
        dinov2_model=args.dinov2_model,
        lpips_resolution=args.lpips_resolution,
        nn_percentile=args.nn_percentile,
        nn_factor=args.nn_factor,
        worst_k=args.worst_k,
        grid_path=str(grid_path),
        batch_size=args.batch_size,
        psi=args.psi,
        device=args.device or ("cuda" if torch.cuda.is_available() else "cpu"),
        verbose=args.verbose,
    )


def main(argv: list[str] | None = None) -> int:
    """``atelier eval``; returns the exit status (README's table)."""
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    out = Path(args.out)
    try:  # before any sampling: a read-only or full disk must not cost hours of metrics first
        check_writable(out.parent)
    except OSError as exc:
        return fail_write(CMD, exc, out)
    try:
        folder = FolderImages(args.samples) if args.samples else None
        sample_counts(args, len(folder) if folder is not None else None)
        options = options_from_args(args, out.with_name(f"{out.stem}_nn.png"))
        if args.checkpoint:
            from gan.export import load_generator

            generator = load_generator(args.checkpoint, device=options.device)
            report = evaluate(args.dataset, options, generator=generator, generator_path=args.checkpoint)
        else:
            report = evaluate(args.dataset, options, samples=folder, samples_dir=args.samples)
    except (MissingWeightsError, WeightsChecksumError, ValueError) as exc:
        return fail(CMD, exc)
    try:
        write_report(report, out)
    except OSError as exc:  # the disk filled up while computing
        return fail_write(CMD, exc, out)
    log.info("report written to %s", out)
    print(to_json(report)) if args.verbose else _print_summary(report)
    if args.checkpoint:
        _print_model_card(args.checkpoint, out, report)
    return 0


def _print_model_card(checkpoint: str, report_path: Path, report) -> None:
    """Put this report into the export's model card (when it scored the export's weights) and say where it is."""
    import json

    from gan.export import resolve_source
    from gan.model_card import existing_card, update_with_eval

    source = resolve_source(checkpoint)
    try:
        card = update_with_eval(source, report_path, json.loads(to_json(report)))
    except (OSError, ValueError) as exc:  # the report is written; the card is a convenience
        log.warning("model card not updated: %s", exc)
        card = None
    card = card or existing_card(source)
    print(f"model card: {card}" if card else "model card: none (these weights are not an atelier export)")


FID_MIN_IMAGES = 2048  # below this many images per side the 2048-d covariance is rank-deficient


def summary_lines(report) -> list[str]:
    """What was measured, each number with the sample sizes and reference set it rests on."""
    lines = []
    reference = f"the {report.dataset} dataset"
    if report.fidelity:
        f = report.fidelity
        numbers = " ".join(f"{k}={v:.6g}" for k, v in f.metrics.items())
        kid = f" (kid_subset_size={f.kid_subset_size})" if f.kid_subset_size else ""
        space = ", ".join(w.extractor for w in f.weights)
        lines.append(f"{numbers}{kid} (features: {space}): {f.num_generated} generated vs {f.num_reference} real images of {reference}")
        if "fid" in f.metrics and min(f.num_generated, f.num_reference) < FID_MIN_IMAGES:
            lines.append(
                f"note: FID from fewer than {FID_MIN_IMAGES} images a side is biased upwards and not "
                "comparable with published values; KID is the number to compare"
            )
    if report.swd:
        s = report.swd
        levels = " ".join(f"{resolution}px={value:.2f}" for resolution, value in s.levels.items())
        lines.append(
            f"swd={s.swd:.2f} (x10^3; per level {levels}; {s.feature_space}): "
            f"{s.num_generated} generated vs {s.num_reference} real images of {reference}"
        )
    if report.dinov2:
        g = report.dinov2
        numbers = " ".join(f"{k}={v:.6g}" for k, v in g.metrics.items())
        kid = f" (kid_subset_size={g.kid_subset_size})" if g.kid_subset_size else ""
        lines.append(
            f"{numbers}{kid} (features: {g.feature_space}): {g.num_generated} generated vs {g.num_reference} real images of {reference}"
        )
    if report.diversity:
        d = report.diversity
        train = f"{d.reference_lpips_diversity:.4f} over {d.num_reference} real works" if d.reference_lpips_diversity is not None else "n/a"
        lines.append(f"lpips_div={d.lpips_diversity:.4f} over {d.num_samples} samples (training set: {train})")
    if report.memorisation:
        m = report.memorisation
        lines.append(
            f"memorisation: {m.num_flagged}/{m.num_samples} samples flagged as near-copies of the "
            f"{m.num_reference} real works ({m.flagged_fraction:.1%}); "
            f"closest pairs (sample | nearest real work): {m.grid}"
        )
    return lines


def _print_summary(report) -> None:
    print("\n".join(summary_lines(report)))


run = main  # the name this command had before `atelier eval`

if __name__ == "__main__":
    sys.exit(main())
