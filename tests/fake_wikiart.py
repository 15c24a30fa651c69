"""A local stand-in for WikiArt: stdlib ``ThreadingHTTPServer`` with real-shaped JSON and traps.

It serves the endpoints the scraper uses (work list, work details, artist record, work page,
v2 login/paging) and images at absolute URLs on itself. Tests add works with
:meth:`FakeWikiArt.add_work` and arm traps per path: scripted one-shot answers (429 with
Retry-After, 503, the "Free API limit exceeded" 500), truncated bodies, HTML served as an
image, a slow image endpoint, a body dripped one byte at a time. Every request is logged with
its arrival time.
"""

from __future__ import annotations

import io
import json
import struct
import threading
import time
import zlib
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, unquote, urlsplit

from PIL import Image

LIVING_DEATH_DAY = "/Date(253402300799999)/"
LIMIT_EXCEEDED_BODY = b'{"Message":"Free API limit exceeded"}'


def date_ms(year: int, month: int = 6, day: int = 1) -> str:
    """A WikiArt ``/Date(ms)/`` string for a calendar date (negative before 1970)."""
    import datetime as dt

    delta = dt.datetime(year, month, day, tzinfo=dt.timezone.utc) - dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
    return f"/Date({int(delta.total_seconds() * 1000)})/"


def jpeg_bytes(seed: int, size: tuple[int, int] = (24, 16)) -> bytes:
    """A small, valid, distinct JPEG per seed."""
    colour = ((seed * 67) % 256, (seed * 131) % 256, (seed * 29 + 80) % 256)
    img = Image.new("RGB", size, colour)
    img.putpixel((seed % size[0], 0), (255 - colour[0], 0, 0))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def png_bomb(width: int = 100_000, height: int = 100_000) -> bytes:
    """A tiny PNG whose header claims ``width x height`` pixels (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def page_html(label: str | None) -> str:
    """A work page shaped like WikiArt's, with the copyright label in ``.copyright-wrapper``."""
    badges = {
        "public-domain": '<span class="copyright-icon-public-domain"></span><a href="/en/terms-of-use">Public domain</a>',
        "protected": '<span class="copyright-icon-protected"></span><span>Copyright protected</span>',
        "fair-use": '<a class="fair-use-badge" href="/en/terms-of-use#fair-use">Fair Use</a>',
    }
    wrapper = f'<div class="copyright-wrapper">{badges[label]}</div>' if label else ""
    return (
        "<!DOCTYPE html><html><head><title>WikiArt</title></head><body>"
        '<main><article><h3>A painting</h3><div class="wiki-layout-artist-info">'
        f"<ul><li>Style: Impressionism</li></ul>{wrapper}</div></article></main>"
        "<footer>Some works on this site are in the public domain</footer></body></html>"
    )


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)
    truncate_to: int | None = None  # send Content-Length of body but only this many bytes
    delay: float = 0.0
    trickle: float = 0.0  # seconds between single body bytes (a server dripping data inside any read timeout)


