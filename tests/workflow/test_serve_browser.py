"""The page of ``cellbench serve`` in a real headless browser (Debian's chromium, selenium).

A classical model (tuned in a second, no network) is served on a loopback port; the
page must load without console errors and without any request leaving the server,
an image is uploaded through the file input, and the overlay (decoded) and the
object count must appear. The screenshot goes to tests/.artifacts/serve.png.

Skipped without chromium / chromedriver / selenium, unless CELLBENCH_REQUIRE_BROWSER
is set (CI), as in test_report_browser.py.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cellbench.config import ModelConfig
from cellbench.datasets.options import SyntheticOptions
from cellbench.synthetic import generate_image
from cellbench.train import train_model
from test_report_browser import ARTIFACTS, browser, require_browser  # noqa: F401 - fixture
from tiny_networks import write_tiny_dataset

httpx = pytest.importorskip("httpx", reason="the serve tests send requests with httpx")
pytest.importorskip("fastapi", reason="cellbench serve needs the 'serve' extra")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> tuple[str, Path]:
    """A classical model served on a free port; its URL and a test image."""
    require_browser()
    import tifffile

    root = tmp_path_factory.mktemp("serve_browser")
    converted = root / "data" / "converted" / "synthetic"
    spec = SyntheticOptions(height=160, width=192, n_cells=(8, 14), radius=(7, 11))
    converted, split_csv = write_tiny_dataset(
        converted,
        root / "split.csv",
        splits=("train", "val", "test"),
        height=spec.height,
        width=spec.width,
        n_cells=spec.n_cells,
        radius=spec.radius,
        source="synthetic:fluorescent",
    )
    model_dir = root / "results" / "models" / "synthetic" / "classical"
    cfg = ModelConfig("classical", "classical", {"threshold_scale": [1.0], "min_distance": [5]})
    train_model(cfg, "synthetic", converted, split_csv, model_dir, seed=1, progress=False)
    upload = root / "my cells.tif"
    tifffile.imwrite(upload, generate_image(11, "fluorescent", spec)[0])

    port = _free_port()
    log = (root / "server.log").open("w")
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "cellbench"), "serve", "--model-dir", str(model_dir)]
        + ["--port", str(port), "--device", "cpu", "--threads", "1"],
        cwd=root,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        assert proc.poll() is None, (root / "server.log").read_text()
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            assert time.monotonic() < deadline, "cellbench serve did not start in 120 s"
            time.sleep(0.3)
    yield url, upload
    proc.terminate()
    proc.wait(timeout=20)


def test_upload_through_the_page(browser, served, tmp_path: Path) -> None:  # noqa: F811
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url, upload = served
    browser.get_log("browser")
    browser.get(f"{url}/")
    assert "classical" in browser.find_element(By.ID, "model-name").text
    card = browser.find_element(By.ID, "card").text
    assert "synthetic" in card and "Thresholds" in card
    loaded = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name);"
    )
    assert loaded and all(name.startswith(url) for name in loaded), loaded

    browser.find_element(By.ID, "file").send_keys(str(upload))
    wait = WebDriverWait(browser, 60)
    wait.until(
        lambda d: d.execute_script(
            "const i = document.getElementById('overlay');"
            "return i.complete && i.naturalWidth > 0 && !i.closest('section').hidden;"
        )
    )
    overlay = browser.find_element(By.ID, "overlay")
    assert browser.execute_script("return arguments[0].naturalWidth", overlay) == 192
    count = browser.find_element(By.ID, "count")
    assert count.text.endswith("objects found") or count.text.endswith("object found")
    n = int(count.get_attribute("data-count"))
    assert n > 0
    assert "Done: my cells.tif" in browser.find_element(By.ID, "status").text
    severe = [e for e in browser.get_log("browser") if e.get("level") == "SEVERE"]
    assert not severe, severe

    browser.set_window_size(1400, 1100)
    shot = tmp_path / "serve.png"
    assert browser.save_screenshot(str(shot))
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copy(shot, ARTIFACTS / "serve.png")

    # a refused upload shows its message on the page, and the server goes on serving
    text = tmp_path / "notes.png"
    text.write_text("not an image\n")
    browser.find_element(By.ID, "file").send_keys(str(text))
    wait.until(lambda d: "first bytes" in d.find_element(By.ID, "status").text)
    assert httpx.get(f"{url}/health").status_code == 200
