"""The studio's state behind the web page: models loaded once, the session's paintings, the folders.

:class:`Studio` holds the generator (loaded once, on the GPU when there is one), the
originality judge and the refiner's VGG19 (both loaded on first use, or warmed up in the
background at start), the :class:`~atelier.studio.curate.Collection` of paintings and the
folders the browser may read. Every method is a plain function of its arguments, so the
unit tests call them without a browser; :mod:`atelier.studio.app` only wires them to widgets.
"""

from __future__ import annotations

import atexit
import hashlib
import io
import logging
import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from atelier.common.disclosure import build_xmp, disclosure_text, unknown_provenance, video_metadata
from atelier.common.fileio import atomic_write_bytes
from atelier.common.hashing import weights_sha256
from atelier.studio import paint as P
from atelier.studio.curate import Collection, Item, export_gallery
from atelier.studio.originality import OriginalityJudge, Verdict, build_judge
from atelier.studio.overview import RunOverview, load_overview, run_dir_of
from atelier.studio.refine import RefineRequest, RefineState, load_refiner_vgg, load_upload, run_refine

log = logging.getLogger(__name__)

FAST_REFINER_NAME = "transfer_net.safetensors"
WARMING = "the originality check is still embedding the real works; select the painting again in a moment"


@dataclass
class StudioOptions:
    """What ``atelier studio`` was started with."""

    checkpoint: Path | str  # a path, or an https URL of an NVIDIA .pkl (gan.export downloads it)
    dataset: Optional[Path] = None
    export_dir: Optional[Path] = None  # default: <run>/studio/exports, or beside a bare export
    weights_dir: Optional[Path] = None  # LPIPS / Inception / VGG19 files (eval's --weights-dir)
    vgg_weights: Optional[Path] = None  # an explicit VGG19 file for the refiner
    device: str = "auto"
    inception: bool = True  # also judge originality by Inception features, as eval does
    fast_refiner: Optional[Path] = None  # a trained transfer net (eval.fast_refiner); default <run>/transfer_net.safetensors


