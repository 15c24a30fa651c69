"""Polite HTTP for the scraper: one session, per-host rate limits, retries that know when to stop.

Every request the scraper makes goes through :class:`PoliteClient`:

* a single ``requests.Session`` (connection reuse) with a descriptive User-Agent;
* a timeout on every request;
* a rate limiter per (host, budget), shared by all threads and by every process of this user
  on this machine (a lock-protected timestamp file in the cache folder: a shell loop over
  artists stays within the limit too): WikiArt publishes separate limits for API/page calls
  (10 per 2.5 s) and for image downloads (20 per second);
* a whole-transfer deadline per request on top of the connect/read timeouts, so a server that
  trickles bytes just inside the read timeout cannot hold a worker for ever;
* an optional allow-list of hosts a request (and every redirect hop) may go to;
* retries for 408/429/5xx and connection errors with jittered exponential backoff that honours
  ``Retry-After``. The retry loop is explicit rather than urllib3's ``Retry`` because every
  attempt must pass the rate limiter again, and because WikiArt's "Free API limit exceeded"
  answer is an HTTP 500 that must *not* be retried: it only gets worse with more requests;
* a redirect that lands on an HTML page when JSON or an image was asked for is an error page
  (WikiArt answers unknown works with a 302 to one), never a success.
"""

from __future__ import annotations

import email.utils
import fcntl
import logging
import os
import random
import re
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable, Literal
from urllib.parse import urljoin, urlsplit

import requests
import urllib3.exceptions
from requests.adapters import HTTPAdapter

from atelier.common.errors import one_line

log = logging.getLogger(__name__)

PROJECT_URL = "https://github.com/atelier-gan/atelier"
DEFAULT_USER_AGENT = f"atelier-scraper/0.1 (+{PROJECT_URL}; research dataset of public-domain paintings)"

Budget = Literal["api", "image"]
Expect = Literal["json", "html", "image"]

RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504, 520, 521, 522, 523, 524})
LIMIT_EXCEEDED_TEXT = "free api limit exceeded"
# The v2 API takes its credentials and session key in the query string.
_SECRET_QUERY = re.compile(r"(?i)\b(accessCode|secretCode|authSessionKey)=[^&#\s\"'<>]*")


def redact(text: str) -> str:
    """``text`` with the values of credential query parameters replaced by ``***``."""
    return _SECRET_QUERY.sub(r"\1=***", text)


class _RedactSecrets(logging.Filter):
    """Keeps credentials out of urllib3's debug lines (they quote every request line)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


logging.getLogger("urllib3.connectionpool").addFilter(_RedactSecrets())


class HttpError(Exception):
    """A request that did not produce a usable answer; ``str()`` is one line naming the URL.

    Credentials in the URL are redacted from both: these errors end up in logs.
    """

    def __init__(self, message: str, url: str, status: int | None = None):
        super().__init__(redact(message))
        self.url = redact(url)
        self.status = status


class ApiLimitExceeded(HttpError):
    """WikiArt's quota answer ("Free API limit exceeded"): final, the run must stop."""


class RedirectedToErrorPage(HttpError):
    """A redirect ended on an HTML page where JSON or an image was expected."""


class UnsafeRedirect(HttpError):
    """A redirect to a scheme other than http(s) (file:, ftp:, data:): never followed."""


class TruncatedBody(HttpError):
    """The body was shorter (or longer) than its Content-Length."""


class BodyTooLarge(HttpError):
    """The body exceeded the caller's byte cap."""


class HostNotAllowed(HttpError):
    """A request, or a redirect hop, to a host outside the allow-list: never sent."""


def default_state_dir() -> Path:
    """``$XDG_CACHE_HOME/atelier`` (``~/.cache/atelier``): where the shared rate-limit state lives."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "atelier"


def host_allowed(url: str, allowed: Iterable[str]) -> bool:
    """True when ``url``'s host is one of ``allowed`` or a subdomain of one (``*`` allows any)."""
    host = (urlsplit(url).hostname or "").lower().rstrip(".")
    for entry in allowed:
        entry = entry.lower().strip().lstrip(".")
        if entry == "*" or (host and (host == entry or host.endswith("." + entry))):
            return True
    return False


@dataclass(frozen=True)
class RateLimit:
    """At most ``calls`` requests in any window of ``period`` seconds."""

    calls: int
    period: float

    @classmethod
    def parse(cls, text: str) -> "RateLimit":
        """Parse ``"N/SECONDS"`` (e.g. ``"10/2.5"``); raises ValueError with a one-line reason."""
        try:
            calls_text, period_text = text.split("/")
            limit = cls(int(calls_text), float(period_text))
        except ValueError:
            raise ValueError(f"rate {text!r} is not N/SECONDS, e.g. 10/2.5") from None
        if limit.calls < 1 or limit.period <= 0:
            raise ValueError(f"rate {text!r} must have N >= 1 and SECONDS > 0")
        return limit


