"""Build a training dataset: square RGB PNGs at one power-of-two resolution plus ``dataset.json``.

``python -m scraping.prepare --src data/raw/<artist> --out data/datasets/<name> --resolution 256``

Input is either a raw download dir (``manifest.jsonl`` + ``images/``, the scraper's output; the
manifest's provenance is carried into ``dataset.json``) or any folder of images (searched
recursively). Each usable image is converted to RGB, cut into one square (``center-crop``) or
several (``tiles``), resized with Lanczos, checked against near-duplicates by perceptual hash
and written as a PNG. Everything dropped is listed with a one-line reason. Output is written to
a temporary directory next to ``--out`` and renamed into place only when complete.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import multiprocessing
import os
import shutil
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import imagehash
import numpy as np
from PIL import Image
from tqdm import tqdm

from atelier.common.command import CommandParser, fail, fail_write, prog_name, setup_logging
from atelier.common.dataset_format import DATASET_FORMAT, INFO_NAME, content_sha256
from atelier.common.errors import ExitCode
from atelier.common.fileio import make_temp_dir
from atelier.common.hashing import file_sha256
from atelier.common.images import MAX_PIXELS, BadImage, open_image_rgb

CMD = "prepare"
log = logging.getLogger("scraping.prepare")  # not __main__ under `python -m`

MODES = ("center-crop", "tiles")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp", ".gif")
# Manifest fields copied into each dataset row so a generated sample can be traced to a work.
WORK_FIELDS = ("id", "artist", "artist_url", "title", "year", "style", "genre", "license", "source_url", "image_url")
# Pillow first shrinks by an integer factor (box filter) down to 3x the target, then applies
# Lanczos: same quality as pure Lanczos for big downscales at a fraction of the cost.
REDUCING_GAP = 3.0


class PrepareError(RuntimeError):
    """A problem with the options or the input as a whole; ``str()`` is one line."""


@dataclass(frozen=True)
class PrepareOptions:
    """Everything that decides what ``prepare`` writes (all of it is recorded in dataset.json)."""

    src: Path
    out: Path
    resolution: int = 256
    mode: str = "center-crop"
    min_size: int | None = None  # None: the resolution itself (never upscale)
    tile_fraction: float = 0.5
    tile_overlap: float = 0.25
    tiles_per_image: int = 16
    dedup_threshold: int = 6
    max_pixels: int = MAX_PIXELS
    workers: int = 1
    overwrite: bool = False

    @property
    def effective_min_size(self) -> int:
        return self.resolution if self.min_size is None else self.min_size

    def validate(self) -> None:
        """Raise :class:`PrepareError` naming the first bad option."""
        res = self.resolution
        if res < 4 or res > 8192 or res & (res - 1):
            raise PrepareError(f"--resolution must be a power of two between 4 and 8192, got {res}")
        if self.mode not in MODES:
            raise PrepareError(f"--mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.effective_min_size < 1:
            raise PrepareError(f"--min-size must be at least 1, got {self.min_size}")
        if not 0.0 < self.tile_fraction <= 1.0:
            raise PrepareError(f"--tile-fraction must be in (0, 1], got {self.tile_fraction}")
        if not 0.0 <= self.tile_overlap <= 0.9:
            raise PrepareError(f"--tile-overlap must be in [0, 0.9], got {self.tile_overlap}")
        if self.tiles_per_image < 1:
            raise PrepareError(f"--tiles-per-image must be at least 1, got {self.tiles_per_image}")
        if not -1 <= self.dedup_threshold <= 64:
            raise PrepareError(f"--dedup-threshold must be in [-1, 64], got {self.dedup_threshold}")
        if self.max_pixels < 1:
            raise PrepareError(f"--max-pixels must be at least 1, got {self.max_pixels}")
        if self.workers < 1:
            raise PrepareError(f"--workers must be at least 1, got {self.workers}")

    def recorded(self) -> dict:
        """The options that shape the output, as stored in dataset.json."""
        return {
            "mode": self.mode,
            "min_size": self.effective_min_size,
            "tile_fraction": self.tile_fraction,
            "tile_overlap": self.tile_overlap,
            "tiles_per_image": self.tiles_per_image,
            "dedup_threshold": self.dedup_threshold,
            "max_pixels": self.max_pixels,
        }


@dataclass(frozen=True)
class SourceItem:
    """One input image: where it is, how to name it in reports, what the manifest says of it."""

    source: str  # path relative to --src, used in reports and provenance
    path: Path
    work: dict = field(default_factory=dict)
    expected_sha256: str | None = None


@dataclass(frozen=True)
class Crop:
    """One square written (provisionally) to the temp dir."""

    tile: int
    crop_box: tuple[int, int, int, int]
    temp_name: str
    sha256: str
    phash: str


@dataclass(frozen=True)
class SourceResult:
    """What became of one source image: its crops, or why it was dropped."""

    index: int
    source: str
    source_sha256: str | None = None
    source_size: tuple[int, int] | None = None
    crops: tuple[Crop, ...] = ()
    reason: str | None = None
    kind: str = "bad-image"


@dataclass(frozen=True)
class Dropped:
    """A source image (or one crop of it) left out, with a one-line reason.

    ``kind`` groups reasons for the summary: bad-image, too-small, near-duplicate, manifest.
    """

    source: str
    reason: str
    kind: str = "bad-image"
    crop_box: tuple[int, int, int, int] | None = None

    def as_json(self) -> dict:
        row = {"source": self.source, "kind": self.kind, "reason": self.reason}
        if self.crop_box is not None:
            row["crop_box"] = list(self.crop_box)
        return row


@dataclass(frozen=True)
class PrepareResult:
    """The finished dataset: where it is and what dataset.json says."""

    out: Path
    count: int
    sources: int
    dropped: tuple[Dropped, ...]
    info: dict


# ---------------------------------------------------------------- geometry


def center_crop_box(width: int, height: int) -> tuple[int, int, int, int]:
    """The largest centred square (left, top, right, bottom); odd leftovers go right/bottom."""
    side = min(width, height)
    left = (width - side) // 2
    top = (height - side) // 2
    return (left, top, left + side, top + side)


def tile_side(width: int, height: int, tile_fraction: float, min_size: int) -> int:
    """Tile side: ``tile_fraction`` of the short edge, at least ``min_size``, at most the short edge."""
    short = min(width, height)
    return min(short, max(round(short * tile_fraction), min_size))


def tile_boxes(width: int, height: int, side: int, overlap: float, max_tiles: int) -> list[tuple[int, int, int, int]]:
    """Square tiles of ``side`` on a grid spanning the whole image edge to edge, row-major.

    Along each axis the positions are spread evenly from 0 to ``length - side`` using the fewest
    tiles whose neighbours overlap by at least ``overlap * side``. If the grid has more than
    ``max_tiles`` tiles, the longer axis loses positions first (tiles then overlap less, or
    leave gaps) until it fits.
    """
    step = side * (1.0 - overlap)
    counts = [_positions_needed(length, side, step) for length in (width, height)]
    while counts[0] * counts[1] > max_tiles:
        axis = 0 if counts[0] >= counts[1] else 1
        counts[axis] -= 1
    lefts = _spread(width, side, counts[0])
    tops = _spread(height, side, counts[1])
    return [(x, y, x + side, y + side) for y in tops for x in lefts]


def _positions_needed(length: int, side: int, step: float) -> int:
    if length <= side:
        return 1
    return math.ceil((length - side) / step - 1e-9) + 1


def _spread(length: int, side: int, count: int) -> list[int]:
    if count == 1:
        return [(length - side) // 2]
    return [round(i * (length - side) / (count - 1)) for i in range(count)]


def crop_boxes(width: int, height: int, opts: PrepareOptions) -> list[tuple[int, int, int, int]]:
    """The squares ``opts.mode`` takes from an image of this size."""
    if opts.mode == "center-crop":
        return [center_crop_box(width, height)]
    side = tile_side(width, height, opts.tile_fraction, opts.effective_min_size)
    return tile_boxes(width, height, side, opts.tile_overlap, opts.tiles_per_image)


def resize_square(img: Image.Image, box: tuple[int, int, int, int], resolution: int) -> Image.Image:
    """Crop ``box`` and resize it to ``resolution`` squared with Lanczos."""
    return img.resize((resolution, resolution), Image.Resampling.LANCZOS, box=box, reducing_gap=REDUCING_GAP)


# ---------------------------------------------------------------- dedup


def hamming_distances(kept: np.ndarray, one: np.ndarray) -> np.ndarray:
    """Bit distances between one 64-bit hash (8 bytes) and each row of ``kept`` ([N, 8] uint8)."""
    return np.unpackbits(np.bitwise_xor(kept, one), axis=1).sum(axis=1)


def find_near_duplicates(hashes: Sequence[str], threshold: int) -> dict[int, tuple[int, int]]:
    """Map index -> (index of the kept look-alike, distance) for every hash within ``threshold``.

    ``hashes`` (hex perceptual hashes) are visited in the given order, so earlier entries win.
    A negative threshold disables dedup.
    """
    duplicates: dict[int, tuple[int, int]] = {}
    if threshold < 0 or not hashes:
        return duplicates
    as_bytes = np.array([list(bytes.fromhex(h)) for h in hashes], dtype=np.uint8)
    kept_rows: list[int] = []
    for i in range(len(hashes)):
        if kept_rows:
            dist = hamming_distances(as_bytes[kept_rows], as_bytes[i])
            best = int(np.argmin(dist))
            if dist[best] <= threshold:
                duplicates[i] = (kept_rows[best], int(dist[best]))
                continue
        kept_rows.append(i)
    return duplicates


# ---------------------------------------------------------------- inputs


def collect_sources(src: Path, skip: Iterable[Path] = ()) -> tuple[list[SourceItem], list[Dropped], str | None]:
    """List the input images: from ``manifest.jsonl`` if ``src`` has one, else every image file.

    Returns the items (sorted by source name), rows dropped while reading the manifest, and the
    manifest's sha256 (None for a plain folder).
    """
    manifest = src / "manifest.jsonl"
    if manifest.is_file():
        return _sources_from_manifest(src, manifest)
    skip_resolved = [p.resolve() for p in skip]
    root = src.resolve()
    items, dropped = [], []
    for path in _walk_images(src, skip_resolved):
        source = path.relative_to(src).as_posix()
        target = path.resolve()
        if target != root and root not in target.parents:
            # A link out of --src would put files from elsewhere (another user's, /etc) in the dataset.
            dropped.append(Dropped(source, "symlink to a file outside --src: not followed", "outside-src"))
            continue
        items.append(SourceItem(source=source, path=path))
    return sorted(items, key=lambda it: it.source), dropped, None


def _walk_images(root: Path, skip: list[Path]) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        # Hidden dirs hold our own temp output and editor clutter; --out may sit inside --src.
        dirnames[:] = [d for d in dirnames if not d.startswith(".") and (here / d).resolve() not in skip]
        for name in filenames:
            if not name.startswith(".") and name.lower().endswith(IMAGE_SUFFIXES):
                yield here / name


def _sources_from_manifest(src: Path, manifest: Path) -> tuple[list[SourceItem], list[Dropped], str]:
    raw = manifest.read_bytes()
    images_dir = (src / "images").resolve()
    items: dict[str, SourceItem] = {}
    referenced: set[Path] = set()
    dropped: list[Dropped] = []
    for line_no, line in enumerate(raw.decode("utf-8", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"manifest.jsonl line {line_no}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            dropped.append(Dropped(where, "invalid JSON in manifest row", "manifest"))
            continue
        name = row.get("file") if isinstance(row, dict) else None
        if not isinstance(name, str) or not name:
            dropped.append(Dropped(where, "manifest row has no 'file'", "manifest"))
            continue
        # The scraper writes 'file' relative to the download dir ("images/x.jpg"); a bare
        # name is taken relative to images/.
        relative_to = src if name.startswith(("images/", "images\\")) else src / "images"
        path = (relative_to / name).resolve()
        if images_dir not in path.parents:
            # The manifest is input too: a 'file' must not point outside images/.
            dropped.append(Dropped(where, f"manifest 'file' escapes images/: {name!r}", "manifest"))
            continue
        referenced.add(path)
        source = f"images/{path.relative_to(images_dir).as_posix()}"
        if source in items:
            dropped.append(Dropped(source, f"duplicate manifest row ({where})", "manifest"))
            continue
        if not path.is_file():
            dropped.append(Dropped(source, "listed in manifest.jsonl but the file is missing", "manifest"))
            continue
        work = {k: row[k] for k in WORK_FIELDS if k in row}
        sha = row.get("sha256") if isinstance(row.get("sha256"), str) else None
        items[source] = SourceItem(source=source, path=path, work=work, expected_sha256=sha)
    if images_dir.is_dir():
        for path in sorted(_walk_images(images_dir, [])):
            if path.resolve() not in referenced:
                rel = f"images/{path.relative_to(images_dir).as_posix()}"
                dropped.append(Dropped(rel, "not listed in manifest.jsonl (incomplete download?)", "manifest"))
    return sorted(items.values(), key=lambda it: it.source), dropped, hashlib.sha256(raw).hexdigest()


# ---------------------------------------------------------------- per-image work


def process_source(index: int, item: SourceItem, opts: PrepareOptions, tmp_dir: Path) -> SourceResult:
    """Decode, check, crop, resize and write one source image; never raises for bad input."""
    try:
        data_sha = file_sha256(item.path)
    except OSError as exc:
        return SourceResult(index, item.source, reason=f"unreadable file: {exc.strerror or exc}")
    if item.expected_sha256 and item.expected_sha256.lower() != data_sha:
        reason = "sha256 differs from manifest.jsonl (file changed?)"
        return SourceResult(index, item.source, data_sha, reason=reason, kind="manifest")
    try:
        img = open_image_rgb(item.path, max_pixels=opts.max_pixels)
    except BadImage as exc:
        return SourceResult(index, item.source, data_sha, reason=str(exc))
    width, height = img.size
    min_size = opts.effective_min_size
    if min(width, height) < min_size:
        return SourceResult(
            index,
            item.source,
            data_sha,
            (width, height),
            reason=f"too small: {width}x{height}, short edge {min(width, height)} < min-size {min_size}",
            kind="too-small",
        )
    crops = []
    for tile, box in enumerate(crop_boxes(width, height, opts)):
        square = resize_square(img, box, opts.resolution)
        temp_name = f"{index:07d}-{tile:03d}.png"
        sha = _write_png(square, tmp_dir / temp_name)
        crops.append(Crop(tile, box, temp_name, sha, str(imagehash.phash(square))))
    return SourceResult(index, item.source, data_sha, (width, height), tuple(crops))


def _process_star(args: tuple[int, SourceItem, PrepareOptions, Path]) -> SourceResult:
    return process_source(*args)


def _write_png(img: Image.Image, path: Path) -> str:
    img.save(path, format="PNG", compress_level=6)
    return file_sha256(path)


def _run_all(items: list[SourceItem], opts: PrepareOptions, tmp_dir: Path, progress: bool) -> list[SourceResult]:
    tasks = [(i, item, opts, tmp_dir) for i, item in enumerate(items)]
    bar = dict(total=len(tasks), desc="prepare", unit="img", disable=None if progress else True)
    if opts.workers == 1 or len(tasks) < 2:
        return [_process_star(t) for t in tqdm(tasks, **bar)]
    # multiprocessing.Pool rather than ProcessPoolExecutor: leaving its block terminates the
    # workers, so Ctrl-C cannot leave the process waiting at exit for idle workers forever.
    with multiprocessing.Pool(opts.workers, initializer=_ignore_sigint) as pool:
        # imap keeps input order, so the output is identical for any worker count.
        return list(tqdm(pool.imap(_process_star, tasks, chunksize=4), **bar))


def _ignore_sigint() -> None:
    """Workers leave Ctrl-C to the main process, which stops them (no traceback per worker)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


