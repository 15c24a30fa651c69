"""The scraper, round two (issue 19, point 9): politeness across processes, a whole-transfer
deadline, an allow-list of image hosts, the placeholder by content, several artists, a bad row."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from fake_wikiart import FakeWikiArt, Reply, jpeg_bytes
from PIL import Image

from scraping.__main__ import main
from scraping.http import HostNotAllowed, HttpError, HttpSettings, PoliteClient, RateLimit
from scraping.scrape import Outcome, ScrapeOptions, scrape

ROOT = Path(__file__).resolve().parents[1]
ARTIST = "claude-monet"
FAST_FLAGS = ["--api-rate", "1000/1", "--image-rate", "1000/1", "--backoff", "0.01", "--retries", "1", "--no-progress"]


def fast(state_dir: Path, **kw) -> HttpSettings:
    return HttpSettings(
        api_rate=RateLimit(1000, 1.0), image_rate=RateLimit(1000, 1.0), max_retries=1, backoff_base=0.01, state_dir=state_dir, **kw
    )


def api_arrivals(site: FakeWikiArt) -> list[float]:
    return sorted(t for t, raw in site.requests if raw.startswith("/en/"))


@pytest.fixture()
def site():
    with FakeWikiArt() as fake:
        fake.add_artist(ARTIST, "Claude Monet")
        fake.add_work(ARTIST, 1, "impression-sunrise", image=jpeg_bytes(1))
        yield fake


# ------------------------------------------------------------------ one rate limit per machine


def test_two_clients_share_one_window_through_the_state_file(site, tmp_path):
    settings = HttpSettings(api_rate=RateLimit(3, 0.6), max_retries=0, state_dir=tmp_path / "state")
    first, second = PoliteClient(settings), PoliteClient(settings)  # as two runs of a shell loop would be
    for client in (first, second, first, second, first, second):
        client.get(site.url + "/en/App/Painting/ImageJson/1", budget="api", expect="json")
    arrivals = api_arrivals(site)
    assert len(arrivals) == 6 and arrivals[3] - arrivals[0] >= 0.6 - 0.02  # at most 3 per 0.6 s, together
    assert list((tmp_path / "state").glob("ratelimit-127.0.0.1_*-api"))


def test_an_unusable_state_file_falls_back_to_this_process_with_a_warning(site, tmp_path, caplog):
    state = tmp_path / "state"
    state.mkdir()
    (state / "ratelimit-127.0.0.1_{}-api".format(site.url.rsplit(":", 1)[1])).mkdir()  # a folder where the file goes
    client = PoliteClient(HttpSettings(api_rate=RateLimit(100, 1.0), max_retries=0, state_dir=state))
    with caplog.at_level("WARNING"):
        for _ in range(2):
            client.get(site.url + "/en/App/Painting/ImageJson/1", budget="api", expect="json")
    assert caplog.text.count("rate limit kept in this process only") == 1


def test_two_processes_stay_within_one_limit(site, tmp_path):
    script = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(ROOT)!r})
        from scraping.http import HttpSettings, PoliteClient, RateLimit
        start = float(sys.argv[1])
        client = PoliteClient(HttpSettings(api_rate=RateLimit(4, 1.0), max_retries=0, state_dir={str(tmp_path)!r}))
        time.sleep(max(0.0, start - time.time()))  # both processes fire at the same moment
        for _ in range(4):
            client.get({site.url!r} + "/en/App/Painting/ImageJson/1", budget="api", expect="json")
    """)
    start = str(time.time() + 3.0)
    procs = [subprocess.Popen([sys.executable, "-c", script, start]) for _ in range(2)]
    assert [p.wait(timeout=60) for p in procs] == [0, 0]
    arrivals = api_arrivals(site)
    assert len(arrivals) == 8
    # 8 requests at 4 per second: the fifth can only start once the first left the window.
    assert arrivals[4] - arrivals[0] >= 1.0 - 0.05
    assert max(arrivals[i + 4] - arrivals[i] for i in range(4)) >= 1.0 - 0.05


# ------------------------------------------------------------------ a deadline for the whole transfer


def test_a_trickling_body_is_cut_off_at_the_deadline(site, tmp_path):
    path = "/images/claude-monet/impression-sunrise.jpg"
    site.always[path] = Reply(200, b"x" * 200, "image/jpeg", trickle=0.05)  # 10 s in all, a byte every 50 ms
    client = PoliteClient(fast(tmp_path, read_timeout=1.0, transfer_deadline=0.8))
    started = time.monotonic()
    with pytest.raises(HttpError, match="cut off: not complete within 0.8s"):
        client.get(site.url + path, budget="image", expect="image")
    assert time.monotonic() - started < 2 * (0.8 + 0.1) + 0.5  # two attempts (one retry), each cut at the deadline


# ------------------------------------------------------------------ image hosts


def test_a_redirect_to_a_host_off_the_list_is_never_followed(site, tmp_path):
    path = "/images/claude-monet/impression-sunrise.jpg"
    elsewhere = site.url.replace("127.0.0.1", "localhost") + "/images/elsewhere.jpg"
    site.always[path] = Reply(302, b"", "text/html", {"Location": elsewhere})
    site.files["/images/elsewhere.jpg"] = Reply(200, jpeg_bytes(9), "image/jpeg")
    client = PoliteClient(fast(tmp_path))
    with pytest.raises(HostNotAllowed, match="localhost"):
        client.get(site.url + path, budget="image", expect="image", allowed_hosts=["127.0.0.1"])
    assert site.hits("/images/elsewhere.jpg") == 0
    with pytest.raises(HostNotAllowed):
        client.get(elsewhere, budget="image", expect="image", allowed_hosts=["127.0.0.1", "images.example.invalid"])
    assert site.hits("/images/elsewhere.jpg") == 0
    assert client.get(site.url + path, budget="image", expect="image", allowed_hosts=["127.0.0.1", "localhost"]).body


