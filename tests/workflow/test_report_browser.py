"""The report in a real headless browser (Debian's chromium + chromium-driver, via selenium).

The default workflow runs on a tiny config (as in test_pipeline.py), then its page is
opened: no console errors, the leaderboard and the gallery visible, every picture
decoded; a full-page screenshot is kept in the test's tmp folder and in
tests/.artifacts/ (git-ignored; CI uploads it). The page of a results tree whose
names carry markup (tests/unit/test_report_render.py) is opened too: the markup is
shown as text and no script runs. ``snakemake --report`` is checked on the same run.

Skipped when chromium or chromedriver is missing (``apt-get install chromium
chromium-driver``), unless ``CELLBENCH_REQUIRE_BROWSER`` is set (CI), where a missing
browser fails the test instead.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import zipfile
from pathlib import Path

import pytest
from workflow_helpers import BIN, copy_workflow, run, tiny_params, write_params

pytestmark = pytest.mark.slow

ARTIFACTS = Path(__file__).resolve().parents[1] / ".artifacts"
MAX_PAGE_BYTES = 5_000_000  # "a few MB at most"


def _executable(*candidates: str) -> str | None:
    for name in candidates:
        found = shutil.which(name)
        if found:
            return found
        if os.path.isabs(name) and os.access(name, os.X_OK):
            return name
    return None


CHROMIUM = _executable("chromium", "/usr/bin/chromium", "chromium-browser")
CHROMEDRIVER = _executable("chromedriver", "/usr/bin/chromedriver")


def require_browser() -> None:
    """Skip (or, with CELLBENCH_REQUIRE_BROWSER set, fail) without chromium and its driver."""
    missing = [n for n, p in (("chromium", CHROMIUM), ("chromedriver", CHROMEDRIVER)) if not p]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package (pip install -e '.[dev]')")
    if missing:
        message = (
            f"headless browser test needs {', '.join(missing)}: on Debian/Ubuntu "
            "`apt-get install chromium chromium-driver`"
        )
        if os.environ.get("CELLBENCH_REQUIRE_BROWSER"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="module")
def browser():
    require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1400,1000",
        "--hide-scrollbars",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def default_run(tmp_path_factory, repo_root: Path) -> Path:
    """The default workflow (tiny config) run to its report; the project folder."""
    require_browser()  # before minutes of work
    project = copy_workflow(repo_root, tmp_path_factory.mktemp("browser"))
    write_params(project, tiny_params(project / "params.yaml"))
    run([str(BIN / "snakemake"), "--cores", "2", "results/report.html"], project)
    return project


def _open(driver, page: Path) -> list[dict]:
    """Load a page; return its console messages."""
    driver.get_log("browser")  # drop what an earlier page left
    driver.get(page.resolve().as_uri())
    assert driver.execute_script("return document.readyState") == "complete"
    return driver.get_log("browser")


def _screenshot(driver, name: str, tmp_path: Path) -> Path:
    """Full-page screenshot into tmp_path, copied to tests/.artifacts/."""
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1400, min(int(height) + 40, 16000))
    shot = tmp_path / name
    assert driver.save_screenshot(str(shot))
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copy(shot, ARTIFACTS / name)
    driver.set_window_size(1400, 1000)
    return shot


def _severe(logs: list[dict]) -> list[dict]:
    return [entry for entry in logs if entry.get("level") == "SEVERE"]


def test_default_report_in_a_real_browser(browser, default_run: Path, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    page = default_run / "results/report.html"
    size = page.stat().st_size
    assert size < MAX_PAGE_BYTES, f"report is {size / 1e6:.1f} MB"
    logs = _open(browser, page)
    assert not _severe(logs), _severe(logs)

    board = browser.find_element(By.ID, "leaderboard-0")
    browser.execute_script("arguments[0].scrollIntoView()", board)
    assert board.is_displayed()
    assert {"classical", "unet"} <= {
        cell.text for cell in board.find_elements(By.CSS_SELECTOR, "tbody td.name")
    }
    pictures = browser.find_elements(By.CSS_SELECTOR, "#gallery-0 img")
    assert len(pictures) >= 3
    browser.execute_script("arguments[0].scrollIntoView()", pictures[0])
    assert pictures[0].is_displayed()
    decoded = browser.execute_script(
        "return Array.from(document.images).map(i => [i.complete, i.naturalWidth]);"
    )
    assert decoded and all(done and width > 0 for done, width in decoded), decoded
    charts = browser.execute_script(
        "return Array.from(document.querySelectorAll('figure > svg'))"
        ".map(s => s.getBoundingClientRect().width);"
    )
    assert len(charts) >= 3 and all(w > 100 for w in charts), charts
    for section in ("Training", "Cost", "Provenance"):
        assert section in browser.find_element(By.TAG_NAME, "body").text

    shot = _screenshot(browser, "report.png", tmp_path)
    assert shot.stat().st_size > 20_000


def test_snakemake_report_registers_the_outputs(default_run: Path) -> None:
    out = default_run / "snakemake-report.zip"
    run([str(BIN / "snakemake"), "--report", str(out)], default_run)
    names = [Path(n).name for n in zipfile.ZipFile(out).namelist()]
    for name in ("report.html", "synthetic.csv", "classical.svg", "unet.svg"):
        assert name in names, names
    assert names.count("per_image.csv") == 2 and names.count("summary.json") == 2


def _fake_tree_module():
    path = Path(__file__).resolve().parents[1] / "unit" / "test_report_render.py"
    spec = importlib.util.spec_from_file_location("report_fake_tree", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_markup_in_names_is_text_in_the_browser(browser, tmp_path: Path) -> None:
    from cellbench.report import render_report
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.common.by import By

    fake = _fake_tree_module()
    params = fake.make_fake_results(tmp_path)
    page = render_report(params, tmp_path / "data", tmp_path / "results", tmp_path / "r.html")
    logs = _open(browser, page)
    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert  # noqa: B018 (the property raises when no alert is open)
    assert not _severe(logs), _severe(logs)
    assert browser.find_elements(By.TAG_NAME, "script") == []
    assert browser.title == fake.TITLE
    board = browser.find_element(By.ID, "leaderboard-0")
    names = [c.text for c in board.find_elements(By.CSS_SELECTOR, "tbody tr td:first-child")]
    assert sorted(names) == sorted([fake.SCRIPT, fake.BOLD])
    assert board.is_displayed()
    body = browser.find_element(By.TAG_NAME, "body").text
    for raw in (fake.SCRIPT, fake.BOLD, fake.IMG, fake.FAKE_DATASET):
        assert raw in body, raw
    _screenshot(browser, "report-markup.png", tmp_path)