# ---------------------------------------------------------------- assembly


def prepare_dataset(opts: PrepareOptions, progress: bool = True) -> PrepareResult:
    """Build the dataset described by ``opts``; raise :class:`PrepareError` if nothing usable."""
    opts.validate()
    src, out = Path(opts.src), Path(opts.out)
    if not src.is_dir():
        raise PrepareError(f"--src {src} is not a directory")
    if out.resolve() == src.resolve() or out.resolve() in src.resolve().parents:
        # Replacing --out would delete the input with it.
        raise PrepareError(f"--out {out} must not be --src or contain it")
    if src.resolve() in out.resolve().parents:
        # The next prepare of --src would take this output in as input.
        raise PrepareError(f"--out {out} must not be inside --src {src}: choose a folder outside it")
    if out.exists() and not out.is_dir():
        raise PrepareError(f"--out {out} exists and is not a directory")
    _recover_from_a_kill(out)
    if out.is_dir() and any(out.iterdir()) and not opts.overwrite:
        raise PrepareError(f"--out {out} already exists and is not empty (pass --overwrite to replace it)")

    items, dropped, manifest_sha = collect_sources(src, skip=[out])
    if not items:
        raise PrepareError(f"no images found in {src}" + (" (manifest.jsonl lists none that exist)" if manifest_sha else ""))

    kind = "manifest.jsonl" if manifest_sha else "a folder scan"
    log.info("%d source images from %s (%s) -> %dx%d %s", len(items), src, kind, opts.resolution, opts.resolution, opts.mode)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = make_temp_dir(out.parent, prefix=f".{out.name}.tmp-")  # umask permissions, not mkdtemp's 0700
    try:
        results = _run_all(items, opts, tmp_dir, progress)
        rows, more_dropped = _assemble(results, items, opts, tmp_dir)
        dropped = dropped + more_dropped
        if not rows:
            raise PrepareError(f"no usable images in {src}: all {len(items)} were dropped ({_reason_counts(dropped)})")
        info = _dataset_info(opts, src, rows, dropped, manifest_sha, len(items))
        _write_json(tmp_dir / INFO_NAME, info)
        _move_into_place(tmp_dir, out, opts.overwrite)
    finally:
        if tmp_dir.exists():
            shutil.rmtree(tmp_dir, ignore_errors=True)
    return PrepareResult(out, len(rows), len(items), tuple(dropped), info)


