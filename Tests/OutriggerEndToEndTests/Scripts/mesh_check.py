#!/usr/bin/env python3
"""Loads the control plane's /mesh in headless Chromium (Debian's chromium-headless-shell, driven by Playwright) and
follows one sidecar through it: first SYNCED (prints "saw SYNCED"; the test then pushes a config the sidecar
refuses), then NACKED with the refusal shown. Saves a screenshot.

usage: mesh_check.py ADMIN_URL NODE SERVICE SCREENSHOT
Prints "ok" and what it saw, or exits 1 saying what was wrong.
"""
import json
import sys

from playwright.sync_api import sync_playwright

from headless_page import give_up, open_page

admin, node, service, screenshot = sys.argv[1:5]
sync = f'#sidecars tr[data-node="{node}"] td[data-sync]'

with sync_playwright() as playwright:
    browser, page, errors = open_page(playwright, admin + "/mesh", {"width": 1280, "height": 800})
    try:
        page.wait_for_function(f"""() => {{ const c = document.querySelector('{sync}'); return c && c.dataset.sync === 'SYNCED'; }}""",
                               timeout=60000)
        synced = {
            "services": page.text_content(f'#services tr[data-service="{service}"] td.sidecars'),
            "convergence": page.text_content("#convergence"),
            "bars": page.locator("#convergence-chart rect").count(),
        }
        print("saw SYNCED " + json.dumps(synced), flush=True)
        page.wait_for_function(f"""() => {{ const c = document.querySelector('{sync}'); return c && c.dataset.sync === 'NACKED'; }}""",
                               timeout=60000)
    except Exception as error:  # noqa: BLE001 - any wait that timed out says what the page showed instead
        give_up(page, screenshot, error)
    seen = {
        "synced": synced,
        "nack": page.text_content(f'#sidecars tr[data-node="{node}"] .nack'),
        "nacked": page.text_content(f'#services tr[data-service="{service}"] td:nth-child(5)'),
        "counters": page.text_content("#counters"),
    }
    page.screenshot(path=screenshot, full_page=True)
    browser.close()

if errors:
    print(f"FAILED: script errors: {errors}", flush=True)
    sys.exit(1)
print("ok " + json.dumps(seen, sort_keys=True), flush=True)