@dataclass(frozen=True)
class HttpSettings:
    """Politeness and robustness knobs; the defaults follow WikiArt's published limits."""

    user_agent: str = DEFAULT_USER_AGENT
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    max_retries: int = 5
    backoff_base: float = 1.0  # first retry waits up to this long, doubling each time
    backoff_max: float = 60.0
    max_retry_after: float = 300.0  # a longer Retry-After is treated as "give up"
    api_rate: RateLimit = RateLimit(10, 2.5)
    image_rate: RateLimit = RateLimit(20, 1.0)
    pool_size: int = 16
    transfer_deadline: float = 300.0  # whole request, headers to last byte (plus at most one read timeout)
    # Rate-limit state shared across processes; None keeps it inside this process.
    state_dir: Path | None = field(default_factory=default_state_dir)


class RateLimiter:
    """Sliding-window limiter: at most ``calls`` acquisitions in any ``period`` seconds.

    Thread-safe; a waiting thread sleeps outside the lock so others can be granted slots
    that free up for them.
    """

    def __init__(self, limit: RateLimit, clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep):
        self.limit = limit
        self._clock = clock
        self._sleep = sleep
        self._granted: deque[float] = deque()
        self._lock = threading.Lock()

    def acquire(self) -> float:
        """Block until a slot is free; return the seconds spent waiting."""
        waited = 0.0
        while True:
            with self._lock:
                now = self._clock()
                while self._granted and now - self._granted[0] >= self.limit.period:
                    self._granted.popleft()
                if len(self._granted) < self.limit.calls:
                    self._granted.append(now)
                    return waited
                delay = self.limit.period - (now - self._granted[0])
            self._sleep(delay)
            waited += delay


class SharedRateLimiter:
    """The same sliding window, kept in a file so every process on this machine shares it.

    The file holds the wall-clock times of the grants still inside the window, one per line;
    ``fcntl.flock`` serialises the read-modify-write between processes, a thread lock between
    this process's threads. Wall-clock time because monotonic clocks are per boot and process
    agnostic only on some systems; grants stamped in the future (a clock set back) are dropped.
    """

    def __init__(self, limit: RateLimit, path: Path, clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep):
        self.limit = limit
        self.path = Path(path)
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._local: RateLimiter | None = None  # used once the state file proves unusable
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def acquire(self) -> float:
        """Block until a slot is free in every process's view; return the seconds spent waiting."""
        if self._local is not None:
            return self._local.acquire()
        try:
            return self._acquire_shared()
        except OSError as exc:  # a read-only or full cache folder must not stop the scrape
            log.warning("rate limit kept in this process only: cannot use %s (%s)", self.path, one_line(exc))
            self._local = RateLimiter(self.limit, sleep=self._sleep)
            return self._local.acquire()

    def _acquire_shared(self) -> float:
        waited = 0.0
        while True:
            with self._lock, open(self.path, "a+", encoding="ascii") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file closes
                handle.seek(0)
                now = self._clock()
                granted = sorted(t for t in _floats(handle.read().split()) if 0 <= now - t < self.limit.period)
                if len(granted) < self.limit.calls:
                    granted.append(now)
                    handle.seek(0)
                    handle.truncate()
                    handle.write("".join(f"{t:.6f}\n" for t in granted))
                    handle.flush()
                    return waited
                delay = self.limit.period - (now - granted[0])
            self._sleep(delay)
            waited += delay


def _floats(words: list[str]) -> Iterable[float]:
    for word in words:
        try:
            yield float(word)
        except ValueError:
            continue  # a torn or foreign line costs one slot at most, never a crash


class HostLimiters:
    """One limiter per (host, budget), created on first use; shared across processes when ``state_dir`` is set."""

    def __init__(self, api_rate: RateLimit, image_rate: RateLimit, state_dir: Path | None = None):
        self._rates = {"api": api_rate, "image": image_rate}
        self._limiters: dict[tuple[str, str], RateLimiter | SharedRateLimiter] = {}
        self._lock = threading.Lock()
        self.state_dir = state_dir

    def for_url(self, url: str, budget: Budget) -> RateLimiter | SharedRateLimiter:
        host = urlsplit(url).netloc.lower()
        with self._lock:
            key = (host, budget)
            if key not in self._limiters:
                self._limiters[key] = self._make(host, budget)
            return self._limiters[key]

    def _make(self, host: str, budget: Budget) -> RateLimiter | SharedRateLimiter:
        if self.state_dir is not None:
            safe = re.sub(r"[^a-z0-9.-]", "_", host)
            try:
                return SharedRateLimiter(self._rates[budget], Path(self.state_dir) / f"ratelimit-{safe}-{budget}")
            except OSError as exc:
                log.warning("rate limit for %s kept in this process only: cannot use %s (%s)", host, self.state_dir, one_line(exc))
        return RateLimiter(self._rates[budget])


