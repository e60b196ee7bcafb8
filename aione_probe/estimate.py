"""What a config will cost before it sends anything: tokens and money per day.

Estimates are made offline: prompt tokens as characters / 4 and completion tokens at
each probe's ``max_tokens``. They are not bounds: Chinese text runs denser than 4
characters a token, and the chat template's own tokens are left out (the cheap
fingerprint run measured about 950 tokens on SmolLM2 against an estimate of 620), while
answers that stop early cost less than their cap. `check-config` prints them; measured
spend is in the store and metrics.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from apscheduler.triggers.cron import CronTrigger

from aione_probe.checks.plausible import ECHO_PREFIX
from aione_probe.checks.plausible import NAME as PLAUSIBLE
from aione_probe.config import Config, SuiteConfig
from aione_probe.suites import Suite

CHARS_PER_TOKEN = 4
DEFAULT_COMPLETION = 256


@dataclass(frozen=True)
class SuiteEstimate:
    """One suite's estimated load per target."""

    suite: str
    requests_per_run: int
    prompt_tokens_per_run: int
    completion_tokens_per_run: int
    runs_per_day: float

    @property
    def tokens_per_day(self) -> float:
        """Prompt plus completion tokens per target per day."""
        per_run = self.prompt_tokens_per_run + self.completion_tokens_per_run
        return per_run * self.runs_per_day


def runs_per_day(suite: SuiteConfig) -> float:
    """How many times a day the suite's schedule fires."""
    if suite.interval is not None:
        return 86400.0 / suite.interval
    assert suite.cron is not None
    trigger = CronTrigger.from_crontab(suite.cron, timezone=UTC)
    start = datetime(2026, 1, 5, tzinfo=UTC)  # a Monday: weekday fields count fairly
    end = start + timedelta(days=7)
    fires, prev = 0, None
    nxt = trigger.get_next_fire_time(None, start)
    while nxt is not None and nxt < end:
        fires += 1
        prev = nxt
        nxt = trigger.get_next_fire_time(prev, prev + timedelta(seconds=1))
    return fires / 7.0


def estimate_suite(sc: SuiteConfig, suite: Suite) -> SuiteEstimate:
    """Estimate one scheduled suite per target."""
    instances = suite.expand(0, cheap_only=sc.cheap_only)
    prompt = completion = measured = 0
    echo_prompt = len(ECHO_PREFIX) // CHARS_PER_TOKEN
    defaults = {c.name for c in suite.default_checks}
    for inst in instances:
        req = inst.request("model")
        text = json.dumps(req.messages, ensure_ascii=False)
        if req.tools:
            text += json.dumps(req.tools, ensure_ascii=False)
        prompt += len(text) // CHARS_PER_TOKEN
        completion += req.max_tokens or DEFAULT_COMPLETION
        if PLAUSIBLE in defaults | {c.name for c in inst.probe.checks}:
            # usage_completion_plausible sends the answer back inside a prompt (1 output token)
            measured += 1
            prompt += echo_prompt + (req.max_tokens or DEFAULT_COMPLETION)
            completion += 1
    if measured:  # and the bare prefix once per run
        prompt, completion = prompt + echo_prompt, completion + 1
    requests = len(instances) + measured + (1 if measured else 0)
    return SuiteEstimate(sc.job_name, requests, prompt, completion, runs_per_day(sc))


def run_cost(cfg: Config, est: SuiteEstimate, model: str) -> float | None:
    """Estimated money of one run for one model, or None without a price."""
    price = cfg.price_for(model)
    if price is None:
        return None
    prompt, completion = est.prompt_tokens_per_run, est.completion_tokens_per_run
    return (prompt * price.input + completion * price.output) / 1_000_000


def daily_cost(cfg: Config, est: SuiteEstimate, model: str) -> float | None:
    """Estimated money per day for one model, or None without a price."""
    per_run = run_cost(cfg, est, model)
    return None if per_run is None else per_run * est.runs_per_day
