"""Model cards: a MODEL_CARD.md beside every generator export (Hugging Face format).

``runs/<run>/generator.safetensors`` gets ``runs/<run>/MODEL_CARD.md``; any other export
``x.safetensors`` gets ``x.MODEL_CARD.md``. The YAML front matter (what the Hub indexes) holds the
licence, tags, ``base_model`` when the model was fine-tuned (``transfer.init_from``) and the
training data's provenance; the body says what the model learnt from, how good and how original
it measured (the latest numbers with their sample counts and feature spaces), the disclosure
sentence every image carries, and what the model is for.

Sources, all plain files: the export's metadata (gan.export: provenance, weights hash, kimg), the
run's ``metrics.jsonl`` and in-training reports (``metrics/kimg*.json``), and an ``atelier eval``
report of the same weights (eval rewrites the card with it, matched by weights hash).
"""

from __future__ import annotations

import html
import json
import logging
import os
from pathlib import Path
from typing import Any, Mapping, Optional

import yaml

from atelier.common.disclosure import TRAINED_ALGORITHMIC_MEDIA, artist_phrase, disclosure_text
from atelier.common.fileio import atomic_write_text

log = logging.getLogger(__name__)

CARD_NAME = "MODEL_CARD.md"
EXPORT_NAME = "generator.safetensors"
METRICS_FILE = "metrics.jsonl"
REPORTS_DIR = "metrics"  # eval.in_training writes RUN/metrics/kimg<kimg>.json
TAGS = ["atelier", "stylegan2", "stylegan2-ada", "gan", "unconditional-image-generation", "art", "ai-generated"]
MAX_METRICS_BYTES = 64 << 20  # read at most the tail of a huge metrics.jsonl


def card_path(export: str | os.PathLike) -> Path:
    """Where the card of an export lives: ``MODEL_CARD.md`` beside a run's ``generator.safetensors``,
    ``<stem>.MODEL_CARD.md`` beside any other export (two exports in one folder keep two cards)."""
    export = Path(export)
    if export.name == EXPORT_NAME:
        return export.with_name(CARD_NAME)
    return export.with_name(f"{export.stem}.{CARD_NAME}")


def _esc(value: Any) -> str:
    """Text from files (artist names, paths) shown in Markdown: HTML-escaped so it stays text."""
    return html.escape(str(value), quote=False)


# --------------------------------------------------------------------------- reading the run


def latest_metrics_row(run_dir: Optional[Path]) -> Optional[dict]:
    """The last complete row of ``RUN/metrics.jsonl`` (None when absent)."""
    if run_dir is None or not (run_dir / METRICS_FILE).is_file():
        return None
    with open(run_dir / METRICS_FILE, "rb") as handle:
        size = handle.seek(0, os.SEEK_END)
        handle.seek(max(0, size - MAX_METRICS_BYTES))
        lines = handle.read().decode("utf-8", errors="replace").splitlines()
    for line in reversed(lines):
        try:
            row = json.loads(line)
        except ValueError:
            continue  # a torn last line
        if isinstance(row, dict):
            return row
    return None


def latest_training_report(run_dir: Optional[Path]) -> Optional[tuple[Path, dict]]:
    """The newest in-training evaluation report (``RUN/metrics/kimg*.json``) and its path."""
    if run_dir is None or not (run_dir / REPORTS_DIR).is_dir():
        return None
    for path in sorted((run_dir / REPORTS_DIR).glob("kimg*.json"), reverse=True):  # names are zero-padded
        report = _read_json(path)
        if report is not None:
            return path, report
    return None


def _read_json(path: Path) -> Optional[dict]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def run_dir_of(export: Path, meta: Mapping[str, Any]) -> Optional[Path]:
    """The run an export came from: its recorded ``run``, else the folder of a run's export."""
    if meta.get("run") and Path(meta["run"]).is_dir():
        return Path(meta["run"])
    if export.name == EXPORT_NAME and (export.parent / "config.yaml").is_file():
        return export.parent
    return None


# --------------------------------------------------------------------------- metrics as text


def _feature_space(name: str, section: Mapping[str, Any]) -> str:
    if section.get("feature_space"):
        return str(section["feature_space"])
    extractors = [str(w.get("extractor")) for w in section.get("weights") or [] if isinstance(w, Mapping)]
    if extractors:
        return ", ".join(dict.fromkeys(extractors))
    return "LPIPS" if name in ("diversity", "memorisation") else "not recorded"


def _number(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, (int, float)) and not isinstance(value, bool) else _esc(value)


