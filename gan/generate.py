"""``atelier generate``: paint new works with a trained generator: PNGs per seed, an optional grid and a latent-walk GIF.

Examples:

    atelier generate --checkpoint runs/my-run --seeds 0-63 --psi 0.7 --out out/ --grid
    atelier generate --checkpoint runs/my-run/generator.safetensors \\
        --out out/ --interpolate 3 17 --frames 48 --fps 24

--checkpoint takes a generator export (generator.safetensors), a checkpoint dir
(RUN/checkpoints/<nimg>/) or a run dir (its export, else its latest checkpoint).

Files: seed0042-psi0.70.png per seed, grid.png with --grid and
interp-seed0003-seed0017-psi0.70.gif with --interpolate; with --noise-mode random or none
the names end in -noise-random / -noise-none, so they never overwrite the const images. Each PNG carries tEXt
metadata: seed, psi, noise mode, resolution and weights_sha256, the SHA-256 of the generator's
tensors (names, shapes, bytes), which is the same whether it came from an export or a checkpoint.
Every file also carries the disclosure (atelier.common.disclosure): an XMP packet saying it is
AI-generated (IPTC DigitalSourceType trainedAlgorithmicMedia), in whose style, from how many
works, with the dataset hash and licence. The command prints where the model card is.

Reproducible: the same seeds, options and checkpoint give byte-identical files on the same
machine and device type. Seed s always gives the same latent (NumPy RandomState(s), as in
NVIDIA's StyleGAN2-ADA), and with --noise-mode random the noise of image s is drawn from
a torch RNG seeded with s, so even "random" noise is repeatable.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
from importlib import metadata as importlib_metadata
from pathlib import Path

import torch
from tqdm import tqdm

from atelier.common.command import CommandParser, fail, fail_write, prog_name, setup_logging
from atelier.common.content_credentials import MIME_TYPES, load_credentials, sign_file
from atelier.common.content_credentials import manifest as c2pa_manifest
from atelier.common.disclosure import build_xmp, disclosure_text
from atelier.common.hashing import weights_sha256
from gan.export import GeneratorLoadError, describe_generator, generator_provenance, load_generator, resolve_source
from gan.model_card import existing_card
from gan.sampling import NOISE_MODES, SeedError, interpolate, iter_images, make_grid, parse_seeds, save_gif, save_png

log = logging.getLogger("atelier.generate")
CMD = "generate"


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(prog=prog_name(CMD), description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--checkpoint",
        required=True,
        metavar="PATH",
        help="generator export (.safetensors), checkpoint dir (G_ema.safetensors + state.json), "
        "run dir (uses its generator.safetensors, else its latest checkpoint), or an NVIDIA "
        "StyleGAN2(-ADA) .pkl file or https URL (read without unpickling code; see docs/transfer.md)",
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="output directory (created if missing)")
    parser.add_argument(
        "--seeds",
        metavar="LIST",
        help="seeds to paint, comma-separated integers and inclusive ranges, e.g. 0-63,70,80-82; one PNG per seed",
    )
    parser.add_argument(
        "--psi",
        type=float,
        default=0.7,
        help="truncation: 1 = no truncation (most varied), smaller pulls w towards the average "
        "(cleaner, less varied), 0 = the average image for every seed (default: %(default)s)",
    )
    parser.add_argument(
        "--noise-mode",
        choices=NOISE_MODES,
        default="const",
        help="per-layer noise: const = the generator's fixed noise maps, random = fresh noise "
        "seeded by each image's seed (still reproducible), none = no noise (default: %(default)s)",
    )
    parser.add_argument("--grid", action="store_true", help="also write grid.png tiling all seeds' images")
    parser.add_argument("--grid-cols", type=int, metavar="N", help="columns of the grid (default: near-square)")
    parser.add_argument(
        "--interpolate",
        nargs=2,
        type=int,
        metavar=("SEED_A", "SEED_B"),
        help="also write a GIF walking from SEED_A to SEED_B (spherical interpolation in z)",
    )
    parser.add_argument("--frames", type=int, default=60, metavar="N", help="frames of the --interpolate GIF (default: %(default)s)")
    parser.add_argument("--fps", type=float, default=24.0, help="frames per second of the --interpolate GIF (default: %(default)s)")
    parser.add_argument("--batch", type=int, default=16, metavar="N", help="images per forward pass (default: %(default)s)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto = cuda when available, else cpu (default: %(default)s)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument(
        "--c2pa-cert",
        metavar="PEM",
        help="also sign every file with C2PA content credentials: this PEM certificate chain (signer first; "
        "needs `pip install 'atelier[c2pa]'`; signed files differ from run to run)",
    )
    parser.add_argument("--c2pa-key", metavar="PEM", help="the unencrypted PEM private key of --c2pa-cert")
    parser.add_argument("--c2pa-tsa", metavar="URL", help="RFC 3161 time-stamp authority for the C2PA signature (optional)")
    return parser


def resolve_device(name: str) -> torch.device:
    """Turn --device into a torch.device; a CUDA request without CUDA is a one-line error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ValueError(f"--device {name!r} is not a device (use cpu, cuda, cuda:N or auto)") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine")
    return device


def _make_deterministic() -> None:
    # cuDNN may otherwise pick different (non-bit-identical) algorithms from run to run.
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    torch.use_deterministic_algorithms(True, warn_only=True)


