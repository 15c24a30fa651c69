"""The scrape stage: one artist's public-domain works into ``<out>/manifest.jsonl`` + ``<out>/images``.

Per work (in a small thread pool): pre-filter on the artist's death date, details for the work
page slug, style and genre, the authoritative copyright label from the work page, then the
image, verified and written under a ``.part`` name. The main thread commits results *in
listing order* (rename, then append the manifest row; or append a ``rejected.jsonl`` row), so
an uninterrupted run and a killed and resumed run write byte-identical files, and "first in
the listing" decides which of two identical images is kept.

Resume: works already in the manifest are not requested again, and neither are works in
``<out>/rejected.jsonl``: final rejections, i.e. a work page labelled other than public domain,
or an image identical to a kept one. Works that failed (network, HTTP, bad image) or whose
licence could not be read are not recorded, so every run tries them again; pre-filtered works
cost no request and are decided afresh. ``recheck_rejected`` (``--recheck-rejected``) checks
the recorded works again and rebuilds ``rejected.jsonl`` from that run's decisions. ``.part``
leftovers and image files no manifest row names (renamed just before a kill, row never
written) are removed at start; an ``images/`` folder with files but no manifest is someone
else's and is refused, never emptied.
"""

from __future__ import annotations

import enum
import logging
import threading
from collections import Counter, deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import date
from pathlib import Path

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from atelier.common.images import MAX_PIXELS

from .download import PART_SUFFIX, PLACEHOLDERS_FILE, ImageRejected, Placeholders, allowed_image_hosts, commit_part, fetch_image, write_part
from .http import ApiLimitExceeded, HttpError, HttpSettings, PoliteClient, RedirectedToErrorPage
from .licence import Licence, parse_copyright_label, prefilter_work
from .manifest import (
    IMAGES_DIR,
    MANIFEST_NAME,
    REJECTED_NAME,
    ManifestError,
    ManifestRow,
    ManifestWriter,
    RejectedRow,
    read_manifest,
    read_rejected,
)
from .names import image_filename
from .v2api import V2Client, V2Credentials
from .wikiart import DEFAULT_BASE_URL, SchemaError, WikiArtClient, WorkSummary

log = logging.getLogger(__name__)


class Outcome(str, enum.Enum):
    KEPT = "kept"
    NOT_PUBLIC_DOMAIN = "not public domain"
    UNKNOWN_LICENCE = "unknown licence"
    FAILED = "failed"
    DUPLICATE = "duplicate"


@dataclass(frozen=True)
class ScrapeOptions:
    """Everything one scrape run needs (the CLI builds this from its arguments)."""

    artist: str
    out: Path
    base_url: str = DEFAULT_BASE_URL
    size: str = "Large"
    limit: int | None = None  # stop once this many works are kept (including earlier runs)
    workers: int = 4
    max_pixels: int = MAX_PIXELS
    http: HttpSettings = field(default_factory=HttpSettings)
    today: date | None = None  # the public-domain rules' "now"; None = today
    progress: bool = True
    v2: V2Credentials | None = None
    v2_artist_id: str | None = None
    recheck_rejected: bool = False  # check works in rejected.jsonl again and rebuild that file
    # Image hosts allowed besides WikiArt's own, the site root's and the one the API names for
    # each work; "*" allows any.
    image_hosts: tuple[str, ...] = ()


@dataclass
class WorkResult:
    """What happened to one work; ``part`` is the verified temp file of a kept work.

    ``final`` marks a rejection that asking WikiArt again would only repeat; such results are
    recorded in ``rejected.jsonl`` and skipped by later runs.
    """

    work: WorkSummary
    outcome: Outcome
    reason: str
    row: ManifestRow | None = None
    part: Path | None = None
    source_url: str | None = None  # the work page that was read, once known
    final: bool = False


