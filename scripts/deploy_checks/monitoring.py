"""The dashboard, the alert rules and the autoscaler's adapter rule against the metric catalog
(src/metrics.json): every metric they name is a series the service exports, every label they
use is on it."""

from __future__ import annotations

import json

import yaml

from .framework import Check, Context, fail
from .k8s import adapter_rules
from .metrics import CATALOG_PATH, Catalog
from .products import CATALOG, RENDERED, RULE_FILES
from .promql import (
    adapter_rule_queries,
    alert_rules,
    dashboard_exprs,
    dashboard_panels,
    label_names,
    metric_names,
)

DASHBOARD = "docker/grafana/dashboards/aft-serve.json"
DATASOURCES = "docker/grafana/provisioning/datasources/prometheus.yaml"
# Panels an operator needs first (the deployment issue asked for these).
REQUIRED_PANELS = (
    "request rate",
    "latency",
    "batch size",
    "queue depth",
    "errors by status",
    "tokens per second",
)


def check_catalog(ctx: Context) -> str:
    catalog = Catalog.load(ctx.root / CATALOG_PATH)
    ctx.put(CATALOG, catalog)
    kinds = [f.type for f in catalog.families.values()]
    counts = ", ".join(f"{kinds.count(t)} {t}" for t in sorted(set(kinds)))
    return f"{len(catalog.families)} families ({counts}): names, types, labels and help valid"


def check_dashboard(ctx: Context) -> str:
    catalog = ctx.get(CATALOG)
    try:
        dash = json.loads((ctx.root / DASHBOARD).read_text())
    except ValueError as e:
        fail(f"{DASHBOARD}: {e}")
    prov = yaml.safe_load((ctx.root / DATASOURCES).read_text())
    uids = {d["uid"] for d in prov["datasources"]}
    ds_vars = {
        "${" + v["name"] + "}"
        for v in dash.get("templating", {}).get("list", [])
        if v.get("type") == "datasource"
    }
    panels = list(dashboard_panels(dash))
    for p in panels:
        uid = (p.get("datasource") or {}).get("uid")
        if p.get("type") != "row" and uid not in uids | ds_vars:
            fail(f"panel {p.get('title')!r} uses data source {uid!r}, not the provisioned one")
    titles = " | ".join(p.get("title", "").lower() for p in panels)
    for want in REQUIRED_PANELS:
        if want not in titles:
            fail(f"no panel about {want!r}")
    exprs = list(dashboard_exprs(dash))
    if not any("by (status)" in " ".join(e.split()) for _, e in exprs):
        fail("no query groups errors by status")
    used: set[str] = set()
    for where, expr in exprs:
        names = metric_names(expr)
        if not names:
            fail(f"{where}: no metric in {expr!r}")
        catalog.check_expr(where, names, label_names(expr))
        used |= names
    return f"{len(exprs)} queries over {len(used)} catalog series, labels on them: " + ", ".join(
        sorted(used)
    )


def check_alert_metrics(ctx: Context) -> str:
    catalog = ctx.get(CATALOG)
    used: set[str] = set()
    n = 0
    for path in ctx.get(RULE_FILES):
        for _, rule in alert_rules(path):
            where = f"{path.name}: {rule.get('alert') or rule.get('record')}"
            names = metric_names(rule["expr"])
            catalog.check_expr(where, names, label_names(rule["expr"]))
            used |= names
            n += 1
    return f"{n} rules name {sorted(used)}: catalog series (or Prometheus' own `up`) and labels"


def check_adapter_metrics(ctx: Context) -> str:
    catalog = ctx.get(CATALOG)
    used: set[str] = set()
    for rule in adapter_rules(ctx.get(RENDERED)):
        series_q, metrics_q, exposed = adapter_rule_queries(rule)
        names = metric_names(series_q) | metric_names(metrics_q)
        catalog.check_expr(f"adapter rule {exposed}", names, label_names(series_q))
        # The HPA averages the value per pod: a gauge, not a counter's running total.
        kinds = {catalog.families[n].type for n in names if n in catalog.families}
        if kinds != {"gauge"}:
            fail(
                f"adapter rule {exposed} reads {sorted(names)} of type {sorted(kinds)}, not gauges"
            )
        used |= names
    return f"adapter rules read {sorted(used)}: catalog gauges"


CHECKS = [
    Check("metrics-catalog", check_catalog, provides=(CATALOG,)),
    Check("dashboard-metrics", check_dashboard, needs=(CATALOG,)),
    Check("alert-metrics", check_alert_metrics, needs=(CATALOG, RULE_FILES)),
    Check("adapter-metrics", check_adapter_metrics, needs=(CATALOG, RENDERED)),
]
