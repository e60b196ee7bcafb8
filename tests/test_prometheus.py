"""A real Prometheus scraping a real `aione-probe serve` pointed at the fault server.

Six targets behind one gateway (honest, slow, flaky, rate limited, silently truncating,
down). Prometheus loads the shipped rules rendered by ``grafana/rules.py --speedup 60``
(an hour of alerting in a minute; the suite runs every 3 s, a 3-minute schedule at that
speed). The test asserts, from Prometheus' HTTP API, which alerts fire for which target
and that none ever fires for the honest one; then it runs every dashboard panel's query
against the same Prometheus. About 90 s of wall time.

Skips, printing why, when the ``prometheus`` binary is missing or does not start.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import faultserver
import pytest
from prometheus_client.parser import text_string_to_metric_families

from aione_probe.peers.llama import free_port

ROOT = Path(__file__).resolve().parent.parent
SPEEDUP = 60
MODELS = {
    # Latencies far apart: on a loaded 2-core machine (load average 11) the client's own
    # lag put an honest 150 ms answer at p50 262 ms and p99 659 ms.
    "honest": "delay:200",
    "slow": "delay:1500",  # +1.3 s before the first byte, against a 1 s threshold
    "flaky": "flaky",
    "ratelimited": "ratelimit",
    "truncating": "truncate",
    "down": "html:502",
}
# Which alerts must fire for which target (and no other may).
EXPECTED = {
    "honest": set(),
    "slow": {"AIoneProbeLatencyBudgetBurn"},
    "flaky": {"AIoneProbeAvailabilityBudgetBurn", "AIoneProbeHigh5xxShare"},
    "ratelimited": {"AIoneProbeRateLimited"},
    "truncating": {"AIoneProbeFinishReasonMismatch"},
    "down": {"AIoneProbeAvailabilityBudgetBurn", "AIoneProbeHigh5xxShare", "AIoneProbeStale"},
}
DEADLINE_S = 150.0
# Features this test does not exercise: verdicts (drift, authenticity, cross-protocol,
# reconciliation) need an analysis pass over hours of runs. A panel on them may be empty,
# never an error. Everything else (cache checks, cost, spend and cap, echoed models, the
# 7-day baseline over the data there is) must show data.
UNEXERCISED_METRICS = (
    "golden_pass_ratio",
    "golden_baseline_pass_ratio",
    "drift_",
    "authenticity_",
    "cross_protocol",
    "reconcile",
    "verdict_timestamp",
)


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


def _wait(url: str, timeout: float, proc: subprocess.Popen[bytes]) -> str | None:
    """None once `url` answers 200; else why not."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return f"exited with {proc.returncode}"
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return None
        except OSError:
            pass
        time.sleep(0.2)
    return f"not ready within {timeout:g}s"


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _render_rules(out: Path) -> None:
    spec = importlib.util.spec_from_file_location("grafana_rules", ROOT / "grafana" / "rules.py")
    assert spec and spec.loader
    rules = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rules)
    rules.render_all(out, speedup=SPEEDUP)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("prometheus is not installed (Debian: apt-get install prometheus)")
    tmp = tmp_path_factory.mktemp("prometheus")
    probe_port, prom_port = free_port(), free_port()
    with faultserver.running() as fault:
        fault.aliases.update(MODELS)
        config = tmp / "probe.toml"
        config.write_text(
            f"""
probes_dir = "{ROOT / "probes"}"
[storage]
url = "sqlite:///{tmp / "probe.db"}"
[server]
listen = "127.0.0.1:{probe_port}"
[reports]
dir = "{tmp / "reports"}"
[[gateways]]
name = "fault"
base_url = "{fault.base_url}"
auth = "none"
models = {json.dumps(list(MODELS))}
max_concurrency = 16
requests_per_minute = 100000
timeouts = {{ connect = "5s", first_token = "5s", idle = "5s", total = "10s" }}
retries = {{ max_attempts = 3, base_delay = "10ms", max_delay = "50ms" }}
[[suites]]
file = "smoke.toml"
interval = "3s"
[[suites]]
file = "cache.toml"
interval = "10s"
[pricing."*"]
input = 1.0
output = 2.0
cached_input = 0.5
[budget]
daily_cap = 1000.0
[[slos]]
ttft = {{ threshold = "1s", target = 0.99 }}
e2e = {{ threshold = "3s", target = 0.99 }}
"""
        )
        rules = tmp / "rules"
        _render_rules(rules)
        (tmp / "prometheus.yml").write_text(
            f"""
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - {rules}/*.yml
scrape_configs:
  - job_name: aione-probe
    static_configs:
      - targets: ["127.0.0.1:{probe_port}"]
"""
        )
        # Our own files must not be the reason Prometheus does not start: that fails, not skips.
        promtool = shutil.which("promtool")
        if promtool is not None:
            check = subprocess.run([promtool, "check", "config", str(tmp / "prometheus.yml")],
                                   capture_output=True, text=True, timeout=120)  # fmt: skip
            assert check.returncode == 0, check.stdout + check.stderr
        serve_log = open(tmp / "serve.log", "wb")  # noqa: SIM115 (closed in finally)
        serve = subprocess.Popen(
            [sys.executable, "-m", "aione_probe", "serve", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=serve_log,
        )
        prom_log = open(tmp / "prometheus.log", "wb")  # noqa: SIM115
        prom = subprocess.Popen(
            [binary, f"--config.file={tmp / 'prometheus.yml'}",
             f"--storage.tsdb.path={tmp / 'data'}",
             f"--web.listen-address=127.0.0.1:{prom_port}", "--log.level=warn"],
            stdout=prom_log, stderr=prom_log,
        )  # fmt: skip
        try:
            why = _wait(f"http://127.0.0.1:{probe_port}/metrics", 60, serve)
            assert why is None, f"serve: {why}: {(tmp / 'serve.log').read_text()[-2000:]}"
            why = _wait(f"http://127.0.0.1:{prom_port}/-/ready", 60, prom)
            if why is not None:
                pytest.skip(f"prometheus did not start ({why}): "
                            f"{(tmp / 'prometheus.log').read_text()[-1000:]}")  # fmt: skip
            yield {
                "api": f"http://127.0.0.1:{prom_port}/api/v1",
                "metrics": f"http://127.0.0.1:{probe_port}/metrics",
                "started": time.monotonic(),
            }
        finally:
            _stop(serve)
            _stop(prom)
            serve_log.close()
            prom_log.close()


def _firing(api: str) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {m: set() for m in MODELS}
    for alert in _get(f"{api}/alerts")["data"]["alerts"]:
        model = alert["labels"].get("model")
        if alert["state"] == "firing" and model in out:
            out[model].add(alert["labels"]["alertname"])
        if model == "honest" and alert["state"] == "firing":
            pytest.fail(f"an alert fired for the honest target: {alert}")
    return out


def test_alerts_fire_for_the_right_targets_and_never_for_the_honest_one(
    stack: dict[str, Any],
) -> None:
    firing: dict[str, set[str]] = {}
    while time.monotonic() - stack["started"] < DEADLINE_S:
        firing = _firing(stack["api"])
        if firing == EXPECTED:
            break
        time.sleep(2)
    assert firing == EXPECTED
    print(f"expected alerts firing {time.monotonic() - stack['started']:.0f} s after start")
    # Still nothing for the honest target a little later.
    time.sleep(5)
    assert _firing(stack["api"])["honest"] == set()


def test_scrape_has_zero_initialised_series_and_no_empty_labels(stack: dict[str, Any]) -> None:
    with urllib.request.urlopen(stack["metrics"], timeout=10) as resp:
        text = resp.read().decode()
    samples = [s for f in text_string_to_metric_families(text) for s in f.samples]
    for s in samples:
        assert all(v != "" for v in s.labels.values()), s
    honest_5xx = [
        s
        for s in samples
        if s.name == "aione_probe_errors_total"
        and s.labels.get("model") == "honest"
        and s.labels["class"] == "http_5xx"
    ]
    assert honest_5xx and all(s.value == 0 for s in honest_5xx)  # declared, never hit


def _queries() -> Iterator[tuple[str, str, str]]:
    """(dashboard, panel title, PromQL) for every panel target of the generated dashboards."""
    for path in sorted((ROOT / "grafana" / "dashboards").glob("*.json")):
        board = json.loads(path.read_text())
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                yield path.stem, panel["title"], target["expr"]


def _substitute(expr: str) -> str:
    window = f"{3600 // SPEEDUP}s"  # the dashboards' default $window (1h), sped up
    subs = {"$window": window, "$__range": "5m", "$job": "aione-probe",
            "$location": ".*", "$gateway": ".*", "$model": ".*"}  # fmt: skip
    for key, value in subs.items():
        expr = expr.replace(key, value)
    return expr


def test_every_dashboard_query_runs_and_shows_what_the_test_exercised(
    stack: dict[str, Any],
) -> None:
    # After the alerts test the stack has run for a while; wait for at least a minute of data.
    time.sleep(max(0.0, 60 - (time.monotonic() - stack["started"])))
    empty, ran = [], 0
    for board, title, expr in _queries():
        query = _substitute(expr)
        url = f"{stack['api']}/query?" + urllib.parse.urlencode({"query": query})
        try:
            body = _get(url)
        except urllib.error.HTTPError as exc:
            pytest.fail(f"{board}: {title!r}: {query}: {exc.read().decode()}")
        assert body["status"] == "success", (board, title, body)
        ran += 1
        if not body["data"]["result"] and not any(m in expr for m in UNEXERCISED_METRICS):
            empty.append(f"{board}: {title!r}: {query}")
    assert ran > 40
    assert not empty, "\n".join(empty)


def test_every_dashboard_variable_query_finds_values(stack: dict[str, Any]) -> None:
    """Grafana's ``label_values(selector, label)`` is the series API with a match[]."""
    for path in sorted((ROOT / "grafana" / "dashboards").glob("*.json")):
        for var in json.loads(path.read_text())["templating"]["list"]:
            if var["type"] != "query":
                continue
            m = re.fullmatch(r"label_values\((.+), (\w+)\)", var["query"]["query"])
            assert m, var["query"]
            selector, label = _substitute(m.group(1)), m.group(2)
            url = f"{stack['api']}/label/{label}/values?" + urllib.parse.urlencode(
                {"match[]": selector}
            )
            values = _get(url)["data"]
            if label == "location":
                # A single instance exports no location label (fleet mode does); "All"
                # (.*) then matches every series, which the panel test above proves.
                assert values == [], values
                continue
            assert values, f"{path.stem}: ${var['name']}: {selector}"
            if label == "model":
                assert set(MODELS) <= set(values)


def test_ratio_panels_show_a_target_with_zero_successes_as_zero(stack: dict[str, Any]) -> None:
    (expr,) = [
        e
        for b, t, e in _queries()
        if t == "Availability and attempt success by target"
        and e.startswith("(sum by (gateway, model) (increase(aione_probe_slo")
    ]
    url = f"{stack['api']}/query?" + urllib.parse.urlencode({"query": _substitute(expr)})
    result = {r["metric"]["model"]: float(r["value"][1]) for r in _get(url)["data"]["result"]}
    assert set(result) == set(MODELS)
    assert result["down"] == 0 and result["honest"] == 1
