"""The rendered report in headless Chromium: loads cleanly, offline, hostile output inert.

Chromium is driven over the DevTools protocol (websocket from ``DevToolsActivePort``).
"""

from __future__ import annotations

import base64
import itertools
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import ClientConnection, connect

from aione_probe.peers.llama import stop_child
from aione_probe.report import build_report_data, render_report
from aione_probe.store import Store

CHROMIUM = Path("/usr/bin/chromium")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's /usr/bin/chromium"),
]


class DevTools:
    """A minimal DevTools-protocol client for one page session."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.ids = itertools.count(1)
        self.events: list[dict[str, Any]] = []
        self.session: str | None = None

    def send(self, method: str, timeout: float = 15.0, **params: Any) -> dict[str, Any]:
        msg_id = next(self.ids)
        msg: dict[str, Any] = {"id": msg_id, "method": method, "params": params}
        if self.session:
            msg["sessionId"] = self.session
        self.ws.send(json.dumps(msg))
        deadline = time.monotonic() + timeout
        while True:
            reply = json.loads(self.ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if reply.get("id") == msg_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str, timeout: float = 15.0) -> dict[str, Any]:
        seen = next((e for e in self.events if e.get("method") == method), None)
        deadline = time.monotonic() + timeout
        while seen is None:
            event = json.loads(self.ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            self.events.append(event)
            if event.get("method") == method:
                seen = event
        return seen

    def drain(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                self.events.append(json.loads(self.ws.recv(timeout=left)))
            except TimeoutError:
                return


@pytest.fixture
def chromium(tmp_path: Path) -> Iterator[DevTools]:
    profile = tmp_path / "profile"
    profile.mkdir()
    proc = subprocess.Popen(
        [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
            f"--user-data-dir={profile}",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.exists() and len(port_file.read_text().splitlines()) >= 2):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"chromium did not start (exit code {proc.poll()})")
            time.sleep(0.1)
        port, path = port_file.read_text().splitlines()[:2]
        with connect(f"ws://127.0.0.1:{port}{path}", max_size=None, open_timeout=10) as ws:
            cdp = DevTools(ws)
            target = cdp.send("Target.createTarget", url="about:blank")["targetId"]
            attached = cdp.send("Target.attachToTarget", targetId=target, flatten=True)
            cdp.session = attached["sessionId"]
            yield cdp
    finally:
        stop_child(proc)


def _session_events(cdp: DevTools, method: str) -> list[dict[str, Any]]:
    return [e["params"] for e in cdp.events if e.get("method") == method]


def test_report_in_browser_is_clean_offline_and_inert(chromium: DevTools, tmp_path: Path) -> None:
    from test_report import SINCE, UNTIL, populate

    store = Store(f"sqlite:///{tmp_path / 'probe.db'}")
    store.migrate()
    populate(store)
    out = tmp_path / "report"
    render_report(build_report_data(store, since=SINCE, until=UNTIL), out)
    store.close()

    cdp = chromium
    for domain in ("Page", "Runtime", "Log", "Network"):
        cdp.send(f"{domain}.enable")
    cdp.send(
        "Emulation.setDeviceMetricsOverride",
        width=1200,
        height=900,
        deviceScaleFactor=1,
        mobile=False,
    )
    for page in ("index.html", "gw-a--gpt-4o.html"):
        cdp.events.clear()
        url = (out / page).as_uri()
        cdp.send("Page.navigate", url=url)
        cdp.wait_for("Page.loadEventFired")
        cdp.drain(0.5)

        requested = [p["request"]["url"] for p in _session_events(cdp, "Network.requestWillBeSent")]
        assert requested and all(u.startswith("file://") for u in requested), requested
        console = [
            p for p in _session_events(cdp, "Runtime.consoleAPICalled") if p["type"] == "error"
        ]
        log_errors = [
            p["entry"]
            for p in _session_events(cdp, "Log.entryAdded")
            if p["entry"]["level"] == "error"
        ]
        exceptions = _session_events(cdp, "Runtime.exceptionThrown")
        assert not console and not log_errors and not exceptions, (console, log_errors, exceptions)

        probe = cdp.send(
            "Runtime.evaluate",
            returnByValue=True,
            expression="""JSON.stringify({
                title: document.title,
                pwned: typeof window.__pwned,
                active: document.querySelectorAll('script, img, iframe, object, embed').length,
                text: document.body.innerText,
            })""",
        )
        state = json.loads(probe["result"]["value"])
        assert "pwned" not in state["title"]
        assert state["pwned"] == "undefined"
        assert state["active"] == 0
        if page != "index.html":
            # the payload is on the page, as visible text
            assert "<script>document.title='pwned'" in state["text"]
            assert "<svg onload=alert(1)>" in state["text"]

        metrics = cdp.send("Page.getLayoutMetrics")
        height = int(metrics["cssContentSize"]["height"])
        shot = cdp.send(
            "Page.captureScreenshot",
            format="png",
            captureBeyondViewport=True,
            clip={"x": 0, "y": 0, "width": 1200, "height": min(height, 6000), "scale": 1},
        )
        png = base64.b64decode(shot["data"])
        assert png.startswith(b"\x89PNG")
        (tmp_path / f"{page}.png").write_bytes(png)
        print(f"screenshot: {tmp_path / page}.png")
