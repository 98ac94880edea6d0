"""aft-serve benchmark driver: servers up on 127.0.0.1, oha against them, results as JSON.

Usage: python bench/bench.py PART... [--model-dir DIR] [--quick] [--results DIR]
(bench/run-all is the one command that runs the parts in order and then the report.)

Parts (bench/parts/), each writing RESULTS/<part>.json:
  limit     in-process forward-pass limit (cargo example forward_bench) + matmul GFLOP/s
  config    --workers x --intra-op-threads and --max-batch-tokens study; its choice is the
            aft-serve configuration of every later part
  compare   aft-serve, plain Python peer, batched Python peer: closed-loop concurrency sweep and
            open-loop constant-rate sweep, same corpus, same points, one after another
  profile   /metrics stage times, CPU by thread and (with perf) a profile under saturation
  overload  3x capacity, then recovery
  soak      a long stretch at 70% of capacity: errors and RSS

Every load run is bounded by oha's -z duration; --quick runs tiny durations (bench/harness/plan.py).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import time
from pathlib import Path

from harness import BENCH, ROOT, log
from harness.context import Context
from harness.plan import FULL, QUICK
from harness.results import Results
from parts import PARTS


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("parts", nargs="+", choices=list(PARTS))
    ap.add_argument("--model-dir", type=Path, default=ROOT / "models" / "aft-mini")
    ap.add_argument("--quick", action="store_true", help="tiny durations: proves the pipeline")
    ap.add_argument(
        "--results",
        type=Path,
        default=Path(os.environ.get("AFT_BENCH_RESULTS", BENCH / "results")),
        help="results directory (default bench/results, or $AFT_BENCH_RESULTS)",
    )
    a = ap.parse_args()
    # oha at 1024 connections needs more descriptors than the usual soft limit.
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    ctx = Context(a.model_dir.resolve(), QUICK if a.quick else FULL, Results(a.results.resolve()))
    for part in a.parts:
        log(f"part {part} ({ctx.plan.name}), model {ctx.model_dir}, results {ctx.results.dir}")
        ctx.begin()
        PARTS[part](ctx)
        log(f"part {part} done in {time.monotonic() - ctx.part_started:.0f} s")


if __name__ == "__main__":
    main()
