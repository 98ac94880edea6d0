"""The alert rules and the dashboard in a real Prometheus (Debian's 2.42): promtool's rule and
config checks, the rules' unit tests (each alert firing and quiet), and a Prometheus scraping a
live aft-serve that loads every rule and answers every dashboard and autoscaler query."""

from __future__ import annotations

import json
import math
import re
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from harness.serve_process import ServeError

from .compose import PROMETHEUS_CONFIG
from .framework import Check, Context, fail
from .k8s import adapter_rules
from .live import send_traffic, start_service
from .monitoring import DASHBOARD
from .products import LIVE_PROMETHEUS, RENDERED, RULE_FILES, SERVICE
from .promql import adapter_rule_queries, alert_rules, dashboard_exprs, grafana_to_promql
from .promserver import LivePrometheus, PrometheusServer
from .tools import run, tool

ALERT_TESTS = "docker/prometheus/alerts.test.yml"
SCRAPE_INTERVAL = "1s"  # short, so a few seconds of traffic give every rate() two samples
# Grafana's $__rate_interval for a 15 s scrape; wide enough to hold all the traffic sent here.
RATE_INTERVAL = "1m"
# What the Prometheus operator attaches to a pod's series (the adapter's rule selects on them).
POD_LABELS = {"namespace": "aft-checks", "pod": "aft-serve-0"}
APP_ROUTES = 'route!~"/health/.*|/metrics"'


def check_promtool_rules(ctx: Context) -> str:
    promtool = tool(ctx.options.venv, "promtool")
    files = ctx.get(RULE_FILES)
    r = run([promtool, "check", "rules", *map(str, files)])
    if r.returncode:
        fail(f"promtool check rules: {(r.stdout + r.stderr).strip()}")
    found = re.findall(r"SUCCESS: (\d+) rules found", r.stdout)
    # The compose config itself, with the container's rule paths pointing at the repo's files.
    config = yaml.safe_load((ctx.root / PROMETHEUS_CONFIG).read_text())
    config["rule_files"] = [str(p) for p in files]
    with tempfile.NamedTemporaryFile("w", suffix=".yml") as f:
        yaml.safe_dump(config, f)
        f.flush()
        r = run([promtool, "check", "config", f.name])
    if r.returncode:
        fail(f"promtool check config {PROMETHEUS_CONFIG}: {(r.stdout + r.stderr).strip()}")
    version = run([promtool, "--version"]).stdout.split("\n", 1)[0]
    return (
        f"{sum(map(int, found))} rules in {', '.join(p.name for p in files)}; "
        f"{PROMETHEUS_CONFIG} valid with them ({version})"
    )


def alert_test_coverage(test_file: Path, alerts: set[str]) -> list[str]:
    """What the unit tests in test_file leave out: every alert needs a case where it fires
    (non-empty exp_alerts) and one where it stays quiet (empty exp_alerts)."""
    doc = yaml.safe_load(test_file.read_text())
    fires: set[str] = set()
    quiet: set[str] = set()
    for test in doc.get("tests", []):
        for case in test.get("alert_rule_test", []):
            (fires if case.get("exp_alerts") else quiet).add(case["alertname"])
    problems = []
    unknown = (fires | quiet) - alerts
    if unknown:
        problems.append(f"tests name unknown alerts {sorted(unknown)}")
    problems += [f"{a}: no case where it fires" for a in sorted(alerts - fires)]
    problems += [f"{a}: no case where it stays quiet" for a in sorted(alerts - quiet)]
    return problems


def check_alert_tests(ctx: Context) -> str:
    test_file = ctx.root / ALERT_TESTS
    files = ctx.get(RULE_FILES)
    doc = yaml.safe_load(test_file.read_text())
    tested = {(test_file.parent / f).resolve() for f in doc.get("rule_files", [])}
    if tested != {p.resolve() for p in files}:
        fail(f"{ALERT_TESTS} tests {sorted(map(str, tested))}, Prometheus loads {files}")
    alerts = {r["alert"] for p in files for _, r in alert_rules(p) if "alert" in r}
    problems = alert_test_coverage(test_file, alerts)
    if problems:
        fail(f"{ALERT_TESTS}: " + "; ".join(problems))
    r = run([tool(ctx.options.venv, "promtool"), "test", "rules", str(test_file)])
    if r.returncode:
        fail(f"promtool test rules: {' | '.join((r.stdout + r.stderr).strip().splitlines())}")
    cases = sum(len(t.get("alert_rule_test", [])) for t in doc["tests"])
    return f"promtool test rules: {cases} cases, all {len(alerts)} alerts both firing and quiet"


def live_config(root: Path, rule_files: list[Path], target: str) -> dict[str, Any]:
    """The repo's prometheus.yml for one local target: its aft-serve job (path, relabelling)
    with a static target in place of DNS discovery, and the repo's rule files."""
    repo = yaml.safe_load((root / PROMETHEUS_CONFIG).read_text())
    job = next(j for j in repo["scrape_configs"] if j["job_name"] == "aft-serve")
    job = {k: v for k, v in job.items() if not k.endswith("sd_configs") and k != "static_configs"}
    job["static_configs"] = [{"targets": [target], "labels": dict(POD_LABELS)}]
    job["scrape_interval"] = SCRAPE_INTERVAL
    return {
        "global": {
            **repo.get("global", {}),
            "scrape_interval": SCRAPE_INTERVAL,
            "evaluation_interval": SCRAPE_INTERVAL,
        },
        "rule_files": [str(p) for p in rule_files],
        "scrape_configs": [job],
    }


