"""The ``atelier`` command: one entry point for every stage of the pipeline.

``atelier <command> [options]``; ``atelier <command> --help`` explains each option. A command
is a stage's ``main(argv) -> int`` (see :data:`COMMANDS`), imported only when it runs, so
``atelier --help`` stays fast and a stage's heavy imports load only for that stage.
"""

from __future__ import annotations

import importlib
import sys
from typing import Sequence

from atelier.common.command import error_line
from atelier.common.errors import ExitCode

# name -> (module:function, one-line summary). Order is pipeline order, as --help shows it.
COMMANDS: dict[str, tuple[str, str]] = {
    "scrape": ("scraping.__main__:main", "download one WikiArt artist's public-domain works (resumable, polite)"),
    "prepare": ("scraping.prepare:main", "build a training dataset: square RGB PNGs + dataset.json"),
    "train": ("gan.train:main", "train StyleGAN2-ADA with accelerate (CPU, GPUs, nodes); resumable"),
    "generate": ("gan.generate:main", "paint new works from a run, checkpoint, export or NVIDIA .pkl"),
    "convert": ("gan.convert:main", "convert an NVIDIA StyleGAN2(-ADA) .pkl (file or https URL) into atelier files, safely"),
    "eval": ("eval.__main__:main", "score a generator: FID/KID, precision/recall, LPIPS, memorisation"),
    "refine": ("eval.refine:main", "refine paintings with neural style transfer toward the master's works"),
    "refine-train": ("eval.refine_train:main", "train a fast style-transfer network on the master's works (refine --fast)"),
    "studio": ("atelier.studio.server:main", "a local web app: paint, check originality, refine and curate a gallery"),
}

EPILOG = """\
exit status (every command):
  0    done
  1    unexpected error (a bug: please report it)
  2    bad input: an option, a config value or an input file (the error line names it)
  3    an outside service refused (WikiArt's quota, an unreachable host)
  4    training diverged (a non-finite loss or gradient)
  5    an output could not be written (disk full, read-only, permission denied)
  130  interrupted by Ctrl-C (training writes a checkpoint first)
  143  terminated by SIGTERM, e.g. SLURM preemption (training writes a checkpoint first)

multi-GPU / multi-node training: accelerate launch -m atelier train --config ...
(or: accelerate launch train.py --config ...)
"""


def usage() -> str:
    """The top-level help: every command with its summary, and the exit-code table."""
    width = max(len(name) for name in COMMANDS)
    lines = [
        "usage: atelier <command> [options]   (atelier <command> --help for its options)",
        "",
        "Learn one master's painting style and paint new works in it.",
        "",
        "commands:",
    ]
    lines += [f"  {name:<{width}}  {summary}" for name, (_, summary) in COMMANDS.items()]
    return "\n".join(lines) + "\n\n" + EPILOG


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch ``atelier <command> ...`` to the stage's ``main``; returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage(), end="")
        return int(ExitCode.OK) if args else int(ExitCode.BAD_INPUT)
    if args[0] == "--version":
        from atelier import __version__

        print(f"atelier {__version__}")
        return int(ExitCode.OK)
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(
            error_line("", f"unknown command {name!r}; choose from {', '.join(COMMANDS)}").replace("atelier :", "atelier:"), file=sys.stderr
        )
        return int(ExitCode.BAD_INPUT)
    module_name, function = COMMANDS[name][0].split(":")
    command = getattr(importlib.import_module(module_name), function)
    try:
        return int(command(rest))
    except KeyboardInterrupt:
        print(error_line(name, "interrupted"), file=sys.stderr)
        return int(ExitCode.INTERRUPTED)


if __name__ == "__main__":
    sys.exit(main())
