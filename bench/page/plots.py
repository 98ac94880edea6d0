"""docs/bench-*.png: throughput and latency against concurrency and rate, and RSS in the soak."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from page.fmt import COLOR, KINDS, LABEL, pct  # noqa: E402
from page.run import Run  # noqa: E402

DPI = 110


def write_all(run: Run, out: Path) -> list[Path]:
    written = []
    if run.compare:
        written += [closed(run.compare, out), latency(run.compare, out)]
    if run.soak:
        written.append(soak(run.soak, out))
    return written


def p50_p99(ax, x: list[float], pts: list[dict], kind: str) -> None:
    """One server's p99 (solid) and p50 (dashed) against x."""
    ax.plot(x, [p["p99_ms"] for p in pts], "o-", color=COLOR[kind], label=f"{LABEL[kind]} p99")
    ax.plot(
        x,
        [p["p50_ms"] for p in pts],
        "o--",
        color=COLOR[kind],
        alpha=0.6,
        label=f"{kind} p50",
    )


def closed(compare: dict, out: Path) -> Path:
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    for k in KINDS:
        pts = compare["closed"].get(k)
        if pts:
            c = [p["concurrency"] for p in pts]
            ax1.plot(c, [p["sentences_per_s"] for p in pts], "o-", color=COLOR[k], label=LABEL[k])
            p50_p99(ax2, c, pts, k)
    for ax in (ax1, ax2):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrent clients (closed loop)")
        ax.grid(alpha=0.3)
    ax1.set_ylabel("sentences/s")
    ax1.set_title("Throughput vs concurrency")
    ax2.set_yscale("log")
    ax2.set_ylabel("latency ms (log)")
    ax2.set_title("Latency vs concurrency")
    ax1.legend(fontsize=8)
    ax2.legend(fontsize=7, ncol=2)
    return save(fig, out / "bench-closed.png")


def latency(compare: dict, out: Path) -> Path:
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    for k in KINDS:
        pts = compare["closed"].get(k)
        if pts:
            p50_p99(ax1, [p["ok_per_s"] for p in pts], pts, k)
        pts = compare.get("open", {}).get(k)
        if pts:
            p50_p99(ax2, [p["rate"] for p in pts], pts, k)
    ax1.set_title("Closed loop: latency vs achieved throughput")
    ax1.set_xlabel("requests/s served")
    ax2.set_title("Open loop: latency vs offered rate")
    ax2.set_xlabel("requests/s offered")
    for ax in (ax1, ax2):
        ax.set_yscale("log")
        ax.set_ylabel("latency ms (log)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return save(fig, out / "bench-latency-throughput.png")


def soak(soak: dict, out: Path) -> Path:
    s = soak["rss_samples"]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot([x["t"] for x in s], [x["rss_kib"] / 1024 for x in s], "-", color=COLOR["aft-serve"])
    w, width = soak["rss_windows"], soak["window_s"]
    ax.hlines(
        [x["peak_kib"] / 1024 for x in w],
        [x["t"] for x in w],
        [x["t"] + width for x in w],
        color="black",
        lw=2,
        label=f"peak of each {width:.0f} s window",
    )
    ax.legend(loc="lower right")
    ax.axvline(soak["warmup_s"], color="grey", ls="--", lw=1)
    ax.set_xlabel("seconds")
    ax.set_ylabel("VmRSS MiB")
    ax.set_title(
        f"aft-serve RSS at {soak['rate']:.0f} req/s ({pct(soak['load_fraction'], 0)} of capacity)"
    )
    ax.grid(alpha=0.3)
    return save(fig, out / "bench-soak.png")


def save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path