def check_prometheus_scrape(ctx: Context) -> str:
    try:
        srv = ctx.enter(start_service(ctx.get(SERVICE)))
    except ServeError as e:
        fail(str(e).replace("\n", " | ")[-1500:])
    target = srv.url.removeprefix("http://")
    config = live_config(ctx.root, ctx.get(RULE_FILES), target)
    prom = ctx.enter(PrometheusServer(tool(ctx.options.venv, "prometheus"), config))
    t0 = time.monotonic()
    prom.wait_for('up{job="aft-serve"} == 1', "aft-serve is not scraped")
    up_after = time.monotonic() - t0
    # Two rounds, each waited for in Prometheus: the first creates the labelled series, the
    # second moves them, so every rate() over the dashboard's window has something to show.
    sent = 0
    for round_ in (1, 2):
        sent += sum(send_traffic(srv.url, rounds=3).values())
        prom.wait_for(
            f"sum(aft_requests_total{{{APP_ROUTES}}}) >= {sent}",
            f"traffic round {round_} did not reach Prometheus",
        )
    series = prom.query('count({job="aft-serve"})')[0]["value"][1]
    ctx.put(LIVE_PROMETHEUS, LivePrometheus(prom, srv.url))
    return (
        f"Prometheus at {prom.url} scraping aft-serve at {target} every {SCRAPE_INTERVAL}: "
        f"up == 1 after {up_after:.1f} s; {sent} requests in two rounds counted; "
        f"{series} series"
    )


def check_prometheus_rules(ctx: Context) -> str:
    prom = ctx.get(LIVE_PROMETHEUS).prometheus
    files = ctx.get(RULE_FILES)
    want = {(group, r.get("alert") or r["record"]) for p in files for group, r in alert_rules(p)}
    deadline = time.monotonic() + 15
    while True:  # rules report health "unknown" until their first evaluation
        groups = prom.api("rules")["groups"]
        rules = {(g["name"], r["name"]): r for g in groups for r in g["rules"]}
        if all(rules.get(k, {}).get("health") == "ok" for k in want):
            break
        if time.monotonic() > deadline:
            missing = sorted(want - set(rules))
            if missing:
                fail(f"Prometheus did not load {missing} (loaded {sorted(rules)})")
            bad = {k: (r["health"], r.get("lastError")) for k, r in rules.items() if k in want}
            fail(f"rules not healthy after 15 s: {bad}")
        time.sleep(0.5)
    active = prom.api("alerts")["alerts"]
    if active:
        summary = [(a["labels"].get("alertname"), a["state"]) for a in active]
        fail(f"alerts active against a healthy, lightly loaded service: {summary}")
    return (
        f"all {len(want)} rules of {len({g for g, _ in want})} group(s) loaded and evaluated "
        "(health ok); no alert pending or firing for the healthy service"
    )


def _value(series: dict[str, Any]) -> float:
    return float(series["value"][1])


def check_dashboard_live(ctx: Context) -> str:
    prom = ctx.get(LIVE_PROMETHEUS).prometheus
    dash = json.loads((ctx.root / DASHBOARD).read_text())
    empty, undefined, n = [], [], 0
    for where, expr in dashboard_exprs(dash):
        result = prom.query(grafana_to_promql(expr, RATE_INTERVAL))
        n += 1
        if not result:
            empty.append(f"{where}: {expr}")
        elif all(math.isnan(_value(s)) for s in result):
            undefined.append(f"{where}: {expr}")
    if empty or undefined:
        fail(
            f"of {n} dashboard queries, no series: {empty or 'none'}; "
            f"only NaN (no traffic seen): {undefined or 'none'}"
        )
    return f"all {n} dashboard queries return series with values ($__rate_interval = 1m)"


def check_adapter_live(ctx: Context) -> str:
    prom = ctx.get(LIVE_PROMETHEUS).prometheus
    matchers = ",".join(f'{k}="{v}"' for k, v in POD_LABELS.items())
    served = []
    for rule in adapter_rules(ctx.get(RENDERED)):
        series_q, metrics_q, name = adapter_rule_queries(rule, matchers, "pod")
        if not prom.api("series", **{"match[]": series_q}):
            fail(f"adapter rule {name}: seriesQuery {series_q} finds no series")
        result = prom.query(metrics_q)
        pods = {s["metric"].get("pod") for s in result}
        if pods != {POD_LABELS["pod"]}:
            fail(f"adapter rule {name}: {metrics_q} gives pods {pods}, not {POD_LABELS['pod']}")
        served.append(f"{name} = {_value(result[0]):g}")
    return "the autoscaler's metric per pod, as the adapter asks: " + ", ".join(served)


CHECKS = [
    Check("promtool-rules", check_promtool_rules, needs=(RULE_FILES,)),
    Check("alert-tests", check_alert_tests, needs=(RULE_FILES,)),
    Check(
        "prometheus-scrape",
        check_prometheus_scrape,
        needs=(SERVICE, RULE_FILES),
        provides=(LIVE_PROMETHEUS,),
    ),
    Check("prometheus-rules", check_prometheus_rules, needs=(LIVE_PROMETHEUS, RULE_FILES)),
    Check("dashboard-live", check_dashboard_live, needs=(LIVE_PROMETHEUS,)),
    Check("adapter-live", check_adapter_live, needs=(LIVE_PROMETHEUS, RENDERED)),
]
