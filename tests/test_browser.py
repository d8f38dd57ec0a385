"""The report and the documentation site as a browser shows them: Debian's headless Chromium
driven by Selenium.

Report: every image must load (natural width > 0), the console must stay free of errors, and the
summary block must sit above the first table; a screenshot is written next to the report.
Documentation: the site builds with ``mkdocs build --strict`` and every built page loads with its
images, without console errors and without links to missing files. Without chromium the tests
skip, except in CI (``CI=true``), where they must run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from contextlib import contextmanager
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote, unquote, urljoin, urlsplit

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


# ---------------------------------------------------------------- the documentation site

ROOT = Path(__file__).resolve().parents[1]
#: mkdocs build of the whole site (with the API reference) on a slow shared machine
SITE_BUILD_TIMEOUT_S = 300
LINKS_JS = """
return Array.from(document.querySelectorAll('a[href]')).map(a => a.getAttribute('href'));
"""
MATH_JS = "return document.querySelectorAll('math').length;"


def build_site(site: Path, benchmarks: Path | None = None) -> subprocess.CompletedProcess:
    """``mkdocs build --strict`` of the repository's docs into ``site`` (benchmark result files
    taken from ``benchmarks`` when given)."""
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    if benchmarks is not None:
        env["FRMARGIN_DOCS_BENCHMARKS"] = str(benchmarks)
    mkdocs = Path(sys.executable).with_name("mkdocs")
    command = [str(mkdocs) if mkdocs.exists() else "mkdocs", "build", "--strict", "--site-dir", str(site)]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=SITE_BUILD_TIMEOUT_S)


def broken_internal_links(page_url: str, base_url: str, site: Path, hrefs: list[str]) -> list[str]:
    """The links of the page at ``page_url`` that point into the site at ``base_url`` but not to
    a file of the built ``site``."""
    broken = []
    for href in hrefs:
        url = urljoin(page_url, href)
        if not url.startswith(base_url):
            continue  # another site, or mailto:
        target = site / unquote(urlsplit(url).path[len(urlsplit(base_url).path) :])
        if target.is_dir():
            target = target / "index.html"
        if not target.is_file():
            broken.append(href)
    return broken


@contextmanager
def serving(site: Path):
    """The folder ``site`` served over HTTP on a free local port, as ``mkdocs serve`` or a web
    host would: the base URL, while the context lasts."""
    handler = partial(QuietHandler, directory=str(site))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format, *args) -> None:  # the test's output stays readable
        pass


def check_site(site: Path, profile: Path) -> dict[str, dict]:
    """Open every page of the built ``site`` (served over HTTP) in one headless Chromium:
    images, console errors, links to files that are not there, formulas rendered as MathML."""
    driver = _browser(profile)
    results = {}
    try:
        with serving(site) as base:
            for page in sorted(site.rglob("*.html")):
                name = page.relative_to(site).as_posix()
                url = base + quote(name)
                driver.get(url)
                images = driver.execute_script(IMAGES_JS)
                hrefs = driver.execute_script(LINKS_JS)
                results[name] = {
                    "images": images,
                    "broken_images": [alt for alt, complete, width in images if not complete or width <= 0],
                    "broken_links": broken_internal_links(url, base, site, hrefs),
                    "errors": [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"],
                    "math": driver.execute_script(MATH_JS),
                }
    finally:
        driver.quit()
    return results


def test_the_documentation_site_builds_strict_and_every_page_loads_in_chromium(tmp_path: Path):
    benchmarks = tmp_path / "benchmarks"
    benchmarks.mkdir()
    (benchmarks / "fixture.json").write_text(json.dumps(BENCHMARK_FIXTURE))
    site = tmp_path / "site"
    build = build_site(site, benchmarks)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    results = check_site(site, tmp_path / "profile")
    expected = {
        "index.html",
        "method/index.html",
        "results/index.html",
        "results/spectrum/index.html",
        "benchmarks/index.html",
        "reference/api/index.html",
        "reference/cli/index.html",
        "design/index.html",
    }
    assert expected <= set(results), sorted(results)
    problems = {
        page: {k: r[k] for k in ("broken_images", "broken_links", "errors") if r[k]}
        for page, r in results.items()
        if r["broken_images"] or r["broken_links"] or r["errors"]
    }
    assert not problems, problems
    assert len(results["results/index.html"]["images"]) >= 3  # figures drawn from the result files
    assert len(results["benchmarks/index.html"]["images"]) >= 1  # the fixture's figure
    assert results["method/index.html"]["math"] >= 50  # formulas as MathML, no script needed
    assert "--max-steps" in (site / "reference/cli/index.html").read_text()
    assert "trace_paths" in (site / "reference/api/index.html").read_text()


def test_a_broken_link_in_a_page_is_caught(tmp_path: Path):
    """The site check fails on a page with a link to a missing file (so the test above can fail)."""
    site = tmp_path / "site"
    (site / "a").mkdir(parents=True)
    (site / "a" / "index.html").write_text(
        "<!DOCTYPE html><html><body><a href='../b/'>b</a><a href='../a/'>a</a>"
        "<a href='https://example.org/'>x</a><a href='#top'>t</a><a href='/a/'>root</a></body></html>"
    )
    results = check_site(site, tmp_path / "profile")
    assert results["a/index.html"]["broken_links"] == ["../b/"]


BENCHMARK_FIXTURE = {
    "schema": "frmargin-benchmark/1",
    "name": "fixture",
    "title": "A fixture benchmark (test data, not a measurement)",
    "command": "python benchmarks/bench_fixture.py --size quick --threads 1",
    "size": "quick",
    "date": "2026-12-07T10:00:00+00:00",
    "frmargin": "0.2.0",
    "commit": None,
    "torch": "2.13.0",
    "threads": 1,
    "machine": {"cpu": "test CPU", "cores": 2, "device": "cpu", "gpu": None, "load_average": 0.5},
    "units": {"seconds": "s"},
    "rows": [{"case": "a", "seconds": 1.0}, {"case": "b", "seconds": 2.0}],
}
