"""Public-domain decisions: the artist's death date as a pre-filter, the work page as authority.

WikiArt's own rule is "the author died more than 70 years ago, or (US) the work was published
before the cut-off year". The artist-level rule only decides which works are worth a page
request: a living (or recently dead) artist's recent work cannot be public domain under either
rule, so it is skipped without a request. Every other work is kept only if its page carries
WikiArt's "Public domain" label; when the label cannot be read, the work is left out.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone

from bs4 import BeautifulSoup

# WikiArt marks living artists with .NET's DateTime.MaxValue as their death day.
LIVING_SENTINEL_MS = 253402300799999
PD_YEARS_AFTER_DEATH = 70
US_PUBLICATION_TERM = 95  # US: works published more than 95 years ago (Jan 1 rule)

_DATE_RE = re.compile(r"^/Date\((-?\d+)([+-]\d{4})?\)/$")


class Licence(str, enum.Enum):
    """The label a work page carries (values are what the manifest records)."""

    PUBLIC_DOMAIN = "public-domain"
    COPYRIGHT_PROTECTED = "copyright-protected"
    FAIR_USE = "fair-use"
    UNKNOWN = "unknown"


class Living:
    """Marker for the living-artist sentinel date."""


LIVING = Living()


def parse_wikiart_date(value: str | None) -> date | Living | None:
    """Parse WikiArt's ``/Date(ms)/`` (optionally ``/Date(ms+0100)/``).

    Returns the UTC calendar date, :data:`LIVING` for the living-artist sentinel, or None
    when the value is missing or not in this format.
    """
    if not value:
        return None
    match = _DATE_RE.match(value.strip())
    if not match:
        return None
    ms = int(match.group(1))
    if ms >= LIVING_SENTINEL_MS:
        return LIVING
    try:
        return (datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(milliseconds=ms)).date()
    except OverflowError:
        return None


@dataclass(frozen=True)
class Prefilter:
    """Whether a work deserves a page request, and why not when it does not."""

    candidate: bool
    reason: str


def prefilter_work(death_day: str | None, work_year: int | None, today: date) -> Prefilter:
    """Artist-level pre-filter for one work; only a *negative* answer is final.

    A work is skipped only when neither public-domain route can apply: the artist is alive or
    died within 70 years, *and* the work is known to be too recent for the US publication rule.
    """
    died = parse_wikiart_date(death_day)
    us_cutoff = today.year - US_PUBLICATION_TERM  # works from before this year are PD in the US
    if isinstance(died, date) and today.year - died.year > PD_YEARS_AFTER_DEATH:
        return Prefilter(True, f"artist died {died.year}")
    if died is None:
        return Prefilter(True, "artist death date unknown")
    if work_year is None or work_year < us_cutoff:
        return Prefilter(True, f"work year {work_year or 'unknown'} may predate the US cut-off {us_cutoff}")
    who = "artist is living" if died is LIVING else f"artist died {died.year}"
    return Prefilter(False, f"{who} and the work ({work_year}) is after {us_cutoff - 1}")


def parse_copyright_label(html: str) -> Licence:
    """Read the copyright label from a WikiArt work page.

    The label sits in ``.copyright-wrapper``; public domain shows an element with class
    ``copyright-icon-public-domain`` and the text "Public domain". Anything ambiguous (no
    wrapper, several conflicting labels) is :attr:`Licence.UNKNOWN`.
    """
    soup = BeautifulSoup(html, "html.parser")
    wrappers = soup.select(".copyright-wrapper")
    if not wrappers:
        return Licence.UNKNOWN
    found: set[Licence] = set()
    for wrapper in wrappers:
        text = " ".join(wrapper.get_text(" ").split()).lower()
        if wrapper.select(".copyright-icon-public-domain") or "public domain" in text:
            found.add(Licence.PUBLIC_DOMAIN)
        if "copyright protected" in text or wrapper.select("[class*=copyright-icon-protected]"):
            found.add(Licence.COPYRIGHT_PROTECTED)
        if "fair use" in text or wrapper.select("[class*=fair-use]"):
            found.add(Licence.FAIR_USE)
    return found.pop() if len(found) == 1 else Licence.UNKNOWN
