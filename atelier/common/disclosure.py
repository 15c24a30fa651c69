"""Disclosure: every image atelier writes for people says, in standard metadata, that a trained
model made it, which model, and what the model learnt from.

The carrier is an XMP packet (Adobe XMP, ISO 16684-1) with

* IPTC ``Iptc4xmpExt:DigitalSourceType`` = :data:`TRAINED_ALGORITHMIC_MEDIA` (the IPTC code for
  "created by a model trained on sampled content"), which photo tools, newsrooms and platforms read;
* ``dc:description``: one human sentence (:func:`disclosure_text`);
* ``xmp:CreatorTool``: atelier;
* atelier's own namespace (:data:`ATELIER_NS`) for provenance: the model weights hash, the dataset
  hash, the artist(s), the number of works, the licence summary, a base model, the generation
  settings and, for refined images, one entry per refinement pass.

In PNG the packet goes into an iTXt chunk with the keyword ``XML:com.adobe.xmp`` (the XMP spec's
place, read by exiftool, Adobe's tools and Pillow); in GIF into the XMP application extension
(with the spec's "magic trailer", so GIF readers skip it). The XML is built with ElementTree, so
every user-supplied string (artist names, paths, settings) is escaped.

Provenance is a plain JSON-able dict (stored in a generator export's metadata, see gan.export):

    {"artists": [...], "work_count": 312, "dataset_sha256": "...", "licence": "public domain (WikiArt labels)",
     "all_public_domain": true, "source": "WikiArt", "dataset": "monet-256", "base_model": null,
     "training_data": "known"}

``training_data`` is ``"unknown"`` for models whose data atelier cannot name (an NVIDIA pickle,
an export written before provenance was recorded); the disclosure then says so.
"""

from __future__ import annotations

import io
import json
import os
import re
import xml.etree.ElementTree as ET
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence
from urllib.parse import urlsplit

from PIL import Image
from PIL.PngImagePlugin import PngInfo

from atelier.common.fileio import atomic_write

TRAINED_ALGORITHMIC_MEDIA = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
# A picture that puts generated images beside real ones (eval's nearest-neighbour grid).
COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA = "http://cv.iptc.org/newscodes/digitalsourcetype/compositeWithTrainedAlgorithmicMedia"
XMP_PNG_KEY = "XML:com.adobe.xmp"
ATELIER_NS = "https://github.com/atelier-gan/atelier/ns/provenance/1.0/"
NS = {
    "x": "adobe:ns:meta/",
    "rdf": "http://www.w3.org/1999/02/22-rdf-syntax-ns#",
    "dc": "http://purl.org/dc/elements/1.1/",
    "xmp": "http://ns.adobe.com/xap/1.0/",
    "Iptc4xmpExt": "http://iptc.org/std/Iptc4xmpExt/2008-02-29/",
    "atelier": ATELIER_NS,
}
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
PUBLIC_DOMAIN_LABEL = "public-domain"  # the scraper's licence value for a WikiArt "Public domain" label
PUBLIC_DOMAIN_SUMMARY = "public domain (WikiArt labels)"
MAX_PACKET = 1 << 20  # bytes; a real packet is a few kB, a larger one in a user's file is not read
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")  # an XML local name we are willing to emit
# XMP in GIF (XMP spec part 3): an application extension "XMP DataXMP" holding the raw packet,
# then a 258-byte trailer that turns whatever sub-block length a GIF reader sees into a walk to 0.
_GIF_XMP_HEADER = b"\x21\xff\x0bXMP DataXMP"
_GIF_XMP_TRAILER = bytes([1, *range(255, -1, -1), 0])

for _prefix, _uri in NS.items():
    ET.register_namespace(_prefix, _uri)


def _q(prefix: str, name: str) -> str:
    return f"{{{NS[prefix]}}}{name}"


class DisclosureError(ValueError):
    """A packet that cannot be parsed or extended; one line."""


# --------------------------------------------------------------------------- provenance


def _is_wikiart(url: Any) -> bool:
    """Whether a work's source URL is on WikiArt's own site (by host, not by substring)."""
    host = urlsplit(str(url or "")).hostname or ""
    return host == "wikiart.org" or host.endswith(".wikiart.org")


