"""WikiArt endpoints and defensive parsing into typed records.

WikiArt publishes no stable API contract and its JSON shapes have changed before, so every
field is read through small helpers that accept the shapes seen in the wild (numbers as
numbers or strings, null, lists or comma strings) and a wrong top-level shape is a
:class:`SchemaError` with a one-line message naming the endpoint.

Ids stay strings end to end: ``contentId`` values exceed 2**53, so JSON is parsed with
``parse_int=str`` and no id ever passes through a float.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from .http import Fetched, PoliteClient, RedirectedToErrorPage

DEFAULT_BASE_URL = "https://www.wikiart.org"

log = logging.getLogger(__name__)


class SchemaError(ValueError):
    """An answer whose shape is not what the scraper understands."""


class UnknownArtist(SchemaError):
    """WikiArt does not know the artist slug the user gave (bad input, not a server fault)."""


@dataclass(frozen=True)
class WorkSummary:
    """One row of an artist's work list."""

    id: str
    title: str
    artist_name: str
    year: int | None
    image_url: str | None
    width: int | None = None
    height: int | None = None
    artist_url: str | None = None  # present in v2 rows; v1 rows need the details call
    url: str | None = None  # the work's slug


@dataclass(frozen=True)
class WorkDetails:
    """What ``ImageJson/{id}`` adds: the slugs that locate the work page, style and genre."""

    id: str
    artist_url: str | None
    url: str | None
    title: str | None
    year: int | None
    style: str | None
    genre: str | None
    image_url: str | None


@dataclass(frozen=True)
class ArtistRecord:
    """The artist page's JSON: names and the raw ``/Date(ms)/`` life dates."""

    name: str | None
    url: str | None
    birth_day: str | None
    death_day: str | None
    content_id: str | None


def parse_json(body: bytes | str, what: str) -> Any:
    """Parse JSON keeping every integer as its decimal string (ids exceed 2**53)."""
    try:
        return json.loads(body, parse_int=str)
    except (ValueError, UnicodeDecodeError) as exc:
        raise SchemaError(f"{what}: answer is not JSON ({exc.__class__.__name__}: {str(exc)[:80]})") from None


class WikiArtClient:
    """The keyless WikiArt JSON endpoints and the HTML work page."""

    skipped_rows = 0  # listing rows without a usable id, over this client's listings

    def __init__(self, http: PoliteClient, base_url: str = DEFAULT_BASE_URL):
        self.http = http
        self.base_url = base_url.rstrip("/")

    def _url(self, path: str, query: dict[str, str] | None = None) -> str:
        return self.base_url + path + ("?" + urlencode(query) if query else "")

    def _json(self, url: str, what: str) -> Any:
        fetched: Fetched = self.http.get(url, budget="api", expect="json")
        return parse_json(fetched.body, what)

    def list_works(self, artist_slug: str) -> list[WorkSummary]:
        """Every work of one artist (the endpoint returns the whole list, no pagination)."""
        url = self._url("/en/App/Painting/PaintingsByArtist", {"artistUrl": artist_slug, "json": "2"})
        try:
            data = self._json(url, f"work list of {artist_slug!r}")
        except RedirectedToErrorPage as exc:  # how WikiArt answers a slug it does not know
            raise UnknownArtist(
                f"no WikiArt artist {artist_slug!r} (its work list redirects to an error page): --artist is the "
                f"last part of the artist's page URL, e.g. claude-monet for https://www.wikiart.org/en/claude-monet"
            ) from exc
        if not isinstance(data, list):
            raise SchemaError(f"work list of {artist_slug!r}: expected a JSON array, got {type(data).__name__}")
        works, skipped = parse_work_rows(data, f"work list of {artist_slug!r}")
        self.skipped_rows += skipped
        return works

    def work_details(self, content_id: str) -> WorkDetails:
        url = self._url(f"/en/App/Painting/ImageJson/{quote(content_id, safe='')}")
        data = self._json(url, f"details of work {content_id}")
        return parse_work_details(data, content_id)

    def artist(self, artist_slug: str) -> ArtistRecord:
        url = self._url(f"/en/{quote(artist_slug, safe='')}", {"json": "2"})
        data = self._json(url, f"artist {artist_slug!r}")
        return parse_artist(data, artist_slug)

    def work_page_url(self, artist_url: str, work_url: str) -> str:
        return self._url(f"/en/{quote(artist_url, safe='')}/{quote(work_url, safe='')}")

    def work_page(self, artist_url: str, work_url: str) -> str:
        """The work's HTML page (it carries the authoritative copyright label)."""
        fetched = self.http.get(self.work_page_url(artist_url, work_url), budget="api", expect="html")
        return fetched.text()


