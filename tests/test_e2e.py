"""End to end over loopback: the CLI and the service against the local gateway."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from aione_probe.cli import main
from aione_probe.sim import SimServer, default_sim_config, run_in_thread
from aione_probe.store import Store

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def sim() -> Iterator[SimServer]:
    server = run_in_thread(default_sim_config())
    try:
        yield server
    finally:
        server.stop()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _config(tmp_path: Path, base_url: str, *, suites: str, models: str, extra: str = "") -> Path:
    path = tmp_path / "aione-probe.toml"
    path.write_text(
        f"""
probes_dir = "{ROOT / "probes"}"

[[gateways]]
name = "local"
base_url = "{base_url}"
auth = "none"
models = {models}
max_concurrency = 8
requests_per_minute = 6000
timeouts = {{ connect = "2s", first_token = "10s", idle = "5s", total = "30s" }}
retries = {{ max_attempts = 2, base_delay = "50ms", max_delay = "200ms" }}

{suites}

[pricing."sim-*"]
input = 1.0
output = 5.0
cached_input = 0.1

[storage]
url = "sqlite:///{tmp_path / "probe.db"}"

[server]
listen = "127.0.0.1:{_free_port()}"

[reports]
dir = "{tmp_path / "reports"}"
{extra}
"""
    )
    return path


SMOKE = """
[[suites]]
file = "smoke.toml"
interval = "1h"
"""


def test_run_once_stores_observations_and_writes_a_report(
    sim: SimServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _config(tmp_path, sim.base_url, suites=SMOKE, models='["sim-large"]')
    code = main(["run", "--config", str(cfg)])
    out = capsys.readouterr().out
    assert code in (0, 1), out
    assert "sim-large" in out and "smoke" in out
    store = Store(f"sqlite:///{tmp_path / 'probe.db'}")
    runs = store.runs("local", "sim-large", "smoke")
    assert len(runs) == 1 and runs[0].status in ("ok", "partial")
    observations = store.observations("local", "sim-large", final_only=True)
    assert observations, "no observation stored"
    ok = [o for o in observations if o.failure == "ok"]
    assert ok and all(o.prompt_tokens and o.response_id for o in ok)
    assert all(o.cost is not None and o.cost > 0 for o in ok)
    assert store.check_results("local", "sim-large", "smoke")
    assert (tmp_path / "reports" / "index.html").is_file()
    assert json.loads((tmp_path / "reports" / "report.json").read_text())


def test_run_exit_codes(sim: SimServer, tmp_path: Path) -> None:
    # An unknown model: every request fails with model_not_found -> exit 1.
    cfg = _config(tmp_path, sim.base_url, suites=SMOKE, models='["no-such-model"]')
    assert main(["run", "--config", str(cfg)]) == 1
    store = Store(f"sqlite:///{tmp_path / 'probe.db'}")
    failures = {o.failure for o in store.observations("local", "no-such-model")}
    assert failures == {"model_not_found"}
    # A filter that matches nothing is a usage error -> exit 2.
    assert main(["run", "--config", str(cfg), "--suite", "nope"]) == 2


def test_unreachable_gateway_is_recorded_not_fatal(tmp_path: Path) -> None:
    cfg = _config(tmp_path, f"http://127.0.0.1:{_free_port()}/v1", suites=SMOKE, models='["m"]')
    assert main(["run", "--config", str(cfg)]) == 1
    store = Store(f"sqlite:///{tmp_path / 'probe.db'}")
    assert {o.failure for o in store.observations()} == {"connect"}


def test_spend_cap_skips_runs(sim: SimServer, tmp_path: Path) -> None:
    cfg = _config(
        tmp_path,
        sim.base_url,
        suites=SMOKE,
        models='["sim-large"]',
        extra="[budget]\ndaily_cap = 0.0\n",
    )
    main(["run", "--config", str(cfg)])
    store = Store(f"sqlite:///{tmp_path / 'probe.db'}")
    runs = store.runs("local", "sim-large", "smoke")
    assert [r.status for r in runs] == ["skipped"]
    assert "spend cap" in (runs[0].reason or "")
    assert not store.observations()


def test_models_lists_the_gateway(
    sim: SimServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _config(tmp_path, sim.base_url, suites=SMOKE, models='["sim-large"]')
    assert main(["models", "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "sim-large" in out and "sim-small" in out


def test_serve_metrics_health_report_and_sigterm(sim: SimServer, tmp_path: Path) -> None:
    cfg = _config(
        tmp_path,
        sim.base_url,
        suites="""
