#!/usr/bin/env python3
"""Loads a sidecar's /dashboard in headless Chromium (Debian's chromium-headless-shell, driven by Playwright; no
browser download) while traffic runs through the sidecar, and checks what a person would look at: the cluster's
request rate and totals moving, its success rate and latency, the routes' the same, the charts drawing, the endpoint
table (slow start ramps included), the local replies, and no script error. Saves a screenshot.

usage: dashboard_check.py ADMIN_URL PROXY_URL CLUSTER ENDPOINT_COUNT SCREENSHOT [--hold SECONDS] [--host HOST]
(--hold: keep the load on that long before the screenshot, for a picture with history; --host: the requests' Host)
Prints "ok" and what it saw, or exits 1 saying what was wrong.
"""
import http.client
import json
import sys
import threading
import urllib.parse

from playwright.sync_api import sync_playwright

from headless_page import give_up, open_page

admin, proxy, cluster, endpoint_count, screenshot = sys.argv[1:6]
endpoint_count = int(endpoint_count)
hold = float(sys.argv[sys.argv.index("--hold") + 1]) if "--hold" in sys.argv else 0
host = sys.argv[sys.argv.index("--host") + 1] if "--host" in sys.argv else None
stop = threading.Event()
sent = [0]


def load():
    target = urllib.parse.urlsplit(proxy)
    connection = http.client.HTTPConnection(target.hostname, target.port, timeout=10)
    while not stop.is_set():
        connection.request("GET", "/dashboard-load", headers={"Host": host} if host else {})
        connection.getresponse().read()
        sent[0] += 1


def fail(why):
    stop.set()
    print("FAILED: " + why, flush=True)
    sys.exit(1)


threads = [threading.Thread(target=load, daemon=True) for _ in range(2)]
for thread in threads:
    thread.start()

row = f'#clusters tr[data-cluster="{cluster}"]'
with sync_playwright() as playwright:
    browser, page, errors = open_page(playwright, admin + "/dashboard", {"width": 1280, "height": 1000})
    try:
        # The rate shows once two polls have come; the totals move from poll to poll.
        page.wait_for_function(f"""() => {{
            const cell = document.querySelector('{row} td.rps');
            return cell && parseFloat(cell.textContent) > 0;
        }}""", timeout=20000)
        first = int(page.text_content(f"{row} td.total"))
        page.wait_for_function(f"""() => parseInt(document.querySelector('{row} td.total').textContent) > {first}""", timeout=20000)
        page.wait_for_function("""() => Number(document.getElementById('status').dataset.updates) >= 4""", timeout=20000)
        page.wait_for_function(f"""() => {{
            const line = document.querySelector('svg[data-cluster="{cluster}"][data-chart="requests/s"] polyline.rps');
            return line && line.getAttribute('points').split(' ').length >= 3;
        }}""", timeout=20000)
    except Exception as error:  # noqa: BLE001 - any wait that timed out says what the page showed instead
        stop.set()
        give_up(page, screenshot, error)
    page.wait_for_timeout(hold * 1000)
    seen = {
        "rps": float(page.text_content(f"{row} td.rps")),
        "total_first": first,
        "total": int(page.text_content(f"{row} td.total")),
        "success": page.text_content(f"{row} td:nth-child(3)"),
        "p50": page.text_content(f"{row} td.p50"),
        "p99": page.text_content(f"{row} td.p99"),
        "endpoints": page.locator(f'#endpoints tr[data-cluster="{cluster}"]').count(),
        "replies": {r.get_attribute("data-reason"): int(r.locator("td.count").text_content())
                    for r in page.locator("#replies tr[data-reason]").all()},
        "version": page.text_content("#version"),
        "control": page.text_content("#control"),
        "spans": page.text_content("#spans"),
        "charts": page.locator("svg[data-cluster]").count(),
        "route_charts": page.locator("svg[data-route]").count(),
        "routes": {r.get_attribute("data-route"): {"total": int(r.locator("td.total").text_content()), "p99": r.locator("td.p99").text_content(),
                                                   "success": r.locator("td.success").text_content()}
                   for r in page.locator("#routes tr[data-route]").all()},
        "slow_start": [c.text_content() for c in page.locator(f'#endpoints tr[data-cluster="{cluster}"] td.slow-start').all()],
    }
    page.screenshot(path=screenshot, full_page=True)
    browser.close()
stop.set()

if errors:
    fail(f"script errors: {errors}")
if seen["endpoints"] != endpoint_count:
    fail(f"expected {endpoint_count} endpoint rows: {seen}")
if not seen["p50"].endswith(" ms") or not seen["p99"].endswith(" ms"):
    fail(f"no latency: {seen}")
print("ok " + json.dumps(seen, sort_keys=True), flush=True)
