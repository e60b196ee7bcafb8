"""Run real aione-probe fleet instances against a real PostgreSQL, for tests and bench/fleet.py.

Each instance is an ``aione-probe serve`` process (so SIGKILL is a real kill) with its own
config file: one ``[fleet]`` section, one gateway on loopback, a small probe suite. The
database is a fresh one created on the server named by the libpq environment (``PG*``,
as `pg_virtualenv` sets it) and dropped afterwards.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

SUITE = """
[suite]
id = "{id}"
version = {version}
description = "fleet test suite"
default_checks = [{{ name = "usage_total" }}]

[suite.defaults]
max_tokens = 16
temperature = 0.0
stream = true
cheap = true
difficulty = "easy"

[[probe]]
id = "hello-01"
category = "smoke"
prompt = "Say hello to {{{{who}}}}."
[probe.vars]
who = {{ gen = "choice", values = ["Ada", "Grace", "Edsger", "Barbara"] }}

[[probe]]
id = "hello-02"
category = "smoke"
prompt = "Say hello to {{{{n}}}}."
[probe.vars]
n = {{ gen = "int", min = 100, max = 999 }}
"""


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def fresh_database() -> Iterator[str]:
    """Create an empty database on the ``PG*`` server; yield its URL; drop it after."""
    import psycopg

    name = f"fleet_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(dbname="postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql:///{name}"
    finally:
        with psycopg.connect(dbname="postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class Instance:
    """One ``aione-probe serve`` process of the fleet."""

    name: str
    location: str
    config: Path
    port: int
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    starts: list[float] = field(default_factory=list)

    def start(self, *, nice: int = 0) -> None:
        """Start the process (stdout and stderr appended to `log`)."""
        cmd = [sys.executable, "-m", "aione_probe", "serve", "--config", str(self.config)]
        if nice:
            cmd = ["nice", "-n", str(nice), *cmd]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True
            )
        self.starts.append(time.time())

    def health(self) -> dict[str, Any] | None:
        """The /healthz body, or None when it does not answer."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=2) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as exc:
            return json.loads(exc.read())
        except (OSError, ValueError):
            return None

    def wait_healthy(self, timeout_s: float = 60.0) -> dict[str, Any]:
        """Wait until /healthz says ok; raise with the log's tail if it does not."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            body = self.health()
            if body and body.get("status") == "ok":
                return body
            if self.proc is not None and self.proc.poll() is not None:
                break
            time.sleep(0.5)
        raise RuntimeError(f"{self.name} not healthy: {self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL the whole process group (the service and its metrics child)."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout_s: float = 60.0) -> int | None:
        """SIGTERM and wait; returns the exit code (None if it had to be killed)."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            return None


def write_suite(folder: Path, suite_id: str = "fleet", version: int = 1) -> Path:
    """A two-probe templated suite file; returns its path."""
    path = folder / f"{suite_id}.toml"
    path.write_text(SUITE.format(id=suite_id, version=version))
    return path


def write_config(
    folder: Path,
    *,
    url: str,
    location: str,
    name: str,
    gateway_url: str,
    models: list[str],
    suites: list[tuple[str, str]],
    interval_s: int,
    jitter_s: float = 0.0,
    heartbeat_s: float = 2.0,
    stalled_after_s: float = 8.0,
    concurrency: int = 200,
    daily_cap: float | None = None,
    gateways: int = 1,
) -> Instance:
    """Write one instance's config; `suites` are (suite file, name) pairs.

    With `gateways` > 1 the same endpoint is configured that many times (``local-0`` …),
    each serving every model in `models`: gateways x models targets.
    """
    port = free_port()
    lines = [
        f'probes_dir = "{folder}"',
        "[server]",
        f'listen = "127.0.0.1:{port}"',
        "[reports]",
        f'dir = "{folder / ("reports-" + name)}"',
        "[fleet]",
        f'url = "{url}"',
        f'location = "{location}"',
        f'instance = "{name}"',
        f"heartbeat = {heartbeat_s}",
        f"stalled_after = {stalled_after_s}",
        f"concurrency = {concurrency}",
    ]
    for i in range(gateways):
        lines += [
            "[[gateways]]",
            f'name = "{"local" if gateways == 1 else f"local-{i}"}"',
            f'base_url = "{gateway_url}"',
            'auth = "none"',
            f"models = {json.dumps(models)}",
            "max_concurrency = 64",
            "requests_per_minute = 60000",
            f'headers = {{ "x-fleet-location" = "{location}" }}',
            'timeouts = { connect = "5s", first_token = "20s", idle = "10s", total = "30s" }',
            "retries = { max_attempts = 1 }",
        ]
    lines += [
        '[pricing."*"]',
        "input = 1.0",
        "output = 2.0",
    ]
    if daily_cap is not None:
        lines += ["[budget]", f"daily_cap = {daily_cap}"]
    for file, suite_name in suites:
        lines += [
            "[[suites]]",
            f'file = "{file}"',
            f'name = "{suite_name}"',
            f'interval = "{interval_s}s"',
            f'jitter = "{jitter_s}s"',
        ]
    config = folder / f"{name}.toml"
    config.write_text("\n".join(lines) + "\n")
    return Instance(name, location, config, port, folder / f"{name}.log")


class CuttableProxy:
    """A TCP proxy to the ``PG*`` server that can drop every connection and refuse new ones
    (`cut`) until `restore`: a database lost and found again, as an instance sees it."""

    def __init__(self) -> None:
        host = os.environ.get("PGHOST", "localhost")
        port = int(os.environ.get("PGPORT", "5432"))
        self._unix = f"{host}/.s.PGSQL.{port}" if host.startswith("/") else None
        self._target = (host, port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._open = threading.Event()
        self._open.set()
        self._socks: set[socket.socket] = set()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, database_url: str) -> str:
        """`database_url` (``postgresql:///name``) through this proxy, with the PG* user."""
        from sqlalchemy.engine import make_url

        url = make_url(database_url).set(
            host="127.0.0.1",
            port=self.port,
            username=os.environ.get("PGUSER"),
            password=os.environ.get("PGPASSWORD"),
        )
        return url.render_as_string(hide_password=False)

    def _upstream(self) -> socket.socket:
        if self._unix:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(self._unix)
            return s
        return socket.create_connection(self._target)

    def _accept(self) -> None:
        while True:
            client, _ = self._listener.accept()
            if not self._open.is_set():
                client.close()
                continue
            upstream = self._upstream()
            with self._lock:
                self._socks |= {client, upstream}
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        """Drop every open connection; refuse new ones."""
        self._open.clear()
        with self._lock:
            socks, self._socks = self._socks, set()
        for s in socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def restore(self) -> None:
        """Accept connections again."""
        self._open.set()
