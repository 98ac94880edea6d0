"""docker/compose.yaml through `docker-compose config` (Debian's v1, offline), and the
Prometheus and Grafana files it mounts."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from .framework import Check, Context, fail
from .parsers import aft_options, seconds
from .products import RULE_FILES
from .tools import run, tool

PROMETHEUS_CONFIG = "docker/prometheus/prometheus.yml"
TWO_MODELS = "docker/compose.two-models.yaml"


def compose_config(ctx: Context, profile: str | None, *overrides: str) -> dict[str, Any]:
    cmd = [tool(ctx.options.venv, "docker-compose"), "-f", str(ctx.root / "docker/compose.yaml")]
    for override in overrides:
        cmd += ["-f", str(ctx.root / override)]
    if profile:
        cmd += ["--profile", profile]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AFT_", "COMPOSE_"))}
    r = run([*cmd, "config"], env=env)
    if r.returncode:
        fail(f"docker-compose {'--profile ' + profile + ' ' if profile else ''}config: {r.stderr}")
    return yaml.safe_load(r.stdout)


def _mount(volume: str | dict) -> tuple[str, str]:
    """(host source, container target) of a compose volume in short or long syntax."""
    if isinstance(volume, dict):
        return str(volume.get("source", "")), str(volume["target"])
    source, target = volume.split(":")[:2]
    return source, target


def rule_files(root: Path, compose: dict[str, Any]) -> list[Path]:
    """The host files behind the rule_files Prometheus loads inside its container."""
    prom = yaml.safe_load((root / PROMETHEUS_CONFIG).read_text())
    mounts = dict(_mount(v)[::-1] for v in compose["services"]["prometheus"].get("volumes", []))
    out = []
    for inside in prom.get("rule_files", []):
        host = mounts.get(inside)
        if host is None:
            fail(f"rule file {inside} is not mounted into the prometheus container")
        path = Path(host)
        if not path.is_file():
            fail(f"rule file {inside} is mounted from {host}, which does not exist")
        out.append(path)
    if not out:
        fail(f"{PROMETHEUS_CONFIG} loads no rule files")
    return out


def _check_aft_service(name: str, svc: dict[str, Any], opts: set[str]) -> None:
    env = svc.get("environment", {})
    unknown = {k for k in env if k.startswith("AFT_")} - opts
    if unknown:
        fail(f"{name}: unknown options {sorted(unknown)}")
    if "healthcheck" not in " ".join(svc.get("healthcheck", {}).get("test", [])):
        fail(f"{name}: no health check")
    if svc.get("restart") not in ("always", "unless-stopped", "on-failure"):
        fail(f"{name}: restart policy {svc.get('restart')}")
    if not any(str(p.get("target", p)).endswith("8080") for p in svc.get("ports", [])):
        fail(f"{name}: port 8080 not published")
    if not any(_mount(v)[1] == "/models" for v in svc.get("volumes", [])):
        fail(f"{name}: no volume at /models for custom bundles")
    limits = svc.get("deploy", {}).get("resources", {}).get("limits", {})
    if "cpus" not in limits or "memory" not in limits:
        fail(f"{name}: no cpu/memory limits")
    # Threads are left to aft-serve, which splits the CPU limit (the cgroup quota) between its
    # workers and lets short workers yield to a long pass; a given count does neither.
    if "AFT_INTRA_OP_THREADS" in env:
        fail(f"{name}: sets AFT_INTRA_OP_THREADS; aft-serve follows the cpus limit without it")
    grace = seconds(svc.get("stop_grace_period", "10s"))
    if grace <= seconds(env.get("AFT_SHUTDOWN_TIMEOUT", "25s")):
        fail(f"{name}: stop_grace_period {grace}s <= AFT_SHUTDOWN_TIMEOUT")


def check_compose(ctx: Context) -> str:
    opts = aft_options(ctx.root)
    plain, gpu = compose_config(ctx, None), compose_config(ctx, "gpu")
    two = compose_config(ctx, None, TWO_MODELS)
    # docker-compose v1 `config` prints every service; what a plain `up` starts is the ones
    # without `profiles`.
    default = {n for n, s in plain["services"].items() if not s.get("profiles")}
    if default != {"aft-serve", "prometheus", "grafana"}:
        fail(f"a plain `up` starts {sorted(default)}")
    if set(gpu["services"]) != {"aft-serve", "aft-serve-gpu", "prometheus", "grafana"}:
        fail(f"gpu profile services {sorted(gpu['services'])}")
    if gpu["services"]["aft-serve-gpu"].get("profiles") != ["gpu"]:
        fail("aft-serve-gpu is not in the gpu profile")
    for name in ("aft-serve", "aft-serve-gpu"):
        _check_aft_service(name, gpu["services"][name], opts)
    # The two-model override: still every policy above, now with two bundles.
    two_svc = two["services"]["aft-serve"]
    _check_aft_service(f"{TWO_MODELS} aft-serve", two_svc, opts)
    dirs = str(two_svc["environment"].get("AFT_MODEL_DIR", "")).split(",")
    if len(dirs) != 2 or not dirs[1].startswith("/models/"):
        fail(f"{TWO_MODELS}: AFT_MODEL_DIR {dirs}, want the image's bundle and one from /models")
    devices = (
        gpu["services"]["aft-serve-gpu"]["deploy"]["resources"]
        .get("reservations", {})
        .get("devices", [])
    )
    if not any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices):
        fail("aft-serve-gpu reserves no NVIDIA GPU")
    if gpu["services"]["aft-serve-gpu"]["environment"].get("AFT_DEVICE") != "cuda":
        fail("aft-serve-gpu does not run on cuda")
    # Prometheus scrapes the compose services; Grafana gets the provisioning and the dashboard.
    prom = yaml.safe_load((ctx.root / PROMETHEUS_CONFIG).read_text())
    job = next((j for j in prom["scrape_configs"] if j["job_name"] == "aft-serve"), None)
    if job is None:
        fail(f"{PROMETHEUS_CONFIG} has no job aft-serve (the alert rules select job=aft-serve)")
    if job.get("metrics_path", "/metrics") != "/metrics":
        fail("Prometheus does not scrape /metrics")
    names = {n for sd in job.get("dns_sd_configs", []) for n in sd["names"]}
    names |= {t.split(":")[0] for sc in job.get("static_configs", []) for t in sc["targets"]}
    if not {"aft-serve", "aft-serve-gpu"} <= names:
        fail(f"Prometheus scrapes {sorted(names)}, not both aft-serve services")
    mounts = {_mount(v)[1] for v in gpu["services"]["grafana"].get("volumes", [])}
    for need in ("/etc/grafana/provisioning", "/var/lib/grafana/dashboards"):
        if need not in mounts:
            fail(f"grafana does not mount {need}")
    rules = rule_files(ctx.root, gpu)
    ctx.put(RULE_FILES, rules)
    return (
        f"config valid (default, --profile gpu, + {TWO_MODELS}); health checks, restart, "
        "ports, /models volume, limits, intra-op threads left to the CPU limit, grace > shutdown "
        "timeout, GPU reservation, Prometheus scrape targets and rule files "
        f"({', '.join(str(p.relative_to(ctx.root)) for p in rules)}), Grafana provisioning"
    )


CHECKS = [Check("compose", check_compose, provides=(RULE_FILES,))]
