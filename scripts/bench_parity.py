"""Side-by-side learning benchmark: atelier's trainer against NVIDIA's StyleGAN2-ADA code.

Both sides train the same architecture with the same schedule on the same prepared dataset
(fp32, no augmentation, conv_clamp off), from their own random initialisation, for several
seeds each. At each evaluation point, 256 G_ema images (psi 1, const noise, the same latents
on both sides) are scored against the whole dataset:

- SWD x 10^3 (eval.swd, ProGAN's sliced Wasserstein distance), mean over 3 projection seeds;
- high-frequency energy: the mean absolute 4-neighbour Laplacian of the 0..255 pixels;
- colour spread: the standard deviation over images of each image's mean colour (0..255),
  averaged over R, G and B.

The atelier side runs ``gan.training_loop.Trainer.train_step`` (the real training step, on an
accelerate ``Accelerator``). The NVIDIA side, only with ``--nvidia PATH`` (a checkout of
NVlabs/stylegan2-ada-pytorch; its code is imported from there, never copied), builds NVIDIA's
networks and ``StyleGAN2Loss`` and runs its training loop's phase / lazy-regularisation Adam /
EMA logic step for step.

    python scripts/bench_parity.py --data DATASET_DIR --out runs/parity [--nvidia PATH] \\
        [--preset issue20|small|auto256] [--device cuda] [--kimg 4] [--eval-kimg 1 2 4] [--seeds 0 1 2] [--sides atelier nvidia] [--only atelier:0]
    python scripts/bench_parity.py --out runs/parity --report    # table + plot from results.jsonl

Each finished evaluation appends one JSON line to ``<out>/results.jsonl``; ``--only SIDE:SEED``
runs one run and ``--sides`` one side (start several such processes to use several cores), ``--report`` writes
``<out>/table.md`` (markdown) and ``<out>/parity.png`` from whatever is there.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# What every preset shares: NVIDIA's StyleGAN2-ADA training settings at batch 16 without ADA.
_COMMON = dict(
    mapping_layers=2,
    mbstd_group=4,
    batch=16,
    r1_interval=16,
    pl_weight=2.0,
    pl_interval=4,
    pl_decay=0.01,
    pl_batch_shrink=2,
    style_mixing=0.9,
    lr=0.0025,
    betas=[0.0, 0.99],
    eps=1e-8,
    ema_kimg=5.0,
    ema_rampup=0.05,
    xflip=True,
)
# The issue-20 configuration (its side-by-side table), what NVIDIA's --cfg=auto picks for 256 px
# on one GPU (= configs/stylegan2-256.yaml without ADA, for a GPU run), and a smaller one for a
# 2-core CPU (32 px).
PRESETS = {
    "issue20": {**_COMMON, "z_dim": 256, "w_dim": 256, "channel_base": 2048, "channel_max": 128, "r1_gamma": 0.05},
    "auto256": {**_COMMON, "z_dim": 512, "w_dim": 512, "channel_base": 16384, "channel_max": 512, "r1_gamma": 0.8192},
    "small": {**_COMMON, "z_dim": 64, "w_dim": 64, "channel_base": 512, "channel_max": 64, "r1_gamma": 0.05},
}
EVAL_SAMPLES = 256
EVAL_LATENT_SEED = 123456  # the same latents for every run and side
SWD_SEEDS = (0, 1, 2)


# --------------------------------------------------------------------------- metrics


def hf_energy(images: torch.Tensor) -> float:
    """Mean absolute 4-neighbour Laplacian of uint8 [N, 3, H, W] images (0..255 scale, valid region)."""
    x = images.float()
    lap = x[:, :, 1:-1, :-2] + x[:, :, 1:-1, 2:] + x[:, :, :-2, 1:-1] + x[:, :, 2:, 1:-1] - 4 * x[:, :, 1:-1, 1:-1]
    return lap.abs().mean().item()


def colour_spread(images: torch.Tensor) -> float:
    """Std over images of the per-image mean colour (0..255), averaged over the channels."""
    return images.float().mean(dim=[2, 3]).std(dim=0).mean().item()


_REAL_DESCRIPTORS: dict[int, object] = {}  # the dataset's patch descriptors per seed, computed once


def score(fakes: torch.Tensor, reals: torch.Tensor) -> dict[str, float]:
    """SWD (mean over projection seeds), high-frequency energy and colour spread of uint8 fakes."""
    from eval.swd import describe, swd_between

    swds = []
    for s in SWD_SEEDS:
        if s not in _REAL_DESCRIPTORS:
            _REAL_DESCRIPTORS[s] = describe(reals, seed=s)
        swds.append(swd_between(_REAL_DESCRIPTORS[s], describe(fakes, seed=s), seed=s)["swd"])
    return {"swd": float(np.mean(swds)), "hf_energy": hf_energy(fakes), "colour_spread": colour_spread(fakes)}


def to_uint8(img: torch.Tensor) -> torch.Tensor:
    """[-1, 1] float -> uint8 as NVIDIA's generate.py rounds it."""
    return (img * 127.5 + 128).clamp(0, 255).to(torch.uint8)


