from __future__ import annotations

from pathlib import Path

import yaml
from deploy_checks.prometheus import ALERT_TESTS, POD_LABELS, alert_test_coverage, live_config
from deploy_checks.promql import alert_rules

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "docker/prometheus/alerts.yml"


def cases(*pairs: tuple[str, bool]) -> dict:
    return {
        "tests": [
            {
                "alert_rule_test": [
                    {"alertname": name, "exp_alerts": [{"exp_labels": {}}] if fires else []}
                    for name, fires in pairs
                ]
            }
        ]
    }


def test_coverage_wants_a_firing_and_a_quiet_case_per_alert(tmp_path: Path) -> None:
    f = tmp_path / "t.yml"
    f.write_text(yaml.safe_dump(cases(("A", True), ("A", False), ("B", True), ("C", False))))
    assert alert_test_coverage(f, {"A", "B", "C"}) == [
        "C: no case where it fires",
        "B: no case where it stays quiet",
    ]


def test_coverage_reports_tests_of_alerts_that_do_not_exist(tmp_path: Path) -> None:
    f = tmp_path / "t.yml"
    f.write_text(yaml.safe_dump(cases(("A", True), ("A", False), ("Gone", True))))
    assert alert_test_coverage(f, {"A"}) == ["tests name unknown alerts ['Gone']"]


def test_the_committed_unit_tests_cover_every_committed_alert() -> None:
    alerts = {r["alert"] for _, r in alert_rules(RULES)}
    assert len(alerts) >= 6
    assert alert_test_coverage(ROOT / ALERT_TESTS, alerts) == []


def test_live_config_keeps_the_repo_job_but_scrapes_one_local_target() -> None:
    config = live_config(ROOT, [RULES], "127.0.0.1:1234")
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "aft-serve"  # the alert rules select job="aft-serve"
    assert not any(k.endswith("sd_configs") for k in job)
    assert job["static_configs"] == [{"targets": ["127.0.0.1:1234"], "labels": POD_LABELS}]
    assert job["scrape_interval"] == config["global"]["evaluation_interval"] == "1s"
    assert config["rule_files"] == [str(RULES)]
    repo = yaml.safe_load((ROOT / "docker/prometheus/prometheus.yml").read_text())
    repo_job = next(j for j in repo["scrape_configs"] if j["job_name"] == "aft-serve")
    assert job.get("relabel_configs") == repo_job.get("relabel_configs")
