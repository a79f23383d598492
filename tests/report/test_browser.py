"""The report in a real browser (headless Chromium driven by Playwright): it loads without a
console error or a network request, runs its script under its own CSP, sorts and filters, and
paints something. One browser for the whole module; skipped only where Chromium is missing."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from auditcam.config import AnalysisOptions, Checks
from auditcam.files import atomic_write
from auditcam.report import render_comparison, render_html, render_index
from auditcam.result import compare
from tests.records import audit_result, gallery, samples

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Chromium not found on PATH: install Debian's chromium (apt-get install chromium)"
)
# the flags of issue 6; Playwright adds --headless and a fresh --user-data-dir of its own
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
]
EVIL_GROUP = "<img src=x onerror=alert(1)>"
EVIL_CLASS = "<script>alert(2)</script>"


@pytest.fixture(scope="module")
def pages(tmp_path_factory) -> dict[str, Path]:
    """A report (hostile group and class names, invalid samples, a gallery), a comparison and an index."""
    out = tmp_path_factory.mktemp("browser")
    frame = samples(
        {"light": 70, "dark": 70, EVIL_GROUP: 40},
        share={"dark": 0.2},
        classes=("circle", EVIL_CLASS, "cross"),
        invalid_rate=0.05,
        seed=6,
    )
    options = AnalysisOptions(bootstrap=100)
    before = audit_result(frame, Checks(), options, name="before", exemplars=gallery(frame, size=4))
    retrained = frame.assign(subject_share=(frame["subject_share"] + 0.3).clip(upper=1.0))
    retrained["focus_lift"] = retrained["subject_share"] / retrained["subject_area"]
    retrained["background_reliant"] = (retrained["focus_lift"] < 1).astype(float)
    after = audit_result(retrained, Checks(), options, name="after")
    paths = {name: out / f"{name}.html" for name in ("report", "comparison", "index")}
    atomic_write(paths["report"], render_html(before))
    atomic_write(paths["comparison"], render_comparison(compare(before, after)))
    index = render_index("two audits", "intro", {"before": (before, "report.html")})
    atomic_write(paths["index"], index)
    return paths


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        yield launched
        launched.close()


class Visit:
    """A page opened in a fresh context, with everything it logged, requested or popped up."""

    def __init__(self, browser, path: Path) -> None:
        self.context = browser.new_context(viewport={"width": 1280, "height": 900})
        self.page = self.context.new_page()
        self.console: list[str] = []
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.dialogs: list[str] = []
        self.failed: dict[str, str | None] = {}
        self.page.on("console", lambda m: self.console.append(f"{m.type}: {m.text}"))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("requestfailed", lambda r: self.failed.update({r.url: r.failure}))
        self.page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))
        self.url = path.as_uri()
        self.page.goto(self.url, wait_until="load")

    def clean(self) -> None:
        assert [m for m in self.console if m.startswith(("error", "warning"))] == []
        assert self.errors == [] and self.dialogs == []
        assert self.requests == [self.url]  # the page itself, nothing else

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def visit(browser):
    opened: list[Visit] = []

    def open_page(path: Path) -> Visit:
        opened.append(Visit(browser, path))
        return opened[-1]

    yield open_page
    for v in opened:
        v.close()


COLUMN = """(t, i) => Array.from(t.tBodies[0].rows).filter(r => !r.hidden)
    .map(r => r.cells[i].getAttribute('data-sort') ?? r.cells[i].textContent.trim())"""


def _column(table, index: int) -> list[str]:
    """The visible rows' values in one column: the sort key of a number, else the text."""
    return table.evaluate(COLUMN, index)


def test_report_loads_clean_and_renders_its_parts(pages, visit):
    v = visit(pages["report"])
    page = v.page
    v.clean()
    assert page.evaluate("document.documentElement.classList.contains('js')")  # the script ran under the CSP
    banner = page.locator("#verdict .banner").inner_text()
    assert banner.startswith("✘ FAILED") or banner.startswith("✔ PASSED")
    for section in ("verdict", "run", "numbers", "classes", "groups", "disparities", "figures", "gallery", "invalid"):
        assert page.locator(f"section#{section}").is_visible(), section
    broken = page.evaluate("Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).length")
    assert broken == 0 and page.evaluate("document.images.length") > 10  # charts and thumbnails decoded
    assert page.locator("article.card").count() == 8
    assert page.locator("table.sortable").count() >= 6
    assert EVIL_GROUP in page.locator("#groups").inner_text()  # shown as text, not run


