#!/usr/bin/env python3
"""Offline checks of docker/, k8s/ and .dockerignore, run by scripts/check-deploy.

No container engine or cluster is needed: Dockerfiles are linted (hadolint) and their runtime
layout is rebuilt from the local release binary with the same docker/collect-libs.sh the image
uses, then started; the compose file goes through `docker-compose config`; the kustomize overlays
are rendered with `kubectl kustomize` and every manifest is validated against the Kubernetes JSON
schemas (kubernetes-validate, strict) or, for the ServiceMonitor CRD, against the subset schema in
k8s/schemas/; every metric name in the Grafana dashboard, the prometheus-adapter rule and the HPA
is looked up in the /metrics of a running aft-serve.

Prints one PASS/FAIL/SKIP line per check and exits 1 if any check failed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
VENV = Path(os.environ.get("AFT_VENV", ROOT / ".venv"))
K8S_VERSIONS = ("1.37.0", "1.30.0")  # newest schemas shipped, and the oldest cluster we claim
OVERLAYS = ("k8s/overlays/cpu", "k8s/overlays/gpu", "k8s/prometheus-adapter")
SYSTEM_LIBS = re.compile(
    r"^(linux-vdso\.so\.1|ld-linux-x86-64\.so\.2|ld-linux-aarch64\.so\.1|libc\.so\.6|"
    r"libutil\.so\.1|libresolv\.so\.2|libm\.so\.6|libdl\.so\.2|librt\.so\.1|libpthread\.so\.0|"
    r"libstdc\+\+\.so\.6|libgcc_s\.so\.1|libz\.so\.1)$"
)
# Metrics the service is documented to export (the dashboard, the HPA and alerts rely on them).
DOCUMENTED_METRICS = {
    "aft_requests_total": "counter",
    "aft_request_duration_seconds": "histogram",
    "aft_queue_duration_seconds": "histogram",
    "aft_tokenization_duration_seconds": "histogram",
    "aft_inference_duration_seconds": "histogram",
    "aft_batch_size": "histogram",
    "aft_batch_tokens": "histogram",
    "aft_queue_depth": "gauge",
    "aft_requests_in_flight": "gauge",
    "aft_prompt_tokens_total": "counter",
    "aft_inputs_total": "counter",
    "aft_model_info": "gauge",
    "aft_workers_alive": "gauge",
    "aft_worker_restarts_total": "counter",
}


class CheckFailed(Exception):
    pass


class Skipped(Exception):
    pass


def fail(msg: str) -> None:
    raise CheckFailed(msg)


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def tool(name: str) -> str:
    for cand in (VENV / "bin" / name, shutil.which(name)):
        if cand and Path(cand).exists():
            return str(cand)
    raise CheckFailed(f"{name} not found (scripts/check-deploy installs it)")


# --------------------------------------------------------------------------------------------
# Small parsers: aft-serve options, durations, PromQL metric names, .dockerignore, Dockerfile.


def aft_options() -> set[str]:
    """Every AFT_* variable aft-serve reads, from src/config.rs (`env = "AFT_..."`)."""
    text = (ROOT / "src" / "config.rs").read_text()
    names = set(re.findall(r'env\s*=\s*"(AFT_[A-Z0-9_]+)"', text))
    if not names:
        fail("no AFT_* options found in src/config.rs")
    return names


def seconds(value: str | int | float) -> float:
    """A humantime / Go-style duration ("25s", "1m30s", "500ms", 45) in seconds."""
    if isinstance(value, int | float):
        return float(value)
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)", value.replace(" ", ""))
    if not parts or "".join(n + u for n, u in parts) != value.replace(" ", ""):
        fail(f"cannot parse duration {value!r}")
    return sum(float(n) * units[u] for n, u in parts)


PROMQL_KEYWORDS = {
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


def promql_metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (identifiers that are not functions, keywords,
    label names, or parts of numbers and durations). Grafana variables count as durations."""
    if "__name__" in expr:
        fail(f"expression selects by __name__, which this check cannot follow: {expr}")
    s = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)
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
        if m.group(0).lower() in PROMQL_KEYWORDS:
            continue
        names.add(m.group(0))
    return names


def adapter_rule_queries(rule: dict) -> tuple[str, str, str]:
    """(seriesQuery, metricsQuery with its template filled in, the name the rule exposes)."""
    series_q = rule["seriesQuery"]
    series = re.match(r"\s*([A-Za-z_:][A-Za-z0-9_:]*)", series_q)
    if not series:
        fail(f"seriesQuery {series_q!r} does not start with a metric name")
    metrics_q = (
        rule.get("metricsQuery", "sum(<<.Series>>{<<.LabelMatchers>>}) by (<<.GroupBy>>)")
        .replace("<<.Series>>", series.group(1))
        .replace("<<.LabelMatchers>>", 'namespace="x"')
        .replace("<<.GroupBy>>", "pod")
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


def dockerignore_matcher(path: Path) -> Callable[[str], bool]:
    """Returns excluded(relpath) following Docker's rules: patterns in order, the last match wins,
    `!` re-includes, `**` spans directories, a pattern matching a parent folder covers its files."""
    rules = []
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        neg = line.startswith("!")
        pat = line[1:].strip() if neg else line
        pat = pat.strip("/")
        rx = ""
        i = 0
        while i < len(pat):
            if pat.startswith("**/", i):
                rx += "(?:.*/)?"
                i += 3
            elif pat.startswith("**", i):
                rx += ".*"
                i += 2
            elif pat[i] == "*":
                rx += "[^/]*"
                i += 1
            elif pat[i] == "?":
                rx += "[^/]"
                i += 1
            else:
                rx += re.escape(pat[i])
                i += 1
        rules.append((re.compile(f"^{rx}$"), neg))

    def excluded(rel: str) -> bool:
        parts = rel.strip("/").split("/")
        candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        result = False
        for rx, neg in rules:
            if any(rx.match(c) for c in candidates):
                result = not neg
        return result

    return excluded


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out, buf = [], ""
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("#") and not buf:
            continue
        if line.lstrip().startswith("#"):
            continue
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1] + " "
            continue
        buf += line
        if buf.strip():
            word, _, rest = buf.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
        buf = ""
    return out


