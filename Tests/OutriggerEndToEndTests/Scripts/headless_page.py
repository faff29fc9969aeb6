"""A page in headless Chromium for the admin page tests: Debian's chromium-headless-shell driven by Playwright (no
browser download), with the page's script errors collected, and the way a check gives up."""
import shutil
import sys


def open_page(playwright, url, viewport):
    """The browser, the page loaded from `url`, and the list its script errors go to."""
    executable = shutil.which("chromium-headless-shell") or "/usr/lib/chromium/chromium-headless-shell"
    browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
    page = browser.new_page(viewport=viewport)
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(url)
    return browser, page, errors


def give_up(page, screenshot, why):
    """Saves what the page shows and exits 1 saying why and what it showed."""
    page.screenshot(path=screenshot, full_page=True)
    print(f"FAILED: {why}; page shows: {page.text_content('main')[:800]}", flush=True)
    sys.exit(1)