def dataset_provenance(info: Mapping[str, Any], name: Optional[str] = None) -> dict[str, Any]:
    """Provenance of a prepared dataset from its parsed ``dataset.json``: artists, work count,
    content hash and an honest licence summary (public domain only when every work is labelled so)."""
    rows = [row for row in info.get("images") or [] if isinstance(row, Mapping)]
    # prepare stores the scraped work's fields under "work"; a flat row is accepted too
    works = [row["work"] if isinstance(row.get("work"), Mapping) else row for row in rows]
    artists = sorted({str(work["artist"]).strip() for work in works if work.get("artist")})
    licences = sorted({str(work.get("license") or work.get("licence") or "unknown") for work in works})
    all_pd = bool(rows) and licences == [PUBLIC_DOMAIN_LABEL]
    from_wikiart = any(_is_wikiart(work.get("source_url")) for work in works)
    # --mode tiles cuts several images from one work: count works, not images
    identities = {str(work.get("id") or row.get("source_sha256") or row.get("file")) for row, work in zip(rows, works)}
    return {
        "artists": artists,
        "work_count": len(identities) if rows else int(info.get("count", 0)),
        "image_count": int(info.get("count", len(rows))),
        "dataset_sha256": info.get("content_sha256"),
        "dataset": name,
        "licence": PUBLIC_DOMAIN_SUMMARY if all_pd else "; ".join(licences) or "unknown",
        "all_public_domain": all_pd,
        "source": "WikiArt" if from_wikiart else None,
        "base_model": None,
        "training_data": "known",
    }


def unknown_provenance(base_model: Optional[str] = None, reason: str = "") -> dict[str, Any]:
    """Provenance of a model whose training data atelier cannot name (said plainly in the disclosure)."""
    return {"training_data": "unknown", "base_model": base_model, "note": reason or None}


def artist_phrase(artists: Sequence[str]) -> str:
    """ "A", "A and B", "A, B and 3 others"."""
    names = [str(a) for a in artists if str(a).strip()]
    if not names:
        return "an unnamed artist"
    if len(names) == 1:
        return names[0]
    if len(names) <= 3:
        return ", ".join(names[:-1]) + f" and {names[-1]}"
    return f"{', '.join(names[:2])} and {len(names) - 2} others"


def disclosure_text(provenance: Optional[Mapping[str, Any]], refined: bool = False, noun: str = "image") -> str:
    """The one-sentence disclosure written into dc:description, the model card and the studio
    (``noun``: what it is said of, e.g. "video")."""
    prov = dict(provenance or {})
    base = prov.get("base_model")
    if prov.get("training_data") != "known":
        model = f" with the model {base}" if base else ""
        text = f"AI-generated {noun}: made by atelier{model} (a trained generative model); training data unknown."
    else:
        count = prov.get("work_count")
        works = f"{count} " if isinstance(count, int) else ""
        kind = "public-domain works" if prov.get("all_public_domain") else f"works (licence: {prov.get('licence') or 'unknown'})"
        source = f" from {prov['source']}" if prov.get("source") else ""
        text = (
            f"AI-generated {noun}: made by atelier in the style of {artist_phrase(prov.get('artists') or [])}, "
            f"trained on {works}{kind}{source}"
        )
        text += f", fine-tuned from {base}." if base else "."
    if refined:
        text += " Refined by atelier with neural style transfer."
    return text


# --------------------------------------------------------------------------- building packets


def software() -> str:
    """``atelier <version>`` (the installed package's), for xmp:CreatorTool."""
    try:
        return f"atelier {importlib_metadata.version('atelier')}"
    except importlib_metadata.PackageNotFoundError:
        return "atelier"


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (Mapping, list, tuple)):
        return json.dumps(value, sort_keys=True, default=str)
    return str(value)


def _check_name(name: str) -> str:
    if not _NAME.match(name):
        raise ValueError(f"XMP field name {name!r} is not a plain identifier")
    return name


def _camel(key: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in _check_name(key).split("_") if part)


