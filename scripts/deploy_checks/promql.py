"""What PromQL expressions name (metrics, labels), and the expressions the dashboard, the alert
rules and the prometheus-adapter rules hold."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import yaml

from .framework import fail

_KEYWORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "offset",
    "and",
    "or",
    "unless",
    "atan2",
    "inf",
    "nan",
}
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
# Grafana's built-in interval variables; a dashboard defines no other variables in queries.
GRAFANA_INTERVALS = ("$__rate_interval", "${__rate_interval}", "$__interval", "${__interval}")
GRAFANA_RANGES = ("$__range", "${__range}")


def metric_names(expr: str) -> set[str]:
    """Metric names an expression selects (identifiers that are not functions, keywords, label
    names, or parts of numbers and durations). Grafana variables count as durations."""
    if "__name__" in expr:
        fail(f"expression selects by __name__, which this check cannot follow: {expr}")
    s = _STRINGS.sub('""', expr)
    s = re.sub(r"\$\{[^}]*\}|\$\w+", "5m", s)
    s = re.sub(r"\{[^{}]*\}", " ", s)
    s = re.sub(r"\[[^\]]*\]", " ", s)
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", s):
        prev = s[m.start() - 1] if m.start() else " "
        if prev.isdigit() or prev == ".":
            continue  # 1e-9, 5m
        if s[m.end() :].lstrip().startswith("("):
            continue  # function or aggregation
        if m.group(0).lower() in _KEYWORDS:
            continue
        names.add(m.group(0))
    return names


def label_names(expr: str) -> set[str]:
    """Label names an expression matches on or groups by."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    used = set()
    for block in re.findall(r"\{([^{}]*)\}", s):
        used |= set(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", block))
    for block in re.findall(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)", s):
        used |= {w.strip() for w in block.split(",") if w.strip()}
    return used


def grafana_to_promql(expr: str, interval: str = "1m") -> str:
    """A dashboard query as Prometheus receives it from Grafana: the interval variables become
    `interval`, the range variable 1h. Fails on any other variable (the dashboard has none)."""
    for var in GRAFANA_INTERVALS:
        expr = expr.replace(var, interval)
    for var in GRAFANA_RANGES:
        expr = expr.replace(var, "1h")
    left = re.findall(r"\$\{?\w+\}?", expr)
    if left:
        fail(f"query uses dashboard variables {left} this check cannot fill in: {expr}")
    return expr


def adapter_rule_queries(
    rule: dict, label_matchers: str = 'namespace="x"', group_by: str = "pod"
) -> tuple[str, str, str]:
    """(seriesQuery, metricsQuery with its template filled in as the adapter fills it for one
    HPA request, the name the rule exposes)."""
    series_q = rule["seriesQuery"]
    series = re.match(r"\s*([A-Za-z_:][A-Za-z0-9_:]*)", series_q)
    if not series:
        fail(f"seriesQuery {series_q!r} does not start with a metric name")
    metrics_q = (
        rule.get("metricsQuery", "sum(<<.Series>>{<<.LabelMatchers>>}) by (<<.GroupBy>>)")
        .replace("<<.Series>>", series.group(1))
        .replace("<<.LabelMatchers>>", label_matchers)
        .replace("<<.GroupBy>>", group_by)
    )
    if "<<" in metrics_q:
        fail(f"unknown template field in metricsQuery {rule['metricsQuery']!r}")
    name = series.group(1)
    if "name" in rule:
        pat = rule["name"].get("matches", ".*")
        if not re.search(pat, name):
            fail(f"name.matches {pat!r} does not match the series {name}")
        name = re.sub(pat, rule["name"].get("as", "$0").replace("$0", r"\g<0>"), name)
    return series_q, metrics_q, name


def dashboard_panels(dash: dict) -> Iterator[dict]:
    """Every panel, rows' nested panels included."""

    def walk(panels: list[dict]) -> Iterator[dict]:
        for p in panels:
            yield p
            yield from walk(p.get("panels", []))

    yield from walk(dash.get("panels", []))


def dashboard_exprs(dash: dict) -> Iterator[tuple[str, str]]:
    """(where, PromQL) for every panel target and every query variable of a Grafana dashboard."""
    for p in dashboard_panels(dash):
        for t in p.get("targets", []):
            if t.get("expr"):
                yield f"panel {p.get('title', '?')!r}", t["expr"]
    for var in dash.get("templating", {}).get("list", []):
        if var.get("type") != "query":
            continue
        q = var.get("query")
        q = q.get("query", "") if isinstance(q, dict) else q or ""
        m = re.match(r"\s*label_values\(\s*([^,)]+)\s*,", q)
        if m:
            yield f"variable {var['name']}", m.group(1)
        elif q.startswith("query_result("):
            yield f"variable {var['name']}", q[len("query_result(") : -1]


def alert_rules(rule_file: Path) -> Iterator[tuple[str, dict]]:
    """(group name, rule) for every rule in a Prometheus rule file."""
    doc = yaml.safe_load(rule_file.read_text())
    for group in doc.get("groups", []):
        for rule in group.get("rules", []):
            yield group["name"], rule