@torch.no_grad()
def sample(G_ema: Callable[[torch.Tensor], torch.Tensor], z: torch.Tensor) -> torch.Tensor:
    return torch.cat([to_uint8(G_ema(chunk)).cpu() for chunk in z.split(64)])


# --------------------------------------------------------------------------- data


def load_reals(data: Path) -> torch.Tensor:
    """The whole prepared dataset as uint8 [N, 3, H, W]."""
    from gan.dataset import ImageFolderDataset

    ds = ImageFolderDataset(str(data), resolution=None, xflip=False, seed=0, cache=False)
    return torch.stack([ds.uint8(i) for i in range(len(ds))])


def minibatches(reals: torch.Tensor, batch: int, xflip: bool, seed: int) -> Iterator[torch.Tensor]:
    """Endless shuffled epochs of float [-1, 1] minibatches, each image x-flipped with p = 0.5."""
    rng = np.random.default_rng(seed)
    while True:
        order = rng.permutation(len(reals))
        for start in range(0, len(order) - batch + 1, batch):
            x = reals[torch.from_numpy(order[start : start + batch])].float() / 127.5 - 1
            if xflip:
                flip = torch.from_numpy(rng.random(batch) < 0.5)
                x = torch.where(flip[:, None, None, None], x.flip(3), x)
            yield x


# --------------------------------------------------------------------------- the two sides


def train_atelier(
    p: dict, data: Path, seed: int, run_dir: Path, stops: list[int], on_eval: Callable[[int, float, Callable], None], device: str = "cpu"
) -> None:
    """atelier's Trainer (the real training step) on an accelerate Accelerator (one process)."""
    from accelerate import Accelerator

    from gan.config import load_config
    from gan.training_loop import RunOptions, Trainer

    overrides = [
        f"data.path={data}",
        f"data.resolution={load_reals_resolution(data)}",
        f"data.xflip={p['xflip']}",
        "data.workers=0",
        f"model.z_dim={p['z_dim']}",
        f"model.w_dim={p['w_dim']}",
        f"model.mapping_layers={p['mapping_layers']}",
        f"model.channel_base={p['channel_base']}",
        f"model.channel_max={p['channel_max']}",
        f"model.mbstd_group={p['mbstd_group']}",
        "model.conv_clamp=null",
        f"loss.r1_gamma={p['r1_gamma']}",
        f"loss.r1_interval={p['r1_interval']}",
        f"loss.pl_weight={p['pl_weight']}",
        f"loss.pl_interval={p['pl_interval']}",
        f"loss.pl_decay={p['pl_decay']}",
        f"loss.pl_batch_shrink={p['pl_batch_shrink']}",
        f"loss.style_mixing={p['style_mixing']}",
        f"train.batch={p['batch']}",
        f"train.g_lr={p['lr']}",
        f"train.d_lr={p['lr']}",
        f"train.betas=[{p['betas'][0]},{p['betas'][1]}]",
        f"train.eps={p['eps']}",
        f"train.ema_kimg={p['ema_kimg']}",
        f"train.ema_rampup={p['ema_rampup']}",
        f"train.seed={seed}",
        "augment.mode=none",
        "log.tracker=none",
    ]
    cfg = load_config(None, overrides)
    trainer = Trainer(cfg, Accelerator(cpu=device == "cpu"), RunOptions(run_dir=run_dir))
    G_ema = lambda z: trainer.G_ema(z.to(trainer.device), noise_mode="const")  # noqa: E731
    train_sec = 0.0
    for stop in stops:
        start = time.perf_counter()
        while trainer.progress.cur_nimg < stop:
            trainer.train_step()
        train_sec += time.perf_counter() - start
        on_eval(trainer.progress.cur_nimg, train_sec, G_ema)


