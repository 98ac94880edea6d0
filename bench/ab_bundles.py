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
import tempfile
from pathlib import Path

from harness.ab import Side, add_arguments, alternate, parse_points, summarize
from harness.bundles import bundle_spec
from harness.corpus import body_files
from harness.results import cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundles", nargs=2, help="DIR or DIR@PRECISION (auto, float, int8)")
    ap.add_argument(
        "--binaries", type=Path, nargs=2, metavar=("BIN_A", "BIN_B"), help="aft-serve builds"
    )
    add_arguments(ap)
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ab-bundles-"))
    bodies = body_files(work)
    points = parse_points(a.points)
    binaries = a.binaries or (None, None)
    try:
        specs = [bundle_spec(b) for b in a.bundles]
    except ValueError as e:
        raise SystemExit(str(e)) from None
    sides = {
        label: Side(f"{spec} @ {binary}" if binary else spec, bundle, flags, binary)
        for label, spec, (bundle, flags), binary in zip(
            ("A", "B"), a.bundles, specs, binaries, strict=True
        )
    }
    runs = alternate(sides, bodies, points, a.rounds, a.seconds, a.connections, work)
    print(f"CPU: {cpu()['cpu']}")
    summary = summarize(runs, sides)
    if a.json:
        described = {
            label: {
                "bundle": str(s.bundle),
                "flags": s.flags,
                "binary": str(s.binary or "release build"),
            }
            for label, s in sides.items()
        }
        a.json.write_text(
            json.dumps(
                {"sides": described, "runs": runs, "summary": summary, "cpu": cpu()}, indent=1
            )
        )


if __name__ == "__main__":
    main()
