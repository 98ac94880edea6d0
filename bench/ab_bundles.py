"""Two model bundles, or two aft-serve builds, side by side: service throughput and latency.

    python bench/ab_bundles.py BUNDLE_A BUNDLE_B [--seconds 15] [--rounds 3] [--connections 128]
    python bench/ab_bundles.py models/aft-mini@float models/aft-mini@int8   # float vs int8
    python bench/ab_bundles.py BUNDLE BUNDLE --binaries OLD_BUILD target/release/aft-serve

A bundle is `DIR` or `DIR@PRECISION` (auto, float or int8: served with `--precision PRECISION`;
plain `DIR` gets the server's default, auto: a bundle's int8 copy on the CPU when it has one).
For each round, and for each side in turn (A, B, A, B, ...: background load on a shared
machine falls on both alike), starts aft-serve on 127.0.0.1 with that side's bundle (and
binary: the release build unless --binaries) and its default flags, primes it, and runs
closed-loop oha points with one sentence per request: the short corpus texts (the issue's
"17-token sentence" point) and the mixed corpus (--points), at --connections.
Prints requests/s and p50/p99 per run and the ratio B/A of the medians; --json writes them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from harness import log
from harness.bundles import bundle_spec
from harness.corpus import body_files
from harness.load import fmt_point, measure
from harness.results import cpu
from harness.servers import started

POINTS = ("short", "mixed")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundles", nargs=2, help="DIR or DIR@PRECISION (auto, float, int8)")
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--connections", type=int, default=128)
    ap.add_argument(
        "--binaries", type=Path, nargs=2, metavar=("BIN_A", "BIN_B"), help="aft-serve builds"
    )
    ap.add_argument("--points", default=",".join(POINTS), help="short, mixed or both")
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ab-bundles-"))
    bodies = body_files(work)
    labels = ("A", "B")
    points = [p for p in a.points.split(",") if p]
    if not points or set(points) - set(POINTS):
        raise SystemExit(f"--points: one or both of {POINTS}")
    binaries = a.binaries or (None, None)
    try:
        specs = [bundle_spec(b) for b in a.bundles]
    except ValueError as e:
        raise SystemExit(str(e)) from None
    names = [f"{b} @ {x}" if x else str(b) for b, x in zip(a.bundles, binaries, strict=True)]
    runs: dict[str, dict[str, list[dict]]] = {k: {p: [] for p in points} for k in labels}
    for r in range(a.rounds):
        for label, (bundle, flags), binary, name in zip(
            labels, specs, binaries, names, strict=True
        ):
            with started("aft-serve", bundle, work, args=flags, binary=binary) as srv:
                measure(srv, bodies["mixed"], 3.0, 16)  # warm-up, discarded
                for point in points:
                    res = measure(srv, bodies[point], a.seconds, a.connections)
                    if res["errors"]:
                        raise SystemExit(f"{name} {point}: {res['errors']} errors")
                    runs[label][point].append(res)
                    log(f"round {r + 1} {label} ({name}) {point}: {fmt_point(res)}")
    summary = {}
    print(f"CPU: {cpu()['cpu']}")
    for point in points:
        med = {
            b: {
                k: statistics.median(x[k] for x in runs[b][point])
                for k in ("ok_per_s", "p50_ms", "p99_ms")
            }
            for b in runs
        }
        ratio = med["B"]["ok_per_s"] / med["A"]["ok_per_s"]
        summary[point] = {"medians": med, "ratio_b_over_a": ratio}
        for (b, m), name in zip(med.items(), names, strict=True):
            print(f"{point:5s} {b} ({name}): {m['ok_per_s']:.1f} req/s, "
                  f"p50 {m['p50_ms']:.2f} ms, p99 {m['p99_ms']:.2f} ms "
                  f"(median of {a.rounds})")  # fmt: skip
        print(f"{point:5s} B/A requests/s: {ratio:.3f}")
    if a.json:
        sides = {
            label: {"bundle": str(bundle), "binary": str(binary or "release build")}
            for label, bundle, binary in zip(labels, a.bundles, binaries, strict=True)
        }
        a.json.write_text(
            json.dumps({"sides": sides, "runs": runs, "summary": summary, "cpu": cpu()}, indent=1)
        )


if __name__ == "__main__":
    main()
