"""Checks of docker/, k8s/ and .dockerignore, run by scripts/check-deploy
(`python -m deploy_checks` from scripts/).

No container engine or cluster is needed: Dockerfiles are linted (hadolint) and their runtime
layout is rebuilt from the local release binary with the same docker/collect-libs.sh the image
uses, then started; the compose file goes through `docker-compose config`; the kustomize overlays
are rendered with `kubectl kustomize` and every manifest is validated against the Kubernetes JSON
schemas (kubernetes-validate, strict) or, for the ServiceMonitor CRD, against the subset schema in
k8s/schemas/; the Grafana dashboard, the alert rules and the prometheus-adapter rule are checked
against the metric catalog src/metrics.json, which is checked against a running aft-serve's
/metrics.

Modules by concern: framework (checks, declared inputs/outputs, runner), products (what checks
hand on), image, compose, k8s, monitoring, live; parsers, promql, metrics and tools are the
helpers they share. Prints one PASS/FAIL/SKIP line per check and exits 1 if any check failed.
"""