def self_test() -> str:
    """The parsers above, on known inputs."""
    cases = {
        "sum by (route) (rate(aft_requests_total[$__rate_interval]))": {"aft_requests_total"},
        'histogram_quantile(0.99, sum by (le) (rate(aft_x_bucket{route="/v1/embed"}[5m])))': {
            "aft_x_bucket"
        },
        "sum(rate(a_sum[1m])) / clamp_min(sum(rate(a_count[1m])), 1e-9)": {"a_sum", "a_count"},
        'sum(rate(r{status=~"5.."}[1m])) / on(job) group_left sum(up)': {"r", "up"},
        "max by (model, variant) (aft_model_info) offset 5m": {"aft_model_info"},
        "avg(aft_queue_depth) and on() vector(1) > bool 2": {"aft_queue_depth"},
        "sum(rate(x[1m])) by (le, instance)": {"x"},
    }
    for expr, want in cases.items():
        got = promql_metric_names(expr)
        if got != want:
            fail(f"promql_metric_names({expr!r}) = {got}, want {want}")
    got = promql_label_names('sum by (le, route) (rate(x{status=~"5..",route!="a,b"}[1m]))')
    if got != {"le", "route", "status"}:
        fail(f"promql_label_names: {got}")
    for value, want in {"25s": 25, "1m30s": 90, "500ms": 0.5, 45: 45}.items():
        if seconds(value) != want:
            fail(f"seconds({value!r}) != {want}")
    rule = {
        "seriesQuery": 'q_depth{pod!=""}',
        "name": {"matches": "^q_(.*)$", "as": "${1}_x"},
        "metricsQuery": "sum by (<<.GroupBy>>) (<<.Series>>{<<.LabelMatchers>>})",
    }
    rule["name"]["as"] = r"\1_x"
    if adapter_rule_queries(rule)[2] != "depth_x":
        fail("adapter rule name mapping")
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / ".dockerignore"
        p.write_text("*\n!src/\n!a/b.txt\n**/target/\n# c\n")
        ex = dockerignore_matcher(p)
        expect = {
            "src/main.rs": False,
            "src/x/target/y": True,
            "target/release/x": True,
            "a/b.txt": False,
            "a/c.txt": True,
            ".venv/bin/python": True,
        }
        for rel, want in expect.items():
            if ex(rel) != want:
                fail(f".dockerignore matcher: {rel} excluded={ex(rel)}, want {want}")
    return f"{len(cases)} PromQL cases, label names, durations, adapter names, .dockerignore rules"


# --------------------------------------------------------------------------------------------
# Checks. Each returns a one-line detail for the PASS line or raises CheckFailed / Skipped.


class State:
    labels: dict[str, set[str]] = {}  # label names seen per series name in /metrics
    binary: Path = ROOT / "target/release/aft-serve"
    exported: set[str] | None = None  # sample names in a live /metrics
    types: dict[str, str] = {}
    metrics_error = "the live service check did not run"
    rendered: dict[str, list[dict]] = {}
    compose: dict[str, dict] = {}


def check_hadolint() -> str:
    files = sorted((ROOT / "docker").glob("Dockerfile*"))
    if not files:
        fail("no docker/Dockerfile*")
    r = run([tool("hadolint"), "--no-color", *map(str, files)])
    if r.returncode:
        fail((r.stdout + r.stderr).strip())
    return ", ".join(str(f.relative_to(ROOT)) for f in files) + ": no findings"


def check_shellcheck() -> str:
    sc = shutil.which("shellcheck")
    if not sc:
        raise Skipped("shellcheck not installed")
    files = [*sorted((ROOT / "docker").glob("*.sh")), ROOT / "scripts" / "check-deploy"]
    r = run([sc, "-x", *map(str, files)])
    if r.returncode:
        fail(r.stdout.strip())
    return ", ".join(str(f.relative_to(ROOT)) for f in files)


def check_dockerfile() -> str:
    opts = aft_options()
    ins = dockerfile_instructions(ROOT / "docker" / "Dockerfile")
    stages = [i for i, (k, _) in enumerate(ins) if k == "FROM"]
    if len(stages) < 2:
        fail("not multi-stage")
    builder, runtime = ins[stages[0] : stages[-1]], ins[stages[-1] :]
    btext = " ".join(a for _, a in builder)
    if "torch==${TORCH_VERSION}" not in btext or not any(
        k == "ARG" and a == "TORCH_VERSION=2.13.0" for k, a in builder
    ):
        fail("builder does not install torch==2.13.0")
    if "--features cuda" not in btext:
        fail("no CUDA variant (cargo --features cuda) in the builder")
    if "collect-libs" not in btext:
        fail("builder does not collect libraries with docker/collect-libs.sh")
    kinds = {k for k, _ in runtime}
    for need in ("USER", "EXPOSE", "HEALTHCHECK", "VOLUME", "ENTRYPOINT", "ENV"):
        if need not in kinds:
            fail(f"runtime stage has no {need}")
    args = {}
    for k, a in ins:
        if k == "ARG" and "=" in a:
            key, _, val = a.partition("=")
            args[key.strip()] = val.strip().strip('"')
    user_raw = [a for k, a in runtime if k == "USER"][-1]
    user = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m[1] or m[2], "?"), user_raw)
    if "?" in user:
        fail(f"USER {user_raw}: unresolved build argument")
    if user.split(":")[0] in ("root", "0"):
        fail(f"runtime runs as {user}")
    if not any(k == "EXPOSE" and "8080" in a for k, a in runtime):
        fail("runtime does not EXPOSE 8080")
    hc = [a for k, a in runtime if k == "HEALTHCHECK"][-1]
    if (
        "healthcheck" not in hc
        or "/health/ready" not in (ROOT / "docker/healthcheck.sh").read_text()
    ):
        fail("HEALTHCHECK does not probe /health/ready")
    copies_from_builder = [a for k, a in runtime if k == "COPY" and "--from=builder" in a]
    if any("/opt/venv" in a for a in copies_from_builder):
        fail("runtime copies the builder's virtual environment")
    env_keys = set()
    for k, a in runtime:
        if k == "ENV":
            env_keys |= set(re.findall(r"(?:^|\s)([A-Z][A-Z0-9_]*)=", a))
    unknown = {k for k in env_keys if k.startswith("AFT_")} - opts
    if unknown:
        fail(f"ENV sets unknown options {sorted(unknown)} (not in src/config.rs)")
    return (
        f"{len(stages)} stages, USER {user}, EXPOSE 8080, HEALTHCHECK /health/ready, "
        f"VOLUME /models, {len([k for k in env_keys if k.startswith('AFT_')])} AFT_* defaults"
    )


