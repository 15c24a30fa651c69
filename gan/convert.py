"""``atelier convert``: turn an NVIDIA StyleGAN2-ADA / StyleGAN2 (TF) ``.pkl`` into atelier files, once.

    atelier convert ffhq.pkl --out models/ffhq.safetensors
    atelier convert https://.../metfaces.pkl --out models/metfaces.safetensors --checkpoint-dir models/metfaces-ckpt

The pickle is read by gan.nvidia's allow-list reader (nothing in it is run) and converted to
atelier's networks. ``--out`` is a generator export (G_ema as safetensors + JSON metadata: the
architecture, the pickle's name, format and sha256), which ``generate``, ``eval``, ``refine`` and
the studio load without ever touching the pickle again. ``--checkpoint-dir`` also writes G, D
and G_ema as an atelier checkpoint dir (safetensors + ``state.json``) for ``train --init-from``.
Files are written under a temp name and renamed when complete.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from pathlib import Path
from typing import Optional

from atelier.common.command import CommandParser, fail, fail_write, prog_name, setup_logging
from atelier.common.errors import AtelierError, ExitCode
from atelier.common.fileio import atomic_write, atomic_write_text
from atelier.common.hashing import file_sha256

log = logging.getLogger("atelier.convert")
CMD = "convert"


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(prog=prog_name(CMD), description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="an NVIDIA network pickle (.pkl) or an https URL of one")
    parser.add_argument("--out", required=True, type=Path, metavar="FILE.safetensors", help="the generator export to write (G_ema)")
    parser.add_argument(
        "--checkpoint-dir", type=Path, metavar="DIR", help="also write G, D and G_ema as an atelier checkpoint dir (for train --init-from)"
    )
    parser.add_argument("--force", action="store_true", help="overwrite existing outputs")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def convert(source: str, out: Path, checkpoint_dir: Optional[Path] = None, force: bool = False) -> dict:
    """Read, convert and write; returns the export's metadata. AtelierError (one line) on bad input."""
    from gan.checkpoint import CHECKPOINTS_DIR, NETWORK_FILES, STATE_FILE
    from gan.checkpoint import FORMAT as CHECKPOINT_FORMAT
    from gan.export import save_generator
    from gan.nvidia import source as nvidia
    from gan.nvidia.convert import build_network

    if out.suffix != ".safetensors":
        raise AtelierError(f"--out {out}: an export is a .safetensors file")
    for target in (out, checkpoint_dir):
        if target is not None and target.exists() and not force:
            raise AtelierError(f"{target} exists; pass --force to overwrite it")
    try:
        path, url, digest = nvidia.localize(source)
        if not path.is_file():
            raise AtelierError(f"{source}: no such file")
        if not nvidia.is_nvidia_pickle(path):
            raise AtelierError(f"{source}: not a .pkl file (atelier converts NVIDIA network pickles)")
        nets = nvidia.converted(path)
    except AtelierError:
        raise
    except ValueError as exc:  # PickleRefused, UnsupportedNetwork, DownloadError: one line each
        raise AtelierError(str(exc)) from None
    digest = digest or file_sha256(path)
    origin = {"file": path.name, "format": nets.format, "sha256": digest, **({"url": url} if url else {})}
    G_ema = build_network(nets, "G_ema")
    meta = {"nvidia": origin, "fp16_resolutions_in_source": nets.arch.num_fp16_res}
    save_generator(G_ema, nets.arch.resolution, nets.arch.model, out, extra_meta=meta)
    log.info("wrote %s (%s, %d px, from %s sha256 %s)", out, nets.format, nets.arch.resolution, path.name, digest)
    if checkpoint_dir is not None:
        from safetensors.torch import save_file

        checkpoint_dir.mkdir(parents=True, exist_ok=True)
        for name in ("G", "D", "G_ema"):
            state = getattr(nets, name) if getattr(nets, name) is not None else None
            if state is None:
                raise AtelierError(f"{source}: the pickle has no {name}, so no checkpoint dir can be written")
            tensors = {k: v.contiguous() for k, v in state.items()}
            atomic_write(checkpoint_dir / NETWORK_FILES[name], lambda tmp, t=tensors: save_file(t, str(tmp)))
        state_json = {
            "format": CHECKPOINT_FORMAT,
            "model": dataclasses.asdict(nets.arch.model),
            "resolution": nets.arch.resolution,
            "img_channels": nets.arch.img_channels,
            "nvidia": origin,
            "progress": {"cur_nimg": 0},
        }
        atomic_write_text(checkpoint_dir / STATE_FILE, json.dumps(state_json, indent=2) + "\n")  # last: marks it complete
        log.info("wrote %s (G, D, G_ema; for train --init-from; not a %s/ run dir)", checkpoint_dir, CHECKPOINTS_DIR)
    return {"out": str(out), **origin}


def main(argv: Optional[list[str]] = None) -> int:
    """``atelier convert``: returns the exit status (README's table)."""
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    try:
        convert(args.source, args.out, args.checkpoint_dir, args.force)
    except AtelierError as exc:
        return fail(CMD, exc)
    except OSError as exc:
        return fail_write(CMD, exc, args.out)
    return int(ExitCode.OK)
