#!/usr/bin/env python
"""Benchmark the style-transfer refiner: seconds per image at 256 and 512 px on this device.

    python scripts/bench_refine.py [--steps 100] [--sizes 256 512] [--batch 1] [--device auto]

Prints one JSON line per size: seconds per image for ``--steps`` optimiser iterations,
seconds per iteration, and the time 500 iterations would take, to compare with the
published figure for the original method: Gatys et al. need about 500 L-BFGS iterations
at 512 px, 22-45 s per image on a 2016 GPU (0.04-0.09 s per iteration). The refiner
runs the same algorithm (VGG19, five Gram layers + conv4_2, L-BFGS), so on a modern GPU
the per-iteration time should be well below that, and on CPU far above it.

The content is a synthetic soft composition and the style a synthetic texture (the speed
does not depend on what is painted).

``--compare MODEL`` instead sets Gatys against the trained transfer network of
``atelier refine-train`` on real images, per image at each size:

    python scripts/bench_refine.py --compare runs/<refine-run>/transfer_net.safetensors \
        --content DIR --style DATASET --weights VGG19_FILE --steps 300 --sizes 256 512

Both aim at the same style target, the mean Gram matrices of the works in ``--style`` (the
network's training target; Gatys gets it as an equal blend of all works, which is the same
target exactly), and both are scored by the same VGG with the same relative losses: the style
loss against that target and the conv4_2 content loss against the input, on the 8-bit output.
Each row gives seconds per image, wall clock and the process's CPU time (Gatys: ``--steps``
L-BFGS iterations at strength 1; the network: one forward pass, after a warm-up pass, best of
3); with ``OMP_NUM_THREADS=1`` the CPU time is what an idle core would take, which keeps the
numbers meaningful on a shared machine. A ``compare`` row gives the speed-ups and the
style-loss ratio. ``--methods gatys`` / ``fast`` runs one side only (the Gatys
rows at 512 px take long on a CPU); ``--save-images DIR`` keeps the outputs. Weights: the real VGG19 file if it can be found
(``--weights`` / ``--weights-dir`` / torch cache / download), or ``--random-weights``
(the same network with random values: identical arithmetic, so identical timing).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torchvision

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from eval.fast_refiner import apply, load_fast_refiner  # noqa: E402
from eval.refine_images import list_image_files, load_image, save_png  # noqa: E402
from eval.style_select import dataset_works  # noqa: E402
from eval.style_transfer import (  # noqa: E402
    CONTENT_LAYER,
    FEATURE_LAYERS,
    STYLE_LAYERS,
    StyleBank,
    TransferSettings,
    content_loss,
    gram_matrix,
    quantise,
    style_loss,
    stylise,
)
from eval.vgg import VGG19Features, load_vgg19  # noqa: E402
from eval.weights import MissingWeightsError  # noqa: E402
from gan.perf import synchronize  # noqa: E402

GATYS_REFERENCE = "Gatys et al.: ~500 L-BFGS iterations at 512 px in 22-45 s per image on a 2016 GPU"


def synthetic_pair(size: int, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A soft gradient with a disc (content batch) and a striped, noisy texture (style)."""
    ramp = torch.linspace(0.2, 0.8, size)
    yy, xx = torch.meshgrid(ramp, ramp, indexing="ij")
    content = torch.stack([xx, yy, 0.5 * torch.ones_like(xx)])
    content[:, (xx - 0.4) ** 2 + (yy - 0.6) ** 2 < 0.03] *= 0.5
    generator = torch.Generator().manual_seed(0)
    stripes = 0.5 + 0.4 * torch.sin(torch.arange(size).float() * 0.8).view(1, 1, size)
    style = (stripes + 0.1 * torch.randn(3, size, size, generator=generator)).clamp(0, 1)
    return content.unsqueeze(0).repeat(batch, 1, 1, 1), style


def build_vgg(args: argparse.Namespace, device: torch.device) -> tuple[VGG19Features, str]:
    """The refiner's VGG19 with real weights, or random ones when asked (same speed)."""
    if args.random_weights:
        state = torchvision.models.vgg19(weights=None).features.state_dict()
        return VGG19Features(state, FEATURE_LAYERS).to(device), "random-init"
    vgg = load_vgg19(FEATURE_LAYERS, weights=args.weights, weights_dir=args.weights_dir, device=device)
    return vgg, vgg.weights_path.name