def test_scrape_keeps_images_from_allowed_hosts_only_and_the_option_widens_the_list(tmp_path):
    with FakeWikiArt() as site:
        site.add_artist(ARTIST, "Claude Monet")
        elsewhere = site.url.replace("127.0.0.1", "localhost")
        redirect = Reply(302, b"", "text/html", {"Location": elsewhere + "/images/cdn/moved.jpg"})
        site.add_work(ARTIST, 1, "moved", image=redirect, large=redirect)
        site.files["/images/cdn/moved.jpg"] = Reply(200, jpeg_bytes(1), "image/jpeg")
        site.add_work(ARTIST, 2, "home", image=jpeg_bytes(2))
        summary = scrape(ScrapeOptions(ARTIST, tmp_path / "a", base_url=site.url, http=fast(tmp_path), progress=False))
        assert summary.kept_new == 1 and dict(summary.reasons[Outcome.FAILED]) == {"image host not allowed": 1}
        assert site.hits("/images/cdn/moved.jpg") == 0
        again = scrape(
            ScrapeOptions(ARTIST, tmp_path / "a", base_url=site.url, http=fast(tmp_path), progress=False, image_hosts=("localhost",))
        )
        assert again.kept_new == 1 and again.kept_total == 2


# ------------------------------------------------------------------ the placeholder by content


def frame_jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (600, 480), (90, 90, 90)).save(buffer, "JPEG", quality=80)
    return buffer.getvalue()


def test_placeholder_served_under_a_works_own_name_is_recognised_by_content(tmp_path):
    frame = frame_jpeg()
    with FakeWikiArt() as site:
        site.add_artist(ARTIST, "Claude Monet")
        site.files["/images/FRAME-600x480.jpg"] = Reply(200, frame, "image/jpeg")
        to_frame = Reply(302, b"", "text/html", {"Location": "/images/FRAME-600x480.jpg"})
        site.add_work(ARTIST, 1, "blocked-by-name", image=to_frame, large=to_frame)
        summary = scrape(ScrapeOptions(ARTIST, tmp_path / "a", base_url=site.url, http=fast(tmp_path), progress=False, workers=1))
        assert dict(summary.reasons[Outcome.FAILED]) == {"placeholder image": 1}
    # A later run (another process: the fingerprint is on disk) meets the same bytes under real names.
    with FakeWikiArt() as site:
        site.add_artist(ARTIST, "Claude Monet")
        site.add_work(ARTIST, 2, "blocked-silently", image=frame, large=frame)
        site.add_work(ARTIST, 3, "also-blocked", image=frame, large=frame)
        site.add_work(ARTIST, 4, "a-painting", image=jpeg_bytes(4))
        summary = scrape(ScrapeOptions(ARTIST, tmp_path / "b", base_url=site.url, http=fast(tmp_path), progress=False))
    assert summary.kept_new == 1 and dict(summary.reasons[Outcome.FAILED]) == {"placeholder image": 2}
    assert summary.count(Outcome.DUPLICATE) == 0  # not "kept once, the rest duplicates"
    kept = [json.loads(line)["id"] for line in (tmp_path / "b" / "manifest.jsonl").read_text().splitlines()]
    assert kept == ["4"]


# ------------------------------------------------------------------ a bad listing row, several artists


def test_a_listing_row_without_an_id_is_skipped_and_counted(site, tmp_path):
    site.listings[ARTIST].append({**site.listings[ARTIST][0], "contentId": ""})
    site.listings[ARTIST].append("not an object")
    summary = scrape(ScrapeOptions(ARTIST, tmp_path / "a", base_url=site.url, http=fast(tmp_path), progress=False))
    assert summary.kept_new == 1 and summary.skipped_rows == 2
    assert "listing rows skipped (no id) 2" in summary.lines()[0]


def test_several_artists_in_one_run_each_get_their_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with FakeWikiArt() as site:
        site.add_artist(ARTIST, "Claude Monet")
        site.add_work(ARTIST, 1, "impression-sunrise", image=jpeg_bytes(1))
        site.add_artist("berthe-morisot", "Berthe Morisot")
        site.add_work("berthe-morisot", 2, "the-cradle", image=jpeg_bytes(2))
        code = main(["--artist", ARTIST, "--artist", "berthe-morisot", "--out", str(tmp_path / "raw"), "--base-url", site.url, *FAST_FLAGS])
    assert code == 0
    for artist, work_id in ((ARTIST, "1"), ("berthe-morisot", "2")):
        rows = (tmp_path / "raw" / artist / "manifest.jsonl").read_text().splitlines()
        assert [json.loads(r)["id"] for r in rows] == [work_id]
    assert list((tmp_path / "cache" / "atelier").glob("ratelimit-*"))  # the shared state lives in the cache


def test_a_path_as_one_of_several_artists_is_refused(tmp_path, capsys):
    code = main(["--artist", ARTIST, "--artist", "../escape", "--out", str(tmp_path / "raw")])
    assert code == 2 and "not a WikiArt slug" in capsys.readouterr().err
    assert not (tmp_path / "raw").exists()