def check_dockerignore() -> str:
    ex = dockerignore_matcher(ROOT / ".dockerignore")
    for rel in ("target/release/aft-serve", ".venv/bin/python", ".git/HEAD", "docker/bundles/x"):
        if not ex(rel):
            fail(f"{rel} would be sent to the build context")
    # Every COPY source of every Dockerfile must be in the context and exist.
    missing, copied = [], 0
    for df in sorted((ROOT / "docker").glob("Dockerfile*")):
        for k, a in dockerfile_instructions(df):
            if k != "COPY" or "--from=" in a:
                continue
            srcs = [w for w in a.split() if not w.startswith("--")][:-1]
            for src in srcs:
                p = ROOT / src
                files = [p] if p.is_file() else [f for f in p.rglob("*") if f.is_file()]
                if not files:
                    missing.append(f"{src} (not in the repository)")
                for f in files:
                    rel = str(f.relative_to(ROOT))
                    if ex(rel):
                        missing.append(f"{rel} (excluded by .dockerignore)")
                    copied += 1
    if missing:
        fail("COPY sources missing from the context: " + ", ".join(missing[:8]))
    # Context size, walking only folders something may be re-included from.
    total = count = 0
    for dirpath, dirnames, filenames in os.walk(ROOT):
        rel_dir = os.path.relpath(dirpath, ROOT)
        rel_dir = "" if rel_dir == "." else rel_dir + "/"
        dirnames[:] = [
            d for d in dirnames if d not in (".git", "target", ".venv", ".work", "node_modules")
        ]
        for fn in filenames:
            if not ex(rel_dir + fn):
                total += os.path.getsize(os.path.join(dirpath, fn))
                count += 1
    return (
        f"target/, .venv/, .git/ excluded; {copied} COPY source files included; "
        f"context {count} files, {total / 1e6:.1f} MB"
    )


def compose_config(profile: str | None) -> dict:
    cmd = [tool("docker-compose"), "-f", str(ROOT / "docker" / "compose.yaml")]
    if profile:
        cmd += ["--profile", profile]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AFT_", "COMPOSE_"))}
    r = run([*cmd, "config"], env=env)
    if r.returncode:
        fail(f"docker-compose {'--profile ' + profile + ' ' if profile else ''}config: {r.stderr}")
    return yaml.safe_load(r.stdout)


def check_compose() -> str:
    opts = aft_options()
    plain, gpu = compose_config(None), compose_config("gpu")
    State.compose = gpu
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
        svc = gpu["services"][name]
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
        vols = svc.get("volumes", [])
        if not any(
            (v.get("target") if isinstance(v, dict) else v.split(":")[1]) == "/models" for v in vols
        ):
            fail(f"{name}: no volume at /models for custom bundles")
        limits = svc.get("deploy", {}).get("resources", {}).get("limits", {})
        if "cpus" not in limits or "memory" not in limits:
            fail(f"{name}: no cpu/memory limits")
        if float(env.get("AFT_INTRA_OP_THREADS", -1)) != float(limits["cpus"]):
            fail(f"{name}: AFT_INTRA_OP_THREADS {env.get('AFT_INTRA_OP_THREADS')} != cpus limit")
        grace = seconds(svc.get("stop_grace_period", "10s"))
        if grace <= seconds(env.get("AFT_SHUTDOWN_TIMEOUT", "25s")):
            fail(f"{name}: stop_grace_period {grace}s <= AFT_SHUTDOWN_TIMEOUT")
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
    prom = yaml.safe_load((ROOT / "docker/prometheus/prometheus.yml").read_text())
    job = next(j for j in prom["scrape_configs"] if j["job_name"] == "aft-serve")
    if job.get("metrics_path", "/metrics") != "/metrics":
        fail("Prometheus does not scrape /metrics")
    names = {n for sd in job.get("dns_sd_configs", []) for n in sd["names"]}
    names |= {t.split(":")[0] for sc in job.get("static_configs", []) for t in sc["targets"]}
    if not {"aft-serve", "aft-serve-gpu"} <= names:
        fail(f"Prometheus scrapes {sorted(names)}, not both aft-serve services")
    mounts = " ".join(str(v) for v in gpu["services"]["grafana"].get("volumes", []))
    for need in ("/etc/grafana/provisioning", "/var/lib/grafana/dashboards"):
        if need not in mounts:
            fail(f"grafana does not mount {need}")
    return (
        "config valid (default and --profile gpu); health checks, restart, ports, /models "
        "volume, limits, intra-op = cpus, grace > shutdown timeout, GPU reservation, "
        "Prometheus scrape targets, Grafana provisioning"
    )


