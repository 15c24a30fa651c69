"""The studio's page: Gradio widgets wired to :class:`~atelier.studio.engine.Studio`.

Layout: tabs on the left (Paint, Refine, Curate, Run), the selected painting on the right with
its originality verdict, nearest real works, star / reject and a note, so the judgement sits
beside whatever is being looked at. Handlers run in Gradio's worker threads (the page never
waits on the model); long ones stream progress and have a stop button.
"""

from __future__ import annotations

import html
import logging
from typing import Optional

import gradio as gr
import numpy as np

from atelier.studio import paint as P
from atelier.studio.curate import Item
from atelier.studio.engine import Studio
from atelier.studio.overview import CURVE_GROUPS, curve_table
from atelier.studio.refine import MAX_WORK_SIZE, MIN_WORK_SIZE, RefineRequest, load_mask_layer

log = logging.getLogger(__name__)

POLL_SECONDS = 0.25  # how often a running refine sends its current image to the page
CSS = """
#verdict .copy {color:#c80000; font-weight:bold; border:2px solid #c80000; padding:6px}
#verdict .original {color:#156b2f; padding:6px}
#verdict .unjudged {color:#7a5b00; padding:6px}
"""


# ---------------------------------------------------------------------- pure helpers (unit-tested)


def caption(item: Item) -> str:
    """Gallery caption: the painting's name and, when judged, its verdict in a word."""
    verdict = item.verdict
    if verdict is None:
        return item.painting.label
    return f"{item.painting.label} | {'NEAR-COPY' if verdict['near_copy'] else 'original'}"


def verdict_html(item: Optional[Item], reason: str = "") -> str:
    """The originality panel: verdict, distance, threshold and measure, red for a near-copy."""
    if item is None:
        return "<div class='unjudged'>Paint or pick a painting.</div>"
    verdict = item.verdict
    status = {"starred": " &#9733; starred", "rejected": " &#10007; rejected"}.get(item.status, "")
    head = f"<b>{html.escape(item.painting.label)}</b> ({item.id}){status}<br>"
    if verdict is None:
        return f"<div class='unjudged'>{head}Originality not checked: {html.escape(reason or 'no dataset')}</div>"
    nearest = verdict["nearest"][0]
    mirrored = " (mirrored)" if nearest["flipped"] else ""
    words = "NEAR-COPY of a real work" if verdict["near_copy"] else "Original: no real work is this close"
    lines = [
        f"{head}<b>{words}</b>",
        f"nearest: {html.escape(nearest['name'])}{mirrored}, {html.escape(verdict['measure'])} distance "
        f"{nearest['distance']:.4f} (near-copy below {verdict['threshold']:.4f})",
    ]
    if verdict.get("inception_distance") is not None:
        lines.append(f"Inception distance {verdict['inception_distance']:.3f} (near-copy below {verdict['inception_threshold']:.3f})")
    if verdict["weight_free"]:
        lines.append("<i>LPIPS weights are missing: this is the weight-free pixel distance, a rougher measure than eval's LPIPS.</i>")
    elif verdict.get("note"):
        lines.append(f"<i>{html.escape(verdict['note'])}</i>")
    css = "copy" if verdict["near_copy"] else "original"
    return f"<div class='{css}'>" + "<br>".join(lines) + "</div>"


def nearest_gallery(studio: Studio, item: Optional[Item]) -> list:
    """(image, caption) of the nearest real works, as the judge matched them (mirrored when so)."""
    judge = studio.judge()
    if item is None or item.verdict is None or judge is None:
        return []
    return [
        (
            studio.view(enlarged(judge.real_image(n["index"], n["flipped"]), 128)),
            f"{n['name']}{' (mirrored)' if n['flipped'] else ''}: {n['distance']:.4f}",
        )
        for n in item.verdict["nearest"]
    ]


DISPLAY_MIN = 256  # small paintings (a 32 px smoke model) are shown enlarged, pixel for pixel


