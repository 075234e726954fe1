"""Helpers the page tests share: open a page and hold it to showing no error, read a chart."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def visit(page: Any, url: str, shot: Path | None = None) -> Any:
    """Open `url`, wait until the page has rendered, fail on any error it shows or logs. When the
    app is already loaded from the same server, only its hash changes (as a click in it would):
    the page is not loaded again."""
    base, _, fragment = url.partition("#")
    if page.url.partition("#")[0] == base and page.evaluate("typeof navigate") == "function":
        page.evaluate("hash => navigate(hash)", fragment)
    else:
        page.goto(url)
    page.wait_for_selector("#page[data-state=ready]", timeout=30_000)
    page.wait_for_load_state("networkidle")
    assert_no_error(page)
    if shot is not None:
        page.screenshot(path=str(shot), full_page=False)
    return page


def settle(page: Any) -> None:
    """Wait until the page has rendered after a click (navigation marks it loading at once)."""
    page.wait_for_selector("#page[data-state=ready]", timeout=30_000)


def assert_no_error(page: Any) -> None:
    errors = [e.inner_text() for e in page.query_selector_all(".error")]
    assert not errors, f"the page shows an error: {errors}"
    assert not page.errors, f"the browser logged errors: {page.errors}"


def traces(page: Any, selector: str) -> list[dict[str, Any]]:
    """The plotted traces of the plotly chart at `selector`: name, points, and the finite y values."""
    return page.evaluate("""sel => (document.querySelector(sel).data || []).map(t => ({
        name: t.name, points: (t.x || []).length,
        y: (t.y || []).filter(v => typeof v === 'number' && isFinite(v))}))""", selector)


def drawn_lines(page: Any, selector: str) -> int:
    """How many plotted lines with a non-empty path the chart's SVG holds (a blank chart has 0)."""
    return page.evaluate("""sel => [...document.querySelectorAll(sel + ' .scatterlayer .trace path.js-line')]
        .filter(p => (p.getAttribute('d') || '').length > 10).length""", selector)
