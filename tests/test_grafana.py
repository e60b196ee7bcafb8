"""Dashboards, rules and compose files: regenerate-and-diff, dashboard lint, promtool."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
from pathlib import Path
from types import ModuleType

import pytest

from aione_probe.config import load_config
from aione_probe.metrics import METRICS

ROOT = Path(__file__).resolve().parent.parent
GRAFANA = ROOT / "grafana"
RULES = sorted((GRAFANA / "rules").glob("*.yml"))
RULE_TESTS = sorted((GRAFANA / "rules" / "tests").glob("*.yml"))
promtool = pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")

SELECTOR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{([^}]*)\}")
RANGE = re.compile(r"\[([^\]]+)\]")
RECORDED = re.compile(r"^\s*- record: (\S+)", re.M)
ALERTS = re.compile(r"^\s*- alert: (\S+)", re.M)


def load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("grafana_dashboards", GRAFANA / "dashboards.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def boards() -> dict[str, dict]:
    return {name: json.loads(text) for name, text in load_generator().render().items()}


def metric_labels() -> dict[str, set[str]]:
    """Label names of every exposed series name and recording rule."""
    out: dict[str, set[str]] = {}
    for spec in METRICS:
        labels = set(spec.labels)
        if spec.type == "histogram":
            for suffix in ("_bucket", "_sum", "_count"):
                out[spec.name + suffix] = labels
        else:
            out[spec.name] = labels
    for path in RULES:
        for name in RECORDED.findall(path.read_text()):
            level = name.split(":")[0]
            out[name] = set(level.split("_"))
    return out


def targets(board: dict) -> list[tuple[str, dict]]:
    return [(p["title"], t) for p in board["panels"] for t in p.get("targets", [])]


def test_committed_dashboards_match_the_generator(boards: dict[str, dict]) -> None:
    rendered = load_generator().render()
    committed = {p.name for p in (GRAFANA / "dashboards").glob("*.json")}
    assert committed == set(rendered), "run: python grafana/dashboards.py"
    for name, text in rendered.items():
        on_disk = (GRAFANA / "dashboards" / name).read_text(encoding="utf-8")
        assert on_disk == text, f"{name} is stale: run python grafana/dashboards.py"


def test_dashboards_cover_the_planned_views(boards: dict[str, dict]) -> None:
    uids = {b["uid"] for b in boards.values()}
    assert uids == {
        "aione-probe-overview",
        "aione-probe-latency",
        "aione-probe-quality",
        "aione-probe-authenticity",
        "aione-probe-cost",
    }
    for board in boards.values():
        assert board["schemaVersion"] == 41
        assert "aione-probe" in board["tags"]


def test_template_variables(boards: dict[str, dict]) -> None:
    for board in boards.values():
        by_name = {v["name"]: v for v in board["templating"]["list"]}
        ds = by_name["datasource"]
        assert (ds["type"], ds["query"]) == ("datasource", "prometheus")
        for name in ("job", "gateway", "model"):
            var = by_name[name]
            assert var["type"] == "query", name
            assert var["multi"] and var["includeAll"], name
            assert var["datasource"]["uid"] == "${datasource}"


def test_panels_have_unique_ids_titles_units_and_the_datasource_variable(
    boards: dict[str, dict],
) -> None:
    for name, board in boards.items():
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids)), f"{name}: duplicate panel ids"
        for p in board["panels"]:
            if p["type"] == "row":
                continue
            where = f"{name}: {p['title']!r}"
            assert p["title"] and p["description"], where
            assert p["fieldConfig"]["defaults"].get("unit"), f"{where}: no unit"
            assert p["datasource"]["uid"] == "${datasource}", where
            assert p["targets"], f"{where}: no query"
            for t in p["targets"]:
                assert t["datasource"]["uid"] == "${datasource}", where
            for o in p["fieldConfig"]["overrides"]:
                ids_ = [prop["id"] for prop in o["properties"]]
                assert "unit" in ids_, f"{where}: override without unit"


def test_every_query_selects_the_variables_and_known_metrics(boards: dict[str, dict]) -> None:
    labels = metric_labels()
    for name, board in boards.items():
        for title, t in targets(board):
            expr, where = t["expr"], f"{name}: {title!r}: {t['expr']}"
            found = SELECTOR.findall(expr)
            assert found, where
            for metric, matchers in found:
                assert metric in labels, f"{where}: unknown metric {metric}"
                assert 'job=~"$job"' in matchers, where
                for var in ("gateway", "model"):
                    if var in labels[metric]:
                        assert f'{var}=~"${var}"' in matchers, f"{where}: no ${var}"
            bare = re.sub(SELECTOR, "", expr)
            for word in re.findall(r"aione_probe_\w+|\w+:\w+:\w+", bare):
                pytest.fail(f"{where}: {word} without a selector")
            for window in RANGE.findall(expr):
                assert window in ("$window", "$__range"), f"{where}: range [{window}]"


def test_rules_cover_every_alert_in_unit_tests() -> None:
    alerts = ALERTS.findall((GRAFANA / "rules" / "alerts.yml").read_text())
    tests = "\n".join(p.read_text() for p in RULE_TESTS)
    assert len(alerts) >= 14
    for alert in alerts:
        assert f"alertname: {alert}\n        exp_alerts:\n          - exp_labels" in tests, alert
    assert "exp_alerts: []" in tests


@promtool
def test_promtool_check_rules() -> None:
    cmd = ["promtool", "check", "rules", "--lint=all", "--lint-fatal", *map(str, RULES)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@promtool
def test_promtool_test_rules() -> None:
    cmd = ["promtool", "test", "rules", *map(str, RULE_TESTS)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@promtool
def test_dashboard_queries_parse(boards: dict[str, dict], tmp_path: Path) -> None:
    """Every panel query, with the variables filled in, is valid PromQL for promtool."""
    subs = {"$window": "1h", "$__range": "1d", "$job": ".*", "$gateway": ".*", "$model": ".*"}
    lines = ["groups:", "  - name: dashboards", "    rules:"]
    for i, (_, t) in enumerate(t for b in boards.values() for t in targets(b)):
        expr = t["expr"]
        for k, v in subs.items():
            expr = expr.replace(k, v)
        lines += [f"      - record: dashboard:query_{i}:check", f"        expr: {json.dumps(expr)}"]
    path = tmp_path / "queries.yml"
    path.write_text("\n".join(lines) + "\n")
    proc = subprocess.run(
        ["promtool", "check", "rules", str(path)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@promtool
def test_prometheus_config_is_valid(tmp_path: Path) -> None:
    text = (GRAFANA / "prometheus.yml").read_text()
    local = text.replace("/etc/prometheus/rules", str(GRAFANA / "rules"))
    path = tmp_path / "prometheus.yml"
    path.write_text(local)
    proc = subprocess.run(
        ["promtool", "check", "config", str(path)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_compose_wires_the_files_and_its_config_loads(tmp_path: Path) -> None:
    compose = (ROOT / "docker-compose.yml").read_text()
    for mount in (
        "./grafana/prometheus.yml:/etc/prometheus/prometheus.yml",
        "./grafana/rules:/etc/prometheus/rules",
        "./grafana/provisioning/datasources:/etc/grafana/provisioning/datasources",
        "./grafana/provisioning/dashboards:/etc/grafana/provisioning/dashboards",
        "./grafana/dashboards:/var/lib/grafana/dashboards/aione-probe",
    ):
        assert mount in compose, mount
    provider = (GRAFANA / "provisioning" / "dashboards" / "aione-probe.yml").read_text()
    assert "path: /var/lib/grafana/dashboards/aione-probe" in provider
    assert "aione-probe:9464" in (GRAFANA / "prometheus.yml").read_text()
    assert "./examples/docker.toml:/etc/aione-probe/config.toml" in compose
    config = (ROOT / "examples" / "docker.toml").read_text()
    config = config.replace('"/app/probes"', json.dumps(str(ROOT / "probes")))
    path = tmp_path / "config.toml"
    path.write_text(config)
    cfg = load_config(path)
    assert cfg.server.listen == "0.0.0.0:9464"
    for suite in cfg.suites:
        assert cfg.suite_path(suite).exists(), suite.file


def _compose_command() -> list[str] | None:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    docker = shutil.which("docker")
    if (
        docker
        and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0
    ):
        return [docker, "compose"]
    return None


def test_compose_file_is_accepted_by_compose() -> None:
    command = _compose_command()
    if command is None:
        pytest.skip("no docker compose or docker-compose client on this machine")
    proc = subprocess.run(
        [*command, "-f", str(ROOT / "docker-compose.yml"), "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def load_rules_renderer() -> ModuleType:
    spec = importlib.util.spec_from_file_location("grafana_rules", GRAFANA / "rules.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_shipped_rules_are_the_renderers_default_output() -> None:
    rules = load_rules_renderer()
    for path in RULES:
        text = path.read_text()
        assert rules.render(text) == text, f"{path.name}: run python grafana/rules.py"
        for url in re.findall(r"runbook_url: (\S+)", text):
            assert url.startswith(rules.DEFAULT_RUNBOOK_BASE + "#"), url


def test_rules_render_with_another_runbook_base_and_a_speedup(tmp_path: Path) -> None:
    rules = load_rules_renderer()
    rules.main([str(tmp_path), "--speedup", "60", "--runbook-base", "https://wiki.example/rb"])
    alerts = (tmp_path / "alerts.yml").read_text()
    recording = (tmp_path / "recording.yml").read_text()
    assert "runbook_url: https://wiki.example/rb#aioneprobedown" in alerts
    assert "for: 2s" in alerts and "for: 10m" not in alerts
    assert "[60s]" in recording and "[1h]" not in recording and "interval: 1s" in recording
    assert "[4320s]" in recording  # 3d / 60
    assert "over 1h" in alerts  # annotation text is left as written
    if shutil.which("promtool"):
        cmd = ["promtool", "check", "rules", str(tmp_path / "alerts.yml"),
               str(tmp_path / "recording.yml")]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stdout + proc.stderr