def enlarged(image: np.ndarray, minimum: int = DISPLAY_MIN) -> np.ndarray:
    """An image repeated pixel-wise (nearest neighbour) so its longer side is at least ``minimum``."""
    factor = max(1, -(-minimum // max(image.shape[:2])))
    return image if factor == 1 else image.repeat(factor, axis=0).repeat(factor, axis=1)


def gallery_value(studio: Studio, items: list[Item]) -> list:
    """(file, caption) per painting, for a gallery."""
    return [(studio.view(item.painting.image), caption(item)) for item in items]


def error_text(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


# ---------------------------------------------------------------------- the page


def build_app(studio: Studio) -> gr.Blocks:
    """The studio's Gradio Blocks (not launched)."""
    judge_names: list[str] = []

    def dataset_names() -> list[str]:
        if not judge_names and studio.judge() is not None:
            judge_names.extend(studio.judge().names)
        return judge_names

    with gr.Blocks(title="atelier studio", analytics_enabled=False) as demo:
        gr.Markdown(
            f"## atelier studio\n{html.escape(studio.describe())}  \n*{html.escape(studio.collection.provenance['disclosure'])}*",
            elem_id="header",
        )
        current = gr.State(None)  # id of the painting in the side panel
        shown = gr.State([])  # ids of the paintings in the Paint gallery, in order

        with gr.Row():
            with gr.Column(scale=3):
                with gr.Tabs():
                    # ---------------------------------------------------------- Paint
                    with gr.Tab("Paint", id="paint"):
                        with gr.Row():
                            seeds = gr.Textbox(label="Seeds (e.g. 0-7,12; empty or 'random' = random)", value="0-7", elem_id="seeds")
                            count = gr.Slider(1, P.MAX_GRID, value=8, step=1, label="Random grid size N")
                        with gr.Row():
                            psi = gr.Slider(0.0, 1.5, value=0.7, step=0.05, label="psi (truncation)")
                            noise = gr.Radio(["const", "random", "none"], value="const", label="Noise mode")
                        with gr.Row():
                            paint_btn = gr.Button("Paint", variant="primary", elem_id="paint-btn")
                            paint_stop = gr.Button("Stop", elem_id="paint-stop")
                        paint_status = gr.Markdown(elem_id="paint-status")
                        gallery = gr.Gallery(
                            label="Paintings (click one to judge, refine or keep it)",
                            columns=4,
                            format="png",
                            elem_id="paint-gallery",
                            object_fit="contain",
                            height=420,
                        )
                        with gr.Accordion("Variations of the selected painting", open=False):
                            with gr.Row():
                                var_step = gr.Slider(0.0, 2.0, value=0.4, step=0.05, label="Step size in W")
                                var_count = gr.Slider(1, 16, value=8, step=1, label="How many")
                                var_seed = gr.Number(value=0, precision=0, label="Direction seed")
                            var_btn = gr.Button("Variations", elem_id="var-btn")
                        with gr.Accordion("Style mixing", open=False):
                            with gr.Row():
                                mix_rows = gr.Textbox(value="0-3", label="Row seeds (keep their other layers)")
                                mix_cols = gr.Textbox(value="10-13", label="Column seeds (give their layers)")
                                mix_group = gr.Radio(list(P.LAYER_GROUPS), value="middle", label="Layers taken from the column seed")
                            mix_btn = gr.Button("Mix", elem_id="mix-btn")
                        with gr.Accordion("Latent walk", open=False):
                            with gr.Row():
                                walk_a = gr.Number(value=0, precision=0, label="From seed")
                                walk_b = gr.Number(value=1, precision=0, label="To seed")
                                walk_frames = gr.Slider(2, P.MAX_FRAMES, value=48, step=1, label="Frames", elem_id="walk-frames")
                                walk_fps = gr.Slider(1, 60, value=24, step=1, label="Frames per second")
                            walk_btn = gr.Button("Walk", elem_id="walk-btn")
                            walk_video = gr.Video(label="Latent walk", autoplay=True, loop=True, elem_id="walk-video")
                            walk_files = gr.File(label="Download GIF / MP4", file_count="multiple", elem_id="walk-files")

                    # ---------------------------------------------------------- Refine
                    with gr.Tab("Refine", id="refine"):
                        gr.Markdown(
                            "Refine the selected painting with neural style transfer (Gatys, VGG19). "
                            "Paint over the picture below to refine only that region (leave it blank for the whole painting)."
                        )
                        mask_editor = gr.ImageEditor(
                            label="Painting (brush = region to refine)",
                            type="filepath",
                            sources=[],
                            layers=False,
                            transforms=(),
                            elem_id="mask-editor",
                            brush=gr.Brush(colors=["#ff3030"], color_mode="fixed"),
                            height=320,
                        )
                        with gr.Row():
                            source = gr.Radio(
                                [("nearest works", "nearest"), ("picked works", "picked"), ("uploaded images", "uploads")],
                                value="nearest",
                                label="Style from",
                            )
                            picked = gr.Dropdown([], multiselect=True, label="Works from the dataset", elem_id="picked")
                        uploads = gr.File(label="Style images to upload", file_count="multiple", file_types=["image"], type="filepath")
                        with gr.Row():
                            strength = gr.Slider(0.0, 1.0, value=0.75, step=0.05, label="Strength")
                            steps = gr.Slider(1, 500, value=100, step=1, label="Steps", elem_id="refine-steps")
                            size = gr.Slider(
                                MIN_WORK_SIZE, MAX_WORK_SIZE, value=256, step=32, label="Working size (px)", elem_id="refine-size"
                            )
                            keep_colour = gr.Checkbox(label="Preserve the painting's colours")
                        with gr.Row():
                            refine_btn = gr.Button("Refine", variant="primary", elem_id="refine-btn")
                            refine_stop = gr.Button("Stop and keep", elem_id="refine-stop")
                        with gr.Row(visible=studio.fast_refiner_path() is not None):
                            fast_btn = gr.Button("Fast refiner (trained network, one pass)", elem_id="fast-btn")
                            gr.Markdown(f"uses `{html.escape(str(studio.fast_refiner_path()))}` at the strength and size above")
                        refine_status = gr.Markdown(elem_id="refine-status")
                        refine_live = gr.Image(label="Refining (live)", format="png", interactive=False, elem_id="refine-live", height=320)

                    # ---------------------------------------------------------- Curate
                    with gr.Tab("Curate", id="curate"):
                        kept = gr.Gallery(label="Starred paintings", columns=6, format="png", elem_id="kept-gallery", height=300)
                        with gr.Row():
                            gallery_name = gr.Textbox(label="Gallery name (empty = dated)", elem_id="gallery-name")
                            export_btn = gr.Button("Export gallery", variant="primary", elem_id="export-btn")
                        export_status = gr.Markdown(elem_id="export-status")
                        gr.Markdown(f"Feedback is saved as JSON lines in `{html.escape(str(studio.collection.feedback_path))}`.")

                    # ---------------------------------------------------------- Run
                    with gr.Tab("Run", id="run"):
                        overview_btn = gr.Button("Reload", elem_id="overview-btn")
                        run_notes = gr.Markdown(elem_id="run-notes")
                        plots = {
                            group: gr.LinePlot(x="kimg", y="value", color="metric", label=group.capitalize(), height=240)
                            for group in CURVE_GROUPS
                        }
                        grid_image = gr.Image(label="Latest sample grid", format="png", interactive=False)
                        config_text = gr.Code(label="config.yaml", language="yaml", interactive=False)

            # -------------------------------------------------------------- side panel
            with gr.Column(scale=2):
                big = gr.Image(label="Selected painting", format="png", interactive=False, elem_id="selected", height=300)
                verdict = gr.HTML(verdict_html(None), elem_id="verdict")
                neighbours = gr.Gallery(label="Nearest real works", columns=3, format="png", height=160, elem_id="nearest")
                with gr.Row():
                    star_btn = gr.Button("Star", elem_id="star-btn")
                    reject_btn = gr.Button("Reject", elem_id="reject-btn")
                    clear_btn = gr.Button("Clear")
                note = gr.Textbox(label="Note", lines=2, elem_id="note")
                note_btn = gr.Button("Save note", elem_id="note-btn")
                curate_status = gr.Markdown(elem_id="curate-status")

        panel = [big, verdict, neighbours, note, mask_editor]

        # ------------------------------------------------------------------ handlers

        def show(item_id: Optional[str]):
            if not item_id:
                return None, verdict_html(None), [], "", None
            item = studio.ensure_verdict(studio.collection.get(item_id))
            view = studio.view(enlarged(item.painting.image))
            editor = {"background": view, "layers": [], "composite": view}
            return view, verdict_html(item, studio.judge_error), nearest_gallery(studio, item), item.note, editor

        def paint_handler(seed_text, n, psi_value, noise_mode, request: gr.Request = None, progress=gr.Progress()):
            stop = studio.paint_stop_flag(getattr(request, "session_hash", None) or "default")
            try:
                items = studio.paint(
                    seed_text, n, psi_value, noise_mode, progress=lambda frac, text: progress(frac, desc=text), cancelled=stop.is_set
                )
            except Exception as exc:
                raise gr.Error(error_text(exc)) from exc
            ids = [item.id for item in items]
            first = ids[0] if ids else None
            copies = sum(1 for item in items if item.verdict and item.verdict["near_copy"])
            status = f"painted {len(items)}: seeds {', '.join(str(i.painting.seed) for i in items[:12])}{' ...' if len(items) > 12 else ''}"
            if copies:
                status += f" | **{copies} near-cop{'y' if copies == 1 else 'ies'} of real works**"
            return (gallery_value(studio, items), ids, first, status, *show(first))

        paint_event = paint_btn.click(paint_handler, [seeds, count, psi, noise], [gallery, shown, current, paint_status, *panel])

        def paint_stop_handler(request: gr.Request):
            studio.paint_stop_flag(request.session_hash or "default", fresh=False).set()  # the worker stops between batches

        paint_stop.click(paint_stop_handler, None, None, cancels=[paint_event])

        def select_handler(ids, evt: gr.SelectData):
            item_id = ids[evt.index] if ids and evt.index is not None and evt.index < len(ids) else None
            return (item_id, *show(item_id))

        gallery.select(select_handler, [shown], [current, *panel])

        def variations_handler(item_id, step, n, direction_seed):
            if not item_id:
                raise gr.Error("select a painting first")
            try:
                items = studio.variations(item_id, n, step, direction_seed or 0)
            except Exception as exc:
                raise gr.Error(error_text(exc)) from exc
            ids = [item.id for item in items]
            return gallery_value(studio, items), ids, f"{len(items)} variations, step {step:g}"

        var_btn.click(variations_handler, [current, var_step, var_count, var_seed], [gallery, shown, paint_status])

        def mix_handler(rows, cols, group, psi_value, noise_mode):
            try:
                items, _ = studio.style_mix(rows, cols, group, psi_value, noise_mode)
            except Exception as exc:
                raise gr.Error(error_text(exc)) from exc
            return gallery_value(studio, items), [item.id for item in items], f"style mixing: {group} layers from the column seeds"

        mix_btn.click(mix_handler, [mix_rows, mix_cols, mix_group, psi, noise], [gallery, shown, paint_status])

        def walk_handler(a, b, frames, fps, psi_value, noise_mode):
            try:
                gif, mp4 = studio.latent_walk(a or 0, b or 0, frames, psi_value, noise_mode, int(fps))
            except Exception as exc:
                raise gr.Error(error_text(exc)) from exc
            return str(mp4), [str(gif), str(mp4)]

        walk_btn.click(walk_handler, [walk_a, walk_b, walk_frames, walk_fps, psi, noise], [walk_video, walk_files])

        # ---------------------------------------------------------------- refine

        def refine_handler(item_id, mode, picked_names, upload_paths, strength_v, steps_v, size_v, keep, editor, request: gr.Request):
            if not item_id:
                raise gr.Error("select a painting first (Paint, then click one)")
            session = request.session_hash or "default"
            try:
                styles, names = studio.style_sources(item_id, mode, picked_names or [], upload_paths or [])
                job = RefineRequest(strength_v, bool(keep), int(steps_v), int(size_v), names)
                job.settings()
                layers = (editor or {}).get("layers") or []
                mask = load_mask_layer(layers[0]) if layers and layers[0] else None
                state = studio.start_refine(session, item_id, job, styles, mask)
            except Exception as exc:
                raise gr.Error(error_text(exc)) from exc
            yield gr.update(), f"refining toward {', '.join(names)} ...", gr.update(), *[gr.update()] * len(panel)
            shown_version = -1
            while not state.finished.wait(POLL_SECONDS):
                text = f"step {state.done} of {state.total}" + (" (stopping)" if state.stop.is_set() else "")
                image = gr.update()
                if state.latest is not None and state.version != shown_version:  # only new pictures travel
                    shown_version, image = state.version, studio.view(enlarged(state.latest))
                yield image, text, gr.update(), *[gr.update()] * len(panel)
            if state.error:
                yield gr.update(), f"refine failed: {state.error}", gr.update(), *[gr.update()] * len(panel)
                return
            item = studio.finish_refine(item_id, state)
            report = state.report
            text = (
                f"done{' (stopped early, current image kept)' if report.get('stopped_early') else ''}: "
                f"{report.get('iterations')} iterations, style loss {report.get('style_loss_before', float('nan')):.4g} "
                f"-> {report.get('style_loss_after', float('nan')):.4g}; saved as {item.id}"
            )
            yield studio.view(enlarged(state.result)), text, item.id, *show(item.id)

        refine_btn.click(
            refine_handler,
            [current, source, picked, uploads, strength, steps, size, keep_colour, mask_editor],
            [refine_live, refine_status, current, *panel],
        )

        def fast_handler(item_id, strength_v, size_v):
            if not item_id:
                raise gr.Error("select a painting first (Paint, then click one)")
            try:
                item = studio.fast_refine(item_id, strength_v, size_v)
            except Exception as exc:
                raise gr.Error(error_text(exc)) from exc
            return studio.view(enlarged(item.painting.image)), f"fast refiner: saved as {item.id}", item.id, *show(item.id)

        fast_btn.click(fast_handler, [current, strength, size], [refine_live, refine_status, current, *panel])

        def stop_handler(request: gr.Request):
            stopped = studio.stop_refine(request.session_hash or "default")
            return "stopping: the current image will be kept" if stopped else "nothing is refining"

        refine_stop.click(stop_handler, None, refine_status)

        # ---------------------------------------------------------------- curate

        def mark(item_id, status):
            if not item_id:
                raise gr.Error("select a painting first")
            item = studio.collection.mark(item_id, status)
            kept_items = studio.collection.starred()
            words = {"starred": "starred", "rejected": "rejected", "": "cleared"}[status]
            return (
                f"{item.id} {words}; {len(kept_items)} starred",
                gallery_value(studio, kept_items),
                verdict_html(item, studio.judge_error),
            )

        star_btn.click(lambda i: mark(i, "starred"), current, [curate_status, kept, verdict])
        reject_btn.click(lambda i: mark(i, "rejected"), current, [curate_status, kept, verdict])
        clear_btn.click(lambda i: mark(i, ""), current, [curate_status, kept, verdict])

        def note_handler(item_id, text):
            if not item_id:
                raise gr.Error("select a painting first")
            item = studio.collection.annotate(item_id, text)
            return f"note saved for {item.id}"

        note_btn.click(note_handler, [current, note], curate_status)

        def export_handler(name):
            try:
                folder = studio.export(name or None)
            except Exception as exc:
                raise gr.Error(error_text(exc)) from exc
            files = sorted(p.name for p in folder.iterdir())
            return f"exported {len(files) - 2} painting(s) to `{folder}`: {', '.join(files)}"

        export_btn.click(export_handler, gallery_name, export_status)

        # ---------------------------------------------------------------- run overview

        def overview_handler():
            import pandas as pd

            info = studio.overview()
            notes = [f"run: `{info.run_dir}`" if info.run_dir else ""] + info.notes
            if info.wandb:
                link = info.wandb
                notes.append(f"W&B: [{link}]({link})" if link.startswith("https://") else f"W&B: {html.escape(link)}")
            tables = {group: curve_table(info.metrics, group) for group in CURVE_GROUPS}
            if info.metrics and not tables["quality"]:
                notes.append(
                    "no quality metrics in metrics.jsonl yet (the config's `metrics:` list, e.g. `[kid, swd]`, logs them during training)"
                )
            frames = [pd.DataFrame(rows, columns=["kimg", "metric", "value"]) for rows in tables.values()]
            grid = str(info.latest_grid) if info.latest_grid else None
            return ("\n\n".join(n for n in notes if n), *frames, grid, info.config_text)

        overview_outputs = [run_notes, *plots.values(), grid_image, config_text]
        overview_btn.click(overview_handler, None, overview_outputs)

        def on_load():
            names = dataset_names()
            return (gr.update(choices=names), *overview_handler())

        demo.load(on_load, None, [picked, *overview_outputs])
    return demo