def kustomize(path: str) -> list[dict]:
    r = run([tool("kubectl"), "kustomize", str(ROOT / path)])
    if r.returncode:
        fail(f"kubectl kustomize {path}: {r.stderr.strip()}")
    docs = [d for d in yaml.safe_load_all(r.stdout) if d]
    if not docs:
        fail(f"{path} renders nothing")
    return docs


def rendered(path: str) -> list[dict]:
    if path not in State.rendered:
        State.rendered[path] = kustomize(path)
    return State.rendered[path]


def check_render() -> str:
    r = run([tool("kubectl"), "version", "--client"])
    version = re.search(r"Kustomize Version: (\S+)", r.stdout)
    counts = []
    for path in OVERLAYS:
        State.rendered[path] = kustomize(path)
        counts.append(f"{path.split('/')[-1]}: {len(State.rendered[path])} objects")
    return f"kubectl kustomize (kustomize {version.group(1) if version else '?'}): " + ", ".join(
        counts
    )


def check_validate() -> str:
    import jsonschema
    import kubernetes_validate

    if not State.rendered:
        raise Skipped("nothing rendered")
    crd_schemas = {
        ("monitoring.coreos.com/v1", "ServiceMonitor"): json.loads(
            (ROOT / "k8s/schemas/servicemonitor-monitoring-v1.json").read_text()
        )
    }
    n = 0
    kinds = set()
    for path, docs in State.rendered.items():
        for doc in docs:
            key = (doc["apiVersion"], doc["kind"])
            what = f"{path}: {doc['kind']}/{doc['metadata']['name']}"
            if key in crd_schemas:
                errors = list(jsonschema.Draft202012Validator(crd_schemas[key]).iter_errors(doc))
                if errors:
                    fail(f"{what}: {errors[0].message} at {list(errors[0].absolute_path)}")
            else:
                for version in K8S_VERSIONS:
                    try:
                        kubernetes_validate.validate(doc, version, strict=True)
                    except kubernetes_validate.ValidationError as e:
                        fail(f"{what} (k8s {version}): {e.message} at {list(e.path)}")
                    except kubernetes_validate.SchemaNotFoundError as e:
                        fail(f"{what}: {e.message}")
            kinds.add(doc["kind"])
            n += 1
    return (
        f"{n} manifests, strict, Kubernetes {' and '.join(K8S_VERSIONS)} schemas; "
        "ServiceMonitor against k8s/schemas/ (subset of the CRD); "
        f"kinds: {', '.join(sorted(kinds))}"
    )


def check_k8s_policy() -> str:
    opts = aft_options()
    if not State.rendered:
        raise Skipped("nothing rendered")
    for path in ("k8s/overlays/cpu", "k8s/overlays/gpu"):
        docs = State.rendered[path]
        by_kind: dict[str, list[dict]] = {}
        for d in docs:
            by_kind.setdefault(d["kind"], []).append(d)
        for need in (
            "Deployment",
            "Service",
            "ConfigMap",
            "HorizontalPodAutoscaler",
            "PodDisruptionBudget",
            "ServiceMonitor",
        ):
            if need not in by_kind:
                fail(f"{path}: no {need}")
        dep = by_kind["Deployment"][0]
        pod = dep["spec"]["template"]["spec"]
        c = next(c for c in pod["containers"] if c["name"] == "aft-serve")
        cm = by_kind["ConfigMap"][0]
        env = dict(cm["data"])
        unknown = {k for k in env if k.startswith("AFT_")} - opts
        unknown |= {e["name"] for e in c.get("env", []) if e["name"].startswith("AFT_")} - opts
        if unknown:
            fail(f"{path}: unknown options {sorted(unknown)}")
        if not any(
            ref.get("configMapRef", {}).get("name") == cm["metadata"]["name"]
            for ref in c.get("envFrom", [])
        ):
            fail(f"{path}: container does not load the ConfigMap {cm['metadata']['name']}")
        threads = next((e for e in c.get("env", []) if e["name"] == "AFT_INTRA_OP_THREADS"), None)
        rf = (threads or {}).get("valueFrom", {}).get("resourceFieldRef", {})
        if rf.get("resource") != "limits.cpu" or str(rf.get("divisor", "1")) != "1":
            fail(f"{path}: AFT_INTRA_OP_THREADS does not follow limits.cpu (divisor 1)")
        if "AFT_INTRA_OP_THREADS" in env:
            fail(f"{path}: the ConfigMap also sets AFT_INTRA_OP_THREADS")
        keys = next((e for e in c.get("env", []) if e["name"] == "AFT_API_KEYS"), None)
        if not (keys or {}).get("valueFrom", {}).get("secretKeyRef"):
            fail(f"{path}: AFT_API_KEYS does not come from a Secret")
        res = c.get("resources", {})
        for part in ("requests", "limits"):
            if not {"cpu", "memory"} <= set(res.get(part, {})):
                fail(f"{path}: no cpu/memory {part}")
        port = next(p for p in c["ports"] if p.get("name") == "http")["containerPort"]
        if str(port) != env.get("AFT_PORT", "8080"):
            fail(f"{path}: containerPort {port} != AFT_PORT {env.get('AFT_PORT')}")
        probes = {
            "startupProbe": "/health/ready",
            "readinessProbe": "/health/ready",
            "livenessProbe": "/health/live",
        }
        for probe, want in probes.items():
            got = c.get(probe, {}).get("httpGet", {}).get("path")
            if got != want:
                fail(f"{path}: {probe} path {got}, want {want}")
        sc, psc = c.get("securityContext", {}), pod.get("securityContext", {})
        if not (sc.get("runAsNonRoot") or psc.get("runAsNonRoot")):
            fail(f"{path}: runAsNonRoot not set")
        if not sc.get("readOnlyRootFilesystem"):
            fail(f"{path}: root filesystem not read-only")
        if sc.get("capabilities", {}).get("drop") != ["ALL"]:
            fail(f"{path}: capabilities not dropped")
        if sc.get("allowPrivilegeEscalation") is not False:
            fail(f"{path}: allowPrivilegeEscalation not false")
        cmd = c.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
        sleep_action = c.get("lifecycle", {}).get("preStop", {}).get("sleep", {})
        if sleep_action:
            pause = float(sleep_action["seconds"])
        elif cmd and cmd[0].endswith("sleep"):
            pause = float(cmd[1])
        else:
            fail(f"{path}: no preStop pause")
        shutdown = seconds(env.get("AFT_SHUTDOWN_TIMEOUT", "25s"))
        grace = pod.get("terminationGracePeriodSeconds", 30)
        if grace <= pause + shutdown:
            fail(f"{path}: terminationGracePeriodSeconds {grace} <= preStop {pause} + {shutdown}")
        strategy = dep["spec"].get("strategy", {}).get("rollingUpdate", {})
        if str(strategy.get("maxUnavailable", "25%")) not in ("0", "0%"):
            fail(f"{path}: rolling updates may take pods away before new ones are ready")
        if "replicas" in dep["spec"]:
            fail(f"{path}: Deployment sets replicas, which fights the HPA")
        # Selectors line up.
        labels = dep["spec"]["template"]["metadata"]["labels"]
        svc = by_kind["Service"][0]
        if not svc["spec"]["selector"].items() <= labels.items():
            fail(f"{path}: Service selector does not match the pods")
        pdb = by_kind["PodDisruptionBudget"][0]
        if not pdb["spec"]["selector"]["matchLabels"].items() <= labels.items():
            fail(f"{path}: PodDisruptionBudget selector does not match the pods")
        sm = by_kind["ServiceMonitor"][0]
        if not sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items():
            fail(f"{path}: ServiceMonitor selector does not match the Service")
        svc_ports = {p.get("name") for p in svc["spec"]["ports"]}
        for ep in sm["spec"]["endpoints"]:
            if ep.get("port") not in svc_ports or ep.get("path", "/metrics") != "/metrics":
                fail(f"{path}: ServiceMonitor endpoint {ep} does not match the Service's ports")
        hpa = by_kind["HorizontalPodAutoscaler"][0]
        ref = hpa["spec"]["scaleTargetRef"]
        if (ref["kind"], ref["name"]) != ("Deployment", dep["metadata"]["name"]):
            fail(f"{path}: HPA targets {ref}")
        mtypes = {m["type"] for m in hpa["spec"]["metrics"]}
        if "Pods" not in mtypes and "External" not in mtypes:
            fail(f"{path}: HPA does not use the queue-depth metric")
        if path.endswith("cpu") and "Resource" not in mtypes:
            fail(f"{path}: HPA does not use CPU utilisation")
        if path.endswith("gpu"):
            if env.get("AFT_DEVICE") != "cuda":
                fail(f"{path}: AFT_DEVICE {env.get('AFT_DEVICE')}")
            if "nvidia.com/gpu" not in res.get("limits", {}):
                fail(f"{path}: no nvidia.com/gpu limit")
            if not c["image"].endswith(":cuda"):
                fail(f"{path}: image {c['image']} is not the CUDA variant")
    return (
        "both overlays: probes, security context, resources, intra-op threads from limits.cpu, "
        "API keys from a Secret, grace period > preStop + AFT_SHUTDOWN_TIMEOUT, maxUnavailable 0, "
        "no replicas vs HPA, Service/PDB/ServiceMonitor selectors, HPA target and metrics, GPU"
    )


