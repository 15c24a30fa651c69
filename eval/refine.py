"""Refine generated paintings with neural style transfer toward the master's own works.

    atelier refine --input SAMPLES_DIR --style DATASET_OR_IMAGES --out DIR \\
        [--strength 0..1] [--preserve-color] [--steps N] [--size PX]

Each GAN sample is the content image; the style is either the sample's K nearest works
of the master's dataset (``--style data/datasets/<name>``) or explicit images with blend
weights (``--style a.jpg:0.7 --style b.jpg:0.3``). For every sample the refiner writes
``<out>/<stem>.png`` and ``<out>/<stem>.json`` (style loss before/after, content loss
between sample and result, style sources, settings, weights file), plus
``<out>/refine_summary.json``; with ``--run-dir`` or ``--wandb-run`` the numbers and images
also go to Weights & Biases (offline unless WANDB_MODE says otherwise).

With ``--mask`` (one per ``--style`` image, paired in order) each style paints its own region
(:mod:`eval.masks`). With ``--fast MODEL`` a network trained by ``atelier refine-train``
stylises each image in one forward pass instead (:mod:`eval.refine_fast`; no VGG19).

The optimisation itself lives in :mod:`eval.style_transfer`, the network in
:mod:`eval.vgg`, the choice of style images in :mod:`eval.style_select`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Optional, Sequence

import torch
from tqdm import tqdm

from atelier.common.command import CommandParser, fail, fail_write, prog_name, setup_logging
from atelier.common.fileio import atomic_write_bytes, check_writable
from eval.masks import MaskedStyles, load_masks, mask_size_note, pair_masks, uncovered_fraction
from eval.refine_images import RefineInputError, list_image_files, load_image, save_png
from eval.style_select import StyleChoice, StyleRequest, choices_for, nearest_works, parse_style_args
from eval.style_transfer import FEATURE_LAYERS, OPTIMIZERS, StyleBank, TransferResult, TransferSettings, stylise, total_iterations
from eval.vgg import VGG19Features, load_vgg19
from eval.weights import MissingWeightsError, WeightsChecksumError, weights_identity

CMD = "refine"
log = logging.getLogger("eval.refine")

REPORT_FORMAT = "atelier-refine/1"
SUMMARY_NAME = "refine_summary.json"
MIN_SIZE = 16  # VGG19 halves the image four times before conv5_1
DEFAULT_SIZE = 512  # Gatys' working size when --size is not given
_STYLE_CACHE_LIMIT = 64  # decoded style images kept between batches


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``atelier refine``; every option explains itself in --help."""
    defaults = TransferSettings()
    parser = CommandParser(
        prog=prog_name(CMD),
        description="Refine generated paintings with Gatys neural style transfer (VGG19) toward the "
        "master's works. Writes <out>/<stem>.png and a JSON report per sample.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    io = parser.add_argument_group("inputs and outputs")
    io.add_argument("--input", required=True, type=Path, metavar="SAMPLES", help="a folder of generated samples (or one image file)")
    io.add_argument(
        "--style",
        action="append",
        metavar="DATASET_OR_IMAGE[:WEIGHT]",
        help="the master's works: a prepared dataset / folder of images (each sample then uses its --k "
        "nearest works), or one or more image files with optional blend weights, e.g. "
        "--style a.jpg:0.7 --style b.jpg:0.3 (weights are normalised to sum to 1); required unless --fast",
    )
    io.add_argument(
        "--mask",
        action="append",
        metavar="MASK_IMAGE",
        help="one mask per --style image, paired in order (--style a.jpg --mask a.png --style b.jpg --mask b.png): "
        "white = that style, black = not, grey = partly; resized to each sample. A style's weight is then its "
        "region's strength (0 keeps the content there); overlaps blend; pixels no mask covers keep the content",
    )
    io.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder for refined PNGs and JSON reports")

    look = parser.add_argument_group("how strong and how large")
    look.add_argument(
        "--strength",
        type=float,
        default=defaults.strength,
        metavar="S",
        help="0 = output the sample unchanged (no optimisation), 1 = full style transfer; in between, the "
        "style weight is scaled by s*10^(3(s-1)): 0.75 ~ 1/8, 0.5 ~ 1/60, 0.25 ~ 1/700 of full",
    )
    look.add_argument(
        "--preserve-color",
        action="store_true",
        help="luminance-only transfer: optimise the Y channel (YCbCr, BT.601) and keep the sample's own "
        "Cb/Cr chroma, with the style's luminance matched to the sample's mean and std",
    )
    look.add_argument(
        "--steps",
        type=int,
        default=defaults.steps,
        metavar="N",
        help="optimiser iterations (L-BFGS iterations or Adam steps); finer scales of a multi-scale run get half",
    )
    look.add_argument(
        "--size",
        type=int,
        default=None,
        metavar="PX",
        help="working size: samples are resized so their longer side is PX (style images are only ever "
        f"shrunk to it); above --max-single-scale the image is refined coarse to fine. Default: {DEFAULT_SIZE} "
        "(Gatys), each image's own size (--fast)",
    )
    look.add_argument(
        "--max-single-scale",
        type=int,
        default=defaults.max_single_scale,
        metavar="PX",
        help="largest size optimised in one go; bigger sizes start at half, quarter, ... and double up",
    )

    opt = parser.add_argument_group("optimisation (Gatys et al. 2016)")
    opt.add_argument(
        "--optimizer", choices=OPTIMIZERS, default=defaults.optimizer, help="L-BFGS (as in the paper; strong-Wolfe line search) or Adam"
    )
    opt.add_argument("--lr", type=float, default=defaults.lr, help="Adam step size in [0,1] pixel units (ignored by L-BFGS)")
    opt.add_argument("--content-weight", type=float, default=defaults.content_weight, help="weight of the relative conv4_2 content loss")
    opt.add_argument(
        "--style-weight",
        type=float,
        default=defaults.style_weight,
        help="weight of the relative Gram loss over conv1_1..conv5_1 at strength 1",
    )
    opt.add_argument(
        "--tv-weight", type=float, default=defaults.tv_weight, help="weight of the total-variation regulariser at strength 1 (0 disables)"
    )
    opt.add_argument(
        "--pooling",
        choices=("avg", "max"),
        default=defaults.pooling,
        help="VGG19 pooling: average (Gatys' choice, smoother gradients) or the original max",
    )
    opt.add_argument("--batch-size", type=int, default=4, help="samples optimised together (same size only); raise it on a GPU")
    opt.add_argument("--device", default="auto", help="torch device: auto (cuda if available), cpu, cuda, cuda:1, ...")

    pick = parser.add_argument_group("automatic style selection (when --style is a folder)")
    pick.add_argument("--k", type=int, default=3, help="number of nearest works blended (equal weights) per sample")
    pick.add_argument(
        "--select-size", type=int, default=256, metavar="PX", help="size (longer side) at which samples and works are compared"
    )

    fast = parser.add_argument_group("fast transfer network (Johnson et al. 2016)")
    fast.add_argument(
        "--fast",
        type=Path,
        metavar="MODEL",
        help="stylise with a network trained by `atelier refine-train` (OUT/transfer_net.safetensors): one "
        "forward pass per image, any size, no VGG19 needed; --strength blends its output with the sample",
    )

    weights = parser.add_argument_group("pretrained VGG19 weights")
    weights.add_argument(
        "--weights", type=Path, metavar="PATH", help="load this VGG19 state dict file directly (.pth or .safetensors, never unpickled)"
    )
    weights.add_argument(
        "--weights-dir",
        type=Path,
        metavar="DIR",
        help="folder holding vgg19-dcbb9e9d.pth; otherwise the torch hub cache, then a download (unless ATELIER_OFFLINE=1)",
    )

    track = parser.add_argument_group("tracking")
    track.add_argument(
        "--run-dir", type=Path, metavar="DIR", help="log the reports and images to Weights & Biases, with its files under this run folder"
    )
    track.add_argument("--wandb-run", metavar="NAME", help="W&B run name (also turns W&B logging on, files under --out)")
    track.add_argument("--wandb-project", default="atelier", help="W&B project")
    return parser


def settings_from_args(args: argparse.Namespace) -> TransferSettings:
    """TransferSettings from the parsed options, validated (ValueError names the option)."""
    settings = TransferSettings(
        strength=args.strength,
        steps=args.steps,
        optimizer=args.optimizer,
        lr=args.lr,
        content_weight=args.content_weight,
        style_weight=args.style_weight,
        tv_weight=args.tv_weight,
        preserve_color=args.preserve_color,
        max_single_scale=args.max_single_scale,
        pooling=args.pooling,
    )
    try:
        settings.validate()
    except ValueError as exc:
        raise RefineInputError(f"--{str(exc).replace('_', '-')}") from exc
    for name in ("size", "select_size"):
        if getattr(args, name) is not None and getattr(args, name) < MIN_SIZE:
            raise RefineInputError(f"--{name.replace('_', '-')} must be at least {MIN_SIZE} px, got {getattr(args, name)}")
    for name in ("batch_size", "k"):
        if getattr(args, name) < 1:
            raise RefineInputError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    return settings


def list_samples(input_path: Path, out_dir: Path) -> list[Path]:
    """The sample images to refine, refusing inputs the outputs would overwrite."""
    if input_path.is_file():
        samples = [input_path]
    elif input_path.is_dir():
        samples = list_image_files(input_path)
    else:
        raise RefineInputError(f"--input {input_path} does not exist")
    if not samples:
        raise RefineInputError(f"--input {input_path} holds no images")
    if any(sample.parent.resolve() == out_dir.resolve() for sample in samples):
        raise RefineInputError(f"--out {out_dir} is the input folder; choose another so samples are not overwritten")
    stems = [sample.stem for sample in samples]
    duplicate = next((stem for stem in stems if stems.count(stem) > 1), None)
    if duplicate is not None:
        raise RefineInputError(f"--input has several images named {duplicate}.*; their outputs would collide")
    return samples


def pick_device(name: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(name)
    except RuntimeError as exc:
        raise RefineInputError(f"--device {name}: {exc}") from exc


class StyleImages:
    """Style images decoded at the working size, cached across batches (they repeat)."""

    def __init__(self, size: int):
        self.size = size
        self._cache: dict[Path, torch.Tensor] = {}

    def get(self, path: Path) -> torch.Tensor:
        """[3, h, w] in [0, 1], shrunk (never enlarged) to the working size."""
        if path not in self._cache:
            if len(self._cache) >= _STYLE_CACHE_LIMIT:
                self._cache.pop(next(iter(self._cache)))
            image = load_image(path, self.size, allow_upscale=False)
            if min(image.shape[-2:]) < MIN_SIZE:
                raise RefineInputError(f"style image {path} is too small ({image.shape[2]}x{image.shape[1]}); need {MIN_SIZE} px a side")
            self._cache[path] = image
        return self._cache[path]

    def bank(self, choices: Sequence[StyleChoice]) -> StyleBank:
        """The distinct style images of a batch and each sample's blend of them."""
        paths = list(dict.fromkeys(path for choice in choices for path in choice.paths))
        mix = torch.zeros(len(choices), len(paths))
        for row, choice in enumerate(choices):
            for path, weight in zip(choice.paths, choice.weights):
                mix[row, paths.index(path)] += weight
        return StyleBank([self.get(path) for path in paths], mix)


def batches_by_shape(shapes: Sequence[tuple[int, ...]], batch_size: int) -> list[list[int]]:
    """Indices grouped into runs of consecutive same-shape images, at most ``batch_size`` long."""
    groups: list[list[int]] = []
    for index, shape in enumerate(shapes):
        if groups and len(groups[-1]) < batch_size and shapes[groups[-1][0]] == shape:
            groups[-1].append(index)
        else:
            groups.append([index])
    return groups


def image_report(
    sample: Path,
    output: Path,
    choice: StyleChoice,
    result: TransferResult,
    row: int,
    settings: TransferSettings,
    extra: dict,
    seconds: float,
) -> dict:
    """The JSON report written next to one refined image."""
    before, after = result.style_loss_before[row], result.style_loss_after[row]
    return {
        "format": REPORT_FORMAT,
        "sample": str(sample),
        "output": output.name,
        "work_size": [int(result.images.shape[-1]), int(result.images.shape[-2])],  # width, height
        "style": [
            {"path": str(path), "weight": weight, **({"distance": choice.distances[i]} if choice.distances else {})}
            for i, (path, weight) in enumerate(zip(choice.paths, choice.weights))
        ],
        "style_loss_before": before,
        "style_loss_after": after,
        "style_loss_ratio": before / after if after > 0 else None,
        "content_loss": result.content_loss[row],
        "loss_space": "luminance" if settings.preserve_color else "rgb",
        "iterations": result.iterations,
        "scales": [list(size) for size in result.scales],
        "seconds": seconds,
        "settings": {**asdict(settings), **extra},
    }


def write_json(path: Path, data: dict) -> None:
    """Pretty JSON, written atomically."""
    atomic_write_bytes(path, (json.dumps(data, indent=2) + "\n").encode("utf-8"))


def write_output(sample: Path, refined: torch.Tensor, out_dir: Path, unchanged: bool, settings: Optional[dict] = None) -> Path:
    """Save one result; at strength 0 the sample file itself is copied, byte for byte. The PNG keeps
    the sample's disclosure packet and adds a refinement entry with ``settings``."""
    if unchanged:
        target = out_dir / f"{sample.stem}{sample.suffix.lower()}"
        atomic_write_bytes(target, sample.read_bytes())
        return target
    target = out_dir / f"{sample.stem}.png"
    save_png(refined, target, source=sample, refine=settings or {"method": "neural style transfer"})
    return target


def select_styles(request: StyleRequest, vgg: VGG19Features, samples: Sequence[Path], args: argparse.Namespace) -> list[StyleChoice]:
    """Explicit blend for every sample, or each sample's K nearest works (with a progress bar)."""
    if not request.automatic:
        return choices_for(request, len(samples))
    log.info("choosing the %d nearest of %d works in %s for %d samples", args.k, len(request.works), request.folder, len(samples))
    with tqdm(total=len(request.works), desc="style selection", unit="work", disable=None) as bar:
        return nearest_works(vgg, samples, request.works, k=args.k, size=args.select_size, batch=args.batch_size, progress=bar.update)


def refine(args: argparse.Namespace) -> list[dict]:
    """Run the whole refinement described by parsed options; return the per-image reports."""
    settings = settings_from_args(args)
    if args.fast is not None:
        from eval.refine_fast import refine_fast  # noqa: PLC0415 - the fast path needs no VGG19

        return refine_fast(args)
    if args.size is None:
        args.size = DEFAULT_SIZE
    samples = list_samples(args.input, args.out)
    if not args.style:
        raise RefineInputError("no --style given: pass the master's dataset folder or style image(s), or --fast MODEL")
    pair_masks(args.style, args.mask or [])
    request = parse_style_args(args.style, allow_zero=bool(args.mask))
    if args.mask and request.automatic:
        raise RefineInputError("--mask needs explicit --style images (one per mask), not a dataset folder")
    masks = load_masks(args.mask) if args.mask else None  # before VGG19 loads: bad masks fail in seconds
    if masks is not None and uncovered_fraction(masks) > 0:
        log.warning("%.1f%% of the image is covered by no --mask: it keeps the content", 100 * uncovered_fraction(masks))
    device = pick_device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes for hundreds of iterations
    # Decode every sample once up front: a bad file fails in seconds, not after an hour of optimising.
    shapes = [tuple(load_image(sample, args.size).shape) for sample in samples]
    styles = StyleImages(args.size)
    for path in () if request.automatic else request.explicit.paths:
        styles.get(path)  # explicit style images too: fail before the network loads and --out exists
    check_writable(args.out)  # a read-only or full disk fails now, not after the optimisation
    vgg = load_vgg19(FEATURE_LAYERS, weights=args.weights, weights_dir=args.weights_dir, pooling=settings.pooling, device=device)
    choices = select_styles(request, vgg, samples, args)
    extra = {
        "size": args.size,
        "k": args.k if request.automatic else None,
        "select_size": args.select_size,
        "style_mode": "nearest" if request.automatic else "explicit",
        "device": str(device),
        "weights": weights_identity(vgg.weights_path),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    reports: list[dict] = []
    groups = batches_by_shape(shapes, args.batch_size)
    notes: set[str] = set()
    if masks is not None:
        extra = {**extra, "style_mode": "masked", "masks": [str(path) for path in args.mask]}
    with tqdm(total=len(samples), desc="refine", unit="img", disable=None) as images_bar:
        for group in groups:
            batch = torch.stack([load_image(samples[i], args.size) for i in group]).to(device)
            steps = total_iterations(settings, batch.shape[-2], batch.shape[-1])
            started = time.perf_counter()
            if masks is None:
                bank = styles.bank([choices[i] for i in group])
            else:
                note = mask_size_note(tuple(masks.shape[-2:]), tuple(batch.shape[-2:]))
                if note is not None and note not in notes:
                    notes.add(note)
                    log.info(note)
                bank = MaskedStyles([styles.get(path) for path in request.explicit.paths], masks, request.raw_weights)
            with tqdm(total=steps, desc="optimise", unit="it", leave=False, disable=None) as steps_bar:
                result = stylise(vgg, batch, bank, settings, progress=steps_bar.update)
            seconds = (time.perf_counter() - started) / len(group)
            for row, index in enumerate(group):
                output = write_output(
                    samples[index], result.images[row], args.out, settings.strength == 0, {"method": "gatys", **asdict(settings), **extra}
                )
                report = image_report(samples[index], output, choices[index], result, row, settings, extra, seconds)
                if masks is not None:
                    report["style"] = [
                        {**entry, "weight": weight, "mask": str(mask)}
                        for entry, weight, mask in zip(report["style"], request.raw_weights, args.mask)
                    ]
                    report["region_loss_before"] = result.region_loss_before[row]
                    report["region_loss_after"] = result.region_loss_after[row]
                write_json(args.out / f"{samples[index].stem}.json", report)
                reports.append(report)
                log.info(
                    "%s: style loss %.4g -> %.4g, content loss %.4g",
                    output.name,
                    report["style_loss_before"],
                    report["style_loss_after"],
                    report["content_loss"],
                )
            images_bar.update(len(group))
    write_json(args.out / SUMMARY_NAME, {"format": REPORT_FORMAT, "settings": {**asdict(settings), **extra}, "images": reports})
    if args.run_dir is not None or args.wandb_run is not None:
        log_to_wandb(reports, args, {**asdict(settings), **extra})
    return reports


def log_to_wandb(reports: Sequence[dict], args: argparse.Namespace, config: dict) -> None:
    """One W&B run: a row per image (losses + before/after pictures) and the means as summary."""
    import wandb  # imported only when asked for: it is slow to import

    wandb_dir = args.run_dir if args.run_dir is not None else args.out
    wandb_dir.mkdir(parents=True, exist_ok=True)
    run = wandb.init(
        project=args.wandb_project,
        name=args.wandb_run,
        dir=str(wandb_dir),
        job_type="refine",
        config=config,
        mode=os.environ.get("WANDB_MODE", "offline"),
    )
    keys = ("style_loss_before", "style_loss_after", "content_loss")
    for step, report in enumerate(reports):
        run.log(
            {
                **{f"refine/{key}": report[key] for key in keys},
                "refine/sample": wandb.Image(report["sample"]),
                "refine/refined": wandb.Image(str(args.out / report["output"])),
            },
            step=step,
        )
    for key in keys:
        run.summary[f"refine/mean_{key}"] = sum(report[key] for report in reports) / len(reports)
    run.finish()


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``atelier refine``; returns the exit status (README's table: 2 bad input or missing weights)."""
    args = build_parser().parse_args(argv)
    setup_logging()
    try:
        reports = refine(args)
    except (RefineInputError, MissingWeightsError, WeightsChecksumError, FileNotFoundError, ValueError) as exc:
        log.debug("refine failed", exc_info=True)
        return fail(CMD, exc)
    except OSError as exc:  # an output that cannot be written: disk full, read-only, permission
        return fail_write(CMD, exc, args.out)
    print(f"refined {len(reports)} image(s) into {args.out} (reports: *.json, {SUMMARY_NAME})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
