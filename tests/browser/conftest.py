"""The page's fixtures: headless Chromium (Debian's, through Playwright), a real loop, `loopline ui`.

Playwright drives `/usr/bin/chromium` (`executable_path`): `playwright install` downloads
nothing here, and `make chromium` installs the Debian package where it is missing. Without it
the browser tests fail in CI and skip elsewhere, saying why (tests.conftest.require).
"""

from __future__ import annotations

import shutil
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import require

CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


def chromium_missing() -> str | None:
    if not Path(CHROMIUM).exists():
        return f"{CHROMIUM} is missing (make chromium: apt-get install chromium)"
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "Playwright for Python is not installed (pip install -e '.[test]')"
    return None


@pytest.fixture(scope="module")
def browser():
    require(chromium_missing(), "Chromium and Playwright for the page's browser tests")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


class Page:
    """A browser page with every console error and uncaught exception collected."""

    def __init__(self, page):
        self.page, self.errors = page, []
        page.on("console", lambda m: self.errors.append(f"console: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda exc: self.errors.append(f"page error: {exc}"))

    def __getattr__(self, name):
        return getattr(self.page, name)

    def screenshot_to(self, name: str, locator=None) -> Path:
        """docs/screenshots/NAME: the page (or one element), for the README; never compared as pixels."""
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / name
        (locator or self.page).screenshot(path=str(path))
        return path


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1500, "height": 820})
    wrapped = Page(context.new_page())
    yield wrapped
    context.close()
    assert not wrapped.errors, wrapped.errors


def http_json(url: str):
    import json

    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


def python() -> str:
    return sys.executable or shutil.which("python3")
