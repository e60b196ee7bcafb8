"""Reconciliation with the gateway's dashboard, and the model_name check."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from aione_probe.checks import registered_checks, validate_check_spec
from aione_probe.checks.model_name import model_name_findings
from aione_probe.config import GatewayConfig, ManagementConfig
from aione_probe.errors import FailureKind
from aione_probe.gateway import GatewayClient
from aione_probe.reconcile import (
    Dashboard,
    ProbeTally,
    RunningRun,
    compare,
    dashboard_url,
    fetch_dashboard,
    parse_dashboard,
    reconcile_gateway,
    tally_observations,
    verdict_of,
    wilson_interval,
)
from aione_probe.sim import default_sim_config, run_in_thread
from aione_probe.store import ObservationRecord, Store
from aione_probe.types import ChatRequest, CheckResult, CheckValue, Observation

KEY = "sk-mgmt-secret-0123456789"
ENV = "AIONE_PROBE_TEST_MGMT_KEY"
P, F, M, U, PART = (
    CheckValue.passed,
    CheckValue.failed,
    CheckValue.missing,
    CheckValue.unscored,
    CheckValue.partial,
)
POLL = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
SINCE = POLL - timedelta(days=1)
EDGE_S = 360.0


def tech(**over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "total_requests": 3,
        "prompt_tokens": 30,
        "completion_tokens": 15,
        "total_tokens": 45,
        "total_cost_rmb": "12.3400",
        "avg_latency_ms": 400,
        "p99_latency_ms": 500,
        "error_rate_pct": "0.00",
        "rpm_usage_pct": "0.50",
        "model_distribution": [
            {"model": "m-a", "requests": 2, "tokens": 30},
            {"model": "m-b", "requests": 1, "tokens": 15},
        ],
    }
    body.update(over)
    return body


def dash(**over: Any) -> Dashboard:
    return parse_dashboard(json.loads(json.dumps({"view_mode": "tech", "tech": tech(**over)})))


@dataclass
class Row:
    """The observation columns the tally reads."""

    model: str
    started_at: datetime
    status: int | None = 200
    failure: str = "ok"
    prompt_tokens: int | None = 10
    completion_tokens: int | None = 5
    end_s: float | None = 0.5
    run_id: int = 1
    suite: str = "smoke"


def row(model: str, hours_ago: float, **kw: Any) -> Row:
    return Row(model, POLL - timedelta(hours=hours_ago), **kw)


def tally(rows: list[Row], running: list[RunningRun] = (), settle_s: float = 300.0) -> ProbeTally:
    return tally_observations(
        rows, running, since=SINCE, until=POLL, edge_s=EDGE_S, settle_s=settle_s
    )


def three_rows() -> list[Row]:
    return [row("m-a", 5), row("m-a", 4), row("m-b", 3)]


def by(checks: list[CheckResult], name: str, model: str = "*", field: str | None = None):
    found = [
        c
        for c in checks
        if c.name == name
        and c.metadata.get("model") == model
        and (field is None or c.metadata.get("field") == field)
    ]
    assert len(found) == 1, (name, model, field, found)
    return found[0]


# --- parsing ---------------------------------------------------------------------------


def test_parse_keeps_exact_decimals_and_unknown_fields() -> None:
    raw = (
        '{"view_mode": "tech", "generated_at": "2025-06-01", "tech": {'
        '"total_requests": 3, "prompt_tokens": 30, "completion_tokens": 15, "total_tokens": 45,'
        '"total_cost_rmb": "12.3400", "avg_latency_ms": 812.50, "p99_latency_ms": "1234.5",'
        '"error_rate_pct": "0.10", "rpm_usage_pct": "7.25", "daily_trend": [1, 2],'
        '"model_distribution": [{"model": "m-a", "requests": 3, "tokens": 45, "share": 1}]}}'
    )
    d = parse_dashboard(json.loads(raw, parse_float=Decimal))
    assert d.schema_drift == ()
    assert d.total_cost_rmb == Decimal("12.3400") and str(d.total_cost_rmb) == "12.3400"
    assert str(d.avg_latency_ms) == "812.50"
    assert d.error_rate_pct == Decimal("0.10") and d.rpm_usage_pct == Decimal("7.25")
    assert d.extra == {"generated_at": "2025-06-01", "tech.daily_trend": [1, 2]}
    assert d.model_distribution[0].extra == {"share": 1}
    assert d.figures()["total_cost_rmb"] == "12.3400"


def test_missing_and_mistyped_fields_are_schema_drift() -> None:
    body = tech(total_cost_rmb="twelve", rpm_usage_pct=None)
    del body["p99_latency_ms"]
    body["model_distribution"] = [{"model": "m-a", "requests": 2}, "junk"]
    d = parse_dashboard({"view_mode": "tech", "tech": body})
    assert d.schema_drift == (
        "tech.total_cost_rmb: expected a decimal number or decimal string, got a string",
        "tech.p99_latency_ms: missing",
        "tech.rpm_usage_pct: missing",
        "tech.model_distribution[0].tokens: missing",
        "tech.model_distribution[1]: expected an object, got a string",
    )
    assert d.p99_latency_ms is None and d.total_requests == 3
    checks = compare(d, tally(three_rows()))
    schema = by(checks, "reconcile_schema")
    assert schema.value is M and "tech.p99_latency_ms: missing" in schema.explanation
    assert by(checks, "reconcile_latency", field="p99_latency_ms").value is M
    assert by(checks, "reconcile_tokens", "m-a").value is M


@pytest.mark.parametrize(
    "body",
    [[1, 2], {"view_mode": "business", "business": {"total_conversations": 4}}, {"tech": 5}],
)
def test_a_body_without_tech_figures_is_unavailable_not_a_crash(body: Any) -> None:
    d = parse_dashboard(body)
    assert d.schema_drift
    checks = compare(d, tally(three_rows()))
    assert verdict_of(checks) == ("unavailable", None)


# --- fetching --------------------------------------------------------------------------


def mgmt(base: str = "http://mgmt.test/api/v1", range_days: int = 2) -> ManagementConfig:
    return ManagementConfig(base_url=base, api_key_env=ENV, range_days=range_days)


@pytest.fixture
def key_env(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(ENV, KEY)
    return KEY


async def test_fetch_sends_key_and_range_and_parses(key_env: str) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"view_mode": "tech", "tech": tech()})

    got = await fetch_dashboard(mgmt(), transport=httpx.MockTransport(handler))
    assert got.ok and got.status == 200 and got.dashboard.total_requests == 3
    assert str(seen[0].url) == "http://mgmt.test/api/v1/obs/dashboard?range_days=2"
    assert seen[0].headers["authorization"] == f"Bearer {KEY}"
    assert dashboard_url("https://c.example/") == "https://c.example/api/v1/obs/dashboard"


VALIDATION = {
    "detail": [{"loc": ["query", "range_days"], "msg": f"bad value {KEY}", "type": "int_parsing"}]
}


@pytest.mark.parametrize(
    ("response", "fragment"),
    [
        (httpx.Response(200, text="<!doctype html><p>login</p>"), "HTML"),
        (
            httpx.Response(200, text="<html/>", headers={"content-type": "text/html"}),
            "HTML",
        ),
        (httpx.Response(422, json=VALIDATION), "query.range_days: bad value"),
        (httpx.Response(401, json={"detail": "Not authenticated"}), "rejected (HTTP 401)"),
        (httpx.Response(403, json={"detail": "forbidden"}), "rejected (HTTP 403)"),
        (httpx.Response(503, text="upstream down"), "server error (HTTP 503)"),
        (httpx.Response(302, headers={"location": "/login"}), "redirected (HTTP 302)"),
        (httpx.Response(200, text='{"view_mode": "tech", "tech": {'), "malformed JSON"),
        (httpx.Response(200, json=[1, 2]), "expected a JSON object"),
    ],
)
async def test_fetch_failures_become_reasons(
    key_env: str, response: httpx.Response, fragment: str
) -> None:
    got = await fetch_dashboard(mgmt(), transport=httpx.MockTransport(lambda _r: response))
    assert not got.ok and got.status == response.status_code
    assert fragment in got.reason
    assert KEY not in got.reason


@pytest.mark.parametrize("exc", [httpx.ReadTimeout("slow"), httpx.ConnectError(f"refused {KEY}")])
async def test_transport_errors_become_reasons(key_env: str, exc: Exception) -> None:
    def handler(_r: httpx.Request) -> httpx.Response:
        raise exc

    got = await fetch_dashboard(mgmt(), transport=httpx.MockTransport(handler))
    assert not got.ok and got.status is None and got.reason
    assert KEY not in got.reason


async def test_a_stalled_dashboard_times_out(key_env: str) -> None:
    async def handler(_r: httpx.Request) -> httpx.Response:
        await asyncio.sleep(5)
        return httpx.Response(200, json={})

    got = await fetch_dashboard(mgmt(), transport=httpx.MockTransport(handler), timeout_s=0.05)
    assert got.reason == "no answer within 0.05s"


async def test_no_key_is_a_reason_not_an_unauthenticated_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(ENV, raising=False)

    def handler(_r: httpx.Request) -> httpx.Response:
        raise AssertionError("must not be called")

    got = await fetch_dashboard(mgmt(), transport=httpx.MockTransport(handler))
    assert "no management key" in got.reason


# --- comparing counts ------------------------------------------------------------------


def test_equal_counts_are_consistent() -> None:
    checks = compare(dash(), tally(three_rows()))
    assert verdict_of(checks) == ("consistent", 1.0)
    req = by(checks, "reconcile_requests", "m-a")
    assert req.value is P
    assert req.metadata["gateway_value"] == 2 and req.metadata["probe_value"] == 2
    assert req.metadata["difference"] == 0
    assert by(checks, "reconcile_tokens", field="total_tokens").metadata["probe_value"] == 45


def test_under_reporting_is_discrepant_with_both_numbers() -> None:
    d = dash(
        total_requests=2,
        model_distribution=[
            {"model": "m-a", "requests": 1, "tokens": 15},
            {"model": "m-b", "requests": 1, "tokens": 15},
        ],
    )
    checks = compare(d, tally(three_rows()))
    req = by(checks, "reconcile_requests", "m-a")
    assert req.value is F and "under-reported" in req.explanation
    assert (req.metadata["gateway_value"], req.metadata["probe_value"]) == (1, 2)
    assert req.metadata["difference"] == -1
    assert req.metadata["tolerance"] == {"min": 2, "max": 2}
    assert by(checks, "reconcile_requests").value is F
    assert verdict_of(checks)[0] == "discrepant"


def test_over_reporting_tokens_and_an_unknown_model_are_discrepant() -> None:
    d = dash(
        total_requests=4,
        prompt_tokens=45,
        total_tokens=60,
        model_distribution=[
            {"model": "m-a", "requests": 2, "tokens": 45},
            {"model": "m-b", "requests": 1, "tokens": 15},
            {"model": "m-ghost", "requests": 1, "tokens": 0},
        ],
    )
    checks = compare(d, tally(three_rows()))
    tokens = by(checks, "reconcile_tokens", "m-a")
    assert tokens.value is F and "over-reported" in tokens.explanation
    assert (tokens.metadata["gateway_value"], tokens.metadata["probe_value"]) == (45, 30)
    assert by(checks, "reconcile_tokens", field="prompt_tokens").value is F
    ghost = by(checks, "reconcile_requests", "m-ghost")
    assert ghost.value is F and ghost.metadata["probe_value"] == 0
    assert by(checks, "reconcile_requests", "m-b").value is P
    assert verdict_of(checks)[0] == "discrepant"


def test_recent_requests_may_be_missing_but_not_old_ones() -> None:
    rows = [*three_rows(), row("m-b", 0.01)]
    checks = compare(dash(), tally(rows))
    recent = by(checks, "reconcile_requests", "m-b")
    assert recent.value is P and recent.metadata["difference"] == -1
    assert recent.metadata["tolerance"] == {"min": 1, "max": 2}
    assert "within the window edges" in recent.explanation


def test_requests_just_before_the_window_may_be_counted() -> None:
    rows = [*three_rows(), row("m-b", 24.02, run_id=2)]
    d = dash(
        total_requests=4,
        model_distribution=[
            {"model": "m-a", "requests": 2, "tokens": 30},
            {"model": "m-b", "requests": 2, "tokens": 30},
        ],
    )
    assert by(compare(d, tally(rows)), "reconcile_requests", "m-b").value is P
    # Outside the edge it is an over-report.
    rows[-1] = row("m-b", 25, run_id=2)
    assert by(compare(d, tally(rows)), "reconcile_requests", "m-b").value is F


def test_unknown_fates_widen_the_bracket() -> None:
    rows = [
        *three_rows(),
        row(
            "m-b",
            2,
            status=None,
            failure=FailureKind.timeout_first_token.value,
            prompt_tokens=None,
            completion_tokens=None,
            end_s=None,
        ),
        row("m-b", 2, status=401, failure=FailureKind.auth.value),
        row("m-b", 2, status=None, failure=FailureKind.connect.value),
    ]
    t = tally(rows)
    assert t.models["m-b"].requests.probe == 1 and t.models["m-b"].requests.high == 3
    assert t.models["m-b"].tokens.high is None


def test_running_runs_are_allowed_their_largest_past_size() -> None:
    rows = [row("m-a", 5, run_id=1), row("m-a", 4, run_id=2), row("m-a", 4, run_id=2)]
    running = [RunningRun("m-a", "smoke")]
    t = tally(rows, running)
    assert t.models["m-a"].requests.high == 5
    d = dash(total_requests=5, model_distribution=[{"model": "m-a", "requests": 5, "tokens": 75}])
    assert by(compare(d, t), "reconcile_requests", "m-a").value is P
    d6 = dash(total_requests=6, model_distribution=[{"model": "m-a", "requests": 6, "tokens": 75}])
    assert by(compare(d6, t), "reconcile_requests", "m-a").value is F
    # No history for the suite: the excess cannot be judged.
    t2 = tally(rows[:1], [RunningRun("m-a", "other")])
    d2 = dash(total_requests=3, model_distribution=[{"model": "m-a", "requests": 3, "tokens": 15}])
    assert by(compare(d2, t2), "reconcile_requests", "m-a").value is PART


def test_absent_model_is_missing_when_the_distribution_is_truncated() -> None:
    d = dash(model_distribution=[{"model": "m-a", "requests": 2, "tokens": 30}])
    checks = compare(d, tally(three_rows()))
    assert by(checks, "reconcile_requests", "m-b").value is M
    covered = dash(
        total_requests=2, model_distribution=[{"model": "m-a", "requests": 2, "tokens": 30}]
    )
    assert by(compare(covered, tally(three_rows())), "reconcile_requests", "m-b").value is F


# --- latency and error rate ------------------------------------------------------------


@pytest.mark.parametrize(
    ("gateway_avg", "value", "words"),
    [
        (500, P, "within"),  # equal
        (450, P, "within"),  # 50 ms lower: network and parsing
        (509, P, "within"),  # above by less than max(10 ms, 2 %)
        (520, F, "exceeds the client's"),  # server-side slower than the client: impossible
        (240, F, "below the client's"),  # 260 ms lower: more than max(250 ms, 30 %)
    ],
)
def test_latency_tolerance_both_ways(gateway_avg: int, value: CheckValue, words: str) -> None:
    rows = [row("m-a", 5, end_s=0.5), row("m-a", 4, end_s=0.5), row("m-b", 3, end_s=0.5)]
    checks = compare(dash(avg_latency_ms=gateway_avg, p99_latency_ms=500), tally(rows))
    avg = by(checks, "reconcile_latency", field="avg_latency_ms")
    assert avg.value is value and words in avg.explanation
    assert avg.metadata["probe_value"] == 500.0
    assert avg.metadata["gateway_value"] == str(gateway_avg)
    assert avg.metadata["tolerance"] == {"max_above_ms": 10.0, "max_below_ms": 250.0}


def test_p99_uses_a_wider_gap_and_the_same_upper_rule() -> None:
    rows = [row("m-a", 5, end_s=0.2), row("m-a", 4, end_s=0.3), row("m-b", 3, end_s=2.0)]
    t = tally(rows)
    ok = by(compare(dash(p99_latency_ms=1200), t), "reconcile_latency", field="p99_latency_ms")
    assert ok.value is P and ok.metadata["probe_value"] == 2000.0
    low = by(compare(dash(p99_latency_ms=900), t), "reconcile_latency", field="p99_latency_ms")
    assert low.value is F
    high = by(compare(dash(p99_latency_ms=2100), t), "reconcile_latency", field="p99_latency_ms")
    assert high.value is F


def test_error_rate_within_the_binomial_interval() -> None:
    rows = [row("m-a", 5, status=500, failure="http_5xx") for _ in range(10)]
    rows += [row("m-a", 4) for _ in range(90)]
    t = tally(rows)
    lo, hi = wilson_interval(10, 100, 0.99)
    assert lo < 0.10 < hi
    same = by(compare(dash(error_rate_pct="10.00"), t), "reconcile_error_rate")
    assert same.value is P and same.metadata["probe_value"] == 10.0
    near = by(compare(dash(error_rate_pct=f"{100 * hi - 0.5:.2f}"), t), "reconcile_error_rate")
    assert near.value is P
    far = by(compare(dash(error_rate_pct=f"{100 * hi + 0.5:.2f}"), t), "reconcile_error_rate")
    assert far.value is F and far.metadata["difference"] > 0
    zero = by(compare(dash(error_rate_pct="0.00"), t), "reconcile_error_rate")
    assert zero.value is F


def test_error_rate_without_requests_is_unscored() -> None:
    checks = compare(dash(), tally([]))
    assert by(checks, "reconcile_error_rate").value is U
    assert by(checks, "reconcile_latency", field="avg_latency_ms").value is U


# --- reconcile_gateway with a store ----------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(f"sqlite:///{tmp_path / 'probe.db'}")
    s.migrate()
    yield s
    s.close()


def gateway(base: str, management: ManagementConfig | None) -> GatewayConfig:
    return GatewayConfig(
        name="gw",
        base_url=base,
        api_key_env=ENV,
        management=management,
        requests_per_minute=None,
        retries={"max_attempts": 1},
    )


async def test_a_failed_poll_saves_an_unavailable_verdict(key_env: str, store: Store) -> None:
    transport = httpx.MockTransport(lambda _r: httpx.Response(401, json={"detail": "no"}))
    gw = gateway("http://gw.test/v1", mgmt())
    result = await reconcile_gateway(gw, store, transport=transport)
    assert result.verdict == "unavailable" and "HTTP 401" in result.reason
    [v] = store.verdicts(kind="reconcile")
    assert (v.gateway, v.model, v.verdict, v.suite) == ("gw", "*", "unavailable", None)
    assert v.details["reason"] == result.reason and v.details["http_status"] == 401
    assert KEY not in json.dumps(v.details)


async def test_no_management_section_polls_nothing(store: Store) -> None:
    result = await reconcile_gateway(gateway("http://gw.test/v1", None), store)
    assert result.verdict == "unavailable" and store.verdicts() == []


def save_attempts(store: Store, attempts: list[Observation]) -> None:
    model = attempts[0].model
    run = store.start_run("gw", model, "smoke", 1, 0, False)
    records = [ObservationRecord(o, "smoke", "p", "hash") for o in attempts]
    store.finish_run(run, "ok", None, records, [])


async def test_sim_dashboard_over_loopback(key_env: str, store: Store) -> None:
    """Honest sim: consistent; then inflated token figures: discrepant, requests still equal."""
    config = default_sim_config(time_scale=0.0, seed=3, answer_key_dirs=[], api_key=KEY)
    with run_in_thread(config) as sim:
        gw = gateway(sim.base_url, mgmt(sim.url, range_days=1))
        client = GatewayClient(gw)
        try:
            for model, stream in (("sim-large", False), ("sim-large", True), ("sim-small", False)):
                messages = ({"role": "user", "content": "Name a colour."},)
                req = ChatRequest(model=model, messages=messages, max_tokens=8, stream=stream)
                attempts = await client.chat(req)
                assert attempts[-1].ok, attempts[-1].error_message
                await asyncio.to_thread(save_attempts, store, attempts)
        finally:
            await client.aclose()
        honest = await reconcile_gateway(gw, store, settle_s=0.0)
        assert honest.verdict == "consistent", [c.explanation for c in honest.checks]
        assert honest.n == 3
        large = by(honest.checks, "reconcile_requests", "sim-large")
        assert large.metadata["gateway_value"] == large.metadata["probe_value"] == 2
        assert by(honest.checks, "reconcile_latency", field="avg_latency_ms").value is P
        async with httpx.AsyncClient() as http:
            r = await http.post(
                f"{sim.url}/sim/control",
                json={"dashboard_report_factor": 1.5},
                headers={"Authorization": f"Bearer {KEY}"},
            )
            r.raise_for_status()
        inflated = await reconcile_gateway(gw, store, settle_s=0.0)
    assert inflated.verdict == "discrepant"
    tokens = by(inflated.checks, "reconcile_tokens", "sim-large")
    assert tokens.value is F
    assert tokens.metadata["gateway_value"] > tokens.metadata["probe_value"] > 0
    assert by(inflated.checks, "reconcile_requests", "sim-large").value is P
    saved = store.verdicts(kind="reconcile")
    assert [(v.model, v.verdict) for v in saved[-3:]] == [
        ("*", "discrepant"),
        ("sim-large", "discrepant"),
        ("sim-small", "discrepant"),
    ]
    star = saved[-3]
    assert star.n == 3 and star.details["dashboard"]["total_cost_rmb"].count(".") == 1
    assert {c["name"] for c in star.details["checks"]} >= {
        "reconcile_schema",
        "reconcile_requests",
        "reconcile_tokens",
        "reconcile_latency",
        "reconcile_error_rate",
    }


# --- model names -----------------------------------------------------------------------

LISTED = ["claude-sonnet-4-6", "gpt-5.4", "gemini-3.1-pro"]


@pytest.mark.parametrize(
    ("requested", "echoed", "value", "relation", "words"),
    [
        ("gpt-5.4", "gpt-5.4", P, "exact", "echoes the standard id"),
        ("gpt-5.4", None, M, "absent", "no model field"),
        ("gpt-5.4", "", M, "absent", "no model field"),
        ("claude-sonnet-4-6", "sonnet-4-6", F, "alias", "an alias"),
        ("gpt-5.4", "gpt-5.4-2026-01-15", F, "snapshot", "variant"),
        ("gpt-5.4", "GPT-5.4", F, "case", "different case"),
        ("gpt-5.4", "gemini-3.1-pro", F, "other_listed", "another standard id"),
        ("gpt-5.4", "openai/gpt54", F, "alias", "an alias"),
        ("sonnet-4-6", "sonnet-4-6", F, "exact", "not a standard id"),
        ("GPT-5.4", "GPT-5.4", F, "exact", "listed as 'gpt-5.4'"),
    ],
)
def test_model_name_findings(
    requested: str, echoed: str | None, value: CheckValue, relation: str, words: str
) -> None:
    res = model_name_findings(requested, echoed, LISTED)
    assert res.value is value
    assert res.metadata["relation"] == relation
    assert words in res.explanation


def test_model_name_is_a_registered_check() -> None:
    validate_check_spec("model_name", {"listed": LISTED})
    validate_check_spec("model_name", {})
    with pytest.raises(ValueError, match="list of strings"):
        validate_check_spec("model_name", {"listed": "gpt-5.4"})

    @dataclass
    class Ctx:
        request: ChatRequest
        listed_models: tuple[str, ...] | None = None

    fn = registered_checks()["model_name"].fn
    ctx: Any = Ctx(ChatRequest(model="gpt-5.4", messages=()))
    obs = Observation(gateway="g", model="gpt-5.4", response_model="gpt-5.4-mini")
    got = fn(obs, {"listed": LISTED}, ctx)
    assert (got.name, got.value) == ("model_name", F)
    assert fn(obs, {}, ctx).value is U
    # The runner passes the gateway's /v1/models answer in the context.
    from_gateway: Any = Ctx(ChatRequest(model="gpt-5.4", messages=()), tuple(LISTED))
    assert fn(obs, {}, from_gateway).value is F
    failed = Observation(gateway="g", model="gpt-5.4", failure=FailureKind.http_5xx)
    assert fn(failed, {"listed": LISTED}, ctx).value is U
