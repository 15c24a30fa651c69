"""Dataset preparation: safe decoding, RGB conversion, crop/tile geometry, resize, dedup, output."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers_images import jpeg_bytes, painting, png_claiming_size, save, write_raw_download
from PIL import Image, ImageFile

from atelier.common.images import BadImage, inspect_image_bytes, open_image_rgb
from scraping import prepare as P

REPO = Path(__file__).resolve().parents[1]


def opts(src: Path, out: Path, **kw) -> P.PrepareOptions:
    kw.setdefault("resolution", 32)
    return P.PrepareOptions(src=src, out=out, **kw)


def run_prepare(src: Path, out: Path, **kw) -> P.PrepareResult:
    return P.prepare_dataset(opts(src, out, **kw), progress=False)


# ------------------------------------------------------------ conversion to RGB


def px(img: Image.Image, xy=(0, 0)) -> tuple[int, int, int]:
    return img.getpixel(xy)


@pytest.mark.parametrize(
    "mode, value, fmt, expected",
    [
        ("L", 100, "PNG", (100, 100, 100)),
        ("1", 1, "PNG", (255, 255, 255)),
        ("I;16", 65535, "PNG", (255, 255, 255)),
        ("I;16", 32896, "PNG", (128, 128, 128)),  # 16-bit is scaled, not clipped to white
        ("I", 40000, "TIFF", (156, 156, 156)),
        ("F", 0.5, "TIFF", (128, 128, 128)),
        ("CMYK", (255, 0, 0, 0), "TIFF", (0, 255, 255)),  # pure cyan
        ("RGBA", (255, 0, 0, 0), "PNG", (255, 255, 255)),  # fully transparent -> white matte
        ("RGBA", (255, 0, 0, 128), "PNG", (255, 127, 127)),  # half over white
        ("LA", (0, 255), "PNG", (0, 0, 0)),
        ("LA", (0, 0), "PNG", (255, 255, 255)),
    ],
)
def test_modes_convert_to_rgb(tmp_path, mode, value, fmt, expected):
    path = save(Image.new(mode, (6, 4), value), tmp_path / f"x.{fmt.lower()}", format=fmt)
    img = open_image_rgb(path)
    assert img.mode == "RGB" and img.size == (6, 4)
    assert all(abs(a - b) <= 1 for a, b in zip(px(img), expected)), (px(img), expected)


def test_palette_with_transparency_goes_white(tmp_path):
    img = Image.new("P", (4, 2))
    img.putpalette([200, 10, 20] + [0, 0, 255] + [0] * 762)
    img.putpixel((1, 0), 1)  # index 1 is the transparent one
    img.info["transparency"] = 1
    out = open_image_rgb(save(img, tmp_path / "p.png", transparency=1))
    assert px(out, (0, 0)) == (200, 10, 20)
    assert px(out, (1, 0)) == (255, 255, 255)


def test_cmyk_jpeg_keeps_colour(tmp_path):
    path = save(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), tmp_path / "red.jpg", quality=95)
    r, g, b = px(open_image_rgb(path), (8, 8))
    assert r > 230 and g < 25 and b < 25


def test_exif_orientation_is_applied(tmp_path):
    img = painting(1, (40, 20))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to view"
    out = open_image_rgb(save(img, tmp_path / "o.jpg", exif=exif.tobytes()))
    assert out.size == (20, 40)


# ------------------------------------------------------------ bad input


def test_zero_byte_and_html_and_text_are_rejected(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "page.jpg").write_bytes(b"<!DOCTYPE html><html><body>429 Too Many Requests</body></html>")
    with pytest.raises(BadImage, match="zero-byte"):
        open_image_rgb(tmp_path / "empty.jpg")
    with pytest.raises(BadImage, match="not an image.*HTML"):
        open_image_rgb(tmp_path / "page.jpg")
    with pytest.raises(BadImage, match="zero-byte"):
        inspect_image_bytes(b"")
    with pytest.raises(BadImage, match="not an image"):
        inspect_image_bytes(b"just some words\n")


def test_truncated_jpeg_is_rejected():
    data = jpeg_bytes(painting(2, (64, 64)))
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    with pytest.raises(BadImage, match="truncated or corrupt"):
        inspect_image_bytes(data[: len(data) // 2])
    assert inspect_image_bytes(data).width == 64  # the whole file is fine


@pytest.mark.parametrize("side", [10_000, 100_000])  # over our cap only / over Pillow's hard limit too
def test_decompression_bomb_rejected_before_decoding(monkeypatch, side):
    bomb = png_claiming_size(side, side)
    assert len(bomb) < 200_000

    def no_decoding(self):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    with pytest.raises(BadImage, match="decompression bomb"):
        inspect_image_bytes(bomb)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_mutated_files_only_ever_raise_bad_image():
    """Hostile bytes (flipped and cut) must come back as BadImage or a valid image, never a crash."""
    import io
    import random

    rng = random.Random(0)
    originals = []
    for fmt in ("JPEG", "PNG", "GIF", "TIFF", "WEBP"):
        buf = io.BytesIO()
        painting(1, (24, 16)).save(buf, fmt)
        originals.append(buf.getvalue())
    outcomes = set()
    for _ in range(150):
        data = bytearray(rng.choice(originals))
        for _ in range(rng.randint(1, 6)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        if rng.random() < 0.3:
            data = data[: rng.randrange(1, len(data))]
        try:
            inspect_image_bytes(bytes(data))
            outcomes.add("ok")
        except BadImage:
            outcomes.add("bad")
    assert outcomes == {"ok", "bad"}


def test_max_pixels_is_configurable():
    data = jpeg_bytes(painting(3, (100, 100)))
    with pytest.raises(BadImage, match="exceeds the cap of 5000"):
        inspect_image_bytes(data, max_pixels=5000)
    assert inspect_image_bytes(data, max_pixels=10_000).format == "JPEG"
    assert Image.MAX_IMAGE_PIXELS == 89_478_485  # our per-call cap never leaks into Pillow's global


def test_bad_inputs_are_skipped_with_reasons(tmp_path):
    src = tmp_path / "src"
    save(painting(1), src / "good.png")
    (src / "empty.jpg").write_bytes(b"")
    (src / "page.jpg").write_bytes(b"<html>not found</html>")
    data = jpeg_bytes(painting(2))
    (src / "cut.jpg").write_bytes(data[: len(data) // 2])
    (src / "bomb.png").write_bytes(png_claiming_size(20_000, 20_000))
    os.symlink(src / "gone.jpg", src / "dangling.jpg")  # unreadable: open() fails
    (src / "dir.jpg").mkdir()  # a directory is never picked up as an image
    result = run_prepare(src, tmp_path / "out")
    assert result.count == 1
    reasons = {d.source: d.reason for d in result.dropped}
    assert reasons["empty.jpg"] == "zero-byte file"
    assert reasons["page.jpg"].startswith("not an image")
    assert reasons["cut.jpg"].startswith("truncated or corrupt")
    assert reasons["bomb.png"].startswith("decompression bomb")
    assert reasons["dangling.jpg"].startswith("unreadable file")
    assert all("\n" not in r for r in reasons.values())
    info = json.loads((tmp_path / "out" / "dataset.json").read_text())
    assert {d["source"] for d in info["dropped"]} == set(reasons)
    assert {d["kind"] for d in info["dropped"]} == {"bad-image"}
    summary = P.format_summary(result)
    assert "dropped 5 (5 bad-image):" in summary
    assert "cut.jpg: truncated or corrupt" in summary and "prepared 1 images" in summary


# ------------------------------------------------------------ geometry and resize


def test_center_crop_boxes_are_exact():
    assert P.center_crop_box(160, 120) == (20, 0, 140, 120)
    assert P.center_crop_box(121, 200) == (0, 39, 121, 160)
    assert P.center_crop_box(50, 50) == (0, 0, 50, 50)


def test_tile_geometry():
    assert P.tile_side(400, 200, 0.5, 32) == 100
    assert P.tile_side(400, 200, 0.1, 32) == 32  # never below min-size
    assert P.tile_side(400, 200, 0.1, 500) == 200  # never above the short edge
    boxes = P.tile_boxes(400, 200, 100, overlap=0.25, max_tiles=100)
    lefts, tops = sorted({b[0] for b in boxes}), sorted({b[1] for b in boxes})
    assert lefts == [0, 75, 150, 225, 300] and tops == [0, 50, 100]
    assert len(boxes) == 15 and boxes[0] == (0, 0, 100, 100) and boxes[-1] == (300, 100, 400, 200)
    assert all(b[2] - b[0] == b[3] - b[1] == 100 for b in boxes)
    # Thinned to fit the cap, still spanning edge to edge.
    capped = P.tile_boxes(400, 200, 100, overlap=0.25, max_tiles=6)
    assert capped == [
        (0, 0, 100, 100),
        (300, 0, 400, 100),
        (0, 50, 100, 150),
        (300, 50, 400, 150),
        (0, 100, 100, 200),
        (300, 100, 400, 200),
    ]
    # Full-height squares sliding along a wide image.
    assert P.tile_boxes(300, 100, 100, overlap=0.0, max_tiles=10) == [(0, 0, 100, 100), (100, 0, 200, 100), (200, 0, 300, 100)]


def test_tiles_mode_writes_every_tile_with_its_box(tmp_path):
    src = tmp_path / "src"
    save(painting(5, (256, 128)), src / "wide.png")
    result = run_prepare(src, tmp_path / "out", mode="tiles", tile_fraction=0.5, tile_overlap=0.0, dedup_threshold=-1)
    boxes = [tuple(r["crop_box"]) for r in result.info["images"]]
    assert boxes == P.tile_boxes(256, 128, 64, 0.0, 16)
    assert len(boxes) == 8 and [r["tile"] for r in result.info["images"]] == list(range(8))
    for row in result.info["images"]:
        with Image.open(tmp_path / "out" / row["file"]) as im:
            assert im.size == (32, 32) and im.mode == "RGB"


def test_resize_is_antialiased_and_faithful():
    # A 1-px checkerboard must average to grey (no aliasing) ...
    checker = (np.indices((256, 256)).sum(axis=0) % 2 * 255).astype(np.uint8)
    small = np.asarray(P.resize_square(Image.fromarray(checker).convert("RGB"), (0, 0, 256, 256), 32), dtype=float)
    assert abs(small.mean() - 127.5) < 3 and small.std() < 4
    # ... and a smooth picture must match plain block averaging closely.
    big = painting(7, (256, 256)).resize((256, 256))
    smooth = np.asarray(big.resize((64, 64), Image.Resampling.BOX).resize((256, 256), Image.Resampling.BICUBIC))
    out = np.asarray(P.resize_square(Image.fromarray(smooth), (0, 0, 256, 256), 32), dtype=float)
    block = np.asarray(smooth, dtype=float).reshape(32, 8, 32, 8, 3).mean(axis=(1, 3))
    assert np.abs(out - block).mean() < 4


def test_too_small_images_are_dropped_and_min_size_defaults_to_resolution(tmp_path):
    src = tmp_path / "src"
    save(painting(1, (40, 30)), src / "small.png")
    save(painting(2, (64, 48)), src / "ok.png")
    result = run_prepare(src, tmp_path / "a")
    assert result.count == 1
    assert result.dropped[0].reason == "too small: 40x30, short edge 30 < min-size 32"
    assert result.dropped[0].kind == "too-small"
    assert run_prepare(src, tmp_path / "b", min_size=16).count == 2  # lower min-size allows upscaling


# ------------------------------------------------------------ dedup


def test_near_duplicate_dropped_and_distinct_kept(tmp_path):
    src = tmp_path / "src"
    original = painting(11, (160, 120))
    save(original, src / "a_original.png")
    # The same work downloaded again: smaller and recompressed.
    save(original.resize((120, 90), Image.Resampling.BILINEAR), src / "b_copy.jpg", quality=60)
    save(painting(12, (160, 120)), src / "c_other.png")
    result = run_prepare(src, tmp_path / "out")
    assert [r["source"] for r in result.info["images"]] == ["a_original.png", "c_other.png"]
    (dup,) = result.dropped
    assert dup.source == "b_copy.jpg" and dup.reason.startswith("near-duplicate of a_original.png")
    assert dup.kind == "near-duplicate" and dup.crop_box == (15, 0, 105, 90)
    # The larger original wins even when the small copy sorts first.
    os.rename(src / "a_original.png", src / "z_original.png")
    result = run_prepare(src, tmp_path / "out2")
    assert {r["source"] for r in result.info["images"]} == {"z_original.png", "c_other.png"}
    assert run_prepare(src, tmp_path / "out3", dedup_threshold=-1).count == 3


def test_find_near_duplicates_threshold():
    hashes = ["0000000000000000", "0000000000000007", "ffffffffffffffff", "000000000000000f"]
    assert P.find_near_duplicates(hashes, 3) == {1: (0, 3)}
    assert P.find_near_duplicates(hashes, 4) == {1: (0, 3), 3: (0, 4)}
    assert P.find_near_duplicates(hashes, -1) == {}


# ------------------------------------------------------------ manifest input


def test_manifest_provenance_and_row_problems(tmp_path):
    src = tmp_path / "raw"
    write_raw_download(
        src,
        {"a.jpg": painting(1), "b.png": painting(2)},
        extra_rows=[
            "{not json",
            {"id": "m", "file": "images/missing.jpg"},
            {"id": "e", "file": "../../etc/passwd"},
            {"id": "s", "file": "changed.png", "sha256": "0" * 64},  # bare name: relative to images/
        ],
    )
    save(painting(3), src / "images" / "changed.png")
    save(painting(4), src / "images" / "stray.png")  # on disk but never recorded in the manifest
    result = run_prepare(src, tmp_path / "out")
    info = result.info
    assert info["source_kind"] == "manifest" and info["count"] == 2
    assert info["source_manifest_sha256"] == hashlib.sha256((src / "manifest.jsonl").read_bytes()).hexdigest()
    first = info["images"][0]
    assert first["source"] == "images/a.jpg" and first["work"]["title"] == "Study 0" and first["work"]["id"] == "work-0"
    assert first["source_sha256"] == hashlib.sha256((src / "images" / "a.jpg").read_bytes()).hexdigest()
    assert first["sha256"] == hashlib.sha256((tmp_path / "out" / first["file"]).read_bytes()).hexdigest()
    reasons = {d["source"]: d["reason"] for d in info["dropped"]}
    assert reasons["manifest.jsonl line 3"] == "invalid JSON in manifest row"
    assert reasons["images/missing.jpg"].startswith("listed in manifest.jsonl but the file is missing")
    assert reasons["manifest.jsonl line 5"].startswith("manifest 'file' escapes images/")
    assert reasons["images/changed.png"].startswith("sha256 differs from manifest.jsonl")
    assert reasons["images/stray.png"].startswith("not listed in manifest.jsonl")
    expected = hashlib.sha256("\n".join(sorted(r["sha256"] for r in info["images"])).encode()).hexdigest()
    assert info["content_sha256"] == expected


def test_plain_folder_is_recursive_sorted_and_refuses_out_inside_src(tmp_path):
    src = tmp_path / "src"
    save(painting(1), src / "b" / "two.jpg")
    save(painting(2), src / "a" / "one.png")
    save(painting(3), src / "three.webp")
    (src / "notes.txt").write_text("ignored")
    first = run_prepare(src, tmp_path / "prepared")
    assert [r["source"] for r in first.info["images"]] == ["a/one.png", "b/two.jpg", "three.webp"]
    assert first.info["source_manifest_sha256"] is None
    again = run_prepare(src, tmp_path / "prepared", overwrite=True, workers=2)
    assert again.info["images"] == first.info["images"]  # deterministic, any worker count
    # Output inside the input would be ingested by the next prepare of that input.
    with pytest.raises(P.PrepareError, match="must not be inside --src"):
        run_prepare(src, src / "prepared")
    assert not (src / "prepared").exists()


# ------------------------------------------------------------ atomic output and CLI


def test_existing_output_refused_and_overwrite_replaces(tmp_path):
    src = tmp_path / "src"
    save(painting(1), src / "x.png")
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(P.PrepareError, match="already exists and is not empty"):
        run_prepare(src, out)
    assert (out / "keep.txt").read_text() == "mine"
    run_prepare(src, out, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["00000.png", "dataset.json"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    with pytest.raises(P.PrepareError, match="must not be --src or contain it"):
        run_prepare(src, tmp_path, overwrite=True)  # would delete the input
    assert (src / "x.png").exists()


def test_failure_leaves_nothing_behind(tmp_path, monkeypatch):
    src = tmp_path / "src"
    save(painting(1), src / "x.png")

    def crash(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(P, "_write_json", crash)
    with pytest.raises(RuntimeError):
        run_prepare(src, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_leftovers_of_a_killed_run_are_cleaned_up(tmp_path):
    src = tmp_path / "src"
    save(painting(1), src / "x.png")
    out = tmp_path / "out"
    (tmp_path / ".out.tmp-k1ll3d").mkdir()  # killed while writing: a hidden, dataset-sized temp dir
    (tmp_path / ".out.tmp-k1ll3d" / "00000.png").write_bytes(b"half")
    (tmp_path / ".out.old-4242").mkdir()  # killed mid --overwrite: the old dataset moved aside
    (tmp_path / ".out.old-4242" / "dataset.json").write_text("{}")
    with pytest.raises(P.PrepareError, match="already exists"):
        run_prepare(src, out)  # the old dataset is back in place, so it is not silently replaced
    assert (out / "dataset.json").read_text() == "{}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "src"]
    (tmp_path / ".out.old-4243").mkdir()
    run_prepare(src, out, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "src"]


def test_ctrl_c_is_one_line_and_writes_nothing(tmp_path, monkeypatch, capsys):
    src = tmp_path / "src"
    save(painting(1), src / "x.png")

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(P, "_write_json", ctrl_c)
    assert P.main(["--src", str(src), "--out", str(tmp_path / "out"), "--resolution", "16", "--no-progress"]) == 130
    assert capsys.readouterr().err.strip() == f"atelier prepare: interrupted: nothing written to {tmp_path / 'out'}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_nothing_usable_is_an_error_without_output(tmp_path, capsys):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "page.jpg").write_bytes(b"<html></html>")
    code = P.main(["--src", str(src), "--out", str(tmp_path / "out"), "--resolution", "32", "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("atelier prepare: error: no usable images") and "\n" not in err
    assert not (tmp_path / "out").exists()
    assert P.main(["--src", str(tmp_path / "nope"), "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    assert "is not a directory" in capsys.readouterr().err


@pytest.mark.parametrize("flag, value", [("--resolution", "48"), ("--tile-overlap", "0.95"), ("--tiles-per-image", "0")])
def test_bad_options_are_one_line_errors(tmp_path, capsys, flag, value):
    save(painting(1), tmp_path / "src" / "x.png")
    assert P.main(["--src", str(tmp_path / "src"), "--out", str(tmp_path / "o"), flag, value]) == 2
    assert capsys.readouterr().err.startswith(f"atelier prepare: error: {flag} must")


@pytest.mark.slow
def test_help_documents_every_option():
    out = subprocess.run([sys.executable, "-m", "scraping.prepare", "--help"], cwd=REPO, capture_output=True, text=True, check=True)
    for action in P.build_parser()._actions:
        for flag in action.option_strings:
            assert flag in out.stdout
        assert action.help, action.option_strings
    for flag in (
        "--src",
        "--out",
        "--resolution",
        "--mode",
        "--min-size",
        "--tile-fraction",
        "--tile-overlap",
        "--tiles-per-image",
        "--dedup-threshold",
        "--max-pixels",
        "--workers",
        "--overwrite",
    ):
        assert flag in out.stdout


def test_quickstart_command_on_bundled_sample(tmp_path, capsys):
    out = tmp_path / "sample-32"
    code = P.main(["--src", str(REPO / "data" / "sample"), "--out", str(out), "--resolution", "32", "--min-size", "32", "--no-progress"])
    assert code == 0
    info = json.loads((out / "dataset.json").read_text())
    manifest_rows = (REPO / "data" / "sample" / "manifest.jsonl").read_text().splitlines()
    assert info["count"] == len(manifest_rows) >= 40 and info["dropped"] == []
    assert info["images"][0]["work"]["artist"].startswith("Atelier Sample Painter")
    assert "prepared 48 images at 32x32" in capsys.readouterr().out


def test_sample_set_is_reproducible_from_its_script(tmp_path):
    """The committed data/sample is exactly what scripts/make_sample_set.py paints (first works)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_sample_set", REPO / "scripts" / "make_sample_set.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rows = module.make_sample_set(tmp_path / "s", count=4, seed=7)
    committed = [json.loads(line) for line in (REPO / "data" / "sample" / "manifest.jsonl").read_text().splitlines()]
    assert rows == committed[:4]
    total = sum(row["bytes"] for row in committed)
    assert total < 400_000  # "a few hundred KB"


