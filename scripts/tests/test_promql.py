from __future__ import annotations

import pytest
from deploy_checks.framework import CheckFailed
from deploy_checks.promql import (
    adapter_rule_queries,
    dashboard_exprs,
    grafana_to_promql,
    label_names,
    metric_names,
)


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ("sum by (route) (rate(aft_requests_total[$__rate_interval]))", {"aft_requests_total"}),
        (
            'histogram_quantile(0.99, sum by (le) (rate(aft_x_bucket{route="/v1/embed"}[5m])))',
            {"aft_x_bucket"},
        ),
        ("sum(rate(a_sum[1m])) / clamp_min(sum(rate(a_count[1m])), 1e-9)", {"a_sum", "a_count"}),
        ('sum(rate(r{status=~"5.."}[1m])) / on(job) group_left sum(up)', {"r", "up"}),
        ("max by (model, variant) (aft_model_info) offset 5m", {"aft_model_info"}),
        ("avg(aft_queue_depth) and on() vector(1) > bool 2", {"aft_queue_depth"}),
        ("sum(rate(x[1m])) by (le, instance)", {"x"}),
        ('count(y{route="sum(fake_metric)"})', {"y"}),
    ],
)
def test_metric_names_are_the_selected_series_only(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_metric_names_refuses_name_selectors_it_cannot_follow() -> None:
    with pytest.raises(CheckFailed, match="__name__"):
        metric_names('{__name__=~"aft_.*"}')


def test_label_names_covers_matchers_and_grouping() -> None:
    expr = 'sum by (le, route) (rate(x{status=~"5..",route!="a,b"}[1m])) / on (job) y'
    assert label_names(expr) == {"le", "route", "status", "job"}


def test_grafana_intervals_become_a_promql_duration() -> None:
    expr = "rate(x[$__rate_interval]) + rate(y[${__interval}]) + increase(z[$__range])"
    assert grafana_to_promql(expr, "30s") == "rate(x[30s]) + rate(y[30s]) + increase(z[1h])"


def test_grafana_variables_other_than_intervals_fail() -> None:
    with pytest.raises(CheckFailed, match=r"\$instance"):
        grafana_to_promql('x{instance="$instance"}')


def test_adapter_rule_name_mapping_and_template() -> None:
    rule = {
        "seriesQuery": 'q_depth{pod!=""}',
        "name": {"matches": "^q_(.*)$", "as": r"\1_x"},
        "metricsQuery": "sum by (<<.GroupBy>>) (<<.Series>>{<<.LabelMatchers>>})",
    }
    series_q, metrics_q, name = adapter_rule_queries(rule)
    assert series_q == 'q_depth{pod!=""}'
    assert metrics_q == 'sum by (pod) (q_depth{namespace="x"})'
    assert name == "depth_x"


def test_adapter_rule_with_unknown_template_field_fails() -> None:
    with pytest.raises(CheckFailed, match="template"):
        adapter_rule_queries({"seriesQuery": "q", "metricsQuery": "<<.Bogus>>"})


def test_dashboard_exprs_walks_rows_and_query_variables() -> None:
    dash = {
        "panels": [
            {"title": "a", "targets": [{"expr": "x"}, {"refId": "B"}]},
            {"type": "row", "panels": [{"title": "b", "targets": [{"expr": "y"}]}]},
        ],
        "templating": {
            "list": [
                {"type": "query", "name": "inst", "query": "label_values(z, instance)"},
                {"type": "datasource", "name": "ds"},
            ]
        },
    }
    assert list(dashboard_exprs(dash)) == [
        ("panel 'a'", "x"),
        ("panel 'b'", "y"),
        ("variable inst", "z"),
    ]