def parse_work_rows(rows: list, what: str) -> tuple[list[WorkSummary], int]:
    """The works of a listing, and how many rows were skipped (not an object, or no id).

    One broken row must not cost the whole listing: it is skipped, counted and logged.
    """
    works, skipped = [], 0
    for row in rows:
        try:
            works.append(parse_work_summary(row, what))
        except SchemaError as exc:
            skipped += 1
            log.warning("skipping a listing row: %s", exc)
    return works, skipped


def parse_work_summary(row: Any, what: str) -> WorkSummary:
    if not isinstance(row, dict):
        raise SchemaError(f"{what}: expected objects in the array, got {type(row).__name__}")
    work_id = _id(row.get("contentId", row.get("id")))
    if work_id is None:
        raise SchemaError(f"{what}: a row has no contentId/id")
    return WorkSummary(
        id=work_id,
        title=_text(row.get("title")) or "untitled",
        artist_name=_text(row.get("artistName")) or "",
        year=_year(row.get("completitionYear"), row.get("yearAsString")),
        image_url=_absolute_url(row.get("image")),
        width=_int(row.get("width")),
        height=_int(row.get("height")),
        artist_url=_text(row.get("artistUrl")),
        url=_text(row.get("url")),
    )


def parse_work_details(data: Any, content_id: str) -> WorkDetails:
    if not isinstance(data, dict):
        raise SchemaError(f"details of work {content_id}: expected a JSON object, got {type(data).__name__}")
    returned_id = _id(data.get("contentId", data.get("id")))
    if returned_id is not None and returned_id != content_id:
        raise SchemaError(f"details of work {content_id}: answer is about work {returned_id}")
    return WorkDetails(
        id=content_id,
        artist_url=_text(data.get("artistUrl")),
        url=_text(data.get("url")),
        title=_text(data.get("title")),
        year=_year(data.get("completitionYear"), data.get("yearAsString")),
        style=_joined(data.get("style", data.get("styles"))),
        genre=_joined(data.get("genre", data.get("genres"))),
        image_url=_absolute_url(data.get("image")),
    )


def parse_artist(data: Any, slug: str) -> ArtistRecord:
    if not isinstance(data, dict):
        raise SchemaError(f"artist {slug!r}: expected a JSON object, got {type(data).__name__}")
    return ArtistRecord(
        name=_text(data.get("artistName")),
        url=_text(data.get("url")),
        birth_day=_text(data.get("birthDay")),
        death_day=_text(data.get("deathDay")),
        content_id=_id(data.get("contentId", data.get("id"))),
    )


# --- field readers: accept the shapes seen in the wild, return None for anything else ---


def _id(value: Any) -> str | None:
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def _text(value: Any) -> str | None:
    if isinstance(value, str):
        value = " ".join(value.split())
        return value or None
    return None


def _int(value: Any) -> int | None:
    if isinstance(value, str):
        try:
            return int(float(value)) if "." in value else int(value)
        except ValueError:
            return None
    if isinstance(value, float):
        return int(value)
    return None


def _year(value: Any, as_string: Any = None) -> int | None:
    year = _int(value)
    if year is None and isinstance(as_string, str):
        digits = "".join(ch if ch.isdigit() else " " for ch in as_string).split()
        year = next((int(d) for d in digits if len(d) == 4), None)
    return year if year is not None and 0 < year < 3000 else None


def _joined(value: Any) -> str | None:
    if isinstance(value, list):
        parts = [_text(v) for v in value]
        return ", ".join(p for p in parts if p) or None
    return _text(value)


def _absolute_url(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    value = value.strip()
    parts = urlsplit(value)
    return value if parts.scheme in ("http", "https") and parts.netloc else None
