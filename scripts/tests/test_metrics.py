from __future__ import annotations

import json
from pathlib import Path

import pytest
from deploy_checks.framework import CheckFailed
from deploy_checks.metrics import CATALOG_PATH, Catalog, Exposition, compare

ROOT = Path(__file__).resolve().parents[2]

CATALOG = [
    {"name": "t_requests_total", "type": "counter", "labels": ["route"], "help": "Requests."},
    {"name": "t_seconds", "type": "histogram", "labels": [], "help": "Time."},
    {"name": "t_depth", "type": "gauge", "labels": [], "help": "Depth."},
]
EXPOSITION = """\
# HELP t_requests_total Requests.
# TYPE t_requests_total counter
t_requests_total{route="/a"} 3
# HELP t_seconds Time.
# TYPE t_seconds histogram
t_seconds_bucket{le="0.1"} 1
t_seconds_bucket{le="+Inf"} 2
t_seconds_sum 0.3
t_seconds_count 2
# HELP t_depth Depth.
# TYPE t_depth gauge
t_depth 0
# TYPE process_open_fds gauge
process_open_fds 9
"""


def write(tmp_path: Path, entries: object) -> Path:
    p = tmp_path / "metrics.json"
    p.write_text(json.dumps(entries))
    return p


def test_the_repository_catalog_loads() -> None:
    catalog = Catalog.load(ROOT / CATALOG_PATH)
    assert "aft_requests_total" in catalog.families
    assert catalog.series()["aft_request_duration_seconds_bucket"] >= {"route", "le"}


def test_histograms_expand_to_their_three_series(tmp_path: Path) -> None:
    catalog = Catalog.load(write(tmp_path, CATALOG))
    assert catalog.series() == {
        "t_requests_total": {"route"},
        "t_seconds_bucket": {"le"},
        "t_seconds_sum": set(),
        "t_seconds_count": set(),
        "t_depth": set(),
    }


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"type": "summary"}, "type"),
        ({"name": "t requests"}, "invalid metric name"),
        ({"name": "t_requests"}, "_total"),
        ({"labels": ["instance"]}, "clash"),
        ({"labels": ["route", "route"]}, "repeat"),
        ({"help": ""}, "help"),
        ({"unit": "s"}, "exactly the keys"),
    ],
)
def test_malformed_catalog_entries_fail(tmp_path: Path, change: dict, message: str) -> None:
    entries = [dict(CATALOG[0], **change), *CATALOG[1:]]
    with pytest.raises(CheckFailed, match=message):
        Catalog.load(write(tmp_path, entries))


def test_a_family_listed_twice_fails(tmp_path: Path) -> None:
    with pytest.raises(CheckFailed, match="twice"):
        Catalog.load(write(tmp_path, [CATALOG[0], CATALOG[0]]))


def test_exposition_parse_reads_types_help_and_labels() -> None:
    e = Exposition.parse(EXPOSITION)
    assert e.types["t_seconds"] == "histogram"
    assert e.helps["t_depth"] == "Depth."
    assert e.samples["t_seconds_bucket"] == {"le"}
    assert e.samples["t_requests_total"] == {"route"}


def test_matching_exposition_has_no_differences(tmp_path: Path) -> None:
    assert compare(Catalog.load(write(tmp_path, CATALOG)), Exposition.parse(EXPOSITION), "t_") == []


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("# TYPE t_depth gauge", "# TYPE t_depth counter", "t_depth: exported as counter"),
        ("# HELP t_depth Depth.", "# HELP t_depth Deep.", "t_depth: help"),
        ('t_requests_total{route="/a"}', 't_requests_total{path="/a"}', "labels ['path']"),
        ("t_seconds_sum 0.3\n", "", "no t_seconds_sum"),
        ("t_depth 0\n", "t_depth 0\n# TYPE t_new gauge\nt_new 1\n", "t_new: exported but not"),
    ],
)
def test_compare_reports_each_kind_of_drift(
    tmp_path: Path, old: str, new: str, message: str
) -> None:
    assert old in EXPOSITION
    problems = compare(
        Catalog.load(write(tmp_path, CATALOG)), Exposition.parse(EXPOSITION.replace(old, new)), "t_"
    )
    assert any(message in p for p in problems), problems


def test_expressions_are_checked_against_catalog_series_and_labels(tmp_path: Path) -> None:
    catalog = Catalog.load(write(tmp_path, CATALOG))
    catalog.check_expr("ok", {"t_seconds_bucket"}, {"le", "instance"})
    catalog.check_expr("prometheus' own", {"up"}, {"job"})
    with pytest.raises(CheckFailed, match="t_seconds"):
        catalog.check_expr("bare histogram", {"t_seconds"}, set())
    with pytest.raises(CheckFailed, match="status"):
        catalog.check_expr("label", {"t_requests_total"}, {"route", "status"})


def test_a_keyed_family_may_be_absent_but_is_checked_when_exported(tmp_path: Path) -> None:
    keyed = {"name": "t_key_tokens", "type": "gauge", "labels": ["key"], "help": "Per key."}
    catalog = Catalog.load(write(tmp_path, [*CATALOG, keyed]))
    assert compare(catalog, Exposition.parse(EXPOSITION), "t_") == []
    wrong = (
        EXPOSITION
        + '# HELP t_key_tokens Per key.\n# TYPE t_key_tokens counter\nt_key_tokens{key="a"} 1\n'
    )
    problems = compare(catalog, Exposition.parse(wrong), "t_")
    assert any("t_key_tokens: exported as counter" in p for p in problems), problems
    unkeyed = {**keyed, "name": "t_plain", "labels": []}
    problems = compare(
        Catalog.load(write(tmp_path, [*CATALOG, unkeyed])), Exposition.parse(EXPOSITION), "t_"
    )
    assert "t_plain: not exported" in problems
