"""Command line: check-config, run, serve, models, report, demo, baseline, fleet.

Exit codes: 0 success (for `run`: every probe answered and every check passed), 1 some
probe failed, 2 bad configuration or usage, or the fleet's database is unreachable.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from aione_probe import __version__
from aione_probe.analysis.authenticity import pin_baseline as pin_authenticity
from aione_probe.analysis.drift import baseline_shortfall
from aione_probe.analysis.run import drift_series, pin_drift_baseline, series_name
from aione_probe.asyncstore import is_disconnect
from aione_probe.config import Config, key_problems, load_config
from aione_probe.errors import ConfigError, config_errors
from aione_probe.estimate import daily_cost, estimate_suite
from aione_probe.fleet import FleetDatabaseError
from aione_probe.fleet.status import print_status
from aione_probe.redact import install_log_redaction, printable
from aione_probe.runner import RunSummary
from aione_probe.service import Service, load_suites, write_report
from aione_probe.slo import slo_flags
from aione_probe.store import Store
from aione_probe.types import utcnow

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2
EXIT_INTERRUPTED = 130

log = logging.getLogger("aione_probe")

# A pipe or a log file gets wide lines rather than a table folded at 80 columns.
console = Console(width=None if sys.stdout.isatty() else 200)
# Errors are never folded: a path split across lines cannot be copied or grepped.
err = Console(stderr=True, soft_wrap=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``aione-probe`` console script."""
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # httpcore's and httpx's DEBUG lines print headers; every line is scrubbed of keys.
    install_log_redaction()
    try:
        return int(args.func(args))
    except ConfigError as exc:
        for line in str(exc).splitlines():
            err.print(f"config error {line}", markup=False, highlight=False)
        return EXIT_CONFIG
    except FleetDatabaseError as exc:
        err.print(f"fleet error {exc}", markup=False, highlight=False)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="aione-probe", description=__doc__)
    p.add_argument("--version", action="version", version=f"aione-probe {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)

    def cmd(
        name: str, fn: Callable[[argparse.Namespace], int], help: str
    ) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help, description=help)
        sp.set_defaults(func=fn)
        return sp

    sp = cmd("check-config", _check_config, "validate a config and its probe files; sends nothing")
    sp.add_argument("config", nargs="?", type=Path)
    sp.add_argument("--config", dest="config_opt", type=Path)

    sp = cmd("run", _run, "run the chosen suites once and exit")
    _add_config(sp)
    sp.add_argument("--gateway", help="only this gateway")
    sp.add_argument("--model", help="only this model")
    sp.add_argument("--suite", help="only this suite (its name in the config)")
    sp.add_argument("--seed", type=int, help="fix the template seed (reproduce a run)")

    sp = cmd("serve", _serve, "run the scheduler and the /metrics, /healthz, /report endpoint")
    _add_config(sp)

    sp = cmd("models", _models, "list what each gateway serves")
    _add_config(sp)

    sp = cmd("report", _report, "write the HTML verification report and its JSON export")
    _add_config(sp)
    sp.add_argument("--out", type=Path, help="output folder (default: reports.dir)")
    sp.add_argument("--since", type=_when, help="period start: ISO date/time (UTC) or '7d' ago")
    sp.add_argument("--until", type=_when, help="period end: ISO date/time (UTC); default now")

    bl = sub.add_parser(
        "baseline",
        help="pin, show, export or import baselines and fingerprint profiles",
        description="Baselines are trusted windows that later windows are compared with: "
        "'authenticity' (a fingerprint of the target itself, trust on first use), 'drift' "
        "(golden pass rates and latency) and 'profile' (a fingerprint imported from elsewhere).",
    )
    bsub = bl.add_subparsers(dest="baseline_command", required=True)
    sp = bsub.add_parser("pin", help="pin a window of a target as its baseline")
    sp.set_defaults(func=_baseline_pin)
    _add_config(sp)
    sp.add_argument("--gateway", required=True)
    sp.add_argument("--model", required=True)
    sp.add_argument("--kind", choices=["authenticity", "drift"], default="authenticity")
    sp.add_argument("--suite", help="drift only: one suite (default: every suite with runs)")
    sp.add_argument(
        "--location",
        help="drift only, fleet mode: one location (default: each location with runs, "
        "one baseline per location)",
    )
    sp.add_argument("--since", type=_when, default="7d", help="window start (default 7d ago)")
    sp.add_argument("--until", type=_when, help="window end (default now)")
    sp = bsub.add_parser("show", help="list baselines")
    sp.set_defaults(func=_baseline_show)
    _add_config(sp)
    sp.add_argument("--gateway")
    sp.add_argument("--model")
    sp.add_argument("--all", action="store_true", help="include inactive (replaced) baselines")
    sp = bsub.add_parser("export", help="write a baseline as a JSON document")
    sp.set_defaults(func=_baseline_export)
    _add_config(sp)
    sp.add_argument("id", type=int)
    sp.add_argument("--out", type=Path, help="file (default: standard output)")
    sp = bsub.add_parser("import", help="load a baseline document")
    sp.set_defaults(func=_baseline_import)
    _add_config(sp)
    sp.add_argument("file", type=Path)
    sp.add_argument(
        "--as-profile",
        action="store_true",
        help="import an authenticity fingerprint as a known-good profile of its model, "
        "compared with every gateway that serves that model",
    )

    fl = sub.add_parser("fleet", help="fleet mode: inspect the instances sharing the database")
    fsub = fl.add_subparsers(dest="fleet_command", required=True)
    sp = fsub.add_parser("status", help="instances (location, heartbeat, runs in flight), queue")
    sp.set_defaults(func=_fleet_status)
    _add_config(sp)

    sp = cmd("demo", _demo, "start the local gateway and the service with the demo config")
    sp.add_argument("--config", type=Path, default=Path("examples/demo.toml"))
    sp.add_argument("--once", action="store_true", help="one full cycle, write the report, exit")
    return p


