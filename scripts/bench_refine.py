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
does not depend on what is painted). Weights: the real VGG19 file if it can be found
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

from eval.style_transfer import FEATURE_LAYERS, StyleBank, TransferSettings, stylise  # noqa: E402
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
    parser.add_argument("--random-weights", action="store_true", help="use a random-init VGG19 (same speed) when the real file is not at hand")
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
    for size in args.sizes:
        row = time_size(vgg, size, args, device)
        row["weights"] = weights_name
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
