"""The service as the image runs it: the staged binary started, served, probed by the image's
HEALTHCHECK script and stopped; its /metrics against the catalog."""

from __future__ import annotations

import tempfile
from pathlib import Path

from harness.serve_process import ServeError, ServeProcess

from .framework import Check, Context, Skipped, fail
from .metrics import CATALOG_PATH, Exposition, compare
from .products import CATALOG, EXPOSITION, SERVICE, STAGED_BINARY, ServiceRecipe
from .tools import http, run

BUNDLES = ("tests/fixtures/tiny-aft", "models/aft-mini")
# One worker and one thread each: a small, quick service that still runs every stage.
SERVICE_ARGS = (
    "--device",
    "cpu",
    "--workers",
    "1",
    "--intra-op-threads",
    "1",
    "--tokenization-workers",
    "1",
    "--log-format",
    "json",
    "--shutdown-timeout",
    "10s",
)


def find_bundle(root: Path) -> Path:
    for rel in BUNDLES:
        if (root / rel / "manifest.json").exists():
            return root / rel
    fail(f"no bundle ({', '.join(BUNDLES)})")


def start_service(recipe: ServiceRecipe, ready_timeout: float = 180) -> ServeProcess:
    """A ServeProcess (not yet started) for the recipe, on 127.0.0.1 and a free port, run from
    a neutral folder so nothing resolves relative to the repository by accident."""
    return ServeProcess(
        args=["--model-dir", str(recipe.bundle), *recipe.args],
        binary=recipe.binary,
        env=recipe.env,
        ready_timeout=ready_timeout,
        cwd=tempfile.gettempdir(),
    )


def send_traffic(base: str, rounds: int = 1) -> dict[int, int]:
    """Real requests on every inference route, and one invalid one for a 4xx status label;
    returns how many requests got each status."""
    statuses: dict[int, int] = {}
    for i in range(rounds):
        for method, path, body in (
            ("POST", "/v1/embed", {"inputs": ["a cat sat on the mat", f"round {i}"]}),
            ("POST", "/v1/embeddings", {"input": "a kitten rested on the rug"}),
            ("GET", "/v1/models", None),
            ("POST", "/v1/embed", {"nonsense": True}),
        ):
            status, _ = http(method, base + path, body)
            statuses[status] = statuses.get(status, 0) + 1
    return statuses


def check_live_service(ctx: Context) -> str:
    if ctx.options.metrics_file:
        raise Skipped(f"--metrics-file {ctx.options.metrics_file}: no service started")
    recipe = ServiceRecipe(
        binary=ctx.get(STAGED_BINARY), bundle=find_bundle(ctx.root), args=SERVICE_ARGS
    )
    srv = start_service(recipe)
    try:
        srv.start()
    except ServeError as e:
        fail(str(e).replace("\n", " | ")[-1500:])
    try:
        status, body = http("POST", srv.url + "/v1/embed", {"inputs": ["a cat sat on the mat"]})
        if status != 200:
            fail(f"POST /v1/embed answered {status}: {body[:200]}")
        statuses = send_traffic(srv.url)
        if not any(400 <= s < 500 for s in statuses) or 200 not in statuses:
            fail(f"traffic got statuses {statuses}, want 200s and a 4xx")
        port = srv.url.rsplit(":", 1)[1]
        hc = run(
            [str(ctx.root / "docker/healthcheck.sh")],
            env={"PATH": "/usr/bin:/bin", "AFT_PORT": port, "AFT_HOST": "0.0.0.0"},
        )
        if hc.returncode:
            fail("docker/healthcheck.sh (the image HEALTHCHECK) failed against a ready service")
        status, text = http("GET", srv.url + "/metrics")
        if status != 200:
            fail(f"/metrics answered {status}")
        exposition = Exposition.parse(text)
    finally:
        rc = srv.stop(timeout=20)
    if rc != 0:
        fail(f"aft-serve exited with {rc} after SIGTERM: {srv.log_text()[-300:]}")
    ctx.put(SERVICE, recipe)
    ctx.put(EXPOSITION, exposition)
    return (
        f"the staged image layout, bundle {recipe.bundle.relative_to(ctx.root)}: ready, "
        f"embed 200, HEALTHCHECK script 0, {len(exposition.samples)} series names in /metrics, "
        "exit 0 on SIGTERM"
    )


def check_metrics_file(ctx: Context) -> str:
    path = ctx.options.metrics_file
    if path is None:
        raise Skipped("no --metrics-file")
    exposition = Exposition.parse(path.read_text())
    ctx.put(EXPOSITION, exposition)
    return f"{len(exposition.samples)} series names read from {path}"


def check_metrics_exported(ctx: Context) -> str:
    catalog, exposition = ctx.get(CATALOG), ctx.get(EXPOSITION)
    problems = compare(catalog, exposition)
    if problems:
        fail(f"/metrics and {CATALOG_PATH} differ: " + "; ".join(problems))
    absent = sorted(set(catalog.families) - set(exposition.types))
    keyed = f" ({len(absent)} per-key families without series yet: {', '.join(absent)})"
    return (
        f"{len(catalog.families) - len(absent)} of {len(catalog.families)} catalog families "
        f"exported with their type, help and labels{keyed if absent else ''}; no aft_* family "
        f"outside {CATALOG_PATH}"
    )


def checks(metrics_file: bool) -> list[Check]:
    out = [
        Check(
            "live-service",
            check_live_service,
            needs=(STAGED_BINARY,),
            provides=(SERVICE, EXPOSITION),
        )
    ]
    if metrics_file:
        out.append(Check("metrics-file", check_metrics_file, provides=(EXPOSITION,)))
    out.append(Check("metrics-exported", check_metrics_exported, needs=(CATALOG, EXPOSITION)))
    return out