[[suites]]
file = "smoke.toml"
interval = "2s"
""",
        models='["sim-large", "sim-small"]',
    )
    listen = next(
        line.split('"')[1] for line in cfg.read_text().splitlines() if line.startswith("listen")
    )
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "aione_probe", "serve", "--config", str(cfg)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
    )
    try:
        deadline = time.monotonic() + 60
        metrics = ""
        while time.monotonic() < deadline:
            try:
                metrics = httpx.get(f"http://{listen}/metrics", timeout=2).text
                if "aione_probe_requests_total{" in metrics:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        assert "aione_probe_requests_total{" in metrics
        assert "_created" not in metrics
        promtool = shutil.which("promtool")
        if promtool:  # the live scrape must satisfy Prometheus' own linter
            lint = subprocess.run(
                [promtool, "check", "metrics"], input=metrics, capture_output=True, text=True
            )
            assert lint.returncode == 0 and not lint.stdout.strip(), lint.stdout + lint.stderr
        health = httpx.get(f"http://{listen}/healthz", timeout=2)
        assert health.status_code == 200 and health.json()["status"] == "ok"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        output = proc.stdout.read().decode() if proc.stdout else ""
    store = Store(f"sqlite:///{tmp_path / 'probe.db'}")
    assert not store.runs(status="running"), output
    assert "sk-" not in output


def test_baseline_pin_show_export_import(
    sim: SimServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _config(tmp_path, sim.base_url, suites=SMOKE, models='["sim-large"]')
    assert main(["run", "--config", str(cfg)]) in (0, 1)
    common = ["--config", str(cfg), "--gateway", "local", "--model", "sim-large"]
    assert main(["baseline", "pin", *common, "--kind", "drift"]) == 1  # one run is no baseline
    assert "need at least 2" in capsys.readouterr().err
    assert main(["run", "--config", str(cfg)]) in (0, 1)
    assert main(["baseline", "pin", *common, "--kind", "drift"]) == 0
    assert "below the recommended size" in capsys.readouterr().out
    assert main(["baseline", "pin", *common]) == 0
    assert main(["baseline", "show", "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "drift" in out and "authenticity" in out
    store = Store(f"sqlite:///{tmp_path / 'probe.db'}")
    auth = next(b for b in store.baselines(kind="authenticity") if b.active)
    exported = tmp_path / "profile.json"
    assert (
        main(["baseline", "export", "--config", str(cfg), str(auth.id), "--out", str(exported)])
        == 0
    )
    doc = json.loads(exported.read_text())
    assert doc["kind"] == "authenticity" and doc["model"] == "sim-large"

    other = tmp_path / "other"
    other.mkdir()
    cfg2 = _config(other, sim.base_url, suites=SMOKE, models='["sim-large"]')
    assert main(["baseline", "import", "--config", str(cfg2), str(exported), "--as-profile"]) == 0
    imported = Store(f"sqlite:///{other / 'probe.db'}").baselines(kind="profile")
    assert [(b.model, b.gateway) for b in imported] == [("sim-large", "local")]
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "nope"}')
    assert main(["baseline", "import", "--config", str(cfg2), str(bad)]) == 2


def test_shipped_suites_run_unchanged_over_both_protocols(tmp_path: Path) -> None:
    """Every shipped text suite, through the real runner, over OpenAI and Anthropic protocols."""
    suites = "".join(
        f'\n[[suites]]\nfile = "{p.name}"\ninterval = "1h"\n'
        f"cheap_only = {str(p.name.startswith('golden')).lower()}\n"
        for p in sorted((ROOT / "probes").glob("*.toml"))
        if p.name != "image.toml"  # image models speak only chat completions
    )
    with run_in_thread(default_sim_config(time_scale=0.05)) as fast:
        cfg = _config(
            tmp_path,
            fast.base_url,
            suites=suites,
            models='["sim-large"]',
            extra=f"""
