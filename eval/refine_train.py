"""Train a fast transfer network on the master's works: ``atelier refine-train``.

    atelier refine-train --run runs/<run> --style data/datasets/monet-256 --out runs/refine-monet
    atelier refine-train --content my-paintings/ --style data/datasets/monet-256 --out runs/refine-monet
    accelerate launch --multi_gpu --num_processes 4 -m atelier refine-train ...   # several GPUs

Johnson et al. 2016: the image transformation network of :mod:`eval.transfer_net` is trained
with Adam so that, for content images ``x``, ``y = f(x)`` minimises

    content_weight * Lc(y, x) + style_weight * Ls(y, target) + tv_weight * Ltv(y)

measured by the same frozen VGG19 and the same relative losses as the Gatys refiner
(:mod:`eval.style_transfer`), so the two can be compared number for number. The content
layer is the paper's relu2_2 (``conv2_2``): the network has no per-image starting point to
stay near, and the shallower layer keeps the sample's shapes and edges.

Content images: the run's generated paintings (``--run``: ``--content-count`` seeds from its
generator) or any folder (``--content``); random ``--image-size`` crops with x-flips.

Style target (``--style-target``): ``mean`` (default), the mean of the works' Gram matrices;
or ``sampled``, each content image of a batch paired with a work drawn at random. A network
with no style input cannot follow a target that changes every batch: the expected loss of the
sampled target is the mean target's loss plus a constant (exactly so for unnormalised Gram
losses), so both aim at the same optimum and ``sampled`` only adds gradient noise and a VGG
pass over the works each step. docs/refine.md has the measurement.

Plumbing like the GAN's: accelerate (one process per GPU, gradients averaged; the batch is
split across processes), checkpoints in ``<out>/checkpoints/step-NNNNNNN/`` (weights and Adam
state in safetensors / tensors-only ``.pt``, counters in JSON, written to a temp folder and
renamed), exact resume (``--resume``: batch ``t`` is drawn from a generator seeded with
``(seed, t)``, so a resumed run sees the same batches as one never stopped), a tqdm bar,
W&B / TensorBoard through accelerate's trackers, ``--max-steps`` to stop early. The model for
``refine --fast`` is ``<out>/transfer_net.safetensors``, rewritten at every checkpoint.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from atelier.common.command import CommandParser, fail, prog_name, setup_logging
from atelier.common.errors import AtelierError, ExitCode
from atelier.common.fileio import atomic_write, atomic_write_text, check_writable
from atelier.common.safe_load import load_tensors
from eval.fast_refiner import save_fast_refiner
from eval.refine_images import RefineInputError, list_image_files, load_image
from eval.style_select import dataset_works
from eval.style_transfer import STYLE_LAYERS, content_loss, gram_matrix, style_loss, tv_loss
from eval.transfer_net import TransferNet, TransferNetConfig
from eval.vgg import VGG19Features, load_vgg19
from eval.weights import MissingWeightsError, WeightsChecksumError, weights_identity

CMD = "refine-train"
log = logging.getLogger("eval.refine_train")

MODEL_NAME = "transfer_net.safetensors"
TARGETS = ("mean", "sampled")
CHECKPOINTS = "checkpoints"
METRICS = "metrics.jsonl"
_SEED_STRIDE = 1_000_003  # batch t of seed s comes from generator seed s * stride + t


@dataclass(frozen=True)
class TrainSettings:
    """Everything that decides the trained network (written to ``<out>/train.json``)."""

    image_size: int = 256
    batch: int = 4
    steps: int = 4000
    lr: float = 1e-3
    content_weight: float = 1.0
    style_weight: float = 1.0  # 10 and 100 let style win before content was learnt: a flat image (docs/refine.md)
    tv_weight: float = 10.0
    content_layer: str = "conv2_2"
    style_target: str = "mean"
    seed: int = 0
    channels: int = 32
    residual_blocks: int = 5
    checkpoint_every: int = 200
    keep_checkpoints: int = 3
    log_every: int = 10

    def validate(self) -> None:
        """Raise RefineInputError (one line, naming the option) for values that cannot work."""
        positive = (
            "image_size",
            "batch",
            "steps",
            "lr",
            "content_weight",
            "style_weight",
            "channels",
            "checkpoint_every",
            "keep_checkpoints",
            "log_every",
        )
        for name in positive:
            if not getattr(self, name) > 0:
                raise RefineInputError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        if self.image_size < 16:
            raise RefineInputError(f"--image-size must be at least 16 px, got {self.image_size}")
        if self.tv_weight < 0 or self.residual_blocks < 0:
            raise RefineInputError("--tv-weight and --residual-blocks must not be negative")
        if self.style_target not in TARGETS:
            raise RefineInputError(f"--style-target must be one of {', '.join(TARGETS)}, got {self.style_target!r}")


# ---------------------------------------------------------------------------- data


@dataclass
class ContentImages:
    """Content images held as uint8 [3, h, w] tensors, shorter side >= the crop size."""

    images: list[torch.Tensor]
    source: str
    names: list[str] = field(default_factory=list)


def _fit_shorter_side(image: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 [3, h, w] resized so the shorter side is ``size`` (crops then always fit)."""
    h, w = image.shape[-2:]
    if min(h, w) == size:
        return image
    scale = size / min(h, w)
    target = (max(size, round(h * scale)), max(size, round(w * scale)))
    resized = torch.nn.functional.interpolate(image[None].float(), size=target, mode="bicubic", antialias=scale < 1, align_corners=False)
    return resized[0].round().clamp(0, 255).to(torch.uint8)


