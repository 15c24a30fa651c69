"""Read a prepared dataset (``dataset.json`` + square RGB PNGs) as training tensors in [-1, 1].

The directory is what ``python -m scraping.prepare`` writes. Everything is checked up front,
cheaply (PNG headers only), so a wrong path or a hand-edited dataset fails at start-up with a
one-line :class:`DatasetError` instead of mid-training.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from atelier.common.dataset_format import DATASET_FORMAT, INFO_NAME, DatasetError, load_dataset_info  # noqa: F401 (re-exported for readers of gan.dataset)

log = logging.getLogger(__name__)


class ImageFolderDataset(Dataset):
    """A prepared dataset as float32 CHW tensors in [-1, 1].

    ``xflip`` mirrors an item horizontally with probability 1/2, decided by (seed, epoch, index),
    so a run is reproducible. The training loop reads it through :class:`gan.minibatches.EpochItems`,
    which passes each item's epoch along with its index (so fresh flips per epoch also work in
    persistent DataLoader workers); :meth:`set_epoch` is the plain-Dataset way for other users.
    With ``cache`` the decoded uint8 images are kept in memory (per process) after first use;
    :meth:`preload` decodes them all at once into one tensor that DataLoader workers share.
    """

    def __init__(self, path: str | Path, resolution: int | None = None, xflip: bool = False, seed: int = 0, cache: bool = True) -> None:
        self.root = Path(path)
        self.info = load_dataset_info(self.root)
        self.resolution: int = self.info["resolution"]
        if resolution is not None and resolution != self.resolution:
            raise DatasetError(
                f"{self.root} is a {self.resolution}x{self.resolution} dataset but resolution {resolution} was requested "
                f"(prepare one with --resolution {resolution})"
            )
        self.files = [self.root / row["file"] for row in self.info["images"]]
        self._check_files()
        self.xflip = xflip
        self.seed = seed
        self.epoch = 0
        self.cache = cache
        self._cached: list[torch.Tensor | None] = [None] * len(self.files)
        self._images: torch.Tensor | None = None  # every image, decoded by preload()
        self.mapped_file: Path | None = None  # the decode_to_file file _images maps, if any

    @property
    def content_sha256(self) -> str | None:
        """Identity of the dataset's pixels (eval caches reference statistics under it)."""
        return self.info.get("content_sha256")

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (3, self.resolution, self.resolution)

    def set_epoch(self, epoch: int) -> None:
        """Select the flips for ``epoch`` (deterministic per seed, epoch and index)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> torch.Tensor:
        img = self.uint8(index).to(torch.float32) / 127.5 - 1.0
        if self.xflip and self.is_flipped(index):
            img = img.flip(-1)
        return img

    def is_flipped(self, index: int) -> bool:
        """Whether item ``index`` is mirrored in the current epoch (always False without xflip)."""
        if not self.xflip:
            return False
        # A SeedSequence mixes the three integers well; neighbouring indices get independent coins.
        entropy = np.random.SeedSequence([self.seed & 0xFFFFFFFF, self.epoch, index]).generate_state(1)[0]
        return bool(entropy & 1)

    def uint8(self, index: int) -> torch.Tensor:
        """Item ``index`` as stored: uint8 CHW, never flipped (e.g. for metric reference sets)."""
        if not 0 <= index < len(self.files):
            raise IndexError(f"index {index} out of range for a dataset of {len(self.files)}")
        if self._images is not None:
            return self._images[index]
        cached = self._cached[index]
        if cached is not None:
            return cached
        return self._decode(index, keep=self.cache)

    def decoded_bytes(self) -> int:
        """Memory the whole dataset takes decoded (uint8 CHW)."""
        return len(self.files) * 3 * self.resolution * self.resolution

    @property
    def preloaded(self) -> bool:
        return self._images is not None

    def memory_shortfall(self, memory_fraction: float = 0.5) -> str | None:
        """None if the decoded dataset fits in ``memory_fraction`` of the free memory; else why not."""
        import psutil

        need, available = self.decoded_bytes(), psutil.virtual_memory().available
        if need <= memory_fraction * available:
            return None
        return (
            f"the decoded dataset ({need / 2**30:.1f} GB) does not fit in {memory_fraction:.0%} "
            f"of the free memory ({available / 2**30:.1f} GB)"
        )

    def preload(self, threads: int | None = None, memory_fraction: float = 0.5) -> bool:
        """Decode every image into one uint8 tensor, unless it would take more than
        ``memory_fraction`` of the memory available now; returns whether it did.

        Call it before DataLoader workers start: forked workers then share the one copy
        (pages are only read), where a lazy per-worker cache would hold one copy per worker.
        If it does not fit, the lazy cache is switched off too (it would fill the same memory
        once per worker) and images are decoded on every use.
        """
        too_big = self.memory_shortfall(memory_fraction)
        if too_big:
            log.warning("%s: %s; decoding images on every use instead of caching them", self.root, too_big)
            self.cache = False
            return False
        images = torch.empty(len(self.files), 3, self.resolution, self.resolution, dtype=torch.uint8)
        self._decode_all_into(images, threads)
        self._images, self._cached = images, [None] * len(self.files)
        log.info("%s: %d images decoded into memory (%.1f GB)", self.root, len(self.files), self.decoded_bytes() / 2**30)
        return True

    def decode_to_file(self, path: str | Path, threads: int | None = None) -> Path:
        """Decode every image into a raw uint8 file (N x 3 x R x R) for :meth:`map_file`.

        Written under a temp name, then renamed: a reader never sees a half-written file.
        """
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        shape = (len(self.files), 3, self.resolution, self.resolution)
        try:
            array = np.memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)  # raw bytes, no header
            self._decode_all_into(torch.from_numpy(array), threads)
            array.flush()
            del array
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return path

    def map_file(self, path: str | Path) -> None:
        """Use a :meth:`decode_to_file` file as the decoded dataset, mapped read-only (no copy)."""
        count = len(self.files) * 3 * self.resolution * self.resolution
        if Path(path).stat().st_size != count:
            raise DatasetError(f"{path} holds {Path(path).stat().st_size} bytes, the decoded dataset is {count}")
        # shared=False maps the file copy-on-write: reads share the page cache, nothing writes back.
        flat = torch.from_file(str(path), shared=False, size=count, dtype=torch.uint8)
        self._images = flat.view(len(self.files), 3, self.resolution, self.resolution)
        self._cached = [None] * len(self.files)
        self.mapped_file = Path(path)

    def _decode_all_into(self, images: torch.Tensor, threads: int | None) -> None:
        def fill(index: int) -> None:  # PNG decoding releases the GIL, so threads run in parallel
            images[index] = self._decode(index, keep=False)

        with ThreadPoolExecutor(max_workers=threads or min(8, os.cpu_count() or 1)) as pool:
            list(pool.map(fill, range(len(self.files))))

    def _decode(self, index: int, keep: bool) -> torch.Tensor:
        with Image.open(self.files[index], formats=("PNG",)) as img:
            if img.size != (self.resolution, self.resolution):  # replaced since the start-up check
                raise DatasetError(f"{self.files[index]} is {img.width}x{img.height}, expected {self.resolution}x{self.resolution}")
            array = np.asarray(img.convert("RGB"), dtype=np.uint8)
        tensor = torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()
        if keep:
            self._cached[index] = tensor
        return tensor

    def _check_files(self) -> None:
        """Every listed PNG exists, is RGB and has the dataset's size (headers only, no decoding)."""
        sizes: dict[tuple[int, int], str] = {}
        for path in self.files:
            if not path.is_file():
                raise DatasetError(f"{path} is listed in {INFO_NAME} but missing")
            try:
                with Image.open(path, formats=("PNG",)) as img:
                    size, mode = img.size, img.mode
            except (OSError, ValueError) as exc:
                raise DatasetError(f"{path} is not a readable PNG: {exc}") from None
            if mode != "RGB":
                raise DatasetError(f"{path} is {mode}, expected RGB")
            sizes.setdefault(size, path.name)
        expected = (self.resolution, self.resolution)
        odd = {size: name for size, name in sizes.items() if size != expected}
        if odd:
            found = ", ".join(f"{w}x{h} (e.g. {name})" for (w, h), name in sorted(odd.items()))
            raise DatasetError(f"{self.root} has mixed resolutions: {INFO_NAME} says {self.resolution}x{self.resolution}, found {found}")
        unlisted = {p.name for p in self.root.glob("*.png")} - {p.name for p in self.files}
        if unlisted:
            log.warning("%s: %d PNG files not listed in %s are ignored", self.root, len(unlisted), INFO_NAME)
