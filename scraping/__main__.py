"""``atelier scrape``: collect one WikiArt artist's public-domain works into a folder.

Several ``--artist`` values run one after another in one command, each into ``DIR/<artist>``.

Writes ``DIR/manifest.jsonl`` (one verified work per line), ``DIR/images/`` and
``DIR/rejected.jsonl`` (works left out for good: labelled other than public domain, or a
duplicate image). Safe to interrupt and re-run: neither kept nor recorded works are requested
again (``--recheck-rejected`` checks the recorded ones again); failed works are retried.

Exit status (README's table): 0 when the run finished (also when the artist has no
public-domain works), 2 for bad input, 3 when WikiArt's quota or an unexpected server answer
stopped the run, 5 when the download folder cannot be written, 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from urllib.parse import urlsplit

from atelier.common.command import CommandParser, fail, fail_write, prog_name, setup_logging
from atelier.common.errors import ExitCode
from atelier.common.images import MAX_PIXELS

from .download import SIZES
from .http import HttpError, HttpSettings, RateLimit
from .manifest import MANIFEST_NAME, ManifestError, read_manifest
from .names import safe_id
from .scrape import ScrapeOptions, scrape
from .v2api import ACCESS_ENV, SECRET_ENV, V2Credentials
from .wikiart import DEFAULT_BASE_URL, SchemaError, UnknownArtist

log = logging.getLogger("scraping")

CMD = "scrape"


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog=prog_name(CMD),
        description=(
            "Download every public-domain work of one WikiArt artist into DIR "
            "(DIR/manifest.jsonl + DIR/images/). A work is kept only when its WikiArt page is "
            "labelled 'Public domain'; re-running resumes where the last run stopped, skipping kept "
            "works and those recorded in DIR/rejected.jsonl, and retrying works that failed."
        ),
        epilog=(
            f"Keyed v2 API: set {ACCESS_ENV} and {SECRET_ENV} (from your WikiArt account) and pass "
            "--v2 to list works through the keyed API (login once, then 60 works per page; each "
            "page's paginationToken is sent back verbatim; larger hourly quota). "
            "Exit status: 0 done (also when nothing is public domain), 2 bad input, 3 quota exceeded or "
            "the server failed, 5 cannot write, 130 interrupted."
        ),
    )
    parser.add_argument(
        "--artist",
        required=True,
        action="append",
        help="the artist's WikiArt slug, e.g. claude-monet; repeat it for several artists, each then downloaded into DIR/<artist>",
    )
    parser.add_argument("--out", required=True, type=Path, help="download folder (created; resumable); with several --artist, their parent")
    parser.add_argument(
        "--base-url",
        default=DEFAULT_BASE_URL,
        help=f"WikiArt site root for the JSON and work pages (default {DEFAULT_BASE_URL}); image URLs come from the JSON as absolute URLs",
    )
    parser.add_argument(
        "--size",
        choices=SIZES,
        default="Large",
        help="image size to try first: Large (600 px), HD (1200 px) or original; "
        "falls back to the original when the size is missing (default Large)",
    )
    parser.add_argument(
        "--limit", type=_positive_int, default=None, help="stop once N works are kept in DIR (earlier runs count); default: all"
    )
    parser.add_argument(
        "--workers", type=_positive_int, default=4, help="parallel work downloads; the rate limits apply across all of them (default 4)"
    )
    parser.add_argument(
        "--api-rate",
        type=_rate,
        default=RateLimit(10, 2.5),
        metavar="N/SECONDS",
        help="at most N JSON/page requests per SECONDS per host (default 10/2.5, WikiArt's limit)",
    )
    parser.add_argument(
        "--image-rate",
        type=_rate,
        default=RateLimit(20, 1.0),
        metavar="N/SECONDS",
        help="at most N image requests per SECONDS per host (default 20/1)",
    )
    parser.add_argument(
        "--retries",
        type=int,
        default=5,
        help="retries for 408/429/5xx and network errors, with jittered exponential backoff honouring Retry-After (default 5)",
    )
    parser.add_argument(
        "--backoff", type=float, default=1.0, help="first retry delay in seconds, doubling per retry, capped at 60 (default 1)"
    )
    parser.add_argument("--timeout", type=float, default=60.0, help="read timeout per request in seconds (default 60)")
    parser.add_argument(
        "--deadline",
        type=float,
        default=300.0,
        help="whole-transfer limit per request in seconds, however steadily bytes arrive (default 300)",
    )
    parser.add_argument(
        "--image-host",
        action="append",
        default=[],
        metavar="HOST",
        help="also allow images (and their redirects) from HOST and its subdomains; by default "
        "only WikiArt's own hosts and the host its API names for each work; '*' allows any",
    )
    parser.add_argument(
        "--max-pixels",
        type=_positive_int,
        default=MAX_PIXELS,
        help=f"reject images with more pixels (decompression-bomb guard, default {MAX_PIXELS})",
    )
    parser.add_argument("--v2", action="store_true", help=f"list works with the keyed v2 API (needs {ACCESS_ENV} and {SECRET_ENV})")
    parser.add_argument("--v2-artist-id", default=None, help="the artist's v2 id; by default taken from the artist record")
    parser.add_argument(
        "--recheck-rejected",
        action="store_true",
        help="check again the works DIR/rejected.jsonl records as not public domain or "
        "duplicate (normally skipped), e.g. after WikiArt relabelled works or a new "
        "year moved the public-domain cut-off; rebuilds that file from this run's "
        "decisions",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (for logs and CI)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every request decision and retry")
    return parser


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} must be >= 1")
    return value


def _rate(text: str) -> RateLimit:
    try:
        return RateLimit.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def main(argv: list[str] | None = None) -> int:
    """``atelier scrape``; returns the exit status (README's table)."""
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    if urlsplit(args.base_url).scheme not in ("http", "https") or not urlsplit(args.base_url).netloc:
        return fail(CMD, f"--base-url {args.base_url!r} is not an http(s) URL")
    for name in ("timeout", "deadline"):
        if not getattr(args, name) > 0:  # also refuses nan
            return fail(CMD, f"--{name} must be a positive number of seconds, got {getattr(args, name)}")
    credentials = None
    if args.v2:
        credentials = V2Credentials.from_env()
        if credentials is None:
            return fail(CMD, f"--v2 needs the environment variables {ACCESS_ENV} and {SECRET_ENV}")
    artists = list(dict.fromkeys(args.artist))
    if len(artists) == 1:
        return _scrape_one(args, artists[0], args.out, credentials)
    bad = [a for a in artists if safe_id(a) != a]
    if bad:
        return fail(CMD, f"--artist {bad[0]!r} is not a WikiArt slug (lower-case letters, digits and dashes)")
    worst = ExitCode.OK
    for artist in artists:
        code = _scrape_one(args, artist, args.out / artist, credentials)
        worst = max(worst, ExitCode(code))
        if code in (ExitCode.REFUSED, ExitCode.IO, ExitCode.INTERRUPTED):
            break  # the quota, the disk or the user stops every artist, not just this one
    return int(worst)


def _scrape_one(args: argparse.Namespace, artist: str, out: Path, credentials) -> int:
    options = ScrapeOptions(
        artist=artist,
        out=out,
        base_url=args.base_url,
        size=args.size,
        limit=args.limit,
        workers=args.workers,
        max_pixels=args.max_pixels,
        http=HttpSettings(
            api_rate=args.api_rate,
            image_rate=args.image_rate,
            max_retries=args.retries,
            backoff_base=args.backoff,
            read_timeout=args.timeout,
            transfer_deadline=args.deadline,
        ),
        progress=not args.no_progress,
        v2=credentials,
        v2_artist_id=args.v2_artist_id,
        recheck_rejected=args.recheck_rejected,
        image_hosts=tuple(args.image_host),
    )
    try:
        summary = scrape(options)
    except (UnknownArtist, ManifestError) as exc:
        return fail(CMD, f"scrape of {artist!r} failed: {exc}")
    except (HttpError, SchemaError) as exc:
        return fail(CMD, f"scrape of {artist!r} failed: {exc}", ExitCode.REFUSED)
    except OSError as exc:
        return fail_write(CMD, exc)
    except KeyboardInterrupt:
        print(
            f"{prog_name(CMD)}: interrupted: {_kept_rows(out / MANIFEST_NAME)} works kept in {out}; run the same command again to go on",
            file=sys.stderr,
        )
        return int(ExitCode.INTERRUPTED)
    for line in summary.lines():
        log.info("%s", line)
    if summary.stopped:
        return fail(CMD, f"stopped early: {summary.stopped}", ExitCode.REFUSED)
    if summary.kept_total == 0:
        log.warning("no public-domain works found for %r in %d listed works; nothing to train on", artist, summary.listed)
    else:
        log.info("%d works in %s", summary.kept_total, out / "manifest.jsonl")
    return int(ExitCode.OK)


def _kept_rows(manifest: Path) -> int:
    try:
        return len(read_manifest(manifest))
    except (ManifestError, OSError):
        return 0


if __name__ == "__main__":
    sys.exit(main())