def _add_config(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--config", "-c", type=Path, required=True, help="config TOML file")


def _when(text: str) -> datetime:
    """Parse ``2026-11-01``, ``2026-11-01T12:00`` (UTC unless an offset is given) or ``7d``."""
    if text and text[-1] in "smhd" and text[:-1].replace(".", "", 1).isdigit():
        from aione_probe.config import parse_duration

        return utcnow() - timedelta(seconds=parse_duration(text))
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date, time or duration: {text!r}") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


# --------------------------------------------------------------------------- commands
def _check_config(args: argparse.Namespace) -> int:
    path = args.config or args.config_opt
    if path is None:
        err.print("usage: aione-probe check-config FILE")
        return EXIT_CONFIG
    cfg = load_config(path)
    try:
        suites = load_suites(cfg)
        errors = key_problems(cfg)
    except ConfigError as exc:
        errors = [exc, *key_problems(cfg)]
    if cfg.otel is not None:
        errors += cfg.otel.header_problems(cfg.path)
    if errors:
        raise config_errors(errors)
    console.print(f"{path}: OK", highlight=False)
    totals: dict[tuple[str, str], float] = {}
    for gw in cfg.gateways:
        key = _key_source(gw.api_key_env, gw.api_key_file, gw.api_key)
        models = (
            ", ".join(gw.models) if gw.models else f"discovered (max {gw.discovery.max_models})"
        )
        console.print(
            f"  gateway {gw.name}: {gw.protocol} {gw.base_url} key={key} models={models}",
            highlight=False,
        )
    table = Table(title="estimated load per model (upper bound: prompt chars/4, max_tokens)")
    for col in ("suite", "schedule", "requests/run", "tokens/run", "runs/day", "tokens/day"):
        table.add_column(col, justify="right" if col != "suite" else "left")
    for sc in cfg.suites:
        est = estimate_suite(sc, suites[sc.job_name])
        when = f"every {sc.interval:g}s" if sc.interval is not None else f"cron {sc.cron}"
        per_run = est.prompt_tokens_per_run + est.completion_tokens_per_run
        table.add_row(
            sc.job_name,
            when,
            str(est.requests_per_run),
            f"{per_run:,}",
            f"{est.runs_per_day:g}",
            f"{est.tokens_per_day:,.0f}",
        )
        for gw in cfg.gateways:
            for model in gw.models or []:
                if not sc.covers(gw.name, model):
                    continue
                cost = daily_cost(cfg, est, model)
                if cost is not None:
                    totals[(gw.name, model)] = totals.get((gw.name, model), 0.0) + cost
    console.print(table)
    for (gw_name, model), cost in sorted(totals.items()):
        console.print(
            f"  {gw_name}/{model}: about {cost:.2f} {cfg.budget.currency}/day at the price table",
            highlight=False,
        )
    if cfg.otel is not None:
        headers = ", ".join(f"{h}=${e}" for h, e in cfg.otel.headers_env.items()) or "none"
        console.print(
            f"  otel: {cfg.otel.endpoint} every {cfg.otel.interval:g}s, headers {headers}, "
            f"traces {'on' if cfg.otel.traces else 'off'}",
            highlight=False,
        )
    cap = cfg.budget.daily_cap
    console.print(f"  budget: {cap if cap is not None else 'no'} daily cap", highlight=False)
    for where, flag in slo_flags(cfg):
        console.print(f"  warning: {where}: {flag}", style="yellow", highlight=False)
    return EXIT_OK


def _key_source(env: str | None, file: Path | None, read: Callable[[], str | None]) -> str:
    if not env and not file:
        return "none"
    where = f"${env}" if env else str(file)
    try:
        present = read() is not None
    except ConfigError:
        present = False
    return f"{where} ({'set' if present else 'NOT SET'})"


def _run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    return asyncio.run(_run_async(cfg, args.gateway, args.model, args.suite, args.seed))


async def _run_async(
    cfg: Config, gateway: str | None, model: str | None, suite: str | None, seed: int | None
) -> int:
    service = Service(cfg)
    try:
        await service.start()
        for problem in key_problems(cfg):
            err.print(f"{problem}; nothing is sent to this gateway", markup=False, highlight=False)
        for name, reason in service.discovery_errors.items():
            err.print(
                f"gateway {name}: model discovery failed: {printable(reason)}",
                markup=False,
                highlight=False,
            )
        jobs = service.plan(gateway, model, suite)
        if not jobs:
            err.print("nothing to run: no (suite, gateway, model) matches", highlight=False)
            return EXIT_CONFIG if not service.discovery_errors else EXIT_FAILED
        with _progress(service.requests_in(jobs)) as advance:
            summaries = await service.run_once(jobs, progress=advance, seed=seed)
        await service.analyse_and_report()
    finally:
        await service.aclose()
    _print_summary(summaries)
    return EXIT_OK if summaries and all(s.passed for s in summaries) else EXIT_FAILED


@contextlib.contextmanager
def _progress(total: int) -> Iterator[Callable[[int], None]]:
    if not console.is_terminal:
        yield lambda _n: None
        return
    columns = (TextColumn("probing"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("probing", total=total)
        yield lambda n: bar.advance(task, n)


def _print_summary(summaries: list[RunSummary]) -> None:
    table = Table(title="aione-probe run")
    for col in (
        "gateway",
        "model",
        "suite",
        "status",
        "requests",
        "failed",
        "checks",
        "TTFT p50",
        "cost",
    ):
        table.add_column(col)
    for s in sorted(summaries, key=lambda s: (s.target.gateway, s.target.model, s.suite)):
        checks = " ".join(f"{k}={v}" for k, v in sorted(s.checks.items()))
        ttft = sorted(s.ttft_s)
        p50 = f"{ttft[len(ttft) // 2] * 1000:.0f} ms" if ttft else "-"
        table.add_row(
            s.target.gateway,
            Text(printable(s.target.model)),  # a discovered name is the gateway's text
            s.suite,
            s.status,
            str(s.requests),
            str(s.failed_requests),
            checks,
            p50,
            f"{s.cost:.6f}",
        )
    console.print(table)


def _serve(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    return asyncio.run(_serve_async(cfg))


async def _serve_async(
    cfg: Config,
    *,
    analysis_interval_s: float = 300.0,
    announce: Callable[[str], None] | None = None,
) -> int:
    """Serve until SIGTERM or Ctrl-C. SIGTERM drains runs in progress (up to 30 s) and
    writes a last report. The first Ctrl-C (SIGINT) stops scheduling and gives runs in
    progress 3 s before they are marked interrupted (no last report); a second Ctrl-C, or
    any signal during the stop, exits at once (exit code 130). SIGHUP reloads the config
    file: a valid new config restarts the service inside the process (runs in progress
    drain first; counters restart from zero as after any restart); an invalid one is
    logged and the last good config keeps running untouched."""
    loop = asyncio.get_running_loop()
    while True:
        service = Service(cfg)
        stop = asyncio.Event()
        pending: list[Config] = []
        loop.add_signal_handler(signal.SIGTERM, _stopper(service, stop, interrupt=False))
        loop.add_signal_handler(signal.SIGINT, _stopper(service, stop, interrupt=True))
        loop.add_signal_handler(signal.SIGHUP, _reloader(cfg.path, pending, stop))
        try:
            await service.start()
            await service.serve(stop, analysis_interval_s=analysis_interval_s, on_ready=announce)
            if not service.interrupted:
                await _last_report(service)
        finally:
            await service.aclose()
        if service.interrupted:
            return EXIT_INTERRUPTED
        if not pending:
            return EXIT_OK
        cfg = pending[-1]


async def _last_report(service: Service) -> None:
    """The pass after a SIGTERM drain. Its failure is logged, not an exit 1: every run is
    stored already and the next start analyses it (like a failing periodic pass). In a
    fleet it is a full pass too, serialised with the fleet's own by the analysis lock."""
    try:
        await service.analyse_and_report()
    except Exception:
        log.exception("final analysis or report failed; the runs are stored")


def _stopper(service: Service, stop: asyncio.Event, *, interrupt: bool) -> Callable[[], None]:
    """The SIGTERM / SIGINT handler: the first stops the service; a second exits now."""

    def handle() -> None:
        if stop.is_set() and (interrupt or service.interrupted):
            # A second Ctrl-C: the operator will not wait. Runs still marked running are
            # recovered (marked failed) at the next start; the metrics child exits with us.
            sys.stderr.write("second interrupt: exiting now\n")
            os._exit(EXIT_INTERRUPTED)
        if interrupt:
            service.interrupt()
            sys.stderr.write("stopping: runs in progress get 3 s (Ctrl-C again to exit now)\n")
        stop.set()

    return handle


def _reloader(path: Path, pending: list[Config], stop: asyncio.Event) -> Callable[[], None]:
    """The SIGHUP handler: validate the file now; only a good config stops the service."""

    def reload() -> None:
        try:
            new = load_config(path)
            load_suites(new)
            if new.otel is not None:
                new.otel.headers(new.path)  # a variable that is not set keeps the old config
        except ConfigError as exc:
            log.error("reload failed, keeping the last good config: %s", exc)
            return
        log.info("reloading %s", path)
        pending.append(new)
        stop.set()

    return reload


def _models(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    return asyncio.run(_models_async(cfg))


async def _models_async(cfg: Config) -> int:
    service = Service(cfg)
    rc = EXIT_OK
    try:
        for gw in cfg.gateways:
            try:
                listed = await service.clients[gw.name].list_models()
            except Exception as exc:  # any failure is reported per gateway, never fatal
                console.print(f"{gw.name}: error: {printable(exc)}", markup=False, highlight=False)
                rc = EXIT_FAILED
                continue
            chosen = set(gw.models if gw.models is not None else gw.discovery.select(listed))
            console.print(f"{gw.name} ({len(listed)} models)", highlight=False)
            for m in listed:
                # A listed name is the gateway's text: escaped, never markup.
                mark = "*" if m in chosen else " "
                console.print(f"  {mark} {printable(m)}", markup=False, highlight=False)
    finally:
        await service.aclose()
    return rc


def _report(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    store = _open_store(cfg)
    until = args.until or utcnow()
    since = args.since or until - timedelta(seconds=cfg.reports.period)
    out = args.out or cfg.resolve(cfg.reports.dir)
    index = write_report(store, since, until, out)
    console.print(f"report: {index}", highlight=False)
    return EXIT_OK


def _demo(args: argparse.Namespace) -> int:
    from aione_probe.demo import run_demo

    return run_demo(args.config, once=args.once)


# --------------------------------------------------------------------------- fleet
def _fleet_status(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    if cfg.fleet is None:
        raise ConfigError(str(cfg.path), "fleet", "no [fleet] section: not a fleet config")
    store = Store(cfg.storage_url())
    try:
        print_status(store, cfg.fleet, console)
    except Exception as exc:
        if not is_disconnect(exc):
            raise
        raise FleetDatabaseError(f"fleet database {store.url} is unreachable") from None
    finally:
        store.close()
    return EXIT_OK


# --------------------------------------------------------------------------- baselines
def _open_store(cfg: Config) -> Store:
    store = Store(cfg.storage_url())
    store.migrate()
    return store


def _baseline_pin(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    store = _open_store(cfg)
    until = args.until or utcnow()
    if args.kind == "authenticity":
        bid = pin_authenticity(store, args.gateway, args.model, args.since, until)
        console.print(f"pinned authenticity baseline {bid}", highlight=False)
        return EXIT_OK
    series = [
        (suite, location)
        for suite, location in drift_series(store, args.gateway, args.model)
        if args.suite in (None, suite) and args.location in (None, location)
    ]
    if not series:
        where = "".join(f" {x}" for x in (args.suite, args.location) if x)
        err.print(f"no runs of {args.gateway}/{args.model}{where} to pin", highlight=False)
        return EXIT_FAILED
    failed = False
    for suite, location in series:
        name = series_name(suite, location)
        try:
            bid, baseline = pin_drift_baseline(
                store, cfg, args.gateway, args.model, suite, args.since, until, "pinned", location
            )
        except ValueError as exc:
            err.print(f"cannot pin a drift baseline for {name}: {exc}", highlight=False)
            failed = True
            continue
        short = baseline_shortfall(baseline.runs, baseline.span_s, cfg.drift)
        console.print(
            f"pinned drift baseline {bid} for {name}: {baseline.runs} runs over "
            f"{timedelta(seconds=round(baseline.span_s))}"
            + (f" (below the recommended size: {short[1]})" if short else ""),
            highlight=False,
        )
    return EXIT_FAILED if failed else EXIT_OK


def _baseline_show(args: argparse.Namespace) -> int:
    store = _open_store(load_config(args.config))
    table = Table(title="baselines")
    for col in ("id", "kind", "gateway", "model", "suite", "window", "pinned", "source", "active"):
        table.add_column(col)
    rows = store.baselines(gateway=args.gateway, model=args.model, active_only=not args.all)
    for b in rows:
        table.add_row(
            str(b.id),
            b.kind,
            b.gateway,
            b.model,
            b.suite or "-",
            f"{b.window_start:%Y-%m-%d %H:%M} .. {b.window_end:%Y-%m-%d %H:%M}",
            f"{b.pinned_at:%Y-%m-%d %H:%M}",
            b.source,
            "yes" if b.active else "no",
        )
    console.print(table)
    return EXIT_OK


def _baseline_export(args: argparse.Namespace) -> int:
    store = _open_store(load_config(args.config))
    try:
        doc = store.export_baseline(args.id)
    except LookupError as exc:
        err.print(str(exc), highlight=False)
        return EXIT_FAILED
    text = json.dumps(doc, indent=2, sort_keys=True)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")
        console.print(f"wrote {args.out}", highlight=False)
    else:
        sys.stdout.write(text + "\n")
    return EXIT_OK


def _baseline_import(args: argparse.Namespace) -> int:
    store = _open_store(load_config(args.config))
    try:
        doc = json.loads(args.file.read_text(encoding="utf-8"))
        if args.as_profile:
            if doc.get("kind") != "authenticity":
                raise ValueError("only an authenticity baseline can become a profile")
            doc = {**doc, "kind": "profile"}
        bid = store.import_baseline(doc)
    except (OSError, ValueError) as exc:
        err.print(f"{args.file}: {exc}", highlight=False)
        return EXIT_CONFIG
    console.print(f"imported {doc.get('kind')} baseline {bid}", highlight=False)
    return EXIT_OK