def _bag(parent: ET.Element, tag: str, values: Iterable[Any], kind: str = "Bag") -> None:
    container = ET.SubElement(ET.SubElement(parent, tag), _q("rdf", kind))
    for value in values:
        ET.SubElement(container, _q("rdf", "li")).text = _text(value)


def build_xmp(
    provenance: Optional[Mapping[str, Any]],
    weights_sha256: Optional[str],
    settings: Optional[Mapping[str, Any]] = None,
    description: Optional[str] = None,
    source_type: str = TRAINED_ALGORITHMIC_MEDIA,
) -> str:
    """The XMP packet (str) for an image a generator made.

    ``settings`` are the generation facts (seed, psi, noise_mode, ...): each key, an identifier,
    becomes ``atelier:<CamelCase>``. ``description`` defaults to :func:`disclosure_text`.
    ``source_type`` is the IPTC digital source type (a composite of generated and real images
    takes :data:`COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA`).
    """
    prov = dict(provenance or {})
    root = ET.Element(_q("x", "xmpmeta"))
    rdf = ET.SubElement(root, _q("rdf", "RDF"))
    desc = ET.SubElement(rdf, _q("rdf", "Description"), {_q("rdf", "about"): ""})
    ET.SubElement(desc, _q("Iptc4xmpExt", "DigitalSourceType")).text = source_type
    alt = ET.SubElement(ET.SubElement(desc, _q("dc", "description")), _q("rdf", "Alt"))
    ET.SubElement(alt, _q("rdf", "li"), {XML_LANG: "x-default"}).text = description or disclosure_text(prov)
    ET.SubElement(desc, _q("xmp", "CreatorTool")).text = software()
    fields: dict[str, Any] = {
        "ModelWeightsSHA256": weights_sha256,
        "DatasetSHA256": prov.get("dataset_sha256"),
        "Dataset": prov.get("dataset"),
        "WorkCount": prov.get("work_count"),
        "ImageCount": prov.get("image_count"),
        "Licence": prov.get("licence"),
        "AllPublicDomain": prov.get("all_public_domain"),
        "TrainingSource": prov.get("source"),
        "TrainingData": prov.get("training_data") or "unknown",
        "BaseModel": prov.get("base_model"),
    }
    for name, value in fields.items():
        if value is not None:
            ET.SubElement(desc, _q("atelier", name)).text = _text(value)
    if prov.get("artists"):
        _bag(desc, _q("atelier", "Artist"), prov["artists"])
    for key, value in (settings or {}).items():
        if value is not None:
            ET.SubElement(desc, _q("atelier", _camel(key))).text = _text(value)
    return _serialise(root)


def packet_from_facts(facts: Mapping[str, Any]) -> str:
    """A packet from flat facts, as the studio gathers them: ``provenance`` (a full provenance dict)
    or ``artist``/``work_count``/``dataset_sha256``/``licence``; ``model_weights_sha256``;
    ``settings`` (generation recipe); ``refine`` (settings of a refinement, added as one entry)."""
    prov = dict(facts.get("provenance") or {})
    if not prov:
        artist = facts.get("artist")
        known = bool(artist or facts.get("dataset_sha256"))
        prov = {
            "artists": [artist] if isinstance(artist, str) else list(artist or []),
            "work_count": facts.get("work_count"),
            "dataset_sha256": facts.get("dataset_sha256"),
            "licence": facts.get("licence"),
            "all_public_domain": facts.get("licence") in (PUBLIC_DOMAIN_LABEL, PUBLIC_DOMAIN_SUMMARY),
            "training_data": "known" if known else "unknown",
        }
    packet = build_xmp(prov, facts.get("model_weights_sha256") or facts.get("weights_sha256"), facts.get("settings"))
    refine = facts.get("refine")
    return extend_xmp(packet, refine) if isinstance(refine, Mapping) and refine else packet


def _serialise(root: ET.Element) -> str:
    ET.indent(root, space=" ")
    body = ET.tostring(root, encoding="unicode")
    # The xpacket wrapper lets tools find and rewrite the packet in place (XMP spec part 1, 7.3).
    return f'<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n{body}\n<?xpacket end="w"?>'


