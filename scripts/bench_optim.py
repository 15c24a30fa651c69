"""Benchmark the per-step bookkeeping around the convolutions (one JSON line on stdout).

Each training phase ends with an optimiser step and a check that its gradients are finite,
and each step ends with the G_ema update. These touch every parameter (5.2 M in G at the
matched 32 px configuration), so their implementation matters at small resolutions. This
times, on G's real parameter list, each of them in its straightforward per-tensor form and
in the form the training loop uses:

- Adam: ``torch.optim.Adam`` default (foreach) vs ``fused=True`` (``perf.fused_adam``);
- G_ema: a Python loop of ``lerp``/``copy_`` per tensor vs one ``torch._foreach_lerp_``;
- finite check: ``isfinite(cat(all grads).sum())`` vs one ``torch._foreach_norm`` per phase.

Example (the matched CPU row's network)::

    python scripts/bench_optim.py --resolution 32 --z-dim 512 --w-dim 512 --mapping-layers 2 \\
        --channel-base 4096 --channel-max 256
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path
from typing import Callable, Optional

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bench_optim.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", type=Path, help="YAML preset to start from (configs/*.yaml); default: built-in defaults")
    p.add_argument("--resolution", type=int, default=32, help="image size of G (default 32)")
    p.add_argument("--z-dim", type=int, help="latent size z")
    p.add_argument("--w-dim", type=int, help="intermediate latent size w")
    p.add_argument("--mapping-layers", type=int, help="mapping network depth")
    p.add_argument("--channel-base", type=int, help="model.channel_base")
    p.add_argument("--channel-max", type=int, help="model.channel_max")
    p.add_argument("--device", default="cuda" if _cuda() else "cpu", help="cpu or cuda (default: cuda if present)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: PyTorch's)")
    p.add_argument("--iters", type=int, default=50, help="timed calls of each variant (default 50)")
    return p


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def time_ms(fn: Callable[[], object], iters: int, device) -> float:
    """Mean wall time of ``fn`` in milliseconds after 5 warm-up calls."""
    from gan.perf import synchronize

    for _ in range(5):
        fn()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    synchronize(device)
    return (time.perf_counter() - start) / iters * 1000


def run(args: argparse.Namespace) -> dict:
    import torch

    from gan.config import load_config
    from gan.ema import update_ema
    from gan.networks import Generator

    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = [f"data.resolution={args.resolution}"]
    for key, value in [
        ("z_dim", args.z_dim),
        ("w_dim", args.w_dim),
        ("mapping_layers", args.mapping_layers),
        ("channel_base", args.channel_base),
        ("channel_max", args.channel_max),
    ]:
        if value is not None:
            overrides.append(f"model.{key}={value}")
    cfg = load_config(args.preset, overrides)
    device = torch.device(args.device)
    G = Generator(cfg.model, cfg.data.resolution).to(device)
    G_ema = copy.deepcopy(G)
    params = list(G.parameters())
    for p in params:
        p.grad = torch.randn_like(p)
    loss = torch.ones([], device=device)

    def ema_loop() -> None:
        with torch.no_grad():
            for p_ema, p in zip(G_ema.parameters(), G.parameters()):
                p_ema.copy_(p.lerp(p_ema, 0.999))
            for b_ema, b in zip(G_ema.buffers(), G.buffers()):
                b_ema.copy_(b)

    def finite_cat() -> bool:
        return bool(torch.isfinite(torch.cat([p.grad.flatten() for p in params] + [loss.reshape(1)]).sum()))

    def finite_norms() -> bool:
        return bool(torch.isfinite(torch.stack(torch._foreach_norm([p.grad for p in params])).sum() + loss))

    # lr 0: the parameters stay put, so every timed call does the same work.
    adam_foreach = torch.optim.Adam(params, lr=0.0)
    adam_fused = torch.optim.Adam(params, lr=0.0, fused=True)
    ms = {
        "adam_foreach_ms": time_ms(adam_foreach.step, args.iters, device),
        "adam_fused_ms": time_ms(adam_fused.step, args.iters, device),
        "ema_loop_ms": time_ms(ema_loop, args.iters, device),
        "ema_foreach_ms": time_ms(lambda: update_ema(G_ema, G, 0.999), args.iters, device),
        "finite_cat_ms": time_ms(finite_cat, args.iters, device),
        "finite_norms_ms": time_ms(finite_norms, args.iters, device),
    }
    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "resolution": cfg.data.resolution,
        "G_params": sum(p.numel() for p in params),
        **{k: round(v, 3) for k, v in ms.items()},
        "torch": torch.__version__,
    }


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    print(json.dumps(run(args)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
