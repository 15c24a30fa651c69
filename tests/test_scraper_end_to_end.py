"""The whole scrape stage against the local fake WikiArt: every trap, resume, kill and resume."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from fake_wikiart import LIMIT_EXCEEDED_BODY, LIVING_DEATH_DAY, FakeWikiArt, Reply, jpeg_bytes, page_html, png_bomb

from scraping.__main__ import main
from scraping.http import HttpSettings, RateLimit
from scraping.scrape import Outcome, ScrapeOptions, scrape

REPO = Path(__file__).resolve().parents[1]
FAST = HttpSettings(api_rate=RateLimit(1000, 1.0), image_rate=RateLimit(1000, 1.0), max_retries=2, backoff_base=0.01)
FAST_FLAGS = ["--api-rate", "1000/1", "--image-rate", "1000/1", "--backoff", "0.01", "--retries", "2", "--no-progress"]
ARTIST = "claude-monet"


def run(site: FakeWikiArt, out: Path, **kw):
    return scrape(ScrapeOptions(ARTIST, out, base_url=site.url, http=FAST, progress=False, **kw))


def rows(out: Path, name: str = "manifest.jsonl") -> list[dict]:
    return [json.loads(line) for line in (out / name).read_text().splitlines()]


def rejected(out: Path) -> list[tuple[str, str, str]]:
    return [(r["id"], r["outcome"], r["reason"]) for r in rows(out, "rejected.jsonl")]


def hits_since(site: FakeWikiArt, start: int, path: str) -> int:
    """Requests to ``path`` (decoded, no query) among the site's requests from index ``start`` on."""
    return sum(1 for _, raw in site.requests[start:] if unquote(urlsplit(raw).path) == path)


# The trap site's final rejections: two labelled works and the duplicate image.
TRAP_REJECTED = [
    ("3", "not public domain", "labelled copyright-protected"),
    ("4", "not public domain", "labelled fair-use"),
    ("12", "duplicate", "same file as an earlier work"),
]


