"""Curation: every painting the studio shows, its star / reject / note, the feedback log and gallery export.

Feedback is appended to a JSON-lines file kept with the run (``<run>/studio/feedback.jsonl``),
one object per action, so later work (re-ranking seeds, tuning psi, learning a preference
model) can read what the artist liked and why. A gallery export is a folder with every
starred painting as a PNG carrying its recipe, the model hash, refine settings, originality
verdict and the disclosure metadata, plus ``gallery.json`` (the same facts as a list) and an
``index.html`` to browse it. The folder is written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from atelier.common.disclosure import XMP_PNG_KEY, packet_from_facts
from atelier.studio.paint import Painting

FEEDBACK_NAME = "feedback.jsonl"
GALLERY_FORMAT = "atelier-gallery/1"
STATUSES = ("", "starred", "rejected")
MAX_NOTE = 2000  # characters; a note is a sentence or two, not a document


@dataclass
class Item:
    """One painting in the studio's session, with what the artist and the checks said about it."""

    id: str
    painting: Painting
    verdict: Optional[dict] = None  # Verdict.record()
    refine: Optional[dict] = None  # settings and style sources of a refined painting
    status: str = ""
    note: str = ""

    def record(self, provenance: dict) -> dict:
        """The JSON facts of this item (what the gallery and the feedback log store)."""
        return {
            "id": self.id,
            **self.painting.record(),
            "status": self.status,
            "note": self.note,
            "originality": self.verdict,
            "refine": self.refine,
            "model": {"weights_sha256": provenance.get("weights_sha256"), "generator": provenance.get("generator")},
        }


@dataclass
class Collection:
    """The session's paintings by id (insertion order), with thread-safe curation and the feedback log."""

    feedback_path: Path
    provenance: dict = field(default_factory=dict)
    items: dict[str, Item] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _counter: int = 0

    def add(self, painting: Painting, verdict: Optional[dict] = None, refine: Optional[dict] = None) -> Item:
        """Register a painting; returns its item (id ``p0001``, ``p0002``, ...)."""
        with self._lock:
            self._counter += 1
            item = Item(f"p{self._counter:04d}", painting, verdict, refine)
            self.items[item.id] = item
            return item

    def get(self, item_id: str) -> Item:
        """The item with this id; KeyError with a readable message when it is unknown."""
        try:
            return self.items[item_id]
        except KeyError:
            raise KeyError(f"no painting {item_id!r} in this session") from None

    def mark(self, item_id: str, status: str) -> Item:
        """Star (``starred``), reject (``rejected``) or clear (``""``) a painting; logs the feedback."""
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
        item = self.get(item_id)
        with self._lock:
            item.status = status
        self._log(item, {"starred": "star", "rejected": "reject", "": "clear"}[status])
        return item

    def annotate(self, item_id: str, note: str) -> Item:
        """Set a painting's note (trimmed to :data:`MAX_NOTE` characters); logs the feedback."""
        item = self.get(item_id)
        with self._lock:
            item.note = str(note or "").strip()[:MAX_NOTE]
        self._log(item, "note")
        return item

    def starred(self) -> list[Item]:
        """The kept paintings, in the order they were made."""
        return [item for item in self.items.values() if item.status == "starred"]

    def _log(self, item: Item, action: str) -> None:
        row = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "action": action, **item.record(self.provenance)}
        line = json.dumps(row, sort_keys=True, default=str) + "\n"
        self.feedback_path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock, open(self.feedback_path, "a", encoding="utf-8") as handle:
            handle.write(line)  # one write per line: a crash leaves whole lines (a torn last one at worst)
            handle.flush()


def read_feedback(path: Path) -> list[dict]:
    """The feedback log's rows (a torn last line is skipped)."""
    rows = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue
    return rows


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60] or "painting"


def png_text(record: dict, provenance: dict) -> dict[str, str]:
    """PNG tEXt chunks of an exported painting: the recipe (as generate writes it) and the whole record as JSON."""
    text = {"atelier": json.dumps(record, sort_keys=True, default=str), "Software": "atelier studio"}
    if record.get("seed") is not None:
        text["seed"] = str(record["seed"])
    text["psi"] = f"{record.get('psi', 1.0):g}"
    text["noise_mode"] = str(record.get("noise_mode", "const"))
    if provenance.get("weights_sha256"):
        text["weights_sha256"] = provenance["weights_sha256"]
    return text


