"""One run's results as the page reads them: the parts found, the facts they carry (machine,
model, corpus, plan), and the figures several sections derive from them."""

from __future__ import annotations

from dataclasses import dataclass
from statistics import median

from harness.results import describe_cpu

# Where the run's facts are read from, first found wins (every part carries them).
FACTS_FROM = ("compare", "limit", "config", "profile", "overload", "soak")
LIMIT_DEPTH = 256  # the limit's queue depth that stands for the service at saturation


def _part(name: str) -> property:
    return property(
        lambda self: self.parts.get(name), doc=f"results/{name}.json, if the run has it"
    )


@dataclass
class Run:
    parts: dict[str, dict]

    limit = _part("limit")
    compare = _part("compare")
    config = _part("config")
    profile = _part("profile")
    overload = _part("overload")
    soak = _part("soak")

    @property
    def facts(self) -> dict:
        for part in FACTS_FROM:
            if part in self.parts and "run" in self.parts[part]:
                return self.parts[part]["run"]
        return {}

    @property
    def machine(self) -> dict:
        return self.facts.get("machine", {})

    @property
    def cpu(self) -> str:
        """The CPU in one line (model, count, AVX-512/VNNI/bf16/AMX), for every timing table."""
        return describe_cpu(self.machine)

    @property
    def nproc(self) -> int | None:
        return self.machine.get("nproc")

    @property
    def quick(self) -> bool:
        return any(
            p.get("run", {}).get("plan", {}).get("name") == "quick" for p in self.parts.values()
        )

    @property
    def started(self) -> str | None:
        """When the earliest part of the run began (UTC)."""
        times = [p["run"]["machine"].get("time") for p in self.parts.values() if "run" in p]
        return min((t for t in times if t), default=None)

    @property
    def commits(self) -> list[str]:
        """The commits the parts ran at (more than one if parts were rerun after a change)."""
        found = {p["run"]["machine"].get("git_commit") for p in self.parts.values() if "run" in p}
        return sorted(c for c in found if c)

    @property
    def minutes(self) -> float:
        return sum(p.get("run", {}).get("part_seconds", 0) for p in self.parts.values()) / 60

    # ------------------------------------------------------------------ derived figures

    def aft_config(self) -> tuple[int, int, int]:
        """(workers, intra-op threads, max batch tokens) aft-serve ran with in compare."""
        c = (self.compare or {}).get("aft_serve_config") or {}
        return c.get("workers", 1), c.get("intra_op_threads", 1), c.get("max_batch_tokens", 0)

    def best_limit(
        self, workers: int | None = None, threads: int | None = None, mbt: int | None = None
    ) -> dict | None:
        """The fastest in-process point at queue depth 256 matching the given settings."""
        rows = [
            r
            for r in (self.limit or {}).get("service_shapes", [])
            if r.get("queue_depth") == LIMIT_DEPTH
            and (mbt is None or r.get("max_batch_tokens") == mbt)
            and (workers is None or r["workers"] == workers)
            and (threads is None or r["intra_op_threads"] == threads)
        ]
        return max(rows, key=lambda r: r["sentences_per_s"]) if rows else None

    def service_limit(self) -> dict | None:
        """The in-process limit at the configuration aft-serve ran with (any budget if that
        one was not measured)."""
        w, t, mbt = self.aft_config()
        return self.best_limit(w, t, mbt) or self.best_limit(w, t)

    def bare_forward(self) -> dict | None:
        """forward_bench's one-short-sentence figures at aft-serve's intra-op threads."""
        limit = self.limit or {}
        by_threads = limit.get("single_short_by_threads") or {}
        return by_threads.get(str(self.aft_config()[1])) or limit.get("single_short")

    def saturation(self, kind: str) -> dict | None:
        """The closed-loop sweep's highest-throughput point of one server."""
        pts = (self.compare or {}).get("closed", {}).get(kind)
        return max(pts, key=lambda p: p["ok_per_s"]) if pts else None

    def saturation_points(self) -> list[tuple[str, float]]:
        """Every saturation measurement of aft-serve at the configuration compare ran with."""
        sat = self.saturation("aft-serve")
        if not sat:
            return []
        w, t, mbt = self.aft_config()
        pts = [("sweep max", sat["ok_per_s"])]
        for r in (self.config or {}).get("runs", []):
            if (r["workers"], r["intra_op_threads"], r["max_batch_tokens"]) == (w, t, mbt):
                pts.append(("config study c=256", r["c256"]["ok_per_s"]))
        profile = self.profile
        if profile and profile.get("server_args") == self.compare.get("server_args", {}).get(
            "aft-serve"
        ):
            pts.append(("profile c=256", profile["load"]["ok_per_s"]))
        return pts

    def saturation_median(self) -> float | None:
        pts = self.saturation_points()
        return median(v for _, v in pts) if pts else None

    def open_point(self, kind: str, rate: float) -> dict | None:
        pts = (self.compare or {}).get("open", {}).get(kind, [])
        return next((p for p in pts if abs(p["rate"] - rate) < 0.06), None)

    def soak_tail(self) -> dict | None:
        """Is resident memory still growing at the end? The change of the per-window RSS peak
        over the second half of the windows, the last window that set a new peak, and the
        highest sample."""
        windows = (self.soak or {}).get("rss_windows") or []
        if len(windows) < 2:
            return None
        mid, end = windows[len(windows) // 2], windows[-1]
        record, last_growth = windows[0]["peak_kib"], windows[0]["t"]
        for w in windows[1:]:
            if w["peak_kib"] > record:
                record, last_growth = w["peak_kib"], w["t"]
        peak = max(self.soak["rss_samples"], key=lambda x: x["rss_kib"])
        return {
            "second_half_change": (end["peak_kib"] - mid["peak_kib"]) / mid["peak_kib"],
            "mid_t": mid["t"],
            "last_growth_t": last_growth,
            "end_t": end["t"] + self.soak["window_s"],
            "peak_kib": peak["rss_kib"],
            "peak_t": peak["t"],
        }