@dataclass
class ScrapeSummary:
    """Counts for the closing report; ``stopped`` names why a run ended early."""

    artist: str
    listed: int = 0
    already_kept: int = 0
    already_rejected: int = 0  # skipped: recorded in rejected.jsonl by an earlier run
    skipped_rows: int = 0  # listing rows without a usable id
    kept_new: int = 0
    reasons: dict[Outcome, Counter] = field(default_factory=lambda: {o: Counter() for o in Outcome})
    stopped: str | None = None

    @property
    def kept_total(self) -> int:
        return self.already_kept + self.kept_new

    def count(self, outcome: Outcome) -> int:
        return sum(self.reasons[outcome].values())

    def add(self, result: WorkResult) -> None:
        if result.outcome is Outcome.KEPT:
            self.kept_new += 1
        else:
            self.reasons[result.outcome][result.reason] += 1

    def lines(self) -> list[str]:
        """Human summary: totals first, then one line of reasons per category."""
        out = [
            f"{self.artist}: {self.listed} works listed; kept {self.kept_total} "
            f"({self.kept_new} new, {self.already_kept} from earlier runs); "
            f"rejected earlier {self.already_rejected}; "
            f"not public domain {self.count(Outcome.NOT_PUBLIC_DOMAIN)}; "
            f"unknown licence {self.count(Outcome.UNKNOWN_LICENCE)}; failed {self.count(Outcome.FAILED)}; "
            f"duplicates {self.count(Outcome.DUPLICATE)}"
            + (f"; listing rows skipped (no id) {self.skipped_rows}" if self.skipped_rows else "")
        ]
        for outcome in (Outcome.NOT_PUBLIC_DOMAIN, Outcome.UNKNOWN_LICENCE, Outcome.FAILED, Outcome.DUPLICATE):
            if self.reasons[outcome]:
                parts = ", ".join(f"{reason} x{n}" for reason, n in self.reasons[outcome].most_common())
                out.append(f"  {outcome.value}: {parts}")
        return out


def scrape(options: ScrapeOptions) -> ScrapeSummary:
    """Run the scrape stage; returns the summary (``stopped`` set if the quota ended it).

    A run that fails or stops early takes back what it created and left empty (folders,
    record files without a row), so a mistyped --artist leaves no empty download folder;
    anything that existed before is kept.
    """
    images_dir = options.out / IMAGES_DIR
    new_files = [p for p in (options.out / MANIFEST_NAME, options.out / REJECTED_NAME) if not p.exists()]
    new_dirs = _make_dirs(images_dir)
    try:
        summary = _scrape_into(options, images_dir)
    except BaseException:
        _remove_if_empty(images_dir, new_files, new_dirs)
        raise
    if summary.stopped:
        _remove_if_empty(images_dir, new_files, new_dirs)
    return summary


def _make_dirs(directory: Path) -> list[Path]:
    """``mkdir -p``; returns the folders it created, innermost first."""
    missing = []
    probe = directory
    while not probe.exists():
        missing.append(probe)
        probe = probe.parent
    directory.mkdir(parents=True, exist_ok=True)
    return missing


def _remove_if_empty(images_dir: Path, files: list[Path], dirs: list[Path]) -> None:
    if images_dir.is_dir() and any(images_dir.iterdir()):
        return  # a committed image keeps its (possibly still empty) manifest as proof it is ours
    for path in files:
        if path.is_file() and path.stat().st_size == 0:
            path.unlink()
    for directory in dirs:
        try:
            directory.rmdir()  # only succeeds when empty
        except FileNotFoundError:
            continue
        except OSError:
            return  # not empty (or gone): its parents are not empty either