def build_trap_site(site: FakeWikiArt) -> None:
    site.add_artist(ARTIST, "Claude Monet")
    site.add_work(ARTIST, 9007199254740993, "impression-sunrise", image=jpeg_bytes(1), large=jpeg_bytes(101))
    site.add_work(
        ARTIST, "577271cfedcba8d5e3a7b2f1", "la-gare-saint-lazare", image=jpeg_bytes(2), image_name="la-gare-saint-lazare-été"
    )  # diacritics; no !Large.jpg -> original
    site.add_work(ARTIST, 3, "protected-work", label="protected", image=jpeg_bytes(3))
    site.add_work(ARTIST, 4, "fair-use-work", label="fair-use", image=jpeg_bytes(4))
    site.add_work(ARTIST, 5, "no-label-work", label=None, image=jpeg_bytes(5))
    site.add_work(ARTIST, 6, "blocked-work", image=jpeg_bytes(6), image_name="FRAME-600x480")
    site.add_work(ARTIST, 7, "html-work", image=Reply(200, b"<!DOCTYPE html><html>error</html>", "text/html"))
    site.add_work(ARTIST, 8, "html-as-jpeg", image=Reply(200, b"<html><body>oops</body></html>", "image/jpeg"))
    site.add_work(ARTIST, 9, "bomb-work", image=Reply(200, png_bomb(), "image/png"))
    data = jpeg_bytes(10)
    site.add_work(ARTIST, 10, "cut-work", image=Reply(200, data, "image/jpeg", truncate_to=len(data) // 2))
    site.add_work(ARTIST, 11, "corrupt-work", image=jpeg_bytes(11)[:-200])  # server-side broken file
    site.add_work(ARTIST, 12, "duplicate-work", image=jpeg_bytes(1), large=jpeg_bytes(101))
    site.add_work(ARTIST, 13, "../../../evil", title="../../etc/passwd", image=jpeg_bytes(13), image_name="evil")
    site.add_work(ARTIST, 14, "flaky-work", image=jpeg_bytes(14))
    site.script(f"/images/{ARTIST}/flaky-work.jpg", Reply(503, b"busy", "text/plain"))
    site.add_work(ARTIST, 15, "no-details-work", image=jpeg_bytes(15))
    del site.details["15"]  # details redirect to the HTML error page


def test_full_run_keeps_only_verified_public_domain_works(tmp_path):
    out = tmp_path / "raw"
    with FakeWikiArt() as site:
        build_trap_site(site)
        summary = run(site, out)
        image_hits = {w: site.hits(f"/images/{ARTIST}/{w}.jpg") for w in ("protected-work", "fair-use-work", "no-label-work")}
        site_url = site.url

    kept = rows(out)
    assert [r["id"] for r in kept] == ["9007199254740993", "577271cfedcba8d5e3a7b2f1", "13", "14"]
    by_id = {r["id"]: r for r in kept}
    assert by_id["9007199254740993"]["image_url"].endswith("impression-sunrise.jpg!Large.jpg")
    assert by_id["577271cfedcba8d5e3a7b2f1"]["image_url"].endswith("la-gare-saint-lazare-%C3%A9t%C3%A9.jpg")
    for row in kept:
        path = (out / row["file"]).resolve()
        assert path.parent == (out / "images").resolve()
        assert hashlib.sha256(path.read_bytes()).hexdigest() == row["sha256"]
        assert (row["width"], row["height"], row["license"]) == (24, 16, "public-domain")
        assert {"artist", "title", "year", "style", "genre", "source_url"} <= row.keys()
    assert by_id["13"]["title"] == "../../etc/passwd"  # kept as data, never as a path

    # Nothing outside out/, nothing half-written inside it.
    all_files = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()}
    assert all_files == {"raw/manifest.jsonl", "raw/rejected.jsonl"} | {f"raw/{r['file']}" for r in kept}
    # Only final rejections are recorded: no failures, no unreadable labels.
    assert rejected(out) == TRAP_REJECTED
    sidecar = {r["id"]: r for r in rows(out, "rejected.jsonl")}
    assert sidecar["3"]["source_url"] == f"{site_url}/en/{ARTIST}/protected-work"
    assert sidecar["12"]["source_url"] == f"{site_url}/en/{ARTIST}/duplicate-work"

    reasons = summary.reasons
    assert reasons[Outcome.NOT_PUBLIC_DOMAIN] == {"labelled copyright-protected": 1, "labelled fair-use": 1}
    assert reasons[Outcome.UNKNOWN_LICENCE] == {
        "no readable copyright label on the work page": 1,
        "details unavailable (redirected to an error page)": 1,
    }
    assert reasons[Outcome.FAILED] == {
        "placeholder image": 1,
        "not an image": 2,
        "decompression bomb": 1,
        "truncated download": 1,
        "corrupt or truncated image": 1,
    }
    assert reasons[Outcome.DUPLICATE] == {"same file as an earlier work": 1}
    assert image_hits == {"protected-work": 0, "fair-use-work": 0, "no-label-work": 0}
    assert summary.kept_total == 4 and summary.listed == 15


def test_rerun_requests_nothing_already_kept_or_rejected(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="scraping")
    out = tmp_path / "raw"
    with FakeWikiArt() as site:
        build_trap_site(site)
        run(site, out)
        first = (out / "manifest.jsonl").read_bytes()
        first_rejected = (out / "rejected.jsonl").read_bytes()
        with open(out / "rejected.jsonl", "a") as fh:
            fh.write('{"id": "7", "tit')  # what a kill mid-append leaves
        before = len(site.requests)
        summary = run(site, out)
        second_run = [raw for _, raw in site.requests[before:]]
        rejected_hits = {
            path: hits_since(site, before, path)
            for path in (
                "/en/App/Painting/ImageJson/3",
                f"/en/{ARTIST}/protected-work",
                "/en/App/Painting/ImageJson/4",
                f"/en/{ARTIST}/fair-use-work",
                "/en/App/Painting/ImageJson/12",
                f"/en/{ARTIST}/duplicate-work",
                f"/images/{ARTIST}/duplicate-work.jpg",
                f"/images/{ARTIST}/duplicate-work.jpg!Large.jpg",
            )
        }
        retried = {
            path: hits_since(site, before, path)
            for path in (
                "/en/App/Painting/ImageJson/15",  # unknown licence: details unavailable
                f"/en/{ARTIST}/no-label-work",  # unknown licence: no readable label
                f"/images/{ARTIST}/html-work.jpg",
            )
        }  # failed: not an image
    assert (out / "manifest.jsonl").read_bytes() == first
    assert (out / "rejected.jsonl").read_bytes() == first_rejected  # torn tail cut, nothing added
    assert summary.kept_new == 0 and summary.already_kept == 4
    for kept in ("impression-sunrise", "la-gare-saint-lazare", "evil", "flaky-work"):
        assert not any(kept in raw and raw.startswith("/images/") for raw in second_run)
    assert not any("ImageJson/9007199254740993" in raw for raw in second_run)
    assert rejected_hits == dict.fromkeys(rejected_hits, 0)
    assert all(n >= 1 for n in retried.values()), retried
    assert summary.already_rejected == 3
    assert summary.count(Outcome.NOT_PUBLIC_DOMAIN) == 0 and summary.count(Outcome.DUPLICATE) == 0
    assert summary.count(Outcome.FAILED) == 6 and summary.count(Outcome.UNKNOWN_LICENCE) == 2
    assert "15 works listed, 4 already kept, 3 rejected earlier, 8 to check" in caplog.text
    assert "rejected earlier 3" in summary.lines()[0]


def test_recheck_rejected_asks_again_and_rebuilds_the_record(tmp_path):
    out = tmp_path / "raw"
    with FakeWikiArt() as site:
        build_trap_site(site)
        run(site, out)
        site.pages[f"/en/{ARTIST}/protected-work"] = page_html("public-domain")  # WikiArt relabelled it
        before = len(site.requests)
        code = main(["--artist", ARTIST, "--out", str(out), "--base-url", site.url, "--recheck-rejected", *FAST_FLAGS])
        rechecked = {
            path: hits_since(site, before, path)
            for path in (
                f"/en/{ARTIST}/protected-work",
                f"/en/{ARTIST}/fair-use-work",
                "/en/App/Painting/ImageJson/12",
                f"/images/{ARTIST}/duplicate-work.jpg!Large.jpg",
            )
        }
    assert code == 0
    assert all(n == 1 for n in rechecked.values()), rechecked
    assert [r["id"] for r in rows(out)] == ["9007199254740993", "577271cfedcba8d5e3a7b2f1", "13", "14", "3"]
    # One row per work still rejected; the relabelled work's row is gone.
    assert rejected(out) == [TRAP_REJECTED[1], TRAP_REJECTED[2]]


def test_failed_work_is_retried_by_the_next_run(tmp_path):
    with FakeWikiArt() as site:
        site.add_artist(ARTIST, "Claude Monet")
        site.add_work(ARTIST, 1, "steady", image=jpeg_bytes(1))
        site.add_work(ARTIST, 2, "busy-server", image=jpeg_bytes(2))
        # More 503s than FAST's retries: the first run gives up on this image.
        site.script(f"/images/{ARTIST}/busy-server.jpg", *[Reply(503, b"busy", "text/plain")] * 3)
        first = run(site, tmp_path)
        assert first.reasons[Outcome.FAILED] == {"HTTP 503": 1}
        assert rejected(tmp_path) == []
        before = len(site.requests)
        second = run(site, tmp_path)
        assert hits_since(site, before, "/en/App/Painting/ImageJson/2") == 1
        assert hits_since(site, before, "/en/App/Painting/ImageJson/1") == 0
    assert second.kept_new == 1 and second.already_rejected == 0
    assert [r["id"] for r in rows(tmp_path)] == ["1", "2"]


def test_limit_option_stops_after_n_kept(tmp_path):
    with FakeWikiArt() as site:
        build_trap_site(site)
        summary = run(site, tmp_path, limit=2)
    assert [r["id"] for r in rows(tmp_path)] == ["9007199254740993", "577271cfedcba8d5e3a7b2f1"]
    assert summary.kept_total == 2
    assert not list((tmp_path / "images").glob("*.part"))


def test_living_artist_recent_works_skip_the_page(tmp_path):
    with FakeWikiArt() as site:
        site.add_artist(ARTIST, "Someone Alive", death_day=LIVING_DEATH_DAY)
        site.add_work(ARTIST, 1, "recent", year=2001, image=jpeg_bytes(1))
        site.add_work(ARTIST, 2, "early-public-domain", year=1920, image=jpeg_bytes(2))
        summary = run(site, tmp_path)
        assert site.hits(f"/en/{ARTIST}/recent") == 0
    assert [r["id"] for r in rows(tmp_path)] == ["2"]
    assert summary.count(Outcome.NOT_PUBLIC_DOMAIN) == 1


def test_artist_without_public_domain_works_exits_zero_with_message(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    with FakeWikiArt() as site:
        site.add_artist(ARTIST, "Claude Monet")
        site.add_work(ARTIST, 1, "a", label="protected", image=jpeg_bytes(1))
        site.add_work(ARTIST, 2, "b", label="fair-use", image=jpeg_bytes(2))
        code = main(["--artist", ARTIST, "--out", str(tmp_path), "--base-url", site.url, *FAST_FLAGS])
    assert code == 0
    assert "no public-domain works found" in caplog.text
    assert (tmp_path / "manifest.jsonl").read_text() == ""


def test_quota_500_stops_the_run_with_a_clear_message(tmp_path, caplog, capsys):
    caplog.set_level(logging.INFO)
    with FakeWikiArt() as site:
        build_trap_site(site)
        for work_id in site.details:
            site.always[f"/en/App/Painting/ImageJson/{work_id}"] = Reply(500, LIMIT_EXCEEDED_BODY)
        code = main(["--artist", ARTIST, "--out", str(tmp_path), "--base-url", site.url, *FAST_FLAGS])
        detail_hits = [site.hits(f"/en/App/Painting/ImageJson/{w}") for w in site.details]
    assert code == 3
    err = capsys.readouterr().err
    assert "Free API limit exceeded" in err and "run the same command again" in err
    assert max(detail_hits) == 1, "the quota answer must never be retried"
    assert sum(detail_hits) <= 4 * 2, "workers must stop instead of working through the list"


def test_unknown_artist_is_a_one_line_error_and_leaves_no_empty_folders(tmp_path, caplog, capsys):
    fresh = tmp_path / "new" / "raw"
    kept = tmp_path / "existing"
    kept.mkdir()
    (kept / "notes.txt").write_text("mine")
    with FakeWikiArt() as site:
        codes = [main(["--artist", "nobody", "--out", str(out), "--base-url", site.url, *FAST_FLAGS]) for out in (fresh, kept)]
    assert codes == [2, 2]
    err = capsys.readouterr().err
    assert err.count("atelier scrape: error: ") == 2 and len(err.strip().splitlines()) == 2
    assert "no WikiArt artist 'nobody' (its work list redirects to an error page)" in err
    assert "--artist is the last part of the artist's page URL" in err
    # Folders the failed run made are gone; what was there before stays.
    assert not (tmp_path / "new").exists()
    assert sorted(p.name for p in kept.iterdir()) == ["notes.txt"]


def test_quota_before_the_listing_leaves_no_empty_folders(tmp_path):
    with FakeWikiArt() as site:
        site.add_artist(ARTIST, "Claude Monet")
        site.always["/en/App/Painting/PaintingsByArtist"] = Reply(500, LIMIT_EXCEEDED_BODY)
        code = main(["--artist", ARTIST, "--out", str(tmp_path / "raw"), "--base-url", site.url, *FAST_FLAGS])
    assert code == 3
    assert list(tmp_path.iterdir()) == []


def test_v2_api_listing_follows_pagination_tokens(tmp_path, monkeypatch):
    monkeypatch.setenv("WIKIART_ACCESS_CODE", "access")
    monkeypatch.setenv("WIKIART_SECRET_CODE", "secret")
    with FakeWikiArt() as site:
        site.add_artist(ARTIST, "Claude Monet")
        for i in range(5):
            site.add_work(ARTIST, f"57726d7fedc2cb3880b4{i:04d}", f"work-{i}", image=jpeg_bytes(i))
        code = main(["--artist", ARTIST, "--out", str(tmp_path), "--base-url", site.url, "--v2", *FAST_FLAGS])
        pages = site.hits("/en/api/2/PaintingsByArtist")
        v1_listing = site.hits("/en/App/Painting/PaintingsByArtist")
    assert code == 0
    assert pages == 3 and v1_listing == 0  # 5 works, 2 per page in the fake
    assert [r["id"] for r in rows(tmp_path)] == [f"57726d7fedc2cb3880b4{i:04d}" for i in range(5)]


def _cli(site: FakeWikiArt, out: Path) -> list[str]:
    return [sys.executable, "-m", "scraping", "--artist", ARTIST, "--out", str(out), "--base-url", site.url, "--workers", "2", *FAST_FLAGS]


@pytest.mark.slow
def test_sigkill_then_resume_equals_uninterrupted_run(tmp_path):
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with FakeWikiArt(image_delay=0.25) as site:
        site.add_artist(ARTIST, "Claude Monet")
        for i in range(12):
            site.add_work(ARTIST, 9007199254740993 + i, f"work-{i}", image=jpeg_bytes(i), large=jpeg_bytes(100 + i) if i % 3 else None)
            if i == 0:  # recorded as rejected before the kill (work-2 is committed by then)
                site.add_work(ARTIST, 97, "protected-early", label="protected", image=jpeg_bytes(97))
            if i == 7:
                site.add_work(ARTIST, 98, "copy-of-work-1", image=jpeg_bytes(1), large=jpeg_bytes(101))
        site.add_work(ARTIST, 99, "protected", label="protected", image=jpeg_bytes(99))

        proc = subprocess.Popen(_cli(site, killed), cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        manifest = killed / "manifest.jsonl"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and proc.poll() is None:
            if manifest.exists() and manifest.read_text().count("\n") >= 3:
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the run finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        partial = manifest.read_text().count("\n")
        assert 3 <= partial < 12
        assert rejected(killed)[:1] == [("97", "not public domain", "labelled copyright-protected")]

        site.image_delay = 0.0
        subprocess.run(_cli(site, killed), cwd=REPO, env=env, check=True, capture_output=True, timeout=60)
        before = len(site.requests)
        subprocess.run(_cli(site, clean), cwd=REPO, env=env, check=True, capture_output=True, timeout=60)
        assert len(site.requests) > before

    assert (killed / "manifest.jsonl").read_bytes() == (clean / "manifest.jsonl").read_bytes()
    assert len(rows(clean)) == 12
    assert (killed / "rejected.jsonl").read_bytes() == (clean / "rejected.jsonl").read_bytes()
    assert [r[:2] for r in rejected(clean)] == [("97", "not public domain"), ("98", "duplicate"), ("99", "not public domain")]

    def tree(root: Path) -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in (root / "images").iterdir()}

    assert tree(killed) == tree(clean)


def test_ctrl_c_is_one_line_and_leaves_no_temp_files(tmp_path, monkeypatch, caplog, capsys):
    import scraping.scrape as scrape_module

    real_commit, commits = scrape_module._commit, []

    def commit_then_ctrl_c(result, records, summary):
        commits.append(result.work.id)
        if len(commits) == 2:  # Ctrl-C with the second work's verified temp file not yet renamed
            raise KeyboardInterrupt
        real_commit(result, records, summary)

    monkeypatch.setattr(scrape_module, "_commit", commit_then_ctrl_c)
    with FakeWikiArt() as site:
        site.add_artist(ARTIST, "Claude Monet")
        for i in range(1, 7):
            site.add_work(ARTIST, i, f"work-{i}", image=jpeg_bytes(i))
        code = main(["--artist", ARTIST, "--out", str(tmp_path), "--base-url", site.url, "--workers", "2", *FAST_FLAGS])
    assert code == 130
    assert f"interrupted: 1 works kept in {tmp_path}; run the same command again" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "images").iterdir()] == ["claude-monet_work-1_1.jpg"]