def _assemble(
    results: list[SourceResult], items: list[SourceItem], opts: PrepareOptions, tmp_dir: Path
) -> tuple[list[dict], list[Dropped]]:
    """Dedup the crops, give the survivors final names in source order, describe everything."""
    dropped = [Dropped(r.source, r.reason, r.kind) for r in results if r.reason]
    good = [r for r in results if not r.reason]
    crops = [(r, c) for r in good for c in r.crops]
    # Of a group of near-duplicates keep the crop from the largest original (finest detail);
    # ties go to the first source by name, so the choice is deterministic.
    priority = sorted(range(len(crops)), key=lambda k: (-_pixels(crops[k][0]), crops[k][0].index, crops[k][1].tile))
    dup = find_near_duplicates([crops[k][1].phash for k in priority], opts.dedup_threshold)
    duplicate_of = {priority[i]: (priority[j], d) for i, (j, d) in dup.items()}

    final_names = {}
    for k in range(len(crops)):
        if k not in duplicate_of:
            final_names[k] = f"{len(final_names):05d}.png"
    rows = []
    for k, (res, crop) in enumerate(crops):
        if k in duplicate_of:
            keeper, dist = duplicate_of[k]
            keeper_res, keeper_crop = crops[keeper]
            dropped.append(
                Dropped(
                    res.source,
                    f"near-duplicate of {keeper_res.source} tile {keeper_crop.tile} "
                    f"(kept as {final_names[keeper]}; phash distance {dist} <= {opts.dedup_threshold})",
                    "near-duplicate",
                    crop.crop_box,
                )
            )
            (tmp_dir / crop.temp_name).unlink()
            continue
        name = final_names[k]
        (tmp_dir / crop.temp_name).rename(tmp_dir / name)
        row = {
            "file": name,
            "sha256": crop.sha256,
            "source": res.source,
            "source_sha256": res.source_sha256,
            "source_size": list(res.source_size),
            "crop_box": list(crop.crop_box),
            "tile": crop.tile,
            "phash": crop.phash,
        }
        work = items[res.index].work
        if work:
            row["work"] = work
        rows.append(row)
    return rows, dropped