def _parse(packet: str | bytes) -> ET.Element:
    if isinstance(packet, bytes):
        packet = packet.decode("utf-8", errors="strict")
    if len(packet) > MAX_PACKET:
        raise DisclosureError(f"XMP packet of {len(packet)} characters is larger than {MAX_PACKET}")
    if "<!DOCTYPE" in packet or "<!ENTITY" in packet:  # XMP never needs them; entity tricks do
        raise DisclosureError("XMP packet has a DOCTYPE / ENTITY declaration")
    try:
        root = ET.fromstring(packet.strip())
    except ET.ParseError as exc:
        raise DisclosureError(f"XMP packet is not well-formed XML ({exc})") from None
    if root.tag == _q("rdf", "RDF"):  # a packet without the x:xmpmeta wrapper is allowed too
        wrapper = ET.Element(_q("x", "xmpmeta"))
        wrapper.append(root)
        root = wrapper
    if root.tag != _q("x", "xmpmeta") or root.find(_q("rdf", "RDF")) is None:
        raise DisclosureError("XMP packet has no x:xmpmeta/rdf:RDF")
    return root


def _main_description(root: ET.Element) -> ET.Element:
    rdf = root.find(_q("rdf", "RDF"))
    desc = rdf.find(_q("rdf", "Description"))
    if desc is None:
        desc = ET.SubElement(rdf, _q("rdf", "Description"), {_q("rdf", "about"): ""})
    return desc


def _property(root: ET.Element, tag: str) -> Optional[ET.Element]:
    """A property element wherever the RDF puts it (several rdf:Description blocks are legal)."""
    for desc in root.iter(_q("rdf", "Description")):
        found = desc.find(tag)
        if found is not None:
            return found
    return None


def _attribute(root: ET.Element, tag: str) -> Optional[str]:
    for desc in root.iter(_q("rdf", "Description")):
        if tag in desc.attrib:
            return desc.attrib[tag]
    return None


def _items(element: Optional[ET.Element]) -> list[ET.Element]:
    return [] if element is None else list(element.iter(_q("rdf", "li")))


def extend_xmp(packet: Optional[str | bytes], refine: Mapping[str, Any], provenance_if_new: Optional[Mapping[str, Any]] = None) -> str:
    """The packet of an image made from another by refinement: every property of the source's
    packet is kept, one ``atelier:Refinement`` entry (method + settings as JSON) is appended, the
    description gains a sentence, and the IPTC source type is set. With no source packet (an
    image from elsewhere) a new one is made, saying its origin is unknown."""
    if packet:
        root = _parse(packet)
    else:
        prov = dict(provenance_if_new or unknown_provenance(reason="refined from an image without atelier metadata"))
        root = _parse(
            build_xmp(
                prov, None, description=("AI-modified image: an image of unknown origin, refined by atelier with neural style transfer.")
            )
        )
    desc = _main_description(root)
    source_type = _property(root, _q("Iptc4xmpExt", "DigitalSourceType"))
    as_attribute = [d for d in root.iter(_q("rdf", "Description")) if _q("Iptc4xmpExt", "DigitalSourceType") in d.attrib]
    if source_type is not None:
        source_type.text = TRAINED_ALGORITHMIC_MEDIA
    elif as_attribute:  # the compact RDF form other tools write: one property, so set it there
        as_attribute[0].set(_q("Iptc4xmpExt", "DigitalSourceType"), TRAINED_ALGORITHMIC_MEDIA)
    else:
        ET.SubElement(desc, _q("Iptc4xmpExt", "DigitalSourceType")).text = TRAINED_ALGORITHMIC_MEDIA
    _append_description(root, desc, " Refined by atelier with neural style transfer.")
    history = _property(root, _q("atelier", "Refinement"))
    if history is None:
        history = ET.SubElement(desc, _q("atelier", "Refinement"))
    seq = history.find(_q("rdf", "Seq"))
    if seq is None:
        seq = ET.SubElement(history, _q("rdf", "Seq"))
    entry = ET.SubElement(seq, _q("rdf", "li"), {_q("rdf", "parseType"): "Resource"})
    ET.SubElement(entry, _q("atelier", "Method")).text = _text(refine.get("method", "neural style transfer"))
    ET.SubElement(entry, _q("atelier", "Settings")).text = json.dumps(
        {k: v for k, v in refine.items() if k != "method"}, sort_keys=True, default=str
    )
    ET.SubElement(entry, _q("atelier", "Software")).text = software()
    return _serialise(root)


