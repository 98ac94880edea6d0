"""The static monitoring checks on copies of the repository's files: they pass as committed
and fail when a file drifts from the metric catalog."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from deploy_checks import monitoring
from deploy_checks.framework import Check, Context, Options, run_checks, validate
from deploy_checks.products import RULE_FILES
from deploy_checks.registry import all_checks

ROOT = Path(__file__).resolve().parents[2]
FILES = (
    "src/metrics.json",
    "docker/grafana/dashboards/aft-serve.json",
    "docker/grafana/provisioning/datasources/prometheus.yaml",
    "docker/prometheus/alerts.yml",
)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    for rel in FILES:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / rel, tmp_path / rel)
    return tmp_path


def run_monitoring(root: Path) -> dict[str, str]:
    def rule_files(ctx: Context) -> str:
        ctx.put(RULE_FILES, [root / "docker/prometheus/alerts.yml"])
        return "test rule files"

    checks = [
        Check("rule-files", rule_files, provides=(RULE_FILES,)),
        *[c for c in monitoring.CHECKS if c.name != "adapter-metrics"],
    ]
    options = Options(root=root, venv=ROOT / ".venv", binary=root / "none")
    report = run_checks(checks, options, emit=lambda line: None)
    return {n: f"{o.status} {o.detail}" for n, o in report.outcomes.items()}


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def test_the_committed_files_pass(repo: Path) -> None:
    got = run_monitoring(repo)
    assert all(v.startswith("PASS") for v in got.values()), got


def test_a_dashboard_query_on_a_metric_outside_the_catalog_fails(repo: Path) -> None:
    edit(repo / FILES[1], "sum(aft_queue_depth)", "sum(aft_queue_length)")
    got = run_monitoring(repo)
    assert got["dashboard-metrics"].startswith("FAIL")
    assert "aft_queue_length" in got["dashboard-metrics"]


def test_a_dashboard_label_the_metric_does_not_carry_fails(repo: Path) -> None:
    edit(repo / FILES[1], "sum(aft_queue_depth)", 'sum(aft_queue_depth{route=\\"/v1/embed\\"})')
    assert "labels ['route']" in run_monitoring(repo)["dashboard-metrics"]


def test_an_alert_on_a_metric_outside_the_catalog_fails(repo: Path) -> None:
    edit(repo / FILES[3], "aft_workers_alive", "aft_workers_up")
    got = run_monitoring(repo)
    assert got["alert-metrics"].startswith("FAIL") and "aft_workers_up" in got["alert-metrics"]


def test_a_metric_dropped_from_the_catalog_fails_its_users(repo: Path) -> None:
    text = (repo / FILES[0]).read_text()
    kept = [line for line in text.splitlines() if '"aft_workers_alive"' not in line]
    (repo / FILES[0]).write_text("\n".join(kept))
    got = run_monitoring(repo)
    assert got["metrics-catalog"].startswith("PASS")
    assert got["dashboard-metrics"].startswith("FAIL")
    assert got["alert-metrics"].startswith("FAIL")


def test_a_broken_catalog_skips_the_checks_that_need_it(repo: Path) -> None:
    (repo / FILES[0]).write_text("[]")
    got = run_monitoring(repo)
    assert got["metrics-catalog"].startswith("FAIL")
    assert got["dashboard-metrics"].startswith("SKIP needs metric catalog")


@pytest.mark.parametrize("metrics_file", [None, Path("/tmp/m.txt")])
def test_the_registry_declares_a_provider_before_every_need(metrics_file: Path | None) -> None:
    options = Options(root=ROOT, venv=ROOT / ".venv", binary=ROOT, metrics_file=metrics_file)
    validate(all_checks(options))


def test_the_command_line_rejects_an_unknown_check() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "deploy_checks", "--only", "no-such-check"],
        cwd=ROOT / "scripts",
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2
    assert "unknown checks ['no-such-check']" in r.stderr