class FakeWikiArt:
    """The fake site. Use as a context manager; ``url`` is its base URL."""

    def __init__(self, image_delay: float = 0.0):
        self.artists: dict[str, dict] = {}
        self.listings: dict[str, list[dict]] = {}
        self.details: dict[str, dict] = {}
        self.pages: dict[str, str] = {}
        self.files: dict[str, Reply] = {}
        self.scripts: dict[str, list[Reply]] = {}
        self.always: dict[str, Reply] = {}
        self.requests: list[tuple[float, str]] = []  # (monotonic time, raw request path)
        self.user_agents: set[str] = set()
        self.image_delay = image_delay
        self.v2_keys: dict[str, str] = {}
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> "FakeWikiArt":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    # --- building the site ---

    def add_artist(self, slug: str, name: str, death_day: str | None = date_ms(1926, 12, 5)) -> None:
        self.artists[slug] = {
            "artistName": name,
            "url": slug,
            "birthDay": date_ms(1840, 11, 14),
            "deathDay": death_day,
            "contentId": 211667,
            "wikipediaUrl": f"http://en.wikipedia.org/wiki/{slug}",
            "OriginalArtistName": name,
        }
        self.listings.setdefault(slug, [])

    def add_work(
        self,
        artist: str,
        content_id: int | str,
        slug: str,
        *,
        title: str | None = None,
        year: int | None = 1880,
        label: str | None = "public-domain",
        image: bytes | Reply | None = None,
        large: bytes | Reply | None = None,
        image_name: str | None = None,
    ) -> str:
        """Add a work; returns its original image URL. ``large=None`` makes ``!Large.jpg`` 404."""
        image_path = f"/images/{artist}/{image_name or slug}.jpg"
        image_url = self.url + image_path
        row = {
            "title": title if title is not None else slug.replace("-", " ").title(),
            "contentId": content_id,
            "artistContentId": 211667,
            "artistName": self.artists[artist]["artistName"],
            "completitionYear": year,
            "yearAsString": str(year) if year else "?",
            "width": 24,
            "height": 16,
            "image": image_url,
        }
        self.listings[artist].append(row)
        self.details[str(content_id)] = {
            **row,
            "artistUrl": artist,
            "url": slug,
            "dictionaries": [316, 5431],
            "location": None,
            "period": None,
            "serie": None,
            "genre": "landscape",
            "style": "Impressionism",
            "media": "oil, canvas",
            "sizeX": 63.0,
            "sizeY": 48.0,
            "galleryName": "Musée Marmottan Monet, Paris, France",
            "tags": "",
            "description": None,
        }
        self.pages[f"/en/{artist}/{slug}"] = page_html(label)
        for path, payload in ((image_path, image), (image_path + "!Large.jpg", large)):
            if payload is not None:
                self.files[path] = payload if isinstance(payload, Reply) else Reply(200, payload, "image/jpeg")
        return image_url

    def script(self, path: str, *replies: Reply) -> None:
        """Answer the next requests to ``path`` (decoded, no query) with ``replies``, in order."""
        self.scripts.setdefault(path, []).extend(replies)

    def hits(self, path: str) -> int:
        """How many requests reached ``path`` (decoded, no query)."""
        return sum(1 for _, raw in self.requests if unquote(urlsplit(raw).path) == path)

    # --- answering ---

    def answer(self, raw_path: str, user_agent: str = "") -> Reply:
        parts = urlsplit(raw_path)
        path = unquote(parts.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        with self._lock:
            self.requests.append((time.monotonic(), raw_path))
            self.user_agents.add(user_agent)
            queued = self.scripts.get(path)
            if queued:
                return queued.pop(0)
        if path in self.always:
            return self.always[path]
        if path.startswith("/images/"):
            reply = self.files.get(path, Reply(404, b"<html>not found</html>", "text/html"))
            return Reply(**{**reply.__dict__, "delay": reply.delay + self.image_delay})
        return self._api(path, query)

    def _api(self, path: str, query: dict[str, str]) -> Reply:
        if path == "/en/App/Painting/PaintingsByArtist":
            slug = query.get("artistUrl", "")
            if slug not in self.listings:
                return Reply(302, b"", "text/html", {"Location": "/en/error"})
            return _json(self.listings[slug])
        if path.startswith("/en/App/Painting/ImageJson/"):
            details = self.details.get(path.rsplit("/", 1)[-1])
            return _json(details) if details else Reply(302, b"", "text/html", {"Location": "/en/error"})
        if path == "/en/error":
            return Reply(200, b"<html><body>Page not found</body></html>", "text/html")
        if path == "/en/Api/2/login":
            key = f"session-{len(self.v2_keys)}"
            self.v2_keys[key] = query.get("accessCode", "")
            return _json({"SessionKey": key, "MaxRequestsPerHour": 400, "MaxSessionsPerHour": 10})
        if path == "/en/api/2/PaintingsByArtist":
            return self._v2_page(query)
        segments = path.strip("/").split("/")
        if len(segments) == 2 and segments[0] == "en" and query.get("json") == "2":
            artist = self.artists.get(segments[1])
            return _json(artist) if artist else Reply(404, b"<html>no</html>", "text/html")
        if path in self.pages:
            return Reply(200, self.pages[path].encode(), "text/html; charset=utf-8")
        return Reply(404, b"<html>not found</html>", "text/html")

    def _v2_page(self, query: dict[str, str]) -> Reply:
        if query.get("authSessionKey") not in self.v2_keys:
            return Reply(401, b'{"Message":"unauthorised"}')
        artist = next((slug for slug, a in self.artists.items() if str(a["contentId"]) == query.get("id")), None)
        if artist is None:
            return Reply(404, b'{"Message":"no artist"}')
        # The real token is an opaque, already-encoded string; parse_qs has decoded it once here.
        token = query.get("paginationToken", "start:0")
        if not token.startswith("start:"):
            return Reply(400, b'{"Message":"bad pagination token"}')
        start = int(token.split(":")[1])
        rows = [
            {
                **{k: v for k, v in r.items() if k != "contentId"},
                "id": r["contentId"],
                "url": self.details[str(r["contentId"])]["url"],
                "artistUrl": artist,
            }
            for r in self.listings[artist]
        ]
        page = rows[start : start + V2_PAGE]
        more = start + V2_PAGE < len(rows)
        token = quote(f"start:{start + V2_PAGE}", safe="") if more else None
        return _json({"data": page, "paginationToken": token, "hasMore": more})


V2_PAGE = 2  # small pages so tests exercise paging (WikiArt uses 60)


def _json(data) -> Reply:
    return Reply(200, json.dumps(data, ensure_ascii=False).encode("utf-8"))


def _make_handler(site: FakeWikiArt):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802 (http.server naming)
            reply = site.answer(self.path, self.headers.get("User-Agent", ""))
            if reply.delay:
                time.sleep(reply.delay)
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(reply.body)))
            for key, value in reply.headers.items():
                self.send_header(key, value)
            if reply.truncate_to is not None:
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            body = reply.body if reply.truncate_to is None else reply.body[: reply.truncate_to]
            try:
                if reply.trickle:
                    for i in range(len(body)):
                        self.wfile.write(body[i : i + 1])
                        self.wfile.flush()
                        time.sleep(reply.trickle)
                else:
                    self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass

        def log_message(self, *args) -> None:  # keep test output quiet
            pass

    return Handler