def report_rows(report: Mapping[str, Any]) -> list[tuple[str, str, str, str]]:
    """(metric, value, samples, feature space) rows of an eval report, for every section it holds."""
    rows = []
    for name, section in report.items():
        if not isinstance(section, Mapping):
            continue
        generated = section.get("num_generated", section.get("num_samples"))
        reference = section.get("num_reference")
        if generated is None:
            continue
        counts = f"{generated} generated vs {reference} real" if reference is not None else f"{generated} generated"
        space = _feature_space(name, section)
        if isinstance(section.get("metrics"), Mapping):  # fidelity-like: several numbers
            values = section["metrics"]
        elif name == "swd":
            values = {"swd (x10^3)": section.get("swd")}
        elif name == "diversity":
            values = {
                "lpips_diversity": section.get("lpips_diversity"),
                "lpips_diversity (training set)": section.get("reference_lpips_diversity"),
            }
        elif name == "memorisation":
            values = {"near-copy fraction": section.get("flagged_fraction")}
        else:
            values = {k: v for k, v in section.items() if isinstance(v, float)}
        for metric, value in values.items():
            if value is not None:
                rows.append((f"{_esc(name)}: {_esc(metric)}", _number(value), counts, _esc(space)))
    return rows


def memorisation_verdict(report: Optional[Mapping[str, Any]]) -> str:
    """One sentence on near-copies of training works, from a report's memorisation section."""
    mem = (report or {}).get("memorisation")
    if not isinstance(mem, Mapping):
        return (
            "Not measured yet: run `atelier eval --checkpoint <export> --dataset <dataset> --metrics nn` "
            "to check samples against their nearest training works."
        )
    flagged, total = mem.get("num_flagged"), mem.get("num_samples")
    threshold = mem.get("lpips_threshold")
    limit = (
        f" (LPIPS below {threshold:.4g}, {_esc(mem.get('calibration') or 'calibrated on the training set')})"
        if isinstance(threshold, (int, float))
        else ""
    )
    if not flagged:
        return (
            f"No near-copies: none of {total} samples is closer to a training work than the copy "
            f"threshold{limit}, compared with {mem.get('num_reference')} real works."
        )
    return (
        f"**{flagged} of {total} samples flagged as near-copies** of training works{limit}; inspect the "
        f"side-by-side grid before sharing images ({_esc(mem.get('grid') or 'no grid saved')})."
    )


# --------------------------------------------------------------------------- the card


def front_matter(meta: Mapping[str, Any]) -> dict[str, Any]:
    """The Hugging Face metadata block (YAML) of a card."""
    prov = dict(meta.get("provenance") or {})
    matter: dict[str, Any] = {
        "license": "other",
        "license_name": "unspecified",
        "tags": list(TAGS),
        "pipeline_tag": "unconditional-image-generation",
        "library_name": "pytorch",
    }
    if prov.get("base_model"):
        matter["base_model"] = str(prov["base_model"])
        matter["base_model_relation"] = "finetune"
    matter["training_data"] = {
        "known": prov.get("training_data") == "known",
        "artists": list(prov.get("artists") or []),
        "work_count": prov.get("work_count"),
        "image_count": prov.get("image_count"),
        "all_public_domain": bool(prov.get("all_public_domain")),
        "licence": prov.get("licence") or "unknown",
        "source": prov.get("source"),
        "dataset": prov.get("dataset"),
        "dataset_sha256": prov.get("dataset_sha256"),
    }
    matter["model_weights_sha256"] = meta.get("weights_sha256")
    matter["resolution"] = meta.get("resolution")
    matter["digital_source_type"] = TRAINED_ALGORITHMIC_MEDIA
    return matter


def build_card(
    export: Path, meta: Mapping[str, Any], run_dir: Optional[Path] = None, eval_report: Optional[tuple[Path, Mapping[str, Any]]] = None
) -> str:
    """The Markdown text of a card (front matter + body) for the export at ``export``."""
    prov = dict(meta.get("provenance") or {})
    known = prov.get("training_data") == "known"
    artist = artist_phrase(prov.get("artists") or []) if known else "an unknown source"
    matter = yaml.safe_dump(front_matter(meta), sort_keys=False, allow_unicode=True, width=1000)
    lines = [f"---\n{matter}---", "", f"# atelier generator: in the style of {_esc(artist)}", ""]
    kimg = meta.get("kimg")
    lines += [
        f"A StyleGAN2-ADA generator ({meta.get('resolution')} px) trained with atelier"
        + (f" for {kimg:g} kimg" if isinstance(kimg, (int, float)) else "")
        + ".",
        f"Weights: `{_esc(export.name)}`, sha256 of the tensors `{meta.get('weights_sha256') or 'unknown'}` (the "
        "`weights_sha256` written into every image it makes).",
        "",
        "## Training data",
        "",
    ]
    if known:
        lines += [
            f"- Artist(s): {_esc(', '.join(prov.get('artists') or []) or 'not recorded')}",
            f"- Works: {prov.get('work_count')}"
            + (f" from {_esc(prov['source'])}" if prov.get("source") else "")
            + (f" ({prov['image_count']} training images)" if prov.get("image_count") not in (None, prov.get("work_count")) else ""),
            f"- Licence: {_esc(prov.get('licence'))}"
            + (" (every work is public domain)" if prov.get("all_public_domain") else " (NOT all public domain)"),
            f"- Dataset: `{_esc(prov.get('dataset') or '?')}`, content sha256 `{prov.get('dataset_sha256')}`",
        ]
    else:
        lines.append(f"- Unknown: {_esc(prov.get('note') or 'atelier has no record of the training data')}.")
    if prov.get("base_model"):
        lines.append(f"- Fine-tuned from: `{_esc(prov['base_model'])}`")
    lines += ["", "## Evaluation", ""]
    lines += _evaluation(meta, run_dir, eval_report)
    lines += [
        "",
        "## Disclosure",
        "",
        "Every image atelier writes with this model (samples, grids, latent walks, refined images, studio "
        "exports) carries an XMP packet with IPTC `DigitalSourceType` = "
        f"`{TRAINED_ALGORITHMIC_MEDIA}` and this description:",
        "",
        f"> {_esc(disclosure_text(prov))}",
        "",
        "## Intended use",
        "",
        "Making new images in the manner of the training works for study, exploration and creative work, "
        "shown as AI-generated. Not for passing images off as works by the artist or any person, for "
        "forging provenance, or for removing the disclosure metadata. The model can reproduce training "
        "works closely when the dataset is small; check the memorisation verdict above before publishing.",
    ]
    return "\n".join(lines) + "\n"