def time_size(vgg: VGG19Features, size: int, args: argparse.Namespace, device: torch.device) -> dict:
    """Run one timed refinement of a batch at ``size`` px; return the JSON row."""
    content, style = synthetic_pair(size, args.batch)
    content = content.to(device)
    bank = StyleBank([style], torch.ones(args.batch, 1))
    # Warm-up: CUDA context, cuDNN autotuning and allocator growth stay out of the timing.
    stylise(vgg, content, bank, TransferSettings(strength=1.0, steps=2, optimizer=args.optimizer))
    synchronize(device)
    started = time.perf_counter()
    result = stylise(vgg, content, bank, TransferSettings(strength=1.0, steps=args.steps, optimizer=args.optimizer))
    synchronize(device)
    seconds = time.perf_counter() - started
    per_iteration = seconds / max(result.iterations, 1)
    return {
        "benchmark": "refine",
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "size": size,
        "batch": args.batch,
        "optimizer": args.optimizer,
        "iterations": result.iterations,
        "seconds_per_image": round(seconds / args.batch, 3),
        "seconds_per_iteration_per_image": round(per_iteration / args.batch, 4),
        "projected_seconds_per_image_500_iterations": round(500 * per_iteration / args.batch, 1),
        "style_loss_ratio": round(result.style_loss_before[0] / max(result.style_loss_after[0], 1e-12), 2),
        "reference": GATYS_REFERENCE,
    }


@torch.no_grad()
def score(
    vgg: VGG19Features, images: torch.Tensor, content: torch.Tensor, target: dict[str, torch.Tensor], grams: list[dict[str, torch.Tensor]]
) -> dict[str, float]:
    """Scores of 8-bit ``images``, means over the batch: style loss against ``target``, conv4_2
    content loss against ``content``, and the style loss against the nearest single work."""
    features, reference = vgg(quantise(images)), vgg(content)[CONTENT_LAYER]
    n = images.shape[0]
    targets = {layer: target[layer].expand(n, -1, -1) for layer in STYLE_LAYERS}
    per_work = torch.stack([style_loss(features, {layer: g[layer].expand(n, -1, -1) for layer in STYLE_LAYERS}) for g in grams])
    return {
        "style_loss": float(style_loss(features, targets).mean()),
        "content_loss": float(content_loss(features[CONTENT_LAYER], reference).mean()),
        "nearest_work_style_loss": float(per_work.min(dim=0).values.mean()),
    }


def compare_size(vgg: VGG19Features, size: int, args: argparse.Namespace, device: torch.device) -> list[dict]:
    """Gatys and/or the trained network on the first ``--images`` content images at ``size`` px."""
    paths = list_image_files(args.content)[: args.images]
    content = torch.stack([load_image(path, size) for path in paths]).to(device)
    # The works at the size the network was trained with them (its target), never enlarged.
    work_size = size
    if args.compare is not None:
        work_size = min(size, load_fast_refiner(args.compare).training.get("settings", {}).get("image_size", size))
    works = [load_image(path, work_size, allow_upscale=False) for path in dataset_works(args.style)]
    with torch.no_grad():
        grams = [{layer: gram_matrix(vgg(work[None].to(device))[layer])[0] for layer in STYLE_LAYERS} for work in works]
    target = {layer: torch.stack([g[layer] for g in grams]).mean(dim=0) for layer in STYLE_LAYERS}
    common = {
        "benchmark": "refine-compare",
        "device": str(device),
        "threads": torch.get_num_threads(),
        "size": size,
        "images": len(paths),
        "content": str(args.content),
        "style": str(args.style),
        "works": len(works),
        "works_longest_side": work_size,
    }
    input_style = score(vgg, content, content, target, grams)["style_loss"]
    rows = []
    if "gatys" in args.methods:
        bank = StyleBank(works, torch.full((len(paths), len(works)), 1.0 / len(works)))
        settings = TransferSettings(strength=1.0, steps=args.steps, optimizer=args.optimizer)
        synchronize(device)
        started, cpu_started = time.perf_counter(), time.process_time()
        result = stylise(vgg, content, bank, settings)
        synchronize(device)
        seconds = (time.perf_counter() - started) / len(paths)
        cpu_seconds = (time.process_time() - cpu_started) / len(paths)
        rows.append(
            {
                **common,
                "method": f"gatys-{args.optimizer}",
                "iterations": result.iterations,
                "seconds_per_image": round(seconds, 3),
                "cpu_seconds_per_image": round(cpu_seconds, 3),
                "style_loss_input": input_style,
                **score(vgg, result.images, content, target, grams),
            }
        )
        save_outputs(args, f"gatys{args.steps}", size, paths, result.images)
    if "fast" in args.methods:
        refiner = load_fast_refiner(args.compare, device=device)
        apply(refiner, content[:1])  # warm-up: allocator growth and cuDNN autotuning stay out of the timing
        times, cpu_times = [], []
        for _ in range(3):
            synchronize(device)
            started, cpu_started = time.perf_counter(), time.process_time()
            stylised = torch.cat([apply(refiner, content[i : i + 1]) for i in range(len(paths))])
            synchronize(device)
            times.append((time.perf_counter() - started) / len(paths))
            cpu_times.append((time.process_time() - cpu_started) / len(paths))
        rows.append(
            {
                **common,
                "method": "fast-network",
                "model": str(args.compare),
                "model_step": refiner.training.get("step"),
                "seconds_per_image": round(min(times), 4),
                "cpu_seconds_per_image": round(min(cpu_times), 4),
                "style_loss_input": input_style,
                **score(vgg, stylised, content, target, grams),
            }
        )
        save_outputs(args, "fast", size, paths, stylised)
    if len(rows) == 2:
        rows.append(
            {
                **common,
                "method": "compare",
                "speedup": round(rows[0]["seconds_per_image"] / rows[1]["seconds_per_image"], 1),
                "speedup_cpu_time": round(rows[0]["cpu_seconds_per_image"] / rows[1]["cpu_seconds_per_image"], 1),
                "style_loss_ratio_fast_over_gatys": round(rows[1]["style_loss"] / rows[0]["style_loss"], 3),
            }
        )
    return rows