def load_reals_resolution(data: Path) -> int:
    from atelier.common.dataset_format import load_dataset_info

    return int(load_dataset_info(data)["resolution"])


def train_nvidia(
    p: dict,
    nvidia: Path,
    reals: torch.Tensor,
    seed: int,
    stops: list[int],
    on_eval: Callable[[int, float, Callable], None],
    device: str = "cpu",
) -> None:
    """NVIDIA's networks and StyleGAN2Loss, driven like its training_loop.py (phases, lazy
    regularisation with corrected Adam, nan_to_num on gradients, G_ema with ramp-up)."""
    sys.path.insert(0, str(nvidia))
    from torch_utils import misc  # noqa: E402 (NVIDIA's code, from the checkout)
    from training import networks
    from training.loss import StyleGAN2Loss

    torch.manual_seed(seed)
    np.random.seed(seed)
    res = reals.shape[-1]
    G = (
        networks.Generator(
            z_dim=p["z_dim"],
            c_dim=0,
            w_dim=p["w_dim"],
            img_resolution=res,
            img_channels=3,
            mapping_kwargs=dict(num_layers=p["mapping_layers"]),
            synthesis_kwargs=dict(channel_base=p["channel_base"], channel_max=p["channel_max"], num_fp16_res=0, conv_clamp=None),
        )
        .train()
        .requires_grad_(False)
    )
    D = (
        networks.Discriminator(
            c_dim=0,
            img_resolution=res,
            img_channels=3,
            channel_base=p["channel_base"],
            channel_max=p["channel_max"],
            num_fp16_res=0,
            conv_clamp=None,
            epilogue_kwargs=dict(mbstd_group_size=p["mbstd_group"]),
        )
        .train()
        .requires_grad_(False)
    )
    device = torch.device(device)
    G, D = G.to(device), D.to(device)
    G_ema = copy.deepcopy(G).eval()
    loss = StyleGAN2Loss(
        device=device,
        G_mapping=G.mapping,
        G_synthesis=G.synthesis,
        D=D,
        style_mixing_prob=p["style_mixing"],
        r1_gamma=p["r1_gamma"],
        pl_batch_shrink=p["pl_batch_shrink"],
        pl_decay=p["pl_decay"],
        pl_weight=p["pl_weight"],
    )
    phases = []
    for name, module, interval in (("G", G, p["pl_interval"]), ("D", D, p["r1_interval"])):
        ratio = interval / (interval + 1)
        opt = torch.optim.Adam(module.parameters(), lr=p["lr"] * ratio, betas=[b**ratio for b in p["betas"]], eps=p["eps"])
        phases += [(name + "main", module, opt, 1), (name + "reg", module, opt, interval)]
    batch = p["batch"]
    data = minibatches(reals, batch, p["xflip"], seed)
    no_c = torch.zeros([batch, 0], device=device)
    cur_nimg, batch_idx, train_sec = 0, 0, 0.0
    sample_fn = lambda z: G_ema(z.to(device), None, noise_mode="const")  # noqa: E731
    for stop in stops:
        start = time.perf_counter()
        while cur_nimg < stop:
            real = next(data).to(device)
            all_z = torch.randn([len(phases) * batch, p["z_dim"]], device=device).split(batch)
            for (name, module, opt, interval), z in zip(phases, all_z):
                if batch_idx % interval != 0:
                    continue
                opt.zero_grad(set_to_none=True)
                module.requires_grad_(True)
                loss.accumulate_gradients(phase=name, real_img=real, real_c=no_c, gen_z=z, gen_c=no_c, sync=True, gain=interval)
                module.requires_grad_(False)
                for param in module.parameters():
                    if param.grad is not None:
                        misc.nan_to_num(param.grad, nan=0, posinf=1e5, neginf=-1e5, out=param.grad)
                opt.step()
            ema_nimg = p["ema_kimg"] * 1000
            if p["ema_rampup"] is not None:
                ema_nimg = min(ema_nimg, cur_nimg * p["ema_rampup"])
            beta = 0.5 ** (batch / max(ema_nimg, 1e-8))
            with torch.no_grad():
                for p_ema, param in zip(G_ema.parameters(), G.parameters()):
                    p_ema.copy_(param.lerp(p_ema, beta))
                for b_ema, b in zip(G_ema.buffers(), G.buffers()):
                    b_ema.copy_(b)
            cur_nimg += batch
            batch_idx += 1
        train_sec += time.perf_counter() - start
        on_eval(cur_nimg, train_sec, sample_fn)


