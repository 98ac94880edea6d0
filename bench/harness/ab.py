"""Two aft-serve set-ups side by side (bench/ab_bundles.py, bench/otel_overhead.py): in each
round, each side in turn (A, B, A, B, ...: background load on a shared machine falls on both
alike) is started, primed, and measured with closed-loop oha points of one corpus text per
request; then the medians over the rounds and the ratio B/A."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path

from harness import log
from harness.load import fmt_point, measure
from harness.servers import started

POINTS = ("short", "mixed")


def parse_points(text: str) -> list[str]:
    """`--points`: a comma-separated choice among POINTS."""
    points = [p for p in text.split(",") if p]
    if not points or set(points) - set(POINTS):
        raise SystemExit(f"--points: one or both of {POINTS}")
    return points


@dataclass
class Side:
    name: str  # what the output calls it
    bundle: Path
    flags: list[str] = field(default_factory=list)  # more aft-serve flags
    binary: Path | None = None  # another aft-serve build than the release binary


def alternate(
    sides: dict[str, Side],
    bodies: dict[str, Path],
    points: list[str],
    rounds: int,
    seconds: float,
    connections: int,
    work: Path,
) -> dict[str, dict[str, list[dict]]]:
    """Every side's measurements: runs[label][point] = one result per round. Any error in a
    measured point ends the benchmark: a side that fails requests is not a result."""
    runs: dict[str, dict[str, list[dict]]] = {k: {p: [] for p in points} for k in sides}
    for r in range(rounds):
        for label, side in sides.items():
            with started(
                "aft-serve", side.bundle, work, args=side.flags, binary=side.binary
            ) as srv:
                measure(srv, bodies["mixed"], 3.0, 16)  # warm-up, discarded
                for point in points:
                    res = measure(srv, bodies[point], seconds, connections)
                    if res["errors"]:
                        raise SystemExit(f"{side.name} {point}: {res['errors']} errors")
                    runs[label][point].append(res)
                    log(f"round {r + 1} {label} ({side.name}) {point}: {fmt_point(res)}")
    return runs


def summarize(runs: dict[str, dict[str, list[dict]]], sides: dict[str, Side]) -> dict:
    """Per point: each side's medians (requests/s, p50, p99) and B/A of requests/s; printed."""
    summary = {}
    (a, b) = sides
    for point in runs[a]:
        med = {
            label: {
                k: statistics.median(x[k] for x in runs[label][point])
                for k in ("ok_per_s", "p50_ms", "p99_ms")
            }
            for label in runs
        }
        ratio = med[b]["ok_per_s"] / med[a]["ok_per_s"]
        summary[point] = {"medians": med, "ratio_b_over_a": ratio}
        for label, m in med.items():
            n = len(runs[label][point])
            rate, p50, p99 = m["ok_per_s"], m["p50_ms"], m["p99_ms"]
            print(f"{point:5s} {label} ({sides[label].name}): {rate:.1f} req/s, "
                  f"p50 {p50:.2f} ms, p99 {p99:.2f} ms (median of {n})")  # fmt: skip
        print(f"{point:5s} B/A requests/s: {ratio:.3f}")
    return summary
