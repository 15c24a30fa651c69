"""Benchmark the studio: time from clicking Paint to one 256 px painting loaded on screen.

Starts ``atelier studio`` in this process on a free 127.0.0.1 port, opens it in Debian's
headless Chromium (selenium), and for each repetition clicks Paint with a new single seed;
the browser itself times, with ``performance.now()``, the span from the click to the new
painting being decoded in the Paint gallery (``img.complete`` and ``naturalWidth > 0``). The
server-side part (mapping + synthesis + registering, no originality check unless
``--dataset``) is timed separately, so the rest is Gradio's queue, the PNG round trip and
the page. Prints one JSON line.

The generator is ``--checkpoint`` (anything ``atelier studio`` takes) or, by default, a
randomly initialised generator of ``configs/stylegan2-256.yaml``'s architecture (speed does
not depend on the weights).

Examples::

    python scripts/bench_studio.py --reps 10
    python scripts/bench_studio.py --checkpoint runs/my-run --dataset data/datasets/monet-256 --device cuda
    python scripts/bench_studio.py --checkpoint runs/quickstart --dataset data/datasets/sample-32 --reps 3 \
        --screenshot docs/images/studio.png
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

CHROME_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,960",
    "--hide-scrollbars",
)
# Click Paint, then report the milliseconds until the gallery shows a new, decoded image.
_CLICK_AND_TIME = """
const done = arguments[arguments.length - 1];
const sources = () => Array.from(document.querySelectorAll('#paint-gallery img')).map(i => i.src).join('|');
const before = sources();
const t0 = performance.now();
document.querySelector('#paint-btn').click();
(function check() {
  const imgs = Array.from(document.querySelectorAll('#paint-gallery img'));
  if (imgs.length && sources() !== before && imgs.every(i => i.complete && i.naturalWidth > 0)) {
    done({ms: performance.now() - t0, width: imgs[0].naturalWidth});
  } else if (performance.now() - t0 > 120000) {
    done({ms: null, width: 0});
  } else {
    setTimeout(check, 2);
  }
})();
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bench_studio.py",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Output keys: device, resolution, reps, click_to_screen_ms (median, p90, min), "
        "server_paint_ms (median), originality, chromium, commit.",
    )
    p.add_argument("--checkpoint", help="run dir / export / .pkl (default: random init of --preset)")
    p.add_argument("--preset", type=Path, default=REPO / "configs" / "stylegan2-256.yaml", help="YAML preset of the random-init generator")
    p.add_argument("--dataset", type=Path, help="also judge originality against this prepared dataset (its cost is included)")
    p.add_argument("--reps", type=int, default=10, help="timed paintings (after 2 warm-up ones)")
    p.add_argument("--device", default="auto", help="auto (GPU when present), cpu, cuda ...")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument(
        "--screenshot",
        type=Path,
        metavar="PNG",
        help="afterwards, paint seeds 0-7 and save the page as this PNG (the README's docs/images/studio.png)",
    )
    return p


def random_export(preset: Path, folder: Path) -> Path:
    """A randomly initialised generator of the preset's architecture, saved as an export."""
    import torch

    from gan.config import load_config
    from gan.export import save_generator
    from gan.networks import Generator

    cfg = load_config(preset)
    torch.manual_seed(0)
    G = Generator(cfg.model, resolution=cfg.data.resolution).eval()
    return save_generator(G, cfg.data.resolution, cfg.model, folder / "generator.safetensors")


def chromium_driver(profile: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    chromedriver = shutil.which("chromedriver")
    if not (chromium and chromedriver):
        raise SystemExit("bench_studio.py: error: needs chromium and chromium-driver (apt-get install -y chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    for flag in CHROME_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.binary_location = chromium
    return webdriver.Chrome(options=options, service=Service(executable_path=chromedriver)), chromium


def screenshot(driver, seeds, path: Path) -> None:
    """Paint seeds 0-7 and save the page (256-colour PNG, small enough for the repository)."""
    import io

    from PIL import Image
    from selenium.webdriver.support.ui import WebDriverWait

    seeds.clear()
    seeds.send_keys("0-7")
    driver.execute_async_script(_CLICK_AND_TIME)
    WebDriverWait(driver, 60).until(
        lambda d: d.execute_script(
            "return document.querySelectorAll('#selected img').length == 1 && document.querySelector('#verdict').innerText.includes('nearest') "
            "|| document.querySelector('#verdict').innerText.includes('not checked');"
        )
    )
    driver.execute_script("window.scrollTo(0, 0)")
    time.sleep(1.0)  # let the gallery finish its layout transition
    image = Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("RGB")
    path.parent.mkdir(parents=True, exist_ok=True)
    image.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(path, optimize=True)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from atelier.studio.engine import Studio, StudioOptions
    from atelier.studio.server import launch

    with tempfile.TemporaryDirectory(prefix="bench-studio-") as tmp:
        tmp = Path(tmp)
        checkpoint = args.checkpoint or str(random_export(args.preset, tmp / "run"))
        studio = Studio(StudioOptions(checkpoint, args.dataset, export_dir=tmp / "exports", device=args.device, inception=False))
        if args.dataset is not None:
            studio.warm_up().join()
        server_ms: list[float] = []
        paint = studio.paint

        def timed_paint(*a, **k):
            start = time.perf_counter()
            try:
                return paint(*a, **k)
            finally:
                server_ms.append((time.perf_counter() - start) * 1000)

        studio.paint = timed_paint  # the page calls studio.paint; time its share
        demo, url = launch(studio, port=0, block=False)
        driver, chromium = chromium_driver(tmp / "profile")
        try:
            driver.get(url)
            WebDriverWait(driver, 60).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#paint-btn"))
            seeds = driver.find_element(By.CSS_SELECTOR, "#seeds textarea, #seeds input")
            times = []
            width = 0
            for rep in range(args.reps + 2):
                seeds.clear()
                seeds.send_keys(str(1000 + rep))
                result = driver.execute_async_script(_CLICK_AND_TIME)
                if result["ms"] is None:
                    raise SystemExit("bench_studio.py: error: no painting appeared within 120 s")
                width = result["width"]
                if rep >= 2:
                    times.append(result["ms"])
            if args.screenshot is not None:
                screenshot(driver, seeds, args.screenshot)
        finally:
            driver.quit()
            demo.close()
    times.sort()
    row = {
        "bench": "studio_click_to_screen",
        "device": str(studio.device) + (f" ({torch.cuda.get_device_name()})" if studio.device.type == "cuda" else ""),
        "resolution": studio.G.resolution,
        "displayed_width": width,
        "reps": len(times),
        "click_to_screen_ms": {
            "median": round(statistics.median(times), 1),
            "p90": round(times[max(0, math.ceil(0.9 * len(times)) - 1)], 1),
            "min": round(times[0], 1),
        },
        "server_paint_ms": {"median": round(statistics.median(server_ms[2:]), 1)},
        "originality": args.dataset is not None,
        "threads": torch.get_num_threads(),
        "chromium": subprocess.run([chromium, "--version"], capture_output=True, text=True).stdout.strip(),
        "commit": subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip(),
    }
    print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