# --------------------------------------------------------------------------- report


def _stats(values: list[float]) -> str:
    if not values:
        return "—"
    return f"{np.mean(values):.1f} ± {np.std(values, ddof=1) if len(values) > 1 else 0.0:.1f}"


def write_report(out: Path) -> str:
    """Markdown table (one row per side and kimg: per-seed values and mean ± sd) and the plot."""
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines() if line.strip()]
    dataset = next((r for r in rows if r["side"] == "dataset"), None)
    runs = [r for r in rows if r["side"] != "dataset"]
    lines = [
        "| side | kimg | seeds | SWD x10^3 | high-frequency energy | colour spread | train s/kimg |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    if dataset:
        lines.append(f"| dataset | — | — | — | {dataset['hf_energy']:.1f} | {dataset['colour_spread']:.1f} | — |")
    for side in ("atelier", "nvidia"):
        for kimg in sorted({r["kimg"] for r in runs if r["side"] == side}):
            sel = sorted((r for r in runs if r["side"] == side and r["kimg"] == kimg), key=lambda r: r["seed"])
            per = lambda k, sel=sel: " / ".join(f"{r[k]:.1f}" for r in sel)  # noqa: E731
            lines.append(
                f"| {side} | {kimg:g} | {', '.join(str(r['seed']) for r in sel)} | {per('swd')} ({_stats([r['swd'] for r in sel])}) "
                f"| {per('hf_energy')} ({_stats([r['hf_energy'] for r in sel])}) "
                f"| {per('colour_spread')} ({_stats([r['colour_spread'] for r in sel])}) "
                f"| {_stats([r['train_sec'] / r['kimg'] for r in sel])} |"
            )
    table = "\n".join(lines) + "\n"
    (out / "table.md").write_text(table)
    plot(rows, out / "parity.png")
    return table


def plot(rows: list[dict], path: Path) -> None:
    """Three panels (SWD, HF energy, colour spread vs kimg), one line per run; dataset as a grey line."""
    from PIL import Image, ImageDraw

    keys = [("swd", "SWD x1e3"), ("hf_energy", "HF energy"), ("colour_spread", "colour spread")]
    colours = {"atelier": (31, 119, 180), "nvidia": (214, 39, 40)}
    W, H, pad = 360, 260, 40
    img = Image.new("RGB", (W * 3, H + 30), "white")
    draw = ImageDraw.Draw(img)
    runs = [r for r in rows if r["side"] != "dataset"]
    dataset = next((r for r in rows if r["side"] == "dataset"), None)
    kmax = max((r["kimg"] for r in runs), default=1.0)
    for i, (key, title) in enumerate(keys):
        x0 = i * W
        values = [r[key] for r in runs] + ([dataset[key]] if dataset and key in dataset else [])
        lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
        lo, hi = lo - 0.05 * (hi - lo + 1e-9), hi + 0.05 * (hi - lo + 1e-9)
        px = lambda k, x0=x0: x0 + pad + (W - 2 * pad) * k / kmax  # noqa: E731
        py = lambda v, lo=lo, hi=hi: H - pad + 10 - (H - 2 * pad) * (v - lo) / (hi - lo)  # noqa: E731
        draw.rectangle([x0 + pad, 10 + pad - 30, x0 + W - pad, H - pad + 10], outline="black")
        draw.text((x0 + pad, 2), title, fill="black")
        draw.text((x0 + pad - 35, H - pad + 2), f"{lo:.1f}", fill="black")
        draw.text((x0 + pad - 35, 20), f"{hi:.1f}", fill="black")
        draw.text((x0 + W - pad - 30, H - pad + 14), f"{kmax:g} kimg", fill="black")
        if dataset and key in dataset:
            draw.line([px(0), py(dataset[key]), px(kmax), py(dataset[key])], fill=(150, 150, 150), width=1)
        for side, colour in colours.items():
            for seed in sorted({r["seed"] for r in runs if r["side"] == side}):
                pts = sorted((r["kimg"], r[key]) for r in runs if r["side"] == side and r["seed"] == seed)
                xy = [(px(k), py(v)) for k, v in pts]
                if len(xy) > 1:
                    draw.line(xy, fill=colour, width=2)
                for x, y in xy:
                    draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=colour)
    draw.text((10, H + 12), "blue: atelier   red: NVIDIA   grey: dataset", fill="black")
    tmp = path.with_suffix(".tmp.png")
    img.save(tmp)
    tmp.replace(path)


