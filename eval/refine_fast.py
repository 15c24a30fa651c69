"""``atelier refine --fast MODEL``: stylise a folder with a trained transfer network.

One forward pass per image (same-size images share a batch), at each image's own size or
``--size``; ``--strength`` blends the network's output with the sample (0 copies the sample
byte for byte). No VGG19 is loaded. Each output gets a JSON report naming the model file and
its sha256 and what it was trained on, as the Gatys path does.
"""

from __future__ import annotations

import argparse
import time

import torch
from tqdm import tqdm

from atelier.common.fileio import check_writable
from eval.fast_refiner import apply, load_fast_refiner
from eval.refine import REPORT_FORMAT, SUMMARY_NAME, batches_by_shape, list_samples, log, pick_device, write_json, write_output
from eval.refine_images import RefineInputError, load_image


def refine_fast(args: argparse.Namespace) -> list[dict]:
    """Stylise every sample of ``args.input`` with ``args.fast``; return the per-image reports."""
    if args.mask:
        raise RefineInputError("--mask works with the Gatys refiner only; --fast applies the network to the whole image")
    if args.style:
        raise RefineInputError("--fast uses the style its network was trained on; drop --style")
    samples = list_samples(args.input, args.out)
    # Decode every sample first: a bad file fails before the model loads and --out exists.
    shapes = [tuple(load_image(sample, args.size).shape) for sample in samples]
    check_writable(args.out)  # a read-only or full disk fails now, not after the work
    device = pick_device(args.device)
    refiner = load_fast_refiner(args.fast, device=device)
    model = {
        "file": str(refiner.path),
        "sha256": refiner.sha256,
        "trained": refiner.training.get("sources"),
        "step": refiner.training.get("step"),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    reports: list[dict] = []
    unchanged = args.strength == 0
    with tqdm(total=len(samples), desc="refine --fast", unit="img", disable=None) as bar:
        for group in batches_by_shape(shapes, args.batch_size):
            batch = torch.stack([load_image(samples[i], args.size) for i in group])
            started = time.perf_counter()
            stylised = apply(refiner, batch, args.strength)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds = (time.perf_counter() - started) / len(group)
            for row, index in enumerate(group):
                output = write_output(
                    samples[index],
                    stylised[row].cpu(),
                    args.out,
                    unchanged,
                    {"method": "fast transfer network", "strength": args.strength, "model": model},
                )
                report = {
                    "format": REPORT_FORMAT,
                    "mode": "fast",
                    "sample": str(samples[index]),
                    "output": output.name,
                    "work_size": [int(batch.shape[-1]), int(batch.shape[-2])],  # width, height
                    "strength": args.strength,
                    "model": model,
                    "seconds": seconds,
                    "device": str(device),
                }
                write_json(args.out / f"{samples[index].stem}.json", report)
                reports.append(report)
            bar.update(len(group))
    log.info("stylised %d image(s) with %s", len(reports), refiner.path)
    write_json(args.out / SUMMARY_NAME, {"format": REPORT_FORMAT, "mode": "fast", "model": model, "images": reports})
    return reports