[[gateways]]
name = "local-anthropic"
base_url = "{fast.url}"
auth = "none"
protocol = "anthropic"
models = ["sim-large"]
max_concurrency = 8
requests_per_minute = 6000
""",
        )
        assert main(["run", "--config", str(cfg)]) in (0, 1)
    store = Store(f"sqlite:///{tmp_path / 'probe.db'}")
    for gateway in ("local", "local-anthropic"):
        rows = store.observations(gateway, "sim-large", final_only=True)
        assert len(rows) > 120, gateway
        assert {"cache", "fingerprint", "smoke", "behaviour"} <= {r.suite for r in rows}
        failed = [(r.probe_id, r.failure) for r in rows if r.failure != "ok"]
        assert not failed, (gateway, failed)
        assert {r.protocol for r in rows} == {"anthropic" if "anthropic" in gateway else "openai"}
    # golden-longctx has no cheap probe: with cheap_only its runs are skipped, not failed.
    assert {r.status for r in store.runs(suite="golden-longctx")} == {"skipped"}
    verdicts = store.latest_verdicts("cross_protocol")
    assert [(v.gateway, v.suite) for v in verdicts] == [("local", "vs:local-anthropic")]


def test_run_reconciles_with_the_gateway_dashboard(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIM_MGMT_TOKEN", "mgmt-token")
    with run_in_thread(default_sim_config(time_scale=0.05)) as own:
        cfg = _config(tmp_path, own.base_url, suites=SMOKE, models='["sim-large"]')
        management = (
            f'[gateways.management]\nbase_url = "{own.url}"\napi_key_env = "SIM_MGMT_TOKEN"'
        )
        text = cfg.read_text().replace("[pricing", f"{management}\n\n[pricing", 1)
        cfg.write_text(text)
        assert main(["run", "--config", str(cfg)]) in (0, 1)
    store = Store(f"sqlite:///{tmp_path / 'probe.db'}")
    overall = [v for v in store.latest_verdicts("reconcile") if v.model == "*"]
    assert [v.verdict for v in overall] == ["consistent"], overall[0].details


def test_sighup_reload_keeps_last_good_config_and_applies_a_good_one(
    sim: SimServer, tmp_path: Path
) -> None:
    cfg = _config(tmp_path, sim.base_url, suites=SMOKE, models='["sim-large"]')
    good = cfg.read_text()
    listen = next(line.split('"')[1] for line in good.splitlines() if line.startswith("listen"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "aione_probe", "serve", "--config", str(cfg)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )

    def jobs(expect: int) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                body = httpx.get(f"http://{listen}/healthz", timeout=2).json()
                if body.get("status") == "ok" and body.get("jobs") == expect:
                    return
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.3)
        raise AssertionError(f"service never reported {expect} jobs")

    try:
        jobs(1)
        cfg.write_text(good.replace("[[suites]]", "[[suites]]\nbogus = 1", 1))
        proc.send_signal(signal.SIGHUP)
        time.sleep(1.0)
        jobs(1)  # the bad file was refused; the service kept running
        cfg.write_text(
            good.replace('models = ["sim-large"]', 'models = ["sim-large", "sim-small"]')
        )
        proc.send_signal(signal.SIGHUP)
        jobs(2)  # restarted in-process with the new config
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        output = proc.stdout.read().decode() if proc.stdout else ""
    assert "reload failed, keeping the last good config" in output
    assert "suites[0].bogus: unknown key" in output