def test_sorting_a_table_reorders_its_rows(pages, visit):
    page = visit(pages["report"]).page
    table = page.locator("#groups table.sortable").first
    header = table.locator("thead th").nth(3)  # mean subject_share
    assert "subject_share" in header.inner_text()
    before = [float(x) for x in _column(table, 3)]
    header.locator("button.sort").click()
    ascending = [float(x) for x in _column(table, 3)]
    assert ascending == sorted(before) and header.get_attribute("aria-sort") == "ascending"
    header.locator("button.sort").click()
    assert [float(x) for x in _column(table, 3)] == sorted(before, reverse=True)
    assert header.get_attribute("aria-sort") == "descending"
    name_header = table.locator("thead th").first
    name_header.locator("button.sort").click()
    names = _column(table, 0)
    assert names == sorted(names, key=str.lower) and len(names) == 3
    name_header.locator("button.sort").click()
    assert _column(table, 0) == names[::-1]


def test_filtering_hides_rows_and_gallery_cards(pages, visit):
    page = visit(pages["report"]).page
    block = page.locator("#groups .table-block").first
    block.locator("input.table-filter").fill("dark")
    rows = block.locator("tbody tr:visible")
    assert rows.count() == 1 and "dark" in rows.first.inner_text()
    assert block.locator(".filter-count").inner_text() == "1 of 3 rows"
    gallery = page.locator(".gallery-block").first
    select = gallery.locator("select[data-key='cls']")
    options = select.locator("option").evaluate_all("os => os.map(o => o.value).filter(Boolean)")
    chosen = options[0]
    select.select_option(chosen)
    shown = gallery.locator("article.card:visible")
    total = gallery.locator("article.card").count()
    kinds = shown.evaluate_all("cs => cs.map(c => c.getAttribute('data-cls'))")
    assert kinds and set(kinds) == {chosen} and shown.count() < total
    assert gallery.locator(".filter-count").inner_text() == f"{shown.count()} of {total} shown"


def test_the_policy_blocks_any_fetch(pages, visit):
    v = visit(pages["report"])
    outcome = v.page.evaluate(
        """() => new Promise(resolve => {
            document.addEventListener('securitypolicyviolation', e => resolve(e.effectiveDirective), {once: true});
            const img = new Image(); img.src = 'https://example.invalid/pixel.png'; document.body.appendChild(img);
        })"""
    )
    assert outcome == "img-src"
    v.page.wait_for_timeout(200)
    assert v.failed == {"https://example.invalid/pixel.png": "csp"}  # refused by the policy, never sent
    assert any("violates the following Content Security Policy" in m for m in v.console)  # what clean() rejects


def test_a_screenshot_is_not_blank(pages, visit):
    page = visit(pages["report"]).page
    shot = cv2.imdecode(np.frombuffer(page.screenshot(full_page=False), np.uint8), cv2.IMREAD_COLOR)
    assert shot.shape[:2] == (900, 1280)
    inked = np.any(shot < 200, axis=-1).mean()
    assert shot.std() > 20 and 0.02 < inked < 0.6  # text, tables and the verdict box on a white page
    verdict = page.locator("#verdict").bounding_box()
    assert verdict["y"] < 300  # the verdict is in the first screenful


def test_comparison_and_index_load_clean_and_sort(pages, visit):
    v = visit(pages["comparison"])
    v.clean()
    page = v.page
    assert "B PASSES ITS CHECKS" in page.locator("#verdict .banner").inner_text()
    table = page.locator("#groups table.sortable").first
    header = table.locator("thead th").nth(4)  # B − A
    header.locator("button.sort").click()
    deltas = [float(x) for x in _column(table, 4)]
    assert deltas == sorted(deltas) and len(deltas) > 3
    index = visit(pages["index"])
    index.clean()
    assert index.page.locator("a[href='report.html']").count() == 1