def _scrape_into(options: ScrapeOptions, images_dir: Path) -> ScrapeSummary:
    manifest_path = options.out / MANIFEST_NAME
    rejected_path = options.out / REJECTED_NAME
    if not manifest_path.exists():
        _refuse_foreign_files(images_dir)
    existing = read_manifest(manifest_path)
    _remove_leftovers(images_dir, existing)
    kept_ids = {str(row["id"]) for row in existing}
    kept_sha = {row.get("sha256") for row in existing}
    # A recheck rebuilds rejected.jsonl, so it neither needs the old rows nor fails on a corrupt file.
    rejected_ids = set() if options.recheck_rejected else {str(row["id"]) for row in read_rejected(rejected_path)}

    summary = ScrapeSummary(options.artist)
    stop = threading.Event()
    http = PoliteClient(options.http, stop=stop)
    try:
        client = WikiArtClient(http, options.base_url)
        try:
            works, summary.skipped_rows = _list_works(client, options)
            death_day = _artist_death_day(client, options.artist)
        except ApiLimitExceeded as exc:
            summary.stopped = str(exc)
            return summary
        summary.listed = len(works)
        summary.already_kept = sum(1 for w in works if w.id in kept_ids)
        summary.already_rejected = sum(1 for w in works if w.id in rejected_ids and w.id not in kept_ids)
        todo = [w for w in works if w.id not in kept_ids and w.id not in rejected_ids]
        if options.limit is not None and summary.already_kept >= options.limit:
            todo = []
        log.info(
            "%d works listed, %d already kept, %d rejected earlier, %d to check",
            len(works),
            summary.already_kept,
            summary.already_rejected,
            len(todo),
        )
        worker = _Worker(client, options, death_day, images_dir, stop)
        # A recheck starts rejected.jsonl empty and appends every decision again, in listing
        # order: no work is listed twice, and a kill mid-recheck only means the works not yet
        # re-decided are checked again by the next run.
        with ManifestWriter(manifest_path) as manifest, ManifestWriter(rejected_path, fresh=options.recheck_rejected) as rejected:
            records = _Records(manifest, rejected, kept_sha)
            _run_in_order(todo, worker, records, summary, options, stop)
    finally:
        http.close()
    return summary


def _list_works(client: WikiArtClient, options: ScrapeOptions) -> tuple[list[WorkSummary], int]:
    """The artist's works (each once) and how many listing rows were skipped for lack of an id."""
    if options.v2 is None:
        works = client.list_works(options.artist)
        skipped = client.skipped_rows
    else:
        v2 = V2Client(client.http, options.base_url, options.v2)
        artist_id = options.v2_artist_id or client.artist(options.artist).content_id
        if not artist_id:
            raise SchemaError(f"artist {options.artist!r}: no id for the v2 API; pass --v2-artist-id")
        works = v2.list_works(artist_id)
        skipped = v2.skipped_rows
    unique: dict[str, WorkSummary] = {}
    for work in works:
        unique.setdefault(work.id, work)  # a work listed twice is processed once
    return list(unique.values()), skipped


def _artist_death_day(client: WikiArtClient, artist: str) -> str | None:
    try:
        record = client.artist(artist)
    except ApiLimitExceeded:
        raise
    except (HttpError, SchemaError) as exc:
        log.warning("artist record unavailable (%s); every work goes to its page for the licence", exc)
        return None
    return record.death_day


def _refuse_foreign_files(images_dir: Path) -> None:
    """Without a manifest no run of ours committed here (it opens one before its first file),
    so files in ``images/`` belong to someone else: refuse rather than delete them as leftovers."""
    foreign = [p.name for p in images_dir.iterdir()]
    if foreign:
        raise ManifestError(
            f"{images_dir} holds {len(foreign)} file(s) no {MANIFEST_NAME} names (e.g. {min(foreign)}) "
            "and is not a download folder of this scraper; choose another --out"
        )


def _remove_leftovers(images_dir: Path, rows: list[dict]) -> None:
    """Delete ``.part`` files and images no manifest row names (both come from a kill)."""
    named = {Path(str(row["file"])).name for row in rows}
    removed = 0
    for path in images_dir.iterdir():
        if path.is_file() and (path.name.endswith(PART_SUFFIX) or path.name not in named):
            path.unlink()
            removed += 1
    if removed:
        log.info("removed %d unfinished file(s) left by an interrupted run", removed)
    missing = [name for name in named if not (images_dir / name).exists()]
    if missing:
        log.warning("%d manifest row(s) name missing files (e.g. %s); delete those rows to fetch them again", len(missing), missing[0])


