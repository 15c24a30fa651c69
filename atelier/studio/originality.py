"""Originality beside every painting: its nearest real works and eval's memorisation verdict.

The verdict is :mod:`eval.memorisation`'s: the training set's leave-one-out nearest-neighbour
distances (mirror images included) calibrate a threshold, ``factor`` x the ``percentile``-th
percentile (half the 5th by default), and a painting closer than that to some real work, by
LPIPS or by Inception features, is a near-copy. The training set is embedded once, when the
first painting is judged; each painting then costs one embedding and a matrix product.

When the LPIPS backbone weights cannot be found (offline, nothing in ``--weights-dir``), the
studio says so and falls back to a weight-free measure, the RMS pixel distance at 32 px,
calibrated the same way and labelled as such everywhere it is shown.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from eval.features import squared_distances
from eval.memorisation import DEFAULT_FACTOR, DEFAULT_PERCENTILE, Measure, calibrate, leave_one_out_nearest

log = logging.getLogger(__name__)

PIXEL_SIZE = 32  # the weight-free fallback compares images at this size
LPIPS_RESOLUTION = 128  # eval's default (EvalOptions.lpips_resolution)
MAX_REFERENCE_SIZE = 256  # real works are held in memory at most this large (eval's MAX_IMAGE_SIZE_NN)


def pixel_measure(size: int = PIXEL_SIZE) -> Measure:
    """Weight-free measure: RMS distance of [0, 1] pixels after an area resize to ``size`` px."""

    def embed(images: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(images.float() / 255.0, size=(size, size), mode="area")
        return x.flatten(1) / np.sqrt(x[0].numel())  # Euclidean distance of these = RMS pixel distance

    return Measure(f"pixel RMS at {size} px", embed, squared=False)


@dataclass
class Neighbour:
    """One real work near a painting."""

    name: str
    index: int
    distance: float
    flipped: bool  # its mirror image was the closer one


@dataclass
class Verdict:
    """What the studio shows beside a painting."""

    near_copy: bool
    measure: str  # "LPIPS (alex)" or the fallback's label
    threshold: float
    neighbours: list[Neighbour]
    weight_free: bool  # True when LPIPS weights were missing and the pixel fallback judged
    note: str = ""  # e.g. why LPIPS is not used
    inception_distance: Optional[float] = None
    inception_threshold: Optional[float] = None

    @property
    def distance(self) -> float:
        return self.neighbours[0].distance

    def summary(self) -> str:
        """One line: ``near-copy of 00012.png (LPIPS 0.004 < 0.011)`` or ``original: nearest ...``."""
        nearest = self.neighbours[0]
        where = nearest.name + (" (mirrored)" if nearest.flipped else "")
        relation = "<" if nearest.distance < self.threshold else ">="
        head = "NEAR-COPY of" if self.near_copy else "original: nearest work"
        text = f"{head} {where} ({self.measure} {nearest.distance:.4f} {relation} threshold {self.threshold:.4f})"
        if self.inception_distance is not None and self.inception_threshold is not None:
            text += f"; Inception {self.inception_distance:.3f} (threshold {self.inception_threshold:.3f})"
        return text

    def record(self) -> dict:
        """JSON-able form for the gallery export and feedback."""
        return {
            "near_copy": self.near_copy,
            "measure": self.measure,
            "weight_free": self.weight_free,
            "threshold": self.threshold,
            "nearest": [vars(n) for n in self.neighbours],
            "inception_distance": self.inception_distance,
            "inception_threshold": self.inception_threshold,
            "note": self.note,
            "rule": f"near-copy when closer than {DEFAULT_FACTOR} x the {DEFAULT_PERCENTILE:g}th percentile of the "
            "training set's leave-one-out nearest-neighbour distances (eval's memorisation check)",
        }


@dataclass
class _Calibrated:
    measure: Measure
    train: torch.Tensor
    mirrored: torch.Tensor
    threshold: float


@dataclass
class OriginalityJudge:
    """Embeds the training set once per measure and judges paintings against it.

    ``images``: the real works as uint8 [N, 3, H, W]; ``names``: their file names.
    ``measures``: the primary measure first (LPIPS, or the pixel fallback), optionally Inception.
    """

    images: torch.Tensor
    names: Sequence[str]
    measures: list[Measure]
    weight_free: bool = False
    note: str = ""
    percentile: float = DEFAULT_PERCENTILE
    factor: float = DEFAULT_FACTOR
    _calibrated: list[_Calibrated] = field(default_factory=list, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def ready(self) -> bool:
        """True once the real works are embedded and the thresholds calibrated."""
        return bool(self._calibrated)

    def _ensure(self) -> list[_Calibrated]:
        with self._lock:  # two paintings judged at once must not embed the dataset twice
            if not self._calibrated:
                for measure in self.measures:
                    train = measure.embed(self.images)
                    mirrored = measure.embed(self.images.flip(-1))
                    loo = leave_one_out_nearest(train, mirrored)
                    loo = loo if measure.squared else loo.sqrt()
                    self._calibrated.append(_Calibrated(measure, train, mirrored, calibrate(loo, self.percentile, self.factor)))
            return self._calibrated

    def judge(self, image: np.ndarray, k: int = 3) -> Verdict:
        """The verdict on one uint8 HWC painting, with its ``k`` nearest real works (mirrors included)."""
        sample = _to_reference_size(torch.from_numpy(np.ascontiguousarray(image[..., :3])).permute(2, 0, 1)[None], self.images.shape[-1])
        results = []
        for cal in self._ensure():
            embedded = cal.measure.embed(sample)
            plain = squared_distances(embedded, cal.train)[0]
            mirror = squared_distances(embedded, cal.mirrored)[0]
            flipped = mirror < plain
            best = torch.minimum(plain, mirror)
            best = best if cal.measure.squared else best.sqrt()
            results.append((cal, best.float(), flipped))
        primary, distances, flipped = results[0]
        order = torch.argsort(distances)[: max(1, min(k, len(distances)))].tolist()
        neighbours = [Neighbour(str(self.names[i]), i, float(distances[i]), bool(flipped[i])) for i in order]
        near_copy = neighbours[0].distance < primary.threshold
        inception_distance = inception_threshold = None
        if len(results) > 1:
            cal, dist, _ = results[1]
            inception_distance, inception_threshold = float(dist.min()), cal.threshold
            near_copy = near_copy or inception_distance < inception_threshold
        return Verdict(
            near_copy,
            primary.measure.name,
            primary.threshold,
            neighbours,
            self.weight_free,
            self.note,
            inception_distance,
            inception_threshold,
        )

    def real_image(self, index: int, flipped: bool = False) -> np.ndarray:
        """A real work as uint8 HWC (mirrored when it matched as a mirror image)."""
        image = self.images[index]
        image = image.flip(-1) if flipped else image
        return image.permute(1, 2, 0).numpy()


def _to_reference_size(images: torch.Tensor, size: int) -> torch.Tensor:
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    resized = F.interpolate(images.float(), size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return resized.round().clamp(0, 255).to(torch.uint8)


def build_judge(
    dataset: str | Path, weights_dir: str | Path | None = None, device: str | torch.device = "cpu", use_inception: bool = True
) -> OriginalityJudge:
    """Open a prepared dataset and choose the measures eval uses, falling back to pixels without LPIPS weights.

    Raises the dataset's own one-line errors (DatasetError / EvalInputError) for an unusable dataset.
    """
    from eval import weights as W
    from eval.features import LpipsEmbedder, inception_extractor, inception_features, lpips_model
    from eval.samples import load_reference, stack_images

    reference = load_reference(dataset)
    images = stack_images(reference.images, max_size=MAX_REFERENCE_SIZE)
    if len(images) < 2:
        raise ValueError(f"dataset {dataset}: the originality check needs at least 2 real works")
    try:
        model, _ = lpips_model("alex", weights_dir, device)
    except (W.MissingWeightsError, W.WeightsChecksumError, ValueError) as exc:
        note = f"LPIPS weights missing ({exc}); judging by the weight-free pixel distance instead"
        log.warning("%s", note)
        return OriginalityJudge(images, reference.names, [pixel_measure()], weight_free=True, note=note)
    embedder = LpipsEmbedder(model, resolution=LPIPS_RESOLUTION)
    measures = [Measure("LPIPS (alex)", embedder.embed, squared=True)]
    note = ""
    if use_inception:
        try:
            path = W.resolve_weights(W.INCEPTION_V3, weights_dir)
            extractor = inception_extractor(path, device)
            measures.append(Measure("inception", lambda x: inception_features(extractor, x), squared=False))
        except (W.MissingWeightsError, W.WeightsChecksumError, ValueError) as exc:
            note = f"Inception weights missing ({exc}); judging by LPIPS alone"
            log.warning("%s", note)
    return OriginalityJudge(images, reference.names, measures, note=note)