def _pixels(res: SourceResult) -> int:
    return res.source_size[0] * res.source_size[1] if res.source_size else 0


def _dataset_info(
    opts: PrepareOptions, src: Path, rows: list[dict], dropped: list[Dropped], manifest_sha: str | None, n_sources: int
) -> dict:
    return {
        "format": DATASET_FORMAT,
        "resolution": opts.resolution,
        "count": len(rows),
        "source_dir": str(src),
        "source_kind": "manifest" if manifest_sha else "folder",
        "source_count": n_sources,
        "source_manifest_sha256": manifest_sha,
        "content_sha256": content_sha256(r["sha256"] for r in rows),
        "options": opts.recorded(),
        "images": rows,
        "dropped": [d.as_json() for d in dropped],
    }


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def _recover_from_a_kill(out: Path) -> None:
    """Clean up after a run of this command that was killed (``kill -9``, a crash, a full node).

    Its temp dir would otherwise stay forever (hidden, as large as the dataset); a killed
    ``--overwrite`` may have moved the old dataset aside without putting the new one in place.
    """
    if not out.parent.is_dir():
        return
    for tmp in sorted(out.parent.glob(f".{out.name}.tmp-*")):
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
            log.info("removed %s, left by an interrupted run", tmp)
    for old in sorted(out.parent.glob(f".{out.name}.old-*")):
        if not old.is_dir():
            continue
        if out.exists():
            shutil.rmtree(old, ignore_errors=True)
            log.info("removed %s, the dataset an interrupted --overwrite had replaced", old)
        else:
            old.rename(out)
            log.warning("put back %s: an interrupted --overwrite had moved it to %s", out, old)