def check_adapter_rules() -> str:
    cm = next(d for d in rendered("k8s/prometheus-adapter") if d["kind"] == "ConfigMap")
    rules = yaml.safe_load(cm["data"]["config.yaml"])["rules"]
    helm = yaml.safe_load((ROOT / "k8s/prometheus-adapter/values.yaml").read_text())
    if helm["rules"]["custom"] != rules:
        fail("k8s/prometheus-adapter/values.yaml and adapter-config.yaml hold different rules")
    exposed = set()
    for rule in rules:
        _, _, name = adapter_rule_queries(rule)
        exposed.add(name)
        over = rule.get("resources", {}).get("overrides", {})
        if over.get("pod", {}).get("resource") != "pod":
            fail(f"rule for {name} does not map the pod label to pods")
    for path in ("k8s/overlays/cpu", "k8s/overlays/gpu"):
        hpa = next(d for d in rendered(path) if d["kind"] == "HorizontalPodAutoscaler")
        for m in hpa["spec"]["metrics"]:
            if m["type"] in ("Pods", "External"):
                mname = m[m["type"].lower()]["metric"]["name"]
                if mname not in exposed:
                    fail(f"{path}: HPA metric {mname} is not served by the adapter {exposed}")
    return f"adapter serves {sorted(exposed)}; the HPAs' Pods metrics are among them"


# --------------------------------------------------------------------------------------------
# The runtime image layout, rebuilt here, and the live service.


def ldd(path: Path) -> list[tuple[str, str]]:
    r = run(["ldd", str(path)], env={"PATH": "/usr/bin:/bin"})
    if r.returncode:
        fail(f"ldd {path}: {r.stderr}")
    out = []
    for line in r.stdout.splitlines():
        parts = line.split()
        if "=>" in parts:
            out.append((parts[0], parts[2] if len(parts) > 2 else "not"))
        elif parts and parts[0].startswith("/"):
            out.append((Path(parts[0]).name, parts[0]))
    return out


def site_packages() -> Path:
    r = run(
        [
            str(VENV / "bin" / "python"),
            "-c",
            "import sysconfig; print(sysconfig.get_paths()['purelib'])",
        ]
    )
    return Path(r.stdout.strip())