@dataclass
class Fetched:
    """A successful answer, body fully read and length-checked."""

    url: str  # the final URL, after redirects
    status: int
    content_type: str
    body: bytes
    redirected: bool = False
    headers: dict[str, str] = field(default_factory=dict)

    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


class PoliteClient:
    """GET with rate limiting, retries and strict body checks; safe to share between threads."""

    def __init__(self, settings: HttpSettings | None = None, stop: threading.Event | None = None):
        self.settings = settings or HttpSettings()
        self.session = requests.Session()
        self.session.headers["User-Agent"] = self.settings.user_agent
        self.session.max_redirects = 5
        adapter = HTTPAdapter(pool_connections=self.settings.pool_size, pool_maxsize=self.settings.pool_size)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.limiters = HostLimiters(self.settings.api_rate, self.settings.image_rate, self.settings.state_dir)
        # Set when the run is stopping (quota hit): waiting threads give up instead of retrying.
        self.stop = stop or threading.Event()

    def close(self) -> None:
        self.session.close()

    def get(
        self,
        url: str,
        *,
        budget: Budget,
        expect: Expect,
        max_bytes: int = 50_000_000,
        params: dict[str, str] | None = None,
        allowed_hosts: Iterable[str] | None = None,
    ) -> Fetched:
        """GET ``url`` and return the verified answer, retrying transient failures.

        With ``allowed_hosts``, the request and every redirect hop must go to one of those
        hosts (or a subdomain); otherwise :class:`HostNotAllowed` is raised before sending.
        Raises :class:`ApiLimitExceeded` (final), :class:`HttpError` for a non-retryable status
        (``status`` set, e.g. 404) or when retries are exhausted.
        """
        allowed = tuple(allowed_hosts) if allowed_hosts is not None else None
        if allowed is not None and not host_allowed(url, allowed):
            raise HostNotAllowed(f"{url}: host not in the allowed image hosts ({', '.join(allowed)})", url)
        attempt = 0
        while True:
            if self.stop.is_set():
                raise HttpError(f"run stopping, not fetching {url}", url)
            self.limiters.for_url(url, budget).acquire()
            try:
                return self._attempt(url, budget=budget, expect=expect, max_bytes=max_bytes, params=params, allowed=allowed)
            except _Retryable as exc:
                attempt += 1
                if attempt > self.settings.max_retries:
                    final = TruncatedBody if exc.truncated else HttpError
                    raise final(f"giving up on {url} after {attempt} attempts: {exc}", url, exc.status) from None
                delay = self._retry_delay(attempt, exc.retry_after, url)
                log.info("retrying %s in %.1fs (attempt %d): %s", redact(url), delay, attempt + 1, redact(str(exc)))
                if self.stop.wait(delay):
                    raise HttpError(f"run stopping, not retrying {url}", url, exc.status) from None

    def _retry_delay(self, attempt: int, retry_after: float | None, url: str) -> float:
        if retry_after is not None:
            if retry_after > self.settings.max_retry_after:
                raise HttpError(
                    f"{url}: server asks to wait {retry_after:.0f}s (Retry-After), more than the "
                    f"{self.settings.max_retry_after:.0f}s cap; try again later",
                    url,
                    429,
                )
            return retry_after
        # "Full jitter": threads that failed together do not retry together.
        ceiling = min(self.settings.backoff_max, self.settings.backoff_base * 2 ** (attempt - 1))
        return random.uniform(ceiling / 2, ceiling)

    def _attempt(self, url: str, *, budget: Budget, expect: Expect, max_bytes: int, params, allowed=None) -> Fetched:
        timeout = (self.settings.connect_timeout, self.settings.read_timeout)
        deadline = time.monotonic() + self.settings.transfer_deadline

        def check_redirect(resp: requests.Response, *args, **kwargs) -> None:
            # Runs on every answer before requests follows it: a hop off the list is never sent.
            if allowed is not None and resp.is_redirect:
                target = urljoin(resp.url, resp.headers.get("Location", ""))
                # A non-http(s) target is requests' to refuse (UnsafeRedirect), whatever its host.
                if urlsplit(target).scheme in ("http", "https") and not host_allowed(target, allowed):
                    resp.close()
                    raise HostNotAllowed(f"{url}: redirected to {target}, a host not in the allowed image hosts", url, resp.status_code)

        try:
            resp = self.session.get(url, params=params, timeout=timeout, stream=True, hooks={"response": check_redirect})
        except requests.TooManyRedirects as exc:
            raise HttpError(f"{url}: too many redirects", url) from exc
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise _Retryable(f"connection problem: {one_line(exc)}") from exc
        except (requests.exceptions.InvalidSchema, requests.exceptions.MissingSchema) as exc:
            # Only http:// and https:// have adapters, so requests refuses to follow a redirect to
            # file:, ftp: or data:; that refusal is a final answer for this URL, not a crash.
            raise UnsafeRedirect(f"{url}: redirected to a URL that is not http(s) ({one_line(exc)})", url) from exc
        except requests.exceptions.InvalidURL as exc:
            raise HttpError(f"{url}: redirected to a malformed URL ({one_line(exc)})", url) from exc
        with resp:
            status = resp.status_code
            if status >= 400:
                body = _read_some(resp, 64_000)
                if LIMIT_EXCEEDED_TEXT in body.decode("utf-8", errors="replace").lower():
                    raise ApiLimitExceeded(
                        f"WikiArt answered 'Free API limit exceeded' for {resp.url}: the quota is "
                        "used up; wait (about an hour) and run the same command again to resume",
                        resp.url,
                        status,
                    )
                if status in RETRYABLE_STATUS:
                    raise _Retryable(f"HTTP {status}", status, _parse_retry_after(resp.headers.get("Retry-After")))
                raise HttpError(f"HTTP {status} for {resp.url}", resp.url, status)
            if 300 <= status < 400:
                raise HttpError(f"HTTP {status} redirect without a usable Location for {resp.url}", resp.url, status)
            content_type = resp.headers.get("Content-Type", "").split(";")[0].strip().lower()
            redirected = bool(resp.history)
            if redirected and expect != "html" and content_type == "text/html":
                raise RedirectedToErrorPage(f"{url} redirected to an HTML page ({resp.url}), not {expect}", resp.url, status)
            body = _read_checked(resp, max_bytes, deadline, self.settings.transfer_deadline)
            return Fetched(resp.url, status, content_type, body, redirected, dict(resp.headers))