def _check_args(args: argparse.Namespace) -> None:
    if args.seeds is None and args.interpolate is None:
        raise ValueError("nothing to do: give --seeds and/or --interpolate SEED_A SEED_B")
    if args.grid and args.seeds is None:
        raise ValueError("--grid needs --seeds")
    for name, value, low in (("--batch", args.batch, 1), ("--frames", args.frames, 2), ("--grid-cols", args.grid_cols, 1)):
        if value is not None and value < low:
            raise ValueError(f"{name} must be at least {low}, got {value}")
    if args.fps <= 0:
        raise ValueError(f"--fps must be positive, got {args.fps}")
    if not math.isfinite(args.psi):  # nan paints a black image, inf an overflow
        raise ValueError(f"--psi must be a finite number, got {args.psi}")
    if args.interpolate and min(args.interpolate) < 0:
        raise ValueError(f"--interpolate seeds must be non-negative, got {args.interpolate}")
    if bool(args.c2pa_cert) != bool(args.c2pa_key):
        raise ValueError("--c2pa-cert and --c2pa-key go together")
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise ValueError(f"--out {args.out} exists and is not a directory")


def _software() -> str:
    try:
        return f"atelier {importlib_metadata.version('atelier')}"
    except importlib_metadata.PackageNotFoundError:
        return "atelier"


def noise_suffix(noise_mode: str) -> str:
    """File-name suffix for a noise mode: none for the default (const), so the usual names stay short."""
    return "" if noise_mode == "const" else f"-noise-{noise_mode}"


def run(args: argparse.Namespace) -> list[Path]:
    """Load the generator and write every requested file; returns the written paths."""
    _check_args(args)
    seeds = parse_seeds(args.seeds) if args.seeds is not None else []
    device = resolve_device(args.device)
    credentials = load_credentials(args.c2pa_cert, args.c2pa_key, args.c2pa_tsa) if args.c2pa_cert else None
    _make_deterministic()
    info = describe_generator(args.checkpoint)
    source = resolve_source(args.checkpoint)
    provenance = generator_provenance(source)
    G = load_generator(args.checkpoint, device=device)
    identity = weights_sha256(G)
    log.info(
        "generator: %s (%s, %d px, kimg %s, weights_sha256 %s) on %s",
        info["weights"],
        info["kind"],
        info["resolution"],
        info.get("kimg", "?"),
        identity[:12],
        device,
    )
    card = existing_card(source)
    print(
        f"model card: {card}"
        if card
        else f"model card: none for {info['weights']} (every export written by training or `atelier convert` has one)"
    )
    disclosure = disclosure_text(provenance)
    recipe = {"psi": args.psi, "noise_mode": args.noise_mode, "resolution": info["resolution"], "generator_kimg": info.get("kimg")}

    def packet(**settings) -> str:
        return build_xmp(provenance, identity, {**settings, **recipe}, disclosure)

    def signed(path: Path, **settings) -> Path:
        if credentials is not None:  # C2PA content credentials on top of the XMP packet
            definition = c2pa_manifest(provenance, identity, {**settings, **recipe}, path.name, MIME_TYPES[path.suffix])
            sign_file(path, credentials, definition)
        return path

    out = Path(args.out)
    base_text = {
        "psi": f"{args.psi:g}",
        "noise_mode": args.noise_mode,
        "resolution": str(info["resolution"]),
        "weights_sha256": identity,
        "Software": _software(),
    }
    if "kimg" in info:
        base_text["generator_kimg"] = str(info["kimg"])
    written: list[Path] = []
    images = []
    with tqdm(total=len(seeds), unit="img", desc="generate", disable=args.no_progress or not seeds) as bar:
        for seed, image in iter_images(G, seeds, args.psi, args.noise_mode, args.batch, device, on_batch=bar.update):
            name = f"seed{seed:04d}-psi{args.psi:.2f}{noise_suffix(args.noise_mode)}.png"
            written.append(signed(save_png(image, out / name, {"seed": str(seed), **base_text}, packet(seed=seed)), seed=seed))
            if args.grid:
                images.append(image)
    if args.grid:
        grid_text = {"seeds": args.seeds, **base_text}
        grid = save_png(make_grid(images, args.grid_cols), out / "grid.png", grid_text, packet(seeds=args.seeds))
        written.append(signed(grid, seeds=args.seeds))
    if args.interpolate:
        seed_a, seed_b = args.interpolate
        with tqdm(total=args.frames, unit="frame", desc="interpolate", disable=args.no_progress) as bar:
            frames = interpolate(G, seed_a, seed_b, args.frames, args.psi, args.noise_mode, args.batch, device, on_batch=bar.update)
        gif = out / f"interp-seed{seed_a:04d}-seed{seed_b:04d}-psi{args.psi:.2f}{noise_suffix(args.noise_mode)}.gif"
        walk = packet(interpolate=f"{seed_a}-{seed_b}", frames=args.frames)
        written.append(
            signed(save_gif(frames, gif, args.fps, xmp=walk, comment=disclosure), interpolate=f"{seed_a}-{seed_b}", frames=args.frames)
        )
    log.info("wrote %d file(s) to %s", len(written), out)
    return written


def main(argv: list[str] | None = None) -> int:
    """``atelier generate``; returns the exit status (README's table)."""
    setup_logging()
    # Deterministic cuBLAS needs this before CUDA initialises.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except (GeneratorLoadError, SeedError, ValueError) as exc:
        return fail(CMD, exc)
    except OSError as exc:  # e.g. a full disk or a read-only --out; each file is written atomically
        return fail_write(CMD, exc, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
