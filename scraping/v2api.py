"""WikiArt's keyed v2 API, for users who have an access/secret code pair.

Login gives a session key; ``PaintingsByArtist`` then pages through an artist's works 60 at a
time. The ``paginationToken`` it returns is already percent-encoded, so it is appended to the
next URL verbatim (encoding it again breaks paging). Keyed accounts get a larger hourly quota
than the keyless endpoints; the rest of the pipeline (details, work page, images) is the same.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import quote, urlencode

from .http import PoliteClient
from .wikiart import SchemaError, WorkSummary, parse_json, parse_work_rows

ACCESS_ENV = "WIKIART_ACCESS_CODE"
SECRET_ENV = "WIKIART_SECRET_CODE"
MAX_PAGES = 10_000  # a server that always says hasMore must not loop forever


@dataclass(frozen=True)
class V2Credentials:
    access_code: str
    secret_code: str

    def __repr__(self) -> str:  # keep secrets out of logs and tracebacks
        return "V2Credentials(access_code=***, secret_code=***)"

    @classmethod
    def from_env(cls) -> "V2Credentials | None":
        access, secret = os.environ.get(ACCESS_ENV), os.environ.get(SECRET_ENV)
        return cls(access, secret) if access and secret else None


class V2Client:
    """Login once, then list an artist's works page by page."""

    def __init__(self, http: PoliteClient, base_url: str, credentials: V2Credentials):
        self.http = http
        self.base_url = base_url.rstrip("/")
        self.credentials = credentials
        self._session_key: str | None = None

    def login(self) -> str:
        query = urlencode({"accessCode": self.credentials.access_code, "secretCode": self.credentials.secret_code})
        fetched = self.http.get(f"{self.base_url}/en/Api/2/login?{query}", budget="api", expect="json")
        data = parse_json(fetched.body, "v2 login")
        key = data.get("SessionKey") if isinstance(data, dict) else None
        if not isinstance(key, str) or not key:
            raise SchemaError("v2 login: no SessionKey in the answer (wrong access/secret code?)")
        self._session_key = key
        return key

    skipped_rows = 0  # listing rows without a usable id

    def list_works(self, artist_id: str) -> list[WorkSummary]:
        """Every page of ``PaintingsByArtist`` for one artist id."""
        key = self._session_key or self.login()
        works: list[WorkSummary] = []
        token = ""
        for _ in range(MAX_PAGES):
            url = f"{self.base_url}/en/api/2/PaintingsByArtist?id={quote(artist_id, safe='')}&authSessionKey={quote(key, safe='')}"
            if token:
                url += f"&paginationToken={token}"  # already percent-encoded by the server
            fetched = self.http.get(url, budget="api", expect="json")
            page = parse_json(fetched.body, "v2 PaintingsByArtist")
            if not isinstance(page, dict) or not isinstance(page.get("data"), list):
                raise SchemaError("v2 PaintingsByArtist: expected an object with a 'data' array")
            rows, skipped = parse_work_rows(page["data"], "v2 PaintingsByArtist")
            works.extend(rows)
            self.skipped_rows += skipped
            token = page.get("paginationToken") or ""
            if page.get("hasMore") is not True or not token:
                return works
        raise SchemaError(f"v2 PaintingsByArtist: more than {MAX_PAGES} pages, giving up")
