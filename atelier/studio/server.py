"""Starting the studio: ``atelier studio`` options, the safe defaults, and the Gradio server.

Security defaults: the server binds 127.0.0.1; another interface (``--host 0.0.0.0``) or a
public Gradio share link (``--share``) only when asked, each with a warning in the log. The
browser may read files only under the run, dataset and export folders (Gradio's
``allowed_paths``; everything else, the working directory included, is refused), uploads are
capped in bytes by Gradio and in pixels by atelier's safe decoder, and no file's code ever runs:
the generator comes from safetensors + JSON (:func:`gan.export.load_generator`), an NVIDIA
``.pkl`` through gan.nvidia's allow-list reader, weights through ``eval.weights``.
"""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from typing import Optional, Sequence

from atelier.common.command import CommandParser, fail, prog_name, setup_logging
from atelier.common.dataset_format import load_dataset_info
from atelier.common.errors import ExitCode, one_line

log = logging.getLogger("atelier.studio")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
MAX_UPLOAD = "20mb"  # per uploaded file; the pixel cap is atelier.studio.refine.UPLOAD_MAX_PIXELS
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def build_parser() -> CommandParser:
    """The ``atelier studio`` command line."""
    parser = CommandParser(
        prog=prog_name("studio"),
        description="Open a local web app to paint with a trained generator, check each painting's originality "
        "against the real works, refine it with style transfer, and curate a gallery.",
    )
    parser.add_argument(
        "--checkpoint",
        required=True,
        metavar="RUN_OR_EXPORT_OR_PKL",
        help="a run dir, checkpoint dir, generator.safetensors export, or an NVIDIA StyleGAN2(-ADA) .pkl "
        "(read by gan.nvidia's reader, which never runs anything from the file)",
    )
    parser.add_argument(
        "--dataset", type=Path, metavar="DIR", help="the prepared training dataset: originality checks and style sources need it"
    )
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="port to serve on (0 = any free port)")
    parser.add_argument(
        "--host", default=DEFAULT_HOST, help="interface to bind; anything but 127.0.0.1 exposes the studio to your network (warned)"
    )
    parser.add_argument("--share", action="store_true", help="also open a public gradio.live link (warned; off by default)")
    parser.add_argument("--export-dir", type=Path, metavar="DIR", help="where galleries and latent walks go (default <run>/studio/exports)")
    parser.add_argument(
        "--weights-dir",
        type=Path,
        metavar="DIR",
        help="folder with LPIPS/Inception/VGG19 weight files (as eval and refine); otherwise the torch hub cache",
    )
    parser.add_argument("--vgg-weights", type=Path, metavar="PATH", help="an explicit VGG19 state dict file for the refiner")
    parser.add_argument(
        "--fast-refiner",
        type=Path,
        metavar="PATH",
        help="a trained transfer network (atelier refine-train) to offer beside the Gatys refiner "
        "(default: the run's transfer_net.safetensors when present)",
    )
    parser.add_argument("--device", default="auto", help="auto (GPU when present), cpu, cuda, cuda:1, ...")
    parser.add_argument("--no-inception", action="store_true", help="judge originality by LPIPS only (faster start)")
    parser.add_argument("--no-warm-up", action="store_true", help="load the judge and VGG19 on first use instead of at start")
    parser.add_argument("--verbose", action="store_true", help="debug logging")
    return parser


def check_port(host: str, port: int) -> None:
    """Refuse a port that is out of range or already taken, before any model is loaded."""
    if not 0 <= port <= 65535:
        raise ValueError(f"--port must be between 0 and 65535, got {port}")
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # As the server will: a port in TIME_WAIT from a studio just closed is free, a listening one is not.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise ValueError(f"cannot serve on {host}:{port} ({exc.strerror or exc}); choose another --port") from exc


def free_port(host: str = DEFAULT_HOST) -> int:
    """A port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def exposure_warnings(host: str, share: bool) -> list[str]:
    """What to warn about before serving on ``host`` (and a share link)."""
    warnings = []
    if host not in LOCAL_HOSTS:
        warnings.append(
            f"serving on {host}: anyone who can reach this machine can use the studio and read the "
            "run, dataset and export folders (there is no login)"
        )
    if share:
        warnings.append("--share: a public gradio.live link will let anyone on the internet use this studio")
    return warnings


def launch(studio, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, share: bool = False, block: bool = True):
    """Serve the studio; returns (Gradio Blocks, local URL). ``block=False`` returns at once (tests)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from atelier.studio.app import CSS, build_app

    for warning in exposure_warnings(host, share):
        log.warning("%s", warning)
    demo = build_app(studio)
    demo.queue(default_concurrency_limit=2)
    allowed = studio.allowed_paths()
    _, url, _ = demo.launch(
        server_name=host,
        server_port=port or free_port(host),
        share=share,
        prevent_thread_lock=True,
        allowed_paths=allowed,
        blocked_paths=[str(Path.home() / ".ssh")],
        max_file_size=MAX_UPLOAD,
        show_error=True,
        quiet=True,
        css=CSS,
        footer_links=[],
        inbrowser=False,
    )
    log.info("studio on %s (browser may read: %s)", url, ", ".join(allowed))
    if block:
        try:
            demo.block_thread()
        finally:
            demo.close()
    return demo, url


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``atelier studio``: load the model once, then serve the page until Ctrl-C."""
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from atelier.studio.engine import Studio, StudioOptions
    from gan.export import GeneratorLoadError

    try:
        check_port(args.host, args.port)
        if args.dataset is not None:
            load_dataset_info(args.dataset)  # the dataset contract's checks, before any model loads
        studio = Studio(
            StudioOptions(
                checkpoint=args.checkpoint,
                dataset=args.dataset,
                export_dir=args.export_dir,
                weights_dir=args.weights_dir,
                vgg_weights=args.vgg_weights,
                device=args.device,
                inception=not args.no_inception,
                fast_refiner=args.fast_refiner,
            )
        )
    except (GeneratorLoadError, ValueError, OSError, RuntimeError) as exc:
        return fail("studio", one_line(exc, None))
    log.info("%s", studio.describe())
    if not args.no_warm_up:
        studio.warm_up()
    try:
        launch(studio, args.host, args.port, args.share, block=True)
    except KeyboardInterrupt:
        return int(ExitCode.INTERRUPTED)
    except OSError as exc:
        return fail("studio", f"cannot start the server: {one_line(exc, None)}", ExitCode.IO)
    return int(ExitCode.OK)
