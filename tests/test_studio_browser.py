"""End to end: ``atelier studio`` on a tiny run, driven by Debian's headless Chromium through selenium.

Starts the real command on a free port (a subprocess, offline), then in the browser: Paint,
see the paintings and the originality verdict, play a latent walk, paint a mask and Refine
that region of a painting and see the refined image come back,
star it, export the gallery and check its files on disk; the server also refuses to hand out
files outside the run, dataset and export folders. Screenshots go to the test's tmp dir (the
README's docs/images/studio.png is made on the quickstart run by scripts/bench_studio.py --screenshot).

Needs ``chromium`` and ``chromium-driver`` (``apt-get install -y chromium chromium-driver``;
.ci/run installs them). Without them the test is skipped, unless ATELIER_REQUIRE_BROWSER=1
(set by CI), where their absence is a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_studio import make_tiny_run  # noqa: E402

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
CHROME_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1000",
)
SERVER_START_S = 90
STEP_S = 60


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.fixture(scope="module")
def browser_bits():
    if not (CHROMIUM and CHROMEDRIVER):
        message = "chromium and chromium-driver are not installed (apt-get install -y chromium chromium-driver)"
        if os.environ.get("ATELIER_REQUIRE_BROWSER") == "1":
            pytest.fail(message)
        pytest.skip(message)
    pytest.importorskip("selenium")
    return CHROMIUM, CHROMEDRIVER


@pytest.fixture(scope="module")
def server(tmp_path_factory, browser_bits):
    root = tmp_path_factory.mktemp("studio-e2e")
    tiny = make_tiny_run(root, works=10)
    port = _free_port()
    env = dict(
        os.environ,
        TORCH_HOME=str(root / "torch"),
        GRADIO_TEMP_DIR=str(root / "gradio"),
        GRADIO_ANALYTICS_ENABLED="False",
        ATELIER_OFFLINE="1",
        OMP_NUM_THREADS="1",
        PYTHONPATH=str(REPO),
    )
    log = open(root / "server.log", "w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "atelier.studio",
            "--checkpoint",
            str(tiny["run"]),
            "--dataset",
            str(tiny["dataset"]),
            "--port",
            str(port),
            "--weights-dir",
            str(tiny["weights"]),
            "--export-dir",
            str(root / "exports"),
            "--device",
            "cpu",
            "--no-inception",
        ],
        cwd=root,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + SERVER_START_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            if _status(url) == 200:
                break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
    if proc.poll() is not None or _status(url) != 200:
        proc.kill()
        pytest.fail(f"studio did not start: {(root / 'server.log').read_text()[-3000:]}")
    yield {"url": url, "root": root, **tiny}
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.fixture(scope="module")
def driver(browser_bits, tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, chromedriver = browser_bits
    options = webdriver.ChromeOptions()
    for flag in CHROME_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    options.binary_location = chromium
    browser = webdriver.Chrome(options=options, service=Service(executable_path=chromedriver))
    yield browser
    browser.quit()


def _wait(driver, condition, timeout=STEP_S, what="condition"):
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.2).until(condition)
    except Exception:
        shot = Path(os.environ.get("PYTEST_TMP", "/tmp")) / "studio-failure.png"
        driver.save_screenshot(str(shot))
        raise AssertionError(f"timed out waiting for {what} (screenshot {shot})") from None


def _text(driver, selector: str) -> str:
    from selenium.webdriver.common.by import By

    found = driver.find_elements(By.CSS_SELECTOR, selector)
    return found[0].text if found else ""


def _loaded_images(driver, selector: str) -> int:
    return driver.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0])).filter(i => i.complete && i.naturalWidth > 0).length;", selector
    )


def _set_number(driver, selector: str, value: int) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    box = _wait(
        driver,
        lambda d: (d.find_elements(By.CSS_SELECTOR, f"{selector} input[type=number]") or [None])[0],
        what=f"the {selector} number box",
    )
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(str(value), Keys.TAB)


def _tab(driver, name: str) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.XPATH, f"//button[@role='tab' and normalize-space()='{name}']").click()


def test_paint_refine_star_export_in_a_real_browser(server, driver, tmp_path):
    from selenium.webdriver.common.by import By

    shots = tmp_path / "screenshots"
    shots.mkdir()
    driver.get(server["url"])
    _wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#paint-btn"), what="the page")

    # Paint: four seeds, each judged against the real works.
    seeds = driver.find_element(By.CSS_SELECTOR, "#seeds textarea, #seeds input")
    seeds.clear()
    seeds.send_keys("0-3")
    driver.find_element(By.CSS_SELECTOR, "#paint-btn").click()
    _wait(driver, lambda d: _loaded_images(d, "#paint-gallery img") >= 4, what="4 painted images")
    _wait(driver, lambda d: _loaded_images(d, "#selected img") == 1 and "p000" in _text(d, "#verdict"), what="the selected painting")
    verdict = _text(driver, "#verdict")
    assert "seed 0" in verdict and "nearest" in verdict and "weight-free" in verdict, verdict
    _wait(driver, lambda d: _loaded_images(d, "#nearest img") == 3, what="the nearest real works")
    driver.save_screenshot(str(shots / "paint.png"))

    # A short latent walk plays in the page and offers GIF and MP4 downloads.
    driver.find_element(By.XPATH, "//*[normalize-space()='Latent walk']").click()
    _set_number(driver, "#walk-frames", 4)
    driver.find_element(By.CSS_SELECTOR, "#walk-btn").click()
    _wait(
        driver,
        lambda d: d.execute_script(
            "const v = document.querySelector('#walk-video video'); return v && v.readyState >= 1 && v.videoWidth > 0;"
        ),
        what="the latent-walk video",
    )
    _wait(driver, lambda d: ".gif" in _text(d, "#walk-files") and ".mp4" in _text(d, "#walk-files"), what="the downloads")

    # Refine it toward its nearest works, a few steps at 64 px, and see the result come back.
    _tab(driver, "Refine")
    _wait(driver, lambda d: d.find_element(By.CSS_SELECTOR, "#refine-btn").is_displayed(), what="the Refine tab")
    # Paint a region with the brush: only it is refined.
    from selenium.webdriver.common.action_chains import ActionChains

    canvas = _wait(
        driver,
        lambda d: ([c for c in d.find_elements(By.CSS_SELECTOR, "#mask-editor canvas") if c.size["width"] > 0] or [None])[-1],
        what="the mask editor's canvas",
    )
    time.sleep(0.5)  # the editor draws the painting into the canvas just after creating it
    for dx in (-100, -80, -60):
        ActionChains(driver).move_to_element_with_offset(canvas, dx, -100).click_and_hold().move_by_offset(0, 100).move_by_offset(
            0, 100
        ).release().perform()
    _set_number(driver, "#refine-steps", 6)
    _set_number(driver, "#refine-size", 64)
    driver.find_element(By.CSS_SELECTOR, "#refine-btn").click()
    _wait(driver, lambda d: "done" in _text(d, "#refine-status") or "failed" in _text(d, "#refine-status"), what="the refine to finish")
    status = _text(driver, "#refine-status")
    assert "done" in status and "saved as p0005" in status, status
    _wait(driver, lambda d: _loaded_images(d, "#refine-live img") == 1, what="the refined image")
    assert "refined seed 0" in _text(driver, "#verdict")
    driver.save_screenshot(str(shots / "refine.png"))

    # Star the refined painting, then export the gallery.
    driver.find_element(By.CSS_SELECTOR, "#star-btn").click()
    _wait(driver, lambda d: "starred" in _text(d, "#curate-status"), what="the star")
    _tab(driver, "Curate")
    name = _wait(driver, lambda d: d.find_element(By.CSS_SELECTOR, "#gallery-name textarea, #gallery-name input"), what="the Curate tab")
    name.send_keys("e2e show")
    driver.find_element(By.CSS_SELECTOR, "#export-btn").click()
    _wait(driver, lambda d: "exported" in _text(d, "#export-status"), what="the export")
    driver.save_screenshot(str(shots / "curate.png"))

    folder = server["root"] / "exports" / "e2e-show"
    listing = json.loads((folder / "gallery.json").read_text())
    (record,) = listing["paintings"]
    assert record["kind"] == "refined" and record["seed"] == 0 and record["refine"]["settings"]["steps"] == 6
    assert record["refine"]["settings"]["masked"]  # the brush strokes reached the refiner as a mask
    assert record["originality"]["weight_free"] and record["status"] == "starred"
    assert (folder / record["file"]).is_file() and record["file"] in (folder / "index.html").read_text()
    feedback = [json.loads(line) for line in (server["run"] / "studio" / "feedback.jsonl").read_text().splitlines()]
    assert feedback[-1]["action"] == "star" and feedback[-1]["id"] == "p0005"
    assert all((shots / f"{n}.png").stat().st_size > 10_000 for n in ("paint", "refine", "curate"))


def test_the_browser_can_read_only_the_run_dataset_and_export_folders(server):
    base = server["url"] + "gradio_api/file="
    assert _status(base + str((server["dataset"] / "00001.png").resolve())) == 200
    assert _status(base + str((server["run"] / "config.yaml").resolve())) == 200
    assert _status(base + "/etc/passwd") in (403, 404)
    assert _status(base + str((server["root"] / "server.log").resolve())) in (403, 404)  # the server's own cwd
    assert _status(base + str((server["weights"] / "vgg19-dcbb9e9d.pth").resolve())) in (403, 404)