class _Retryable(Exception):
    def __init__(self, message: str, status: int | None = None, retry_after: float | None = None, truncated: bool = False):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after
        self.truncated = truncated


def _read_some(resp: requests.Response, limit: int) -> bytes:
    try:
        return resp.raw.read(limit, decode_content=True) or b""
    except Exception:  # an error body we cannot read is only used for its message
        return b""


def _read_checked(resp: requests.Response, max_bytes: int, deadline: float = float("inf"), allowed_seconds: float | None = None) -> bytes:
    """Read the whole body, refusing more than ``max_bytes``, short/long bodies, and a transfer past ``deadline``.

    ``read1`` returns whatever one socket read brings, so the deadline is checked at least once
    per read timeout however slowly the bytes come (a full-size read would wait for all of them).
    """
    declared = resp.headers.get("Content-Length")
    chunks: list[bytes] = []
    total = 0
    try:
        while True:
            if time.monotonic() > deadline:
                raise _Retryable(f"transfer from {resp.url} cut off: not complete within {allowed_seconds:g}s ({total} bytes so far)")
            chunk = resp.raw.read1(64 * 1024, decode_content=True)
            if not chunk:
                break
            total += len(chunk)
            if total > max_bytes:
                raise BodyTooLarge(f"{resp.url}: body larger than {max_bytes} bytes", resp.url, resp.status_code)
            chunks.append(chunk)
    except (urllib3.exceptions.ReadTimeoutError, requests.Timeout) as exc:
        raise _Retryable(f"read timeout from {resp.url}") from exc
    except (urllib3.exceptions.DecodeError, requests.exceptions.ContentDecodingError) as exc:
        # A gzip/deflate stream that does not decode is a corrupt download; another try may be whole.
        raise _Retryable(f"undecodable {resp.headers.get('Content-Encoding')} body from {resp.url}") from exc
    except (
        urllib3.exceptions.ProtocolError,
        urllib3.exceptions.SSLError,
        OSError,
        requests.exceptions.ChunkedEncodingError,
        requests.ConnectionError,
    ) as exc:
        # urllib3 enforces Content-Length and raises here when the connection closes early.
        raise _Retryable(f"truncated body from {resp.url}: {one_line(exc)}", truncated=True) from exc
    body = b"".join(chunks)
    encoded = resp.headers.get("Content-Encoding", "identity").lower() not in ("", "identity")
    if declared is not None and not encoded and declared.isdigit() and int(declared) != len(body):
        raise _Retryable(f"truncated body from {resp.url}: got {len(body)} of {declared} bytes", truncated=True)
    return body


def _parse_retry_after(value: str | None) -> float | None:
    """Retry-After is either delta-seconds or an HTTP date; None when absent or unparsable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())