def stage_image(variant: str, binary: Path, stage: Path) -> Path:
    """The runtime image's /opt, rebuilt under stage/ with docker/collect-libs.sh."""
    opt = stage / "opt"
    bindir = opt / "aft-serve" / "bin"
    bindir.mkdir(parents=True)
    target = bindir / binary.name
    shutil.copy2(binary, target)
    r = run(
        [
            str(ROOT / "docker/collect-libs.sh"),
            variant,
            str(binary),
            str(site_packages()),
            str(opt / "aft-serve" / "lib"),
        ],
        env={**os.environ, "LINK": "1"},
    )
    if r.returncode:
        fail(f"collect-libs.sh {variant}: {r.stderr.strip()}")
    return target


DRIVER_LIBS = {"libcuda.so.1", "libnvidia-ml.so.1"}  # mounted by the NVIDIA container toolkit


def assert_closed(
    obj: Path, stage: Path, driver_ok: bool = False, missing_ok: Iterable[str] = ()
) -> list[str]:
    """Every library obj loads resolves inside stage/ or is a slim-image system library (or,
    with driver_ok, one of the GPU driver's, which come from the host; or one in missing_ok)."""
    libs = ldd(obj)
    for name, path in libs:
        if (driver_ok and name in DRIVER_LIBS) or name in missing_ok:
            continue
        if path == "not":
            fail(f"{obj.name}: {name} not found in the image layout")
        if str(Path(path).resolve()).startswith(str(stage)) or path.startswith(str(stage)):
            continue
        if not SYSTEM_LIBS.match(name):
            fail(f"{obj.name}: {name} resolves outside the image layout, to {path}")
    return [n for n, p in libs if p.startswith(str(stage))]


def check_image_layout_cpu() -> str:
    binary = State.binary
    if not binary.exists():
        fail(f"{binary} not built")
    stage = Path(tempfile.mkdtemp(prefix="aft-image-cpu-")).resolve()
    State.stage = stage
    staged = stage_image("cpu", binary, stage)
    # In the image the build-time rpath (/opt/venv/...torch/lib) does not exist; here it does,
    # so drop it from the staged copy to leave what the image has: $ORIGIN/../lib.
    r = run([tool("patchelf"), "--print-rpath", str(staged)])
    rpath = r.stdout.strip()
    if "$ORIGIN/../lib" not in rpath.split(":"):
        fail(f"binary rpath {rpath!r} lacks $ORIGIN/../lib")
    run([tool("patchelf"), "--set-rpath", "$ORIGIN/../lib", str(staged)]).check_returncode()
    loaded = assert_closed(staged, stage)
    # What the Dockerfile's runtime stage runs to prove the layout loads.
    r = run([str(staged), "--version"], env={"PATH": "/usr/bin:/bin"})
    if r.returncode:
        fail(f"staged `aft-serve --version` failed: {(r.stdout + r.stderr).strip()[-300:]}")
    libdir = staged.parent.parent / "lib"
    shipped = sorted(p.name for p in libdir.iterdir())
    extra = set(shipped) - set(loaded)
    if extra:
        fail(f"image would ship libraries the binary does not load: {sorted(extra)}")
    size = sum(p.stat().st_size for p in libdir.iterdir()) + staged.stat().st_size
    State.staged_binary = staged
    return (
        f"ldd closure {shipped}, {size / 1e6:.0f} MB with the binary; nothing else needed; "
        f"`{r.stdout.strip()}` runs from the layout"
    )