def save_outputs(args: argparse.Namespace, method: str, size: int, paths: list[Path], images: torch.Tensor) -> None:
    """Keep the compared images as PNGs (``--save-images``)."""
    if args.save_images is None:
        return
    for path, image in zip(paths, images):
        save_png(image.cpu(), args.save_images / f"{path.stem}-{size}-{method}.png")


def main(argv: list[str] | None = None) -> int:
    """Parse options, time each size, print one JSON line per size."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512], help="image sizes (px, square) to time")
    parser.add_argument("--steps", type=int, default=100, help="optimiser iterations per timed run")
    parser.add_argument("--batch", type=int, default=1, help="images optimised together (GPU throughput grows with it)")
    parser.add_argument("--optimizer", choices=("lbfgs", "adam"), default="lbfgs", help="optimiser to time")
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, ...")
    parser.add_argument("--weights", type=Path, help="VGG19 state dict file to load")
    parser.add_argument("--weights-dir", type=Path, help="folder holding vgg19-dcbb9e9d.pth")
    parser.add_argument(
        "--random-weights", action="store_true", help="use a random-init VGG19 (same speed) when the real file is not at hand"
    )
    compare = parser.add_argument_group("Gatys vs the trained network (--compare)")
    compare.add_argument("--compare", type=Path, metavar="MODEL", help="transfer network file of `atelier refine-train`")
    compare.add_argument("--content", type=Path, help="folder of content images (the first --images are used)")
    compare.add_argument("--style", type=Path, help="the works: their mean Gram matrices are the target")
    compare.add_argument("--images", type=int, default=1, help="content images per size")
    compare.add_argument("--methods", nargs="+", choices=("gatys", "fast"), default=["gatys", "fast"], help="which side(s) to run")
    compare.add_argument("--save-images", type=Path, metavar="DIR", help="write the compared outputs here")
    compare.add_argument("--out", type=Path, metavar="JSONL", help="also append the rows to this file")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.batch < 1 or any(size < 16 for size in args.sizes):
        parser.error("--steps and --batch must be >= 1 and every size >= 16")
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    try:
        vgg, weights_name = build_vgg(args, device)
    except MissingWeightsError as exc:
        print(f"bench_refine: error: {exc} (or pass --random-weights: timing does not depend on the values)", file=sys.stderr)
        return 1
    if args.compare is not None:
        if args.content is None or args.style is None:
            parser.error("--compare needs --content and --style")
        if args.save_images is not None:
            args.save_images.mkdir(parents=True, exist_ok=True)
    for size in args.sizes:
        rows = compare_size(vgg, size, args, device) if args.compare is not None else [time_size(vgg, size, args, device)]
        for row in rows:
            row["weights"] = weights_name
            print(json.dumps(row), flush=True)
            if args.out is not None:
                with open(args.out, "a", encoding="utf-8") as handle:
                    handle.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
