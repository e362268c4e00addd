"""The report in a real browser: headless Chromium (Debian's `chromium`, installed with apt-get when
missing) loads output/report/index.html from disk, driven over the Chrome DevTools Protocol.

Asserts: the page's script ran (body[data-report-ready=yes]); every section id is present and laid
out (non-zero height); each paper table and every figure renders with a non-zero box; no console
errors, uncaught exceptions or failed resource loads; then saves a full-page screenshot to
<output>/report/screenshot.png (KEYTECH_OUTPUT_DIR or output/)."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest


pytestmark = [pytest.mark.browser, pytest.mark.slow]

FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio", "--window-size=1280,900",
]


def _find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None


def ensure_chromium() -> str:
    """Path to Chromium, installing Debian's package when missing; skip only when that is impossible."""
    found = _find_chromium()
    if found:
        return found
    if shutil.which("apt-get") is None:
        pytest.skip("headless Chromium is not installed and apt-get is not available to install it")
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        pytest.skip("headless Chromium is not installed and installing it needs root (apt-get install chromium)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = ["apt-get", "install", "-y", "-q", "chromium"]
    result = subprocess.run(install, env=env, capture_output=True, text=True, timeout=1200)
    if result.returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, text=True, timeout=600)
        result = subprocess.run(install, env=env, capture_output=True, text=True, timeout=1200)
    # a CJK font so Chinese names do not render as boxes in the screenshot (best effort)
    subprocess.run(["apt-get", "install", "-y", "-q", "fonts-wqy-microhei"], env=env, capture_output=True, text=True, timeout=600)
    found = _find_chromium()
    if not found:
        pytest.skip("could not install Debian's chromium package: " + (result.stderr or result.stdout)[-400:])
    return found