def pick_device(name: str) -> torch.device:
    """``auto``: the GPU when present, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@dataclass
class Studio:
    """Models, paintings and folders of one studio server."""

    options: StudioOptions
    G: torch.nn.Module = field(init=False)
    info: dict = field(init=False)
    device: torch.device = field(init=False)
    run_dir: Optional[Path] = field(init=False)
    export_root: Path = field(init=False)
    collection: Collection = field(init=False)
    _judge: Optional[OriginalityJudge] = field(default=None, init=False)
    _judge_error: str = field(default="", init=False)
    _vgg: object = field(default=None, init=False)
    _vgg_error: str = field(default="", init=False)
    _fast: object = field(default=None, init=False)
    _fast_error: str = field(default="", init=False)
    _gpu: threading.Lock = field(default_factory=threading.Lock, init=False)  # one generator call at a time
    _loading: threading.Lock = field(default_factory=threading.Lock, init=False)
    _flags: threading.Lock = field(default_factory=threading.Lock, init=False)
    _warming: threading.Event = field(default_factory=threading.Event, init=False)  # set while warm_up embeds the dataset
    refines: dict[str, RefineState] = field(default_factory=dict, init=False)  # by browser session
    paint_stops: dict[str, threading.Event] = field(default_factory=dict, init=False)  # by browser session

    def __post_init__(self) -> None:
        from gan.export import describe_generator, load_generator

        opts = self.options
        self.device = pick_device(opts.device)
        self.info = describe_generator(opts.checkpoint)
        self.G = load_generator(opts.checkpoint, device=self.device)
        self.run_dir = run_dir_of(opts.checkpoint)
        base = self.run_dir if self.run_dir is not None else home_of(opts.checkpoint)
        self.export_root = Path(opts.export_dir) if opts.export_dir else base / "studio" / "exports"
        self.export_root.mkdir(parents=True, exist_ok=True)
        self.collection = Collection(base / "studio" / "feedback.jsonl", self._provenance())
        # What the page shows is written here once per distinct image (named by content), so Gradio
        # copies complete files into its cache instead of re-encoding arrays over files a browser
        # may be reading (it rewrites same-content files in place).
        self.view_dir = Path(tempfile.mkdtemp(prefix="atelier-studio-view-"))
        atexit.register(shutil.rmtree, self.view_dir, True)

    # ------------------------------------------------------------------ facts

    def _provenance(self) -> dict:
        """The facts every record carries: the model's identity, what it learnt from, the disclosure sentence,
        and the dataset the originality check compares against (which need not be the training set)."""
        training = model_provenance(self.options.checkpoint)
        facts = {
            "weights_sha256": weights_sha256(self.G),
            "generator": {k: self.info.get(k) for k in ("kind", "weights", "resolution", "kimg")},
            "run": str(self.run_dir) if self.run_dir else None,
            "training": training,
            "disclosure": disclosure_text(training),
        }
        if self.options.dataset is not None:
            facts["originality_dataset"] = dataset_facts(Path(self.options.dataset))
        return facts

    def disclosure(self) -> dict:
        """Facts for each exported image's disclosure packet (atelier.common.disclosure.packet_from_facts)."""
        prov = self.collection.provenance
        return {"provenance": prov["training"], "model_weights_sha256": prov["weights_sha256"]}

    def describe(self) -> str:
        """One line about the model for the page header."""
        kimg = self.info.get("kimg")
        return (
            f"{self.info['resolution']} px generator ({self.info['kind']} {Path(self.info['weights']).name}"
            f"{f', kimg {kimg:g}' if isinstance(kimg, (int, float)) else ''}), weights sha256 "
            f"{self.collection.provenance['weights_sha256'][:12]}, on {self.device.type}"
        )

    def view(self, image: np.ndarray) -> str:
        """A PNG of ``image`` in the view folder (written once per distinct content); its path for the page."""
        data = encode_png(image)
        path = self.view_dir / f"{hashlib.sha256(data).hexdigest()[:32]}.png"
        if not path.exists():
            atomic_write_bytes(path, data, fsync=False)
        return str(path)

    def allowed_paths(self) -> list[str]:
        """The only folders the browser may read files from: the run, the dataset, the exports (and the
        studio's own renders)."""
        paths = [self.run_dir or home_of(self.options.checkpoint), self.export_root, self.view_dir]
        if self.options.dataset is not None:
            paths.append(Path(self.options.dataset))
        return [str(Path(p).resolve()) for p in paths]

    # ------------------------------------------------------------------ lazy models

    def judge(self) -> Optional[OriginalityJudge]:
        """The originality judge (built on first use); None with :attr:`judge_error` set when unavailable."""
        with self._loading:
            if self._judge is None and not self._judge_error:
                if self.options.dataset is None:
                    self._judge_error = "no --dataset given: originality cannot be checked"
                else:
                    try:
                        self._judge = build_judge(self.options.dataset, self.options.weights_dir, self.device, self.options.inception)
                    except Exception as exc:  # a broken dataset must not take the studio down
                        self._judge_error = f"originality check unavailable: {' '.join(str(exc).split())}"
                        log.warning("%s", self._judge_error)
            return self._judge

    @property
    def judge_error(self) -> str:
        return WARMING if self._warming.is_set() and not self._judge_error else self._judge_error

    def vgg(self):
        """The refiner's VGG19 (loaded on first use); raises RuntimeError with the one-line reason when unavailable."""
        with self._loading:
            if self._vgg is None and not self._vgg_error:
                try:
                    self._vgg = load_refiner_vgg(self.options.vgg_weights, self.options.weights_dir, self.device)
                except Exception as exc:
                    self._vgg_error = f"refiner unavailable: {' '.join(str(exc).split())}"
                    log.warning("%s", self._vgg_error)
        if self._vgg is None:
            raise RuntimeError(self._vgg_error)
        return self._vgg

    def fast_refiner_path(self) -> Optional[Path]:
        """The trained fast refiner to offer: ``--fast-refiner``, else the run's ``transfer_net.safetensors``."""
        if self.options.fast_refiner is not None:
            return Path(self.options.fast_refiner)
        if self.run_dir is not None and (self.run_dir / FAST_REFINER_NAME).is_file():
            return self.run_dir / FAST_REFINER_NAME
        return None

    def fast_refiner(self):
        """The loaded fast refiner, or None (with :attr:`fast_error`) when there is none or it cannot load."""
        with self._loading:
            if self._fast is None and not self._fast_error:
                path = self.fast_refiner_path()
                if path is None:
                    self._fast_error = "no trained fast refiner for this run (train one with `atelier refine-train`)"
                else:
                    try:
                        from eval.fast_refiner import load_fast_refiner

                        self._fast = load_fast_refiner(path, self.device)
                    except Exception as exc:  # ImportError too: the fast refiner is optional
                        self._fast_error = f"fast refiner unavailable: {' '.join(str(exc).split())}"
                        log.warning("%s", self._fast_error)
            return self._fast

    @property
    def fast_error(self) -> str:
        return self._fast_error

    def fast_refine(self, item_id: str, strength: float, size: int) -> Item:
        """Stylise a painting with the trained transfer network in one forward pass; a new painting."""
        from atelier.studio.refine import to_tensor, to_uint8
        from eval.fast_refiner import apply

        refiner = self.fast_refiner()
        if refiner is None:
            raise RuntimeError(self.fast_error)
        base = self.collection.get(item_id)
        with self._gpu:
            out = apply(refiner, to_tensor(base.painting.image, int(size)).to(self.device), float(strength))
        painting = P.Painting(
            to_uint8(out),
            "refined",
            seed=base.painting.seed,
            psi=base.painting.psi,
            noise_mode=base.painting.noise_mode,
            recipe={"base": base.painting.label, "base_id": base.id},
        )
        record = {
            "method": "fast",
            "model": str(refiner.path),
            "model_sha256": refiner.sha256,
            "training": refiner.training,
            "settings": {"strength": float(strength), "size": int(size)},
        }
        return self.register([painting], refine=record)[0]

    def warm_up(self) -> threading.Thread:
        """Load the judge (and embed the dataset) and VGG19 in the background, so first clicks are quick."""

        def work() -> None:
            try:
                judge = self.judge()
                if judge is not None:
                    judge.judge(np.zeros((self.G.resolution, self.G.resolution, 3), np.uint8))
            finally:
                self._warming.clear()
            try:
                self.vgg()
            except RuntimeError:
                pass
            self.fast_refiner()

        self._warming.set()
        thread = threading.Thread(target=work, name="studio-warm-up", daemon=True)
        thread.start()
        return thread

    # ------------------------------------------------------------------ painting

    def judge_painting(self, image: np.ndarray) -> tuple[Optional[Verdict], str]:
        """(verdict, '') or (None, why there is none).

        While the warm-up is still embedding the real works, painting does not wait for it: the
        verdict is left out and filled in when the painting is shown again (:meth:`ensure_verdict`).
        """
        if self._warming.is_set() and (self._judge is None or not self._judge.ready):
            return None, WARMING
        judge = self.judge()
        if judge is None:
            return None, self.judge_error
        return judge.judge(image), ""

    def ensure_verdict(self, item: Item) -> Item:
        """Judge a painting registered while the judge was still warming up, once it is ready."""
        if item.verdict is None and not self._warming.is_set():
            verdict, _ = self.judge_painting(item.painting.image)
            item.verdict = verdict.record() if verdict else None
        return item

    def register(self, paintings: Sequence[P.Painting], refine: Optional[dict] = None) -> list[Item]:
        """Judge each painting and add it to the collection."""
        items = []
        for painting in paintings:
            verdict, _ = self.judge_painting(painting.image)
            items.append(self.collection.add(painting, verdict.record() if verdict else None, refine))
        return items

    def paint(
        self,
        seed_text: str,
        count: int,
        psi: float,
        noise_mode: str,
        progress: Optional[Callable[[float, str], None]] = None,
        cancelled: Optional[Callable[[], bool]] = None,
    ) -> list[Item]:
        """Paint seeds (or ``count`` random ones) and register them."""
        seeds = P.parse_seed_text(seed_text, int(count))
        with self._gpu:
            paintings = P.paint_seeds(self.G, seeds, float(psi), noise_mode, progress=progress, cancelled=cancelled)
        return self.register(paintings)

    def paint_stop_flag(self, session: str, fresh: bool = True) -> threading.Event:
        """The session's stop flag for painting: a new, clear one for a new request (``fresh``), else the current one."""
        with self._flags:
            if fresh or session not in self.paint_stops:
                self.paint_stops[session] = threading.Event()
            return self.paint_stops[session]

    def variations(self, item_id: str, count: int, step: float, seed: int = 0) -> list[Item]:
        """Variations around a painting's w."""
        base = self.collection.get(item_id).painting
        with self._gpu:
            paintings = P.variations(self.G, base, int(count), float(step), int(seed))
        return self.register(paintings)

    def style_mix(self, row_text: str, col_text: str, group: str, psi: float, noise_mode: str) -> tuple[list[Item], int]:
        """A style-mixing grid, row-major; returns the items and the number of columns."""
        rows = P.parse_seed_text(row_text, 1)
        cols = P.parse_seed_text(col_text, 1)
        if len(rows) * len(cols) > P.MAX_GRID:
            raise ValueError(f"{len(rows)} x {len(cols)} mixes asked for; at most {P.MAX_GRID}")
        with self._gpu:
            grid = P.style_mix(self.G, rows, cols, group, float(psi), noise_mode)
        return self.register([p for row in grid for p in row]), len(cols)

    def latent_walk(self, seed_a: int, seed_b: int, frames: int, psi: float, noise_mode: str, fps: int = 24) -> tuple[Path, Path]:
        """The walk written as GIF and MP4 under the export folder (which the browser may read)."""
        with self._gpu:
            images = P.latent_walk(self.G, int(seed_a), int(seed_b), int(frames), float(psi), noise_mode)
        stem = f"walk-seed{int(seed_a)}-seed{int(seed_b)}-psi{float(psi):.2f}-{int(frames)}f"
        folder = self.export_root / "walks"
        prov = self.collection.provenance
        settings = {"walk": f"seed {int(seed_a)} to seed {int(seed_b)}", "frames": int(frames), "psi": float(psi), "noise_mode": noise_mode}
        xmp = build_xmp(prov["training"], prov["weights_sha256"], settings)
        gif = P.write_gif(images, folder / f"{stem}.gif", fps=fps, xmp=xmp, comment=prov["disclosure"])
        mp4 = P.write_mp4(images, folder / f"{stem}.mp4", fps=fps, metadata=video_metadata(prov["training"], prov["weights_sha256"]))
        return gif, mp4

    # ------------------------------------------------------------------ refining

    def style_sources(
        self, item_id: str, mode: str, picked: Sequence[str] = (), uploads: Sequence[str] = (), k: int = 3
    ) -> tuple[list[np.ndarray], list[str]]:
        """The style images for a refine: the painting's nearest works, picked dataset works, or uploads."""
        if mode == "nearest":
            item = self.collection.get(item_id)
            judge = self.judge()
            if judge is None:
                raise ValueError(f"no nearest works: {self.judge_error}")
            verdict = judge.judge(item.painting.image, k=k)
            return [judge.real_image(n.index) for n in verdict.neighbours], [n.name for n in verdict.neighbours]
        if mode == "picked":
            judge = self.judge()
            if judge is None:
                raise ValueError(f"no dataset works to pick from: {self.judge_error}")
            if not picked:
                raise ValueError("pick at least one work from the dataset")
            index = {name: i for i, name in enumerate(judge.names)}
            unknown = [name for name in picked if name not in index]
            if unknown:
                raise ValueError(f"{unknown[0]!r} is not a work of the dataset")
            return [judge.real_image(index[name]) for name in picked], list(picked)
        if mode == "uploads":
            if not uploads:
                raise ValueError("upload at least one style image")
            return [load_upload(path) for path in uploads], [Path(path).name for path in uploads]
        raise ValueError(f"style source must be nearest, picked or uploads, got {mode!r}")

    def start_refine(
        self, session: str, item_id: str, request: RefineRequest, styles: Sequence[np.ndarray], mask: Optional[np.ndarray] = None
    ) -> RefineState:
        """Start refining a painting in a worker thread; the UI polls the returned state."""
        previous = self.refines.get(session)
        if previous is not None and not previous.finished.is_set():
            raise ValueError("a refine is already running in this tab: stop it first")
        vgg = self.vgg()
        painting = self.collection.get(item_id).painting.image
        state = RefineState()
        self.refines[session] = state

        def work() -> None:
            # Not under the generator's lock: painting stays quick while a long refine runs.
            run_refine(vgg, painting, styles, request, state, mask=mask)

        threading.Thread(target=work, name=f"refine-{session[:8]}", daemon=True).start()
        return state

    def stop_refine(self, session: str) -> bool:
        """Ask the session's running refine to stop and keep its current image; False when none runs."""
        state = self.refines.get(session)
        if state is None or state.finished.is_set():
            return False
        state.stop.set()
        return True

    def finish_refine(self, item_id: str, state: RefineState) -> Item:
        """Register a finished refine's image as a new painting."""
        base = self.collection.get(item_id)
        painting = P.Painting(
            state.result,
            "refined",
            seed=base.painting.seed,
            psi=base.painting.psi,
            noise_mode=base.painting.noise_mode,
            recipe={"base": base.painting.label, "base_id": base.id},
        )
        return self.register([painting], refine=state.report)[0]

    # ------------------------------------------------------------------ curating and the run

    def export(self, name: Optional[str] = None) -> Path:
        """Export the starred paintings as a gallery folder."""
        return export_gallery(self.collection, self.export_root, name, self.disclosure())

    def overview(self) -> RunOverview:
        return load_overview(self.options.checkpoint)


