"""Output hygiene: gateway strings escaped in CLI output and logs, the report's CSP served as
a header, proxy HTML error pages classified instead of stored."""

from __future__ import annotations

import logging
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import faultserver
import pytest
from prometheus_client import CollectorRegistry

from aione_probe.cli import main
from aione_probe.config import GatewayConfig
from aione_probe.errors import FailureKind
from aione_probe.gateway import GatewayClient
from aione_probe.redact import RedactingFilter
from aione_probe.report import build_report_data, render_report
from aione_probe.server import STRICT_CSP, MetricsServer
from aione_probe.store import Store
from aione_probe.types import ChatRequest

ROOT = Path(__file__).resolve().parent.parent


def _gw(base_url: str) -> GatewayConfig:
    return GatewayConfig(
        name="proxy",
        base_url=base_url,
        auth="none",
        requests_per_minute=None,
        retries={"max_attempts": 1},
    )


async def test_proxy_html_error_page_is_http_5xx_with_a_detail_not_the_page() -> None:
    with faultserver.running() as server:
        async with GatewayClient(_gw(server.base_url)) as client:
            messages = ({"role": "user", "content": "hi"},)
            [obs] = await client.chat(ChatRequest(model="html:502", messages=messages))
    assert obs.failure is FailureKind.http_5xx and obs.status == 502
    assert obs.error_type == "html_error_page"
    assert obs.error_message == "an HTML error page (title: 502 Bad Gateway)"
    assert not obs.content


def test_models_command_escapes_hostile_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIONE_PROBE_TEST_GOOD_KEY", "good-key")
    with faultserver.running() as server:
        server.models = ["plain-model", *faultserver.HOSTILE_NAMES]
        cfg = tmp_path / "c.toml"
        cfg.write_text(
            f'[[gateways]]\nname = "fault"\nbase_url = "{server.base_url}"\n'
            'api_key_env = "AIONE_PROBE_TEST_GOOD_KEY"\n'
            f'[storage]\nurl = "sqlite:///{tmp_path / "p.db"}"\n'
        )
        assert main(["models", "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert len(lines) == 1 + 1 + len(faultserver.HOSTILE_NAMES), out  # one line per name
    assert "\x1b" not in out and "\r" not in out and "\x07" not in out
    assert "evil\\nINFO aione_probe: forged log line" in out
    assert "\\x1b[2J\\x1b[31mred-model" in out
    assert not any(line.startswith("INFO aione_probe") for line in lines)


def test_log_lines_show_control_characters_as_escapes() -> None:
    name = faultserver.HOSTILE_NAMES[0]
    record = logging.LogRecord("aione_probe.runner", logging.INFO, "", 0, "run %s", (name,), None)
    RedactingFilter().filter(record)
    text = logging.Formatter("%(levelname)s %(message)s").format(record)
    assert "\n" not in text and text == "INFO run evil\\nINFO aione_probe: forged log line"


def test_report_is_served_with_the_csp_of_the_file(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'r.db'}")
    store.migrate()
    now = datetime.now(UTC)
    render_report(build_report_data(store, since=now, until=now), tmp_path / "reports")
    page = (tmp_path / "reports" / "index.html").read_text()
    meta = page.split('http-equiv="Content-Security-Policy" content="', 1)[1].split('"', 1)[0]
    assert "default-src 'none'" in meta
    srv = MetricsServer(
        "127.0.0.1", 0, CollectorRegistry(), lambda: {"status": "ok"}, tmp_path / "reports"
    )
    srv.start()
    try:
        for path, expected in (("/report/", meta), ("/report/report.json", STRICT_CSP)):
            with urllib.request.urlopen(srv.url + path) as resp:
                assert resp.headers["Content-Security-Policy"] == expected
                assert resp.headers["X-Content-Type-Options"] == "nosniff"
    finally:
        srv.stop()
