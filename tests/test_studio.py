"""The studio's functions without a browser: painting, originality, refining, curating, the run overview, startup.

A tiny run is built here: a random 32 px generator exported with gan.export.save_generator,
a prepared dataset of synthetic paintings, and random-init LPIPS / VGG19 weight files in the
official layouts, so the real loading code runs. The browser test is test_studio_browser.py.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import av
import gradio as gr
import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))

from eval_support import paintings, tiny_generator, write_dataset, write_torchvision_weights  # noqa: E402

from atelier.studio import paint as P  # noqa: E402
from atelier.studio.curate import Collection, export_gallery, read_feedback  # noqa: E402
from atelier.studio.originality import OriginalityJudge, build_judge, pixel_measure  # noqa: E402
from atelier.studio.overview import curve_table, load_overview, read_metrics, run_dir_of, wandb_link  # noqa: E402
from atelier.studio.refine import RefineRequest, RefineState, load_upload, mask_from_editor, run_refine  # noqa: E402
from eval import weights as W  # noqa: E402
from gan.export import save_generator  # noqa: E402
from gan.sampling import generate_images  # noqa: E402

RES = 32


# ---------------------------------------------------------------------- a tiny run (shared with the browser test)


def make_tiny_run(root: Path, works: int = 12) -> dict[str, Path]:
    """A run dir (generator export, config, metrics, a sample grid), a dataset and a weights dir with VGG19."""
    G, model_cfg = tiny_generator(RES, seed=0)
    run = root / "run"
    save_generator(G, RES, model_cfg, run / "generator.safetensors", extra_meta={"kimg": 2.0})
    (run / "config.yaml").write_text("name: tiny\nmodel:\n  z_dim: 64\n")
    rows = [
        {
            "tick": k,
            "kimg": k / 4,
            "Loss/G_main": 1.0 / (k + 1),
            "Loss/D_main": 0.7,
            "loss/G": 1.0 / (k + 1),
            "augment/p": k / 50,
            "metrics/kid": 0.1 / (k + 1),
            "metrics/swd": 3.0,
        }
        for k in range(8)
    ]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"kimg": 9, "torn')
    (run / "samples").mkdir()
    Image.new("RGB", (64, 64), "red").save(run / "samples" / "fakes-000000.png")
    Image.new("RGB", (64, 64), "blue").save(run / "samples" / "fakes-002000.png")
    write_dataset(paintings(works, seed=1, size=RES), root / "data")
    weights = root / "weights"
    write_vgg19_features(weights)
    return {"run": run, "dataset": root / "data", "weights": weights, "G": G}


def write_vgg19_features(folder: Path) -> Path:
    """A random-init VGG19 trunk (features only: no 400 MB classifier) under the official file name."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    trunk = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["E"])
    path = folder / W.VGG19.filename
    torch.save(trunk.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_run(tmp_path_factory.mktemp("studio"))


@pytest.fixture(scope="module")
def studio(tiny, tmp_path_factory):
    from atelier.studio.engine import Studio, StudioOptions

    empty = tmp_path_factory.mktemp("no-lpips")  # LPIPS missing: the weight-free fallback judges
    previous = torch.hub.get_dir()
    torch.hub.set_dir(str(empty / "hub"))
    yield Studio(StudioOptions(tiny["run"], tiny["dataset"], weights_dir=tiny["weights"], device="cpu", inception=False))
    torch.hub.set_dir(previous)


# ---------------------------------------------------------------------- painting


def test_seed_text_parses_lists_and_random_grids():
    assert P.parse_seed_text("0-3,9", 5) == [0, 1, 2, 3, 9]
    seeds = P.parse_seed_text("random", 6)
    assert len(seeds) == 6 and all(0 <= s <= P.MAX_SEED for s in seeds)
    assert len(P.parse_seed_text("", 3)) == 3
    with pytest.raises(ValueError, match="at most"):
        P.parse_seed_text(f"0-{P.MAX_GRID}", 1)
    with pytest.raises(ValueError, match="bad seed"):
        P.parse_seed_text("x", 1)


def test_painted_seeds_match_generate(tiny):
    G = tiny["G"]
    painted = P.paint_seeds(G, [3, 11, 12], psi=0.7, noise_mode="const", batch=2)
    expected = generate_images(G, [3, 11, 12], psi=0.7, noise_mode="const")
    for painting, image in zip(painted, expected):
        assert np.abs(painting.image.astype(int) - image.astype(int)).max() <= 1
    assert [p.seed for p in painted] == [3, 11, 12] and painted[0].w.shape == (G.num_ws, G.w_dim)


def test_variations_step_zero_is_the_painting_and_steps_move_it(tiny):
    G = tiny["G"]
    base = P.paint_seeds(G, [5])[0]
    same = P.variations(G, base, count=2, step=0.0)
    assert all(np.abs(v.image.astype(int) - base.image.astype(int)).max() <= 1 for v in same)
    moved = P.variations(G, base, count=3, step=1.0, seed=1)
    assert all(np.abs(v.image.astype(int) - base.image.astype(int)).mean() > 1 for v in moved)
    assert moved[0].recipe["base_seed"] == 5 and moved[0].kind == "variation"


def test_style_mixing_takes_only_the_chosen_layers(tiny):
    G = tiny["G"]  # 32 px: 8 ws
    assert P.layer_range(G, "coarse") == (0, 4) and P.layer_range(G, "middle") == (4, 8)
    assert P.layer_range(G, "fine")[0] == P.layer_range(G, "fine")[1]
    with pytest.raises(ValueError, match="no fine layers"):
        P.style_mix(G, [0], [1], "fine")
    grid = P.style_mix(G, [0, 1], [0, 7], "middle")
    own = P.paint_seeds(G, [0, 1])
    assert np.abs(grid[0][0].image.astype(int) - own[0].image.astype(int)).max() <= 1  # a seed mixed with itself
    assert np.abs(grid[1][1].image.astype(int) - own[1].image.astype(int)).mean() > 0.5
    w_row, w_col = P.ws_for_seeds(G, [1], 0.7)[0], P.ws_for_seeds(G, [7], 0.7)[0]
    mixed = grid[1][1].w
    assert torch.allclose(mixed[:4], w_row[:4].cpu(), atol=1e-4) and torch.allclose(mixed[4:], w_col[4:].cpu(), atol=1e-4)


def test_latent_walk_writes_gif_and_mp4(tiny, tmp_path):
    frames = P.latent_walk(tiny["G"], 0, 1, frames=6)
    gif = P.write_gif(frames, tmp_path / "walk.gif", fps=12)
    mp4 = P.write_mp4(frames, tmp_path / "walk.mp4", fps=12)
    assert Image.open(gif).n_frames == 6
    with av.open(str(mp4)) as container:
        decoded = [frame for frame in container.decode(video=0)]
    assert len(decoded) == 6 and decoded[0].width >= 128 and decoded[0].width % 2 == 0
    with pytest.raises(ValueError, match="frames"):
        P.latent_walk(tiny["G"], 0, 1, frames=1)


# ---------------------------------------------------------------------- originality


def _judge(count: int = 10) -> OriginalityJudge:
    images = paintings(count, seed=3, size=RES)
    return OriginalityJudge(images, [f"{i:05d}.png" for i in range(count)], [pixel_measure()], weight_free=True, note="no LPIPS")


def test_a_copied_work_is_flagged_and_a_new_one_is_not():
    judge = _judge()
    copy = judge.real_image(4)
    verdict = judge.judge(copy)
    assert verdict.near_copy and verdict.neighbours[0].name == "00004.png" and verdict.distance < 1e-6
    assert verdict.weight_free and "pixel" in verdict.measure and "NEAR-COPY" in verdict.summary()
    mirrored = judge.judge(copy[:, ::-1].copy())
    assert mirrored.near_copy and mirrored.neighbours[0].flipped
    fresh = judge.judge(paintings(1, seed=99, size=RES)[0].permute(1, 2, 0).numpy())
    assert not fresh.near_copy and fresh.distance > fresh.threshold and len(fresh.neighbours) == 3
    record = fresh.record()
    assert record["weight_free"] and "leave-one-out" in record["rule"]


@pytest.mark.slow  # writes and loads a 244 MB random-init AlexNet file
def test_judge_uses_lpips_when_its_weights_exist_and_says_so_when_not(tiny, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    fallback = build_judge(tiny["dataset"], tmp_path / "empty", use_inception=False)
    assert fallback.weight_free and "alexnet" in fallback.note
    weights = tmp_path / "w"
    weights.mkdir()
    write_torchvision_weights(weights, W.ALEXNET, torchvision.models.alexnet)
    judge = build_judge(tiny["dataset"], weights, use_inception=False)
    assert not judge.weight_free and judge.measures[0].name.startswith("LPIPS")
    verdict = judge.judge(judge.real_image(2))
    assert verdict.near_copy and verdict.neighbours[0].name == "00002.png"


# ---------------------------------------------------------------------- refining


def test_refine_runs_live_and_stops_keeping_the_current_image(tiny):
    from eval.style_transfer import FEATURE_LAYERS
    from eval.vgg import load_vgg19

    vgg = load_vgg19(FEATURE_LAYERS, weights_dir=tiny["weights"])
    painting = P.paint_seeds(tiny["G"], [0])[0].image
    style = paintings(1, seed=5, size=64)[0].permute(1, 2, 0).numpy()
    state = run_refine(vgg, painting, [style], RefineRequest(strength=1.0, steps=12, size=64, sources=["s.png"]), RefineState())
    assert state.error is None and state.result.shape == (64, 64, 3) and state.report["iterations"] >= 1
    assert state.report["sources"] == ["s.png"] and not state.report["stopped_early"]
    assert state.latest is not None and state.finished.is_set()

    stopping = RefineState()
    stopping.stop.set()  # asked to stop before the first look: ends at the first callback
    state = run_refine(vgg, painting, [style], RefineRequest(strength=1.0, steps=200, size=64), stopping)
    assert state.error is None and state.report["stopped_early"] and state.report["iterations"] < 200

    mask = np.zeros((64, 64, 4), np.uint8)
    mask[:, :32, 3] = 255  # left half painted in the browser
    state = run_refine(vgg, painting, [style], RefineRequest(strength=1.0, steps=8, size=64), RefineState(), mask=mask)
    content = np.asarray(Image.fromarray(painting).resize((64, 64), Image.LANCZOS))
    assert state.error is None and state.report["settings"]["masked"]
    assert np.abs(state.result[:, 40:].astype(int) - content[:, 40:].astype(int)).max() <= 1  # outside: untouched
    bad = run_refine(vgg, painting, [], RefineRequest(), RefineState())
    assert bad.error and "no style images" in bad.error and bad.finished.is_set()


def test_mask_from_editor_reads_the_brush_alpha():
    assert mask_from_editor(None, (8, 8)) is None
    assert mask_from_editor(np.zeros((4, 4, 4), np.uint8), (8, 8)) is None
    layer = np.zeros((4, 4, 4), np.uint8)
    layer[:2, :, 3] = 255
    mask = mask_from_editor(layer, (8, 8))
    assert mask.shape == (8, 8) and mask[0, 0] == 1 and mask[-1, -1] == 0


def test_the_browser_mask_layer_is_checked_and_keeps_its_alpha(tmp_path):
    from atelier.studio.refine import load_mask_layer

    layer = np.zeros((16, 16, 4), np.uint8)
    layer[4:8, :, 3] = 200
    Image.fromarray(layer, "RGBA").save(tmp_path / "layer.png")
    assert load_mask_layer(tmp_path / "layer.png")[5, 0, 3] == 200
    (tmp_path / "fake.png").write_bytes(b"GIF89a nope")
    with pytest.raises(ValueError, match="painted mask fake.png"):
        load_mask_layer(tmp_path / "fake.png")
    with pytest.raises(ValueError, match="layer.png"):
        load_mask_layer(tmp_path / "layer.png", max_pixels=100)


def test_uploads_are_decoded_safely(tmp_path):
    good = tmp_path / "ok.png"
    Image.new("RGB", (20, 10), "green").save(good)
    assert load_upload(good).shape == (10, 20, 3)
    fake = tmp_path / "evil.png"
    fake.write_bytes(b"<html>not an image</html>")
    with pytest.raises(ValueError, match="evil.png"):
        load_upload(fake)
    big = tmp_path / "big.png"
    Image.new("RGB", (300, 300)).save(big)
    with pytest.raises(ValueError, match="big.png"):
        load_upload(big, max_pixels=10_000)
    truncated = tmp_path / "cut.png"
    truncated.write_bytes(good.read_bytes()[:-30])
    with pytest.raises(ValueError, match="cut.png"):
        load_upload(truncated)


# ---------------------------------------------------------------------- curating


def _collection(tmp_path: Path) -> Collection:
    return Collection(tmp_path / "run" / "studio" / "feedback.jsonl", {"weights_sha256": "ab" * 32, "artist": "Claude Monet"})


def test_star_reject_and_notes_are_logged_as_json_lines(tmp_path):
    collection = _collection(tmp_path)
    a = collection.add(P.Painting(np.zeros((8, 8, 3), np.uint8), "seed", seed=1, psi=0.7))
    b = collection.add(P.Painting(np.ones((8, 8, 3), np.uint8), "seed", seed=2))
    collection.mark(a.id, "starred")
    collection.mark(b.id, "rejected")
    collection.annotate(a.id, "  lovely sky  ")
    rows = read_feedback(collection.feedback_path)
    assert [r["action"] for r in rows] == ["star", "reject", "note"]
    assert rows[0]["seed"] == 1 and rows[0]["model"]["weights_sha256"] == "ab" * 32 and rows[2]["note"] == "lovely sky"
    assert [i.id for i in collection.starred()] == [a.id]
    with pytest.raises(ValueError):
        collection.mark(a.id, "loved")
    with pytest.raises(KeyError, match="p9999"):
        collection.get("p9999")


def test_gallery_export_holds_images_metadata_index_and_list(tmp_path):
    collection = _collection(tmp_path)
    with pytest.raises(ValueError, match="star at least one"):
        export_gallery(collection, tmp_path / "exports")
    verdict = {
        "near_copy": True,
        "measure": "LPIPS (alex)",
        "threshold": 0.01,
        "weight_free": False,
        "nearest": [{"name": "00003.png", "index": 3, "distance": 0.001, "flipped": False}],
    }
    item = collection.add(
        P.Painting(np.full((8, 8, 3), 7, np.uint8), "seed", seed=12, psi=0.5),
        verdict,
        refine={"settings": {"strength": 0.5}, "sources": ["00003.png"]},
    )
    collection.mark(item.id, "starred")
    collection.annotate(item.id, "<script>alert(1)</script>")
    folder = export_gallery(collection, tmp_path / "exports", "My Show!", {"model_weights_sha256": "ab" * 32, "artist": "Claude Monet"})
    assert folder.name == "my-show" and not list((tmp_path / "exports").glob(".*"))
    listing = json.loads((folder / "gallery.json").read_text())
    record = listing["paintings"][0]
    assert record["seed"] == 12 and record["originality"]["near_copy"] and record["refine"]["settings"]["strength"] == 0.5
    png = Image.open(folder / record["file"])
    assert png.text["seed"] == "12" and png.text["psi"] == "0.5" and png.text["weights_sha256"] == "ab" * 32
    xmp = png.text["XML:com.adobe.xmp"]
    assert "trainedAlgorithmicMedia" in xmp and "Claude Monet" in xmp
    page = (folder / "index.html").read_text()
    assert record["file"] in page and "<script>alert" not in page and "NEAR-COPY" in page
    with pytest.raises(ValueError, match="already exists"):
        export_gallery(collection, tmp_path / "exports", "my show")


# ---------------------------------------------------------------------- run overview


def test_overview_reads_config_curves_grid_and_wandb(tiny, tmp_path):
    overview = load_overview(tiny["run"])
    assert overview.run_dir == tiny["run"] and "name: tiny" in overview.config_text
    assert len(overview.metrics) == 8  # the torn last line is skipped
    assert overview.latest_grid.name == "fakes-002000.png"
    losses = curve_table(overview.metrics, "losses")
    assert {r["metric"] for r in losses} == {"Loss/G_main", "Loss/D_main"} and len(curve_table(overview.metrics, "augmentation")) == 8
    assert {r["metric"] for r in curve_table(overview.metrics, "quality")} == {"metrics/kid", "metrics/swd"}
    assert run_dir_of(tiny["run"] / "generator.safetensors") == tiny["run"]
    bare = tmp_path / "bare.safetensors"
    bare.write_bytes(b"")
    assert run_dir_of(bare) is None and load_overview(bare).notes
    offline = tmp_path / "r" / "wandb" / "offline-run-20261201_120000-abc"
    offline.mkdir(parents=True)
    assert "wandb sync" in wandb_link(tmp_path / "r")
    online = tmp_path / "r" / "wandb" / "run-20261201_130000-xyz" / "logs"
    online.mkdir(parents=True)
    (online / "debug.log").write_text("... syncing run https://wandb.ai/me/atelier/runs/xyz ...")
    assert wandb_link(tmp_path / "r") == "https://wandb.ai/me/atelier/runs/xyz"
    assert read_metrics(tmp_path / "missing.jsonl") == []


# ---------------------------------------------------------------------- the engine and startup


def test_engine_paints_judges_refines_and_exports(studio, tiny):
    items = studio.paint("0-2", 1, 0.7, "const")
    assert [i.painting.seed for i in items] == [0, 1, 2] and items[0].verdict["weight_free"]
    judge = studio.judge()
    copy = studio.register([P.Painting(judge.real_image(1), "seed", seed=None)])[0]
    assert copy.verdict["near_copy"]
    styles, names = studio.style_sources(items[0].id, "nearest")
    assert len(styles) == 3 and names[0].endswith(".png")
    assert studio.style_sources(items[0].id, "picked", ["00001.png"])[1] == ["00001.png"]
    upload = tiny["run"].parent / "upload-style.jpg"
    Image.new("RGB", (40, 30), "orange").save(upload)
    images, names = studio.style_sources(items[0].id, "uploads", uploads=[str(upload)])
    assert names == ["upload-style.jpg"] and images[0].shape == (30, 40, 3)
    (tiny["run"].parent / "fake.jpg").write_text("<?php system($_GET['x']); ?>")
    with pytest.raises(ValueError, match="upload fake.jpg"):
        studio.style_sources(items[0].id, "uploads", uploads=[str(tiny["run"].parent / "fake.jpg")])
    with pytest.raises(ValueError, match="upload at least one"):
        studio.style_sources(items[0].id, "uploads")
    with pytest.raises(ValueError, match="not a work"):
        studio.style_sources(items[0].id, "picked", ["../../etc/passwd"])
    state = studio.start_refine("s1", items[0].id, RefineRequest(strength=0.8, steps=4, size=64, sources=names), styles)
    assert state.finished.wait(60) and state.error is None
    refined = studio.finish_refine(items[0].id, state)
    assert refined.painting.kind == "refined" and refined.refine["sources"] == names and refined.verdict is not None
    assert not studio.stop_refine("s1")
    gif, mp4 = studio.latent_walk(0, 1, 4, 0.7, "const", 8)
    assert gif.is_file() and mp4.is_file() and studio.export_root in gif.parents
    from atelier.common.disclosure import read_xmp

    assert "trainedAlgorithmicMedia" in read_xmp(gif)
    with av.open(str(mp4)) as container:
        assert container.metadata["description"].startswith("AI-generated video")
    studio.collection.mark(refined.id, "starred")
    folder = studio.export("show")
    record = json.loads((folder / "gallery.json").read_text())["paintings"][0]
    assert record["kind"] == "refined" and record["refine"]["settings"]["steps"] == 4
    assert record["model"]["weights_sha256"] == studio.collection.provenance["weights_sha256"]
    provenance = json.loads((folder / "gallery.json").read_text())["provenance"]
    assert provenance["originality_dataset"]["work_count"] == 12 and provenance["disclosure"].startswith("AI-generated image")
    assert provenance["training"]["training_data"] == "unknown"  # a bare export of no recorded run: said plainly
    assert provenance["disclosure"] in (folder / "index.html").read_text()
    allowed = studio.allowed_paths()
    assert str(tiny["run"].resolve()) in allowed and str(tiny["dataset"].resolve()) in allowed


def test_painting_does_not_wait_for_the_warm_up(tiny):
    from atelier.studio.engine import WARMING, Studio, StudioOptions

    studio = Studio(StudioOptions(tiny["run"], tiny["dataset"], weights_dir=tiny["weights"], device="cpu", inception=False))
    studio._warming.set()  # as while warm_up embeds a large dataset
    item = studio.paint("4", 1, 0.7, "const")[0]
    assert item.verdict is None and studio.judge_error == WARMING
    studio._warming.clear()
    assert studio.ensure_verdict(item).verdict["nearest"]  # judged when shown again
    thread = studio.warm_up()
    thread.join(60)
    assert studio.judge().ready and not studio._warming.is_set()


def test_app_helpers_caption_and_flag_near_copies(studio):
    from atelier.studio.app import caption, enlarged, verdict_html

    judge = studio.judge()
    copy = studio.register([P.Painting(judge.real_image(0), "seed", seed=None)])[0]
    assert "NEAR-COPY" in caption(copy) and "class='copy'" in verdict_html(copy) and "weight-free" in verdict_html(copy)
    fresh = studio.paint("40", 1, 0.7, "const")[0]
    assert "original" in caption(fresh) and "class='original'" in verdict_html(fresh)
    assert "not checked" in verdict_html(studio.collection.add(P.Painting(np.zeros((4, 4, 3), np.uint8), "seed")), "no --dataset")
    assert enlarged(np.zeros((32, 32, 3), np.uint8)).shape == (256, 256, 3)
    assert enlarged(np.zeros((300, 300, 3), np.uint8)).shape == (300, 300, 3)


def test_build_app_wires_every_tab(studio):
    from atelier.studio.app import build_app

    demo = build_app(studio)
    ids = {getattr(block, "elem_id", None) for block in demo.blocks.values()}
    assert {"paint-btn", "paint-gallery", "refine-btn", "refine-stop", "star-btn", "export-btn", "verdict", "mask-editor"} <= ids


def test_exposure_is_warned_and_ports_checked():
    import socket

    from atelier.studio.server import check_port, exposure_warnings

    assert exposure_warnings("127.0.0.1", False) == []
    assert len(exposure_warnings("0.0.0.0", True)) == 2
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(ValueError, match="choose another --port"):
            check_port("127.0.0.1", taken.getsockname()[1])
    with pytest.raises(ValueError, match="between 0 and 65535"):
        check_port("127.0.0.1", 70000)


def test_main_refuses_bad_inputs_in_one_line(tmp_path, capsys, tiny):
    from atelier.studio import main

    assert main(["--checkpoint", str(tmp_path / "nope"), "--port", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("atelier studio: error:") and "does not exist" in err[0]
    assert main(["--checkpoint", str(tiny["run"]), "--dataset", str(tmp_path), "--port", "0"]) == 2
    assert "dataset.json" in capsys.readouterr().err


def test_the_trained_fast_refiner_is_offered_when_the_run_has_one(tiny, tmp_path):
    fast = pytest.importorskip("eval.fast_refiner")
    from atelier.studio.engine import FAST_REFINER_NAME, Studio, StudioOptions
    from eval.transfer_net import TransferNet, TransferNetConfig

    run = tmp_path / "run"
    shutil.copytree(tiny["run"], run)
    without = Studio(StudioOptions(run, device="cpu"))
    assert without.fast_refiner() is None and "refine-train" in without.fast_error
    torch.manual_seed(0)
    fast.save_fast_refiner(run / FAST_REFINER_NAME, TransferNet(TransferNetConfig(channels=4, residual_blocks=1)), {"style": "test"})
    studio = Studio(StudioOptions(run, device="cpu"))
    base = studio.paint("3", 1, 0.7, "const")[0]
    item = studio.fast_refine(base.id, 0.8, 64)
    assert item.painting.image.shape == (64, 64, 3) and item.refine["method"] == "fast"
    assert item.refine["model_sha256"] == studio.fast_refiner().sha256 and item.painting.recipe["base_id"] == base.id


def _handler(demo, name: str):
    return next(f.fn for f in demo.fns.values() if getattr(f.fn, "__name__", "") == name)


def test_page_handlers_paint_curate_export_and_show_the_run(studio, tmp_path):
    from atelier.studio.app import build_app

    demo = build_app(studio)
    gallery, ids, current, status, big, verdict, *_ = _handler(demo, "paint_handler")("5-6", 1, 0.7, "const", progress=lambda *a, **k: None)
    assert len(gallery) == 2 and ids[0] == current and "painted 2" in status and "seed 5" in verdict
    assert Image.open(big).size == (256, 256) and Path(gallery[0][0]).parent == studio.view_dir  # shown enlarged, from files
    again = _handler(demo, "paint_handler")("5", 1, 0.7, "const", progress=lambda *a, **k: None)
    assert again[0][0][0] == gallery[0][0]  # the same picture is one file, written once
    gallery, ids, text = _handler(demo, "variations_handler")(current, 0.3, 3, 1)
    assert len(ids) == 3 and "3 variations" in text
    gallery, ids, text = _handler(demo, "mix_handler")("1-2", "3", "coarse", 0.7, "const")
    assert len(ids) == 2 and "coarse" in text
    with pytest.raises(gr.Error, match="no fine layers"):
        _handler(demo, "mix_handler")("1", "3", "fine", 0.7, "const")
    assert "note saved" in _handler(demo, "note_handler")(current, "warm light")
    stop = studio.paint_stop_flag("default")
    stop.set()  # Stop pressed: the next batch is not painted
    assert studio.paint("0-40", 1, 0.7, "const", cancelled=stop.is_set) == []
    assert not studio.paint_stop_flag("default").is_set()  # a new request starts clear
    notes, losses, quality, augmentation, grid, config = _handler(demo, "overview_handler")()
    assert "run:" in notes and len(losses) == 16 and len(quality) == 16 and grid.endswith("fakes-002000.png") and "name: tiny" in config
    with pytest.raises(gr.Error, match="select a painting"):
        _handler(demo, "note_handler")(None, "x")