# ------------------------------------------------------------ links, permissions, full disks


def test_folder_mode_does_not_follow_links_out_of_src(tmp_path):
    src, outside = tmp_path / "src", tmp_path / "private"
    save(painting(1), src / "mine.png")
    save(painting(2), src / "sub" / "also-mine.png")
    save(painting(3), outside / "secret.png")
    os.symlink(outside / "secret.png", src / "link-out.png")
    os.symlink(src / "sub" / "also-mine.png", src / "link-in.png")  # a link within --src is fine
    os.symlink(outside, src / "linked-dir")  # a linked folder is not walked into
    result = run_prepare(src, tmp_path / "out")
    sources = [r["source"] for r in result.info["images"]]
    assert sources == ["link-in.png", "mine.png"]  # sub/also-mine.png is link-in.png's duplicate
    reasons = {d.source: d.reason for d in result.dropped}
    assert reasons["link-out.png"] == "symlink to a file outside --src: not followed"
    assert not any("secret" in name for name in list(reasons) + sources)


def test_dataset_dir_and_files_follow_the_umask(tmp_path):
    src = tmp_path / "src"
    save(painting(1), src / "x.png")
    old = os.umask(0o022)
    try:
        result = run_prepare(src, tmp_path / "out")
    finally:
        os.umask(old)
    assert (result.out.stat().st_mode & 0o777) == 0o755  # not mkdtemp's 0700
    assert {p.stat().st_mode & 0o777 for p in result.out.iterdir()} == {0o644}


def test_full_disk_is_one_line_exit_5_and_no_temp_dir(tmp_path, monkeypatch, capsys):
    import errno

    src = tmp_path / "src"
    save(painting(1), src / "x.png")
    save(painting(2), src / "y.png")

    def full(img, path):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(P, "_write_png", full)
    code = P.main(["--src", str(src), "--out", str(tmp_path / "out"), "--resolution", "32", "--workers", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 5 and len(err) == 1 and "disk full" in err[0] and str(tmp_path / "out") in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]  # no .out.tmp-* left behind