def _append_description(root: ET.Element, desc: ET.Element, sentence: str) -> None:
    prop = _property(root, _q("dc", "description"))
    items = _items(prop)
    if not items:
        if prop is None:
            prop = ET.SubElement(desc, _q("dc", "description"))
        alt = prop.find(_q("rdf", "Alt"))
        if alt is None:
            alt = ET.SubElement(prop, _q("rdf", "Alt"))
        item = ET.SubElement(alt, _q("rdf", "li"), {XML_LANG: "x-default"})
        item.text = "AI-generated image." + sentence
        return
    for item in items:  # every language alternative says it
        if not (item.text or "").endswith(sentence.strip()):
            item.text = (item.text or "").rstrip() + sentence


# --------------------------------------------------------------------------- reading packets


def parse_xmp(packet: str | bytes) -> dict[str, Any]:
    """The disclosure facts of a packet: ``digital_source_type``, ``description``, ``creator_tool``,
    ``artists``, ``refinements`` (list of {method, settings}) and every other atelier field by its
    XMP name (``ModelWeightsSHA256``, ``DatasetSHA256``, ``WorkCount``, ...). Raises DisclosureError."""
    root = _parse(packet)
    out: dict[str, Any] = {}
    source_type = _property(root, _q("Iptc4xmpExt", "DigitalSourceType"))
    out["digital_source_type"] = (
        source_type.text.strip()
        if source_type is not None and source_type.text
        else _attribute(root, _q("Iptc4xmpExt", "DigitalSourceType"))
    )
    descriptions = _items(_property(root, _q("dc", "description")))
    default = [d for d in descriptions if d.get(XML_LANG) == "x-default"] or descriptions
    out["description"] = default[0].text if default else None
    tool = _property(root, _q("xmp", "CreatorTool"))
    out["creator_tool"] = tool.text if tool is not None else _attribute(root, _q("xmp", "CreatorTool"))
    out["artists"] = [item.text or "" for item in _items(_property(root, _q("atelier", "Artist")))]
    refinements = []
    for entry in _items(_property(root, _q("atelier", "Refinement"))):
        settings = entry.findtext(_q("atelier", "Settings")) or "{}"
        try:
            parsed = json.loads(settings)
        except ValueError:
            parsed = settings
        refinements.append({"method": entry.findtext(_q("atelier", "Method")), "settings": parsed})
    out["refinements"] = refinements
    prefix = f"{{{ATELIER_NS}}}"
    for desc in root.iter(_q("rdf", "Description")):
        for child in desc:
            name = child.tag[len(prefix) :] if child.tag.startswith(prefix) else None
            if name and name not in ("Artist", "Refinement") and len(child) == 0:
                out.setdefault(name, child.text)
    return out


def read_xmp(path: str | os.PathLike) -> Optional[str]:
    """The XMP packet of an image file (PNG iTXt, JPEG/WebP/TIFF ``xmp``, GIF extension), or None.

    Only headers and metadata chunks are read; no pixel data is decoded.
    """
    path = Path(path)
    if path.suffix.lower() == ".gif":
        return _gif_xmp(path.read_bytes())
    try:
        with Image.open(path) as image:
            value = image.info.get(XMP_PNG_KEY) or image.info.get("xmp")
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    if not value or len(value) > MAX_PACKET:
        return None
    return value


def read_disclosure(path: str | os.PathLike) -> Optional[dict[str, Any]]:
    """:func:`parse_xmp` of a file's packet; None when it has none (or an unreadable one)."""
    packet = read_xmp(path)
    if packet is None:
        return None
    try:
        return parse_xmp(packet)
    except DisclosureError:
        return None


