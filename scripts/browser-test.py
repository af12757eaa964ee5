"""The live dashboard of `finpay up`, in a real browser (Playwright driving Debian's chromium).

Run by scripts/browser-test.sh, which starts the cluster; arguments: the data dir, the finpay
binary, the screenshot path. It checks what a person watching the dashboard would:

1. every replica shows ready;
2. with a small open-loop load running, "fraud: 30% errors" lands (fraud's tries per second
   exceed its calls per second: retries and hedges at work) while the success rate stays at
   100.0% and fraud's breaker stays closed;
3. "kill a fraud replica" kills one, its restart count rises and it comes back ready;
4. the load itself saw every payment answered.
"""

import json
import re
import subprocess
import sys
import time
from pathlib import Path

from playwright.sync_api import expect, sync_playwright

data_dir, finpay, screenshot = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
state = json.loads((data_dir / "cluster.json").read_text())
url = state["control_url"] + "/"
replicas = [r["name"] for r in state["replicas"]]


def say(msg):
    print(f"browser-test: {msg}", flush=True)


def number(page, element_id):
    text = page.locator(f"#{element_id}").inner_text()
    return float(text) if re.fullmatch(r"[0-9.]+", text) else None


with sync_playwright() as p:
    browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True)
    page = browser.new_page(viewport={"width": 1000, "height": 1100})
    page.goto(url)

    rows = page.locator("#replicas tbody tr")
    expect(rows).to_have_count(len(replicas), timeout=30_000)
    for name in replicas:
        expect(page.locator(f'#replicas tr[data-replica="{name}"]')).to_have_attribute(
            "data-ready", "yes", timeout=60_000
        )
    say(f"{len(replicas)} replicas ready: {', '.join(replicas)}")

    page.click("#action-restore")
    expect(page.locator("#action-status")).to_contain_text("every fault off", timeout=15_000)

    load = subprocess.Popen(
        [finpay, "load", "--url", state["payment_url"], "--duration", "45", "--rate", "40",
         "--concurrency", "8", "--json"],
        stdout=subprocess.PIPE,
    )
    time.sleep(6)
    page.click("#action-fraud-errors")
    expect(page.locator("#action-status")).to_contain_text("30% of fraud", timeout=15_000)
    say("fraud: 30% errors on")
    # Let the five-second window of the dashboard's points fill with faulted traffic.
    time.sleep(8)
    seen = []
    retried = False
    for _ in range(10):
        rate = page.locator("#success-rate").inner_text()
        seen.append(rate)
        assert rate == "100.0%", f"success rate shown {rate!r} (so far {seen})"
        expect(page.locator('#breakers tr[data-dependency="fraud"]').first).to_have_attribute(
            "data-state", "closed"
        )
        calls, tries = number(page, "fraud-effective"), number(page, "fraud-actual")
        retried |= calls is not None and tries is not None and tries > calls
        time.sleep(1)
    assert retried, "fraud's tries never exceeded its calls: the fault did not land"
    say(f"success rate under fraud errors: {seen}; fraud breaker closed; tries > calls")

    page.click("#action-kill-fraud")
    status = page.locator("#action-status")
    expect(status).to_contain_text("kill -9", timeout=15_000)
    killed = re.search(r"kill -9 (\S+)", status.inner_text()).group(1)
    row = page.locator(f'#replicas tr[data-replica="{killed}"]')
    before = int(next(r for r in state["replicas"] if r["name"] == killed)["restarts"])
    expect(row.locator(".restarts")).not_to_have_text(str(before), timeout=30_000)
    expect(row).to_have_attribute("data-ready", "yes", timeout=60_000)
    after = int(row.locator(".restarts").inner_text())
    assert after > before, f"{killed}: restarts {before} -> {after}"
    say(f"{killed} killed: restarts {before} -> {after}, ready again")

    out, _ = load.communicate(timeout=120)
    report = json.loads(out)
    assert report["requests"] > 0, report
    assert report["success_rate"] == 1.0, f"the load saw failures: {report['errors']}"
    say(f"load: {report['requests']} payments, success rate {report['success_rate']}")

    page.click("#action-restore")
    expect(page.locator("#action-status")).to_contain_text("every fault off", timeout=15_000)
    time.sleep(2)
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(screenshot), full_page=True)
    say(f"screenshot {screenshot}")
    browser.close()