def content_from_folder(folder: Path, size: int) -> ContentImages:
    """Every image in ``folder`` (decoded safely), resized so its shorter side is ``size``."""
    if not folder.is_dir():
        raise RefineInputError(f"--content {folder} is not a folder")
    paths = list_image_files(folder)
    if not paths:
        raise RefineInputError(f"--content {folder} holds no images")
    images = [_fit_shorter_side((load_image(path) * 255).round().to(torch.uint8), size) for path in paths]
    return ContentImages(images, str(folder), [path.name for path in paths])


def content_from_run(run: Path, count: int, size: int, psi: float) -> ContentImages:
    """``count`` paintings of the run's generator (seeds 0..count-1, constant noise)."""
    from gan import sampling  # noqa: PLC0415 - only this source needs the GAN
    from gan.export import GeneratorLoadError, load_generator  # noqa: PLC0415

    try:
        generator = load_generator(run)
    except GeneratorLoadError as exc:
        raise RefineInputError(f"--run {run}: {exc}") from exc
    arrays = sampling.generate_images(generator, range(count), psi=psi, noise_mode="const", batch=8)
    images = [_fit_shorter_side(torch.from_numpy(a.copy()).permute(2, 0, 1).contiguous(), size) for a in arrays]
    return ContentImages(images, f"{run} (seeds 0-{count - 1}, psi {psi})", [f"seed{s:04d}" for s in range(count)])


def draw_batch(content: ContentImages, settings: TrainSettings, step: int) -> torch.Tensor:
    """Batch ``step``: random images, crops and x-flips from a generator seeded by (seed, step)."""
    generator = torch.Generator().manual_seed(settings.seed * _SEED_STRIDE + step)
    picks = torch.randint(len(content.images), (settings.batch,), generator=generator).tolist()
    crops = []
    for index in picks:
        image = content.images[index]
        h, w = image.shape[-2:]
        top = int(torch.randint(h - settings.image_size + 1, (1,), generator=generator))
        left = int(torch.randint(w - settings.image_size + 1, (1,), generator=generator))
        crop = image[:, top : top + settings.image_size, left : left + settings.image_size]
        if bool(torch.rand(1, generator=generator) < 0.5):
            crop = crop.flip(-1)
        crops.append(crop)
    return torch.stack(crops).float() / 255


