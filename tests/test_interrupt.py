"""Stopping: Ctrl-C is prompt (3 s grace, a second one exits at once), SIGTERM drains."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import faultserver
import httpx

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_in_flight(listen: str, proc: subprocess.Popen[bytes], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the service exited early"
        try:
            if httpx.get(f"http://{listen}/healthz", timeout=2).json()["runs_in_progress"] > 0:
                return
        except (httpx.HTTPError, ValueError, KeyError):
            pass
        time.sleep(0.2)
    raise AssertionError("no run in progress")


def _start(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    # Its own process group, like a foreground job: Ctrl-C reaches every process in it.
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "aione_probe", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )


def _exit_after(proc: subprocess.Popen[bytes], sig: signal.Signals, timeout: float) -> float:
    t0 = time.monotonic()
    os.killpg(proc.pid, sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    return time.monotonic() - t0


def test_demo_exits_within_5_s_of_ctrl_c(tmp_path: Path) -> None:
    """`make demo` runs `aione-probe demo`; here on free ports and a private store."""
    gw_port, listen = _free_port(), f"127.0.0.1:{_free_port()}"
    text = (ROOT / "examples" / "demo.toml").read_text()
    text = text.replace('probes_dir = "../probes"', f'probes_dir = "{ROOT / "probes"}"')
    text = text.replace("127.0.0.1:8900", f"127.0.0.1:{gw_port}")
    text = text.replace('listen = "127.0.0.1:9464"', f'listen = "{listen}"')
    text = text.replace("../.demo/aione-probe.db", str(tmp_path / "demo.db"))
    text = text.replace('dir = "../reports"', f'dir = "{tmp_path / "reports"}"')
    cfg = tmp_path / "demo.toml"
    cfg.write_text(text)
    proc = _start(["demo", "--config", str(cfg)], tmp_path / "demo.log")
    try:
        _wait_in_flight(listen, proc)
        elapsed = _exit_after(proc, signal.SIGINT, timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    log = (tmp_path / "demo.log").read_text()
    assert elapsed < 5.0, (elapsed, log[-2000:])
    assert proc.returncode == 130, log[-2000:]
    with sqlite3.connect(tmp_path / "demo.db") as db:
        running = db.execute("select count(*) from suiterun where status = 'running'").fetchone()
    assert running == (0,)


def _fault_config(tmp_path: Path, base_url: str, listen: str, model: str) -> Path:
    suite = tmp_path / "slow.toml"
    suite.write_text(
        '[suite]\nid = "slow"\nversion = 1\n'
        '[[probe]]\nid = "drip"\nprompt = "Count."\nmax_tokens = 500\nstream = true\n'
    )
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        f'[[gateways]]\nname = "faults"\nbase_url = "{base_url}"\nauth = "none"\n'
        f'models = ["{model}"]\n'
        'timeouts = { first_token = "20s", idle = "20s", total = "60s" }\n'
        f'[[suites]]\nfile = "{suite}"\ninterval = "1h"\n'
        f'[storage]\nurl = "sqlite:///{tmp_path / "p.db"}"\n'
        f'[server]\nlisten = "{listen}"\n'
        f'[reports]\ndir = "{tmp_path / "reports"}"\n'
    )
    return cfg


def _runs(tmp_path: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(tmp_path / "p.db") as db:
        return db.execute("select status, coalesce(reason, '') from suiterun").fetchall()


def test_first_ctrl_c_gives_3_s_then_marks_interrupted_second_exits_now(tmp_path: Path) -> None:
    listen = f"127.0.0.1:{_free_port()}"
    with faultserver.running() as server:
        cfg = _fault_config(tmp_path, server.base_url, listen, "slow:30")
        proc = _start(["serve", "--config", str(cfg)], tmp_path / "a.log")
        try:
            _wait_in_flight(listen, proc)
            first = _exit_after(proc, signal.SIGINT, timeout=20)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        assert proc.returncode == 130
        assert 2.5 < first < 5.0, first  # the 3 s grace, not the 30 s drain
        assert _runs(tmp_path) == [("failed", "interrupted by shutdown")]
        log = (tmp_path / "a.log").read_text()
        assert "Traceback" not in log and "interrupted by shutdown" in log, log[-2000:]

        proc = _start(["serve", "--config", str(cfg)], tmp_path / "b.log")
        try:
            _wait_in_flight(listen, proc)
            os.killpg(proc.pid, signal.SIGINT)
            time.sleep(0.3)
            second = _exit_after(proc, signal.SIGINT, timeout=20)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130 and second < 1.0, second
    assert "second interrupt: exiting now" in (tmp_path / "b.log").read_text()


def test_sigterm_keeps_the_drain(tmp_path: Path) -> None:
    listen = f"127.0.0.1:{_free_port()}"
    with faultserver.running() as server:
        cfg = _fault_config(tmp_path, server.base_url, listen, "slow:5")
        proc = _start(["serve", "--config", str(cfg)], tmp_path / "t.log")
        try:
            _wait_in_flight(listen, proc)
            elapsed = _exit_after(proc, signal.SIGTERM, timeout=40)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0
    assert elapsed > 3.0  # waited for the run beyond the interrupt grace
    assert _runs(tmp_path) == [("ok", "")]


def test_sigterm_with_a_failing_last_report_logs_it_and_exits_0(tmp_path: Path) -> None:
    """The pass after the drain fails (its report directory is a file): logged, exit 0,
    and the drained run is stored."""
    listen = f"127.0.0.1:{_free_port()}"
    with faultserver.running() as server:
        cfg = _fault_config(tmp_path, server.base_url, listen, "slow:5")
        (tmp_path / "reports").write_text("not a directory")
        proc = _start(["serve", "--config", str(cfg)], tmp_path / "r.log")
        try:
            _wait_in_flight(listen, proc)
            _exit_after(proc, signal.SIGTERM, timeout=40)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    log = (tmp_path / "r.log").read_text()
    assert proc.returncode == 0, log[-2000:]
    assert "final analysis or report failed; the runs are stored" in log
    assert "FileExistsError" in log or "NotADirectoryError" in log, log[-2000:]
    assert _runs(tmp_path) == [("ok", "")]
