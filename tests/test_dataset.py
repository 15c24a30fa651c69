"""The prepared-dataset loader: tensors, deterministic x-flip, and its up-front errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers_images import painting, save
from PIL import Image

from gan.dataset import DatasetError, ImageFolderDataset, load_dataset_info
from scraping.prepare import PrepareOptions, prepare_dataset


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    """A real dataset made by prepare: 24 distinct images at 16x16."""
    root = tmp_path_factory.mktemp("ds")
    for i in range(24):
        save(painting(100 + i, (40, 30)), root / "src" / f"{i:02d}.png")
    prepare_dataset(PrepareOptions(src=root / "src", out=root / "out", resolution=16, dedup_threshold=-1), progress=False)
    return root / "out"


def copy_dataset(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for p in src.iterdir():
        (dst / p.name).write_bytes(p.read_bytes())
    return dst


def test_items_are_float_chw_in_range(prepared):
    ds = ImageFolderDataset(prepared, resolution=16)
    assert len(ds) == 24 and ds.image_shape == (3, 16, 16)
    x = ds[3]
    assert x.dtype == torch.float32 and x.shape == (3, 16, 16)
    assert x.min() >= -1.0 and x.max() <= 1.0 and x.min() < 0 < x.max()
    # Exactly the PNG's pixels, scaled.
    png = torch.from_numpy(np.array(Image.open(prepared / "00003.png"))).permute(2, 0, 1)
    assert torch.allclose(x, png.float() / 127.5 - 1)
    assert ds.content_sha256 == load_dataset_info(prepared)["content_sha256"]


def test_batches_through_a_dataloader(prepared):
    batch = next(iter(torch.utils.data.DataLoader(ImageFolderDataset(prepared, cache=False), batch_size=8)))
    assert batch.shape == (8, 3, 16, 16)


def test_xflip_is_deterministic_per_seed_and_epoch(prepared):
    plain = ImageFolderDataset(prepared)
    a, b = ImageFolderDataset(prepared, xflip=True, seed=1), ImageFolderDataset(prepared, xflip=True, seed=1)
    flips = [a.is_flipped(i) for i in range(len(a))]
    assert flips == [b.is_flipped(i) for i in range(len(b))]
    assert 4 <= sum(flips) <= 20  # roughly half
    for i in range(len(a)):
        expected = plain[i].flip(-1) if flips[i] else plain[i]
        assert torch.equal(a[i], expected)
    other_seed = [ImageFolderDataset(prepared, xflip=True, seed=2).is_flipped(i) for i in range(len(a))]
    a.set_epoch(1)
    next_epoch = [a.is_flipped(i) for i in range(len(a))]
    assert next_epoch != flips and other_seed != flips
    a.set_epoch(0)
    assert [a.is_flipped(i) for i in range(len(a))] == flips
    assert not any(plain.is_flipped(i) for i in range(len(plain)))


def test_missing_and_empty_dirs(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        ImageFolderDataset(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="has no dataset.json: it is empty"):
        ImageFolderDataset(tmp_path / "empty")
    save(painting(1, (16, 16)), tmp_path / "pngs" / "a.png")
    with pytest.raises(
        DatasetError,
        match="has no dataset.json: it holds images but is not a prepared dataset; "
        r"make one with `atelier prepare --src \S+pngs --out",
    ):
        ImageFolderDataset(tmp_path / "pngs")
    (tmp_path / "raw" / "images").mkdir(parents=True)
    (tmp_path / "raw" / "manifest.jsonl").write_text("")
    with pytest.raises(DatasetError, match="it is a scraper download, not a prepared dataset; make one with"):
        ImageFolderDataset(tmp_path / "raw")  # --data pointed at `python -m scraping`'s output


def test_empty_listing_and_bad_json(prepared, tmp_path):
    ds = copy_dataset(prepared, tmp_path / "d")
    info = json.loads((ds / "dataset.json").read_text())
    (ds / "dataset.json").write_text(json.dumps({**info, "images": [], "count": 0}))
    with pytest.raises(DatasetError, match="the dataset is empty"):
        ImageFolderDataset(ds)
    (ds / "dataset.json").write_text("{oops")
    with pytest.raises(DatasetError, match="not readable JSON"):
        load_dataset_info(ds)
    (ds / "dataset.json").write_text(json.dumps({**info, "images": info["images"][:1] + [{"file": "../x.png"}], "count": 2}))
    with pytest.raises(DatasetError, match="bad image entry"):
        load_dataset_info(ds)


def test_mixed_resolution_and_wrong_requested_resolution(prepared, tmp_path):
    with pytest.raises(DatasetError, match="is a 16x16 dataset but resolution 32 was requested"):
        ImageFolderDataset(prepared, resolution=32)
    ds = copy_dataset(prepared, tmp_path / "d")
    save(painting(1, (32, 32)), ds / "00005.png")
    with pytest.raises(DatasetError, match=r"mixed resolutions: dataset.json says 16x16, found 32x32 \(e.g. 00005.png\)"):
        ImageFolderDataset(ds)


def test_missing_and_non_rgb_files(prepared, tmp_path):
    ds = copy_dataset(prepared, tmp_path / "d")
    Image.new("L", (16, 16)).save(ds / "00002.png")
    with pytest.raises(DatasetError, match="00002.png is L, expected RGB"):
        ImageFolderDataset(ds)
    (ds / "00002.png").unlink()
    with pytest.raises(DatasetError, match="00002.png is listed in dataset.json but missing"):
        ImageFolderDataset(ds)


def test_preload_decodes_everything_once_for_workers_to_share(prepared, monkeypatch):
    lazy = ImageFolderDataset(prepared, cache=False)
    ds = ImageFolderDataset(prepared)
    assert ds.preload(threads=2) and ds.preloaded
    assert all(torch.equal(ds.uint8(i), lazy.uint8(i)) for i in range(len(ds)))
    expected = torch.stack([lazy[i] for i in range(len(lazy))])
    monkeypatch.setattr(Image, "open", lambda *a, **k: pytest.fail("a preloaded dataset decoded a file"))
    batches = list(torch.utils.data.DataLoader(ds, batch_size=8, num_workers=2))
    assert torch.equal(torch.cat(batches), expected)


def test_preload_that_does_not_fit_turns_caching_off(prepared, monkeypatch, caplog):
    import psutil

    ds = ImageFolderDataset(prepared)
    free = type("Free", (), {"available": ds.decoded_bytes()})()  # less than twice what it needs
    monkeypatch.setattr(psutil, "virtual_memory", lambda: free)
    assert not ds.preload() and not ds.preloaded and not ds.cache
    assert "does not fit" in caplog.text
    ds.uint8(0)
    assert ds._cached[0] is None  # decoded on every use, not cached per worker
