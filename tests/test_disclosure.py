"""Disclosure metadata: the XMP packet on every image atelier writes (PNG, GIF, refined PNGs, studio
exports), read back with an XML parser that knows nothing of atelier's code, and with exiftool when
it is installed (required when ATELIER_REQUIRE_EXIFTOOL=1, as in CI)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from atelier.common import disclosure as D
from gan.config import ModelConfig
from gan.export import save_generator
from gan.networks import Generator

RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
DC = "http://purl.org/dc/elements/1.1/"
IPTC = "http://iptc.org/std/Iptc4xmpExt/2008-02-29/"
SOURCE_TYPE = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
HOSTILE = "Monet & <Sons> \"]]></rdf:li><x:evil/>'\u00e9"

RES = 16
CFG = ModelConfig(z_dim=16, w_dim=16, mapping_layers=1, channel_base=256, channel_max=16)


def provenance(**overrides):
    prov = {
        "artists": ["Claude Monet", HOSTILE],
        "work_count": 3,
        "dataset_sha256": "ab" * 32,
        "licence": D.PUBLIC_DOMAIN_SUMMARY,
        "all_public_domain": True,
        "source": "WikiArt",
        "dataset": "monet-16",
        "base_model": None,
        "training_data": "known",
    }
    return {**prov, **overrides}


def plain_parse(packet: str) -> dict:
    """Read a packet with xml.etree only (namespaces by URI), independent of the code under test."""
    root = ET.fromstring(packet[packet.index("<x:xmpmeta") : packet.rindex("</x:xmpmeta>") + len("</x:xmpmeta>")])
    desc = root.find(f"{{{RDF}}}RDF/{{{RDF}}}Description")
    return {
        "source_type": desc.findtext(f"{{{IPTC}}}DigitalSourceType"),
        "description": desc.find(f"{{{DC}}}description/{{{RDF}}}Alt/{{{RDF}}}li").text,
        "atelier": {child.tag.split("}")[1]: child for child in desc if child.tag.startswith(f"{{{D.ATELIER_NS}}}")},
    }


def exiftool(path: Path) -> dict:
    """exiftool's reading of a file's XMP (skips when exiftool is missing, unless CI requires it)."""
    if shutil.which("exiftool") is None:
        if os.environ.get("ATELIER_REQUIRE_EXIFTOOL") == "1":
            pytest.fail("exiftool is required (apt-get install libimage-exiftool-perl)")
        pytest.skip("exiftool not installed (Debian: libimage-exiftool-perl)")
    out = subprocess.run(
        ["exiftool", "-j", "-G1", "-struct", "-XMP:all", "-Comment", str(path)], capture_output=True, text=True, check=True, timeout=60
    )
    return json.loads(out.stdout)[0]


def dataset(root: Path, licences=("public-domain",) * 3, artist="Claude Monet") -> Path:
    rows = [
        {
            "file": f"{i:05d}.png",
            "sha256": f"{i:064x}",
            "source_sha256": f"{i + 100:064x}",
            "work": {
                "id": f"work-{i}",
                "artist": artist,
                "license": lic,
                "source_url": f"https://www.wikiart.org/en/claude-monet/work-{i}",
            },
        }
        for i, lic in enumerate(licences)
    ]
    info = {"format": "atelier-dataset/1", "resolution": RES, "count": len(rows), "content_sha256": "cd" * 32, "images": rows}
    root.mkdir(parents=True)
    (root / "dataset.json").write_text(json.dumps(info))
    return root


def run_export(tmp_path: Path, **config) -> Path:
    """A run dir (config.yaml naming a dataset) with a tiny random generator exported into it."""
    run = tmp_path / "runs" / "r1"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"data": {"path": str(tmp_path / "ds")}, **config}))
    torch.manual_seed(0)
    return save_generator(Generator(CFG, RES).eval(), RES, CFG, run / "generator.safetensors", extra_meta={"kimg": 1.5, "run": str(run)})


# --------------------------------------------------------------------------- packets


def test_packet_is_well_formed_escaped_and_says_ai_generated():
    packet = D.build_xmp(provenance(), "ef" * 32, {"seed": 7, "psi": 0.7, "noise_mode": "const"})
    read = plain_parse(packet)
    assert read["source_type"] == SOURCE_TYPE
    assert read["description"] == (
        f"AI-generated image: made by atelier in the style of Claude Monet and {HOSTILE}, trained on 3 public-domain works from WikiArt."
    )
    fields = read["atelier"]
    assert fields["ModelWeightsSHA256"].text == "ef" * 32 and fields["DatasetSHA256"].text == "ab" * 32
    assert fields["WorkCount"].text == "3" and fields["Licence"].text == "public domain (WikiArt labels)"
    assert [li.text for li in fields["Artist"].iter(f"{{{RDF}}}li")] == ["Claude Monet", HOSTILE]
    assert fields["Seed"].text == "7" and fields["Psi"].text == "0.7"
    assert "x:evil" not in [el.tag for el in ET.fromstring(packet.split("\n", 1)[1].rsplit("\n", 1)[0]).iter()]
    assert packet.startswith('<?xpacket begin="\ufeff"') and packet.endswith('<?xpacket end="w"?>')
    parsed = D.parse_xmp(packet)
    assert parsed["artists"] == ["Claude Monet", HOSTILE] and parsed["digital_source_type"] == SOURCE_TYPE
    with pytest.raises(ValueError, match="identifier"):
        D.build_xmp(provenance(), None, {"bad key": 1})


def test_provenance_from_dataset_is_honest_about_licences(tmp_path):
    info = json.loads((dataset(tmp_path / "pd") / "dataset.json").read_text())
    prov = D.dataset_provenance(info, "pd")
    assert prov["artists"] == ["Claude Monet"] and prov["work_count"] == 3 and prov["dataset_sha256"] == "cd" * 32
    assert prov["all_public_domain"] and prov["licence"] == D.PUBLIC_DOMAIN_SUMMARY and prov["source"] == "WikiArt"
    assert D.disclosure_text(prov) == (
        "AI-generated image: made by atelier in the style of Claude Monet, trained on 3 public-domain works from WikiArt."
    )
    mixed = json.loads((dataset(tmp_path / "mixed", ("public-domain", "CC0-1.0", "public-domain")) / "dataset.json").read_text())
    prov = D.dataset_provenance(mixed)
    assert not prov["all_public_domain"] and prov["licence"] == "CC0-1.0; public-domain"
    assert "public-domain works" not in D.disclosure_text(prov) and "licence: CC0-1.0; public-domain" in D.disclosure_text(prov)
    tiles = {**info, "count": 4, "images": info["images"] + [{**info["images"][0], "file": "00009.png"}]}
    tiles["images"].append({"file": "00010.png", "artist": "Flat Row", "license": "public-domain"})  # a flat row
    prov = D.dataset_provenance(tiles)
    assert prov["work_count"] == 4 and prov["image_count"] == 4 and prov["artists"] == ["Claude Monet", "Flat Row"]
    assert D.dataset_provenance({**tiles, "images": tiles["images"][:4]})["work_count"] == 3  # two tiles, one work
    unknown = D.disclosure_text(D.unknown_provenance("NVIDIA StyleGAN2-ADA pickle ffhq.pkl"))
    assert unknown.endswith("training data unknown.") and "ffhq.pkl" in unknown
    tuned = D.disclosure_text({**D.dataset_provenance(info), "base_model": "runs/impressionism"})
    assert tuned.endswith("from WikiArt, fine-tuned from runs/impressionism.")


def test_refinement_keeps_every_property_and_appends_entries():
    source = D.build_xmp(provenance(), "ef" * 32, {"seed": 3})
    # a property another tool added to the source packet must survive too
    foreign = source.replace("</rdf:Description>", '<ns9:Rating xmlns:ns9="http://ns.example/1/">5</ns9:Rating></rdf:Description>')
    once = D.extend_xmp(foreign, {"method": "gatys", "strength": 0.75, "style": [f"a{HOSTILE}.png"]})
    twice = D.extend_xmp(once, {"method": "fast transfer network", "strength": 0.2})
    parsed = D.parse_xmp(twice)
    assert parsed["ModelWeightsSHA256"] == "ef" * 32 and parsed["Seed"] == "3" and parsed["artists"][1] == HOSTILE
    assert [r["method"] for r in parsed["refinements"]] == ["gatys", "fast transfer network"]
    assert parsed["refinements"][0]["settings"] == {"strength": 0.75, "style": [f"a{HOSTILE}.png"]}
    assert parsed["description"].count("Refined by atelier with neural style transfer.") == 1
    assert "http://ns.example/1/" in twice and ">5<" in twice
    compact = (
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        f'<rdf:Description rdf:about="" xmlns:Iptc4xmpExt="{IPTC}" Iptc4xmpExt:DigitalSourceType='
        '"http://cv.iptc.org/newscodes/digitalsourcetype/digitalCapture"/></rdf:RDF></x:xmpmeta>'
    )
    extended = D.extend_xmp(compact, {"method": "gatys"})
    assert extended.count("DigitalSourceType") == 1 and D.parse_xmp(extended)["digital_source_type"] == SOURCE_TYPE
    fresh = D.parse_xmp(D.extend_xmp(None, {"method": "gatys"}))
    assert fresh["digital_source_type"] == SOURCE_TYPE and "unknown origin" in fresh["description"]


@pytest.mark.parametrize(
    "bad",
    [
        '<!DOCTYPE x [<!ENTITY a "aaaa">]><x:xmpmeta xmlns:x="adobe:ns:meta/">&a;</x:xmpmeta>',
        "<x:xmpmeta",
        "<root/>",
        "x" * (D.MAX_PACKET + 1),
    ],
)
def test_hostile_or_broken_packets_are_refused(bad):
    with pytest.raises(D.DisclosureError):
        D.parse_xmp(bad)


# --------------------------------------------------------------------------- files


def test_png_and_gif_carry_the_packet_for_any_reader(tmp_path):
    packet = D.build_xmp(provenance(), "ef" * 32, {"seed": 1})
    image = Image.fromarray(np.arange(8 * 8 * 3, dtype=np.uint8).reshape(8, 8, 3))
    png = D.write_png(image, tmp_path / "a.png", packet, {"seed": "1"})
    with Image.open(png) as reopened:
        assert reopened.text[D.XMP_PNG_KEY] == packet and reopened.text["seed"] == "1"
    frames = [Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)) for i in range(3)]
    gif = D.write_gif(frames, tmp_path / "walk.gif", 50, packet, comment=D.disclosure_text(provenance()))
    with Image.open(gif) as reopened:  # the XMP extension must not break ordinary GIF readers
        assert reopened.n_frames == 3 and reopened.info["comment"].decode().startswith("AI-generated image")
        reopened.seek(2)
        assert np.asarray(reopened.convert("RGB"))[0, 0, 0] == 80
    assert D.read_xmp(gif) == packet and D.read_disclosure(png)["ModelWeightsSHA256"] == "ef" * 32
    for path in (png, gif):
        tags = exiftool(path)
        assert tags["XMP-iptcExt:DigitalSourceType"] == SOURCE_TYPE
        assert tags["XMP-dc:Description"].startswith("AI-generated image: made by atelier in the style of Claude Monet")
        assert tags["XMP-atelier:ModelWeightsSHA256"] == "ef" * 32 and tags["XMP-atelier:DatasetSHA256"] == "ab" * 32
        assert tags["XMP-atelier:Artist"] == ["Claude Monet", HOSTILE]


def test_generate_writes_the_disclosure_into_samples_grid_and_walk(tmp_path, capsys):
    from gan import generate

    dataset(tmp_path / "ds")
    export = run_export(tmp_path)
    out = tmp_path / "out"
    assert (
        generate.main(
            [
                "--checkpoint",
                str(export.parent),
                "--out",
                str(out),
                "--seeds",
                "0-1",
                "--grid",
                "--interpolate",
                "0",
                "1",
                "--frames",
                "3",
                "--no-progress",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    assert f"model card: {export.parent / 'MODEL_CARD.md'}" in capsys.readouterr().out
    for name in ("seed0000-psi0.70.png", "seed0001-psi0.70.png", "grid.png", "interp-seed0000-seed0001-psi0.70.gif"):
        read = plain_parse(D.read_xmp(out / name))
        assert read["source_type"] == SOURCE_TYPE, name
        assert read["description"] == (
            "AI-generated image: made by atelier in the style of Claude Monet, trained on 3 public-domain works from WikiArt."
        ), name
        assert read["atelier"]["DatasetSHA256"].text == "cd" * 32 and read["atelier"]["WorkCount"].text == "3"
    with Image.open(out / "seed0001-psi0.70.png") as png:
        fields = D.parse_xmp(png.text[D.XMP_PNG_KEY])
        assert fields["ModelWeightsSHA256"] == png.text["weights_sha256"] and fields["Seed"] == "1"
    assert D.read_disclosure(out / "grid.png")["Seeds"] == "0-1"


def test_generate_says_training_data_unknown_without_provenance(tmp_path, capsys):
    from gan import generate

    torch.manual_seed(0)
    export = save_generator(
        Generator(CFG, RES).eval(),
        RES,
        CFG,
        tmp_path / "nv.safetensors",
        extra_meta={"nvidia": {"file": "ffhq.pkl", "format": "StyleGAN2-ADA", "sha256": "12" * 32}},
    )
    assert (
        generate.main(["--checkpoint", str(export), "--out", str(tmp_path / "o"), "--seeds", "5", "--no-progress", "--device", "cpu"]) == 0
    )
    assert f"model card: {tmp_path / 'nv.MODEL_CARD.md'}" in capsys.readouterr().out
    fields = D.read_disclosure(tmp_path / "o" / "seed0005-psi0.70.png")
    assert fields["description"].endswith("training data unknown.") and "ffhq.pkl" in fields["BaseModel"]
    assert fields["TrainingData"] == "unknown" and "DatasetSHA256" not in fields


def test_refined_png_keeps_the_sample_packet_and_adds_settings(tmp_path):
    from eval.refine import write_output

    packet = D.build_xmp(provenance(), "ef" * 32, {"seed": 4})
    sample = D.write_png(Image.fromarray(np.zeros((8, 8, 3), np.uint8)), tmp_path / "seed0004.png", packet)
    out = write_output(sample, torch.rand(3, 8, 8), tmp_path / "refined", False, {"method": "gatys", "strength": 0.5, "steps": 10})
    fields = D.read_disclosure(out)
    assert fields["Seed"] == "4" and fields["ModelWeightsSHA256"] == "ef" * 32
    assert fields["refinements"] == [{"method": "gatys", "settings": {"steps": 10, "strength": 0.5}}]
    assert fields["description"].endswith("Refined by atelier with neural style transfer.")
    foreign = tmp_path / "photo.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(foreign)
    fields = D.read_disclosure(write_output(foreign, torch.rand(3, 8, 8), tmp_path / "refined", False))
    assert fields["digital_source_type"] == SOURCE_TYPE and "unknown origin" in fields["description"]


def test_studio_gallery_png_uses_the_shared_packet(tmp_path):
    from atelier.studio.curate import save_painting_png

    path = save_painting_png(
        np.zeros((8, 8, 3), np.uint8),
        tmp_path / "p.png",
        {"seed": "2"},
        {
            "model_weights_sha256": "ef" * 32,
            "artist": HOSTILE,
            "work_count": 3,
            "dataset_sha256": "ab" * 32,
            "licence": "public domain (WikiArt labels)",
            "refine": {"strength": 0.4},
        },
    )
    fields = D.read_disclosure(path)
    assert fields["artists"] == [HOSTILE] and fields["ModelWeightsSHA256"] == "ef" * 32
    assert fields["refinements"][0]["settings"] == {"strength": 0.4}
    assert fields["description"].startswith(f"AI-generated image: made by atelier in the style of {HOSTILE}, trained on 3 public-domain")


def test_training_sample_grids_can_carry_the_run_packet(tmp_path):
    from gan.sampling import run_xmp, save_png

    dataset(tmp_path / "ds")
    export = run_export(tmp_path)
    G = Generator(CFG, RES).eval()
    path = save_png(
        np.zeros((8, 8, 3), np.uint8),
        export.parent / "samples" / "fakes.png",
        {"kimg": "1.500"},
        run_xmp(export.parent, G, {"kimg": 1.5, "seeds": "0-15"}),
    )
    fields = D.read_disclosure(path)
    assert fields["artists"] == ["Claude Monet"] and fields["WorkCount"] == "3" and fields["Seeds"] == "0-15"
    assert fields["digital_source_type"] == SOURCE_TYPE


def test_video_tags_carry_the_disclosure_through_pyav(tmp_path):
    av = pytest.importorskip("av")
    from fractions import Fraction

    path = tmp_path / "walk.mp4"
    with av.open(str(path), mode="w", format="mp4") as container:
        container.metadata.update(D.video_metadata(provenance(), "ef" * 32))
        stream = container.add_stream("libx264", rate=Fraction(24, 1))
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for value in (0, 90):
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.full((32, 32, 3), value, np.uint8), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    with av.open(str(path)) as container:
        tags = container.metadata
    assert tags["description"].startswith("AI-generated video: made by atelier in the style of Claude Monet")
    assert SOURCE_TYPE in tags["comment"] and "ef" * 32 in tags["comment"]


def test_studio_gallery_export_writes_recipe_and_refinement_into_the_packet(tmp_path):
    from atelier.studio import paint as P
    from atelier.studio.curate import Collection, export_gallery

    collection = Collection(tmp_path / "feedback.jsonl", {"weights_sha256": "ef" * 32})
    item = collection.add(
        P.Painting(np.zeros((8, 8, 3), np.uint8), "seed", seed=12, psi=0.5),
        refine={"settings": {"strength": 0.5}, "sources": ["00003.png"]},
    )
    collection.mark(item.id, "starred")
    folder = export_gallery(collection, tmp_path / "exports", "show", {"model_weights_sha256": "ef" * 32, "provenance": provenance()})
    fields = D.read_disclosure(next(folder.glob("*.png")))
    assert fields["Seed"] == "12" and fields["Psi"] == "0.5" and fields["WorkCount"] == "3"
    assert fields["refinements"][0]["settings"] == {"strength": 0.5}
    assert fields["description"].endswith("from WikiArt. Refined by atelier with neural style transfer.")