@dataclass
class _Records:
    """Where committed results go; used by the main thread only."""

    manifest: ManifestWriter
    rejected: ManifestWriter
    kept_sha: set[str]


def _run_in_order(todo, worker, records: _Records, summary, options, stop) -> None:
    """Process works in a pool, commit results strictly in listing order."""
    window = max(1, options.workers) * 2
    queue = iter(todo)
    pending: deque[tuple[WorkSummary, Future]] = deque()
    bar = tqdm(total=len(todo), unit="work", disable=not options.progress, desc=options.artist)
    # Log lines go through tqdm.write so warnings do not tear the progress bar.
    with logging_redirect_tqdm(), ThreadPoolExecutor(max_workers=max(1, options.workers), thread_name_prefix="scrape") as pool:
        try:
            _refill(pending, queue, pool, worker, window, stop)
            while pending:
                # Leave the work in ``pending`` until its result is in: a Ctrl-C while waiting
                # then discards its temp file with the others'.
                work, future = pending[0]
                try:
                    result = future.result()
                except ApiLimitExceeded as exc:
                    stop.set()
                    summary.stopped = str(exc)
                    break
                _commit(result, records, summary)
                pending.popleft()
                bar.update(1)
                bar.set_postfix(kept=summary.kept_total, rejected=bar.n - summary.kept_new, refresh=False)
                if options.limit is not None and summary.kept_total >= options.limit:
                    log.info("reached --limit %d kept works", options.limit)
                    break
                _refill(pending, queue, pool, worker, window, stop)
        finally:
            stop.set()  # running workers stop at their next request
            for _, future in pending:
                future.cancel()
            for _, future in pending:
                _discard(future)
            bar.close()


def _refill(pending, queue, pool, worker, window, stop) -> None:
    while len(pending) < window and not stop.is_set():
        work = next(queue, None)
        if work is None:
            return
        pending.append((work, pool.submit(worker, work)))


def _discard(future: Future) -> None:
    """Remove the temp file of a result that will not be committed."""
    if future.cancelled():
        return
    try:
        result = future.result()
    except Exception:
        return
    if result.part is not None:
        result.part.unlink(missing_ok=True)


def _commit(result: WorkResult, records: _Records, summary: ScrapeSummary) -> None:
    if result.outcome is Outcome.KEPT and result.row is not None and result.part is not None:
        if result.row.sha256 in records.kept_sha:
            result.part.unlink(missing_ok=True)
            # Final while the kept twin stays in the manifest (its row is never rewritten).
            result = replace(result, outcome=Outcome.DUPLICATE, reason="same file as an earlier work", part=None, final=True)
        else:
            commit_part(result.part)
            records.manifest.append(result.row)
            records.kept_sha.add(result.row.sha256)
    if result.final:
        records.rejected.append(_rejected_row(result))
    log.debug("%s %s (%s): %s", result.outcome.value, result.work.id, result.work.title, result.reason)
    summary.add(result)


def _rejected_row(result: WorkResult) -> RejectedRow:
    return RejectedRow(
        id=result.work.id, title=result.work.title, source_url=result.source_url or "", outcome=result.outcome.value, reason=result.reason
    )


