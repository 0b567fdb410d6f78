"""A real browser for tests that look at a page: Debian's chromium (installed
by hack/chromium.sh, never downloaded), driven headless by Playwright through
`executable_path`, with a fresh profile per page."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]
_PAGE_FACTS = """() => ({
  verdict: (document.getElementById('verdict') || {}).textContent || '',
  images: Array.from(document.images).map(i => ({alt: i.alt, complete: i.complete, naturalWidth: i.naturalWidth})),
  tables: document.querySelectorAll('table').length,
  text: document.body.innerText,
})"""


def chromium() -> str:
    done = subprocess.run(["bash", str(REPO / "hack/chromium.sh")], capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(f"hack/chromium.sh failed: {done.stderr[-1000:]}")
    return done.stdout.strip().splitlines()[-1]


def open_page(path: Path, screenshot: Path, width: int = 1280) -> dict:
    """Load a local file, wait until it has loaded, screenshot the whole page;
    returns what the page shows (verdict text, its images' load state, tables, text)."""
    from playwright.sync_api import sync_playwright

    binary = chromium()
    with tempfile.TemporaryDirectory(prefix="kubetune-chromium-") as profile, sync_playwright() as p:
        context = p.chromium.launch_persistent_context(profile, executable_path=binary, headless=True, args=FLAGS,
                                                       viewport={"width": width, "height": 900})
        try:
            page = context.new_page()
            page.goto(path.resolve().as_uri(), wait_until="load")
            page.screenshot(path=str(screenshot), full_page=True)
            return page.evaluate(_PAGE_FACTS)
        finally:
            context.close()
