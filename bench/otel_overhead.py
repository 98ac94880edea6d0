"""What OpenTelemetry tracing costs: the same aft-serve and bundle with traces off (A) and
exported over OTLP/HTTP (B, `--otlp-endpoint`) to a stand-in collector on 127.0.0.1
(harness/otlp_sink.py: it accepts and counts, decodes nothing), side by side in alternating
rounds at one concurrency (issue 26: requests/s with tracing on within 5% of off at c=128).

    python bench/otel_overhead.py [--bundle models/aft-mini] [--seconds 15] [--rounds 3]
        [--connections 128] [--json FILE]

Every request is traced (the exporter's default sampler) and each makes a root span with
children for tokenization, queue, batch and forward; the batch exporter drops spans past its
queue (2,048) rather than slow the server, so the sink's byte count says how much was exported.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from harness import ROOT
from harness.ab import Side, add_arguments, alternate, parse_points, summarize
from harness.corpus import body_files
from harness.otlp_sink import otlp_sink
from harness.results import cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path, default=ROOT / "models/aft-mini")
    add_arguments(ap)
    a = ap.parse_args()
    points = parse_points(a.points)
    work = Path(tempfile.mkdtemp(prefix="otel-overhead-"))
    bodies = body_files(work)
    with otlp_sink() as (endpoint, received):
        sides = {
            "A": Side("traces off", a.bundle),
            "B": Side("traces on, OTLP/HTTP", a.bundle, ["--otlp-endpoint", endpoint]),
        }
        runs = alternate(sides, bodies, points, a.rounds, a.seconds, a.connections, work)
    print(f"CPU: {cpu()['cpu']}")
    summary = summarize(runs, sides)
    print(f"the collector received {received.requests} exports, {received.bytes:,} bytes")
    if received.requests == 0:
        raise SystemExit("no trace reached the collector: side B did not trace")
    if a.json:
        result = {
            "sides": {k: {"name": s.name, "flags": s.flags} for k, s in sides.items()},
            "runs": runs,
            "summary": summary,
            "exports": {"requests": received.requests, "bytes": received.bytes},
            "cpu": cpu(),
        }
        a.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
