"""Offline units of the scraper: JSON parsing, licence rules, names, URLs, the manifest."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest
from fake_wikiart import LIVING_DEATH_DAY, date_ms, page_html

from scraping.download import encode_url, image_candidates, is_placeholder
from scraping.licence import LIVING, Licence, parse_copyright_label, parse_wikiart_date, prefilter_work
from scraping.manifest import ManifestError, ManifestRow, ManifestWriter, read_manifest
from scraping.names import image_filename, safe_part
from scraping.wikiart import SchemaError, parse_artist, parse_json, parse_work_details, parse_work_summary

TODAY = date(2025, 6, 1)


def test_huge_numeric_ids_never_pass_through_float():
    body = (
        b'[{"contentId": 9007199254740993, "title": "A", "artistName": "X", "completitionYear": 1872,'
        b' "image": "https://uploads.example/a.jpg", "width": 600, "height": "450"}]'
    )
    rows = [parse_work_summary(r, "t") for r in parse_json(body, "t")]
    assert rows[0].id == "9007199254740993"  # float(…) would give …992
    assert rows[0].year == 1872 and rows[0].width == 600 and rows[0].height == 450


def test_hex_ids_and_defensive_fields():
    row = parse_work_summary(
        {
            "contentId": "577271cfedcba8d5e3a7b2f1",
            "title": None,
            "completitionYear": None,
            "yearAsString": "c.1890",
            "image": "/relative.jpg",
        },
        "t",
    )
    assert row.id == "577271cfedcba8d5e3a7b2f1"
    assert row.title == "untitled" and row.year == 1890
    assert row.image_url is None  # only absolute http(s) URLs are used


def test_schema_errors_are_one_line_and_name_the_endpoint():
    with pytest.raises(SchemaError, match="work list"):
        parse_work_summary("nope", "work list of 'x'")
    with pytest.raises(SchemaError, match="no contentId"):
        parse_work_summary({"title": "x"}, "work list of 'x'")
    with pytest.raises(SchemaError, match="not JSON"):
        parse_json(b"<html>", "work list of 'x'")
    with pytest.raises(SchemaError, match="answer is about work 2"):
        parse_work_details({"contentId": "2"}, "1")


def test_details_and_artist_records():
    details = parse_work_details(
        {
            "contentId": "7",
            "artistUrl": "claude-monet",
            "url": "water-lilies",
            "style": ["Impressionism"],
            "genre": "landscape",
            "completitionYear": "1906",
        },
        "7",
    )
    assert (details.artist_url, details.url, details.style, details.year) == ("claude-monet", "water-lilies", "Impressionism", 1906)
    artist = parse_artist({"artistName": "Claude Monet", "deathDay": "/Date(-1359331200000)/", "contentId": "211667"}, "c")
    assert artist.death_day == "/Date(-1359331200000)/" and artist.content_id == "211667"


def test_wikiart_dates():
    assert parse_wikiart_date(date_ms(1926, 12, 5)) == date(1926, 12, 5)
    assert parse_wikiart_date("/Date(0+0100)/") == date(1970, 1, 1)
    assert parse_wikiart_date(LIVING_DEATH_DAY) is LIVING
    assert parse_wikiart_date(None) is None and parse_wikiart_date("1926") is None


def test_prefilter_skips_only_what_cannot_be_public_domain():
    assert prefilter_work(date_ms(1926), 1880, TODAY).candidate
    assert prefilter_work(None, 2001, TODAY).candidate  # unknown death: let the page decide
    assert prefilter_work(date_ms(1990), 1925, TODAY).candidate  # US publication rule may apply
    assert prefilter_work(LIVING_DEATH_DAY, None, TODAY).candidate  # unknown year: ask the page
    living = prefilter_work(LIVING_DEATH_DAY, 2001, TODAY)
    assert not living.candidate and "living" in living.reason
    assert not prefilter_work(date_ms(1990), 1950, TODAY).candidate


@pytest.mark.parametrize(
    ("label", "expected"),
    [
        ("public-domain", Licence.PUBLIC_DOMAIN),
        ("protected", Licence.COPYRIGHT_PROTECTED),
        ("fair-use", Licence.FAIR_USE),
        (None, Licence.UNKNOWN),
    ],
)
def test_copyright_label_from_work_page(label, expected):
    # The footer of every page mentions "public domain": only the wrapper counts.
    assert parse_copyright_label(page_html(label)) is expected


def test_conflicting_labels_are_unknown():
    html = page_html("public-domain").replace("</main>", '<div class="copyright-wrapper">Copyright protected</div></main>')
    assert parse_copyright_label(html) is Licence.UNKNOWN


@pytest.mark.parametrize(
    "hostile",
    [
        "../../x",
        "..",
        "/etc/passwd",
        "a/../../b",
        "C:\\win\\x",
        "\x00\n..",
        "." * 300,
        "\uff0e\uff0e\uff0fetc",
        "CON",
        "nul.txt",
        "x" * 5000,
        "a\u0301" * 40,
    ],
)
def test_names_never_escape_or_hide(hostile):
    part = safe_part(hostile)
    assert "/" not in part and "\\" not in part and ".." not in part
    assert part and not part.startswith(".") and len(part) <= 60
    name = image_filename(hostile, hostile, "9007199254740993", "JPEG")
    assert Path(name).name == name and ".." not in name and name.endswith("_9007199254740993.jpg")
    # Windows reads "NUL.txt_..." as the NUL device: the part before the first dot must be the whole stem.
    stem = name.split(".")[0]
    assert name == stem + ".jpg" and "_" in stem and len(name) < 255


def test_names_transliterate_and_stay_unique():
    assert safe_part("La Gare Saint-Lazare, été 1877") == "la-gare-saint-lazare-ete-1877"
    assert safe_part("北斎") == "untitled"
    assert image_filename("a", "same", "1", "PNG") != image_filename("a", "same", "2", "PNG")


def test_encode_url_percent_encodes_diacritics_once():
    url = "https://uploads.example/images/claude-monet/la-gare-été.jpg!Large.jpg"
    assert encode_url(url) == "https://uploads.example/images/claude-monet/la-gare-%C3%A9t%C3%A9.jpg!Large.jpg"
    assert encode_url(encode_url(url)) == encode_url(url)


def test_image_candidates_and_placeholder():
    assert image_candidates("https://u.example/a.jpg", "Large") == ["https://u.example/a.jpg!Large.jpg", "https://u.example/a.jpg"]
    assert image_candidates("https://u.example/a.jpg!HD.jpg", "original") == ["https://u.example/a.jpg"]
    assert is_placeholder("https://u.example/images/FRAME-600x480.jpg!Large.jpg")
    assert not is_placeholder("https://u.example/images/frame-study.jpg")


def _row(i: int) -> ManifestRow:
    return ManifestRow(str(i), "A", "a", "T", 1880, None, None, "u", "u", f"images/{i}.jpg", f"{i:064x}", 2, 2, "JPEG", 10, "public-domain")


def test_manifest_tolerates_a_torn_last_line(tmp_path):
    path = tmp_path / "manifest.jsonl"
    with ManifestWriter(path) as writer:
        writer.append(_row(1))
        writer.append(_row(2))
    with open(path, "a") as fh:
        fh.write(_row(3).to_json()[:25])  # what a SIGKILL mid-write leaves
    rows = read_manifest(path)
    assert [r["id"] for r in rows] == ["1", "2"]
    with ManifestWriter(path) as writer:
        writer.append(_row(3))
    assert [json.loads(line)["id"] for line in path.read_text().splitlines()] == ["1", "2", "3"]


def test_manifest_corruption_before_the_end_is_an_error(tmp_path):
    path = tmp_path / "manifest.jsonl"
    path.write_text(_row(1).to_json() + "\n{broken\n" + _row(2).to_json() + "\n")
    with pytest.raises(ManifestError, match="line 2"):
        read_manifest(path)


@pytest.mark.parametrize("ids", [("x" * 50 + "1", "x" * 50 + "2"), ("ABC", "abc"), ("a/b", "a-b"), ("1\x00", "1")])
def test_distinct_ids_never_share_a_file_name(ids):
    # The id is what makes a name unique: sanitising it must not merge two works into one file.
    first, second = (image_filename("artist", "same-title", work_id, "JPEG") for work_id in ids)
    assert first != second
    assert len(first) <= 200 and Path(first).name == first


def test_plain_ids_keep_their_readable_names():
    assert (
        image_filename("claude-monet", "impression-sunrise", "9007199254740993", "JPEG")
        == "claude-monet_impression-sunrise_9007199254740993.jpg"
    )
    assert image_filename("a", "b", "577271cfedcba8d5e3a7b2f1", "PNG") == "a_b_577271cfedcba8d5e3a7b2f1.png"
