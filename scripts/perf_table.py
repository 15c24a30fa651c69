"""Turn benchmark JSON lines (scripts/gpu_bench_suite.sh, bench_train.py, ...) into a Markdown table.

Each input line is one JSON object. Rows keep their order; a column appears when any row
has it. The speed-up column compares images/s with the row named by ``--baseline`` (a
substring of its ``row`` field). Example::

    python scripts/perf_table.py results/gpu_rows.jsonl --baseline "baseline"
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional

# (JSON key, column title), in table order.
COLUMNS = [
    ("row", "row"),
    ("device", "device"),
    ("precision", "precision"),
    ("modconv", "modconv"),
    ("channels_last", "channels_last"),
    ("compile", "compile"),
    ("batch", "batch"),
    ("images_per_s", "images/s"),
    ("sec_per_kimg", "sec/kimg"),
    ("speedup", "vs baseline"),
    ("launch_to_first_step_s", "launch → first step (s)"),
    ("total_s", "total (s)"),
    ("peak_memory_gb", "peak memory (GB)"),
    ("phase_ms_per_step", "ms per step by phase"),
    ("error", "error"),
]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="perf_table.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("rows", type=Path, help="a file of JSON lines, one benchmark row each")
    p.add_argument("--baseline", help="substring of the 'row' field of the row that speed-ups are relative to")
    p.add_argument("--commands", action="store_true", help="add each row's command as the last column")
    return p


def read_rows(path: Path) -> list[dict]:
    """The JSON objects of ``path``, one per non-empty line; a bad line is an error naming its number."""
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{number}: not a JSON line ({exc.msg})") from None
    return rows


def add_speedups(rows: list[dict], baseline: Optional[str]) -> None:
    if not baseline:
        return
    base = next((r for r in rows if baseline in str(r.get("row", "")) and r.get("images_per_s")), None)
    if base is None:
        raise ValueError(f"no row with images_per_s matches --baseline {baseline!r}")
    for r in rows:
        if r.get("images_per_s"):
            r["speedup"] = f"{r['images_per_s'] / base['images_per_s']:.2f}×"


def markdown(rows: list[dict], commands: bool = False) -> str:
    columns = [(key, title) for key, title in COLUMNS if any(key in r for r in rows)]
    timings = sorted({k for r in rows for k in r if k.endswith("_ms")})  # e.g. bench_optim.py's rows
    columns += [(key, key.removesuffix("_ms").replace("_", " ") + " (ms)") for key in timings]
    if commands:
        columns.append(("command", "command"))
    lines = ["| " + " | ".join(title for _, title in columns) + " |", "| " + " | ".join("---" for _ in columns) + " |"]
    for r in rows:
        cells = []
        for key, _ in columns:
            value = r.get(key, "")
            if isinstance(value, dict):  # e.g. phase_ms_per_step
                value = ", ".join(f"{k} {v}" for k, v in value.items())
            cells.append(f"`{value}`" if key == "command" and value else str(value).replace("|", "\\|"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        rows = read_rows(args.rows)
        add_speedups(rows, args.baseline)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(markdown(rows, args.commands))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
