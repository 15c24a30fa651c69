"""Benchmark evaluation throughput: generator samples/s and Inception feature extraction samples/s.

Prints one JSON line. The generator is a trained export (``--generator``, anything
``gan.export.load_generator`` accepts) or, without one, a randomly initialised generator
of the preset's architecture (speed does not depend on the weights). Feature extraction
uses the FID/KID Inception-v3 through ``eval.features`` with the weights that
``eval.weights`` resolves (``--weights-dir``, then the torch cache; never a download);
when none is found, or with ``--random-inception``, it times a randomly initialised
Inception of the same architecture, and the output says so (``inception_weights``).

Examples::

    python scripts/bench_eval.py --preset configs/smoke.yaml --batch 16 --num 64
    python scripts/bench_eval.py --generator runs/my-run --weights-dir ~/weights --batch 64 --num 1024
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Optional
from unittest import mock

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

log = logging.getLogger("bench_eval")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bench_eval.py",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Output keys: device, generator, resolution, batch, generation_samples_per_s, "
        "inception_weights, features_samples_per_s, peak_memory_gb, commit.",
    )
    p.add_argument("--generator", help="generator export / checkpoint dir / run dir (default: random init from --preset)")
    p.add_argument("--preset", type=Path, help="YAML preset for the random-init generator (default: built-in defaults)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override for the random-init generator, e.g. --set data.resolution=64 (repeatable)",
    )
    p.add_argument("--weights-dir", help="folder holding the Inception weights file (eval.weights names it)")
    p.add_argument("--random-inception", action="store_true", help="time a randomly initialised Inception even if weights are found")
    p.add_argument("--skip-features", action="store_true", help="time generation only")
    p.add_argument("--batch", type=int, default=32, help="images per forward pass (generation and features)")
    p.add_argument("--num", type=int, default=256, help="images timed per measurement (after one warm-up batch)")
    p.add_argument(
        "--modconv",
        choices=["grouped", "batched"],
        default="grouped",
        help="modulated-conv implementation for generation (grouped is the networks' default)",
    )
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32", help="autocast dtype for both passes")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    return p


def random_generator(preset: Optional[Path], overrides: list[str], device):
    from gan.config import load_config
    from gan.networks import Generator

    cfg = load_config(preset, overrides)
    return Generator(cfg.model, cfg.data.resolution).to(device).eval().requires_grad_(False)


def random_inception(device):
    """torch-fidelity's Inception-v3 architecture with random weights (no file, no download)."""
    from torch_fidelity import feature_extractor_inceptionv3 as fe

    from eval.features import INCEPTION_FEATURE

    # The constructor always loads pretrained weights; stub the loading out to get the bare architecture.
    with (
        mock.patch.object(fe, "load_state_dict_from_url", return_value={}),
        mock.patch.object(fe.FeatureExtractorInceptionV3, "load_state_dict", lambda self, state: None),
    ):
        model = fe.FeatureExtractorInceptionV3("inception-v3-compat", [INCEPTION_FEATURE])
    return model.to(device).eval()


def inception(args: argparse.Namespace, device):
    """(extractor, description of the weights used)."""
    from eval import weights as W
    from eval.features import inception_extractor

    if not args.random_inception:
        try:
            path = W.resolve_weights(W.INCEPTION_V3, args.weights_dir, download=False)
        except W.MissingWeightsError as exc:
            log.warning("%s; timing a random-init Inception instead", exc)
        else:
            return inception_extractor(path, device), f"file {path}"
    return random_inception(device), "random-init (no weights file used)"


def throughput(fn, batch: int, num: int, device) -> float:
    """Samples/s of ``fn(batch)`` over ``num`` samples after one warm-up call."""
    from gan.perf import synchronize

    fn(batch)
    synchronize(device)
    done, start = 0, time.perf_counter()
    while done < num:
        fn(min(batch, num - done))
        done += min(batch, num - done)
    synchronize(device)
    return done / (time.perf_counter() - start)


def run_benchmark(args: argparse.Namespace) -> dict:
    import torch
    from bench_train import device_name, git_commit, peak_memory_gb  # same folder

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[args.precision]
    autocast = lambda: torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)  # noqa: E731

    if args.generator:
        from gan.export import load_generator

        G, source = load_generator(args.generator, device=device), args.generator
    else:
        G, source = random_generator(args.preset, args.overrides, device), "random-init"
    G.set_fused_modconv(args.modconv == "grouped")
    gen = torch.Generator(device=device).manual_seed(0)

    @torch.no_grad()
    def generate(n: int) -> torch.Tensor:
        z = torch.randn([n, G.z_dim], device=device, generator=gen)
        with autocast():
            img = G(z, noise_mode="const")
        return (img.float() * 127.5 + 128).clamp(0, 255).to(torch.uint8)

    result = {
        "device": device_name(device),
        "generator": source,
        "resolution": G.resolution,
        "batch": args.batch,
        "num": args.num,
        "precision": args.precision,
        "modconv": args.modconv,
        "G_params": sum(p.numel() for p in G.parameters()),
    }
    result["generation_samples_per_s"] = round(throughput(generate, args.batch, args.num, device), 2)
    if not args.skip_features:
        extractor, weights = inception(args, device)
        images = generate(args.batch)  # uint8 [N, 3, R, R]; the extractor resizes to 299 itself

        @torch.no_grad()
        def features(n: int) -> torch.Tensor:
            with autocast():
                return extractor(images[:n])[0]

        result["inception_weights"] = weights
        result["features_samples_per_s"] = round(throughput(features, args.batch, args.num, device), 2)
    result["peak_memory_gb"] = round(peak_memory_gb(device), 3)
    result["torch"] = torch.__version__
    result["commit"] = git_commit()
    return result


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.batch <= 0 or args.num <= 0:
        print("error: --batch and --num must be positive", file=sys.stderr)
        return 2
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from gan.config import ConfigError

    try:
        result = run_benchmark(args)
    except (ConfigError, FileNotFoundError, ValueError) as exc:
        print(f"error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 2
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