def draw_works(count: int, settings: TrainSettings, step: int, batch: int) -> list[int]:
    """The works paired with batch ``step``'s images when the target is sampled."""
    generator = torch.Generator().manual_seed(settings.seed * _SEED_STRIDE + step + _SEED_STRIDE // 2)
    return torch.randint(count, (batch,), generator=generator).tolist()


# ---------------------------------------------------------------------------- targets


@torch.no_grad()
def work_grams(vgg: VGG19Features, work: torch.Tensor) -> dict[str, torch.Tensor]:
    """Gram matrices [C, C] of one work [3, h, w] at the style layers."""
    features = vgg(work[None])
    return {layer: gram_matrix(features[layer])[0] for layer in STYLE_LAYERS}


@torch.no_grad()
def mean_grams(vgg: VGG19Features, works: Sequence[torch.Tensor], progress=None) -> dict[str, torch.Tensor]:
    """The mean Gram matrix of every style layer over the works (the ``mean`` target)."""
    total: dict[str, torch.Tensor] = {}
    for work in works:
        for layer, gram in work_grams(vgg, work).items():
            total[layer] = total.get(layer, 0) + gram
        if progress is not None:
            progress(1)
    return {layer: value / len(works) for layer, value in total.items()}


def perceptual_losses(
    vgg: VGG19Features, stylised: torch.Tensor, content: torch.Tensor, targets: dict[str, torch.Tensor], settings: TrainSettings
) -> dict[str, torch.Tensor]:
    """Per-batch mean of each loss term and their weighted total (targets are [N, C, C])."""
    with torch.no_grad():
        content_features = vgg(content)[settings.content_layer]
    features = vgg(stylised)
    terms = {
        "content": content_loss(features[settings.content_layer], content_features).mean(),
        "style": style_loss(features, targets).mean(),
        "tv": tv_loss(stylised).mean(),
    }
    terms["total"] = settings.content_weight * terms["content"] + settings.style_weight * terms["style"] + settings.tv_weight * terms["tv"]
    return terms


# ---------------------------------------------------------------------------- checkpoints


def checkpoint_dir(out: Path, step: int) -> Path:
    """``<out>/checkpoints/step-NNNNNNN``."""
    return out / CHECKPOINTS / f"step-{step:07d}"


def latest_checkpoint(out: Path) -> Optional[Path]:
    """The newest complete checkpoint of a run (None if there is none)."""
    root = out / CHECKPOINTS
    if not root.is_dir():
        return None
    done = sorted(path for path in root.glob("step-*") if (path / "state.json").is_file())
    return done[-1] if done else None


def save_checkpoint(out: Path, step: int, net: TransferNet, optimizer: torch.optim.Optimizer, state: dict, keep: int) -> Path:
    """Weights (safetensors), Adam state (tensors-only .pt) and counters (JSON); temp folder, then rename."""
    final = checkpoint_dir(out, step)
    tmp = final.with_name(f".{final.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    weights = {k: v.detach().cpu().contiguous().clone() for k, v in net.state_dict().items()}
    # Through atomic_write for the umask's permissions (safetensors and torch.save write owner-only files).
    atomic_write(tmp / "net.safetensors", lambda p: save_file(weights, str(p)), fsync=False)
    atomic_write(tmp / "optimizer.pt", lambda p: torch.save(optimizer.state_dict(), p), fsync=False)
    (tmp / "state.json").write_text(json.dumps({**state, "step": step}, indent=2) + "\n")
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    for old in sorted((out / CHECKPOINTS).glob("step-*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(path: Path, net: TransferNet, optimizer: torch.optim.Optimizer) -> dict:
    """Restore weights and Adam state; return the saved counters."""
    try:
        net.load_state_dict(load_file(str(path / "net.safetensors")), strict=True)
        optimizer.load_state_dict(load_tensors(path / "optimizer.pt"))
        return json.loads((path / "state.json").read_text())
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise RefineInputError(f"--resume: checkpoint {path} cannot be loaded ({' '.join(str(exc).split())[:160]})") from exc


def _trim_metrics(path: Path, step: int) -> None:
    """Drop metric lines past the resumed step, so the log reads as one uninterrupted run."""
    if not path.is_file():
        return
    kept = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step]
    atomic_write_text(path, "".join(line + "\n" for line in kept))


# ---------------------------------------------------------------------------- command


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``atelier refine-train``."""
    d = TrainSettings()
    parser = CommandParser(
        prog=prog_name(CMD),
        description="Train a fast style-transfer network (Johnson et al. 2016) toward the master's works; "
        "use it with `atelier refine --fast OUT/transfer_net.safetensors`.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    src = parser.add_argument_group("data")
    where = src.add_mutually_exclusive_group()
    where.add_argument(
        "--run", type=Path, metavar="RUN", help="content = paintings generated by this run's generator (run dir, checkpoint or export)"
    )
    where.add_argument("--content", type=Path, metavar="DIR", help="content = every image in this folder")
    src.add_argument("--content-count", type=int, default=256, help="paintings generated from --run")
    src.add_argument("--psi", type=float, default=1.0, help="truncation psi of the paintings generated from --run")
    src.add_argument(
        "--style",
        type=Path,
        metavar="DATASET",
        help="the master's works: a prepared dataset or a folder of images (required unless --resume)",
    )
    src.add_argument("--out", type=Path, required=True, metavar="DIR", help="run folder: checkpoints, metrics, the model file")
    src.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint (same settings)")

    train = parser.add_argument_group("training")
    train.add_argument(
        "--image-size", type=int, default=d.image_size, help="square crop size of the content images (works are shrunk to it)"
    )
    train.add_argument("--batch", type=int, default=d.batch, help="images per step, over all processes")
    train.add_argument("--steps", type=int, default=d.steps, help="total optimiser steps of the run")
    train.add_argument(
        "--max-steps", type=int, metavar="N", help="stop after N steps of this invocation (checkpoint written; --resume continues)"
    )
    train.add_argument("--lr", type=float, default=d.lr, help="Adam learning rate")
    train.add_argument("--content-weight", type=float, default=d.content_weight, help="weight of the relative content loss")
    train.add_argument("--style-weight", type=float, default=d.style_weight, help="weight of the relative Gram loss (conv1_1..conv5_1)")
    train.add_argument("--tv-weight", type=float, default=d.tv_weight, help="weight of the total-variation regulariser")
    train.add_argument("--content-layer", default=d.content_layer, help="VGG19 layer of the content loss (Johnson et al.: relu2_2)")
    train.add_argument(
        "--style-target", choices=TARGETS, default=d.style_target, help="mean Gram of all works, or a work drawn per image each step"
    )
    train.add_argument("--seed", type=int, default=d.seed, help="seed of the network's init and of the batches")
    train.add_argument("--channels", type=int, default=d.channels, help="filters of the network's first layer (the paper: 32)")
    train.add_argument("--residual-blocks", type=int, default=d.residual_blocks, help="residual blocks (the paper: 5)")
    train.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every, help="steps between checkpoints")
    train.add_argument("--keep-checkpoints", type=int, default=d.keep_checkpoints, help="checkpoints kept")
    train.add_argument("--log-every", type=int, default=d.log_every, help="steps between metric lines")
    train.add_argument("--cpu", action="store_true", help="train on the CPU even when a GPU is there")

    other = parser.add_argument_group("weights and tracking")
    other.add_argument("--weights", type=Path, metavar="PATH", help="VGG19 state dict file (.pth or .safetensors)")
    other.add_argument("--weights-dir", type=Path, metavar="DIR", help="folder holding vgg19-dcbb9e9d.pth")
    other.add_argument(
        "--tracker",
        choices=("wandb", "tensorboard", "none"),
        default="wandb",
        help="where metrics go (W&B runs offline without an API key)",
    )
    other.add_argument("--no-wandb", action="store_true", help="no W&B logging")
    other.add_argument("--project", default="atelier-refine", help="W&B project")
    return parser


def settings_from_args(args: argparse.Namespace) -> TrainSettings:
    """TrainSettings from the options (on --resume, the run's saved settings)."""
    if args.resume:
        saved = args.out / "train.json"
        if not saved.is_file():
            raise RefineInputError(f"--resume: {args.out} has no train.json (not a refine-train run)")
        return TrainSettings(**json.loads(saved.read_text())["settings"])
    names = TrainSettings.__dataclass_fields__
    return TrainSettings(**{name: getattr(args, name) for name in names if hasattr(args, name)})


def _sources(args: argparse.Namespace, settings: TrainSettings) -> tuple[ContentImages, list[Path], dict]:
    """Content images and works, from the options or (on --resume) the run's train.json."""
    if args.resume:
        record = json.loads((args.out / "train.json").read_text())["sources"]
        run, content, style = (Path(record[k]) if record.get(k) else None for k in ("run", "content", "style"))
        count, psi = record.get("content_count", 256), record.get("psi", 1.0)
    else:
        run, content, style, count, psi = args.run, args.content, args.style, args.content_count, args.psi
        if style is None:
            raise RefineInputError("--style is required: the master's dataset or a folder of works")
        if run is None and content is None:
            raise RefineInputError("give the content images: --run RUN (its generated paintings) or --content DIR")
        if count < 1:
            raise RefineInputError(f"--content-count must be at least 1, got {count}")
    works = dataset_works(style)
    images = (
        content_from_folder(content, settings.image_size) if content is not None else content_from_run(run, count, settings.image_size, psi)
    )
    record = {
        "run": str(run) if run else None,
        "content": str(content) if content else None,
        "style": str(style),
        "content_count": count,
        "psi": psi,
    }
    return images, works, record


def train(args: argparse.Namespace) -> dict:
    """Run (or resume) the training the options describe; return the final counters."""
    from accelerate import Accelerator  # noqa: PLC0415 - slow import, only when training

    from gan.trackers import choose_tracker, end_tracking, log_scalars, start_tracking  # noqa: PLC0415

    settings = settings_from_args(args)
    settings.validate()
    if args.max_steps is not None and args.max_steps < 1:
        raise RefineInputError(f"--max-steps must be at least 1, got {args.max_steps}")
    if not args.resume and latest_checkpoint(args.out) is not None:
        raise RefineInputError(f"--out {args.out} already holds a run; add --resume to continue it or choose another folder")
    content, works, sources = _sources(args, settings)
    check_writable(args.out)  # a read-only or full disk fails now, not after the first checkpoint interval
    tracker = choose_tracker("none" if args.tracker == "none" else args.tracker, no_wandb=args.no_wandb)
    accelerator = Accelerator(cpu=args.cpu, log_with=tracker, project_dir=str(args.out))
    if settings.batch % accelerator.num_processes:
        raise RefineInputError(f"--batch {settings.batch} does not split over {accelerator.num_processes} processes")
    layers = tuple(dict.fromkeys(STYLE_LAYERS + (settings.content_layer,)))
    try:
        vgg = load_vgg19(layers, weights=args.weights, weights_dir=args.weights_dir, device=accelerator.device)
    except ValueError as exc:
        raise RefineInputError(str(exc)) from exc

    work_images = [load_image(path, settings.image_size, allow_upscale=False) for path in works]
    if settings.style_target == "mean":
        with tqdm(total=len(works), desc="style target", unit="work", disable=not accelerator.is_main_process or None) as bar:
            target = mean_grams(vgg, [w.to(accelerator.device) for w in work_images], bar.update)

    torch.manual_seed(settings.seed)
    net = TransferNet(TransferNetConfig(settings.channels, settings.residual_blocks))
    optimizer = torch.optim.Adam(net.parameters(), lr=settings.lr)
    start = 0
    if args.resume:
        latest = latest_checkpoint(args.out)
        if latest is None:
            raise RefineInputError(f"--resume: {args.out} has no checkpoint yet")
        start = load_checkpoint(latest, net, optimizer)["step"]
        _trim_metrics(args.out / METRICS, start)
        log.info("resuming %s at step %d", args.out, start)
    net, optimizer = accelerator.prepare(net, optimizer)
    args.out.mkdir(parents=True, exist_ok=True)
    training_record = {
        "settings": asdict(settings),
        "sources": sources,
        "works": len(works),
        "content_images": len(content.images),
        "vgg_weights": weights_identity(vgg.weights_path),
    }
    if accelerator.is_main_process:
        atomic_write_text(args.out / "train.json", json.dumps(training_record, indent=2) + "\n")
    config = {**asdict(settings), "content_source": content.source, "style": sources["style"]}
    start_tracking(accelerator, tracker, args.project, args.out, config)

    end = settings.steps if args.max_steps is None else min(settings.steps, start + args.max_steps)
    rank, world = accelerator.process_index, accelerator.num_processes
    step = start
    status = ExitCode.OK
    started = time.perf_counter()

    def checkpoint() -> None:
        if accelerator.is_main_process:
            unwrapped = accelerator.unwrap_model(net)
            save_checkpoint(args.out, step, unwrapped, optimizer, {"steps": settings.steps}, settings.keep_checkpoints)
            save_fast_refiner(args.out / MODEL_NAME, unwrapped, {**training_record, "step": step})
        accelerator.wait_for_everyone()

    bar = tqdm(total=end, initial=start, desc="refine-train", unit="step", disable=not accelerator.is_main_process or None)
    try:
        while step < end:
            batch = draw_batch(content, settings, step)[rank::world].to(accelerator.device)
            if settings.style_target == "mean":
                targets = {layer: target[layer].expand(batch.shape[0], -1, -1) for layer in STYLE_LAYERS}
            else:
                picks = draw_works(len(works), settings, step, settings.batch)[rank::world]
                grams = [work_grams(vgg, work_images[i].to(accelerator.device)) for i in picks]
                targets = {layer: torch.stack([g[layer] for g in grams]) for layer in STYLE_LAYERS}
            stylised = net(batch)
            losses = perceptual_losses(vgg, stylised, batch, targets, settings)
            if not torch.isfinite(losses["total"]):
                raise AtelierError(f"training diverged at step {step}: loss {float(losses['total'])}; lower --lr", ExitCode.DIVERGED)
            optimizer.zero_grad(set_to_none=True)
            accelerator.backward(losses["total"])
            optimizer.step()
            step += 1
            bar.update(1)
            if step % settings.log_every == 0 or step == end:
                values = {f"refine_train/{k}": float(accelerator.reduce(v.detach(), reduction="mean")) for k, v in losses.items()}
                bar.set_postfix(style=f"{values['refine_train/style']:.3g}", content=f"{values['refine_train/content']:.3g}")
                log_scalars(accelerator, tracker, values, step)
                if accelerator.is_main_process:
                    record = {"step": step, **{k.split("/")[1]: v for k, v in values.items()}, "seconds": time.perf_counter() - started}
                    with open(args.out / METRICS, "a", encoding="utf-8") as handle:
                        handle.write(json.dumps(record) + "\n")
            if step % settings.checkpoint_every == 0 and step < end:
                checkpoint()
    except KeyboardInterrupt:
        status = ExitCode.INTERRUPTED
        log.warning("interrupted at step %d: writing a checkpoint", step)
    finally:
        bar.close()
    if step > start or latest_checkpoint(args.out) is None:
        checkpoint()
    end_tracking(accelerator, tracker)
    return {"step": step, "steps": settings.steps, "model": str(args.out / MODEL_NAME), "status": int(status)}


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``atelier refine-train``; returns the exit status (README's table)."""
    args = build_parser().parse_args(argv)
    setup_logging()
    try:
        result = train(args)
    except (RefineInputError, MissingWeightsError, WeightsChecksumError, FileNotFoundError) as exc:
        log.debug("refine-train failed", exc_info=True)
        return fail(CMD, exc)
    except AtelierError as exc:
        return fail(CMD, exc)
    except OSError as exc:
        from atelier.common.command import fail_write  # noqa: PLC0415

        return fail_write(CMD, exc)
    if result["status"]:
        return result["status"]
    done = (
        "finished" if result["step"] >= result["steps"] else f"stopped at step {result['step']} of {result['steps']} (--resume continues)"
    )
    print(f"refine-train {done}; model: {result['model']}")
    return int(ExitCode.OK)


if __name__ == "__main__":
    sys.exit(main())