def _move_into_place(tmp_dir: Path, out: Path, overwrite: bool) -> None:
    """Rename the finished temp dir to ``out``; an old ``out`` is removed only after that works."""
    old = None
    if out.exists():
        if any(out.iterdir()) and not overwrite:
            raise PrepareError(f"--out {out} appeared while preparing; not replacing it")
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        out.rename(old)
    try:
        tmp_dir.rename(out)
    except OSError:
        if old is not None:
            old.rename(out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _reason_counts(dropped: Sequence[Dropped]) -> str:
    counts: dict[str, int] = {}
    for d in dropped:
        counts[d.kind] = counts.get(d.kind, 0) + 1
    return ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items(), key=lambda kv: -kv[1]))


# ---------------------------------------------------------------- CLI


def format_summary(result: PrepareResult, max_lines: int = 50) -> str:
    """Human summary: what was written and every dropped input with its reason."""
    lines = [
        f"prepared {result.count} images at {result.info['resolution']}x{result.info['resolution']} "
        f"from {result.sources} sources into {result.out}"
    ]
    if result.dropped:
        lines.append(f"dropped {len(result.dropped)} ({_reason_counts(result.dropped)}):")
        for d in result.dropped[:max_lines]:
            where = f" {list(d.crop_box)}" if d.crop_box else ""
            lines.append(f"  {d.source}{where}: {d.reason}")
        if len(result.dropped) > max_lines:
            lines.append(f"  ... and {len(result.dropped) - max_lines} more (see 'dropped' in dataset.json)")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog=prog_name(CMD),
        description=(
            "Turn a raw download dir (manifest.jsonl + images/) or any folder of images into a "
            "training dataset: square RGB PNGs at one power-of-two resolution plus dataset.json "
            "(provenance of every image, and every dropped input with its reason). X-flip is a "
            "training-time option, not done here."
        ),
        epilog=(
            "example: atelier prepare --src data/raw/claude-monet --out data/datasets/monet-256 "
            "--resolution 256. Exit status 0 on success, 2 when nothing usable was found or an option is bad; "
            "a summary lists every dropped input with its reason."
        ),
    )
    parser.add_argument(
        "--src",
        type=Path,
        required=True,
        help="required. Input: a scraper download dir with manifest.jsonl + images/, or a folder searched recursively for "
        f"{'/'.join(s[1:] for s in IMAGE_SUFFIXES)} files",
    )
    parser.add_argument(
        "--out", type=Path, required=True, help="required. Output dataset dir; written to a temp dir beside it and renamed when complete"
    )
    parser.add_argument(
        "--resolution", type=int, default=256, help="side of the square output images in pixels, a power of two (default: %(default)s)"
    )
    parser.add_argument(
        "--mode",
        choices=MODES,
        default="center-crop",
        help="center-crop: the largest centred square of each image. tiles: several squares per image on a "
        "grid covering it edge to edge (for artists with few, large works); see --tile-* options (default: %(default)s)",
    )
    parser.add_argument(
        "--min-size",
        type=int,
        default=None,
        help="drop images whose short edge is below this many pixels (default: the resolution, so nothing "
        "is upscaled; lower it to allow upscaling small images, which blurs them)",
    )
    parser.add_argument(
        "--tile-fraction",
        type=float,
        default=0.5,
        help="tiles mode: tile side as a fraction of the image's short edge (never below --min-size, never "
        "above the short edge; 1.0 = full-height squares sliding along the long edge; default: %(default)s)",
    )
    parser.add_argument(
        "--tile-overlap",
        type=float,
        default=0.25,
        help="tiles mode: minimum overlap of neighbouring tiles as a fraction of the tile side, in [0, 0.9] (default: %(default)s)",
    )
    parser.add_argument(
        "--tiles-per-image",
        type=int,
        default=16,
        help="tiles mode: at most this many tiles per image (the grid is thinned along its longer axis "
        "first; tiles still span the image edge to edge; default: %(default)s)",
    )
    parser.add_argument(
        "--dedup-threshold",
        type=int,
        default=6,
        help="drop a crop whose 64-bit perceptual hash (pHash) is within this many bits of an already kept "
        "one; the crop from the larger original is kept. 0 = identical hashes only, -1 = no dedup (default: %(default)s)",
    )
    parser.add_argument(
        "--max-pixels",
        type=int,
        default=MAX_PIXELS,
        help="reject images whose header claims more pixels than this, before decoding (decompression bombs; default: %(default)s)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="processes decoding images in parallel (output is identical for any value; default: %(default)s)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing non-empty --out (the old one is removed only after the new one is complete)",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def options_from_args(args: argparse.Namespace) -> PrepareOptions:
    return PrepareOptions(
        src=args.src,
        out=args.out,
        resolution=args.resolution,
        mode=args.mode,
        min_size=args.min_size,
        tile_fraction=args.tile_fraction,
        tile_overlap=args.tile_overlap,
        tiles_per_image=args.tiles_per_image,
        dedup_threshold=args.dedup_threshold,
        max_pixels=args.max_pixels,
        workers=args.workers,
        overwrite=args.overwrite,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """``atelier prepare``; returns the exit status (README's table)."""
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    try:
        result = prepare_dataset(options_from_args(args), progress=not args.no_progress)
    except PrepareError as exc:
        return fail(CMD, exc)
    except OSError as exc:  # a full or read-only disk; prepare_dataset has removed its temp dir
        return fail_write(CMD, exc, args.out)
    except KeyboardInterrupt:  # prepare_dataset has removed its temp dir; --out is as it was
        print(f"{prog_name(CMD)}: interrupted: nothing written to {args.out}", file=sys.stderr)
        return int(ExitCode.INTERRUPTED)
    print(format_summary(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