def home_of(checkpoint: Path | str) -> Path:
    """Where a checkpoint without a run dir keeps the studio's files: beside the file, or ./studio-files for a URL."""
    if str(checkpoint).startswith(("https://", "http://")):
        return Path.cwd() / "studio-files"
    path = Path(checkpoint).resolve()
    return path.parent if path.is_file() else path


def encode_png(image: np.ndarray) -> bytes:
    """uint8 HWC -> PNG bytes."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image[..., :3])).save(buffer, format="PNG")
    return buffer.getvalue()


def model_provenance(checkpoint: Path | str) -> dict:
    """What the generator learnt from (gan.export.generator_provenance), or an honest "unknown"."""
    from gan.export import generator_provenance, resolve_source

    try:
        return generator_provenance(resolve_source(checkpoint))
    except Exception as exc:  # provenance must never stop the studio; it then says "unknown"
        return unknown_provenance(None, f"provenance not readable: {' '.join(str(exc).split())}")


def dataset_facts(dataset: Path) -> dict:
    """Provenance of the dataset originality is judged against (atelier.common.disclosure.dataset_provenance)."""
    from atelier.common.dataset_format import load_dataset_info
    from atelier.common.disclosure import dataset_provenance

    try:
        info = load_dataset_info(dataset)
    except ValueError:  # DatasetError: checked at start-up, so only a dataset changed since
        return {"dataset": str(dataset)}
    return {**dataset_provenance(info, name=dataset.name), "path": str(dataset)}
