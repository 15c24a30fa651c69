#!/usr/bin/env python
"""Lay refiner outputs side by side with a caption under each: the README's before/after picture.

    python scripts/refine_figure.py --size 256 --out docs/images/refine_before_after.png \\
        sample.png:"GAN sample" gatys.png:"Gatys, 300 L-BFGS" fast.png:"trained network"

Every panel is centre-cropped to a square and resized (Lanczos, as the refiner enlarges a
sample) to ``--size`` px.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from atelier.common.fileio import atomic_write_bytes  # noqa: E402
from atelier.common.images import open_image_rgb  # noqa: E402

CAPTION = 22  # px of caption strip under each panel
GAP = 6


def main(argv: list[str] | None = None) -> int:
    """Parse ``PATH:CAPTION`` panels and write the strip."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("panels", nargs="+", metavar="PATH:CAPTION")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    panels = []
    for spec in args.panels:
        path, _, caption = spec.partition(":")
        image = open_image_rgb(path)
        side = min(image.size)
        left, top = (image.width - side) // 2, (image.height - side) // 2
        square = image.crop((left, top, left + side, top + side))
        panels.append((square.resize((args.size, args.size), Image.LANCZOS), caption))
    width = len(panels) * args.size + (len(panels) - 1) * GAP
    strip = Image.new("RGB", (width, args.size + CAPTION), "white")
    draw = ImageDraw.Draw(strip)
    font = ImageFont.load_default(size=14)
    for index, (image, caption) in enumerate(panels):
        left = index * (args.size + GAP)
        strip.paste(image, (left, 0))
        draw.text((left + args.size // 2, args.size + CAPTION // 2), caption, fill="black", font=font, anchor="mm")
    buffer = io.BytesIO()
    strip.save(buffer, format="PNG", optimize=True)
    atomic_write_bytes(args.out, buffer.getvalue())
    print(f"wrote {args.out} ({strip.width}x{strip.height})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