class DevTools:
    """Minimal Chrome DevTools Protocol client over the `websockets` sync client."""

    def __init__(self, ws_url: str):
        from websockets.sync.client import connect

        self._connection = connect(ws_url, max_size=None, open_timeout=30)
        self.ws = self._connection.__enter__()
        self.next_id = 0
        self.events: list[dict] = []

    def send(self, method: str, params: dict | None = None, timeout: float = 60) -> dict:
        self.next_id += 1
        message_id = self.next_id
        self.ws.send(json.dumps({"id": message_id, "method": method, "params": params or {}}))
        deadline = time.monotonic() + timeout
        while True:
            message = json.loads(self.ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if message.get("id") == message_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def wait_event(self, method: str, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        for event in self.events:
            if event.get("method") == method:
                return event
        while time.monotonic() < deadline:
            message = json.loads(self.ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            self.events.append(message)
            if message.get("method") == method:
                return message
        raise TimeoutError(method)

    def evaluate(self, expression: str):
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in result:
            raise RuntimeError(result["exceptionDetails"])
        return result["result"].get("value")

    def close(self) -> None:
        self._connection.__exit__(None, None, None)


@pytest.fixture(scope="module")
def report_page(tiny_demo_warehouse) -> Path:
    from keytech.report import build_report

    built = tiny_demo_warehouse
    return build_report(db_path=built["db"], out_dir=built["out"] / "report", raw_dir=built["raw"],
                        landing_dir=built["landing"])


@pytest.fixture(scope="module")
def browser():
    chromium = ensure_chromium()
    profile = tempfile.mkdtemp(prefix="keytech-chromium-")
    process = subprocess.Popen([chromium, *FLAGS, f"--user-data-dir={profile}", "--remote-debugging-port=0",
                                "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        port_file = Path(profile) / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not port_file.exists() or not port_file.read_text().strip():
            if process.poll() is not None:
                pytest.fail(f"chromium exited with {process.returncode}: {process.stderr.read()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail("chromium did not open its DevTools port within 60 s")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as response:
            targets = json.loads(response.read())
        page = next(t for t in targets if t.get("type") == "page")
        client = DevTools(page["webSocketDebuggerUrl"])
        yield client
        client.close()
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        shutil.rmtree(profile, ignore_errors=True)


def test_report_renders_in_chromium_without_errors(report_page: Path, browser: DevTools):
    from keytech import paths
    from keytech.report import SECTION_IDS

    for domain in ("Runtime.enable", "Log.enable", "Page.enable", "Network.enable"):
        browser.send(domain)
    browser.send("Page.navigate", {"url": report_page.resolve().as_uri()})
    browser.wait_event("Page.loadEventFired", timeout=60)
    deadline = time.monotonic() + 30
    while browser.evaluate("document.body && document.body.getAttribute('data-report-ready')") != "yes":
        assert time.monotonic() < deadline, "the page's script did not finish (data-report-ready never set)"
        time.sleep(0.2)

    state = browser.evaluate(
        """(() => {
          const box = el => { const r = el.getBoundingClientRect(); return [Math.round(r.width), Math.round(r.height)]; };
          const sections = {};
          document.querySelectorAll('main section').forEach(s => { sections[s.id] = {box: box(s),
              tables: s.querySelectorAll('table').length, figures: s.querySelectorAll('svg.figure-svg').length}; });
          const figures = Array.from(document.querySelectorAll('svg.figure-svg')).map(f => ({name: f.dataset.figure, box: box(f)}));
          const tables = Array.from(document.querySelectorAll('main table')).map(t => ({id: t.id, box: box(t),
              rows: t.querySelectorAll('tbody tr').length}));
          const external = Array.from(document.querySelectorAll('[src],link[href]')).map(e => e.getAttribute('src') || e.getAttribute('href'));
          return {sections, figures, tables, external, banner: !!document.getElementById('synthetic-banner'),
                  title: document.title, height: document.documentElement.scrollHeight};
        })()""")
    # every section is present and laid out
    for section_id in SECTION_IDS:
        assert section_id in state["sections"], f"section #{section_id} missing from the DOM"
        width, height = state["sections"][section_id]["box"]
        assert width > 300 and height > 40, f"section #{section_id} not rendered: {width}x{height}"
    assert state["banner"], "synthetic-data banner missing"
    # tables: the paper tables 3-7 and the data tables, each with rows and a box
    table_ids = {t["id"] for t in state["tables"]}
    for expected in ("paper-table3", "paper-table4", "paper-table5", "paper-table6", "paper-table7",
                     "funnel-table", "descriptives-table", "rollout-table", "patents-table", "quality-table"):
        assert expected in table_ids, f"table #{expected} missing"
    for t in state["tables"]:
        assert t["rows"] > 0 and t["box"][0] > 0 and t["box"][1] > 0, f"table {t['id']} empty or not laid out: {t}"
    # figures: every SVG has a visible box
    names = {f["name"] for f in state["figures"]}
    assert {"event-study", "placebo", "rollout", "patents-by-field", "funnel"} <= names, names
    for f in state["figures"]:
        assert f["box"][0] > 200 and f["box"][1] > 100, f"figure {f['name']} not rendered: {f['box']}"
    # self-contained: no external resources
    assert not [u for u in state["external"] if u and not u.startswith(("data:", "#"))], state["external"]

    # console errors, uncaught exceptions, failed loads
    problems = []
    for event in browser.events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            problems.append(("console", [a.get("value") or a.get("description") for a in params.get("args", [])]))
        elif method == "Runtime.exceptionThrown":
            problems.append(("exception", params.get("exceptionDetails", {}).get("text")))
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            problems.append(("log", params["entry"].get("text"), params["entry"].get("url")))
        elif method == "Network.loadingFailed":
            problems.append(("network", params.get("errorText")))
    assert not problems, problems

    # full-page screenshot under output/
    height = min(int(state["height"]) + 20, 16000)
    browser.send("Emulation.setDeviceMetricsOverride", {"width": 1280, "height": height, "deviceScaleFactor": 1, "mobile": False})
    shot = browser.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True}, timeout=120)
    target = paths.output_dir() / "report" / "screenshot.png"
    target.parent.mkdir(parents=True, exist_ok=True)
    data = base64.b64decode(shot["data"])
    target.write_bytes(data)
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 50_000, "screenshot is not a real page image"
