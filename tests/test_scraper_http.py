"""The polite HTTP layer against the local fake WikiArt: limiter, retries, final errors."""

from __future__ import annotations

import threading
import time

import pytest
from fake_wikiart import LIMIT_EXCEEDED_BODY, FakeWikiArt, Reply, jpeg_bytes

from scraping.http import (
    DEFAULT_USER_AGENT,
    ApiLimitExceeded,
    HttpError,
    HttpSettings,
    PoliteClient,
    RateLimit,
    RateLimiter,
    RedirectedToErrorPage,
    TruncatedBody,
    _parse_retry_after,
)

FAST = HttpSettings(api_rate=RateLimit(1000, 1.0), image_rate=RateLimit(1000, 1.0), max_retries=3, backoff_base=0.01)


@pytest.fixture()
def site():
    with FakeWikiArt() as fake:
        fake.add_artist("claude-monet", "Claude Monet")
        fake.add_work("claude-monet", 1, "impression-sunrise", image=jpeg_bytes(1))
        yield fake


def test_rate_limiter_window_is_respected_across_threads():
    limiter = RateLimiter(RateLimit(3, 0.3))
    granted: list[float] = []
    lock = threading.Lock()

    def take(n: int) -> None:
        for _ in range(n):
            limiter.acquire()
            with lock:
                granted.append(time.monotonic())

    threads = [threading.Thread(target=take, args=(3,)) for _ in range(3)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    granted.sort()
    assert len(granted) == 9
    # 9 grants at 3 per 0.3 s need at least two full windows.
    assert granted[-1] - start >= 0.6 - 0.02
    for i in range(len(granted) - 3):
        assert granted[i + 3] - granted[i] >= 0.3 - 0.01, "4 grants inside one window"


def test_rate_limiter_with_fake_clock_sleeps_exactly_until_a_slot_frees():
    now = [100.0]
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds

    limiter = RateLimiter(RateLimit(10, 2.5), clock=lambda: now[0], sleep=sleep)
    for _ in range(10):
        assert limiter.acquire() == 0.0
    now[0] += 1.0
    assert limiter.acquire() == pytest.approx(1.5)
    assert sleeps == [pytest.approx(1.5)]


def test_rate_parse_rejects_nonsense():
    assert RateLimit.parse("10/2.5") == RateLimit(10, 2.5)
    for bad in ("10", "0/1", "5/0", "a/b"):
        with pytest.raises(ValueError):
            RateLimit.parse(bad)


def test_429_retry_after_is_honoured(site):
    path = "/en/App/Painting/ImageJson/1"
    site.script(path, Reply(429, b'{"Message":"slow down"}', headers={"Retry-After": "1"}))
    client = PoliteClient(FAST)
    fetched = client.get(site.url + path, budget="api", expect="json")
    assert b'"url": "impression-sunrise"' in fetched.body
    times = [t for t, raw in site.requests if raw == path]
    assert len(times) == 2
    assert times[1] - times[0] >= 0.95, "Retry-After: 1 must be waited out"


def test_503_then_success_and_user_agent(site):
    path = "/images/claude-monet/impression-sunrise.jpg"
    site.script(path, Reply(503, b"busy", "text/plain"), Reply(502, b"bad gateway", "text/plain"))
    client = PoliteClient(FAST)
    fetched = client.get(site.url + path, budget="image", expect="image")
    assert fetched.body == jpeg_bytes(1)
    assert site.hits(path) == 3
    assert site.user_agents == {DEFAULT_USER_AGENT}
    assert "https://github.com/atelier-gan/atelier" in DEFAULT_USER_AGENT


def test_retries_are_bounded(site):
    path = "/en/App/Painting/ImageJson/1"
    site.always[path] = Reply(503, b"down", "text/plain")
    client = PoliteClient(FAST)
    with pytest.raises(HttpError, match="after 4 attempts"):
        client.get(site.url + path, budget="api", expect="json")
    assert site.hits(path) == FAST.max_retries + 1


def test_limit_exceeded_500_is_final_not_retried(site):
    path = "/en/App/Painting/ImageJson/1"
    site.always[path] = Reply(500, LIMIT_EXCEEDED_BODY)
    client = PoliteClient(FAST)
    with pytest.raises(ApiLimitExceeded, match="Free API limit exceeded"):
        client.get(site.url + path, budget="api", expect="json")
    assert site.hits(path) == 1


def test_redirect_to_html_error_page_is_not_success(site):
    client = PoliteClient(FAST)
    with pytest.raises(RedirectedToErrorPage):
        client.get(site.url + "/en/App/Painting/ImageJson/404404", budget="api", expect="json")
    # Only the redirect and the error page itself: no retries of a final answer.
    assert site.hits("/en/App/Painting/ImageJson/404404") == 1


def test_404_is_final_with_status(site):
    client = PoliteClient(FAST)
    with pytest.raises(HttpError) as info:
        client.get(site.url + "/images/nope.jpg", budget="image", expect="image")
    assert info.value.status == 404
    assert site.hits("/images/nope.jpg") == 1


def test_truncated_body_is_retried_then_rejected(site):
    path = "/images/claude-monet/impression-sunrise.jpg"
    data = jpeg_bytes(1)
    site.always[path] = Reply(200, data, "image/jpeg", truncate_to=len(data) // 2)
    client = PoliteClient(FAST)
    with pytest.raises(TruncatedBody, match="truncated"):
        client.get(site.url + path, budget="image", expect="image")
    assert site.hits(path) == FAST.max_retries + 1


def test_huge_retry_after_gives_up_instead_of_sleeping(site):
    path = "/en/App/Painting/ImageJson/1"
    site.script(path, Reply(429, b"", headers={"Retry-After": "86400"}))
    client = PoliteClient(FAST)
    started = time.monotonic()
    with pytest.raises(HttpError, match="Retry-After"):
        client.get(site.url + path, budget="api", expect="json")
    assert time.monotonic() - started < 2


def test_retry_after_http_date_parses():
    assert _parse_retry_after("3") == 3.0
    assert _parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past: no wait
    assert _parse_retry_after("soon") is None


def test_api_and_image_budgets_are_separate_and_shared_by_threads(site):
    settings = HttpSettings(api_rate=RateLimit(2, 0.4), image_rate=RateLimit(100, 1.0), max_retries=0)
    client = PoliteClient(settings)
    api_url = site.url + "/en/App/Painting/ImageJson/1"
    image_url = site.url + "/images/claude-monet/impression-sunrise.jpg"

    def burst(url: str, budget: str) -> float:
        started = time.monotonic()
        threads = [
            threading.Thread(target=client.get, args=(url,), kwargs={"budget": budget, "expect": "json" if budget == "api" else "image"})
            for _ in range(4)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return time.monotonic() - started

    assert burst(image_url, "image") < 0.3  # the image budget is not held back by the API one
    assert burst(api_url, "api") >= 0.4 - 0.02  # 4 API calls at 2 per 0.4 s need a second window
    arrivals = sorted(t for t, raw in site.requests if raw.startswith("/en/"))
    assert len(arrivals) == 4 and arrivals[2] - arrivals[0] >= 0.35


def test_redirect_to_a_non_http_scheme_is_a_final_http_error(site):
    path = "/images/claude-monet/impression-sunrise.jpg"
    site.always[path] = Reply(302, b"", "text/html", {"Location": "file:///etc/passwd"})
    client = PoliteClient(FAST)
    with pytest.raises(HttpError, match="not http"):
        client.get(site.url + path, budget="image", expect="image")
    assert site.hits(path) == 1  # final: a redirect to file:// is never retried nor followed


def test_undecodable_gzip_body_is_retried_then_an_http_error(site):
    path = "/images/claude-monet/impression-sunrise.jpg"
    site.always[path] = Reply(200, b"not gzip at all", "image/jpeg", {"Content-Encoding": "gzip"})
    client = PoliteClient(FAST)
    with pytest.raises(HttpError, match="undecodable"):
        client.get(site.url + path, budget="image", expect="image")
    assert site.hits(path) == FAST.max_retries + 1


def test_read_timeout_is_retried_then_given_up(site):
    path = "/en/App/Painting/ImageJson/1"
    site.always[path] = Reply(200, b"{}", delay=0.6)
    settings = HttpSettings(api_rate=RateLimit(1000, 1.0), max_retries=1, backoff_base=0.01, read_timeout=0.2)
    started = time.monotonic()
    with pytest.raises(HttpError, match="after 2 attempts"):
        PoliteClient(settings).get(site.url + path, budget="api", expect="json")
    assert site.hits(path) == 2 and time.monotonic() - started < 1.5
