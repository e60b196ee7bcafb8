"""Secrets: a key a gateway echoes back never reaches logs, the database, /metrics or reports."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import faultserver
import httpx

from aione_probe.redact import (
    REDACTED,
    RedactingFilter,
    printable,
    register_secret,
    scrub,
    scrub_value,
)

ROOT = Path(__file__).resolve().parent.parent
CANARY = "sk-nex-canary" + "Q7wErTy8uIoP" + "7f3a9b2c1d"


def _pieces(key: str) -> list[str]:
    """What must never appear: the key, its masked tail, and every 8-character piece of
    the part after the vendor prefix."""
    secret = key.removeprefix("sk-nex-")
    return [key, key[-10:], *(secret[i : i + 8] for i in range(len(secret) - 7))]


def test_scrub_removes_keys_masked_forms_and_sk_tokens() -> None:
    register_secret(CANARY)
    assert scrub(f"id={CANARY}; ok") == f"id={REDACTED}; ok"
    assert scrub("masked sk-nex-****7f3a9b2c1d here") == f"masked {REDACTED} here"
    assert scrub("tail ••••3a9b2c1d, end") == f"tail {REDACTED}, end"
    assert scrub("Bearer sk-proj-ABCDEFGH12345678") == f"Bearer {REDACTED}"
    # Not a key: short sk- words, and sk- inside a word.
    assert scrub("task-abcdefghij desk-assistant sk-short") == (
        "task-abcdefghij desk-assistant sk-short"
    )
    assert scrub_value({"a": [CANARY, 1], CANARY: None}) == {"a": [REDACTED, 1], REDACTED: None}
    register_secret("short")  # too short to register: its pieces would match everything
    assert scrub("a short word") == "a short word"


def test_printable_shows_control_characters_as_escapes() -> None:
    assert printable("evil\nINFO forged\x1b[31m\t\u202e") == "evil\\nINFO forged\\x1b[31m\\t\\u202e"
    assert printable("plain 模型 é") == "plain 模型 é"


def test_log_filter_scrubs_messages_arguments_and_tracebacks() -> None:
    register_secret(CANARY)
    record = logging.LogRecord("httpcore.http11", logging.DEBUG, "", 0, "headers %r", None, None)
    record.args = ([(b"x-request-id", CANARY.encode())],)
    try:
        raise RuntimeError(f"boom {CANARY}")
    except RuntimeError:
        record.exc_info = sys.exc_info()
    assert RedactingFilter().filter(record)
    text = logging.Formatter().format(record)
    assert CANARY not in text and "7f3a9b2c1d" not in text and REDACTED in text


def _config(tmp_path: Path, base_url: str, port: int) -> Path:
    suite = tmp_path / "echo.toml"
    suite.write_text(
        '[suite]\nid = "echo"\nversion = 1\n'
        '[[probe]]\nid = "plain"\nprompt = "Say hello."\nmax_tokens = 8\n'
        '[[probe]]\nid = "streamed"\nprompt = "Say hello."\nmax_tokens = 8\nstream = true\n'
    )
    cfg = tmp_path / "canary.toml"
    cfg.write_text(
        f"""
[[gateways]]
name = "canary"
base_url = "{base_url}"
api_key_env = "AIONE_PROBE_CANARY_KEY"
models = ["echo:header", "echo:body", "echo:masked", "hostile:x"]
requests_per_minute = 6000
retries = {{ max_attempts = 2, base_delay = "50ms", max_delay = "100ms" }}

[[suites]]
file = "{suite}"
interval = "2s"

[storage]
url = "sqlite:///{tmp_path / "canary.db"}"

[server]
listen = "127.0.0.1:{port}"

[reports]
dir = "{tmp_path / "reports"}"
"""
    )
    return cfg


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_canary_key_echoed_by_the_gateway_is_nowhere(tmp_path: Path) -> None:
    """serve -v against a gateway echoing the key in a header, an error body and masked:
    zero hits in the log, the database files, a /metrics scrape and the report."""
    port = _free_port()
    with faultserver.running() as server:
        cfg = _config(tmp_path, server.base_url, port)
        env = {**os.environ, "AIONE_PROBE_CANARY_KEY": CANARY, "PYTHONUNBUFFERED": "1"}
        log_path = tmp_path / "serve.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "aione_probe", "-v", "serve", "--config", str(cfg)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
            try:
                deadline = time.monotonic() + 60
                scrape = ""
                while time.monotonic() < deadline:
                    with contextlib.suppress(httpx.HTTPError):
                        scrape = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
                    # Series are declared at 0 from the start: count those that moved.
                    runs = re.findall(
                        r'^aione_probe_suite_runs_total\{gateway="canary"[^}]*\} (\S+)$',
                        scrape,
                        re.M,
                    )
                    if sum(float(v) > 0 for v in runs) >= 4:
                        break
                    time.sleep(0.5)
                proc.send_signal(signal.SIGTERM)
                assert proc.wait(timeout=60) == 0
            finally:
                if proc.poll() is None:
                    proc.kill()
        # The gateway really did echo it, over the wire.
        assert any(s.model == "echo:header" for s in server.seen)
    assert 'response_model="fault-model"' in scrape or "aione_probe_requests_total" in scrape
    logged = log_path.read_text(errors="replace")
    assert "httpcore" in logged  # -v: the DEBUG lines that print headers were on
    assert "x-request-id" in logged
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("canary.db*"))
    assert b"[redacted]" in stored
    report = "".join(p.read_text() for p in (tmp_path / "reports").glob("*.*"))
    assert report
    for name, text in {"log": logged, "metrics": scrape, "report": report}.items():
        for piece in _pieces(CANARY):
            assert piece not in text, (name, piece)
    for piece in _pieces(CANARY):
        assert piece.encode() not in stored, ("db", piece)
