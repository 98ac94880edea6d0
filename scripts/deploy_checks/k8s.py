"""k8s/: the kustomize overlays rendered with `kubectl kustomize`, validated against the
Kubernetes schemas, checked for the deployment policy, and the prometheus-adapter rule."""

from __future__ import annotations

import json
import re
from typing import Any

import yaml

from .framework import Check, Context, fail
from .parsers import aft_options, seconds
from .products import RENDERED
from .promql import adapter_rule_queries
from .tools import run, tool

K8S_VERSIONS = ("1.37.0", "1.30.0")  # newest schemas shipped, and the oldest cluster we claim
SERVICE_OVERLAYS = ("k8s/overlays/cpu", "k8s/overlays/gpu", "k8s/overlays/two-models")
OVERLAYS = (*SERVICE_OVERLAYS, "k8s/prometheus-adapter")
ADAPTER = "k8s/prometheus-adapter"

Manifests = dict[str, list[dict[str, Any]]]


def adapter_rules(rendered: Manifests) -> list[dict[str, Any]]:
    """The rules of the rendered prometheus-adapter ConfigMap."""
    cm = next((d for d in rendered[ADAPTER] if d["kind"] == "ConfigMap"), None)
    if cm is None:
        fail(f"{ADAPTER} renders no ConfigMap")
    return yaml.safe_load(cm["data"]["config.yaml"])["rules"]


def check_render(ctx: Context) -> str:
    kubectl = tool(ctx.options.venv, "kubectl")
    version = re.search(r"Kustomize Version: (\S+)", run([kubectl, "version", "--client"]).stdout)
    rendered: Manifests = {}
    for path in OVERLAYS:
        r = run([kubectl, "kustomize", str(ctx.root / path)])
        if r.returncode:
            fail(f"kubectl kustomize {path}: {r.stderr.strip()}")
        docs = [d for d in yaml.safe_load_all(r.stdout) if d]
        if not docs:
            fail(f"{path} renders nothing")
        rendered[path] = docs
    ctx.put(RENDERED, rendered)
    counts = ", ".join(f"{p.split('/')[-1]}: {len(d)} objects" for p, d in rendered.items())
    return f"kubectl kustomize (kustomize {version.group(1) if version else '?'}): {counts}"


def check_validate(ctx: Context) -> str:
    import jsonschema
    import kubernetes_validate

    crd_schemas = {
        ("monitoring.coreos.com/v1", "ServiceMonitor"): json.loads(
            (ctx.root / "k8s/schemas/servicemonitor-monitoring-v1.json").read_text()
        )
    }
    n = 0
    kinds = set()
    for path, docs in ctx.get(RENDERED).items():
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


def _check_overlay(path: str, docs: list[dict[str, Any]], opts: set[str]) -> None:
    by_kind: dict[str, list[dict[str, Any]]] = {}
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
    models = [d for d in env.get("AFT_MODEL_DIR", "").split(",") if d.strip()]
    # Threads are left to aft-serve, which splits the pod's CPU limit (the cgroup quota) between
    # the workers of every model and lets short workers yield to a long pass; a given count
    # does neither.
    if "AFT_INTRA_OP_THREADS" in env or any(
        e["name"] == "AFT_INTRA_OP_THREADS" for e in c.get("env", [])
    ):
        fail(f"{path}: sets AFT_INTRA_OP_THREADS; aft-serve follows limits.cpu without it")
    if len(models) > 1 and not any(
        m.get("mountPath") == "/models" for m in c.get("volumeMounts", [])
    ):
        fail(f"{path}: {len(models)} models, but no volume at /models for the extra bundles")
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
    pre_stop = c.get("lifecycle", {}).get("preStop", {})
    cmd = pre_stop.get("exec", {}).get("command", [])
    if pre_stop.get("sleep"):
        pause = float(pre_stop["sleep"]["seconds"])
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
    if not path.endswith("gpu") and "Resource" not in mtypes:
        fail(f"{path}: HPA does not use CPU utilisation")
    if path.endswith("gpu"):
        if env.get("AFT_DEVICE") != "cuda":
            fail(f"{path}: AFT_DEVICE {env.get('AFT_DEVICE')}")
        if "nvidia.com/gpu" not in res.get("limits", {}):
            fail(f"{path}: no nvidia.com/gpu limit")
        if not c["image"].endswith(":cuda"):
            fail(f"{path}: image {c['image']} is not the CUDA variant")


def check_k8s_policy(ctx: Context) -> str:
    opts = aft_options(ctx.root)
    rendered = ctx.get(RENDERED)
    for path in SERVICE_OVERLAYS:
        _check_overlay(path, rendered[path], opts)
    return (
        "cpu, gpu and two-models overlays: probes, security context, resources, intra-op "
        "threads left to aft-serve (it splits limits.cpu between workers), API keys from a "
        "Secret, grace period > preStop + AFT_SHUTDOWN_TIMEOUT, maxUnavailable 0, "
        "no replicas vs HPA, Service/PDB/ServiceMonitor selectors, HPA target and metrics, GPU"
    )


def check_adapter_rules(ctx: Context) -> str:
    rendered = ctx.get(RENDERED)
    rules = adapter_rules(rendered)
    helm = yaml.safe_load((ctx.root / ADAPTER / "values.yaml").read_text())
    if helm["rules"]["custom"] != rules:
        fail(f"{ADAPTER}/values.yaml and adapter-config.yaml hold different rules")
    exposed = set()
    for rule in rules:
        _, _, name = adapter_rule_queries(rule)
        exposed.add(name)
        over = rule.get("resources", {}).get("overrides", {})
        if over.get("pod", {}).get("resource") != "pod":
            fail(f"rule for {name} does not map the pod label to pods")
    for path in SERVICE_OVERLAYS:
        hpa = next(d for d in rendered[path] if d["kind"] == "HorizontalPodAutoscaler")
        for m in hpa["spec"]["metrics"]:
            if m["type"] in ("Pods", "External"):
                mname = m[m["type"].lower()]["metric"]["name"]
                if mname not in exposed:
                    fail(f"{path}: HPA metric {mname} is not served by the adapter {exposed}")
    return f"adapter serves {sorted(exposed)}; the HPAs' Pods metrics are among them"


CHECKS = [
    Check("kustomize-render", check_render, provides=(RENDERED,)),
    Check("k8s-schemas", check_validate, needs=(RENDERED,)),
    Check("k8s-policy", check_k8s_policy, needs=(RENDERED,)),
    Check("adapter-rule", check_adapter_rules, needs=(RENDERED,)),
]
