"""What one benchmark run carries from part to part: the model, the plan, the results so far
(the config study's choice of aft-serve flags, the capacity measured by compare)."""

from __future__ import annotations

import os
import re
import subprocess
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from harness import corpus, load, results, servers
from harness.plan import Plan


@dataclass
class Context:
    model_dir: Path
    plan: Plan
    results: results.Results
    part_started: float = field(default_factory=time.monotonic)
    machine_before: dict = field(default_factory=dict)

    def begin(self) -> None:
        """Marks the start of a part: its clock, and the machine as the part found it."""
        self.part_started = time.monotonic()
        self.machine_before = {**results.machine(), "oha": load.version()}

    @property
    def log_dir(self) -> Path:
        return self.results.dir / "logs"

    @cached_property
    def bodies(self) -> dict[str, Path]:
        return corpus.body_files(self.results.dir)

    @cached_property
    def corpus_facts(self) -> dict:
        return corpus.facts(self.model_dir)

    def write(self, part: str, data: dict) -> None:
        """results/<part>.json with this run's facts and the part's wall time."""
        facts = {
            "part_seconds": round(time.monotonic() - self.part_started, 1),
            "plan": self.plan.facts(),
            "machine": self.machine_before,
            "model": results.model(self.model_dir),
            "corpus": self.corpus_facts,
            "peer_threads": servers.peer_threads(),
        }
        self.results.write(part, data, facts)

    def serve_args(self) -> list[str]:
        """aft-serve flags for the parts after the config study: its choice, else none (the
        built-in defaults)."""
        rec = (self.results.read("config") or {}).get("recommended")
        if not rec:
            return []
        return [
            "--workers",
            str(rec["workers"]),
            "--intra-op-threads",
            str(rec["intra_op_threads"]),
            "--max-batch-tokens",
            str(rec["max_batch_tokens"]),
        ]

    def serve_config(self) -> dict:
        """The aft-serve settings the later parts run with, and where they come from."""
        cfg = serve_defaults()
        rec = (self.results.read("config") or {}).get("recommended")
        if rec:
            cfg.update(rec, source="config study choice (explicit flags)")
        else:
            cfg["source"] = "built-in defaults"
        return cfg

    def capacity(self) -> float:
        """Saturation req/s of aft-serve in the compare part's closed-loop sweep."""
        compare = self.results.read("compare")
        if not compare:
            raise SystemExit("run the compare part first (overload and soak size their load on it)")
        return max(p["ok_per_s"] for p in compare["closed"]["aft-serve"])


def serve_defaults() -> dict:
    """The worker, thread and batching defaults of the built aft-serve, from its --help."""
    text = subprocess.run(
        [str(servers.binary()), "--help"], capture_output=True, text=True, check=True
    ).stdout
    text = re.sub(r"\s+", " ", text)

    def default(flag: str) -> int | None:
        m = re.search(re.escape(flag) + r" <[^>]+>.*?\[default: (\d+)\]", text)
        return int(m.group(1)) if m else None

    workers = default("--workers") or 1
    raw_threads = default("--intra-op-threads")
    return {
        "workers": workers,
        "intra_op_threads": raw_threads or max(1, (os.cpu_count() or 1) // workers),
        "intra_op_threads_flag_default": raw_threads,
        "max_batch_tokens": default("--max-batch-tokens"),
        "max_batch_size": default("--max-batch-size"),
        "max_wait_us": default("--max-wait-us"),
        "max_queue_size": default("--max-queue-size"),
    }