def test_leftovers_of_a_kill_are_removed_at_start(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    (tmp_path / "manifest.jsonl").write_text("")  # opened by the killed run before its first file
    (images / "claude-monet_work-0_1.jpg.part").write_bytes(b"half")
    (images / "claude-monet_work-9_9.jpg").write_bytes(jpeg_bytes(9))  # renamed, row never written
    with FakeWikiArt() as site:
        site.add_artist(ARTIST, "Claude Monet")
        site.add_work(ARTIST, 1, "work-0", image=jpeg_bytes(0))
        run(site, tmp_path)
    assert sorted(p.name for p in images.iterdir()) == ["claude-monet_work-0_1.jpg"]
    assert [r["file"] for r in rows(tmp_path)] == ["images/claude-monet_work-0_1.jpg"]


def test_hostile_image_answers_fail_their_work_not_the_run(tmp_path):
    with FakeWikiArt() as site:
        site.add_artist(ARTIST, "Claude Monet")
        site.add_work(ARTIST, 1, "first", image=jpeg_bytes(1))
        site.add_work(ARTIST, 2, "to-file", image=Reply(302, b"", "text/html", {"Location": "file:///etc/passwd"}))
        site.add_work(ARTIST, 3, "bad-gzip", image=Reply(200, b"not gzip", "image/jpeg", {"Content-Encoding": "gzip"}))
        site.add_work(ARTIST, 4, "bad-host", image=jpeg_bytes(4))
        bad_host = "http://" + "é" * 70 + ".example/a.jpg"  # IDNA refuses a 70-character label
        site.listings[ARTIST][3]["image"] = site.details["4"]["image"] = bad_host
        site.add_work(ARTIST, 5, "last", image=jpeg_bytes(5))
        summary = run(site, tmp_path)
    assert [r["id"] for r in rows(tmp_path)] == ["1", "5"]
    assert summary.reasons[Outcome.FAILED] == {"redirected off http(s)": 1, "network error": 1, "bad image URL": 1}


def test_ids_that_sanitise_alike_keep_separate_files(tmp_path):
    with FakeWikiArt() as site:
        site.add_artist(ARTIST, "Claude Monet")
        site.add_work(ARTIST, "A" * 45 + "1", "same", image=jpeg_bytes(1), image_name="one")
        site.add_work(ARTIST, "a" * 45 + "2", "same", image=jpeg_bytes(2), image_name="two")
        run(site, tmp_path)
    kept = rows(tmp_path)
    assert len(kept) == 2 and kept[0]["file"] != kept[1]["file"]
    for row in kept:
        assert hashlib.sha256((tmp_path / row["file"]).read_bytes()).hexdigest() == row["sha256"]


def test_v2_secrets_never_reach_the_log(tmp_path, monkeypatch, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("WIKIART_ACCESS_CODE", "access-XYZ")
    monkeypatch.setenv("WIKIART_SECRET_CODE", "secret-XYZ")
    with FakeWikiArt() as site:
        site.add_artist(ARTIST, "Claude Monet")
        site.script("/en/Api/2/login", Reply(503, b"busy", "text/plain"), Reply(401, b'{"Message":"bad key"}'))
        code = main(["--artist", ARTIST, "--out", str(tmp_path), "--base-url", site.url, "--v2", "-v", *FAST_FLAGS])
        site.add_work(ARTIST, 1, "work-1", image=jpeg_bytes(1))
        site.script("/en/api/2/PaintingsByArtist", Reply(503, b"busy", "text/plain"))
        assert main(["--artist", ARTIST, "--out", str(tmp_path), "--base-url", site.url, "--v2", "-v", *FAST_FLAGS]) == 0
    assert code == 3 and "HTTP 401" in capsys.readouterr().err and "retrying" in caplog.text
    for secret in ("access-XYZ", "secret-XYZ", "session-0", "session-1"):
        assert secret not in caplog.text


def test_foreign_images_folder_is_refused_not_emptied(tmp_path, caplog, capsys):
    # No manifest.jsonl: no run of ours ever committed here (a run opens it before its first file).
    images = tmp_path / "images"
    images.mkdir()
    (images / "holiday.jpg").write_bytes(jpeg_bytes(1))
    with FakeWikiArt() as site:
        site.add_artist(ARTIST, "Claude Monet")
        site.add_work(ARTIST, 1, "work-0", image=jpeg_bytes(0))
        code = main(["--artist", ARTIST, "--out", str(tmp_path), "--base-url", site.url, *FAST_FLAGS])
    assert code == 2
    assert "holds 1 file(s) no manifest.jsonl names" in capsys.readouterr().err
    assert [p.name for p in tmp_path.rglob("*")] == ["images", "holiday.jpg"]


def test_geo_block_placeholder_behind_a_redirect_is_never_kept(tmp_path):
    with FakeWikiArt() as site:
        site.add_artist(ARTIST, "Claude Monet")
        site.files["/images/FRAME-600x480.jpg"] = Reply(200, jpeg_bytes(60), "image/jpeg")
        to_frame = Reply(302, b"", "text/html", {"Location": "/images/FRAME-600x480.jpg"})
        site.add_work(ARTIST, 1, "blocked", image=to_frame, large=to_frame)
        site.add_work(ARTIST, 2, "visible", image=jpeg_bytes(2))
        summary = run(site, tmp_path)
        original_hits = site.hits(f"/images/{ARTIST}/blocked.jpg")
    assert [r["id"] for r in rows(tmp_path)] == ["2"]
    assert summary.reasons[Outcome.FAILED] == {"placeholder image": 1}
    assert original_hits == 0  # blocked at one size means blocked at all: not asked twice
