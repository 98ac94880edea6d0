"""The benchmark harness: everything the parts (bench/parts/) and the report (bench/page/) share.

  plan       how long and at which points each part measures (full run or --quick)
  corpus     the fixed texts, oha's request-body files and the corpus' make-up
  serve_process  starting an aft-serve process (or a peer), waiting until ready, stopping it:
             the one launcher, also for the deployment checks and the tests
  servers    aft-serve, the Python peers and infinity on 127.0.0.1, through serve_process
  load       oha runs (closed and open loop) and their summary
  metrics    /metrics scrapes and the stage figures between two scrapes
  results    results/<part>.json, each with the run's facts (machine, model, plan); cpu() and
             describe_cpu(): the one description of the CPU that results and tables quote
  context    what one run carries from part to part (the config study's choice, capacity)
  sampler    a process's resident memory, sampled every few milliseconds
  peakmem    the peak resident memory of one pass (the kernel's VmHWM, reset before it)
  sectioned  held-out documents of many sections, their queries, the service's chunk windows
  bundles    a random-weight AFT-decay bundle of aft-mini's shape (cost does not need weights)

Run from bench/ scripts (python bench/bench.py, bench/report.py ...: bench/ is then the script's
directory, first on sys.path); elsewhere it is importable because scripts/setup installs it
(bench/pyproject.toml).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench"
CORPUS = BENCH / "corpus" / "texts.jsonl"
# The interpreter running the harness is the venv's (bench/run-all sources scripts/env.sh);
# the Python peers and flops.py run under the same one.
PYTHON = sys.executable
HOST = "127.0.0.1"


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)