def _evaluation(meta: Mapping[str, Any], run_dir: Optional[Path], eval_report) -> list[str]:
    lines: list[str] = []
    report_for_verdict = None
    if eval_report is not None:
        path, report = eval_report
        lines += [
            f"`atelier eval` report `{_esc(path)}` (these weights, dataset `{_esc(report.get('dataset'))}`, psi {report.get('psi')}):",
            "",
        ]
        lines += _table(report_rows(report))
        report_for_verdict = report
    training = latest_training_report(run_dir)
    if training is not None:
        path, report = training
        kimg = (report.get("extra") or {}).get("kimg")
        same = report.get("generator_weights_sha256") and report.get("generator_weights_sha256") == meta.get("weights_sha256")
        weights = "these very weights" if same else f"G_ema at kimg {kimg}; this export: kimg {meta.get('kimg')}"
        lines += ["", f"Latest in-training evaluation ({weights}; `{_esc(path.name)}`):", ""]
        lines += _table(report_rows(report))
        report_for_verdict = report_for_verdict or report
    row = latest_metrics_row(run_dir)
    if row is not None and training is None:
        numbers = ", ".join(f"{_esc(k.split('/', 1)[-1])} {_number(v)}" for k, v in row.items() if k.startswith("metrics/"))
        if numbers:
            lines += ["", f"Latest metrics.jsonl row (kimg {row.get('kimg')}): {numbers}."]
    if not lines:
        lines.append("No metrics yet: run `atelier eval --checkpoint <export> --dataset <dataset>`.")
    lines += ["", f"**Memorisation:** {memorisation_verdict(report_for_verdict)}"]
    while lines and not lines[0]:
        lines.pop(0)
    return lines


def _table(rows: list[tuple[str, str, str, str]]) -> list[str]:
    if not rows:
        return ["(no metric in this report)"]
    out = ["| metric | value | samples | feature space |", "| --- | --- | --- | --- |"]
    out += [f"| {' | '.join(cell.replace('|', '/') for cell in row)} |" for row in rows]
    return out


def write_model_card(
    export: str | os.PathLike, meta: Mapping[str, Any], eval_report: Optional[tuple[Path, Mapping[str, Any]]] = None
) -> Path:
    """Write (atomically) the card of the export at ``export`` with metadata ``meta``; returns its path."""
    export = Path(export)
    text = build_card(export, meta, run_dir_of(export, meta), eval_report)
    return atomic_write_text(card_path(export), text)


def existing_card(source) -> Optional[Path]:
    """The card of a resolved generator source (gan.export.GeneratorSource), if one exists: beside an
    export, or the run's card for a checkpoint of a run."""
    if source.kind == "export":
        path = card_path(source.weights)
        return path if path.is_file() else None
    if source.kind == "checkpoint":
        run = source.weights.parent.parent.parent  # RUN/checkpoints/<nimg>/G_ema.safetensors
        path = run / CARD_NAME
        return path if path.is_file() else None
    return None


def update_with_eval(source, report_path: Path, report: Mapping[str, Any]) -> Optional[Path]:
    """Rewrite an export's card with an ``atelier eval`` report when the report scored the export's
    weights (same ``weights_sha256``); returns the card path, or None when there is no export of
    these weights to describe."""
    from gan.export import EXPORT_NAME as RUN_EXPORT  # noqa: PLC0415 - avoids an import cycle
    from gan.export import resolve_source

    if source.kind == "export":
        export, meta = source.weights, source.meta
    elif source.kind == "checkpoint":
        export = source.weights.parent.parent.parent / RUN_EXPORT
        if not export.is_file():
            return None
        meta = resolve_source(export).meta
    else:
        return None
    if meta.get("weights_sha256") is None:  # an export written before the hash was recorded
        from safetensors.torch import load_file  # noqa: PLC0415

        from atelier.common.hashing import tensors_sha256  # noqa: PLC0415

        meta = {**meta, "weights_sha256": tensors_sha256(load_file(str(export)))}
    if report.get("generator_weights_sha256") != meta["weights_sha256"]:
        return None  # other weights than the export's: its card stays as it is
    return write_model_card(export, meta, (report_path, report))
