"""The report as a browser shows it: Debian's headless Chromium driven by Selenium.

Every image must load (natural width > 0), the console must stay free of errors, and the summary
block must sit above the first table. A screenshot is written next to the report. Without
chromium the test skips, except in CI (``CI=true``), where it must run.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from frmargin.report import build_report
from synthetic_run import write_synthetic_run

CHROMIUM = os.environ.get("FRMARGIN_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("FRMARGIN_CHROMEDRIVER", "/usr/bin/chromedriver")
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,2000",
)
PAGE_TIMEOUT_S = 60


def _browser(profile: Path):
    """A headless Chromium session, or a skip (outside CI) when chromium or selenium is absent."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not (Path(p).exists() or shutil.which(p))]
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        missing.append("the selenium package (pip install -e '.[dev]')")
    if missing:
        reason = f"headless browser test needs {', '.join(missing)} (apt-get install chromium chromium-driver)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason + "; CI=true, so it must run")
        pytest.skip(reason)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(PAGE_TIMEOUT_S)
    return driver


HEADINGS_JS = "return Array.from(document.querySelectorAll('h2, h3')).map(h => h.textContent);"
IMAGES_JS = "return Array.from(document.images).map(i => [i.alt.slice(0, 60), i.complete, i.naturalWidth]);"
ORDER_JS = """
const summary = document.getElementById('summary');
const table = document.querySelector('table');
if (!summary || !table) return null;
return [summary.getBoundingClientRect().top + window.scrollY, table.getBoundingClientRect().top + window.scrollY,
        !!(summary.compareDocumentPosition(table) & Node.DOCUMENT_POSITION_FOLLOWING)];
"""


def check_page(page: Path, profile: Path, screenshot: Path) -> dict:
    """Open ``page`` in headless Chromium; return its images, console errors and block order."""
    driver = _browser(profile)
    try:
        driver.get(page.resolve().as_uri())
        images = driver.execute_script(IMAGES_JS)
        headings = driver.execute_script(HEADINGS_JS)
        order = driver.execute_script(ORDER_JS)
        logs = driver.get_log("browser")
        driver.save_screenshot(str(screenshot))
    finally:
        driver.quit()
    errors = [entry for entry in logs if entry.get("level") == "SEVERE"]
    return {"images": images, "order": order, "errors": errors, "headings": headings}


def test_report_renders_in_headless_chromium(tmp_path: Path):
    """A run with spectral attacks among its baselines: its optional Fisher spectrum section too."""
    run = write_synthetic_run(tmp_path / "run", n_images=30, seed=1, spectral=True)
    page = build_report([run], n_boot=50)
    screenshot = page.with_name("report-screenshot.png")
    result = check_page(page, tmp_path / "profile", screenshot)
    assert len(result["images"]) >= 6
    assert any(h.startswith("Fisher spectrum") for h in result["headings"]), result["headings"]
    spectral = [
        alt for alt, _, _ in result["images"] if alt.startswith(("Success rate against", "Per image: lambda_1"))
    ]
    assert len(spectral) == 2, result["images"]
    broken = [alt for alt, complete, width in result["images"] if not complete or width <= 0]
    assert not broken, f"images that did not load: {broken}"
    assert result["errors"] == [], result["errors"]
    assert result["order"] is not None, "no summary block or no table on the page"
    summary_top, table_top, follows = result["order"]
    assert follows and summary_top < table_top
    assert screenshot.is_file() and screenshot.stat().st_size > 10_000


def test_a_broken_image_is_caught(tmp_path: Path):
    """The check fails on a page whose image does not load (so the test above can fail)."""
    page = tmp_path / "broken.html"
    page.write_text(
        "<!DOCTYPE html><html><body><section id='summary'>s</section><table><tr><td>1</td></tr></table>"
        "<img alt='missing' src='data:image/png;base64,AAAA'><script>console.error('boom')</script></body></html>"
    )
    result = check_page(page, tmp_path / "profile", tmp_path / "shot.png")
    assert [alt for alt, complete, width in result["images"] if width <= 0] == ["missing"]
    assert any("boom" in entry["message"] for entry in result["errors"])