def check_image_layout_cuda() -> str:
    site = site_packages()
    lib = site / "torch/lib/libtorch.so"
    if not (site / "torch/lib/libtorch_cuda.so").exists() or not (site / "nvidia").is_dir():
        raise Skipped("the venv's torch has no CUDA libraries")
    stage = Path(tempfile.mkdtemp(prefix="aft-image-cuda-")).resolve()
    try:
        if os.stat(stage).st_dev != os.stat(site).st_dev:
            raise Skipped("the venv is on another filesystem; copying 3 GB of CUDA libraries")
        # No CUDA build of the binary here: stage from libtorch.so, which loads libtorch_cuda
        # and libtorch_cpu just as the `--features cuda` binary does.
        r = run(
            [
                str(ROOT / "docker/collect-libs.sh"),
                "cuda",
                str(lib),
                str(site),
                str(stage / "opt/aft-serve/lib"),
            ],
            env={**os.environ, "LINK": "1"},
        )
        if r.returncode:
            fail(f"collect-libs.sh cuda: {r.stderr.strip()}")
        libdir = stage / "opt/aft-serve/lib"
        checked = 0
        for so in sorted(libdir.glob("*.so*")):
            assert_closed(so, stage, driver_ok=True)
            checked += 1
        # The CUDA wheels' own libraries: each must resolve in the image at least as well as
        # in the venv. Some optional plugins need host software that neither has (RDMA verbs,
        # MPI, UCX, libfabric for nvshmem and cuFile): those stay unresolved in both.
        nv = stage / "opt/nvidia"
        optional = set()
        for so in sorted(nv.glob("*/lib/*.so*")):
            orig = site / "nvidia" / so.relative_to(nv)
            missing_in_venv = {n for n, p in ldd(orig) if p == "not"}
            optional |= missing_in_venv - DRIVER_LIBS
            assert_closed(so, stage, driver_ok=True, missing_ok=missing_in_venv)
            checked += 1
        pkgs = sorted(p.name for p in nv.iterdir())
        return (
            f"{checked} libraries resolve inside /opt/aft-serve/lib and "
            f"/opt/nvidia/{{{','.join(pkgs)}}}/lib (libcuda from the host driver; left "
            f"unresolved as in the venv: {', '.join(sorted(optional))})"
        )
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method: str, url: str, body: dict | None = None, timeout: float = 10) -> tuple[int, str]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def parse_exposition(text: str) -> tuple[set[str], dict[str, str]]:
    names, types = set(), {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(maxsplit=3)
            types[name] = kind.strip()
        elif line and not line.startswith("#"):
            name = re.split(r"[{\s]", line, maxsplit=1)[0]
            names.add(name)
            labels = re.match(r"[^{\s]+\{(.*)\}", line)
            found = set(re.findall(r'(\w+)="', labels.group(1))) if labels else set()
            State.labels.setdefault(name, set()).update(found)
    return names, types


# Labels Prometheus adds to every scraped series (static, compose DNS discovery, operator).
TARGET_LABELS = {"instance", "job", "service", "namespace", "pod", "container", "endpoint"}


def promql_label_names(expr: str) -> set[str]:
    """Label names an expression matches on or groups by."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    used = set()
    for block in re.findall(r"\{([^{}]*)\}", s):
        used |= set(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", block))
    for block in re.findall(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)", s):
        used |= {w.strip() for w in block.split(",") if w.strip()}
    return used


def check_labels(where: str, expr: str) -> None:
    names = promql_metric_names(expr)
    have = set().union(*(State.labels.get(n, set()) for n in names)) | TARGET_LABELS
    missing = promql_label_names(expr) - have
    if missing:
        fail(f"{where}: labels {sorted(missing)} are on none of {sorted(names)}: {expr}")


def check_live_service(metrics_file: str | None) -> str:
    if metrics_file:
        State.exported, State.types = parse_exposition(Path(metrics_file).read_text())
        raise Skipped(f"--metrics-file {metrics_file}: names read from a file, no service started")
    binary = getattr(State, "staged_binary", None)
    where = "the staged image layout"
    if binary is None:
        binary = State.binary
        where = f"{binary} (not staged: the image layout check did not pass)"
    if not binary.exists():
        State.metrics_error = f"{binary} not built"
        fail(State.metrics_error)
    bundle = ROOT / "tests/fixtures/tiny-aft"
    if not (bundle / "manifest.json").exists():
        bundle = ROOT / "models/aft-mini"
    if not (bundle / "manifest.json").exists():
        State.metrics_error = "no bundle (tests/fixtures/tiny-aft, models/aft-mini)"
        fail(State.metrics_error)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AFT_")}
    env.pop("LD_LIBRARY_PATH", None)
    if where != "the staged image layout":
        env["LD_LIBRARY_PATH"] = str(site_packages() / "torch/lib")
    env.update(
        AFT_HOST="127.0.0.1",
        AFT_PORT=str(port),
        AFT_MODEL_DIR=str(bundle),
        AFT_DEVICE="cpu",
        AFT_WORKERS="1",
        AFT_INTRA_OP_THREADS="1",
        AFT_TOKENIZATION_WORKERS="1",
        AFT_LOG_FORMAT="json",
        AFT_SHUTDOWN_TIMEOUT="10s",
    )
    log = tempfile.TemporaryFile(mode="w+")
    proc = subprocess.Popen(
        [str(binary)], env=env, cwd=tempfile.gettempdir(), stdout=log, stderr=subprocess.STDOUT
    )
    base = f"http://127.0.0.1:{port}"

    def tail() -> str:
        log.seek(0)
        return " | ".join(log.read().strip().splitlines()[-5:])

    try:
        deadline = time.monotonic() + 180
        status = None
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                State.metrics_error = f"aft-serve exited with {proc.returncode}: {tail()}"
                fail(State.metrics_error)
            try:
                status, _ = http("GET", base + "/health/ready", timeout=2)
                if status == 200:
                    break
            except OSError:
                pass
            time.sleep(0.5)
        if status != 200:
            State.metrics_error = f"/health/ready never answered 200 (last {status}): {tail()}"
            fail(State.metrics_error)
        status, body = http("POST", base + "/v1/embed", {"inputs": ["a cat sat on the mat", "hi"]})
        if status != 200:
            State.metrics_error = f"POST /v1/embed answered {status}: {body[:200]}"
            fail(State.metrics_error)
        http("GET", base + "/v1/models")
        http("POST", base + "/v1/embed", {"nonsense": True})  # one 4xx for the status label
        hc = run(
            [str(ROOT / "docker/healthcheck.sh")],
            env={"PATH": "/usr/bin:/bin", "AFT_PORT": str(port), "AFT_HOST": "0.0.0.0"},
        )
        if hc.returncode:
            fail("docker/healthcheck.sh (the image HEALTHCHECK) failed against a ready service")
        status, text = http("GET", base + "/metrics")
        if status != 200:
            State.metrics_error = f"/metrics answered {status}"
            fail(State.metrics_error)
        State.exported, State.types = parse_exposition(text)
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            fail("aft-serve did not exit within 20 s of SIGTERM")
        if rc != 0:
            fail(f"aft-serve exited with {rc} after SIGTERM: {tail()}")
        return (
            f"{where}, bundle {bundle.relative_to(ROOT)}: ready, embed 200, HEALTHCHECK script 0, "
            f"{len(State.exported)} series names in /metrics, clean exit on SIGTERM"
        )
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()


def need_metrics() -> set[str]:
    if State.exported is None:
        fail(f"no live /metrics to compare against ({State.metrics_error})")
    return State.exported


def check_documented_metrics() -> str:
    exported = need_metrics()
    missing = []
    for name, kind in DOCUMENTED_METRICS.items():
        series = (
            [name + s for s in ("_bucket", "_sum", "_count")] if kind == "histogram" else [name]
        )
        if not set(series) <= exported or State.types.get(name) not in (kind, None):
            missing.append(f"{name} ({kind})")
    if missing:
        fail("not exported as documented: " + ", ".join(missing))
    return f"all {len(DOCUMENTED_METRICS)} documented metrics present with their types"


def dashboard_exprs(dash: dict) -> Iterable[tuple[str, str]]:
    def walk(panels):
        for p in panels:
            for t in p.get("targets", []):
                if t.get("expr"):
                    yield p.get("title", "?"), t["expr"]
            yield from walk(p.get("panels", []))

    yield from walk(dash.get("panels", []))
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


def check_dashboard() -> str:
    dash = json.loads((ROOT / "docker/grafana/dashboards/aft-serve.json").read_text())
    prov = yaml.safe_load(
        (ROOT / "docker/grafana/provisioning/datasources/prometheus.yaml").read_text()
    )
    uids = {d["uid"] for d in prov["datasources"]}
    ds_vars = {
        "${" + v["name"] + "}"
        for v in dash.get("templating", {}).get("list", [])
        if v.get("type") == "datasource"
    }

    def panels(ps):
        for p in ps:
            yield p
            yield from panels(p.get("panels", []))

    for p in panels(dash["panels"]):
        uid = (p.get("datasource") or {}).get("uid")
        if p.get("type") != "row" and uid not in uids | ds_vars:
            fail(f"panel {p.get('title')!r} uses data source {uid!r}, not the provisioned one")
    exprs = list(dashboard_exprs(dash))
    used = set()
    for title, expr in exprs:
        names = promql_metric_names(expr)
        if not names:
            fail(f"panel {title!r}: no metric in {expr!r}")
        used |= names
    # The panels the issue asks for.
    titles = " | ".join(p.get("title", "").lower() for p in panels(dash["panels"]))
    for want in (
        "request rate",
        "latency",
        "batch size",
        "queue depth",
        "errors by status",
        "tokens per second",
    ):
        if want not in titles:
            fail(f"no panel about {want!r}")
    if not any("by (status)" in e.replace("  ", " ") for _, e in exprs):
        fail("no query groups errors by status")
    exported = need_metrics()
    unknown = used - exported
    if unknown:
        fail(f"dashboard queries name metrics aft-serve does not export: {sorted(unknown)}")
    for title, expr in exprs:
        check_labels(f"panel {title!r}", expr)
    return (
        f"{len(exprs)} queries, {len(used)} metric names and their labels, all exported: "
        f"{', '.join(sorted(used))}"
    )


PROMETHEUS_SYNTHETIC = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}


def check_alert_metrics() -> str:
    prom = yaml.safe_load((ROOT / "docker/prometheus/prometheus.yml").read_text())
    mounts = State.compose["services"]["prometheus"]["volumes"] if State.compose else []
    used, n, exprs = set(), 0, []
    for rule_file in prom.get("rule_files", []):
        host = next(
            (
                Path(v["source"] if isinstance(v, dict) else v.split(":")[0])
                for v in mounts
                if (v["target"] if isinstance(v, dict) else v.split(":")[1]) == rule_file
            ),
            None,
        )
        if host is None:
            fail(f"rule file {rule_file} is not mounted into the prometheus container")
        for group in yaml.safe_load(host.read_text())["groups"]:
            for rule in group["rules"]:
                used |= promql_metric_names(rule["expr"])
                n += 1
                if not promql_metric_names(rule["expr"]) & PROMETHEUS_SYNTHETIC:
                    exprs.append((rule["alert"], rule["expr"]))
    unknown = used - need_metrics() - PROMETHEUS_SYNTHETIC
    if unknown:
        fail(f"alert rules name metrics aft-serve does not export: {sorted(unknown)}")
    for alert, expr in exprs:
        check_labels(f"alert {alert}", expr)
    return f"{n} alert rules, metrics {sorted(used)} exported (or Prometheus' own `up`)"


def check_adapter_metrics() -> str:
    exported = need_metrics()
    cm = next(d for d in rendered("k8s/prometheus-adapter") if d["kind"] == "ConfigMap")
    used = set()
    for rule in yaml.safe_load(cm["data"]["config.yaml"])["rules"]:
        series_q, metrics_q, _ = adapter_rule_queries(rule)
        used |= promql_metric_names(series_q) | promql_metric_names(metrics_q)
    unknown = used - exported
    if unknown:
        fail(f"adapter rules name metrics aft-serve does not export: {sorted(unknown)}")
    gauge = [n for n in used if State.types.get(n) == "gauge"]
    return f"adapter rules use {sorted(used)} (gauge: {sorted(gauge)}), exported"


# --------------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--metrics-file",
        help="read metric names from this Prometheus exposition instead of a live service",
    )
    ap.add_argument("--only", help="comma-separated check names to run")
    ap.add_argument("--binary", type=Path, default=State.binary, help="the aft-serve to stage")
    args = ap.parse_args()
    State.binary = args.binary.resolve()

    checks: list[tuple[str, Callable[[], str]]] = [
        ("self-test", self_test),
        ("hadolint", check_hadolint),
        ("shellcheck", check_shellcheck),
        ("dockerfile", check_dockerfile),
        ("dockerignore", check_dockerignore),
        ("compose", check_compose),
        ("kustomize-render", check_render),
        ("k8s-schemas", check_validate),
        ("k8s-policy", check_k8s_policy),
        ("adapter-rule", check_adapter_rules),
        ("image-layout-cpu", check_image_layout_cpu),
        ("image-layout-cuda", check_image_layout_cuda),
        ("live-service", lambda: check_live_service(args.metrics_file)),
        ("metrics-documented", check_documented_metrics),
        ("dashboard-metrics", check_dashboard),
        ("adapter-metrics", check_adapter_metrics),
        ("alert-metrics", check_alert_metrics),
    ]
    only = set(args.only.split(",")) if args.only else None
    failed = 0
    try:
        for name, fn in checks:
            if only and name not in only:
                continue
            t0 = time.monotonic()
            try:
                detail = fn()
                status = "PASS"
            except Skipped as e:
                detail, status = str(e), "SKIP"
            except CheckFailed as e:
                detail, status = str(e), "FAIL"
            except Exception:  # a bug in the check itself counts as a failure
                detail, status = traceback.format_exc().strip().replace("\n", " | "), "FAIL"
            failed += status == "FAIL"
            print(f"{status} {name} ({time.monotonic() - t0:.1f}s): {detail}", flush=True)
    finally:
        stage = getattr(State, "stage", None)
        if stage:
            shutil.rmtree(stage, ignore_errors=True)
    print(f"deploy checks: {'FAIL' if failed else 'PASS'} ({failed} failed)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