class _Worker:
    """Decides and fetches one work; runs in pool threads, touches no shared state but files."""

    def __init__(self, client: WikiArtClient, options: ScrapeOptions, death_day, images_dir: Path, stop):
        self.client = client
        self.options = options
        self.death_day = death_day
        self.images_dir = images_dir
        self.stop = stop
        self.today = options.today or date.today()
        state_dir = options.http.state_dir
        self.placeholders = Placeholders(Path(state_dir) / PLACEHOLDERS_FILE if state_dir is not None else None)

    def __call__(self, work: WorkSummary) -> WorkResult:
        try:
            return self._process(work)
        except ApiLimitExceeded:
            self.stop.set()
            raise

    def _process(self, work: WorkSummary) -> WorkResult:
        # Which rejections are final (recorded in rejected.jsonl, never asked about again):
        # only a label WikiArt itself put on the work page (and, in _commit, a duplicate).
        # Not final: FAILED (network, HTTP, bad or truncated images are mostly transient);
        # UNKNOWN_LICENCE (a page or details call that failed, or a label our parser could not
        # read: a transient error page or a fixed parser should get another chance, and such
        # works are few, so retrying them costs little); the pre-filter (it makes no request,
        # and its answer moves with the calendar as works pass into the public domain).
        pre = prefilter_work(self.death_day, work.year, self.today)
        if not pre.candidate:
            return WorkResult(work, Outcome.NOT_PUBLIC_DOMAIN, f"pre-filter: {pre.reason}")
        try:
            details = self.client.work_details(work.id)
        except ApiLimitExceeded:
            raise  # an HttpError too, but it ends the run rather than this work
        except (HttpError, SchemaError) as exc:
            return WorkResult(work, Outcome.UNKNOWN_LICENCE, _short("details unavailable", exc))
        artist_url = details.artist_url or work.artist_url or self.options.artist
        work_url = details.url or work.url
        if not work_url:
            return WorkResult(work, Outcome.UNKNOWN_LICENCE, "no work page slug in the details")
        page_url = self.client.work_page_url(artist_url, work_url)
        try:
            label = parse_copyright_label(self.client.work_page(artist_url, work_url))
        except ApiLimitExceeded:
            raise
        except HttpError as exc:
            return WorkResult(work, Outcome.UNKNOWN_LICENCE, _short("work page unavailable", exc))
        if label is Licence.UNKNOWN:
            return WorkResult(work, Outcome.UNKNOWN_LICENCE, "no readable copyright label on the work page")
        if label is not Licence.PUBLIC_DOMAIN:
            return WorkResult(work, Outcome.NOT_PUBLIC_DOMAIN, f"labelled {label.value}", source_url=page_url, final=True)
        image_url = work.image_url or details.image_url
        if not image_url:
            return WorkResult(work, Outcome.FAILED, "no image URL")
        try:
            allowed = allowed_image_hosts(self.options.base_url, image_url, self.options.image_hosts)
            image = fetch_image(
                self.client.http,
                image_url,
                self.options.size,
                self.options.max_pixels,
                allowed_hosts=allowed,
                placeholders=self.placeholders,
            )
        except ImageRejected as exc:
            log.debug("work %s image rejected: %s", work.id, exc.detail)
            return WorkResult(work, Outcome.FAILED, exc.reason)
        name = image_filename(artist_url, work_url or work.title, work.id, image.info.format)
        row = ManifestRow(
            id=work.id,
            artist=work.artist_name or artist_url,
            artist_url=artist_url,
            title=details.title or work.title,
            year=work.year if work.year is not None else details.year,
            style=details.style,
            genre=details.genre,
            source_url=page_url,
            image_url=image.url,
            file=f"{IMAGES_DIR}/{name}",
            sha256=image.sha256,
            width=image.info.width,
            height=image.info.height,
            format=image.info.format,
            bytes=len(image.data),
            license=label.value,
        )
        part = write_part(self.images_dir, name, image.data)
        return WorkResult(work, Outcome.KEPT, f"{image.info.width}x{image.info.height} {image.info.format}", row, part, source_url=page_url)


def _short(prefix: str, exc: Exception) -> str:
    """A summary-friendly reason (no URLs, so equal causes group together)."""
    if isinstance(exc, RedirectedToErrorPage):
        return f"{prefix} (redirected to an error page)"
    status = getattr(exc, "status", None)
    if status:
        return f"{prefix} (HTTP {status})"
    if isinstance(exc, SchemaError):
        return f"{prefix} (unexpected answer)"
    return f"{prefix} (network error)"