def save_painting_png(image: np.ndarray, path: Path, text: dict[str, str], disclosure: dict[str, Any]) -> Path:
    """Write one exported painting: tEXt recipe chunks plus the XMP disclosure packet (atelier.common.disclosure)."""
    info = PngInfo()
    for key, value in text.items():
        info.add_text(key, value)
    add_disclosure(info, disclosure)
    Image.fromarray(np.ascontiguousarray(image[..., :3])).save(path, format="PNG", pnginfo=info)
    return path


def add_disclosure(info: PngInfo, facts: dict[str, Any]) -> None:
    """Add the XMP packet (PNG iTXt ``XML:com.adobe.xmp``) saying a trained model made this image,
    with IPTC ``DigitalSourceType`` and atelier's provenance facts (atelier.common.disclosure)."""
    info.add_itxt(XMP_PNG_KEY, packet_from_facts(facts), zip=False)


def export_gallery(collection: Collection, root: Path, name: Optional[str] = None, disclosure: Optional[dict] = None) -> Path:
    """Write the starred paintings as a gallery folder under ``root``; returns the folder.

    Raises ValueError when nothing is starred. The folder appears only when complete.
    """
    kept = collection.starred()
    if not kept:
        raise ValueError("nothing to export: star at least one painting first")
    name = _slug(name or time.strftime("gallery-%Y%m%d-%H%M%S"))
    target = root / name
    if target.exists():
        raise ValueError(f"{target} already exists; choose another gallery name")
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        records = []
        for number, item in enumerate(kept, 1):
            record = item.record(collection.provenance)
            record["file"] = f"{number:03d}-{_slug(item.painting.label)}.png"
            save_painting_png(
                item.painting.image,
                tmp / record["file"],
                png_text(record, collection.provenance),
                {
                    **(disclosure or {}),
                    "refine": (item.refine or {}).get("settings", item.refine),
                    "settings": {k: record.get(k) for k in ("seed", "psi", "noise_mode")},
                },
            )
            records.append(record)
        listing = {
            "format": GALLERY_FORMAT,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "provenance": collection.provenance,
            "paintings": records,
        }
        (tmp / "gallery.json").write_text(json.dumps(listing, indent=2, sort_keys=True, default=str), encoding="utf-8")
        (tmp / "index.html").write_text(index_html(listing), encoding="utf-8")
        tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def index_html(listing: dict) -> str:
    """A self-contained page showing every painting with its caption (all text escaped)."""
    esc = html.escape
    prov = listing.get("provenance", {})
    cards = []
    for record in listing["paintings"]:
        verdict = record.get("originality") or {}
        nearest = (verdict.get("nearest") or [{}])[0]
        flag = verdict.get("near_copy")
        originality = (
            "originality not checked"
            if not verdict
            else f"{'NEAR-COPY of' if flag else 'original; nearest work'} {nearest.get('name', '?')} "
            f"({verdict.get('measure')} {nearest.get('distance', float('nan')):.4f}, threshold {verdict.get('threshold', float('nan')):.4f})"
        )
        refine = record.get("refine")
        refine_text = "" if not refine else f"<br>refined: {esc(json.dumps(refine.get('settings', refine), sort_keys=True))}"
        note = f"<br><i>{esc(record['note'])}</i>" if record.get("note") else ""
        css_class = ' class="copy"' if flag else ""
        cards.append(
            f'<figure{css_class}><img src="{esc(record["file"])}" alt="{esc(record["label"])}">'
            f"<figcaption><b>{esc(record['label'])}</b> psi {record.get('psi', 1.0):g}, noise {esc(str(record.get('noise_mode')))}"
            f"<br>{esc(originality)}{refine_text}{note}</figcaption></figure>"
        )
    return (
        '<!doctype html><html><head><meta charset="utf-8"><title>atelier gallery</title><style>'
        "body{font-family:sans-serif;margin:2em}figure{display:inline-block;width:280px;vertical-align:top;margin:8px}"
        "img{width:256px;image-rendering:pixelated;border:2px solid #ccc}.copy img{border-color:#c80000}"
        ".copy figcaption{color:#c80000}figcaption{font-size:12px}</style></head><body>"
        f"<h1>atelier gallery</h1><p>{esc(str(prov.get('disclosure') or 'AI-generated images.'))} "
        f"Model weights sha256 {esc(str(prov.get('weights_sha256', '?')))}.</p>" + "".join(cards) + "</body></html>\n"
    )