# --------------------------------------------------------------------------- writing files


def png_info(xmp: Optional[str], text: Optional[Mapping[str, Any]] = None) -> PngInfo:
    """PNG chunks: ``text`` as tEXt (iTXt when not Latin-1), and the XMP packet as the
    uncompressed iTXt ``XML:com.adobe.xmp`` (uncompressed, as the XMP spec asks)."""
    info = PngInfo()
    for key, value in (text or {}).items():
        value = str(value)
        try:
            value.encode("latin-1")
            info.add_text(key, value)
        except UnicodeEncodeError:
            info.add_itxt(key, value)
    if xmp is not None:
        info.add_itxt(XMP_PNG_KEY, xmp, zip=False)
    return info


def write_png(
    image: Image.Image, path: str | os.PathLike, xmp: Optional[str], text: Optional[Mapping[str, Any]] = None, fsync: bool = False
) -> Path:
    """Save ``image`` as PNG carrying ``text`` and the ``xmp`` packet, atomically (temp name, then
    rename). Byte-identical for equal inputs. Every stage's PNGs for people go through here."""
    info = png_info(xmp, text)
    return atomic_write(path, lambda tmp: image.save(tmp, format="PNG", pnginfo=info), fsync=fsync)


def add_gif_xmp(gif: bytes, xmp: str) -> bytes:
    """Insert the XMP application extension into GIF bytes, right after the header and global
    colour table (where the XMP spec and exiftool put it)."""
    if gif[:6] not in (b"GIF87a", b"GIF89a") or not gif.endswith(b"\x3b"):
        raise DisclosureError("not a complete GIF file")
    data = xmp.encode("utf-8")
    if b"\x00" in data:
        raise DisclosureError("an XMP packet for GIF may not contain NUL bytes")
    flags = gif[10]
    start = 13 + (3 * 2 ** ((flags & 7) + 1) if flags & 0x80 else 0)
    # XMP needs GIF89a (extensions); Pillow writes 87a only for single frames without extras.
    head = b"GIF89a" + gif[6:start]
    return head + _GIF_XMP_HEADER + data + _GIF_XMP_TRAILER + gif[start:]


def _gif_xmp(data: bytes) -> Optional[str]:
    start = data.find(_GIF_XMP_HEADER)
    if start < 0:
        return None
    start += len(_GIF_XMP_HEADER)
    end = data.find(_GIF_XMP_TRAILER, start)
    if end < 0 or end - start > MAX_PACKET:
        return None
    return data[start:end].decode("utf-8", errors="replace")


def write_gif(
    frames: Sequence[Image.Image], path: str | os.PathLike, duration_ms: int, xmp: Optional[str], comment: Optional[str] = None
) -> Path:
    """A looping GIF with the XMP packet (and ``comment``, e.g. the disclosure sentence, as the
    GIF comment extension that image viewers show), written atomically."""
    buffer = io.BytesIO()
    extra = {"comment": comment.encode("utf-8")} if comment else {}
    frames[0].save(buffer, format="GIF", save_all=True, append_images=list(frames[1:]), duration=duration_ms, loop=0, **extra)
    data = add_gif_xmp(buffer.getvalue(), xmp) if xmp is not None else buffer.getvalue()
    return atomic_write(path, lambda tmp: tmp.write_bytes(data), fsync=False)


def video_metadata(provenance: Optional[Mapping[str, Any]], weights_sha256: Optional[str]) -> dict[str, str]:
    """Container tags for a video (MP4 ``description``/``comment`` atoms: ``container.metadata.update``
    in PyAV): the disclosure sentence, the IPTC source type and the hashes (PyAV cannot write an
    XMP box, so these are the tags players and exiftool show)."""
    prov = dict(provenance or {})
    return {
        "description": disclosure_text(prov, noun="video"),
        "comment": f"DigitalSourceType={TRAINED_ALGORITHMIC_MEDIA}; model_weights_sha256={weights_sha256 or 'unknown'}; "
        f"dataset_sha256={prov.get('dataset_sha256') or 'unknown'}; made with {software()}",
    }