# --------------------------------------------------------------------------- main


def _append(path: Path, record: dict) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="bench_parity.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, help="a prepared dataset dir (scraping.prepare output)")
    parser.add_argument("--out", type=Path, required=True, help="folder for results.jsonl, table.md, parity.png")
    parser.add_argument("--nvidia", type=Path, help="a checkout of NVlabs/stylegan2-ada-pytorch: also run NVIDIA's side")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="issue20")
    parser.add_argument("--kimg", type=float, default=4.0, help="train this many thousand images per run")
    parser.add_argument("--eval-kimg", type=float, nargs="+", help="evaluate at these kimg (default: 1 2 4 ... up to --kimg)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--sides", nargs="+", choices=["atelier", "nvidia"], help="run only these sides (default: atelier, and nvidia with --nvidia)"
    )
    parser.add_argument("--only", help="run just SIDE:SEED (e.g. atelier:1 or nvidia:0)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (training; scoring runs on the CPU)")
    parser.add_argument("--report", action="store_true", help="only write table.md and parity.png from results.jsonl")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    results = args.out / "results.jsonl"
    if args.report:
        print(write_report(args.out))
        return 0
    if args.data is None or not (args.data / "dataset.json").is_file():
        parser.error(f"--data must be a prepared dataset dir with dataset.json, got {args.data}")
    if args.nvidia is not None and not (args.nvidia / "training" / "loss.py").is_file():
        parser.error(f"--nvidia must be a checkout of stylegan2-ada-pytorch (no training/loss.py in {args.nvidia})")
    torch.set_num_threads(args.threads)
    p = PRESETS[args.preset]
    stops_kimg = args.eval_kimg or [k for k in (2.0**i for i in range(0, 12)) if k < args.kimg] + [args.kimg]
    stops = sorted({round(k * 1000) for k in stops_kimg})
    reals = load_reals(args.data)
    if not any(json.loads(line).get("side") == "dataset" for line in results.read_text().splitlines()) if results.exists() else True:
        _append(
            results,
            {
                "side": "dataset",
                "images": len(reals),
                "hf_energy": hf_energy(reals),
                "colour_spread": colour_spread(reals),
                "data": str(args.data),
            },
        )
    z_eval = torch.randn([EVAL_SAMPLES, p["z_dim"]], generator=torch.Generator().manual_seed(EVAL_LATENT_SEED))
    sides = args.sides or ["atelier"] + (["nvidia"] if args.nvidia else [])
    if "nvidia" in sides and args.nvidia is None:
        parser.error("the nvidia side needs --nvidia PATH")
    todo = [(side, seed) for side in sides for seed in args.seeds]
    if args.only:
        side, _, seed = args.only.partition(":")
        if side not in ("atelier", "nvidia") or not seed.isdigit() or (side == "nvidia" and args.nvidia is None):
            parser.error(f"--only must be atelier:SEED or nvidia:SEED (with --nvidia), got {args.only!r}")
        todo = [(side, int(seed))]
    for side, seed in todo:

        def on_eval(nimg: int, train_sec: float, G_ema: Callable, side=side, seed=seed) -> None:
            record = {
                "side": side,
                "seed": seed,
                "preset": args.preset,
                "kimg": nimg / 1000,
                "train_sec": train_sec,
                **score(sample(G_ema, z_eval), reals),
            }
            _append(results, record)
            print(json.dumps(record), flush=True)

        if side == "atelier":
            train_atelier(p, args.data, seed, args.out / f"atelier-{seed}", stops, on_eval, args.device)
        else:
            train_nvidia(p, args.nvidia, reals, seed, stops, on_eval, args.device)
    print(write_report(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
