"""aft-serve set-ups side by side (bench/ab_bundles.py, bench/otel_overhead.py), or against another
server (bench/against_infinity.py): in each round, each side in turn (A, B, A, B, ...: background
load on a shared machine falls on all alike) is started, primed, and measured with closed-loop oha
points of one corpus text per request; then the medians over the rounds and the ratio B/A, or
each side's ratio to a reference side."""

from __future__ import annotations

import argparse
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from harness import log
from harness.corpus import body_files
from harness.load import fmt_point, measure
from harness.servers import api, started

POINTS = ("short", "mixed")


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """The options every A/B script takes: how long, how often, how many connections, which
    points, where the JSON goes."""
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--connections", type=int, default=128)
    ap.add_argument("--points", default=",".join(POINTS), help="short, mixed or both")
    ap.add_argument("--json", type=Path, default=None)


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
    kind: str = "aft-serve"  # or another server of harness.servers (then `bundle` is its model)


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
    measured point ends the benchmark: a side that fails requests is not a result. `bodies`
    (corpus.body_files) serve aft-serve's API; a server of another API gets the same texts in
    its own bodies."""
    runs: dict[str, dict[str, list[dict]]] = {k: {p: [] for p in points} for k in sides}
    apis = {label: api(side.kind) for label, side in sides.items()}
    own = {m: body_files(work, m) for m in {a.openai_model for a in apis.values()} if m}
    for r in range(rounds):
        for label, side in sides.items():
            path, its_bodies = apis[label].embed, own.get(apis[label].openai_model, bodies)
            with started(side.kind, side.bundle, work, args=side.flags, binary=side.binary) as srv:
                measure(srv, its_bodies["mixed"], 3.0, 16, path=path)  # warm-up, discarded
                for point in points:
                    res = measure(srv, its_bodies[point], seconds, connections, path=path)
                    if res["errors"]:
                        raise SystemExit(f"{side.name} {point}: {res['errors']} errors")
                    runs[label][point].append(res)
                    log(f"round {r + 1} {label} ({side.name}) {point}: {fmt_point(res)}")
    return runs


def summarize(
    runs: dict[str, dict[str, list[dict]]], sides: dict[str, Side], reference: str | None = None
) -> dict:
    """Per point: each side's medians (requests/s, p50, p99) and, of requests/s, B/A (two
    sides), or with `reference` (a label) every other side's ratio to that side's; printed."""
    summary = {}
    for point in runs[next(iter(sides))]:
        med = {
            label: {
                k: statistics.median(x[k] for x in runs[label][point])
                for k in ("ok_per_s", "p50_ms", "p99_ms")
            }
            for label in runs
        }
        for label, m in med.items():
            n = len(runs[label][point])
            rate, p50, p99 = m["ok_per_s"], m["p50_ms"], m["p99_ms"]
            print(f"{point:5s} {label} ({sides[label].name}): {rate:.1f} req/s, "
                  f"p50 {p50:.2f} ms, p99 {p99:.2f} ms (median of {n})")  # fmt: skip
        if reference is None:
            (a, b) = sides
            ratio = med[b]["ok_per_s"] / med[a]["ok_per_s"]
            summary[point] = {"medians": med, "ratio_b_over_a": ratio}
            print(f"{point:5s} B/A requests/s: {ratio:.3f}")
            continue
        ratios = {
            label: m["ok_per_s"] / med[reference]["ok_per_s"]
            for label, m in med.items()
            if label != reference
        }
        summary[point] = {"medians": med, "ratio_to_reference": ratios}
        for label, ratio in ratios.items():
            print(f"{point:5s} {label}/{reference} requests/s: {ratio:.3f}")
    return summary
